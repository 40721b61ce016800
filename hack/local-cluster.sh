#!/usr/bin/env bash
# A real Kubernetes control plane with KWOK, as plain processes on 127.0.0.1:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the KWOK
# controller with fake nodes, and Linkerd's real destination controller (built
# from source by hack/build-deps.sh) with Linkerd's CRDs. No container engine.
#
# usage: hack/local-cluster.sh [--name NAME] up [--linkerd VERSION]|down|status|restart COMPONENT|stop COMPONENT|start COMPONENT|env
#        (components: etcd kube-apiserver kube-controller-manager kube-scheduler kwok destination)
#        --linkerd VERSION: the destination controller of that Linkerd version
#        (one of LINKERD_PEERS in hack/versions.env, built from its source
#        archive; default LINKERD_VERSION), with that version's flags and
#        CRDs. The cluster keeps it: restart and start run the same one, and
#        its env file names it (DST_LOCAL_LINKERD_VERSION).
#        --name NAME: one of several clusters side by side (source, target, or
#        any DNS label): its own state directory (<repo>/.local-clusters/NAME),
#        ports (an offset per name) and cluster domain (NAME.local). Without
#        it: the single default cluster, as before.
# env:   DST_LOCAL_CLUSTER_DIR  state directory (default: <repo>/.local-cluster)
#        KWOK_NODES             fake nodes to create (default 2)
#        DST_LOCAL_PORT_OFFSET  added to every port (default 0)
#        (with --name, neither DST_LOCAL_CLUSTER_DIR nor DST_LOCAL_PORT_OFFSET applies)
#        DST_LOCAL_TRUST_DOMAIN the identity trust domain (default cluster.local,
#                               shared by every cluster: one trust root)
#        DST_LOAD_CACHE         build cache (see hack/build-deps.sh)
set -euo pipefail
shopt -s extglob

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"
CACHE=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}
KWOK_NODES=${KWOK_NODES:-2}

NAME=
if [[ ${1:-} == --name ]]; then
  NAME=${2:-}
  shift 2 || true
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$ ]] ||
    { echo "--name '$NAME': expected a DNS label (e.g. source or target)" >&2; exit 2; }
fi

# port_offset NAME: fixed offsets for the two multicluster names, a stable
# one (100..900, by checksum) for any other.
port_offset() {
  case $1 in
    source) echo 100 ;;
    target) echo 200 ;;
    *) echo $(( ($(printf '%s' "$1" | cksum | cut -d' ' -f1) % 8 + 3) * 100 )) ;;
  esac
}

# DST_LOCAL_PORT_OFFSET moves every port, so two control planes (with their
# own DST_LOCAL_CLUSTER_DIR) can run side by side; --name sets both.
# The name decides alone: a sourced env file of another cluster
# (DST_LOCAL_CLUSTER_DIR, DST_LOCAL_PORT_OFFSET) must not redirect it.
if [[ -n $NAME ]]; then
  STATE=$repo/.local-clusters/$NAME
  o=$(port_offset "$NAME")
  CLUSTER_DOMAIN=$NAME.local
else
  STATE=${DST_LOCAL_CLUSTER_DIR:-$repo/.local-cluster}
  o=${DST_LOCAL_PORT_OFFSET:-0}
  CLUSTER_DOMAIN=cluster.local
fi
TRUST_DOMAIN=${DST_LOCAL_TRUST_DOMAIN:-cluster.local}
CLUSTER_ID=dst-load-${NAME:-local}
ETCD_PORT=$((23790 + o)) ETCD_PEER_PORT=$((23800 + o)) ETCD_METRICS_PORT=$((23810 + o))
APISERVER_PORT=$((16443 + o)) KCM_PORT=$((10357 + o)) SCHEDULER_PORT=$((10359 + o)) KWOK_PORT=$((10247 + o))
DESTINATION_PORT=$((18086 + o)) DESTINATION_METRICS_PORT=$((19996 + o))
TOKEN=dst-load-local-admin-token

K8S_BIN=$CACHE/kubernetes-$K8S_VERSION/bin
KUBECTL=$CACHE/kubectl-$K8S_VERSION/bin/kubectl
ETCD=$CACHE/etcd-$ETCD_VERSION/bin/etcd
KWOK=$CACHE/kwok-$KWOK_VERSION/bin/kwok
# The Linkerd this cluster runs: --linkerd at `up`, then the one it was
# brought up with (kept in its state directory).
LINKERD_RUN=$LINKERD_VERSION
[[ -f $STATE/linkerd-version ]] && LINKERD_RUN=$(<"$STATE/linkerd-version")
HELM=$CACHE/helm-$HELM_VERSION/bin/helm
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok destination)

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_of() { cat "$STATE/run/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# start NAME CMD...: runs CMD in the background, logging to $STATE/logs/NAME.log.
# The command line is kept so `restart NAME` can run it again.
start() {
  local name=$1; shift
  printf '%q ' "$@" >"$STATE/run/$name.cmd"
  nohup "$@" >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/run/$name.pid"
}

stop_one() {
  local name=$1 p
  p=$(pid_of "$name")
  [[ -n $p ]] || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$STATE/run/$name.pid"
}

# wait_for NAME URL [TIMEOUT]: waits until URL answers "ok" (with the admin token).
wait_for() {
  local name=$1 url=$2 timeout=${3:-90} i
  for ((i = 0; i < timeout * 4; i++)); do
    if ! alive "$name"; then
      log "$name exited; last lines of $STATE/logs/$name.log:"
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name failed to start (log: $STATE/logs/$name.log)"
    fi
    if curl -fsk --max-time 2 -H "Authorization: Bearer $TOKEN" "$url" 2>/dev/null | grep -q '^ok'; then
      return 0
    fi
    sleep 0.25
  done
  log "$name not ready after ${timeout}s; last lines of $STATE/logs/$name.log:"
  tail -n 30 "$STATE/logs/$name.log" >&2 || true
  die "$name did not become ready (log: $STATE/logs/$name.log)"
}

kubectl() { "$KUBECTL" --kubeconfig "$STATE/kubeconfig" "$@"; }

write_pki() {
  mkdir -p "$STATE/pki"
  [[ -f $STATE/pki/sa.key ]] || openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
  echo "$TOKEN,admin,admin,system:masters" >"$STATE/pki/tokens.csv"
  # The apiserver's serving certificate, signed by a CA of this cluster's
  # own, so that every client verifies it (kube-rs warns on every
  # connection of a kubeconfig that skips verification).
  if [[ ! -f $STATE/pki/apiserver.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$CLUSTER_ID-ca" \
      -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout "$STATE/pki/apiserver.key" -out "$STATE/pki/apiserver.csr" 2>/dev/null
    openssl x509 -req -in "$STATE/pki/apiserver.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
      -CAcreateserial -days 3650 -out "$STATE/pki/apiserver.crt" \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.%s\nextendedKeyUsage=serverAuth\n' "$CLUSTER_DOMAIN") 2>/dev/null
  fi
  cat >"$STATE/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$STATE/pki/ca.crt")
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: $CLUSTER_ID
  context: {cluster: local, user: admin}
current-context: $CLUSTER_ID
KC
}

start_etcd() {
  start etcd "$ETCD" --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT" \
    --quota-backend-bytes 4294967296 --unsafe-no-fsync
}

start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --token-auth-file "$STATE/pki/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --max-requests-inflight 1000 --max-mutating-requests-inflight 500
}

start_controller_manager() {
  # The node lifecycle controller stays on: it lifts the not-ready taint
  # from new nodes; KWOK renews the nodes' leases so they stay Ready. On a
  # loaded machine KWOK's renewals can come late, and after the default 50 s
  # grace the controller marks every pod on the node not ready, emptying the
  # EndpointSlices under the tests: fake nodes get an hour.
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" --authorization-kubeconfig "$STATE/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --service-account-private-key-file "$STATE/pki/sa.key" --use-service-account-credentials=false \
    --controllers '*,-nodeipam' --cluster-name "$CLUSTER_ID" \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 \
    --concurrent-service-endpoint-syncs 20 --node-monitor-grace-period 1h
}

start_scheduler() {
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" --authorization-kubeconfig "$STATE/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400
}

start_kwok() {
  start kwok "$KWOK" --kubeconfig "$STATE/kubeconfig" -c "$here/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" --node-ip 127.0.0.1 --cidr 10.245.0.0/16
}

# Linkerd's destination controller with the flags its chart gives it
# (linkerd-control-plane's destination.yaml, chart defaults), on loopback.
# Linkerd 2.14 has neither -outbound-transport-mode, -enable-ipv6 nor
# -meshed-http2-client-params.
start_destination() {
  local newer=()
  case $LINKERD_RUN in
    stable-2.14.*) ;;
    *) newer=(-outbound-transport-mode=transport-header -enable-ipv6=false
      '-meshed-http2-client-params={"keep_alive":{"interval":{"seconds":10},"timeout":{"seconds":3},"while_idle":true}}') ;;
  esac
  HOSTNAME=$CLUSTER_ID-destination start destination "$CACHE/linkerd-$LINKERD_RUN/bin/linkerd-controller" destination \
    -addr="127.0.0.1:$DESTINATION_PORT" -metrics-addr="127.0.0.1:$DESTINATION_METRICS_PORT" \
    -kubeconfig="$STATE/kubeconfig" -controller-namespace=linkerd \
    -enable-h2-upgrade=true -log-level=info -log-format=plain -enable-endpoint-slices=true \
    -cluster-domain="$CLUSTER_DOMAIN" -identity-trust-domain="$TRUST_DOMAIN" \
    -default-opaque-ports=25,587,3306,4444,5432,6379,9300,11211 \
    -enable-pprof=true "${newer[@]}"
}

# What the destination controller needs before it starts: Linkerd's CRDs
# (rendered from the source archive's linkerd-crds chart, Gateway API CRDs
# included), the linkerd namespace, and at least one EndpointSlice in the
# cluster (it refuses to start without one, and the `kubernetes` Service gets
# none from an apiserver advertising 127.0.0.1): a selectorless placeholder.
install_linkerd_prereqs() {
  local chart=$STATE/charts/linkerd-crds
  rm -rf "$STATE/charts" && mkdir -p "$STATE/charts"
  cp -r "$CACHE/linkerd-$LINKERD_RUN/charts/linkerd-crds" "$CACHE/linkerd-$LINKERD_RUN/charts/partials" "$STATE/charts/"
  "$HELM" dependency build "$chart" >/dev/null
  "$HELM" template linkerd-crds "$chart" -n linkerd --kube-version "$K8S_VERSION" \
    --set installGatewayAPI=true >"$STATE/linkerd-crds.yaml"
  kubectl apply --server-side --field-manager dst-load-local -f "$STATE/linkerd-crds.yaml" >/dev/null
  kubectl wait --for condition=established --timeout 60s crd --all >/dev/null
  kubectl apply --server-side --field-manager dst-load-local -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata:
  name: linkerd
---
apiVersion: v1
kind: Service
metadata:
  name: dst-load-placeholder
  namespace: linkerd
spec:
  ports:
  - name: http
    port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dst-load-placeholder
  namespace: linkerd
  labels:
    kubernetes.io/service-name: dst-load-placeholder
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
endpoints:
- addresses: ["192.0.2.1"]
  conditions: {ready: true}
YAML
}

wait_component() {
  case $1 in
    etcd) wait_for etcd "http://127.0.0.1:$ETCD_PORT/readyz" 30 ;;
    kube-apiserver) wait_for kube-apiserver "https://127.0.0.1:$APISERVER_PORT/readyz" 120 ;;
    kube-controller-manager) wait_for kube-controller-manager "https://127.0.0.1:$KCM_PORT/healthz" 60 ;;
    kube-scheduler) wait_for kube-scheduler "https://127.0.0.1:$SCHEDULER_PORT/healthz" 60 ;;
    kwok) wait_for kwok "http://127.0.0.1:$KWOK_PORT/healthz" 60 ;;
    destination) wait_for destination "http://127.0.0.1:$DESTINATION_METRICS_PORT/ready" 120 ;;
  esac
}

start_component() {
  case $1 in
    etcd) start_etcd ;;
    kube-apiserver) start_apiserver ;;
    kube-controller-manager) start_controller_manager ;;
    kube-scheduler) start_scheduler ;;
    kwok) start_kwok ;;
    destination) start_destination ;;
    *) die "unknown component '$1' (one of: ${COMPONENTS[*]})" ;;
  esac
}

create_nodes() {
  local i cidr
  for ((i = 0; i < KWOK_NODES; i++)); do
    cidr="10.244.$((i * 16)).0/20"
    sed -e "s/kwok-node-0/kwok-node-$i/g" -e "s#10.244.0.0/20#$cidr#g" "$here/kwok-node.yaml"
    echo "---"
  done | kubectl apply --server-side --field-manager dst-load-local -f - >/dev/null
  for _ in $(seq 120); do
    if [[ $(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True) -ge $KWOK_NODES ]]; then
      return 0
    fi
    sleep 0.5
  done
  die "KWOK nodes did not become Ready (log: $STATE/logs/kwok.log)"
}

write_env() {
  cat >"$STATE/env" <<ENV
# Written by hack/local-cluster.sh up; source it.
export KUBECONFIG=$STATE/kubeconfig
export DST_LOCAL_CLUSTER_DIR=$STATE
export DST_LOCAL_PORT_OFFSET=$o
export DST_LOCAL_APISERVER=https://127.0.0.1:$APISERVER_PORT
export DST_LOCAL_APISERVER_CA=$STATE/pki/ca.crt
export DST_LOCAL_KUBECTL=$KUBECTL
export DST_LOCAL_ETCD_METRICS=http://127.0.0.1:$ETCD_METRICS_PORT/metrics
# Linkerd's real destination controller (gRPC) and its admin server
# (/metrics, /ready, /debug/pprof); its log is \$DST_LOCAL_CLUSTER_DIR/logs/destination.log.
export DESTINATION_ADDR=127.0.0.1:$DESTINATION_PORT
export DESTINATION_METRICS_ADDR=127.0.0.1:$DESTINATION_METRICS_PORT
export DST_LOCAL_CLUSTER_DOMAIN=$CLUSTER_DOMAIN
export DST_LOCAL_TRUST_DOMAIN=$TRUST_DOMAIN
export DST_LOCAL_CLUSTER_NAME=${NAME:-}
export DST_LOCAL_KUBE_CONTEXT=$CLUSTER_ID
# The Linkerd version of its destination controller.
export DST_LOCAL_LINKERD_VERSION=$LINKERD_RUN
# Its controller binary (the e2e tests run its identity service too).
export DST_LOCAL_LINKERD_CONTROLLER=$CACHE/linkerd-$LINKERD_RUN/bin/linkerd-controller
# Its policy controller (hack/build-deps.sh linkerd_policy_controller
# builds it for $LINKERD_VERSION only; empty for another version), for
# the e2e test that compares mock-dst's Policy with it.
export DST_LOCAL_LINKERD_POLICY_CONTROLLER=$([[ $LINKERD_RUN == "$LINKERD_VERSION" ]] && echo "$CACHE/linkerd_policy_controller-$LINKERD_RUN/bin/linkerd-policy-controller")
ENV
}

cmd_status() {
  local ok=0 c
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(pid_of "$c")"; else printf '%-24s stopped\n' "$c"; ok=1; fi
  done
  return $ok
}

cmd_up() {
  local want=${1:-$LINKERD_RUN}
  if [[ -f $STATE/env ]] && cmd_status >/dev/null 2>&1; then
    if [[ $want != "$LINKERD_RUN" ]]; then
      echo "this cluster is up with Linkerd $LINKERD_RUN, not $want: bring it down first" >&2
      exit 2
    fi
    log "already up; source $STATE/env"
    return 0
  fi
  [[ -d $STATE ]] && { log "removing a stale state directory $STATE"; cmd_down >/dev/null 2>&1 || true; }
  LINKERD_RUN=$want
  # The Linkerd first: an unknown version or a missing archive stops here.
  "$here/build-deps.sh" "linkerd@$LINKERD_RUN" etcd kubernetes kubectl kwok helm
  mkdir -p "$STATE/run" "$STATE/logs"
  echo "$LINKERD_RUN" >"$STATE/linkerd-version"
  write_pki
  local c start=$SECONDS
  for c in "${COMPONENTS[@]}"; do
    if [[ $c == destination ]]; then
      create_nodes
      install_linkerd_prereqs
    fi
    log "starting $c"
    start_component "$c"
    wait_component "$c"
  done
  write_env
  log "up in $((SECONDS - start))s: source $STATE/env"
}

cmd_down() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_one "${COMPONENTS[i]}"; done
  rm -rf "$STATE"
  log "down"
}

cmd_restart() {
  local c=${1:?usage: restart COMPONENT}
  [[ -f $STATE/run/$c.cmd ]] || die "unknown or never started component '$c' (one of: ${COMPONENTS[*]})"
  log "restarting $c"
  stop_one "$c"
  start_component "$c"
  wait_component "$c"
}

# stop COMPONENT / start COMPONENT: for tests that change the cluster while
# a component is down (e.g. the destination controller).
cmd_stop() {
  local c=${1:?usage: stop COMPONENT}
  [[ -f $STATE/run/$c.cmd ]] || die "unknown or never started component '$c' (one of: ${COMPONENTS[*]})"
  log "stopping $c"
  stop_one "$c"
}

cmd_start() {
  local c=${1:?usage: start COMPONENT}
  [[ -f $STATE/run/$c.cmd ]] || die "unknown or never started component '$c' (one of: ${COMPONENTS[*]})"
  alive "$c" && { log "$c is already running"; return 0; }
  log "starting $c"
  start_component "$c"
  wait_component "$c"
}

case ${1:-} in
  up)
    shift
    if [[ ${1:-} == --linkerd ]]; then
      [[ -n ${2:-} ]] || { echo "--linkerd needs a VERSION (one of: ${LINKERD_PEERS//=v*([0-9.])/})" >&2; exit 2; }
      cmd_up "$2"
    elif [[ -n ${1:-} ]]; then
      echo "up takes --linkerd VERSION, not '$1'" >&2
      exit 2
    else
      cmd_up
    fi
    ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) shift; cmd_restart "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  start) shift; cmd_start "$@" ;;
  env) cat "$STATE/env" ;;
  *) echo "usage: $0 up|down|status|restart COMPONENT|stop COMPONENT|start COMPONENT|env" >&2; exit 2 ;;
esac
