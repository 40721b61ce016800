#!/usr/bin/env bash
# Creates Linkerd's identity certificates with step: a trust anchor (root CA,
# 10 years) and an issuer (intermediate CA, 1 year) signed by it, both EC
# P-256, then verifies the chain. Refuses to overwrite existing keys unless
# --force is given.
#
# usage: hack/gen-certs.sh [--force] [DIR]     (DIR default: /tmp/linkerd-ca)
# env:   STEP           the step binary (default: on PATH, else hack/build-deps.sh's)
#        TRUST_DOMAIN   identity trust domain (default cluster.local)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() { sed -n '7,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

force=0
dir=
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h | --help) usage ;;
    -*) echo "gen-certs: unknown flag '$arg'" >&2; usage ;;
    *) [[ -z $dir ]] || { echo "gen-certs: more than one DIR given" >&2; usage; }; dir=$arg ;;
  esac
done
dir=${dir:-/tmp/linkerd-ca}
domain=${TRUST_DOMAIN:-cluster.local}

step=${STEP:-}
if [[ -z $step ]]; then
  if command -v step >/dev/null; then
    step=step
  else
    # shellcheck source=hack/versions.env
    . "$here/versions.env"
    step=${DST_LOAD_CACHE:-$HOME/.cache/dst-load-controller}/step-$STEP_VERSION/bin/step
    [[ -x $step ]] || "$here/build-deps.sh" step >&2
  fi
fi

files=(ca.crt ca.key issuer.crt issuer.key)
if [[ $force == 0 ]]; then
  for f in "${files[@]}"; do
    if [[ -e $dir/$f ]]; then
      echo "gen-certs: $dir/$f already exists; refusing to overwrite it (pass --force to replace every certificate and key in $dir)" >&2
      exit 1
    fi
  done
fi

umask 077
mkdir -p "$dir"
work=$(mktemp -d "$dir/.gen-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# step's chatter goes to a log shown only when it fails.
quiet() { "$@" >"$work/step.log" 2>&1 || { cat "$work/step.log" >&2; exit 1; }; }
quiet "$step" certificate create "root.linkerd.$domain" "$work/ca.crt" "$work/ca.key" \
  --profile root-ca --kty EC --curve P-256 --not-after 87600h \
  --no-password --insecure
quiet "$step" certificate create "identity.linkerd.$domain" "$work/issuer.crt" "$work/issuer.key" \
  --profile intermediate-ca --kty EC --curve P-256 --not-after 8760h \
  --ca "$work/ca.crt" --ca-key "$work/ca.key" \
  --no-password --insecure
"$step" certificate verify "$work/issuer.crt" --roots "$work/ca.crt"

# Only now, with a verified chain, replace what is there.
for f in "${files[@]}"; do mv -f "$work/$f" "$dir/$f"; done
chmod 644 "$dir/ca.crt" "$dir/issuer.crt"

cat <<MSG
Trust anchor and issuer written to $dir (chain verified):
  ca.crt      trust anchor  root.linkerd.$domain      10 years
  issuer.crt  issuer        identity.linkerd.$domain  1 year (issuer.key alongside)
For helmfile:
  export LINKERD_CA_DIR=$dir
MSG
