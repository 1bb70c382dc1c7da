#!/usr/bin/env bash
# The randomized fault test at any size: runs SCHEDULES schedules (default 10,000) of
# tests/it/simulation.rs, from seed SEED (default: drawn now, and printed, so a failing
# run can be repeated), PARALLEL at a time (default 3), against a throwaway PostgreSQL
# cluster the test tooling starts, and writes the summary line (schedules, attempts,
# faults struck by point and kind, crashes, violations, time) to
# bench/results/simulate-<date>-<seed>.txt. `cargo test` runs the same test with 200
# schedules from a fixed seed.
#
#   bench/simulate.sh [SCHEDULES]
#
# A schedule that breaks the promise prints itself with the command that runs it alone:
#   CALLHOOK_SIM_SEED=0x… CALLHOOK_SIM_SCHEDULES=1 cargo test --test it simulation -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEDULES=${1:-10000}
SEED=${SEED:-$(printf '0x%x' "$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ^ $(date +%s) ))")}
PARALLEL=${PARALLEL:-3}
mkdir -p bench/results
OUT=bench/results/simulate-$(date -u +%Y%m%d-%H%M%S)-$SEED.txt

echo "== building the integration tests (release)"
cargo test --release --test it --no-run --quiet

echo "== $SCHEDULES schedules from seed $SEED, $PARALLEL at a time; summary in $OUT"
started=$(date +%s)
set +e
CALLHOOK_SIM_SCHEDULES=$SCHEDULES CALLHOOK_SIM_SEED=$SEED CALLHOOK_SIM_PARALLEL=$PARALLEL \
  cargo test --release --quiet --test it simulation -- --nocapture 2>&1 \
  | grep --line-buffered -E '^(simulation|schedule|  )' | tee "$OUT"
status=${PIPESTATUS[0]}
set -e
echo "wall time: $(($(date +%s) - started)) s; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
exit "$status"
