#!/usr/bin/env bash
# Compares three ways of writing a batch into PostgreSQL (unnest arrays, multi-row VALUES,
# COPY into a temp table + INSERT … SELECT), all with the same deduplicating upsert, on a
# throwaway PostgreSQL with default durability. See examples/insert_strategies.rs.
#   bench/insert_strategies.sh [SECONDS_PER_POINT] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example insert_strategies
python3 - "$@" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "bench")
import run as bench
secs = sys.argv[1] if len(sys.argv) > 1 else "3"
reps = sys.argv[2] if len(sys.argv) > 2 else "3"
pg = bench.Postgres()
try:
    subprocess.run(["target/release/examples/insert_strategies", pg.url, secs, reps], check=True)
finally:
    pg.stop()
PY
