#!/usr/bin/env python3
"""Where the tail latency at 64 connections comes from.

Runs `pg-default` at 64 connections (--conns) for --runs back-to-back runs of --duration seconds on
one PostgreSQL cluster (default settings). For each run it prints wrk's p99 and maximum
(measured by the client, so including wrk's own waits for a CPU) next to callhook's own
histograms from /metrics, in counts above 10, 25 and 50 ms:

  request  time from the request reaching the handler to its answer;
  commit   time to write and commit one batch (one per ~15 requests);
  queue    time a delivery waited for a writer;

and PostgreSQL's checkpoint count (pg_stat_bgwriter), before and after. --fresh-wal
measures a cluster as initdb left it, without the WAL warm-up the benchmarks do.

Usage:  python3 bench/tail.py [--runs 6] [--duration 8]
Builds callhook in release mode and starts its own PostgreSQL, like bench/run.py.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

STATE = ("SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), "
         "(SELECT wal_bytes FROM pg_stat_wal)")
HISTOGRAMS = [("request", "callhook_request_duration_seconds"),
              ("commit", "callhook_commit_duration_seconds"),
              ("queue", "callhook_queue_wait_seconds")]


def over(metrics, name):
    """Total count and counts above 10, 25 and 50 ms of a histogram."""
    le = {}
    for line in metrics.splitlines():
        if line.startswith(name + "_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            le[bound] = float(line.rsplit(" ", 1)[1])
    total = le.get("+Inf", 0.0)
    return total, [total - le.get(b, 0.0) for b in ("0.01", "0.025", "0.05")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--fresh-wal", action="store_true",
                    help="skip the WAL warm-up (see run.py's Postgres.warm_wal): a cluster as initdb left it")
    args = ap.parse_args()
    bench.ensure_wrk()
    bins = bench.build()
    pg = bench.Postgres(warm_wal=not args.fresh_wal)
    workdir = tempfile.mkdtemp(prefix="callhook-tail-")
    try:
        subprocess.run([bins[0], "migrate", "--database-url", pg.url], check=True, stdout=subprocess.DEVNULL)
        print("| run | req/s | wrk p99 ms | wrk max ms | requests >10/25/50 ms | commits >10/25/50 ms "
              "| queue waits >10/25/50 ms | checkpoints before → after |")
        print("|---:|---:|---:|---:|---|---|---|---|")
        for n in range(1, args.runs + 1):
            server, _, _ = bench.start_mode("pg-default", bins, pg, workdir)
            try:
                ckpt0, _ = pg.psql(STATE).split()
                res = bench.run_wrk(server.port, args.conns, args.duration, f"tail{n}", workdir)
                ckpt1, _ = pg.psql(STATE).split()
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
                    metrics = r.read().decode()
            finally:
                server.stop()
            secs = res["duration_us"] / 1e6
            acked = sum(t["acked"] for t in res["threads"])
            cells = []
            for _, name in HISTOGRAMS:
                total, counts = over(metrics, name)
                cells.append(f"{'/'.join(f'{c:.0f}' for c in counts)} of {total:,.0f}")
            print(f"| {n} | {acked / secs:,.0f} | {res['p99_us'] / 1000:.1f} | {res['max_us'] / 1000:.0f} | "
                  + " | ".join(cells) + f" | {ckpt0} → {ckpt1} |", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
