#!/usr/bin/env python3
"""Forwarding benchmarks (issue 26), on one machine, with `callhook listen` as the receiver
(it verifies every signature, as a destination must). Ingest throughput with one destination
matching every event against none is bench/run.py's job (same run, interleaved):
`python3 bench/run.py --modes pg-default,pg-fwd,pg-fwd-down --conns 64`.

  latency   callhook forwards every event to the receiver while `callhook send` delivers
            --rate status callbacks a second (default 100) for about --latency-secs. For each
            message the receiver got: the time from its outbox entry's `created_at` (the
            timestamp of the transaction that stored the event and its entry, so a few ms
            before the commit) to the receiver's clock, and from callhook receiving the
            event (`data.received_at`); p50/p90/p99/max. callhook's own histogram
            (commit to the 2xx answer) beside it.
  backlog   the receiver is down while --backlog events are stored as fast as `callhook
            send` goes (64 connections): the ingest rate meanwhile; then the receiver comes
            up: when the first message arrives (the worker backs off to a probe a minute
            while its destination is down), the drain time and rate, the CPU of callhook
            and PostgreSQL per message, and callhook's RSS sampled every 0.5 s (before,
            while storing, while draining, after). Several sizes (--backlog 36000,144000)
            run one after another, each on a fresh database and a fresh process, so the
            RSS can be compared across backlog sizes.

Usage:  python3 bench/forward.py [--backend pg|sqlite] [--scenarios latency,backlog]
            [--rate 100] [--latency-secs 60] [--backlog 360000[,…]]
It starts its own PostgreSQL (as bench/run.py does: default settings, warmed WAL), builds
callhook in release mode and writes bench/results/forward-<timestamp>.json, with a summary
on stdout. An hour at 100 events a second is --backlog 360000.
"""

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

SECRET = bench.FORWARD_SECRET
# Deliveries per generated call of the status family (one per participant): about 2.25 with
# `callhook send --family status`. Only used to size a run; what was sent is counted.
DELIVERIES_PER_CALL = 2.25
PENDING = "SELECT count(*) FROM forward_outbox WHERE state = 'pending'"


def log(msg):
    print(f"[forward] {msg}", file=sys.stderr, flush=True)


def iso_ms(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def quantiles(xs):
    return {"p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90), "p99_ms": percentile(xs, 99),
            "max_ms": max(xs) if xs else None, "n": len(xs)}


def wait_tcp(port, proc, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the receiver on port {port} did not start")
            time.sleep(0.05)


class Setup:
    """A database (fresh for each scenario), a callhook forwarding to a receiver port."""

    def __init__(self, backend, callhook, pg, workdir):
        self.backend, self.callhook, self.pg, self.workdir = backend, callhook, pg, workdir

    def url(self, name):
        if self.backend == "pg":
            self.pg.psql("TRUNCATE call_events, rejected_deliveries, forward_outbox", db="bench")
            self.pg.psql("VACUUM ANALYZE", db="bench")
            return self.pg.url
        return f"sqlite://{os.path.join(self.workdir, name + '.db')}"

    def serve(self, db_url, receiver_port):
        port = bench.free_port()
        config = bench.forward_config(self.workdir, receiver_port)
        cmd = [self.callhook, "serve", "--database-url", db_url, "--sdkappid", bench.SDKAPPID,
               "--listen", f"127.0.0.1:{port}", "--config", config,
               "--spool-dir", os.path.join(self.workdir, f"spool-{port}")]
        return bench.Server(cmd, port, os.path.join(self.workdir, f"serve-{port}.log"))

    def listen(self, port, out):
        cmd = [self.callhook, "listen", f"127.0.0.1:{port}", "--secret", SECRET, "--format", "json"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        wait_tcp(port, proc)
        return proc

    def rows(self, db_url, sql):
        if self.backend == "pg":
            return [line.split("\t") for line in self.pg.psql(sql, db="bench").splitlines() if line]
        import sqlite3
        con = sqlite3.connect(db_url.removeprefix("sqlite://"))
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def scalar(self, db_url, sql):
        return int(self.rows(db_url, sql)[0][0] or 0)

    def pg_pids(self):
        return self.pg.pids() if self.pg else []

    def send(self, port, calls, rate=0.0, concurrency=64):
        out = os.path.join(self.workdir, f"send-{time.time_ns()}.json")
        cmd = [self.callhook, "send", "--url", f"http://127.0.0.1:{port}/", "--sdkappid", bench.SDKAPPID,
               "--family", "status", "--calls", str(calls), "--concurrency", str(concurrency),
               "--rate", str(rate), "--quiet", "--summary-json", out]
        bench.sh(cmd)
        with open(out) as f:
            return json.load(f)


def histogram_quantiles(metrics_text, name, qs):
    """Upper bucket bounds of the quantiles of a Prometheus histogram (all labels summed)."""
    buckets = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            key = float("inf") if le == "+Inf" else float(le)
            buckets[key] = buckets.get(key, 0) + float(line.split()[-1])
    total = buckets.get(float("inf"), 0)
    out = {}
    for q in qs:
        out[q] = next((le for le in sorted(buckets) if buckets[le] >= q / 100 * total), None)
    return out, total


def created_ms(setup, db):
    """message_id -> the outbox entry's created_at, in Unix milliseconds."""
    if setup.backend == "pg":
        rows = setup.rows(db, "SELECT message_id, extract(epoch FROM created_at) * 1000 FROM forward_outbox")
        return {m: float(t) for m, t in rows}
    return {m: iso_ms(t) for m, t in setup.rows(db, "SELECT message_id, created_at FROM forward_outbox")}


def latency(setup, rate, seconds):
    db = setup.url("latency")
    port = bench.free_port()
    out_path = os.path.join(setup.workdir, "listen-latency.jsonl")
    load = [os.getloadavg()[0]]
    with open(out_path, "w") as out:
        receiver = setup.listen(port, out)
        server = setup.serve(db, port)
        try:
            calls = max(1, int(rate * seconds / DELIVERIES_PER_CALL))
            log(f"latency: {calls} calls of the status family at {rate} deliveries/s")
            summary = setup.send(server.port, calls, rate=rate, concurrency=16)
            load.append(os.getloadavg()[0])
            entries = setup.scalar(db, "SELECT count(*) FROM forward_outbox")
            deadline = time.time() + 60
            while time.time() < deadline:
                with open(out_path) as f:
                    if len({json.loads(line)["webhook_id"] for line in f}) >= entries:
                        break
                time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as r:
                metrics = r.read().decode()
            created = created_ms(setup, db)
        finally:
            server.stop()
            receiver.terminate()
            receiver.wait()
    from_commit, from_receipt, seen, unverified = [], [], set(), 0
    with open(out_path) as f:
        for line in f:
            m = json.loads(line)
            if not m["verified"]:
                unverified += 1
                continue
            if m["webhook_id"] in seen:
                continue  # a repeat (at least once): the first arrival counts
            seen.add(m["webhook_id"])
            got = iso_ms(m["received_at"])
            from_commit.append(got - created[m["webhook_id"]])
            from_receipt.append(got - iso_ms(m["body"]["data"]["received_at"]))
    internal, n = histogram_quantiles(metrics, "callhook_forward_delivery_latency_seconds", (50, 99))
    return {
        "rate": rate, "calls": calls, "deliveries": summary.get("deliveries"),
        "acknowledged": summary.get("acknowledged"), "send_elapsed_s": summary.get("elapsed_s"),
        "send_latency_ms": summary.get("latency_ms"),
        "outbox_entries": entries, "messages_received": len(seen), "unverified": unverified,
        "missing": entries - len(seen),
        "from_commit": quantiles(from_commit), "from_receipt": quantiles(from_receipt),
        "histogram_p50_le_s": internal[50], "histogram_p99_le_s": internal[99], "histogram_count": n,
        "loadavg_1m": load,
    }


def sample_rss(pid, stop, samples):
    while not stop.is_set():
        try:
            samples.append((time.time(), bench.memory(pid)[0]))
        except OSError:
            return
        time.sleep(0.5)


def backlog(setup, events):
    db = setup.url(f"backlog-{events}")
    port = bench.free_port()
    server = setup.serve(db, port)
    load = [os.getloadavg()[0]]
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_rss, args=(server.proc.pid, stop, samples))
    try:
        rss_before = bench.memory(server.proc.pid)[0]
        sampler.start()
        calls = max(1, int(events / DELIVERIES_PER_CALL))
        log(f"backlog: {calls} calls stored with the receiver down")
        t0 = time.time()
        summary = setup.send(server.port, calls)
        ingest_s = time.time() - t0
        load.append(os.getloadavg()[0])
        pending = setup.scalar(db, PENDING)
        stored = setup.scalar(db, "SELECT count(*) FROM call_events")
        rss_ingest = [r for t, r in samples if t <= time.time()]
        log(f"backlog: {pending} pending after {ingest_s:.0f} s; the receiver comes up")
        pids = [server.proc.pid], setup.pg_pids()
        c0, p0 = bench.cpu_seconds(pids[0]), bench.cpu_seconds(pids[1])
        with open(os.devnull, "w") as devnull:
            receiver = setup.listen(port, devnull)
            up = time.time()
            first = None
            left = pending
            try:
                while left > 0 and time.time() - up < 3600:
                    time.sleep(0.5)
                    left = setup.scalar(db, PENDING)
                    if first is None and left < pending:
                        first = time.time() - up
                drained = time.time() - up
            finally:
                receiver.terminate()
                receiver.wait()
        c1, p1 = bench.cpu_seconds(pids[0]), bench.cpu_seconds(setup.pg_pids())
        load.append(os.getloadavg()[0])
        rss_drain = [r for t, r in samples if t >= up]
        stop.set()
        sampler.join()
        rss_after, rss_hwm = bench.memory(server.proc.pid)
        delivered = setup.scalar(db, "SELECT count(*) FROM forward_outbox WHERE state = 'delivered'")
        dead = setup.scalar(db, "SELECT count(*) FROM forward_outbox WHERE state = 'dead'")
    finally:
        stop.set()
        server.stop()
    drain_s = drained - (first or 0)
    return {
        "backlog": pending, "stored_events": stored, "deliveries_sent": summary.get("deliveries"),
        "acknowledged": summary.get("acknowledged"), "ingest_s": ingest_s,
        "ingest_per_s": summary.get("acknowledged", 0) / ingest_s,
        "left_pending": left, "delivered": delivered, "dead": dead,
        "first_delivery_after_s": first, "up_to_drained_s": drained, "drain_s": drain_s,
        "drain_per_s": delivered / drain_s if drain_s else None,
        "callhook_cpu_s": c1 - c0, "pg_cpu_s": p1 - p0,
        "cpu_us_per_message": (c1 - c0 + p1 - p0) / delivered * 1e6 if delivered else None,
        "rss_before_mib": rss_before,
        "rss_peak_ingest_mib": max(rss_ingest or [0]),
        "rss_peak_drain_mib": max(rss_drain or [0]),
        "rss_median_drain_mib": sorted(rss_drain)[len(rss_drain) // 2] if rss_drain else None,
        "rss_after_mib": rss_after, "rss_hwm_mib": rss_hwm,
        "rss_samples": len(samples),
        "loadavg_1m": load,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["pg", "sqlite"], default="pg")
    ap.add_argument("--scenarios", default="latency,backlog")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--latency-secs", type=int, default=60)
    ap.add_argument("--backlog", default="360000", help="events, comma-separated for several runs")
    args = ap.parse_args()
    callhook, _ = bench.build()
    workdir = tempfile.mkdtemp(prefix="callhook-forward-")
    pg = bench.Postgres() if args.backend == "pg" else None
    results = {"backend": args.backend, "args": vars(args), "loadavg_start": os.getloadavg()[0]}
    try:
        if pg:
            bench.sh([callhook, "migrate", "--database-url", pg.url], stdout=subprocess.DEVNULL)
        setup = Setup(args.backend, callhook, pg, workdir)
        if "latency" in args.scenarios:
            results["latency"] = latency(setup, args.rate, args.latency_secs)
            log(f"latency: {json.dumps(results['latency'])}")
        if "backlog" in args.scenarios:
            results["backlog"] = []
            for size in (int(s) for s in args.backlog.split(",") if s):
                results["backlog"].append(backlog(setup, size))
                log(f"backlog: {json.dumps(results['backlog'][-1])}")
    finally:
        if pg:
            pg.stop()
    results["loadavg_end"] = os.getloadavg()[0]
    os.makedirs(os.path.join(bench.ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(bench.ROOT, "bench/results", f"forward-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {os.path.relpath(path, bench.ROOT)}")
    print(json.dumps(results, indent=2))
    lat = results.get("latency")
    if lat and (lat["missing"] or lat["unverified"]):
        sys.exit(f"latency: {lat['missing']} messages never arrived, {lat['unverified']} failed verification")
    if any(b["left_pending"] or b["dead"] for b in results.get("backlog", [])):
        sys.exit("a backlog did not drain")


if __name__ == "__main__":
    main()
