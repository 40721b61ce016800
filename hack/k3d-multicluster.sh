#!/usr/bin/env bash
# Two k3d clusters on one Docker network for the multicluster scenario, in
# Linkerd's terms: `target` (where churn's endpoints live, its Services
# exported for remote discovery) and `source` (where the clients watch the
# mirrored Services through the source's own destination controller, which
# reads the target's EndpointSlices). One trust anchor for both, as Linkerd
# multicluster requires. No gateway: remote discovery needs none.
#
# usage: hack/k3d-multicluster.sh            create both, install, link, load
#        hack/k3d-multicluster.sh --delete
# env:   LINKERD_CA_DIR (default /tmp/linkerd-ca)
#        SCENARIO       the load test's scenario (default small-oscillation);
#                       LOAD=false to stop after linking
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --delete ]]; then
  k3d cluster delete source target
  exit 0
fi
for tool in k3d kubectl helmfile linkerd docker; do
  command -v "$tool" >/dev/null || { echo "$tool is required on PATH" >&2; exit 1; }
done
export LINKERD_CA_DIR=${LINKERD_CA_DIR:-/tmp/linkerd-ca}
[[ -f $LINKERD_CA_DIR/ca.crt ]] || "$here/gen-certs.sh" "$LINKERD_CA_DIR"
for c in target source; do
  K3D_EXTRA_ARGS="--network dst-load-multicluster" "$here/k3d-cluster.sh" "$c"
done
cd "$here/.."
helmfile --kube-context k3d-target -e multicluster-target sync
helmfile --kube-context k3d-source -e multicluster-source sync
# The source's service mirror and destination controller reach the target's
# API server at the target server container's address on the shared network.
api=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' k3d-target-server-0)
linkerd --context k3d-target multicluster link-gen --cluster-name target --gateway=false \
  --api-server-address "https://$api:6443" |
  kubectl --context k3d-source apply -f -
echo "linked: k3d-source mirrors k3d-target's exported Services (linkerd --context k3d-source multicluster check)"
if [[ ${LOAD:-true} == true ]]; then
  scenario=${SCENARIO:-small-oscillation}
  # Clients in the source first: that creates the namespace there, which the
  # service mirror needs (it skips a Service whose namespace is missing, as
  # namespace creation is off by default). Then churn in the target.
  helmfile --kube-context k3d-source -e multicluster-source \
    --state-values-set loadTest.enabled=true --state-values-set "scenario=$scenario" sync
  helmfile --kube-context k3d-target -e multicluster-target \
    --state-values-set loadTest.enabled=true --state-values-set "scenario=$scenario" sync
  echo "load: churn in k3d-target, clients in k3d-source ($scenario)"
fi
