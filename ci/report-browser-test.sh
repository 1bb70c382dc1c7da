#!/usr/bin/env bash
# The HTML report as a reader meets it: a generated week of calls (every family) is sent
# to a real `callhook serve` on a fresh SQLite file, `callhook report --format html`
# renders it, and ci/browser/check-report.mjs opens the page in headless Chromium at a
# phone's width (390 px) and a laptop's (1280 px). It fails on console errors, on any
# request the page makes (it must work offline), on charts missing or drawn smaller than
# 100 px high, on text under 10 px, and on anything wider than the screen (outside a box
# that scrolls sideways). Screenshots and a printed PDF go to OUT (default
# ci/browser/out).
#
#   ci/report-browser-test.sh [CALLHOOK_BINARY]
#   ci/report-browser-test.sh prepare    only install chromium and the checker's package
#
# Needs Debian's chromium (apt-get install chromium; .ci/run installs it) and Node 20
# with npm; the checker's one package (puppeteer-core, which drives the installed
# browser and downloads none) is installed from ci/browser/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
  if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  fi
  (cd ci/browser && npm ci --no-audit --no-fund --silent)
}
if [[ ${1:-} == prepare ]]; then
  prepare
  exit
fi
BIN=${1:-target/debug/callhook}
OUT=${OUT:-ci/browser/out}
APP=1400000001
[[ -x $BIN ]] || cargo build --quiet --bin callhook
prepare

WORK=$(mktemp -d /tmp/callhook-report-test.XXXXXX)
serve_pid=
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DB=sqlite://$WORK/report.db
"$BIN" serve --sdkappid $APP --database-url "$DB" --listen "127.0.0.1:$port" >"$WORK/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$WORK/serve.log"; echo "callhook did not start" >&2; exit 1; }

# A week: 60 calls a day, all three call families, each day with its own seed.
now=$(date +%s)
for day in 0 1 2 3 4 5 6; do
  "$BIN" send --sdkappid $APP --url "http://127.0.0.1:$port/" --family all --calls 60 \
    --seed "$((day + 1))" --end-time "$((now - day * 86400))" --concurrency 8 >"$WORK/send.log" 2>&1 ||
    { cat "$WORK/send.log"; echo "sending day $day failed" >&2; exit 1; }
done
"$BIN" report --database-url "$DB" --format html >"$WORK/report.html"
calls=$("$BIN" report --database-url "$DB" --format json | python3 -c 'import json,sys; print(sum(d["calls"] for d in json.load(sys.stdin)))')
[[ $calls -ge 350 ]] || { echo "the report counts $calls calls, about 420 were sent" >&2; exit 1; }
echo "report of $calls calls: $(wc -c <"$WORK/report.html") bytes of HTML"

mkdir -p "$OUT"
cp "$WORK/report.html" "$OUT/report.html"
node ci/browser/check-report.mjs "$OUT/report.html" "$OUT"
