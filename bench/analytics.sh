#!/usr/bin/env bash
# Analytics benchmark: loads EVENTS call events (default 1,000,000: ~30 days of calls, every
# family and outcome, some retried) into a throwaway PostgreSQL cluster and an SQLite file,
# folds the daily rollups (timed: what an upgrade to them costs), then times on each backend:
#   - SELECT * FROM call_stats_daily WHERE day >= … AND day < …   (7 days, 1 day, 90 days)
#   - SELECT * FROM calls WHERE sdkappid = … AND call_id = …       (one call, on one connection
#                                     after an untimed run; PostgreSQL: also the first query
#                                     on a new connection)
#   - callhook report --since … --until …  (the real binary: table and html for 7 days,
#                                           table for 90)
# WITHOUT_INDEXES=1 also times them without the indexes of migration 0002 first.
# DAYS=… spreads the calls over that many days (default 30); BACKENDS=postgres (or sqlite)
# loads and times one backend only.
# Each is run RUNS times (default 5); the median is what docs/src/benchmarks/analytics.md reports.
#
#   bench/analytics.sh [EVENTS]
#
# MULTIPLY=N is the fast path to many events (N ≥ 2; DAYS must be a multiple of N): each
# backend is loaded with EVENTS/N events over the first DAYS/N days only and a copy of
# that database is kept aside; then the events are copied N − 1 times in SQL, each copy
# DAYS/N days after the one before, with call ids, room ids and dedupe keys of its own
# (analytics_load multiply); the copies' weeks get their partitions first (PostgreSQL),
# and the copied calls are folded into the rollups. The copy kept aside (1/N of the
# history) and the multiplied database (all of it; the same density per day, so the last
# 7 days hold the same calls) are then timed in turns, ROUNDS times (default 3), and the
# medians over every run are printed with their ratio. Needs python3 for that summary.
# Ten million events over 90 days:
#
#   MULTIPLY=10 DAYS=90 bench/analytics.sh 10000000     # 10 GB PostgreSQL, 7.5 GB SQLite, ~1 h
#
# (WITHOUT_INDEXES does not apply to MULTIPLY.)
#
# Needs: cargo, and PostgreSQL's server binaries (/usr/lib/postgresql/*/bin, or set
# CALLHOOK_PG_BIN); PostgreSQL need not be running — the script starts its own cluster on a
# Unix socket and removes it at the end (KEEP=1 keeps it and the SQLite file).
# WORKDIR=… chooses where the data goes (default: a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-1000000}
RUNS=${RUNS:-5}
WORK=${WORKDIR:-$(mktemp -d /tmp/callhook-analytics-XXXXXX)}
END=${END:-$(date -u +%F)}   # the last day of the generated calls

echo "== building (release)"
cargo build --release --quiet --bin callhook --example analytics_load
BIN=$PWD/target/release/callhook
LOAD=$PWD/target/release/examples/analytics_load

echo "== starting PostgreSQL in $WORK/pg"
PGBIN=${CALLHOOK_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "no PostgreSQL server binaries found: install postgresql or set CALLHOOK_PG_BIN" >&2
  exit 1
fi
mkdir -p "$WORK/pg"
as_pg() {
  # initdb refuses to run as root: run the cluster as the postgres user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# mktemp makes the directory private; the postgres user must reach the cluster inside it.
if [ "$(id -u)" = 0 ]; then chmod 755 "$WORK"; chown postgres "$WORK/pg"; fi
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
# Durability settings only speed up the load; the timed queries only read.
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -o \
  "-c listen_addresses='' -c unix_socket_directories='$WORK/pg' -c shared_buffers=512MB -c work_mem=64MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

PG_URL="postgres://postgres@localhost/postgres?host=$WORK/pg"
SQLITE_URL="sqlite://$WORK/callhook.db"

URLS=()
case ${BACKENDS:-postgres,sqlite} in *postgres*) URLS+=("$PG_URL") ;; esac
case ${BACKENDS:-postgres,sqlite} in *sqlite*) URLS+=("$SQLITE_URL") ;; esac

MULTIPLY=${MULTIPLY:-1}
if [ "$MULTIPLY" -gt 1 ]; then
  DAYS=${DAYS:-30}
  if [ $((DAYS % MULTIPLY)) != 0 ]; then
    echo "DAYS ($DAYS) must be a multiple of MULTIPLY ($MULTIPLY)" >&2
    exit 1
  fi
  SPAN=$((DAYS / MULTIPLY))
  BASE_END=$(date -u -d "$END - $((DAYS - SPAN)) days" +%F)
  for url in "${URLS[@]}"; do
    name=${url%%:*}
    echo "== loading $((EVENTS / MULTIPLY)) events into $name ($SPAN days up to $BASE_END)"
    "$LOAD" load --database-url "$url" --events "$((EVENTS / MULTIPLY))" --days "$SPAN" --end "$BASE_END"
    # A copy of the load as it is, to time against the multiplied one.
    case $name in
      postgres)
        "$PGBIN/createdb" -h "$WORK/pg" -U postgres -T postgres base
        base_url="postgres://postgres@localhost/base?host=$WORK/pg"
        ;;
      sqlite)
        for ext in "" -wal; do
          if [ -f "$WORK/callhook.db$ext" ]; then cp "$WORK/callhook.db$ext" "$WORK/base.db$ext"; fi
        done
        base_url="sqlite://$WORK/base.db"
        ;;
    esac
    echo
    echo "== multiplying $name by $MULTIPLY (calls up to $END)"
    "$LOAD" multiply --database-url "$url" --times "$MULTIPLY" --shift-days "$SPAN"
    # The two in turns, so that both see the same machine.
    for round in $(seq "${ROUNDS:-3}"); do
      echo
      echo "== $name, round $round: 1/$MULTIPLY of the history ($((EVENTS / MULTIPLY)) events, $SPAN days)"
      "$LOAD" time --database-url "$base_url" --runs "$RUNS" --callhook "$BIN" | tee -a "$WORK/$name-part.txt"
      echo
      echo "== $name, round $round: all the history ($EVENTS events, $DAYS days)"
      "$LOAD" time --database-url "$url" --runs "$RUNS" --callhook "$BIN" | tee -a "$WORK/$name-all.txt"
    done
    echo
    echo "== $name: medians of every run of every round (ms), and the ratio all/part"
    python3 - "$WORK/$name-part.txt" "$WORK/$name-all.txt" <<'PY'
import re, statistics, sys
def runs(path):
    out = {}
    for line in open(path):
        m = re.match(r"(.+?)\s+median .* runs \[([^\]]*)\]", line)
        if m:
            out.setdefault(m.group(1).strip(), []).extend(float(x) for x in m.group(2).split(","))
    return out
part, full = runs(sys.argv[1]), runs(sys.argv[2])
print(f"{'query':<40} {'part':>9} {'all':>9} {'all/part':>8}   runs")
for q in part:
    a, b = statistics.median(part[q]), statistics.median(full[q])
    print(f"{q:<40} {a:>9.1f} {b:>9.1f} {b / a:>8.2f}   {len(part[q])}, {len(full[q])}")
PY
  done
  if [ -f "$WORK/callhook.db" ]; then du -sh "$WORK/callhook.db" | sed 's/^/SQLite file: /'; fi
  exit 0
fi

for url in "${URLS[@]}"; do
  echo "== loading $EVENTS events into ${url%%:*} (calls up to $END)"
  "$LOAD" load --database-url "$url" --events "$EVENTS" --days "${DAYS:-30}" --end "$END"
done

for url in "${URLS[@]}"; do
  echo
  if [ "${WITHOUT_INDEXES:-0}" = 1 ]; then
    echo "== ${url%%:*}: without the analytics indexes"
    "$LOAD" indexes --database-url "$url" drop
    "$LOAD" time --database-url "$url" --runs "$RUNS" --callhook "$BIN"
    "$LOAD" indexes --database-url "$url" create
  fi
  echo "== ${url%%:*}"
  "$LOAD" time --database-url "$url" --runs "$RUNS" --callhook "$BIN"
done
if [ -f "$WORK/callhook.db" ]; then du -sh "$WORK/callhook.db" | sed 's/^/SQLite file: /'; fi
