#!/usr/bin/env python3
"""One callhook against two on one PostgreSQL (docs/src/scaling.md).

Starts a PostgreSQL (bench/run.py's: default durability, warmed WAL), then, interleaved,
REPS times: one `callhook serve` taking 64 connections, and two replicas on the same
database (each with its own spool directory) taking 32 each, from one wrk per replica
(one thread each) at once. Reports the requests a second of the whole and checks, per
wrk, that every acknowledged delivery is stored once.

Usage:  python3 bench/replicas.py [--reps 3] [--duration 15] [--bin target/release/callhook]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def serve(callhook, pg, work, name):
    port = bench.free_port()
    cmd = [callhook, "serve", "--database-url", pg.url, "--listen", f"127.0.0.1:{port}",
           "--sdkappid", bench.SDKAPPID, "--spool-dir", os.path.join(work, f"spool-{name}")]
    return bench.Server(cmd, port, os.path.join(work, f"{name}.log"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--bin", default=os.path.join(bench.ROOT, "target/release/callhook"))
    args = ap.parse_args()
    bench.ensure_wrk()
    if not os.path.exists(args.bin):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "callhook"], cwd=bench.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="callhook-replicas-", dir="/tmp")
    pg = bench.Postgres()
    rows = []
    try:
        for rep in range(args.reps):
            for n in (1, 2):
                servers = [serve(args.bin, pg, work, f"r{rep}n{n}s{i}") for i in range(n)]
                results = [None] * n

                def drive(i):
                    results[i] = bench.run_wrk(servers[i].port, 64 // n, args.duration,
                                               f"r{rep}n{n}w{i}", work, threads=1)

                threads = [threading.Thread(target=drive, args=(i,)) for i in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for s in servers:
                    s.stop()
                rps = sum(r["requests"] / (r["duration_us"] / 1e6) for r in results)
                p99 = max(r["p99_us"] for r in results) / 1000
                checks = [bench.verify("pg", pg, r, f"r{rep}n{n}w{i}") for i, r in enumerate(results)]
                lost = sum(c["lost"] for c in checks)
                doubled = sum(c["doubled"] for c in checks)
                rows.append((rep, n, rps, p99, lost, doubled))
                print(f"rep {rep} replicas {n}: {rps:,.0f} req/s, p99 {p99:.1f} ms (worst replica), "
                      f"lost {lost}, doubled {doubled}", flush=True)
    finally:
        pg.stop()
    for n in (1, 2):
        rs = [r for r in rows if r[1] == n]
        print(f"replicas {n}: median {bench.median([r[2] for r in rs]):,.0f} req/s, "
              f"p99 {bench.median([r[3] for r in rs]):.1f} ms, lost {sum(r[4] for r in rs)}, "
              f"doubled {sum(r[5] for r in rs)}")
    ratios = [b[2] / a[2] for a, b in zip([r for r in rows if r[1] == 1], [r for r in rows if r[1] == 2])]
    print(f"two replicas / one: {bench.median(ratios):.2f} (per rep: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
