#!/usr/bin/env python3
"""Ingest latency while retention removes a million events (docs/src/benchmarks/analytics.md, "Partitions and retention").

For each backend: loads EVENTS events whose days are all older than the retention (60 days
of calls ending 45 days ago, written by examples/analytics_load), then runs wrk at 64
connections against `callhook serve` twice, interleaved, REPS times:
  keep     --retention-days 0: nothing is removed (the baseline);
  remove   --retention-days 30: the history upkeep starts at once and removes every loaded
           event while wrk runs (PostgreSQL drops the weeks' partitions; SQLite deletes in
           batches of 1,000 and gives the pages back).
Each remove run starts on a fresh copy of the loaded database. It reports requests a
second, p50/p99/max latency, how long the removal took (from the service's metrics), and
checks that every acknowledged delivery is stored once and every old event is gone.

Usage:  python3 bench/retention.py [--events 1000000] [--duration 30] [--reps 3]
                                   [--backends postgres,sqlite] [--bin-dir DIR]
"""

import argparse
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py: PostgreSQL, Server, wrk, verify)

ROOT = bench.ROOT


def build(bin_dir):
    if bin_dir:
        return os.path.join(bin_dir, "callhook"), os.path.join(bin_dir, "examples/analytics_load")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "callhook", "--example", "analytics_load"],
                   cwd=ROOT, check=True)
    return os.path.join(ROOT, "target/release/callhook"), os.path.join(ROOT, "target/release/examples/analytics_load")


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return None


def watch_upkeep(port, started, out):
    """Records when the first history upkeep run finished (seconds after `started`)."""
    while "done_s" not in out and not out.get("stop"):
        if metric(port, "callhook_history_upkeep_last_success_timestamp_seconds"):
            out["done_s"] = time.time() - started
            return
        time.sleep(0.05)


def old_events(kind, db):
    sql = "SELECT count(*) FROM call_events WHERE call_id NOT LIKE 'r%-%'"
    if kind == "pg":
        return int(db.psql(sql, db=db.dbname).strip())
    con = sqlite3.connect(db)
    n = con.execute(sql).fetchone()[0]
    con.close()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backends", default="postgres,sqlite")
    ap.add_argument("--bin-dir", help="a release target dir holding callhook and examples/analytics_load "
                                      "(default: build them into target/release)")
    args = ap.parse_args()
    bench.ensure_wrk()
    callhook, load = build(args.bin_dir)
    work = tempfile.mkdtemp(prefix="callhook-retention-", dir="/tmp")
    end = (datetime.date.today() - datetime.timedelta(days=45)).isoformat()
    results = []
    for backend in args.backends.split(","):
        pg = bench.Postgres() if backend == "postgres" else None
        try:
            if pg:
                url = pg.url_for("loaded")
                pg.psql("CREATE DATABASE loaded")
            else:
                loaded = os.path.join(work, "loaded.db")
                url = f"sqlite://{loaded}"
            t0 = time.time()
            subprocess.run([load, "load", "--database-url", url, "--events", str(args.events), "--days", "60",
                            "--end", end], check=True, stdout=subprocess.DEVNULL)
            print(f"{backend}: loaded {args.events} events ending {end} in {time.time() - t0:.0f} s", flush=True)
            if pg:
                # Each run gets a copy: CREATE DATABASE … TEMPLATE copies the files.
                pg.psql("CHECKPOINT")
            for rep in range(args.reps):
                for variant in ("keep", "remove"):
                    run_id = f"r{rep}{variant[0]}"
                    if pg:
                        pg.psql(f"DROP DATABASE IF EXISTS {run_id}")
                        pg.psql(f"CREATE DATABASE {run_id} TEMPLATE loaded")
                        pg.use(run_id)
                        kind, db, db_url = "pg", pg, pg.url
                    else:
                        path = os.path.join(work, f"{run_id}.db")
                        shutil.copyfile(loaded, path)
                        kind, db, db_url = "sqlite", path, f"sqlite://{path}"
                    port = bench.free_port()
                    days = "30" if variant == "remove" else "0"
                    cmd = [callhook, "serve", "--database-url", db_url, "--listen", f"127.0.0.1:{port}",
                           "--sdkappid", bench.SDKAPPID, "--retention-days", days,
                           "--spool-dir", os.path.join(work, f"spool-{run_id}")]
                    if not pg:
                        cmd.remove("--spool-dir")
                        cmd.remove(os.path.join(work, f"spool-{run_id}"))
                    started = time.time()
                    server = bench.Server(cmd, port, os.path.join(work, f"{run_id}.log"))
                    upkeep = {}
                    watcher = threading.Thread(target=watch_upkeep, args=(port, started, upkeep))
                    watcher.start()
                    result = bench.run_wrk(port, 64, args.duration, run_id, work)
                    upkeep["stop"] = True
                    watcher.join()
                    server.stop()
                    checked = bench.verify(kind, db, result, run_id)
                    record = {
                        "backend": backend, "variant": variant, "rep": rep,
                        "rps": result["requests"] / (result["duration_us"] / 1e6),
                        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
                        "p999_ms": result["p999_us"] / 1000, "max_ms": result["max_us"] / 1000,
                        "upkeep_done_s": upkeep.get("done_s"), "old_events_left": old_events(kind, db),
                        **checked,
                    }
                    results.append(record)
                    print(json.dumps(record), flush=True)
                    if not pg:
                        os.remove(path)
        finally:
            if pg:
                pg.stop()
    shutil.rmtree(work, ignore_errors=True)
    print("\n| backend | variant | p50 ms | p99 ms | p99.9 ms | max ms | removal done after (s) | old events left | lost | doubled |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        for variant in ("keep", "remove"):
            rs = [r for r in results if r["backend"] == backend and r["variant"] == variant]
            if not rs:
                continue
            med = lambda k: bench.median([r[k] for r in rs if r[k] is not None]) if any(r[k] is not None for r in rs) else float("nan")  # noqa: E731
            print(f"| {backend} | {variant} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | {med('p999_ms'):.1f} | "
                  f"{med('max_ms'):.0f} | {med('upkeep_done_s'):.1f} | {max(r['old_events_left'] for r in rs)} | "
                  f"{sum(r['lost'] for r in rs)} | {sum(r['doubled'] for r in rs)} |")


if __name__ == "__main__":
    main()
