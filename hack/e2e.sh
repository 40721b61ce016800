#!/usr/bin/env bash
# Runs the end-to-end tests against the local control plane: brings it up
# unless it is already up, runs the ignored e2e tests one at a time (one of
# them restarts the apiserver), and brings it down again if it started it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
STATE=${DST_LOCAL_CLUSTER_DIR:-$repo/.local-cluster}

started=0
if ! "$here/local-cluster.sh" status >/dev/null 2>&1; then
  "$here/local-cluster.sh" up
  started=1
fi
cleanup() { if [[ $started == 1 ]]; then "$here/local-cluster.sh" down; fi; }
trap cleanup EXIT

# shellcheck disable=SC1091
. "$STATE/env"
cd "$repo"
cargo test --locked --test e2e_cluster -- --ignored --test-threads=1 "$@"
