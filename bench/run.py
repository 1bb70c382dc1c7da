#!/usr/bin/env python3
"""callhook's throughput and latency benchmark.

Measures, in one run, interleaved, with several repetitions each:
  pg-default     callhook on PostgreSQL with default settings (group commit)
  pg-batch1      callhook on PostgreSQL with --max-batch 1 (one INSERT per request)
  noop           the HTTP-only ceiling: the same router, parser, logging and queue, with a
                 storage sink that writes nothing (examples/noop_receiver.rs)
  sqlite-default callhook on SQLite with default settings
  sqlite-batch1  callhook on SQLite with --max-batch 1
  pg-w4-b256 …   sweep modes: --writers / --max-batch / --queue-depth (w, b, q)
each at 64 connections (throughput) and 4 connections (latency), with wrk (2 threads) driving realistic
status callbacks (unique CallIds, ~10% repeated deliveries). After every run it checks that
the database holds exactly the acknowledged deliveries (nothing lost, nothing doubled), and
it records peak/after-run RSS and the CPU split between callhook, PostgreSQL and wrk.

Usage:  python3 bench/run.py [--reps 3] [--duration 10] [--modes pg-default,noop,...]
It installs wrk if missing (apt-get), starts its own PostgreSQL from
/usr/lib/postgresql/*/bin, builds callhook in release mode, and writes
bench/results/<timestamp>.jsonl plus a Markdown summary on stdout.
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
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir}"
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-o", opts, "-w", "start")
        self.psql("CREATE DATABASE bench")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/bench"
        if warm_wal:
            self.warm_wal()

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
    def __init__(self, cmd, port, logfile):
        self.port = port
        self.log = open(logfile, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, cwd=tempfile.gettempdir())
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start: {cmd}")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


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
        out = db.psql(sql, db="bench")
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


def start_mode(mode, bins, pg, workdir):
    callhook, noop = bins
    port = free_port()
    logfile = os.path.join(workdir, f"{mode}-{port}.log")
    common = ["--listen", f"127.0.0.1:{port}", "--sdkappid", SDKAPPID]
    if mode == "noop":
        return Server([noop, "--listen", f"127.0.0.1:{port}", "--sdkappid", SDKAPPID], port, logfile), None, None
    if mode.startswith("pg"):
        pg.psql("TRUNCATE call_events, rejected_deliveries", db="bench")
        cmd = [callhook, "serve", "--database-url", pg.url, "--spool-dir", os.path.join(workdir, "spool"), *common]
        kind, db = "pg", pg
    else:
        path = os.path.join(workdir, f"bench-{port}.db")
        cmd = [callhook, "serve", "--database-url", f"sqlite://{path}", *common]
        kind, db = "sqlite", path
    if mode.endswith("batch1"):
        cmd += ["--max-batch", "1"]
    for part in mode.split("-")[1:]:
        # Sweep modes such as pg-w4-b256: --writers 4 --max-batch 256 (q: --queue-depth).
        flag = {"w": "--writers", "b": "--max-batch", "q": "--queue-depth"}.get(part[:1])
        if flag and part[1:].isdigit():
            cmd += [flag, part[1:]]
    return Server(cmd, port, logfile), kind, db


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return f"{min(xs):,.0f}–{max(xs):,.0f}" if xs else "–"


def summarize(records, modes):
    lines = []
    by = {}
    for r in records:
        by.setdefault((r["mode"], r["conns"]), []).append(r)
    lines.append("| mode | conns | req/s (median) | spread | p50 ms | p99 ms | callhook CPU | PostgreSQL CPU | wrk CPU | RSS after / peak MiB | lost | doubled |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        for conns in (64, 4):
            rs = by.get((mode, conns), [])
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            cpu = lambda key: f"{median([r[key] / r['seconds'] for r in rs]) * 100:.0f}%"
            lines.append(
                f"| {mode} | {conns} | {median(rps):,.0f} | {spread(rps)} | {median([r['p50_ms'] for r in rs]):.2f} | "
                f"{median([r['p99_ms'] for r in rs]):.2f} | {cpu('callhook_cpu_s')} | {cpu('pg_cpu_s')} | {cpu('wrk_cpu_s')} | "
                f"{median([r['rss_after_mib'] for r in rs]):.1f} / {max(r['rss_peak_mib'] for r in rs):.1f} | "
                f"{sum(r.get('lost', 0) for r in rs)} | {sum(r.get('doubled', 0) for r in rs)} |")
    lines.append("")
    ratios = []
    for a, b in (("pg-default", "pg-batch1"), ("pg-default", "noop"), ("sqlite-default", "sqlite-batch1"), ("sqlite-default", "noop")):
        per_rep = []
        for rep in sorted({r["rep"] for r in records}):
            ra = [r["rps"] for r in records if r["rep"] == rep and r["mode"] == a and r["conns"] == 64]
            rb = [r["rps"] for r in records if r["rep"] == rep and r["mode"] == b and r["conns"] == 64]
            if ra and rb:
                per_rep.append(ra[0] / rb[0])
        if per_rep:
            ratios.append(f"| {a} / {b} (64 conns) | {median(per_rep):.2f} | {min(per_rep):.2f}–{max(per_rep):.2f} |")
    if ratios:
        lines.append("| throughput ratio, same repetition | median | spread |")
        lines.append("|---|---|---|")
        lines.extend(ratios)
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
    ap.add_argument("--summary", help="only summarise an earlier results .jsonl file")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if args.summary:
        with open(args.summary) as f:
            records = [json.loads(l) for l in f if l.strip()]
        print(summarize(records, modes))
        return
    for m in modes:
        if m not in MODES and not m.startswith(("pg-w", "pg-b", "pg-q", "sqlite-b", "sqlite-q")):
            sys.exit(f"unknown mode {m}; choose from {','.join(MODES)} or a sweep mode like pg-w2-b256")
    ensure_wrk()
    bins = build()
    workdir = tempfile.mkdtemp(prefix="callhook-bench-")
    pg = Postgres() if any(m.startswith("pg") for m in modes) else None
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = os.path.join(ROOT, "bench/results", f"{stamp}.jsonl")
    records = []
    try:
        if pg:
            # The schema must exist before the first TRUNCATE.
            sh([bins[0], "migrate", "--database-url", pg.url], stdout=subprocess.DEVNULL)
        for rep in range(1, args.reps + 1):
            for mode in modes:
                server, kind, db = start_mode(mode, bins, pg, workdir)
                try:
                    run_wrk(server.port, 64, args.warmup, f"warm{rep}{mode.replace('-', '')}", workdir, args.wrk_threads)
                    for conns in [int(c) for c in args.conns.split(",")]:
                        run_id = f"r{rep}{mode.replace('-', '')}c{conns}"
                        pids_pg = pg.pids() if kind == "pg" else []
                        c0, p0, t0 = cpu_seconds([server.proc.pid]), cpu_seconds(pids_pg), time.time()
                        res = run_wrk(server.port, conns, args.duration, run_id, workdir, args.wrk_threads)
                        time.sleep(0.3)  # let in-flight commits land before checking
                        c1, p1, t1 = cpu_seconds([server.proc.pid]), cpu_seconds(pg.pids() if kind == "pg" else []), time.time()
                        rss_after, rss_peak = memory(server.proc.pid)
                        seconds = res["duration_us"] / 1e6
                        acked = sum(t["acked"] for t in res["threads"])
                        ok_answers = sum(t["ok_answers"] for t in res["threads"])
                        if ok_answers != acked:
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
                        }
                        if kind:
                            rec.update(verify(kind, db, res, run_id))
                        records.append(rec)
                        with open(results_path, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                        log(f"rep {rep} {mode:15} {conns:>2} conns: {rec['rps']:>9,.0f} req/s  p50 {rec['p50_ms']:.2f} ms  "
                            f"p99 {rec['p99_ms']:.2f} ms  rss {rss_after:.1f}/{rss_peak:.1f} MiB"
                            + (f"  lost {rec['lost']} doubled {rec['doubled']}" if kind else ""))
                finally:
                    server.stop()
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"results: {os.path.relpath(results_path, ROOT)}\n")
    print(summarize(records, modes))
    bad = [r for r in records if r.get("lost") or r.get("doubled")]
    if bad:
        sys.exit(f"{len(bad)} runs lost or doubled deliveries")
    # Every answer of this workload should be ErrorCode 0: a run whose answers were refused
    # (wrong app, overload, database down) would otherwise pass the check with nothing in it.
    refused = [r for r in records if r["not_acknowledged_answers"] or r["errors"] or r["rps"] == 0]
    if refused:
        sys.exit(f"{len(refused)} runs had answers other than ErrorCode 0, or socket errors: "
                 + ", ".join(f"{r['mode']}@{r['conns']} rep {r['rep']}" for r in refused))


if __name__ == "__main__":
    main()
