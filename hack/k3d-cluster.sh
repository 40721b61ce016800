#!/usr/bin/env bash
# Creates the k3d cluster the walk-through uses: one server, no load
# balancer, and none of k3s's extras (local storage, traefik, servicelb,
# metrics-server) competing with the destination controller for CPU.
#
# usage: hack/k3d-cluster.sh [NAME]            (default: dst-load)
#        hack/k3d-cluster.sh --delete [NAME]
# env:   K3D_EXTRA_ARGS  appended to `k3d cluster create`
set -euo pipefail
if [[ ${1:-} == --delete ]]; then
  exec k3d cluster delete "${2:-dst-load}"
fi
name=${1:-dst-load}
command -v k3d >/dev/null || { echo "k3d is required: https://k3d.io" >&2; exit 1; }
# shellcheck disable=SC2086
k3d cluster create "$name" \
  --no-lb \
  --k3s-arg '--disable=local-storage,traefik,servicelb,metrics-server@server:*' \
  --k3s-arg '--kube-apiserver-arg=max-requests-inflight=800@server:*' \
  --wait ${K3D_EXTRA_ARGS:-}
kubectl config use-context "k3d-$name"
kubectl apply -f "$(dirname "$0")/kwok-node.yaml"
echo "cluster k3d-$name ready with a KWOK node; next: hack/gen-certs.sh && helmfile sync"
