#!/usr/bin/env bash
# Two k3d clusters on one Docker network for the multicluster scenario:
# `source` (workloads exported through its gateway) and `target` (mirrors
# them). Both share one trust anchor, as Linkerd multicluster requires.
#
# usage: hack/k3d-multicluster.sh            create both, install, link
#        hack/k3d-multicluster.sh --delete
# env:   LINKERD_CA_DIR (default /tmp/linkerd-ca)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --delete ]]; then
  k3d cluster delete source target
  exit 0
fi
export LINKERD_CA_DIR=${LINKERD_CA_DIR:-/tmp/linkerd-ca}
[[ -f $LINKERD_CA_DIR/ca.crt ]] || "$here/gen-certs.sh" "$LINKERD_CA_DIR"
for c in source target; do
  K3D_EXTRA_ARGS="--network dst-load-multicluster" "$here/k3d-cluster.sh" "$c"
done
cd "$here/.."
helmfile --kube-context k3d-source -e multicluster-source sync
helmfile --kube-context k3d-target -e multicluster-target sync
# The target's service mirror watches the source through this Link; the
# API server address must be reachable from the target's pods, i.e. the
# source server container's address on the shared network.
api=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' k3d-source-server-0)
linkerd --context k3d-source multicluster link-gen --cluster-name source --api-server-address "https://$api:6443" |
  kubectl --context k3d-target apply -f -
echo "linked: k3d-target mirrors k3d-source (linkerd --context k3d-target multicluster check)"
