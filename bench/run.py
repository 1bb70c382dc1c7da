#!/usr/bin/env python3
"""callhook's throughput and latency benchmark.

Measures, in one run, interleaved, with several repetitions each:
  pg-default     callhook on PostgreSQL with default settings (group commit)
  pg-batch1      callhook on PostgreSQL with --max-batch 1 (one INSERT per request)
  noop           the HTTP-only ceiling: the same router, parser, logging and queue, with a
                 storage sink that writes nothing (examples/noop_receiver.rs)
  sqlite-default callhook on SQLite with default settings
  sqlite-batch1  callhook on SQLite with --max-batch 1
  pg-async       measurement only, NOT durable: pg-default with synchronous_commit=off on
                 callhook's connections (through the URL's `options`), so commits do not wait
                 for the WAL flush; measures what that wait costs the closed loop
  pg-w4-b256 …   sweep modes: --writers / --max-batch / --queue-depth (w, b, q)
  pg-fwd         pg-default with one [[forward]] destination taking every event, delivered to a
                 `callhook listen` receiver on this machine while wrk runs (issue 26)
  pg-fwd-down    the same destination with nothing listening: the outbox's write cost alone
  sqlite-fwd, sqlite-fwd-down   the same two on SQLite
  naive-rust     the reference receiver of ../shared/bench-peers: axum + sqlx, one autocommit
                 INSERT … ON CONFLICT DO NOTHING per request on a pool of 16 (POOL_SIZE=16,
                 TEST_BEFORE_ACQUIRE=0), in its own database made from its sql/schema.sql
  ceiling-http   the reference HTTP-only ceiling of ../shared/bench-peers: query check, typed
                 JSON parse and the reply, no database
each at 64 connections (throughput) and 4 connections (latency), with wrk (2 threads) driving realistic
status callbacks (unique CallIds, ~10% repeated deliveries). After every run it checks that
the database holds exactly the acknowledged deliveries (nothing lost, nothing doubled), and
it records peak/after-run RSS and the CPU split between callhook, PostgreSQL and wrk.

Usage:  python3 bench/run.py [--reps 3] [--duration 10] [--modes pg-default,noop,...]
It installs wrk if missing (apt-get), starts its own PostgreSQL from
/usr/lib/postgresql/*/bin, builds callhook in release mode (and, for the two reference
modes, the receivers of --peers into target/bench-peers), and writes
bench/results/<timestamp>.jsonl plus a Markdown summary on stdout.

The reference receivers do not echo X-Request-Id, so for them the script cannot tell which
requests were acknowledged, only how many: naive-rust's check is by count (see verify_peer).
"""

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDKAPPID = "1400000001"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ["pg-default", "pg-batch1", "noop", "sqlite-default", "sqlite-batch1"]
# Modes that are not in the default set: run them by name.
EXTRA_MODES = ["pg-async", "pg-fwd", "pg-fwd-down", "sqlite-fwd", "sqlite-fwd-down"]
# The destination of the -fwd modes, and its secret.
FORWARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PEER_MODES = ["naive-rust", "ceiling-http"]
PEERS_DIR = os.environ.get("CALLHOOK_BENCH_PEERS", os.path.join(os.path.dirname(ROOT), "shared", "bench-peers"))
NAIVE_DB = "naive"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    log("installing wrk (apt-get install -y wrk)")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    sh(prefix + ["apt-get", "install", "-y", "wrk"], stdout=subprocess.DEVNULL)


def build():
    log("building callhook and the no-op receiver in release mode")
    sh(["cargo", "build", "--release", "--quiet", "--bin", "callhook", "--example", "noop_receiver"], cwd=ROOT)
    return (os.path.join(ROOT, "target/release/callhook"), os.path.join(ROOT, "target/release/examples/noop_receiver"))


def build_peers(peers_dir):
    """The two reference receivers, built from their own workspace (not copied into this
    repository) into target/bench-peers."""
    manifest = os.path.join(peers_dir, "Cargo.toml")
    if not os.path.exists(manifest):
        sys.exit(f"no {manifest}: pass --peers DIR (the bench-peers workspace) or set CALLHOOK_BENCH_PEERS")
    target = os.path.join(ROOT, "target/bench-peers")
    log(f"building the reference receivers of {peers_dir} into {os.path.relpath(target, ROOT)}")
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", manifest, "--target-dir", target])
    return {m: os.path.join(target, "release", m) for m in PEER_MODES}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    if os.environ.get("CALLHOOK_PG_BIN"):
        return os.environ["CALLHOOK_PG_BIN"]
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not dirs:
        sys.exit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (set CALLHOOK_PG_BIN)")
    return dirs[-1]


class Postgres:
    """A throwaway cluster with PostgreSQL's default durability settings, on loopback TCP."""

    def __init__(self, warm_wal=True):
        self.bin = pg_bin()
        self.dir = tempfile.mkdtemp(prefix="callhook-bench-pg-", dir="/tmp")
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
            sh(["chown", "-R", self.user, self.dir])
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        self.start()
        self.psql("CREATE DATABASE bench")
        self.use("bench")
        if warm_wal:
            self.warm_wal()

    def start(self):
        """Starts the server (again, after crash(): crash recovery runs first)."""
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir}"
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-o", opts, "-w", "start")

    def crash(self):
        """An immediate shutdown: every backend killed, no checkpoint, as in a crash."""
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def use(self, db):
        """Makes `db` the database callhook is started on and checked in (ab.py gives each
        variant its own, so that builds of different schema versions can be compared)."""
        self.dbname = db
        self.url = self.url_for(db)

    def url_for(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def warm_wal(self, segments=64):
        """Leaves ~1 GB of recycled WAL segments, as on a server that has been running.

        A fresh cluster has no WAL segments to reuse: each time the WAL fills its 16 MB
        segment, the committing backend creates the next one and zero-fills it
        (wal_init_zero), which stalls every commit in flight for 25-50 ms on this machine,
        about once a second under load, and until the first checkpoint completes several
        minutes later. A running server renames old segments instead. Switching segments
        64 times and checkpointing leaves 64 to reuse; the settings stay the defaults.
        """
        self.psql("CREATE TABLE wal_warmup (x int)", db="bench")
        self.psql(f"DO $$ BEGIN FOR i IN 1..{segments} LOOP INSERT INTO wal_warmup VALUES (i); "
                  "PERFORM pg_switch_wal(); END LOOP; END $$", db="bench")
        self.psql("DROP TABLE wal_warmup", db="bench")
        self.psql("CHECKPOINT")

    def run(self, prog, *args):
        cmd = [os.path.join(self.bin, prog), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        sh(cmd, stdout=subprocess.DEVNULL)

    def psql(self, sql, db="postgres"):
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
             "-At", "-F", "\t", "-c", sql],
            check=True, capture_output=True, text=True)
        return out.stdout

    def pids(self):
        """The postmaster and its children (the backends serving callhook)."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        pids = [master]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == master:
                    pids.append(int(stat.split("/")[2]))
            except (OSError, IndexError, ValueError):
                pass
        return pids

    def stop(self):
        try:
            self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime + stime, plus the reaped children's (cutime + cstime): a PostgreSQL backend
            # or autovacuum worker that exits during a run is counted in its postmaster's.
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


class Server:
    """A receiver process. Ready when /healthz answers 200, or, for a receiver without one
    (the reference receivers serve only POST /), when its port accepts a connection (both
    bind their port only once they can serve)."""

    def __init__(self, cmd, port, logfile, env=None, ready="healthz", timeout=30):
        self.port = port
        self.log = open(logfile, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, cwd=tempfile.gettempdir(),
                                     env=env)
        deadline = time.time() + timeout
        while True:
            try:
                if ready == "tcp":
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
                self.log.close()
                raise RuntimeError(f"server did not start: {cmd}")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        for other in getattr(self, "companions", []):
            other.stop()


def run_wrk(port, conns, duration, run_id, outdir, threads=2):
    out = os.path.join(outdir, f"{run_id}.json")
    env = dict(os.environ, CALLHOOK_BENCH_RUN=run_id, CALLHOOK_BENCH_OUT=out, CALLHOOK_BENCH_SDKAPPID=SDKAPPID)
    cmd = ["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d", f"{duration}s", "--timeout", "5s",
           "-s", os.path.join(ROOT, "bench/callback.lua"), f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr.read().decode()}")
    with open(out) as f:
        result = json.load(f)
    result["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def expected_deliveries(result, run_id):
    """From wrk's per-thread results: call id -> acknowledged deliveries, and the deliveries
    that were not acknowledged (in flight at the stop, or refused): those may or may not
    have been stored."""
    acked, maybe = {}, {}

    def call(tid, k):
        n = k - 5 if k % 10 == 9 else k
        return f"{run_id}-{tid}-{n}"

    for t in result["threads"]:
        if t["ok_answers"] != t["acked"]:
            raise RuntimeError(f"thread {t['tid']}: {t['ok_answers']} answers with ErrorCode 0, but only "
                               f"{t['acked']} carried the X-Request-Id of a request in flight")
        unacked = set(t["unacked"])
        for k in range(t["sent"]):
            c = call(t["tid"], k)
            target = maybe if k in unacked else acked
            target[c] = target.get(c, 0) + 1
    return acked, maybe


def stored_deliveries(kind, db, run_id):
    sql = f"SELECT call_id, deliveries FROM call_events WHERE call_id LIKE '{run_id}-%'"
    rows = []
    if kind == "pg":
        out = db.psql(sql, db=db.dbname)
        rows = [(l.split("\t")[0], int(l.split("\t")[1])) for l in out.splitlines() if l]
    else:
        import sqlite3
        con = sqlite3.connect(db)
        rows = con.execute(sql).fetchall()
        con.close()
    return rows


def verify(kind, db, result, run_id):
    acked, maybe = expected_deliveries(result, run_id)
    rows = stored_deliveries(kind, db, run_id)
    stored = {}
    doubled = 0
    for call_id, deliveries in rows:
        if call_id in stored:
            doubled += 1  # two rows for one event
        stored[call_id] = stored.get(call_id, 0) + deliveries
    lost = sum(1 for c, n in acked.items() if stored.get(c, 0) < n)
    doubled += sum(1 for c, n in stored.items() if n > acked.get(c, 0) + maybe.get(c, 0))
    return {
        "acked_deliveries": sum(acked.values()),
        "unacknowledged": sum(maybe.values()),
        "rows": len(rows),
        "stored_deliveries": sum(stored.values()),
        "lost": lost,
        "doubled": doubled,
    }


def forwarding(kind, db, run_id):
    """-fwd modes: the run's stored events without their outbox entry (must be none), and
    how many of its entries were delivered by the end of the run (the workers keeping up)."""
    sql = (f"SELECT count(*) FILTER (WHERE o.event_id IS NULL), count(*) FILTER (WHERE o.state = 'delivered') "
           f"FROM call_events e LEFT JOIN forward_outbox o ON o.event_id = e.id WHERE e.call_id LIKE '{run_id}-%'")
    if kind == "pg":
        row = db.psql(sql, db=db.dbname).strip().split("\t")
    else:
        import sqlite3
        con = sqlite3.connect(db)
        row = con.execute(sql).fetchone()
        con.close()
    return {"unforwarded": int(row[0]), "delivered_by_end": int(row[1])}


def generated_calls(result, run_id):
    """Every call id that wrk generated a request for (whether sent, answered or not)."""
    calls = set()
    for t in result["threads"]:
        for k in range(t["sent"]):
            n = k - 5 if k % 10 == 9 else k
            calls.add(f"{run_id}-{t['tid']}-{n}")
    return calls


def verify_peer(pg, result, run_id):
    """The check for naive-rust, whose table (sql/schema.sql of bench-peers) keeps one row per
    distinct event and no delivery count (a repeat hits ON CONFLICT DO NOTHING), and which
    does not echo X-Request-Id: wrk's script knows how many requests were acknowledged, not
    which. Every workload event here is its call id (one user, role, result and time per call).

      doubled: two rows for one call id, or a row for a call id that was never generated;
      lost:    call ids generated but missing from the table, beyond the number of requests
               that were not acknowledged (in flight at wrk's stop, or wrk's priming call).

    Exact for doubled; for lost, a bound: a lost event hidden among the (at most one per
    connection) unanswered requests would go unnoticed. run.py also fails any run with an
    answer other than ErrorCode 0 or a socket error, so every unacknowledged request of a
    passing run was in flight at the stop."""
    generated = generated_calls(result, run_id)
    out = pg.psql(f"SELECT call_id FROM call_events WHERE call_id LIKE '{run_id}-%'", db=NAIVE_DB)
    rows = [l for l in out.splitlines() if l]
    stored = set(rows)
    unacked = sum(t["sent"] - t["ok_answers"] for t in result["threads"])
    missing = len(generated - stored)
    return {
        "acked_deliveries": sum(t["ok_answers"] for t in result["threads"]),
        "unacknowledged": unacked,
        "rows": len(rows),
        "stored_deliveries": None,  # the table does not count deliveries
        "missing_events": missing,
        "lost": max(0, missing - unacked),
        "doubled": (len(rows) - len(stored)) + len(stored - generated),
    }


def start_mode(mode, bins, pg, workdir):
    """bins: build()'s pair (callhook, noop receiver), or a dict that also names the
    reference receivers (build_peers)."""
    if isinstance(bins, tuple):
        bins = {"callhook": bins[0], "noop": bins[1]}
    callhook, noop = bins["callhook"], bins["noop"]
    port = free_port()
    logfile = os.path.join(workdir, f"{mode}-{port}.log")
    common = ["--listen", f"127.0.0.1:{port}", "--sdkappid", SDKAPPID]
    if mode == "ceiling-http":
        env = dict(os.environ, LISTEN=f"127.0.0.1:{port}")
        return Server([bins[mode]], port, logfile, env=env, ready="tcp"), None, None
    if mode == "naive-rust":
        pg.psql("TRUNCATE call_events", db=NAIVE_DB)
        env = dict(os.environ, LISTEN=f"127.0.0.1:{port}", DATABASE_URL=pg.url_for(NAIVE_DB),
                   POOL_SIZE="16", TEST_BEFORE_ACQUIRE="0")
        return Server([bins[mode]], port, logfile, env=env, ready="tcp"), "naive", pg
    if mode == "noop":
        return Server([noop, "--listen", f"127.0.0.1:{port}", "--sdkappid", SDKAPPID], port, logfile), None, None
    if mode.startswith("pg"):
        pg.psql("TRUNCATE call_events, rejected_deliveries, forward_outbox", db=pg.dbname)
        if pg.psql("SELECT to_regclass('rollup_queue') IS NOT NULL", db=pg.dbname).strip() == "t":
            pg.psql("TRUNCATE rollup_queue, rollup_calls, rollup_days, rollup_talk", db=pg.dbname)
        url = pg.url + ("?options=-c%20synchronous_commit%3Doff" if mode == "pg-async" else "")
        # A spool of each database's own: ab.py gives each variant its database, and a
        # journal a newer build migrated is refused by an older one.
        spool = os.path.join(workdir, f"spool-{pg.dbname}")
        cmd = [callhook, "serve", "--database-url", url, "--spool-dir", spool, *common]
        kind, db = "pg", pg
    else:
        path = os.path.join(workdir, f"bench-{port}.db")
        cmd = [callhook, "serve", "--database-url", f"sqlite://{path}", *common]
        kind, db = "sqlite", path
    receiver = None
    if "-fwd" in mode:
        # The destination: a port nobody serves (-down), or a receiver that verifies every
        # signature (`callhook listen`, its printing to /dev/null).
        rport = free_port()
        if not mode.endswith("-down"):
            receiver = Server([callhook, "listen", f"127.0.0.1:{rport}", "--secret", FORWARD_SECRET],
                              rport, os.path.join(workdir, f"listen-{rport}.log"), ready="tcp")
        cmd += ["--config", forward_config(workdir, rport)]
    if mode.endswith("batch1"):
        cmd += ["--max-batch", "1"]
    for part in mode.split("-")[1:]:
        # Sweep modes such as pg-w4-b256: --writers 4 --max-batch 256 (q: --queue-depth).
        flag = {"w": "--writers", "b": "--max-batch", "q": "--queue-depth"}.get(part[:1])
        if flag and part[1:].isdigit():
            cmd += [flag, part[1:]]
    server = Server(cmd, port, logfile)
    server.companions = [receiver] if receiver else []
    return server, kind, db


def forward_config(workdir, port):
    """A configuration with one destination taking every event, at 127.0.0.1:port."""
    path = os.path.join(workdir, f"forward-{port}.toml")
    with open(path, "w") as f:
        f.write(f'[[forward]]\nname = "bench"\nurl = "http://127.0.0.1:{port}/hooks"\n'
                f'secret = "{FORWARD_SECRET}"\n')
    return path


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return f"{min(xs):,.0f}–{max(xs):,.0f}" if xs else "–"


def cpu_per_event_us(r):
    """callhook's (or the receiver's) and PostgreSQL's CPU, without wrk's, per event stored
    in the run (distinct events: the ~10% repeats add none), in µs."""
    return (r["callhook_cpu_s"] + r["pg_cpu_s"]) / r["rows"] * 1e6 if r.get("rows") else None


def cpu_per_request_us(r):
    return (r["callhook_cpu_s"] + r["pg_cpu_s"]) / (r["rps"] * r["seconds"]) * 1e6 if r["rps"] else None


RATIOS = (("pg-default", "naive-rust"), ("pg-default", "ceiling-http"), ("pg-default", "pg-batch1"),
          ("pg-default", "noop"), ("naive-rust", "ceiling-http"), ("noop", "ceiling-http"),
          ("sqlite-default", "naive-rust"), ("sqlite-default", "sqlite-batch1"), ("sqlite-default", "noop"),
          ("sqlite-default", "ceiling-http"), ("pg-async", "pg-default"), ("pg-async", "naive-rust"),
          ("pg-fwd", "pg-default"), ("pg-fwd-down", "pg-default"), ("sqlite-fwd", "sqlite-default"),
          ("sqlite-fwd-down", "sqlite-default"))


def per_rep_ratios(records, a, b, conns=64, key="rps"):
    out = []
    for rep in sorted({r["rep"] for r in records}):
        ra = [r[key] for r in records if r["rep"] == rep and r["mode"] == a and r["conns"] == conns]
        rb = [r[key] for r in records if r["rep"] == rep and r["mode"] == b and r["conns"] == conns]
        if ra and rb and rb[0]:
            out.append(ra[0] / rb[0])
    return out


def summarize(records, modes):
    lines = []
    by = {}
    for r in records:
        by.setdefault((r["mode"], r["conns"]), []).append(r)
    lines.append("| mode | conns | req/s (median) | spread | p50 ms | p99 ms | receiver CPU | PostgreSQL CPU | wrk CPU | "
                 "CPU µs / stored event | RSS after / peak MiB | lost | doubled |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        for conns in (64, 4):
            rs = by.get((mode, conns), [])
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            cpu = lambda key: f"{median([r[key] / r['seconds'] for r in rs]) * 100:.0f}%"
            per_event = [x for x in (cpu_per_event_us(r) for r in rs) if x is not None]
            stores = any("lost" in r for r in rs)
            cpu_cell = (f"{median(per_event):.0f}" if per_event
                        else f"— ({median([cpu_per_request_us(r) for r in rs]):.0f} / request)")
            checks = (f"{sum(r.get('lost', 0) for r in rs)} | {sum(r.get('doubled', 0) for r in rs)}" if stores
                      else "— | —")
            lines.append(
                f"| {mode} | {conns} | {median(rps):,.0f} | {spread(rps)} | {median([r['p50_ms'] for r in rs]):.2f} | "
                f"{median([r['p99_ms'] for r in rs]):.2f} | {cpu('callhook_cpu_s')} | {cpu('pg_cpu_s')} | {cpu('wrk_cpu_s')} | "
                f"{cpu_cell} | {median([r['rss_after_mib'] for r in rs]):.1f} / {max(r['rss_peak_mib'] for r in rs):.1f} | "
                f"{checks} |")
    lines.append("")
    ratios = []
    for a, b in RATIOS:
        per_rep = per_rep_ratios(records, a, b)
        if per_rep:
            ratios.append(f"| {a} / {b} | {median(per_rep):.2f} | {min(per_rep):.2f}–{max(per_rep):.2f} | "
                          + ", ".join(f"{x:.2f}" for x in per_rep) + " |")
    if ratios:
        lines.append("| throughput ratio at 64 conns, within each repetition | median | spread | per rep |")
        lines.append("|---|---|---|---|")
        lines.extend(ratios)
    stores = [m for m in modes if any(r["mode"] == m and r["conns"] == 64 and cpu_per_event_us(r) for r in records)]
    if stores:
        lines.append("")
        lines.append("| CPU per stored event at 64 conns (receiver + PostgreSQL, without wrk) | median µs | per rep |")
        lines.append("|---|---|---|")
        for m in stores:
            per_rep = [cpu_per_event_us(r) for r in sorted(records, key=lambda r: r["rep"])
                       if r["mode"] == m and r["conns"] == 64]
            lines.append(f"| {m} | {median(per_rep):.0f} | " + ", ".join(f"{x:.0f}" for x in per_rep) + " |")
    fwd = [m for m in modes if "-fwd" in m and any(r["mode"] == m for r in records)]
    if fwd:
        lines.append("")
        lines.append("| forwarding at 64 conns | stored events (median) | delivered by the run's end (median) | "
                     "receiver CPU (`callhook listen`) | without an outbox entry (all reps) |")
        lines.append("|---|---|---|---|---|")
        for m in fwd:
            rs = [r for r in records if r["mode"] == m and r["conns"] == 64]
            lines.append(f"| {m} | {median([r['rows'] for r in rs]):,.0f} | "
                         f"{median([r['delivered_by_end'] / r['rows'] for r in rs if r['rows']]) * 100:.1f}% | "
                         f"{median([r['receiver_cpu_s'] / r['seconds'] for r in rs]) * 100:.0f}% | "
                         f"{sum(r['unforwarded'] for r in rs)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--conns", default="64,4")
    ap.add_argument("--wrk-threads", type=int, default=2,
                    help="wrk threads (default 2, one per core; fewer when there are fewer connections)")
    ap.add_argument("--peers", default=PEERS_DIR,
                    help="the bench-peers workspace with naive-rust and ceiling-http (default %(default)s)")
    ap.add_argument("--summary", help="only summarise an earlier results .jsonl file")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if args.summary:
        with open(args.summary) as f:
            records = [json.loads(l) for l in f if l.strip()]
        print(summarize(records, modes))
        return
    for m in modes:
        if m not in MODES + EXTRA_MODES + PEER_MODES and not m.startswith(("pg-w", "pg-b", "pg-q", "sqlite-b", "sqlite-q")):
            sys.exit(f"unknown mode {m}; choose from {','.join(MODES + EXTRA_MODES + PEER_MODES)} or a sweep mode like pg-w2-b256")
    ensure_wrk()
    callhook, noop = build()
    bins = {"callhook": callhook, "noop": noop}
    if any(m in PEER_MODES for m in modes):
        bins.update(build_peers(args.peers))
    workdir = tempfile.mkdtemp(prefix="callhook-bench-")
    pg = Postgres() if any(m.startswith("pg") or m == "naive-rust" for m in modes) else None
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = os.path.join(ROOT, "bench/results", f"{stamp}.jsonl")
    records = []
    try:
        if pg:
            # The schema must exist before the first TRUNCATE.
            sh([callhook, "migrate", "--database-url", pg.url], stdout=subprocess.DEVNULL)
            if "naive-rust" in modes:
                # naive-rust's own database and table, from its sql/schema.sql.
                pg.psql(f"CREATE DATABASE {NAIVE_DB}")
                with open(os.path.join(args.peers, "sql/schema.sql")) as f:
                    pg.psql(f.read(), db=NAIVE_DB)
        for rep in range(1, args.reps + 1):
            for mode in modes:
                server, kind, db = start_mode(mode, bins, pg, workdir)
                try:
                    run_wrk(server.port, 64, args.warmup, f"warm{rep}{mode.replace('-', '')}", workdir, args.wrk_threads)
                    for conns in [int(c) for c in args.conns.split(",")]:
                        run_id = f"r{rep}{mode.replace('-', '')}c{conns}"
                        on_pg = kind in ("pg", "naive")
                        pids_pg = pg.pids() if on_pg else []
                        # The -fwd modes' receiver (`callhook listen`) is the destination's work, not
                        # callhook's: counted apart, as wrk is.
                        pids_rx = [c.proc.pid for c in getattr(server, "companions", [])]
                        c0, p0, t0 = cpu_seconds([server.proc.pid]), cpu_seconds(pids_pg), time.time()
                        r0 = cpu_seconds(pids_rx)
                        res = run_wrk(server.port, conns, args.duration, run_id, workdir, args.wrk_threads)
                        time.sleep(0.3)  # let in-flight commits land before checking
                        c1, p1, t1 = cpu_seconds([server.proc.pid]), cpu_seconds(pg.pids() if on_pg else []), time.time()
                        r1 = cpu_seconds(pids_rx)
                        rss_after, rss_peak = memory(server.proc.pid)
                        seconds = res["duration_us"] / 1e6
                        acked = sum(t["acked"] for t in res["threads"])
                        ok_answers = sum(t["ok_answers"] for t in res["threads"])
                        if mode in PEER_MODES:
                            # No X-Request-Id echo: answers are counted, not matched (verify_peer).
                            acked = ok_answers
                        elif ok_answers != acked:
                            raise RuntimeError(f"{ok_answers} answers with ErrorCode 0 but only {acked} carried "
                                               "the X-Request-Id of a request in flight: is it echoed?")
                        rec = {
                            "rep": rep, "mode": mode, "conns": conns, "seconds": seconds,
                            "rps": acked / seconds, "responses": res["requests"], "errors": res["errors"],
                            "not_acknowledged_answers": res["requests"] - ok_answers,
                            "p50_ms": res["p50_us"] / 1000, "p90_ms": res["p90_us"] / 1000,
                            "p99_ms": res["p99_us"] / 1000, "p999_ms": res["p999_us"] / 1000,
                            "max_ms": res["max_us"] / 1000,
                            "callhook_cpu_s": c1 - c0, "pg_cpu_s": p1 - p0, "wrk_cpu_s": res["wrk_cpu_s"],
                            "wall_s": t1 - t0, "rss_after_mib": rss_after, "rss_peak_mib": rss_peak,
                            # The machine is shared: the 1-minute load average at the end of the run
                            # (this run's own processes count ~2-3 of it).
                            "loadavg_1m": os.getloadavg()[0],
                        }
                        if kind == "naive":
                            rec.update(verify_peer(pg, res, run_id))
                        elif kind:
                            rec.update(verify(kind, db, res, run_id))
                            if "-fwd" in mode:
                                rec.update(forwarding(kind, db, run_id), receiver_cpu_s=r1 - r0)
                        records.append(rec)
                        with open(results_path, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                        per_event = cpu_per_event_us(rec)
                        log(f"rep {rep} {mode:15} {conns:>2} conns: {rec['rps']:>9,.0f} req/s  p50 {rec['p50_ms']:.2f} ms  "
                            f"p99 {rec['p99_ms']:.2f} ms  rss {rss_after:.1f}/{rss_peak:.1f} MiB"
                            + (f"  {per_event:.0f} µs CPU/event" if per_event else "")
                            + (f"  lost {rec['lost']} doubled {rec['doubled']}" if kind else ""))
                finally:
                    server.stop()
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"results: {os.path.relpath(results_path, ROOT)}\n")
    print(summarize(records, modes))
    bad = [r for r in records if r.get("lost") or r.get("doubled") or r.get("unforwarded")]
    if bad:
        sys.exit(f"{len(bad)} runs lost or doubled deliveries, or stored events without their outbox entry")
    # Every answer of this workload should be ErrorCode 0: a run whose answers were refused
    # (wrong app, overload, database down) would otherwise pass the check with nothing in it.
    refused = [r for r in records if r["not_acknowledged_answers"] or r["errors"] or r["rps"] == 0]
    if refused:
        sys.exit(f"{len(refused)} runs had answers other than ErrorCode 0, or socket errors: "
                 + ", ".join(f"{r['mode']}@{r['conns']} rep {r['rep']}" for r in refused))


if __name__ == "__main__":
    main()
