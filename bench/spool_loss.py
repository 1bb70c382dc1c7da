#!/usr/bin/env python3
"""Loss test for the outage journal: PostgreSQL down longer than Tencent's retry window.

Two phases, like a two-phase load test:
  1. Load: senders post unique status callbacks at a steady rate for --load seconds, each
     delivery with Tencent's real retry schedule (retries after 0, 1, 1, 2, 3, 5 s, then
     dropped), recording which deliveries were acknowledged (HTTP 200, ErrorCode 0).
     --outage-at seconds in, PostgreSQL is stopped (immediate shutdown: a crash) and
     started again --outage seconds later — longer than the ~12 s retry window, so without
     the spool every call ending in between would be lost.
  2. Check: after the load, wait until callhook reports an empty spool, then prove that
     every acknowledged delivery is in call_events exactly once (one row per event, whose
     deliveries count is not more than the attempts the sender made), and report how long
     the spool took to drain after PostgreSQL returned.

Usage:  python3 bench/spool_loss.py [--rate 200] [--load 60] [--outage-at 10] [--outage 30]
It builds callhook in release mode and starts its own PostgreSQL; exit code 1 on any loss.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the throughput benchmark's PostgreSQL and process helpers)

SCHEDULE = [0, 1, 1, 2, 3, 5]


def post(url, body, timeout=5.0):
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer = json.loads(r.read() or b"{}")
            return r.status == 200 and answer.get("ErrorCode") == 0, answer.get("ErrorMessage", "")
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        return False, str(e)


def deliver(url, call_id, results, lock):
    """One delivery with the real retry schedule."""
    body = json.dumps({
        "UserId": "u-" + call_id, "RoomId": "r", "TotalNum": 2, "MediaType": "audio",
        "CallType": "single", "CallId": call_id, "Role": "caller", "CallResult": "normal_end",
        "EventTime": int(time.time()), "StartCallTs": int(time.time()) - 60,
        "AcceptTs": int(time.time()) - 55, "EndTs": int(time.time()),
    }).encode()
    attempts, spooled = 0, False
    for i, wait in enumerate([0] + SCHEDULE):
        time.sleep(wait)
        attempts += 1
        ok, message = post(url, body)
        if ok:
            with lock:
                results["acked"][call_id] = attempts
                results["spooled"] += "journaled" in message
            return
    with lock:
        results["dropped"].append(call_id)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200, help="new deliveries per second")
    ap.add_argument("--load", type=float, default=60, help="seconds of load")
    ap.add_argument("--outage-at", type=float, default=10)
    ap.add_argument("--outage", type=float, default=30, help="seconds PostgreSQL stays down")
    args = ap.parse_args()

    callhook, _ = bench.build()
    pg = bench.Postgres()
    workdir = tempfile.mkdtemp(prefix="callhook-loss-")
    port = bench.free_port()
    server = None
    try:
        subprocess.run([callhook, "migrate", "--database-url", pg.url], check=True, stdout=subprocess.DEVNULL)
        server = bench.Server(
            [callhook, "serve", "--listen", f"127.0.0.1:{port}", "--sdkappid", bench.SDKAPPID,
             "--database-url", pg.url, "--spool-dir", os.path.join(workdir, "spool")],
            port, os.path.join(workdir, "callhook.log"))
        url = (f"http://127.0.0.1:{port}/?sdkappid={bench.SDKAPPID}&command=call_end&contenttype=json"
               f"&clientip=10.0.0.1&optplatform=iOS")
        results = {"acked": {}, "dropped": [], "spooled": 0}
        lock = threading.Lock()
        threads = []
        start = time.time()
        outage = {"down_at": None, "up_at": None}

        def chaos():
            time.sleep(args.outage_at)
            pg.run("pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
            outage["down_at"] = time.time()
            bench.log(f"PostgreSQL stopped at t={outage['down_at'] - start:.1f}s")
            time.sleep(args.outage)
            opts = f"-c listen_addresses=127.0.0.1 -c port={pg.port} -c unix_socket_directories={pg.dir}"
            pg.run("pg_ctl", "-D", pg.data, "-l", os.path.join(pg.dir, "server.log"), "-o", opts, "-w", "start")
            outage["up_at"] = time.time()
            bench.log(f"PostgreSQL started again at t={outage['up_at'] - start:.1f}s")

        def watch():
            # Polls /readyz through the whole run and notes the first moment after
            # PostgreSQL's return at which the spool is empty and the database up.
            while outage["drained_at"] is None and not outage["stop_watch"]:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                        ready = json.loads(r.read())
                except urllib.error.HTTPError as e:
                    ready = json.loads(e.read() or b"{}")
                except (OSError, ValueError):
                    ready = {}
                if (outage["up_at"] and ready.get("journal_events") == 0
                        and ready.get("database") == "up"):
                    outage["drained_at"] = time.time()
                time.sleep(0.1)

        outage["drained_at"], outage["stop_watch"] = None, False
        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        watch_thread = threading.Thread(target=watch)
        watch_thread.start()
        n = 0
        while time.time() - start < args.load:
            t = threading.Thread(target=deliver, args=(url, f"loss-{n}", results, lock))
            t.start()
            threads.append(t)
            n += 1
            next_at = start + n / args.rate
            time.sleep(max(0.0, next_at - time.time()))
        for t in threads:
            t.join()
        chaos_thread.join()
        bench.log(f"sent {n} deliveries: {len(results['acked'])} acknowledged "
                  f"({results['spooled']} from the spool), {len(results['dropped'])} dropped")

        # Phase 2: wait for the spool to drain (at most 2 minutes), then check the database.
        deadline = time.time() + 120
        while outage["drained_at"] is None and time.time() < deadline:
            time.sleep(0.2)
        outage["stop_watch"] = True
        watch_thread.join()
        drained_at = outage["drained_at"]
        rows = pg.psql("SELECT call_id, deliveries FROM call_events WHERE call_id LIKE 'loss-%'", db="bench")
        stored = {}
        duplicates = 0
        for line in rows.splitlines():
            call_id, deliveries = line.split("\t")
            duplicates += call_id in stored
            stored[call_id] = int(deliveries)
        lost = [c for c in results["acked"] if c not in stored]
        # A row counts the deliveries that reached the database: never more than the sender's
        # attempts (a spooled event replayed twice, after a crash mid-replay, could be).
        overcounted = [c for c, attempts in results["acked"].items() if stored.get(c, 0) > attempts]
        report = {
            "deliveries": n,
            "acknowledged": len(results["acked"]),
            "acknowledged_from_spool": results["spooled"],
            "dropped_by_sender": len(results["dropped"]),
            "retried": sum(1 for a in results["acked"].values() if a > 1),
            "rows": len(stored),
            "lost": len(lost),
            "duplicate_rows": duplicates,
            "overcounted": len(overcounted),
            "outage_seconds": round(outage["up_at"] - outage["down_at"], 1) if outage["up_at"] else None,
            "drained_seconds_after_return": round(drained_at - outage["up_at"], 1) if drained_at and outage["up_at"] else None,
        }
        print(json.dumps(report, indent=2))
        if lost or duplicates or overcounted or results["dropped"] or drained_at is None:
            sys.exit("LOSS TEST FAILED")
        print("every acknowledged delivery is in call_events exactly once")
    finally:
        if server:
            server.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
