#!/usr/bin/env bash
# Runs the end-to-end tests against the local control plane, Linkerd's real
# destination controller included (and the Prometheus-backed tests): brings it up
# unless it is already up, runs the ignored e2e tests one at a time (one of
# them restarts the apiserver), and brings it down again if it started it.
# Then the multicluster tests, on two more control planes linked by Linkerd's
# service mirror (hack/local-multicluster.sh), likewise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
STATE=${DST_LOCAL_CLUSTER_DIR:-$repo/.local-cluster}

started=0 mc_started=0
if ! "$here/local-cluster.sh" status >/dev/null 2>&1; then
  "$here/local-cluster.sh" up
  started=1
fi
cleanup() {
  if [[ $started == 1 ]]; then "$here/local-cluster.sh" down; fi
  if [[ $mc_started == 1 ]]; then "$here/local-multicluster.sh" down; fi
}
trap cleanup EXIT

# shellcheck disable=SC1091
. "$STATE/env"
cd "$repo"
# A real Prometheus: the dashboards' queries during a cluster run, and
# `report --prometheus` scraping a real client.
"$here/build-deps.sh" prometheus
# shellcheck source=hack/versions.env
. "$here/versions.env"
export DST_PROMETHEUS=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}/prometheus-$PROMETHEUS_VERSION/bin/prometheus
cargo test --locked --test e2e_cluster -- --ignored --test-threads=1 "$@"
cargo test --locked --test report_prometheus -- --ignored "$@"

# The deployment files, validated offline against the same control plane.
"$here/validate-deploy.sh"

# Multicluster: the single control plane first goes (if started here), for
# the machine's sake.
if [[ $started == 1 ]]; then "$here/local-cluster.sh" down; started=0; fi
if ! "$here/local-multicluster.sh" status >/dev/null 2>&1; then
  "$here/local-multicluster.sh" up
  mc_started=1
fi
# shellcheck disable=SC1091
. "$repo/.local-clusters/env"
cargo test --locked --test e2e_multicluster -- --ignored --test-threads=1 "$@"
