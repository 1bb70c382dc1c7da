#!/usr/bin/env python3
"""A/B of two builds of callhook, interleaved, with bench/run.py's workload and check.

For a change whose effect is smaller than the noise between two separate benchmark runs
(an allocator, a compiler flag, a dependency bump): build each variant, copy its
binaries into a directory, and compare them repetition by repetition.

    git stash && cargo build --release --bin callhook --example noop_receiver \\
        && mkdir -p /tmp/a && cp target/release/callhook target/release/examples/noop_receiver /tmp/a
    git stash pop && cargo build --release --bin callhook --example noop_receiver \\
        && mkdir -p /tmp/b && cp target/release/callhook target/release/examples/noop_receiver /tmp/b
    python3 bench/ab.py /tmp/a /tmp/b --modes pg-default,noop --reps 3

Each repetition runs every mode with A, then with B, at 64 connections for --duration
seconds, and prints throughput, p50 and p99, callhook's CPU per request (alone, and with
PostgreSQL's) and its RSS; at the end, the medians and the median of the per-repetition B/A
ratios of throughput and of CPU per request.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="directory with variant A's callhook and noop_receiver")
    ap.add_argument("b", help="directory with variant B's callhook and noop_receiver")
    ap.add_argument("--modes", default="pg-default,noop,pg-batch1")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    variants = {name: (os.path.join(d, "callhook"), os.path.join(d, "noop_receiver"))
                for name, d in (("A", args.a), ("B", args.b))}
    modes = args.modes.split(",")
    bench.ensure_wrk()
    pg = bench.Postgres() if any(m.startswith("pg") for m in modes) else None
    workdir = tempfile.mkdtemp(prefix="callhook-ab-")
    rps = {}
    cpu = {}
    failed = False
    try:
        if pg:
            # Each variant on a database of its own: builds of different schema versions
            # cannot share one (an older build refuses a database migrated past it).
            for name, bins in variants.items():
                pg.psql(f"CREATE DATABASE bench_{name.lower()}")
                pg.use(f"bench_{name.lower()}")
                subprocess.run([bins[0], "migrate", "--database-url", pg.url], check=True,
                               stdout=subprocess.DEVNULL)
        for rep in range(1, args.reps + 1):
            for mode in modes:
                for name, bins in variants.items():
                    run_id = f"ab{rep}{name}{mode.replace('-', '')}"
                    if pg:
                        pg.use(f"bench_{name.lower()}")
                    server, kind, db = bench.start_mode(mode, bins, pg, workdir)
                    try:
                        bench.run_wrk(server.port, args.conns, 2, "warm" + run_id, workdir)
                        on_pg = pg is not None and mode.startswith("pg")
                        c0 = bench.cpu_seconds([server.proc.pid])
                        p0 = bench.cpu_seconds(pg.pids() if on_pg else [])
                        res = bench.run_wrk(server.port, args.conns, args.duration, run_id, workdir)
                        c1 = bench.cpu_seconds([server.proc.pid])
                        p1 = bench.cpu_seconds(pg.pids() if on_pg else [])
                        rss, peak = bench.memory(server.proc.pid)
                        check = bench.verify(kind, db, res, run_id) if kind else {"lost": 0, "doubled": 0}
                    finally:
                        server.stop()
                    secs = res["duration_us"] / 1e6
                    acked = sum(t["acked"] for t in res["threads"])
                    rps.setdefault((mode, name), []).append(acked / secs)
                    per_event = (c1 - c0 + p1 - p0) / max(acked, 1) * 1e6
                    cpu.setdefault((mode, name), []).append(per_event)
                    failed |= bool(check["lost"] or check["doubled"] or acked == 0)
                    print(f"rep {rep} {mode:14} {name}  {acked / secs:9,.0f} req/s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                          f"p99 {res['p99_us'] / 1000:6.1f} ms  "
                          f"callhook {(c1 - c0) / max(acked, 1) * 1e6:6.1f} us/req  "
                          f"with the database {per_event:6.1f} us/req  rss {rss:.1f}/{peak:.1f} MiB  "
                          f"lost {check['lost']} doubled {check['doubled']}", flush=True)
    finally:
        if pg:
            pg.stop()
    print()
    for mode in modes:
        a, b = rps[(mode, "A")], rps[(mode, "B")]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"{mode:14} A {statistics.median(a):9,.0f}  B {statistics.median(b):9,.0f} req/s  "
              f"B/A {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
        ca, cb = cpu[(mode, "A")], cpu[(mode, "B")]
        print(f"{'':14} CPU per request (callhook + database) A {statistics.median(ca):6.1f}  "
              f"B {statistics.median(cb):6.1f} us  B/A {statistics.median([y / x for x, y in zip(ca, cb)]):.2f}")
    if failed:
        sys.exit("a run lost or doubled deliveries, or acknowledged nothing")


if __name__ == "__main__":
    main()
