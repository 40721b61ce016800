#!/usr/bin/env bash
# Redraws the README's pictures: two seeded runs against the mock (its
# delay 5 ms, then 15 ms), `compare --html` of them, and headless Chromium's
# screenshots of the run's page (docs/run.png) and the comparison's
# (docs/compare.png). Needs Chromium and a font (Debian: chromium,
# fonts-dejavu-core). Usage: hack/screenshots.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/dst-load-controller}
if [[ ! -x $bin ]]; then
  echo "no binary at $bin: cargo build --release --locked --bin dst-load-controller, or give its path" >&2
  exit 2
fi
command -v chromium >/dev/null || {
  echo "chromium is needed (Debian: apt-get install chromium fonts-dejavu-core)" >&2
  exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() { # delay name
  "$bin" run --scenario small-oscillation --services 6 --streams-per-service 10 \
    --connections 4 --min-endpoints 2 --max-endpoints 12 --duration 30s --seed 7 \
    --mock-delay "$1" --admin-addr 127.0.0.1:0 \
    --report "$work/$2.json" --html "$work/$2.html"
}
run 5ms base
run 15ms new
"$bin" compare "$work/base.json" "$work/new.json" --html "$work/compare.html" || true

shoot() { # page height png
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="1600,$2" --user-data-dir="$work/profile" \
    --screenshot="$3" "file://$work/$1.html" 2>/dev/null
}
mkdir -p docs
shoot base 2500 docs/run.png
shoot compare 2500 docs/compare.png
echo "drawn: docs/run.png docs/compare.png"
