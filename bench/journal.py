#!/usr/bin/env python3
"""The outage store under load: journaling throughput, and a long outage at a steady rate.

callhook keeps what it acknowledges while PostgreSQL is down in a local outage store (the
segment-file spool today; the SQLite journal of issue 13 next). This measures, for one or
more callhook binaries:

  throughput  PostgreSQL stopped (`pg_ctl stop -m immediate`, a crash) once callhook is up
              and warm; when /readyz says the database is down, wrk drives 64 connections
              with bench/callback.lua for --duration seconds, so every acknowledged request
              goes to the outage store. Reports req/s, p50/p99, callhook's CPU and RSS, the
              store's size; then starts PostgreSQL again, waits until the store is empty and
              checks call_events against every acknowledged delivery (bench/run.py's check:
              nothing lost, nothing doubled). With several --bin, the reps interleave them.
  outage      A steady --rate of new deliveries a second (unique status callbacks, every
              tenth a repeat of the delivery five before it), each with Tencent's retry
              schedule (retries after 0, 1, 1, 2, 3, 5 s, then dropped), from an asyncio
              sender on keep-alive connections. --before seconds in, PostgreSQL is stopped
              for --outage seconds, then started again; the load goes on for --after seconds
              more. callhook's RSS is sampled every 0.5 s; reported: peak RSS during the
              outage and during the replay, the store's size on disk at the end of the
              outage, the drain rate (events in the store when PostgreSQL returned / seconds
              until it was empty), the rate the sender achieved, and lost / doubled /
              overcounted (acknowledged deliveries missing from call_events; two rows for
              one event; a row counting more deliveries than the sender attempted).
  restart     (--restart-outage SECONDS) Full wrk load into the store for that long, then
              callhook is killed (SIGKILL) and started again: first while PostgreSQL is
              still down (a build that cannot start without its database exits, and that
              is recorded), then, if it did not come up, after PostgreSQL returns. Reports
              the peak RSS while the restarted process replays the store, and checks the
              database as above.

  slow-drain  (--only slow-drain) --slow-events callbacks journaled while PostgreSQL is
              down; it returns with every insert into call_events costing --slow-ms (a
              trigger's pg_sleep), so whole chunks pass the replay's deadline. Reports the
              drain time and the replay steps that passed their deadline
              (callhook_journal_step_timeouts_total), and checks the rows.

Usage:
  python3 bench/journal.py                       # build this tree; throughput, outage, restart
  python3 bench/journal.py --bin old=/path/callhook --bin new=/path/callhook --only throughput
  python3 bench/journal.py --only outage --outage 300 --rate 1000
  python3 bench/journal.py --only slow-drain --bin old=/path/callhook --bin new=target/release/callhook
Exit code 1 if anything acknowledged was lost, doubled or overcounted, a delivery was
dropped by the sender, or the store did not drain. Writes bench/results/journal-<timestamp>.jsonl
and prints a Markdown summary.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (PostgreSQL, process, wrk and check helpers)

SCHEDULE = [0, 1, 1, 2, 3, 5]  # Tencent's retries, seconds after the previous attempt
RESULTS = ["normal_end", "normal_end", "normal_end", "not_answer", "reject",
           "cancel", "normal_end", "call_busy", "normal_end", "interrupt"]


def log(msg):
    bench.log(msg)


# ---------------------------------------------------------------------------------------
# What /readyz says about the outage store. The segment-file spool reports
# `spooled_events` / `spool_bytes`; the journal of issue 13 is expected to report a similar
# count: the first of these names that is present is used.

EVENT_FIELDS = ("journal_events", "spooled_events")
BYTES_FIELDS = ("journal_bytes", "spool_bytes")


def store_events(ready):
    """Events in the outage store, from /readyz's JSON (None if it reports none)."""
    for key in EVENT_FIELDS:
        if key in ready:
            return ready[key]
    return None


def store_bytes(ready):
    for key in BYTES_FIELDS:
        if key in ready:
            return ready[key]
    return None


def readyz(port, timeout=5):
    """/readyz's JSON whatever its status (503 when the database is down and nothing can
    be stored); {} when callhook does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read() or b"{}")
        except ValueError:
            return {}
    except (OSError, ValueError):
        return {}


def wait_for(pred, timeout, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    return None


def dir_size(path):
    """(apparent bytes, allocated bytes, files) of everything under path."""
    apparent = allocated = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                st = os.stat(os.path.join(dirpath, n))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return apparent, allocated, files


class RssSampler(threading.Thread):
    """VmRSS / VmHWM of one process every `every` seconds, each sample tagged with the
    phase the benchmark is in (set `phase` from outside)."""

    def __init__(self, pid, every=0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.phase = pid, every, "start"
        self.samples = []  # (t, phase, rss MiB, hwm MiB)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.every)

    def sample(self):
        try:
            rss, hwm = bench.memory(self.pid)
        except OSError:
            return
        self.samples.append((time.time(), self.phase, rss, hwm))

    def stop(self):
        self.stopped.set()
        self.join()
        self.sample()

    def peak(self, phase):
        xs = [s[2] for s in self.samples if s[1] == phase]
        return max(xs) if xs else None

    def hwm_at_end(self, phase):
        xs = [s[3] for s in self.samples if s[1] == phase]
        return xs[-1] if xs else None


def fresh_database(pg, binary):
    """An empty `bench` database with `binary`'s schema: binaries of different versions
    (one with migrations the other does not know) take turns on one PostgreSQL."""
    pg.psql("DROP DATABASE IF EXISTS bench WITH (FORCE)")
    pg.psql("CREATE DATABASE bench")
    subprocess.run([binary, "migrate", "--database-url", pg.url], check=True, stdout=subprocess.DEVNULL)


def start_callhook(binary, pg, spool_dir, workdir, flag, timeout=120):
    port = bench.free_port()
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--sdkappid", bench.SDKAPPID,
           "--database-url", pg.url, flag, spool_dir]
    return bench.Server(cmd, port, os.path.join(workdir, f"callhook-{port}.log"), timeout=timeout)


def kill(server):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.log.close()


def wait_down(port, timeout=30):
    return wait_for(lambda: readyz(port).get("database") == "down", timeout)


def wait_drained(port, timeout):
    """Waits until the database is up and the store is empty; returns the moment, or None."""
    def drained():
        ready = readyz(port)
        return time.time() if ready.get("database") == "up" and store_events(ready) == 0 else None
    return wait_for(drained, timeout)


# ---------------------------------------------------------------------------------------
# a. Journaling throughput at 64 connections.

def throughput_rep(label, binary, rep, pg, workdir, args):
    fresh_database(pg, binary)
    spool = tempfile.mkdtemp(prefix="spool-", dir=workdir)
    server = start_callhook(binary, pg, spool, workdir, args.store_flag)
    sampler = None
    try:
        bench.run_wrk(server.port, args.conns, 2, f"jw{rep}{label}", workdir)  # warm, database up
        pg.crash()
        if not wait_down(server.port):
            raise RuntimeError("callhook's /readyz did not report the database down within 30 s")
        sampler = RssSampler(server.proc.pid)
        sampler.phase = "journal"
        sampler.start()
        run_id = f"j{rep}{label}"
        c0 = bench.cpu_seconds([server.proc.pid])
        res = bench.run_wrk(server.port, args.conns, args.duration, run_id, workdir)
        c1 = bench.cpu_seconds([server.proc.pid])
        rss_after, hwm = bench.memory(server.proc.pid)
        ready = readyz(server.port)
        apparent, allocated, files = dir_size(spool)
        sampler.phase = "replay"
        pg.start()
        up_at = time.time()
        drained_at = wait_drained(server.port, args.drain_timeout)
        sampler.phase = "after"
        replay_hwm = bench.memory(server.proc.pid)[1]
        seconds = res["duration_us"] / 1e6
        acked = sum(t["acked"] for t in res["threads"])
        ok_answers = sum(t["ok_answers"] for t in res["threads"])
        if ok_answers != acked:
            raise RuntimeError(f"{ok_answers} answers with ErrorCode 0 but {acked} matched by X-Request-Id")
        rec = {
            "kind": "throughput", "label": label, "bin": binary, "rep": rep, "conns": args.conns,
            "seconds": seconds, "rps": acked / seconds, "responses": res["requests"], "errors": res["errors"],
            "not_acknowledged_answers": res["requests"] - ok_answers,
            "p50_ms": res["p50_us"] / 1000, "p90_ms": res["p90_us"] / 1000, "p99_ms": res["p99_us"] / 1000,
            "max_ms": res["max_us"] / 1000,
            "callhook_cpu_s": c1 - c0, "wrk_cpu_s": res["wrk_cpu_s"],
            "rss_after_mib": rss_after, "rss_peak_mib": hwm, "journal_rss_sampled_peak_mib": sampler.peak("journal"),
            "store_events": store_events(ready), "store_bytes_reported": store_bytes(ready),
            "store_dir_bytes": apparent, "store_dir_allocated_bytes": allocated, "store_files": files,
            "drain_s": drained_at - up_at if drained_at else None,
            "replay_rss_sampled_peak_mib": sampler.peak("replay"), "rss_peak_after_replay_mib": replay_hwm,
        }
        if rec["drain_s"]:
            rec["drain_events_per_s"] = (rec["store_events"] or 0) / rec["drain_s"]
        rec.update(bench.verify("pg", pg, res, run_id))
        rec["drained"] = drained_at is not None
        return rec
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        server.stop()
        if not pg_running(pg):
            pg.start()


def pg_running(pg):
    return subprocess.run([os.path.join(pg.bin, "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)],
                          capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------
# b. A long outage at a steady rate, from an asyncio sender.

def body_for(event, prefix):
    call = f"{prefix}-{event}"
    return (f'{{"UserId":"user-{event}","RoomId":"room-{event}","TotalNum":2,"MediaType":"audio",'
            f'"CallType":"single","CallId":"{call}","Role":"caller","CallResult":"{RESULTS[event % 10]}",'
            f'"EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,"EndTs":1704856885}}').encode()


class HttpPool:
    """HTTP/1.1 keep-alive connections to callhook, at most `size` requests in flight.

    An idle connection is reused only within IDLE_REUSE_S of its last answer: callhook (hyper)
    closes a keep-alive connection on which no request header arrives within its
    header_read_timeout (5 s), and a request written into such a closing connection fails
    without reaching it, a failed attempt the sender would then retry."""

    IDLE_REUSE_S = 3.0

    def __init__(self, port, size, timeout):
        self.port, self.timeout = port, timeout
        self.idle = []  # (reader, writer, last answer at), most recent last
        self.sem = asyncio.Semaphore(size)
        self.path = (f"/?sdkappid={bench.SDKAPPID}&command=call_end&contenttype=json"
                     f"&clientip=10.1.2.3&optplatform=Android")
        self.opened = 0

    async def post(self, body):
        """(status, body bytes); raises on a socket error or timeout."""
        async with self.sem:
            conn = None
            while self.idle and conn is None:
                reader, writer, used = self.idle.pop()
                if time.monotonic() - used < self.IDLE_REUSE_S:
                    conn = (reader, writer)
                else:
                    writer.close()
            # The rest of the idle list is older still.
            if conn is not None and self.idle and time.monotonic() - self.idle[0][2] >= self.IDLE_REUSE_S:
                stale = [c for c in self.idle if time.monotonic() - c[2] >= self.IDLE_REUSE_S]
                self.idle = [c for c in self.idle if time.monotonic() - c[2] < self.IDLE_REUSE_S]
                for c in stale:
                    c[1].close()
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), self.timeout)
                self.opened += 1
            reader, writer = conn
            head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            try:
                writer.write(head + body)
                status, keep, answer = await asyncio.wait_for(self.read_response(reader), self.timeout)
            except BaseException:
                writer.close()
                raise
            if keep:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return status, answer

    @staticmethod
    async def read_response(reader):
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        status = int(line.split()[1])
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                body += await reader.readexactly(size)
                await reader.readline()
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers.get("connection", "").lower() != "close", body

    def close(self):
        for _, w, _ in self.idle:
            w.close()
        self.idle.clear()


class Sender:
    """New deliveries at `rate` a second; delivery n is of event n, except every tenth
    (n % 10 == 9), which repeats the delivery of event n - 5 (a sender's duplicate). Each
    delivery is retried on Tencent's schedule until acknowledged (HTTP 200, ErrorCode 0)."""

    def __init__(self, pool, rate, prefix):
        self.pool, self.rate, self.prefix = pool, rate, prefix
        self.deliveries = []  # per delivery: [event, attempts, acked, from the store, first sent at (s), answers]
        self.attempts_sent = 0
        self.answers = {}  # ErrorMessage (or error) -> count, for the report
        self.late = 0.0  # worst lag of a delivery's first attempt behind its schedule, s
        self.tasks = set()
        self.started_at = self.stopped_at = None

    async def deliver(self, n):
        event = n - 5 if n % 10 == 9 else n
        d = [event, 0, False, False, round(time.time() - self.wall_start, 3), []]
        self.deliveries.append(d)
        body = body_for(event, self.prefix)
        for wait in [0] + SCHEDULE:
            if wait:
                await asyncio.sleep(wait)
            d[1] += 1
            self.attempts_sent += 1
            try:
                status, answer = await self.pool.post(body)
                reply = json.loads(answer or b"{}")
                message = reply.get("ErrorMessage", "")
                ok = status == 200 and reply.get("ErrorCode") == 0
            except (OSError, asyncio.TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
                ok, message = False, type(e).__name__
            key = message if ok else f"refused: {message}"[:80]
            self.answers[key] = self.answers.get(key, 0) + 1
            d[5].append(key)
            if ok:
                d[2] = True
                d[3] = "spool" in message or "journal" in message
                return

    async def run(self, until):
        """Sends until until() is true (checked before each new delivery)."""
        loop = asyncio.get_running_loop()
        self.started_at = start = loop.time()
        self.wall_start = time.time()
        n = 0
        while True:
            now = loop.time()
            if until():
                break
            due = start + n / self.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            self.late = max(self.late, now - due)
            t = asyncio.ensure_future(self.deliver(n))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
            n += 1
        self.stopped_at = loop.time()
        log(f"sender: {n} deliveries in {self.stopped_at - start:.1f} s; waiting for their retries")
        while self.tasks:
            await asyncio.gather(*list(self.tasks))
        return n


def check_outage(pg, sender, marks):
    """lost / doubled / overcounted, against call_events; with up to 20 examples of each
    (every delivery of the event: when it was first sent, relative to the sender's start
    and to the outage, and the answers to its attempts)."""
    per_event = {}  # event -> [acked deliveries, attempts]
    for event, attempts, acked, *_ in sender.deliveries:
        e = per_event.setdefault(event, [0, 0])
        e[0] += acked
        e[1] += attempts
    out = pg.psql(f"SELECT call_id, deliveries FROM call_events WHERE call_id LIKE '{sender.prefix}-%'", db="bench")
    stored, doubled = {}, 0
    for line in out.splitlines():
        call_id, deliveries = line.split("\t")
        event = int(call_id.rsplit("-", 1)[1])
        if event in stored:
            doubled += 1
        stored[event] = stored.get(event, 0) + int(deliveries)
    lost = [e for e, (acked, _) in per_event.items() if acked and stored.get(e, 0) < acked]
    overcounted = [e for e, n in stored.items() if n > per_event.get(e, [0, 0])[1]]

    def examples(events):
        events = set(sorted(events)[:20])
        out = {}
        for event, attempts, acked, spooled, sent_at, answers in sender.deliveries:
            if event in events:
                out.setdefault(event, {"stored_deliveries": stored.get(event, 0), "deliveries": []})
                out[event]["deliveries"].append({
                    "sent_at_s": sent_at,
                    "after_outage_start_s": round(sender.wall_start + sent_at - marks["down"], 3) if "down" in marks else None,
                    "after_outage_end_s": round(sender.wall_start + sent_at - marks["up"], 3) if "up" in marks else None,
                    "attempts": attempts, "acked": acked, "answers": answers})
        return out

    return {
        "lost_examples": examples(lost), "overcounted_examples": examples(overcounted),
        "events": len(per_event), "rows": len(out.splitlines()),
        "stored_deliveries": sum(stored.values()),
        "acknowledged_deliveries": sum(1 for d in sender.deliveries if d[2]),
        "lost": len(lost), "doubled": doubled, "overcounted": len(overcounted),
    }


def outage_run(binary, pg, workdir, args):
    fresh_database(pg, binary)
    spool = tempfile.mkdtemp(prefix="spool-", dir=workdir)
    server = start_callhook(binary, pg, spool, workdir, args.store_flag)
    sampler = RssSampler(server.proc.pid)
    sampler.phase = "before"
    sampler.start()
    marks = {}
    store = {}
    watch = {"stop": False, "max_events": 0}

    def watcher():
        # Polls /readyz through the run: the most events the store held, and the first moment
        # after PostgreSQL's return at which the database is up and the store empty.
        while not watch["stop"]:
            ready = readyz(server.port)
            events = store_events(ready)
            if events is not None:
                watch["max_events"] = max(watch["max_events"], events)
            if "up" in marks and "drained" not in marks and ready.get("database") == "up" and events == 0:
                marks["drained"] = time.time()
                sampler.phase = "after"
            time.sleep(0.1)

    async def chaos(loop):
        await asyncio.sleep(args.before)
        await loop.run_in_executor(None, pg.crash)
        marks["down"] = time.time()
        sampler.phase = "outage"
        log(f"PostgreSQL stopped; outage of {args.outage:.0f} s")
        await asyncio.sleep(args.outage)
        ready = await loop.run_in_executor(None, readyz, server.port)
        store["events"], store["bytes_reported"] = store_events(ready), store_bytes(ready)
        store["dir_bytes"], store["dir_allocated_bytes"], store["files"] = dir_size(spool)
        store["ready_message"] = ready.get("ErrorMessage")
        sampler.phase = "replay"
        await loop.run_in_executor(None, pg.start)
        marks["up"] = time.time()
        log(f"PostgreSQL started again; the store held {store['events']} events, "
            f"{store['dir_bytes'] / 2**20:.1f} MiB on disk")

    async def main():
        loop = asyncio.get_running_loop()
        pool = HttpPool(server.port, args.max_conns, timeout=5.0)
        sender = Sender(pool, args.rate, f"lo{time.strftime('%H%M%S')}")
        c = asyncio.ensure_future(chaos(loop))
        # The load goes on for --after seconds once PostgreSQL is back (however long its
        # crash recovery and start took).
        n = await sender.run(lambda: ("up" in marks and time.time() - marks["up"] >= args.after)
                             or (c.done() and c.exception() is not None))
        await c
        pool.close()
        return sender, n

    wt = threading.Thread(target=watcher, daemon=True)
    wt.start()
    try:
        c0 = bench.cpu_seconds([server.proc.pid])
        t0 = time.time()
        sender, n = asyncio.run(main())
        t1 = time.time()
        c1 = bench.cpu_seconds([server.proc.pid])
        if "drained" not in marks:
            wait_for(lambda: "drained" in marks, args.drain_timeout, every=0.2)
        watch["stop"] = True
        wt.join()
        sampler.stop()
        check = check_outage(pg, sender, marks)
        send_s = sender.stopped_at - sender.started_at
        acked = [d for d in sender.deliveries if d[2]]
        rec = {
            "kind": "outage", "bin": binary, "rate_target": args.rate, "before_s": args.before,
            "outage_planned_s": args.outage, "outage_s": marks["up"] - marks["down"], "after_s": args.after,
            "deliveries": n, "achieved_rate": n / send_s, "attempts": sender.attempts_sent,
            "attempt_rate": sender.attempts_sent / (t1 - t0), "sender_worst_lag_s": sender.late,
            "connections_opened": sender.pool.opened,
            "acknowledged": len(acked), "acknowledged_from_store": sum(1 for d in acked if d[3]),
            "dropped_by_sender": n - len(acked), "retried": sum(1 for d in sender.deliveries if d[1] > 1),
            "answers": sender.answers,
            "callhook_cpu_s": c1 - c0,
            "rss_peak_before_mib": sampler.peak("before"),
            "rss_peak_outage_mib": sampler.peak("outage"), "hwm_end_outage_mib": sampler.hwm_at_end("outage"),
            "rss_peak_replay_mib": sampler.peak("replay"), "hwm_end_replay_mib": sampler.hwm_at_end("replay"),
            "rss_end_mib": sampler.samples[-1][2] if sampler.samples else None,
            "store_events_end_outage": store.get("events"), "store_bytes_reported_end_outage": store.get("bytes_reported"),
            "store_dir_bytes_end_outage": store.get("dir_bytes"),
            "store_dir_allocated_bytes_end_outage": store.get("dir_allocated_bytes"),
            "store_files_end_outage": store.get("files"), "store_max_events": watch["max_events"],
            "drain_s": marks["drained"] - marks["up"] if "drained" in marks else None,
            "drained": "drained" in marks,
            "rss_samples": [(round(t - t0, 1), ph, round(r, 1)) for t, ph, r, _ in sampler.samples],
            "outage_started_at_s": marks["down"] - sender.wall_start, "outage_ended_at_s": marks["up"] - sender.wall_start,
        }
        if rec["drain_s"]:
            rec["drain_events_per_s"] = (store.get("events") or 0) / rec["drain_s"]
        rec.update(check)
        return rec
    finally:
        watch["stop"] = True
        if sampler.is_alive():
            sampler.stop()
        server.stop()
        if not pg_running(pg):
            pg.start()


# ---------------------------------------------------------------------------------------
# c. Full load into the store, then callhook killed and started again.

def restart_run(binary, pg, workdir, args):
    fresh_database(pg, binary)
    spool = tempfile.mkdtemp(prefix="spool-", dir=workdir)
    server = start_callhook(binary, pg, spool, workdir, args.store_flag)
    rec = {"kind": "restart", "bin": binary, "outage_under_load_s": args.restart_outage}
    try:
        bench.run_wrk(server.port, args.conns, 2, "jrwarm", workdir)
        pg.crash()
        down_at = time.time()
        if not wait_down(server.port):
            raise RuntimeError("callhook's /readyz did not report the database down within 30 s")
        run_id = "jrestart"
        res = bench.run_wrk(server.port, args.conns, args.restart_outage, run_id, workdir)
        rss, hwm = bench.memory(server.proc.pid)
        ready = readyz(server.port)
        rec.update({
            "rps": sum(t["acked"] for t in res["threads"]) / (res["duration_us"] / 1e6),
            "journal_rss_mib": rss, "journal_rss_peak_mib": hwm,
            "store_events": store_events(ready), "store_dir_bytes": dir_size(spool)[0],
        })
        kill(server)
        server = None
        try:
            server = start_callhook(binary, pg, spool, workdir, args.store_flag, timeout=args.restart_timeout)
            rec["started_while_database_down"] = True
        except RuntimeError:
            logs = sorted((os.path.join(workdir, f) for f in os.listdir(workdir) if f.startswith("callhook-")),
                          key=os.path.getmtime)
            with open(logs[-1], errors="replace") as f:
                tail = f.read().strip().splitlines()[-1:] or [""]
            rec["started_while_database_down"] = False
            rec["start_failure"] = tail[0][-300:]
            log(f"callhook did not start while PostgreSQL was down: {rec['start_failure']}")
        sampler = None
        if server:
            sampler = RssSampler(server.proc.pid)
            sampler.phase = "outage"
            sampler.start()
            time.sleep(2)
        rec["outage_s"] = time.time() - down_at
        pg.start()
        up_at = time.time()
        if not server:
            server = start_callhook(binary, pg, spool, workdir, args.store_flag, timeout=args.restart_timeout)
            sampler = RssSampler(server.proc.pid)
            sampler.start()
        sampler.phase = "replay"
        drained_at = wait_drained(server.port, args.drain_timeout)
        sampler.stop()
        rec.update({
            "drain_s": drained_at - up_at if drained_at else None, "drained": drained_at is not None,
            "replay_rss_sampled_peak_mib": sampler.peak("replay"),
            "replay_rss_peak_mib": bench.memory(server.proc.pid)[1],
            "rss_after_replay_mib": bench.memory(server.proc.pid)[0],
        })
        if rec["drain_s"]:
            rec["drain_events_per_s"] = (rec["store_events"] or 0) / rec["drain_s"]
        rec.update(bench.verify("pg", pg, res, run_id))
        return rec
    finally:
        if server:
            server.stop()
        if not pg_running(pg):
            pg.start()


# ---------------------------------------------------------------------------------------
# d. The replay into a database that stays slow after it returns.

def post_events(port, prefix, n, workers=8):
    """Posts n unique status callbacks; returns how many were acknowledged (ErrorCode 0)."""
    from concurrent.futures import ThreadPoolExecutor
    url = (f"http://127.0.0.1:{port}/?sdkappid={bench.SDKAPPID}&command=call_end&contenttype=json"
           f"&clientip=10.1.2.3&optplatform=Android")

    def one(i):
        req = urllib.request.Request(url, data=body_for(i, prefix), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read()).get("ErrorCode") == 0
        except (urllib.error.URLError, OSError, ValueError):
            return False

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, range(n)))


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def slow_drain_rep(label, binary, rep, pg, workdir, args):
    """--slow-events callbacks journaled while PostgreSQL is down; it comes back with every
    row costing --slow-ms (a trigger's pg_sleep). Times the drain and counts the replay
    steps that passed their deadline."""
    fresh_database(pg, binary)
    seconds = args.slow_ms / 1000
    pg.psql(f"CREATE FUNCTION bench_slow_row() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$", db=pg.dbname)
    pg.psql("CREATE TRIGGER bench_slow BEFORE INSERT ON call_events FOR EACH ROW "
            "EXECUTE FUNCTION bench_slow_row()", db=pg.dbname)
    spool = tempfile.mkdtemp(prefix="spool-", dir=workdir)
    server = start_callhook(binary, pg, spool, workdir, args.store_flag)
    prefix = f"sd{rep}{label}"
    try:
        pg.crash()
        if not wait_down(server.port):
            raise RuntimeError("callhook's /readyz did not report the database down within 30 s")
        acked = post_events(server.port, prefix, args.slow_events)
        journaled = store_events(readyz(server.port))
        timeouts_before = metric(server.port, "callhook_journal_step_timeouts_total")
        pg.start()
        up_at = time.time()
        drained_at = wait_drained(server.port, args.drain_timeout)
        rows, deliveries = pg.psql(
            f"SELECT count(*), coalesce(sum(deliveries), 0) FROM call_events WHERE call_id LIKE '{prefix}-%'",
            db=pg.dbname).strip().split("\t")
        return {
            "kind": "slow-drain", "label": label, "bin": binary, "rep": rep, "slow_ms": args.slow_ms,
            "acked": acked, "journaled": journaled, "drained": drained_at is not None,
            "drain_s": drained_at - up_at if drained_at else None,
            "step_timeouts": metric(server.port, "callhook_journal_step_timeouts_total") - timeouts_before,
            "rows": int(rows), "deliveries": int(deliveries),
            "lost": max(acked - int(rows), 0), "doubled": 0, "overcounted": int(deliveries) - int(rows),
        }
    finally:
        server.stop()
        if not pg_running(pg):
            pg.start()


# ---------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def summarize(records):
    lines = []
    tp = [r for r in records if r["kind"] == "throughput"]
    if tp:
        labels = list(dict.fromkeys(r["label"] for r in tp))
        lines += ["Journaling throughput, PostgreSQL down, 64 connections (median of reps; range in brackets):", "",
                  "| build | reps | req/s | range | p50 ms | p99 ms | callhook CPU | CPU µs / request | RSS after / peak MiB "
                  "| store at the end: events, MiB on disk | drain s | drain events/s | VmHWM after the replay MiB | lost | doubled |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label in labels:
            rs = [r for r in tp if r["label"] == label]
            rps = [r["rps"] for r in rs]
            lines.append(
                f"| {label} | {len(rs)} | {med(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {med([r['p50_ms'] for r in rs]):.2f} | "
                f"{med([r['p99_ms'] for r in rs]):.2f} | {med([r['callhook_cpu_s'] / r['seconds'] for r in rs]) * 100:.0f}% | "
                f"{med([r['callhook_cpu_s'] / (r['rps'] * r['seconds']) * 1e6 for r in rs]):.0f} | "
                f"{med([r['rss_after_mib'] for r in rs]):.1f} / {max(r['rss_peak_mib'] for r in rs):.1f} | "
                f"{med([r['store_events'] for r in rs]):,.0f}, {med([r['store_dir_bytes'] for r in rs]) / 2**20:.1f} | "
                f"{med([r['drain_s'] for r in rs]):.1f} | {med([r.get('drain_events_per_s') for r in rs]):,.0f} | "
                f"{max((r['rss_peak_after_replay_mib'] for r in rs), default=0):.1f} | "
                f"{sum(r['lost'] for r in rs)} | {sum(r['doubled'] for r in rs)} |")
        if len(labels) > 1:
            lines += ["", "| throughput ratio within each rep | median | per rep |", "|---|---|---|"]
            for other in labels[1:]:
                per = []
                for rep in sorted({r["rep"] for r in tp}):
                    a = [r["rps"] for r in tp if r["rep"] == rep and r["label"] == other]
                    b = [r["rps"] for r in tp if r["rep"] == rep and r["label"] == labels[0]]
                    if a and b:
                        per.append(a[0] / b[0])
                lines.append(f"| {other} / {labels[0]} | {med(per):.2f} | {', '.join(f'{x:.2f}' for x in per)} |")
        lines.append("")
    for r in (r for r in records if r["kind"] == "outage"):
        mib = lambda v: f"{v:.1f}" if v is not None else "–"
        lines += [f"Long outage ({r.get('label', '')}): PostgreSQL down for {r['outage_s']:.0f} s (from the end of its "
                  f"immediate stop to the end of its start, crash recovery included) at a target of "
                  f"{r['rate_target']:,.0f} new deliveries/s:", "",
                  "| measure | value |", "|---|---|",
                  f"| deliveries sent (achieved rate) | {r['deliveries']:,} ({r['achieved_rate']:,.0f}/s; worst start lag "
                  f"{r['sender_worst_lag_s'] * 1000:.0f} ms) |",
                  f"| attempts (retries included) | {r['attempts']:,} |",
                  f"| acknowledged (of them from the outage store) | {r['acknowledged']:,} ({r['acknowledged_from_store']:,}) |",
                  f"| dropped by the sender after its retries | {r['dropped_by_sender']:,} |",
                  f"| peak RSS before / during the outage / during replay (sampled every 0.5 s) | "
                  f"{mib(r['rss_peak_before_mib'])} / {mib(r['rss_peak_outage_mib'])} / {mib(r['rss_peak_replay_mib'])} MiB |",
                  f"| VmHWM at the end of the outage / of the replay | {mib(r['hwm_end_outage_mib'])} / "
                  f"{mib(r['hwm_end_replay_mib'])} MiB |",
                  f"| store at the end of the outage | {r['store_events_end_outage']:,} events, "
                  f"{r['store_dir_bytes_end_outage'] / 2**20:.1f} MiB in {r['store_files_end_outage']} files "
                  f"({r['store_dir_allocated_bytes_end_outage'] / 2**20:.1f} MiB allocated) |",
                  f"| drain after PostgreSQL returned | "
                  + (f"{r['drain_s']:.1f} s, {r.get('drain_events_per_s', 0):,.0f} events/s |" if r["drain_s"] else "did not drain |"),
                  f"| callhook CPU over the run | {r['callhook_cpu_s']:.0f} s |",
                  f"| rows / events / stored deliveries | {r['rows']:,} / {r['events']:,} / {r['stored_deliveries']:,} |",
                  f"| lost / doubled / overcounted | {r['lost']} / {r['doubled']} / {r['overcounted']} |"]
        for what in ("lost", "overcounted"):
            ex = r.get(f"{what}_examples") or {}
            if ex:
                starts = [d["after_outage_start_s"] for e in ex.values() for d in e["deliveries"]]
                ends = [d["after_outage_end_s"] for e in ex.values() for d in e["deliveries"]]
                lines.append(f"| {what}: first sent, relative to the outage's start / end (first {len(ex)} events) | "
                             f"{min(starts):+.2f}…{max(starts):+.2f} s / {min(ends):+.2f}…{max(ends):+.2f} s |")
        lines.append("")
    for r in (r for r in records if r["kind"] == "restart"):
        lines += [f"Restart after a {r['outage_under_load_s']:.0f} s outage under full load (64 connections):", "",
                  "| measure | value |", "|---|---|",
                  f"| journaled | {r['store_events']:,} events at {r['rps']:,.0f} req/s, "
                  f"{r['store_dir_bytes'] / 2**20:.1f} MiB on disk |",
                  f"| RSS while journaling, after / peak | {r['journal_rss_mib']:.1f} / {r['journal_rss_peak_mib']:.1f} MiB |",
                  "| restarted while PostgreSQL was down | "
                  + ("yes |" if r["started_while_database_down"] else f"no: `{r.get('start_failure', '')}` |"),
                  f"| replay after the restart: peak RSS (VmHWM) / sampled | {r['replay_rss_peak_mib']:.1f} / "
                  f"{r['replay_rss_sampled_peak_mib'] or 0:.1f} MiB |",
                  f"| drain | " + (f"{r['drain_s']:.1f} s, {r.get('drain_events_per_s', 0):,.0f} events/s |"
                                   if r["drain_s"] else "did not drain |"),
                  f"| lost / doubled | {r['lost']} / {r['doubled']} |", ""]
    slow = [r for r in records if r["kind"] == "slow-drain"]
    if slow:
        r0 = slow[0]
        lines += [f"The replay into a database that stays slow ({r0['slow_ms']:g} ms per row), "
                  f"{r0['acked']:,} journaled events (median of reps; range in brackets):", "",
                  "| build | reps | drain s | range | events/s | steps past their deadline | lost / overcounted |",
                  "|---|---|---|---|---|---|---|"]
        for label in dict.fromkeys(r["label"] for r in slow):
            rs = [r for r in slow if r["label"] == label]
            drains = [r["drain_s"] for r in rs if r["drain_s"]]
            lines.append(f"| {label} | {len(rs)} | {med(drains):.1f} | {min(drains, default=0):.1f}–"
                         f"{max(drains, default=0):.1f} | {med([r['acked'] / r['drain_s'] for r in rs if r['drain_s']]):.1f} "
                         f"| {med([r['step_timeouts'] for r in rs]):.0f} | {sum(r['lost'] for r in rs)} / "
                         f"{sum(r['overcounted'] for r in rs)} |")
        lines.append("")
    return "\n".join(lines)


def failures(records):
    bad = []
    for r in records:
        what = f"{r['kind']} {r.get('label', '')} {r.get('rep', '')}".strip()
        if r.get("lost") or r.get("doubled") or r.get("overcounted"):
            bad.append(f"{what}: lost {r.get('lost')} doubled {r.get('doubled')} overcounted {r.get('overcounted', 0)}")
        if not r.get("drained"):
            bad.append(f"{what}: the outage store did not drain")
        if r.get("dropped_by_sender"):
            bad.append(f"{what}: {r['dropped_by_sender']} deliveries dropped by the sender")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", default=[],
                    help="callhook binary, as PATH or LABEL=PATH; repeat to interleave builds "
                         "(default: this tree, built in release mode)")
    ap.add_argument("--only", default="throughput,outage,restart",
                    help="which of throughput, outage, restart, slow-drain to run (comma-separated; "
                         "slow-drain only when named)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=20, help="seconds of wrk per throughput rep")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rate", type=float, default=1000, help="new deliveries per second in the outage run")
    ap.add_argument("--outage", type=float, default=300, help="seconds PostgreSQL stays down in the outage run")
    ap.add_argument("--before", type=float, default=10, help="seconds of load before the outage")
    ap.add_argument("--after", type=float, default=30, help="seconds of load after PostgreSQL returns")
    ap.add_argument("--max-conns", type=int, default=256, help="the sender's most concurrent requests")
    ap.add_argument("--restart-outage", type=int, default=40,
                    help="seconds of full load into the store before callhook is killed and restarted")
    ap.add_argument("--restart-timeout", type=float, default=60, help="seconds a restarted callhook has to serve")
    ap.add_argument("--drain-timeout", type=float, default=600)
    ap.add_argument("--slow-events", type=int, default=2000, help="callbacks journaled in the slow-drain run")
    ap.add_argument("--slow-ms", type=float, default=20, help="what each row costs PostgreSQL in the slow-drain run")
    ap.add_argument("--store-flag", default="--spool-dir", help="callhook's flag for the outage store's directory")
    ap.add_argument("--summary", help="only summarise an earlier journal-*.jsonl file")
    args = ap.parse_args()
    if args.summary:
        with open(args.summary) as f:
            records = [json.loads(l) for l in f if l.strip()]
        print(summarize(records))
        return
    only = set(args.only.split(","))
    bins = []
    for spec in args.bin or []:
        label, _, path = spec.rpartition("=")
        bins.append((label or f"bin{len(bins) + 1}", os.path.abspath(path)))
    bench.ensure_wrk()
    if not bins:
        bins = [("this-tree", bench.build()[0])]
    pg = bench.Postgres()
    workdir = tempfile.mkdtemp(prefix="callhook-journal-")
    os.makedirs(os.path.join(bench.ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(bench.ROOT, "bench/results", f"journal-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    records = []

    def keep(rec):
        rec["loadavg_1m"] = os.getloadavg()[0]  # the machine is shared
        records.append(rec)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    try:
        if "throughput" in only:
            for rep in range(1, args.reps + 1):
                for label, binary in bins:
                    rec = throughput_rep(label, binary, rep, pg, workdir, args)
                    keep(rec)
                    log(f"throughput rep {rep} {label}: {rec['rps']:,.0f} req/s p50 {rec['p50_ms']:.2f} p99 "
                        f"{rec['p99_ms']:.2f} ms, rss {rec['rss_after_mib']:.1f}/{rec['rss_peak_mib']:.1f} MiB, "
                        f"{rec['store_events']} events {rec['store_dir_bytes'] / 2**20:.1f} MiB, drained in "
                        f"{rec['drain_s'] or float('nan'):.1f} s (replay peak {rec['rss_peak_after_replay_mib']:.1f} MiB), "
                        f"lost {rec['lost']} doubled {rec['doubled']}")
        if "outage" in only:
            for label, binary in bins:
                rec = outage_run(binary, pg, workdir, args)
                rec["label"] = label
                keep(rec)
                log(f"outage {label}: lost {rec['lost']} doubled {rec['doubled']} overcounted {rec['overcounted']}")
        if "slow-drain" in only:
            for rep in range(1, args.reps + 1):
                for label, binary in bins:
                    rec = slow_drain_rep(label, binary, rep, pg, workdir, args)
                    keep(rec)
                    log(f"slow drain rep {rep} {label}: {rec['acked']} acknowledged, drained in "
                        f"{rec['drain_s'] or float('nan'):.1f} s, {rec['step_timeouts']:.0f} steps past their "
                        f"deadline, lost {rec['lost']} overcounted {rec['overcounted']}")
        if "restart" in only:
            for label, binary in bins:
                rec = restart_run(binary, pg, workdir, args)
                rec["label"] = label
                keep(rec)
                log(f"restart {label}: replay peak {rec['replay_rss_peak_mib']:.1f} MiB, lost {rec['lost']} "
                    f"doubled {rec['doubled']}")
    finally:
        pg.stop()
        bad = failures(records)
        if bad:
            log(f"kept {workdir} (callhook's logs) for the failures below")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"results: {os.path.relpath(path, bench.ROOT)}\n")
    print(summarize(records))
    if bad:
        sys.exit("JOURNAL BENCHMARK FAILED: " + "; ".join(bad))


if __name__ == "__main__":
    main()
