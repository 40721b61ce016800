#!/usr/bin/env bash
# Creates the k3d cluster the walk-through uses: one server, no load
# balancer, and none of k3s's extras (local storage, traefik, servicelb,
# metrics-server) competing with the destination controller for CPU.
# The k3s image is pinned (hack/versions.env: Linkerd needs Kubernetes >=
# 1.31), and the controller-manager's API client may make 200 requests/s
# (k3s's default 20/s takes ~4 minutes to create 5,000 pods, longer than a
# scenario's hold).
#
# usage: hack/k3d-cluster.sh [NAME]            (default: dst-load)
#        hack/k3d-cluster.sh --delete [NAME]
# env:   K3D_EXTRA_ARGS  appended to `k3d cluster create`
#        K3S_IMAGE       another k3s image (default from hack/versions.env)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --delete ]]; then
  exec k3d cluster delete "${2:-dst-load}"
fi
# shellcheck source=hack/versions.env
. "$here/versions.env"
name=${1:-dst-load}
command -v k3d >/dev/null || { echo "k3d is required: https://k3d.io" >&2; exit 1; }
# shellcheck disable=SC2086
k3d cluster create "$name" \
  --image "${K3S_IMAGE}" \
  --no-lb \
  --k3s-arg '--disable=local-storage,traefik,servicelb,metrics-server@server:*' \
  --k3s-arg '--kube-apiserver-arg=max-requests-inflight=800@server:*' \
  --k3s-arg '--kube-controller-manager-arg=kube-api-qps=200@server:*' \
  --k3s-arg '--kube-controller-manager-arg=kube-api-burst=400@server:*' \
  --k3s-arg '--kube-scheduler-arg=kube-api-qps=200@server:*' \
  --k3s-arg '--kube-scheduler-arg=kube-api-burst=400@server:*' \
  --wait ${K3D_EXTRA_ARGS:-}
kubectl config use-context "k3d-$name"
kubectl apply -f "$here/kwok-node.yaml"
echo "cluster k3d-$name ready with a KWOK node; next: hack/gen-certs.sh && helmfile sync"
