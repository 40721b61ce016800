#!/usr/bin/env bash
# Offline validation of the deployment files (what can be checked without
# remote charts, images or Docker), against the local control plane:
#   1. hadolint on the Dockerfile;
#   2. hack/gen-certs.sh with the real step, the chain checked with openssl,
#      refusal to overwrite, --force;
#   3. helmfile.yaml: every environment's releases and every values file
#      rendered by helmfile itself (files they name must exist);
#   4. helm lint --strict and helm template of the chart with every scenario;
#      bad values rejected by the schema;
#   5. every rendered manifest applied with a server-side dry run (strict
#      field validation), PodMonitors included (their CRD installed);
#   6. the chart's RBAC applied for real, then churn and the client run with
#      their ServiceAccounts' tokens: the granted verbs are enough, and
#      nothing beyond them is granted;
#   7. the dashboards' kube-apiserver metrics exist in its real /metrics.
# Needs the local control plane up (hack/local-cluster.sh up; hack/e2e.sh
# runs this while it is).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"
CACHE=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}
STATE=${DST_LOCAL_CLUSTER_DIR:-$repo/.local-cluster}
# shellcheck disable=SC1091
. "$STATE/env"

"$here/build-deps.sh" helm step helmfile hadolint prometheus_operator_crds linkerd >&2
HELM=$CACHE/helm-$HELM_VERSION/bin/helm
STEP=$CACHE/step-$STEP_VERSION/bin/step
HELMFILE=$CACHE/helmfile-$HELMFILE_VERSION/bin/helmfile
HADOLINT=$CACHE/hadolint-$HADOLINT_VERSION/bin/hadolint
CRDS=$CACHE/prometheus_operator_crds-$PROMETHEUS_OPERATOR_VERSION/bin
KUBECTL=$DST_LOCAL_KUBECTL
BIN=${DST_LOAD_BIN:-$repo/target/debug/dst-load-controller}
[[ -x $BIN ]] || (cd "$repo" && cargo build --locked --bin dst-load-controller)

tmp=$(mktemp -d)
NS=dst-deploy-check-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$KUBECTL" delete namespace "$NS" "$NS-linkerd" "$NS-mc-source" "$NS-mc-target" "$NS-helm" "$NS-recipe" \
    --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
step_no=0
section() { step_no=$((step_no + 1)); printf '\n[validate-deploy %d] %s\n' "$step_no" "$*"; }
fail() { echo "[validate-deploy] FAIL: $*" >&2; exit 1; }

section "hadolint Dockerfile"
"$HADOLINT" "$repo/Dockerfile"
echo "ok"

section "gen-certs.sh with step $STEP_VERSION, verified with openssl"
ca=$tmp/ca
STEP=$STEP "$here/gen-certs.sh" "$ca" >"$tmp/gen.out"
grep -q "export LINKERD_CA_DIR=$ca" "$tmp/gen.out" || fail "gen-certs did not print the export"
openssl verify -CAfile "$ca/ca.crt" "$ca/issuer.crt" >/dev/null || fail "issuer does not chain to the trust anchor"
for c in ca issuer; do
  openssl x509 -in "$ca/$c.crt" -noout -text >"$tmp/$c.txt"
  grep -q "NIST CURVE: P-256" "$tmp/$c.txt" || fail "$c.crt is not EC P-256"
  grep -q "CA:TRUE" "$tmp/$c.txt" || fail "$c.crt is not a CA"
  openssl x509 -in "$ca/$c.crt" -noout -checkend $((300 * 24 * 3600)) >/dev/null || fail "$c.crt expires within 300 days"
done
openssl x509 -in "$ca/issuer.crt" -noout -checkend $((400 * 24 * 3600)) >/dev/null && fail "issuer.crt outlives a year"
openssl x509 -in "$ca/issuer.crt" -noout -subject | grep -q "identity.linkerd.cluster.local" || fail "issuer subject"
[[ $(stat -c %a "$ca/issuer.key") == 600 ]] || fail "issuer.key is not mode 600"
before=$(sha256sum "$ca"/* | sha256sum)
if STEP=$STEP "$here/gen-certs.sh" "$ca" 2>"$tmp/refuse.err"; then fail "gen-certs overwrote existing keys"; fi
grep -q "refusing to overwrite" "$tmp/refuse.err" || fail "refusal does not say why: $(cat "$tmp/refuse.err")"
[[ $(sha256sum "$ca"/* | sha256sum) == "$before" ]] || fail "a refused run changed the files"
STEP=$STEP "$here/gen-certs.sh" --force "$ca" >/dev/null
[[ $(sha256sum "$ca"/* | sha256sum) != "$before" ]] || fail "--force did not replace the certificates"
openssl verify -CAfile "$ca/ca.crt" "$ca/issuer.crt" >/dev/null
echo "ok: P-256 chain verified, refusal and --force behave"

section "helmfile $HELMFILE_VERSION: environments, conditions and values"
PATH=$(dirname "$HELM"):$PATH
export PATH
python3 "$here/check-helmfile.py" "$repo" "$ca" "$HELMFILE"

section "helm lint and template of charts/dst-load-test with every scenario"
chart=$repo/charts/dst-load-test
mkdir -p "$tmp/render"
"$HELM" lint --strict "$chart" >/dev/null
for f in "$chart"/scenarios/*.yaml; do
  s=$(basename "$f" .yaml)
  "$HELM" lint --strict "$chart" -f "$f" >/dev/null || fail "helm lint with $s"
  "$HELM" template dst-load-test "$chart" -n "$NS" -f "$f" \
    --api-versions monitoring.coreos.com/v1/PodMonitor >"$tmp/render/$s.yaml"
  n=$(grep -c '^kind: PodMonitor' "$tmp/render/$s.yaml" || true)
  [[ $n == 2 ]] || fail "$s: expected 2 PodMonitors, got $n"
  echo "  $s: $(grep -c '^kind:' "$tmp/render/$s.yaml") objects"
done
"$HELM" template dst-load-test "$chart" -n "$NS" >"$tmp/render/default.yaml"
# A scenario file through the chart (the RBAC section below runs it).
cat >"$tmp/scenario.yaml" <<'SCENARIO'
# yaml-language-server: $schema=scenario.schema.json
# A small mixed scenario: one stable and one oscillating service.
name: chart-check
duration: 1h
seed: 7
schedule: {min-hold: 2s, max-hold: 2s, jitter: 200ms}
services:
  stable: {count: 1, endpoints: 2}
  oscillate: {count: 1, min-endpoints: 1, max-endpoints: 3}
clients:
  streams-per-service: 2
  connections: 2
slos: [errors==0, stale_streams==0, unconverged_streams==0]
SCENARIO
"$HELM" lint --strict "$chart" --set-file scenario="$tmp/scenario.yaml" >/dev/null || fail "helm lint with a scenario file"
"$HELM" template dst-load-test "$chart" -n "$NS" --set-file scenario="$tmp/scenario.yaml" >"$tmp/render/scenario-file.yaml"
python3 - "$tmp/render/scenario-file.yaml" "$tmp/scenario.yaml" "$tmp" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
text, tmp = open(sys.argv[2]).read(), sys.argv[3]
[cm] = [d for d in docs if d["kind"] == "ConfigMap"]
assert cm["data"]["scenario.yaml"].strip() == text.strip(), "the ConfigMap does not hold the file verbatim"
shape = ("--stable-", "--oscillate-", "--restart-", "--ephemeral-", "--statefulset-", "--streams-per-service",
         "--connections", "--service-label-selector")
for component in ("churn", "client"):
    [d] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(component)]
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--scenario-file=/etc/dst-load/scenario.yaml" in c["args"], (component, c["args"])
    assert not [a for a in c["args"] if a.startswith(shape)], (component, c["args"])
    assert c["volumeMounts"] == [{"name": "scenario", "mountPath": "/etc/dst-load", "readOnly": True}], c
    assert pod["volumes"] == [{"name": "scenario", "configMap": {"name": cm["metadata"]["name"]}}], pod
    assert d["spec"]["template"]["metadata"]["annotations"]["dst-load.linkerd.io/scenario-sha256"], d
    # The args as the container runs them, with the mounted file here.
    with open(f"{tmp}/scenario-{component}.args", "w") as f:
        for a in c["args"]:
            if a.startswith(("--admin-addr", "--destination-addr", "--log-format")):
                continue
            f.write(a.replace("/etc/dst-load/scenario.yaml", f"{tmp}/mounted-scenario.yaml") + "\n")
with open(f"{tmp}/mounted-scenario.yaml", "w") as f:
    f.write(cm["data"]["scenario.yaml"])
PY
if grep -q '^kind: PodMonitor' "$tmp/render/default.yaml"; then fail "PodMonitors rendered without the monitoring CRDs"; fi
for bad in "client.args.namespace=x" "churn.args.admin-addr=x" "client.replicas=-1" "image.pullPolicy=Sometimes" "clientt.replicas=1"; do
  if "$HELM" template t "$chart" --set "$bad" >/dev/null 2>"$tmp/bad.err"; then fail "values $bad accepted"; fi
done
# Large numbers render exactly (Helm reads them as float64).
"$HELM" template t "$chart" --set churn.args.seed=1000000 --set-string churn.args.oscillate-jitter=1.5s \
  -f <(printf 'client:\n  args:\n    staleness-grace: 2.5s\n    backoff-jitter: 0.25\n') >"$tmp/numbers.yaml"
grep -q -- '"--seed=1000000"' "$tmp/numbers.yaml" || fail "seed: 1000000 does not render as --seed=1000000"
grep -q -- '"--backoff-jitter=0.25"' "$tmp/numbers.yaml" || fail "a fraction does not render as itself"
# Every flag the chart sets itself is refused in args, naming the value to use.
while read -r component flag use; do
  if "$HELM" template t "$chart" --set "$component.args.$flag=x" >/dev/null 2>"$tmp/owned.err"; then
    fail "$component.args.$flag accepted: the chart sets --$flag itself"
  fi
  grep -q "$component.args.$flag: the chart sets --$flag itself; .*$use" "$tmp/owned.err" ||
    fail "$component.args.$flag refused without naming $use: $(cat "$tmp/owned.err")"
done <<'OWNED'
churn namespace helm.install.-n
churn control-plane-ns linkerdNamespace
churn admin-addr not.configurable
churn log-level log.level
churn log-format log.format
client namespace helm.install.-n
client destination-addr client.destinationAddr
client service-label-selector client.serviceLabelSelector
client target-services client.targetServices
client ground-truth client.groundTruth
client admin-addr not.configurable
client log-level log.level
client log-format log.format
OWNED
# The flags the templates pass are exactly the owned ones (none forgotten).
python3 - "$tmp/render/default.yaml" "$chart/values.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
defaults = yaml.safe_load(open(sys.argv[2]))
def args(component):
    [d] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(component)]
    return d, d["spec"]["template"]["spec"]["containers"][0]["args"]
owned = {"churn": {"namespace", "control-plane-ns", "admin-addr", "log-level", "log-format"},
         "client": {"namespace", "destination-addr", "service-label-selector", "admin-addr", "log-level",
                    "log-format", "ground-truth"}}
for component, want in owned.items():
    d, a = args(component)
    set_by_chart = {x[2:].split("=")[0] for x in a[1:]} - set(defaults[component]["args"])
    assert set_by_chart == want, (component, set_by_chart, want)
churn, _ = args("churn")
assert churn["spec"]["replicas"] == 1 and churn["spec"]["strategy"] == {"type": "Recreate"}, churn["spec"]
assert not [d for d in docs if d["kind"] == "Pod"], "a bare Pod is rendered"
hooks = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("annotations", {}) for d in docs
         if "helm.sh/hook" in d["metadata"].get("annotations", {})}
assert set(hooks) == {("ServiceAccount", "dst-load-test-cleanup"), ("Role", "dst-load-test-cleanup"),
                      ("RoleBinding", "dst-load-test-cleanup"), ("Job", "dst-load-test-cleanup")}, hooks
assert all(a["helm.sh/hook"] == "pre-delete" for a in hooks.values()), hooks
job_weight = int(hooks[("Job", "dst-load-test-cleanup")]["helm.sh/hook-weight"])
assert all(int(a["helm.sh/hook-weight"]) < job_weight for k, a in hooks.items() if k[0] != "Job"), hooks
[job] = [d for d in docs if d["kind"] == "Job"]
assert "--stop-deployment=dst-load-test-churn" in job["spec"]["template"]["spec"]["containers"][0]["args"]
PY
# RBAC only: the three RBAC objects of each component, nothing else.
"$HELM" template dst-load-test "$chart" -n "$NS" --set rbacOnly=true --api-versions monitoring.coreos.com/v1/PodMonitor \
  >"$tmp/rbac-only.yaml"
kinds=$(grep '^kind:' "$tmp/rbac-only.yaml" | sort | uniq -c | tr -s ' ' | paste -sd,)
[[ $kinds == " 2 kind: Role, 2 kind: RoleBinding, 2 kind: ServiceAccount" ]] || fail "rbacOnly renders $kinds"
# PodMonitors on request even before the CRD exists.
n=$("$HELM" template t "$chart" --set podMonitor.force=true | grep -c '^kind: PodMonitor' || true)
[[ $n == 2 ]] || fail "podMonitor.force=true rendered $n PodMonitors"
scenario_files=("$chart"/scenarios/*.yaml)
echo "ok: lint clean, ${#scenario_files[@]} scenarios and a scenario file rendered, bad values rejected by the schema, large numbers exact"
echo "ok: 13 chart-owned flags refused with the value to use; churn is a Recreate Deployment; pre-delete hook with its RBAC; rbacOnly; podMonitor.force"

section "server-side dry run of every rendered manifest (strict validation)"
"$KUBECTL" apply --server-side -f "$CRDS/monitoring.coreos.com_podmonitors.yaml" >/dev/null
"$KUBECTL" wait --for condition=established --timeout=60s crd/podmonitors.monitoring.coreos.com >/dev/null
"$KUBECTL" create namespace "$NS" >/dev/null
# The ServiceAccounts and RBAC for real (a dry-run Pod needs its
# ServiceAccount to exist); the RBAC section below uses them.
python3 - "$tmp/render/default.yaml" >"$tmp/rbac.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")
        and "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
assert len(keep) == 6, [d["kind"] for d in keep]
print(yaml.safe_dump_all(keep))
PY
"$KUBECTL" apply -n "$NS" -f "$tmp/rbac.yaml" >/dev/null
for f in "$tmp"/render/*.yaml; do
  "$KUBECTL" apply -n "$NS" --dry-run=server --validate=strict -f "$f" >"$tmp/dry.out" ||
    fail "server-side dry run of $(basename "$f")"
  echo "  $(basename "$f" .yaml): $(wc -l <"$tmp/dry.out") objects accepted"
done

section "RBAC: churn and the client run with only their ServiceAccounts' rights"
kubeconfig_for() {
  local sa=$1 token
  token=$("$KUBECTL" create token -n "$NS" "$sa" --duration 10m)
  cat >"$tmp/$sa.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$DST_LOCAL_APISERVER", certificate-authority: "$DST_LOCAL_APISERVER_CA"}}]
users: [{name: $sa, user: {token: "$token"}}]
contexts: [{name: $sa, context: {cluster: local, user: $sa, namespace: $NS}}]
current-context: $sa
KC
  echo "$tmp/$sa.kubeconfig"
}
churn_kc=$(kubeconfig_for dst-load-test-churn)
client_kc=$(kubeconfig_for dst-load-test-client)
sa() { echo "system:serviceaccount:$NS:dst-load-test-$1"; }
for denied in "create pods" "get secrets" "list nodes" "delete namespaces" "create namespaces"; do
  # shellcheck disable=SC2086
  if "$KUBECTL" auth can-i $denied -n "$NS" --as "$(sa churn)" >/dev/null 2>&1; then fail "churn may $denied"; fi
done
if "$KUBECTL" auth can-i create services -n default --as "$(sa churn)" >/dev/null 2>&1; then fail "churn may write outside $NS"; fi
for denied in "create services" "patch deployments" "delete endpointslices" "get secrets"; do
  # shellcheck disable=SC2086
  if "$KUBECTL" auth can-i $denied -n "$NS" --as "$(sa client)" >/dev/null 2>&1; then fail "client may $denied"; fi
done
# The destination is Linkerd's real controller of the local control plane.
: "${DESTINATION_ADDR:?source the env file of the local control plane (hack/local-cluster.sh up)}"
KUBECONFIG=$churn_kc "$BIN" churn --namespace "$NS" --stable-services 1 --stable-endpoints 2 --export remote-discovery \
  --oscillate-services 1 --oscillate-min-endpoints 1 --oscillate-max-endpoints 3 \
  --oscillate-min-hold 2s --oscillate-max-hold 2s --duration 12s --cleanup-on-exit \
  --admin-addr 127.0.0.1:0 >"$tmp/churn.out" 2>"$tmp/churn.err" &
churn_pid=$!
for _ in $(seq 120); do # until churn has created both Services (a busy machine may take a while)
  "$KUBECTL" get svc -n "$NS" -l app.kubernetes.io/managed-by=dst-load-controller --show-labels >"$tmp/exported" 2>/dev/null || true
  [[ $(grep -c managed-by "$tmp/exported") == 2 ]] && break
  sleep 0.5
done
KUBECONFIG=$client_kc "$BIN" client --destination-addr "$DESTINATION_ADDR" --node-name kwok-node-0 --namespace "$NS" \
  --service-label-selector app.kubernetes.io/managed-by=dst-load-controller --ground-truth \
  --duration 6s --admin-addr 127.0.0.1:0 --slo errors==0 --slo stale_streams==0 \
  --slo 'convergence_latency.max<5s' >"$tmp/client.out" 2>"$tmp/client.err" ||
  { cat "$tmp/client.out" "$tmp/client.err" >&2; fail "client with its ServiceAccount"; }
wait "$churn_pid" || { cat "$tmp/churn.err" >&2; fail "churn with its ServiceAccount"; }
grep -q "api_errors=0" "$tmp/churn.out" || fail "churn saw API errors: $(cat "$tmp/churn.out")"
if grep -qi forbidden "$tmp/churn.err" "$tmp/client.err"; then fail "forbidden calls"; fi
grep -q "SLO PASS convergence_latency.max<5s" "$tmp/client.out" || fail "client measured no convergence: $(cat "$tmp/client.out")"
exported=$(grep -c 'mirror.linkerd.io/exported=remote-discovery' "$tmp/exported" || true)
[[ $exported == 2 ]] || fail "churn --export remote-discovery labelled $exported of 2 Services"
left=$("$KUBECTL" get deploy,svc -n "$NS" -l app.kubernetes.io/managed-by=dst-load-controller -o name | wc -l)
[[ $left == 0 ]] || fail "churn's cleanup left $left objects"
echo "ok: $(grep -o 'services_created=[0-9]*' "$tmp/churn.out"), client gates passed, cleanup complete, nothing beyond the verbs granted"

section "a scenario file through the chart: churn and the client read the ConfigMap's file"
# The chart's churn and client args (rendered above with --set-file
# scenario=...) with the ConfigMap's text where the pod mounts it, under
# the chart's ServiceAccounts, against the real apiserver and destination.
mapfile -t scn_churn < <(cat "$tmp/scenario-churn.args")
mapfile -t scn_client < <(cat "$tmp/scenario-client.args")
KUBECONFIG=$churn_kc "$BIN" "${scn_churn[@]}" --admin-addr 127.0.0.1:0 --duration 14s --cleanup-on-exit \
  >"$tmp/scn-churn.out" 2>"$tmp/scn-churn.err" &
scn_churn_pid=$!
pids+=("$scn_churn_pid")
for _ in $(seq 120); do # until churn has created the file's 2 Services
  n=$("$KUBECTL" get svc -n "$NS" -l app.kubernetes.io/managed-by=dst-load-controller -o name 2>/dev/null | wc -l)
  [[ $n == 2 ]] && break
  sleep 0.5
done
svcs=$("$KUBECTL" get svc -n "$NS" -l app.kubernetes.io/managed-by=dst-load-controller -o name | sort | paste -sd,)
[[ $svcs == "service/oscillate-svc-0,service/stable-svc-0" ]] || fail "churn --scenario-file created $svcs"
KUBECONFIG=$client_kc "$BIN" "${scn_client[@]}" --destination-addr "$DESTINATION_ADDR" --node-name kwok-node-0 \
  --admin-addr 127.0.0.1:0 --duration 8s >"$tmp/scn-client.out" 2>"$tmp/scn-client.err" ||
  { cat "$tmp/scn-client.out" "$tmp/scn-client.err" >&2; fail "the client with the chart's scenario file"; }
wait "$scn_churn_pid" || { cat "$tmp/scn-churn.err" >&2; fail "churn with the chart's scenario file"; }
# The file's gates (no --slo given) passed, over the file's 2 x 2 streams.
for slo in errors==0 stale_streams==0 unconverged_streams==0; do
  grep -q "SLO PASS $slo" "$tmp/scn-client.out" || fail "client: no SLO PASS $slo: $(cat "$tmp/scn-client.out")"
done
grep -Eq '^  streams created: +4$' "$tmp/scn-client.out" || fail "client did not open the file's 4 streams: $(cat "$tmp/scn-client.out")"
grep -q "seed=7 " "$tmp/scn-churn.out" || fail "churn did not take the file's seed: $(cat "$tmp/scn-churn.out")"
grep -q "api_errors=0" "$tmp/scn-churn.out" || fail "churn saw API errors: $(cat "$tmp/scn-churn.out")"
if grep -qi forbidden "$tmp/scn-churn.err" "$tmp/scn-client.err"; then fail "forbidden calls with the scenario file"; fi
echo "ok: churn created the file's 2 services with its seed, the client watched them with the file's 4 streams and passed its 3 SLOs"

section "helm install and uninstall: the pre-delete hook stops churn and removes all it created"
# The real helm against the real apiserver. Pods land on the KWOK node (they
# look Running but run nothing), so this script plays their containers: churn
# with the churn ServiceAccount's token, and the hook Job's exact args with
# the hook's token while helm waits for the Job; then it reports the Job's
# pod Succeeded, as the kubelet would, and helm finishes the uninstall.
HNS=$NS-helm
"$HELM" install dst-load-test "$chart" -n "$HNS" --create-namespace \
  --set image.pullPolicy=Never --set nodeSelector.type=kwok \
  --set-json 'tolerations=[{"key":"kwok.x-k8s.io/node","operator":"Exists","effect":"NoSchedule"}]' \
  --set churn.args.stable-services=2 --set churn.args.stable-endpoints=2 >/dev/null
"$KUBECTL" -n "$HNS" rollout status deploy/dst-load-test-churn --timeout=120s >/dev/null
# Changing the scenario: a plain upgrade and a --force one (which failed on
# the bare Pod churn used to be) both replace churn with the new flags.
for force in "" --force; do
  n=$([[ -z $force ]] && echo 3 || echo 2)
  # shellcheck disable=SC2086
  "$HELM" upgrade dst-load-test "$chart" -n "$HNS" --reuse-values $force --set churn.args.stable-services=$n \
    >"$tmp/upgrade.out" 2>&1 || { cat "$tmp/upgrade.out" >&2; fail "helm upgrade $force changing churn's flags"; }
  "$KUBECTL" -n "$HNS" get deploy dst-load-test-churn -o jsonpath='{.spec.template.spec.containers[0].args}' |
    grep -q -- "--stable-services=$n" || fail "helm upgrade $force did not change churn's flags"
  "$KUBECTL" -n "$HNS" rollout status deploy/dst-load-test-churn --timeout=120s >/dev/null
done
[[ $("$KUBECTL" -n "$HNS" get pods -l app.kubernetes.io/component=churn -o name | wc -l) == 1 ]] ||
  fail "more than one churn pod after upgrades"
# The first container's args of a pod, or of a workload's pod template.
container_args() { # namespace kind/name
  local path=.spec.template.spec
  [[ $2 == pod/* ]] && path=.spec
  "$KUBECTL" -n "$1" get "$2" -o jsonpath="{range $path.containers[0].args[*]}{@}{\"\\n\"}{end}"
}
churn_hkc=$(NS=$HNS kubeconfig_for dst-load-test-churn)
# churn (its container's args, with the chart's churn ServiceAccount) creates
# its objects and exits without cleaning up, as a churn killed mid-run would.
mapfile -t churn_args < <(container_args "$HNS" deploy/dst-load-test-churn | grep -v -- '--admin-addr')
KUBECONFIG=$churn_hkc "$BIN" "${churn_args[@]}" --admin-addr 127.0.0.1:0 --duration 4s >"$tmp/hchurn.out" 2>&1 ||
  { cat "$tmp/hchurn.out" >&2; fail "churn with the chart's args and ServiceAccount"; }
owned() { "$KUBECTL" get deploy,svc -n "$HNS" -l app.kubernetes.io/managed-by=dst-load-controller -o name | wc -l; }
[[ $(owned) == 4 ]] || fail "churn left $(owned) objects, expected 2 Services and 2 Deployments"
"$HELM" uninstall dst-load-test -n "$HNS" --wait --timeout 3m >"$tmp/uninstall.out" 2>&1 &
uninstall_pid=$!
pids+=("$uninstall_pid")
for _ in $(seq 120); do
  "$KUBECTL" -n "$HNS" get job dst-load-test-cleanup >/dev/null 2>&1 && break
  sleep 0.5
done
"$KUBECTL" -n "$HNS" get job dst-load-test-cleanup >/dev/null || fail "helm uninstall created no cleanup Job"
# While the hook runs, its RBAC exists and the release's objects are not yet deleted.
for o in sa/dst-load-test-cleanup role/dst-load-test-cleanup rolebinding/dst-load-test-cleanup deploy/dst-load-test-churn; do
  "$KUBECTL" -n "$HNS" get "$o" >/dev/null 2>&1 || fail "$o is gone while the pre-delete hook runs"
done
hook_kc=$(NS=$HNS kubeconfig_for dst-load-test-cleanup)
mapfile -t hook_args < <(container_args "$HNS" job/dst-load-test-cleanup)
KUBECONFIG=$hook_kc "$BIN" "${hook_args[@]}" >"$tmp/hook.out" 2>&1 || { cat "$tmp/hook.out" >&2; fail "the hook's cleanup"; }
grep -q "stopped deployment dst-load-test-churn" "$tmp/hook.out" || fail "the hook did not stop churn: $(cat "$tmp/hook.out")"
grep -q "deleted 2 services and 2 deployments" "$tmp/hook.out" || fail "the hook's cleanup: $(cat "$tmp/hook.out")"
[[ $("$KUBECTL" -n "$HNS" get deploy dst-load-test-churn -o jsonpath='{.spec.replicas}') == 0 ]] ||
  fail "churn's Deployment was not scaled to zero"
for _ in $(seq 60); do
  pod=$("$KUBECTL" -n "$HNS" get pods -l job-name=dst-load-test-cleanup -o name | head -1)
  [[ -n $pod ]] && break
  sleep 0.5
done
[[ -n $pod ]] || fail "the cleanup Job has no pod"
"$KUBECTL" -n "$HNS" patch "$pod" --subresource=status --type=merge \
  -p '{"status":{"phase":"Succeeded","conditions":[{"type":"Ready","status":"False"}],"containerStatuses":[{"name":"cleanup","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}}' >/dev/null
wait "$uninstall_pid" || { cat "$tmp/uninstall.out" >&2; fail "helm uninstall"; }
left=$("$KUBECTL" get all,sa,role,rolebinding -n "$HNS" -o name | grep -v -e '^serviceaccount/default$' -e '^pod/' || true)
[[ -z $left && $(owned) == 0 ]] || fail "helm uninstall left: $left (churn's: $(owned))"
echo "ok: uninstall ran the hook with its own RBAC while churn's objects existed; churn stopped, 2 services and 2 deployments deleted; nothing left"

section "the README's kubectl run recipe, with the chart in RBAC-only mode"
# The recipe's helm and kubectl commands as written, in a scratch namespace.
RNS=$NS-recipe
awk '/<!-- recipe: kubectl-run/ {on=1; next} on && /^```bash/ {next} on && /^```/ {exit} on' "$repo/README.md" |
  sed -e "s/-n dst-load-test /-n $RNS /g" -e "s/--namespace=dst-load-test /--namespace=$RNS /g" >"$tmp/recipe.sh"
grep -q 'rbacOnly=true' "$tmp/recipe.sh" || fail "README recipe not found (or not in RBAC-only mode)"
(
  cd "$repo"
  helm() { "$HELM" "$@" >/dev/null; }
  kubectl() { if [[ $3 == logs ]]; then return 0; fi; "$KUBECTL" "$@" >/dev/null; }
  set -e
  # shellcheck disable=SC1090
  . "$tmp/recipe.sh"
) || fail "the recipe's commands: $(cat "$tmp/recipe.sh")"
for c in churn client; do
  [[ $("$KUBECTL" -n "$RNS" get pod "$c" -o jsonpath='{.spec.serviceAccountName}') == "dst-load-test-$c" ]] ||
    fail "pod $c does not run as dst-load-test-$c"
done
left=$("$KUBECTL" -n "$RNS" get deploy,job -o name | wc -l)
[[ $left == 0 ]] || fail "rbacOnly installed $left workloads: a second churn"
# Their processes, played here under the same ServiceAccounts, scaled down
# for a shared machine (fewer services, endpoints and streams; seconds for
# minutes) and pointed at the local destination controller.
pod_args() {
  container_args "$RNS" "pod/$1" | sed \
    -e 's/^--oscillate-services=.*/--oscillate-services=2/' -e 's/^--oscillate-min-endpoints=.*/--oscillate-min-endpoints=2/' \
    -e 's/^--oscillate-max-endpoints=.*/--oscillate-max-endpoints=6/' -e 's/^--oscillate-min-hold=.*/--oscillate-min-hold=2s/' \
    -e 's/^--oscillate-max-hold=.*/--oscillate-max-hold=3s/' -e 's/^--oscillate-jitter=.*/--oscillate-jitter=1s/' \
    -e "s/^--destination-addr=.*/--destination-addr=$DESTINATION_ADDR/" -e 's/^--connections=.*/--connections=4/' \
    -e 's/^--streams-per-service=.*/--streams-per-service=2/' -e 's/^--duration=.*/--duration=12s/'
}
mapfile -t churn_args < <(pod_args churn)
# Latency gates are benchmarks' business on a shared machine: the exact ones stay.
mapfile -t client_args < <(pod_args client | awk '$0 == "--slo" {getline v; if (v !~ /latency/) print $0 "\n" v; next} {print}')
rchurn_kc=$(NS=$RNS kubeconfig_for dst-load-test-churn)
rclient_kc=$(NS=$RNS kubeconfig_for dst-load-test-client)
KUBECONFIG=$rchurn_kc "$BIN" "${churn_args[@]}" --admin-addr 127.0.0.1:0 --duration 20s --cleanup-on-exit \
  >"$tmp/rchurn.out" 2>"$tmp/rchurn.err" &
rchurn=$!
pids+=("$rchurn")
sleep 3
KUBECONFIG=$rclient_kc "$BIN" "${client_args[@]}" --admin-addr 127.0.0.1:0 --node-name kwok-node-0 \
  >"$tmp/rclient.out" 2>"$tmp/rclient.err" ||
  { cat "$tmp/rclient.out" "$tmp/rclient.err" >&2; fail "the recipe's client under dst-load-test-client"; }
wait "$rchurn" || { cat "$tmp/rchurn.err" >&2; fail "the recipe's churn under dst-load-test-churn"; }
grep -q "SLO PASS stale_streams==0" "$tmp/rclient.out" || fail "recipe client: $(cat "$tmp/rclient.out")"
grep -Eq '^  updates: +[1-9]' "$tmp/rclient.out" && grep -Eq '^  errors: +0$' "$tmp/rclient.out" ||
  fail "recipe client saw no updates, or errors: $(cat "$tmp/rclient.out")"
grep -q "api_errors=0" "$tmp/rchurn.out" || fail "recipe churn saw API errors: $(cat "$tmp/rchurn.out")"
if grep -qi forbidden "$tmp/rchurn.err" "$tmp/rclient.err"; then fail "forbidden calls in the recipe"; fi
"$KUBECTL" -n "$RNS" delete pod churn client --wait=false >/dev/null
echo "ok: the recipe's helm and kubectl commands ran as written; churn and client worked under the chart's RBAC-only ServiceAccounts ($(grep -o 'services_created=[0-9]*' "$tmp/rchurn.out"))"

section "k3d scripts, with stand-in k3d, docker, kubectl, helmfile and linkerd"
# No Docker here: the stand-ins record their arguments, and the recorded
# calls are what the walk-through would do.
stand=$tmp/stand-in
mkdir -p "$stand"
for tool in k3d docker kubectl helmfile linkerd; do
  # One append per call (a pipeline's two ends run at once): stdin of
  # `apply -f -` goes on the same line.
  cat >"$stand/$tool" <<STAND
#!/usr/bin/env bash
case "$tool \$*" in
  "kubectl "*"apply -f -") echo "$tool \$* stdin: \$(tr '\n' ' ')" >>"$stand/calls" ;;
  *) echo "$tool \$*" >>"$stand/calls" ;;
esac
case "$tool \$*" in
  "docker inspect"*) echo 172.18.0.3 ;;
  "linkerd "*link-gen*) echo "kind: Link" ;;
esac
STAND
  chmod +x "$stand/$tool"
done
PATH=$stand:$PATH LINKERD_CA_DIR=$ca "$here/k3d-multicluster.sh" >/dev/null
calls=$stand/calls
k3s_minor=$(sed -n 's/^K3S_IMAGE=rancher\/k3s:v1\.\([0-9]*\)\..*/\1/p' "$here/versions.env")
((k3s_minor >= 31)) || fail "K3S_IMAGE must be Kubernetes >= 1.31 (Linkerd $LINKERD_VERSION's charts)"
for c in target source; do
  grep -q "^k3d cluster create $c --image $(sed -n 's/^K3S_IMAGE=//p' "$here/versions.env") .*kube-controller-manager-arg=kube-api-qps=200.*--network dst-load-multicluster" "$calls" ||
    fail "cluster $c: not created with the pinned k3s image, controller-manager QPS and the shared network: $(grep "create $c" "$calls")"
done
grep -q "^linkerd --context k3d-target multicluster link-gen --cluster-name target --gateway=false --api-server-address https://172.18.0.3:6443$" "$calls" ||
  fail "link-gen: $(grep link-gen "$calls")"
grep -q "^kubectl --context k3d-source apply -f - stdin: kind: Link" "$calls" || fail "the Link is not applied to the source"
mapfile -t syncs < <(grep '^helmfile' "$calls")
want=("helmfile --kube-context k3d-target -e multicluster-target sync"
  "helmfile --kube-context k3d-source -e multicluster-source sync"
  "helmfile --kube-context k3d-source -e multicluster-source --state-values-set loadTest.enabled=true --state-values-set scenario=small-oscillation sync"
  "helmfile --kube-context k3d-target -e multicluster-target --state-values-set loadTest.enabled=true --state-values-set scenario=small-oscillation sync")
[[ ${syncs[*]} == "${want[*]}" ]] || fail "helmfile calls: ${syncs[*]}"
echo "ok: pinned k3s (1.$k3s_minor) at 200 QPS, target linked to source by link-gen --gateway=false, clients synced to the source (its namespace first), then churn to the target"

section "Linkerd's charts from the source archive ($LINKERD_VERSION) with our values"
# The charts build-deps.sh copied out of ../shared/sources, laid out as in
# the source tree (their partials dependency is a relative file:// path).
LCHARTS=$CACHE/linkerd-$LINKERD_VERSION/charts
lc=$tmp/linkerd-charts
mkdir -p "$lc/charts" "$lc/multicluster/charts"
cp -r "$LCHARTS/partials" "$LCHARTS/linkerd-crds" "$LCHARTS/linkerd-control-plane" "$lc/charts/"
cp -r "$LCHARTS/linkerd-multicluster" "$lc/multicluster/charts/"
for c in charts/linkerd-crds charts/linkerd-control-plane multicluster/charts/linkerd-multicluster; do
  (cd "$lc/$c" && "$HELM" dependency build . >/dev/null) || fail "helm dependency build $c"
done
# Our values for them, exactly as helmfile passes them, in every environment.
for env in default multicluster-source multicluster-target; do
  LINKERD_CA_DIR=$ca HELMFILE_DISABLE_INSIGHTS=true "$HELMFILE" --file "$repo/helmfile.yaml" -e "$env" \
    --state-values-set monitoring.enabled=true --state-values-set loadTest.enabled=true \
    write-values --skip-deps --output-file-template "$tmp/values/$env/{{ .Release.Name }}.yaml" >/dev/null 2>&1
done
v=$tmp/values
python3 "$here/check-linkerd-charts.py" keys "$lc/charts/linkerd-crds" "$v"/*/linkerd-crds.yaml
python3 "$here/check-linkerd-charts.py" keys "$lc/charts/linkerd-control-plane" "$v"/*/linkerd-control-plane.yaml
python3 "$here/check-linkerd-charts.py" keys "$lc/multicluster/charts/linkerd-multicluster" "$v"/multicluster-*/linkerd-multicluster.yaml
# Rendered as helm would install them (identity from gen-certs.sh's
# certificates), then a strict server-side dry run of every object. The
# control plane and the multicluster extension go to scratch namespaces.
"$KUBECTL" api-resources --namespaced=false --no-headers | awk '{print $NF}' >"$tmp/cluster-kinds"
render() { # release chart namespace values-file
  "$HELM" template "$1" "$2" --kube-version "$K8S_VERSION" -n "$3" -f "$4" |
    python3 "$here/check-linkerd-charts.py" namespace "$3" "$tmp/cluster-kinds"
}
LNS=$NS-linkerd
"$KUBECTL" create namespace "$LNS" >/dev/null
render linkerd-crds "$lc/charts/linkerd-crds" linkerd "$v/default/linkerd-crds.yaml" >"$tmp/l-crds.yaml"
grep -q 'name: httproutes.gateway.networking.k8s.io' "$tmp/l-crds.yaml" || fail "linkerd-crds renders no Gateway API CRDs"
render linkerd-control-plane "$lc/charts/linkerd-control-plane" "$LNS" "$v/default/linkerd-control-plane.yaml" >"$tmp/l-cp.yaml"
grep -q "$(head -2 "$ca/ca.crt" | tail -1)" "$tmp/l-cp.yaml" || fail "the control plane does not carry gen-certs.sh's trust anchor"
for role in source target; do
  MNS=$NS-mc-$role
  "$KUBECTL" create namespace "$MNS" >/dev/null
  render linkerd-multicluster "$lc/multicluster/charts/linkerd-multicluster" "$MNS" \
    "$v/multicluster-$role/linkerd-multicluster.yaml" >"$tmp/l-mc-$role.yaml"
done
grep -q 'name: controller-target' "$tmp/l-mc-source.yaml" || fail "the source runs no service mirror for the Link named target"
grep -q 'name: linkerd-service-mirror-remote-access-default' "$tmp/l-mc-target.yaml" ||
  fail "the target grants no remote access for link-gen's credentials"
if grep -q 'name: linkerd-gateway$' "$tmp/l-mc-source.yaml" "$tmp/l-mc-target.yaml"; then fail "a gateway is rendered"; fi
for f in l-crds l-cp l-mc-source l-mc-target; do
  "$KUBECTL" apply --server-side --force-conflicts --dry-run=server --validate=strict -f "$tmp/$f.yaml" >"$tmp/dry.out" ||
    fail "server-side dry run of Linkerd's ${f#l-} manifests"
  echo "  ${f#l-}: $(grep -c . "$tmp/dry.out") objects accepted"
done
"$KUBECTL" delete namespace "$LNS" "$NS-mc-source" "$NS-mc-target" --wait=false >/dev/null

section "dashboards: kube-apiserver metrics exist in its /metrics"
curl -s --cacert "$DST_LOCAL_APISERVER_CA" -H "Authorization: Bearer dst-load-local-admin-token" "$DST_LOCAL_APISERVER/metrics" >"$tmp/apiserver.metrics"
for m in $(awk '!/^#/ && $2 == "kube-apiserver" {print $1}' "$repo/dashboards/external-metrics.txt"); do
  grep -q "^${m}[{ ]" "$tmp/apiserver.metrics" || fail "kube-apiserver does not export $m"
  echo "  $m: present"
done
# The label values the dashboards filter on.
grep -q '^apiserver_request_total{.*resource="endpointslices"' "$tmp/apiserver.metrics" || fail "no endpointslices requests counted"
grep -qi '^apiserver_longrunning_requests{.*verb="watch"' "$tmp/apiserver.metrics" || fail "no watch longrunning requests"

printf '\n[validate-deploy] all checks passed\n'
