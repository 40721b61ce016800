#!/usr/bin/env bash
# Two local control planes side by side, linked as Linkerd multicluster links
# them, with no container engine and no gateway (remote discovery):
#   target  where the endpoints live (churn runs here, its Services exported)
#   source  where clients watch: its own destination controller serves the
#           target's Services as mirrors `{svc}-target`, reading the target's
#           EndpointSlices through the link's credentials.
# Each is `hack/local-cluster.sh --name NAME` (its own ports, state directory
# and cluster domain NAME.local); both share one trust domain and one trust
# root (hack/gen-certs.sh). The link is what `linkerd multicluster link-gen
# --gateway=false` prints (Linkerd's CLI, built from the same sources), after
# the target got the remote-access RBAC of Linkerd's multicluster chart; the
# source runs Linkerd's service mirror (`linkerd-controller service-mirror`).
#
# usage: hack/local-multicluster.sh up|down|status|env
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"
CACHE=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}
LINKERD_DIR=$CACHE/linkerd-$LINKERD_VERSION
LINKERD_CLI=$CACHE/linkerd_cli-$LINKERD_VERSION/bin/linkerd
HELM=$CACHE/helm-$HELM_VERSION/bin/helm
KUBECTL=$CACHE/kubectl-$K8S_VERSION/bin/kubectl
ROOT=$repo/.local-clusters
CA_DIR=$ROOT/ca
LINK=target
MC_NS=linkerd-multicluster
# The service mirror's admin server (metrics, /ready) in the source.
MIRROR_METRICS_PORT=19999
# The second link, in gateway mode (per-pod mirrors of headless services).
GW_LINK=target-gw
# TEST-NET-1 (RFC 5737): Endpoints refuse loopback addresses, and nothing
# dials the gateway (discovery only).
GW_ADDRESS=192.0.2.10
GW_MIRROR_METRICS_PORT=19998

log() { printf '[local-multicluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

lc() { "$here/local-cluster.sh" --name "$@"; }
kc() { local c=$1; shift; "$KUBECTL" --kubeconfig "$ROOT/$c/kubeconfig" "$@"; }
apply() { kc "$1" apply --server-side --field-manager dst-load-local -f - >/dev/null; }
# env_of CLUSTER VAR: a variable of a cluster's env file.
env_of() { sed -n "s/^export $2=//p" "$ROOT/$1/env"; }

namespace() { kc "$1" create namespace "$MC_NS" --dry-run=client -o yaml | apply "$1"; }

mirror_pid() { cat "$ROOT/source/run/service-mirror-${1:-$LINK}.pid" 2>/dev/null || true; }
# stop_mirror LINK: ends the link's recorded service mirror (and the one an
# older version of this script recorded as service-mirror.pid).
stop_mirror() {
  local p f
  for f in "$ROOT/source/run/service-mirror-$1.pid" "$ROOT/source/run/service-mirror.pid"; do
    p=$(cat "$f" 2>/dev/null || true)
    if [[ -n $p ]]; then kill "$p" 2>/dev/null || true; fi
    rm -f "$f"
  done
}
mirror_alive() { local p; p=$(mirror_pid "${1:-$LINK}"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# Linkerd's multicluster chart, rendered: one template of it. Laid out as in
# Linkerd's tree, for the chart's relative dependency on its partials.
render() {
  local tree=$ROOT/linkerd chart=$ROOT/linkerd/multicluster/charts/linkerd-multicluster
  if [[ ! -d $chart ]]; then
    mkdir -p "$tree/charts" "$tree/multicluster/charts"
    cp -r "$LINKERD_DIR/charts/partials" "$tree/charts/"
    cp -r "$LINKERD_DIR/charts/linkerd-multicluster" "$tree/multicluster/charts/"
    "$HELM" dependency build "$chart" >/dev/null
  fi
  "$HELM" template linkerd-multicluster "$chart" -n "$MC_NS" \
    --kube-version "$K8S_VERSION" --set gateway.enabled=false --show-only "templates/$1" "${@:2}"
}

# What Linkerd's control-plane chart gives every cluster and link-gen reads:
# the trust root, and linkerd-config with the trust and cluster domains.
control_plane_config() {
  local c=$1 domain trust
  domain=$(env_of "$c" DST_LOCAL_CLUSTER_DOMAIN)
  trust=$(env_of "$c" DST_LOCAL_TRUST_DOMAIN)
  kc "$c" -n linkerd create configmap linkerd-identity-trust-roots \
    --from-file=ca-bundle.crt="$CA_DIR/ca.crt" --dry-run=client -o yaml | apply "$c"
  kc "$c" -n linkerd create configmap linkerd-config \
    --from-literal=values="$(printf 'identityTrustDomain: %s\nclusterDomain: %s\n' "$trust" "$domain")" \
    --dry-run=client -o yaml | apply "$c"
}

# start_mirror LINK METRICS_PORT [FLAG...]: Linkerd's service mirror of one
# link in the source, logging to logs/service-mirror[-LINK].log; returns once
# its watcher of the target has synced (its first GC of orphaned mirrors).
start_mirror() {
  local link=$1 port=$2 p log pidfile
  shift 2
  log=$(mirror_log "$link")
  pidfile=$ROOT/source/run/service-mirror-$link.pid
  # A copy left from a half-made setup would hold the port and the lease.
  stop_mirror "$link"
  HOSTNAME=dst-load-source-service-mirror-$link nohup "$LINKERD_DIR/bin/linkerd-controller" service-mirror \
    -kubeconfig="$ROOT/source/kubeconfig" -namespace="$MC_NS" \
    -metrics-addr="127.0.0.1:$port" -log-level=info -log-format=plain "$@" \
    "$link" >>"$log" 2>&1 &
  p=$!
  echo "$p" >"$pidfile"
  for _ in $(seq 240); do
    kill -0 "$p" 2>/dev/null || { tail -n 30 "$log" >&2; die "the service mirror of $link exited"; }
    if grep -q "OrphanedServicesGcTriggered.*cluster=$link" "$log" 2>/dev/null; then
      return 0
    fi
    sleep 0.25
  done
  tail -n 30 "$log" >&2
  die "the service mirror of $link did not start watching the target within 60s"
}

# The log of a link's service mirror (the remote-discovery link's keeps its
# first name).
mirror_log() {
  if [[ $1 == "$LINK" ]]; then echo "$ROOT/source/logs/service-mirror.log"; else echo "$ROOT/source/logs/service-mirror-$1.log"; fi
}

# The gateway-mode link GW_LINK: the target gets the multicluster chart's
# gateway Service (only the Service: no gateway runs, since discovery is
# what is tested; its LoadBalancer gets no address, so link-gen is given
# GW_ADDRESS, an address nothing dials); the link mirrors only
# `mirror.linkerd.io/exported=true` (its remote-discovery and federated
# selectors match nothing, so the remote-discovery link's mirrors stay
# alone); its service mirror makes per-pod mirrors of headless services.
link_gateway() {
  local target_api=$1
  render gateway.yaml --set gateway.enabled=true | python3 -c '
import sys
docs = sys.stdin.read().split("\n---\n")
print("\n---\n".join(d for d in docs if "\nkind: Service\n" in "\n" + d + "\n"))
' | apply target
  "$LINKERD_CLI" --kubeconfig "$ROOT/target/kubeconfig" multicluster link-gen \
    --cluster-name "$GW_LINK" --api-server-address "$target_api" \
    --gateway-addresses "$GW_ADDRESS" \
    --remote-discovery-selector 'mirror.linkerd.io/exported=none-by-gateway-link' \
    --federated-service-selector 'mirror.linkerd.io/federated=none-by-gateway-link' \
    >"$ROOT/link-$GW_LINK.yaml"
  kc source apply -f "$ROOT/link-$GW_LINK.yaml" >/dev/null
  start_mirror "$GW_LINK" "$GW_MIRROR_METRICS_PORT" -enable-headless-services
}

write_env() {
  cat >"$ROOT/env" <<ENV
# Written by hack/local-multicluster.sh up; source it.
# The source: clients watch its destination controller.
export DESTINATION_ADDR=$(env_of source DESTINATION_ADDR)
export DESTINATION_METRICS_ADDR=$(env_of source DESTINATION_METRICS_ADDR)
export SOURCE_KUBECONFIG=$ROOT/source/kubeconfig
export SOURCE_CLUSTER_DOMAIN=$(env_of source DST_LOCAL_CLUSTER_DOMAIN)
# The target: churn runs here; the ground truth is read here.
export TARGET_KUBECONFIG=$ROOT/target/kubeconfig
export TARGET_CLUSTER_DOMAIN=$(env_of target DST_LOCAL_CLUSTER_DOMAIN)
export TARGET_DESTINATION_ADDR=$(env_of target DESTINATION_ADDR)
# The link: mirrors are named {svc}-$LINK in the source.
export MULTICLUSTER_LINK=$LINK
export SERVICE_MIRROR_METRICS_ADDR=127.0.0.1:$MIRROR_METRICS_PORT
export SERVICE_MIRROR_LOG=$ROOT/source/logs/service-mirror.log
# The gateway-mode link: exports labelled mirror.linkerd.io/exported=true are
# mirrored as {svc}-$GW_LINK, headless ones with one {pod}-$GW_LINK per pod.
export GATEWAY_LINK=$GW_LINK
export GATEWAY_ADDRESS=$GW_ADDRESS
export GATEWAY_SERVICE_MIRROR_LOG=$(mirror_log "$GW_LINK")
export DST_LOCAL_KUBECTL=$KUBECTL
ENV
}

cmd_up() {
  if [[ -f $ROOT/env ]] && mirror_alive && mirror_alive "$GW_LINK" && lc source status >/dev/null 2>&1 && lc target status >/dev/null 2>&1; then
    log "already up; source $ROOT/env"
    return 0
  fi
  local start=$SECONDS target_api
  "$here/build-deps.sh" etcd kubernetes kubectl kwok linkerd linkerd_cli helm step
  mkdir -p "$ROOT"
  [[ -f $CA_DIR/ca.crt ]] || TRUST_DOMAIN=cluster.local "$here/gen-certs.sh" "$CA_DIR" >/dev/null
  lc target up
  lc source up
  control_plane_config target
  control_plane_config source
  # The target: the service mirror's and the remote destination's access
  # (the multicluster chart's remote-access RBAC, its service account and
  # token Secret, which the controller manager fills in).
  namespace target
  render remote-access-service-mirror-rbac.yaml | apply target
  for _ in $(seq 120); do
    [[ -n $(kc target -n "$MC_NS" get secret linkerd-service-mirror-remote-access-default-token -o jsonpath='{.data.token}' 2>/dev/null) ]] && break
    sleep 0.5
  done
  # The source: the Link CRD and the namespace the link lives in.
  render link-crd.yaml | apply source
  namespace source
  kc source wait --for condition=established --timeout 60s crd/links.multicluster.linkerd.io >/dev/null
  target_api=$(env_of target DST_LOCAL_APISERVER)
  "$LINKERD_CLI" --kubeconfig "$ROOT/target/kubeconfig" multicluster link-gen \
    --cluster-name "$LINK" --gateway=false --api-server-address "$target_api" >"$ROOT/link.yaml"
  kc source apply -f "$ROOT/link.yaml" >/dev/null
  start_mirror "$LINK" "$MIRROR_METRICS_PORT"
  link_gateway "$target_api"
  write_env
  log "up in $((SECONDS - start))s: source $ROOT/env"
}

cmd_down() {
  local l
  for l in "$LINK" "$GW_LINK"; do stop_mirror "$l"; done
  lc source down || true
  lc target down || true
  rm -rf "$ROOT"
  log "down"
}

cmd_status() {
  local ok=0
  echo "== target"; lc target status || ok=1
  echo "== source"; lc source status || ok=1
  local l
  for l in "$LINK" "$GW_LINK"; do
    if mirror_alive "$l"; then printf '%-24s running (pid %s)\n' "service-mirror $l" "$(mirror_pid "$l")"; else printf '%-24s stopped\n' "service-mirror $l"; ok=1; fi
  done
  return $ok
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cat "$ROOT/env" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
