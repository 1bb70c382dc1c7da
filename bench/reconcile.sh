#!/usr/bin/env bash
# Reconcile benchmark: RECORDS call records (default 100,000) served by
# `callhook send --record-api` (callhook's own player of Tencent's call record API: a real
# socket, every request's UserSig checked, pages, the 7-day clamp), fetched and stored by
# `callhook reconcile` into a fresh SQLite file and a fresh PostgreSQL database, RUNS times
# each (default 3), then once more into the last database of each (a re-run: every record
# is there already and is updated). Prints, per run, the wall time, Tencent requests and
# peak memory (max RSS) of the reconcile process, then the medians.
#
#   bench/reconcile.sh [RECORDS]
#
# Environment: RUNS (3), RATE (requests a second; default 200, Tencent's limit for the
# call record API; callhook's default, 20, bounds 100,000 records at 100 a page to 50 s),
# PAGE_SIZE (100). Needs cargo, /usr/bin/time and PostgreSQL's server binaries
# (/usr/lib/postgresql/*/bin, or CALLHOOK_PG_BIN); the script starts its own cluster on a
# Unix socket and removes it at the end (KEEP=1 keeps everything). Everything printed is
# also written to bench/results/reconcile-<timestamp>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${1:-100000}
RUNS=${RUNS:-3}
RATE=${RATE:-200}
PAGE_SIZE=${PAGE_SIZE:-100}
WORK=${WORKDIR:-$(mktemp -d /tmp/callhook-reconcile-XXXXXX)}
APP=1400000001
KEY=bench-secret-key
mkdir -p bench/results
RESULTS=bench/results/reconcile-$(date +%Y%m%d-%H%M%S).txt
exec > >(tee "$RESULTS") 2>&1
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown):" \
  "RECORDS=$RECORDS RUNS=$RUNS RATE=$RATE PAGE_SIZE=$PAGE_SIZE; $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building (release)"
cargo build --release --quiet --bin callhook
BIN=$PWD/target/release/callhook

echo "== starting PostgreSQL in $WORK/pg"
PGBIN=${CALLHOOK_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "no PostgreSQL server binaries found: install postgresql or set CALLHOOK_PG_BIN" >&2
  exit 1
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$WORK/pg"
# As root, the cluster runs as the postgres user, who must reach $WORK (mktemp's is 0700).
if [ "$(id -u)" = 0 ]; then chmod a+x "$WORK"; chown postgres "$WORK/pg"; fi
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -o \
  "-c listen_addresses='' -c unix_socket_directories='$WORK/pg' -c shared_buffers=256MB" \
  start >/dev/null
SEND_PID=
cleanup() {
  if [ -n "$SEND_PID" ]; then kill -TERM "$SEND_PID" 2>/dev/null || true; wait "$SEND_PID" 2>/dev/null || true; fi
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== generating $RECORDS calls, serving their records on 127.0.0.1:$PORT (no callback is sent)"
"$BIN" send --url http://127.0.0.1:9/ --sdkappid $APP --calls "$RECORDS" --seed 1 --quiet \
  --drop-percent 100 --record-api "127.0.0.1:$PORT" --record-api-key "$KEY" >"$WORK/send.log" 2>&1 &
SEND_PID=$!
for _ in $(seq 600); do grep -q '^record API' "$WORK/send.log" && break; sleep 0.5; done
grep '^record API' "$WORK/send.log" || { cat "$WORK/send.log"; exit 1; }

printf '[[apps]]\nsdkappid = %s\nsecret_key_env = "BENCH_SECRET_KEY"\napi_url = "http://127.0.0.1:%s"\n' \
  "$APP" "$PORT" >"$WORK/callhook.toml"
export BENCH_SECRET_KEY=$KEY

# One reconcile into URL; appends "backend kind seconds requests records max_rss_kib".
reconcile() {
  local url=$1 backend=$2 kind=$3
  /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$BIN" reconcile --config "$WORK/callhook.toml" \
    --database-url "$url" --since 25h --format json --rate "$RATE" --page-size "$PAGE_SIZE" \
    >"$WORK/out.json"
  python3 - "$WORK/out.json" "$WORK/time.txt" "$backend" "$kind" >>"$WORK/results.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
secs, rss = open(sys.argv[2]).read().split()
assert r["status"] == "ok", r
print(sys.argv[3], sys.argv[4], secs, r["requests"], r["records"], rss)
PY
  tail -n 1 "$WORK/results.txt"
}

: >"$WORK/results.txt"
echo "== backend kind seconds requests records max_rss_kib"
for i in $(seq "$RUNS"); do
  reconcile "sqlite://$WORK/run$i.db" sqlite fresh
  as_pg "$PGBIN/createdb" -h "$WORK/pg" -U postgres "run$i"
  reconcile "postgres://postgres@localhost/run$i?host=$WORK/pg" postgres fresh
done
reconcile "sqlite://$WORK/run$RUNS.db" sqlite rerun
reconcile "postgres://postgres@localhost/run$RUNS?host=$WORK/pg" postgres rerun

echo "== medians"
python3 - "$WORK/results.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for backend in ("sqlite", "postgres"):
    for kind in ("fresh", "rerun"):
        sel = [r for r in rows if r[0] == backend and r[1] == kind]
        if not sel:
            continue
        med = lambda i: statistics.median(float(r[i]) for r in sel)
        print(f"{backend:9} {kind:6} runs={len(sel)} seconds={med(2):.1f} requests={med(3):.0f} "
              f"records={med(4):.0f} max_rss={med(5)/1024:.1f} MiB")
PY
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); results: $RESULTS"
