#!/usr/bin/env bash
# Runs the end-to-end tests against the local control plane, Linkerd's real
# destination controller included (and the Prometheus-backed tests): brings it up
# unless it is already up, runs the ignored e2e tests one at a time (one of
# them restarts the apiserver), and brings it down again if it started it.
# Then the multicluster tests, on two more control planes linked by Linkerd's
# service mirror (hack/local-multicluster.sh), likewise. Then Linkerd's known
# bugs on the versions that had them (tests/e2e_versions.rs): one control
# plane per Linkerd version compared (hack/local-cluster.sh --name NAME up
# --linkerd VERSION, each version built once into the cache).
#
# Every step runs even when an earlier one fails (one flake must not hide the
# rest); the script then exits 1 naming every step that failed. The late-pod
# cases the tests tolerated (Linkerd's controller leaving out an endpoint whose
# pod came after its slice, repaired by touching the slice) are printed at the
# end, by test: how often it happens is a finding.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
STATE=${DST_LOCAL_CLUSTER_DIR:-$repo/.local-cluster}

started=0 mc_started=0
version_clusters=()
failed=()
findings=$(mktemp)
export DST_E2E_FINDINGS=$findings
cleanup() {
  if [[ $started == 1 ]]; then "$here/local-cluster.sh" down; fi
  if [[ $mc_started == 1 ]]; then "$here/local-multicluster.sh" down; fi
  local n
  for n in "${version_clusters[@]}"; do "$here/local-cluster.sh" --name "$n" down; done
  rm -f "$findings"
}
trap cleanup EXIT

# step NAME CMD...: runs CMD, recording NAME as failed when it fails.
step() {
  local name=$1
  shift
  printf '[e2e] %s\n' "$name" >&2
  local start=$SECONDS
  if "$@"; then
    printf '[e2e] %s: passed in %ss\n' "$name" "$((SECONDS - start))" >&2
  else
    printf '[e2e] %s: FAILED (%ss)\n' "$name" "$((SECONDS - start))" >&2
    failed+=("$name")
  fi
}

report() {
  if [[ -s $findings ]]; then
    printf '[e2e] late-pod cases tolerated (Linkerd left an endpoint out until its slice changed): %s\n' \
      "$(wc -l <"$findings")" >&2
    sed 's/^/[e2e]   /' "$findings" >&2
  else
    printf '[e2e] late-pod cases tolerated: 0\n' >&2
  fi
  if [[ ${#failed[@]} -gt 0 ]]; then
    printf '[e2e] FAILED: %s\n' "${failed[*]}" >&2
    exit 1
  fi
  printf '[e2e] every step passed\n' >&2
}

if ! "$here/local-cluster.sh" status >/dev/null 2>&1; then
  if "$here/local-cluster.sh" up; then
    started=1
  else
    failed+=("local-cluster up")
  fi
fi

if [[ ${#failed[@]} == 0 ]]; then
  # shellcheck disable=SC1091
  . "$STATE/env"
  cd "$repo" || exit 1
  # A real Prometheus: the dashboards' queries during a cluster run, and
  # `report --prometheus` scraping a real client. DST_PROMETHEUS if set, else
  # the one on PATH (Debian's 2.42 serves every test: .ci/run installs it),
  # else Prometheus built from its Go module (about 4 minutes cold).
  if [[ -z ${DST_PROMETHEUS:-} ]]; then
    if command -v prometheus >/dev/null; then
      DST_PROMETHEUS=$(command -v prometheus)
    else
      "$here/build-deps.sh" prometheus || failed+=("build prometheus")
      # shellcheck source=hack/versions.env
      . "$here/versions.env"
      DST_PROMETHEUS=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}/prometheus-$PROMETHEUS_VERSION/bin/prometheus
    fi
  fi
  export DST_PROMETHEUS
  printf '[e2e] Prometheus: %s (%s)\n' "$DST_PROMETHEUS" "$("$DST_PROMETHEUS" --version 2>&1 | head -n1)" >&2
  # Linkerd's policy controller (a cargo build of some minutes, cached), for
  # the test that compares mock-dst's Policy with it.
  "$here/build-deps.sh" linkerd_policy_controller || failed+=("build linkerd_policy_controller")
  step e2e_cluster cargo test --locked --test e2e_cluster -- --ignored --test-threads=1 "$@"
  step report_prometheus cargo test --locked --test report_prometheus -- --ignored "$@"
  # The deployment files, validated offline against the same control plane.
  step validate-deploy "$here/validate-deploy.sh"
fi

# Multicluster: the single control plane first goes (if started here), for
# the machine's sake.
if [[ $started == 1 ]]; then "$here/local-cluster.sh" down; started=0; fi
cd "$repo" || exit 1
mc_up=1
if ! "$here/local-multicluster.sh" status >/dev/null 2>&1; then
  if "$here/local-multicluster.sh" up; then
    mc_started=1
  else
    mc_up=0
    failed+=("local-multicluster up")
  fi
fi
if [[ $mc_up == 1 ]]; then
  # shellcheck disable=SC1091
  . "$repo/.local-clusters/env"
  step e2e_multicluster cargo test --locked --test e2e_multicluster -- --ignored --test-threads=1 "$@"
fi

# Linkerd's known bugs: the older versions' control planes side by side (the
# multicluster ones gone first, if started here).
if [[ $mc_started == 1 ]]; then "$here/local-multicluster.sh" down; mc_started=0; fi
envs=()
for v in stable-2.14.1 stable-2.14.2 edge-26.8.3; do
  # Names whose port offsets differ (hack/local-cluster.sh port_offset).
  case $v in
    stable-*) name=v${v//[^0-9]/} ;;
    *) name=edge${v//[^0-9]/} ;;
  esac
  if "$here/local-cluster.sh" --name "$name" status >/dev/null 2>&1 ||
    { "$here/local-cluster.sh" --name "$name" up --linkerd "$v" && version_clusters+=("$name"); }; then
    envs+=("$v=$repo/.local-clusters/$name/env")
  else
    failed+=("local-cluster $v up")
  fi
done
if [[ ${#envs[@]} == 3 ]]; then
  export DST_E2E_LINKERD_ENVS="${envs[*]}"
  step e2e_versions cargo test --locked --test e2e_versions -- --ignored --test-threads=1 "$@"
fi

# Linkerd's real proxy against our mock control plane (no cluster): built
# from ../shared/sources on first use (about 10-14 minutes on 2 cores), then
# cached by version.
if "$here/build-deps.sh" linkerd_proxy; then
  # shellcheck source=hack/versions.env
  . "$here/versions.env"
  export DST_LINKERD_PROXY=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}/linkerd_proxy-$LINKERD_PROXY_VERSION/bin/linkerd2-proxy
  step e2e_proxy cargo test --locked --test e2e_proxy -- --ignored --test-threads=1 "$@"
else
  failed+=("build linkerd_proxy")
fi
report
