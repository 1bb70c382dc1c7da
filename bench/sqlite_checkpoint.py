#!/usr/bin/env python3
"""How long one SQLite WAL checkpoint takes on this disk, by the number of WAL pages.

callhook's SQLite writer checkpoints the WAL inside the commit that passes
`wal_autocheckpoint` pages, within the write deadline (1.5 s by default). This script
measures that checkpoint directly: a database migrated by callhook, 200,000 events of
history (checkpointed), then commits of 20 events until the WAL holds N pages, then one
`PRAGMA wal_checkpoint(PASSIVE)`, timed. Python's sqlite3 module with the settings
callhook uses (WAL, synchronous=FULL, a 16 MiB page cache).

Usage:  python3 bench/sqlite_checkpoint.py [--pages 1000,10000] [--reps 3]
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

BODY = json.dumps({"UserId": "user-1", "RoomId": "room-1", "TotalNum": 2, "MediaType": "video",
                   "CallType": "single", "CallId": "x", "Role": "caller", "CallResult": "normal_end",
                   "EventTime": 1704856890, "StartCallTs": 1704856873, "AcceptTs": 1704856876,
                   "EndTs": 1704856885})
INSERT = ("INSERT INTO call_events (sdkappid, family, command, call_id, user_id, role, call_result, "
          "payload, received_at, last_delivery_at, dedupe_key, deliveries, event_time, start_call_ts, end_ts) "
          "VALUES (1400000001, 'status', 'call_end', ?, 'user-1', 'caller', 'normal_end', ?, "
          "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), randomblob(32), 1, "
          "'2024-01-10T03:01:30.000Z', '2024-01-10T03:01:13.000Z', '2024-01-10T03:01:25.000Z')")
FRAME = 4096 + 24  # a WAL frame: one page and its header


def commit(db, first, n):
    db.execute("BEGIN")
    db.executemany(INSERT, [(f"call-{i}", BODY) for i in range(first, first + n)])
    db.execute("COMMIT")
    return first + n


def one(callhook, pages):
    d = tempfile.mkdtemp(prefix="callhook-ckpt-", dir="/tmp")
    try:
        path = os.path.join(d, "callhook.db")
        subprocess.run([callhook, "migrate", "--database-url", f"sqlite://{path}"], check=True,
                       capture_output=True)
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "wal_autocheckpoint=0", "cache_size=-16384"):
            db.execute(f"PRAGMA {pragma}")
        i = 0
        while i < 200_000:
            i = commit(db, i, 1000)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        while os.path.getsize(path + "-wal") // FRAME < pages:
            i = commit(db, i, 20)
        t = time.perf_counter()
        busy, log, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        ms = (time.perf_counter() - t) * 1000
        db.close()
        if busy or done != log:
            raise RuntimeError(f"the checkpoint did not finish: {busy=} {log=} {done=}")
        return log, ms
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", default="1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    callhook, _ = bench.build()
    print("| WAL pages | checkpoint, median | max | per rep |")
    print("|---:|---:|---:|---|")
    for pages in [int(p) for p in args.pages.split(",")]:
        runs = [one(callhook, pages) for _ in range(args.reps)]
        ms = [m for _, m in runs]
        print(f"| {pages:,} | {statistics.median(ms):.0f} ms | {max(ms):.0f} ms | "
              + ", ".join(f"{m:.0f} ms ({log:,} pages)" for log, m in runs) + " |", flush=True)


if __name__ == "__main__":
    main()
