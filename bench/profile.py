#!/usr/bin/env python3
"""Where the CPU goes: a whole-machine perf profile of one benchmark run.

Starts one mode of bench/run.py (default pg-default), drives it with the same wrk
workload, records every CPU with `perf record -a -g` for the middle of the run (from
1.5 s in to 1.5 s before the end), and
prints a summary that explains the throughput:

  1. the share of all CPU time per process (callhook, postgres, wrk, idle, other);
  2. the hottest functions of callhook and of postgres (self time, % of all CPU);
  3. for PostgreSQL, the inclusive cost of the steps of an INSERT that matter here
     (index maintenance, the ON CONFLICT check, jsonb parsing, WAL flush at commit).

Usage:  python3 bench/profile.py [--mode pg-default] [--conns 64] [--duration 8]
        python3 bench/profile.py --report perf.data     # summarise an earlier recording
Needs `perf` (apt-get install linux-perf) and permission to profile the whole machine
(root, or kernel.perf_event_paranoid <= -1). Writes bench/results/profile-<mode>.data.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

# perf names threads, not processes: callhook's are tokio's workers and the log writer.
GROUPS = {
    "callhook": ["callhook", "tokio-rt-worker", "tracing-appende", "noop_receiver",
                 "sqlx-sqlite-wor"],
    "postgres": ["postgres"],
    "idle": ["swapper"],
}

# Steps of PostgreSQL's insert path worth seeing inclusively (children included).
PG_STEPS = [
    ("ExecInsertIndexTuples", "index maintenance (all indexes of call_events)"),
    ("ExecCheckIndexConstraints", "ON CONFLICT arbiter check (the dedupe key)"),
    ("ExecOnConflictUpdate", "ON CONFLICT DO UPDATE (repeated deliveries)"),
    ("heap_insert", "heap insert"),
    ("jsonb_in", "jsonb parsing of the payload"),
    ("CommitTransaction", "commit (incl. WAL flush)"),
    ("XLogFlush", "WAL flush"),
    ("exec_bind_message", "bind (parameter decoding)"),
    ("exec_parse_message", "parse"),
    ("pq_getbyte", "reading from the client socket"),
]


def perf_lines(data, *args):
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", *args],
                         capture_output=True, text=True, check=True).stdout
    return [l for l in out.splitlines() if l.strip() and not l.startswith("#")]


def pct(line):
    m = re.match(r"\s*([\d.]+)%", line)
    return float(m.group(1)) if m else None


def report(data):
    print(f"## CPU by process (share of all CPU time, {os.cpu_count()} CPUs)\n")
    print("| process | % of all CPU |\n|---|---:|")
    shares = {}
    for line in perf_lines(data, "--no-children", "-g", "none", "--sort", "comm"):
        p = pct(line)
        if p is not None:
            comm = line.split("%", 1)[1].strip()
            name = next((k for k, v in GROUPS.items() if comm in v), comm)
            shares[name] = shares.get(name, 0.0) + p
    for name, p in sorted(shares.items(), key=lambda kv: -kv[1]):
        if p >= 0.5:
            print(f"| {name} | {p:.1f} |")
    for label, comms in [("callhook", GROUPS["callhook"]), ("PostgreSQL", GROUPS["postgres"])]:
        print(f"\n## Hottest functions of {label} (self time, % of all CPU)\n")
        print("| function | % |\n|---|---:|")
        comms = ",".join(comms)
        rows = perf_lines(data, "--no-children", "-g", "none", "--comms", comms,
                          "--sort", "sym", "--percent-limit", "0.4")
        for line in rows[:25]:
            p = pct(line)
            if p is not None:
                sym = re.sub(r"^\s*[\d.]+%\s+\[[.kH]\]\s+", "", line).strip()
                print(f"| `{sym[:90]}` | {p:.1f} |")
    print("\n## Where each process spends it (self time by binary, % of all CPU)\n")
    print("| process | binary | % |\n|---|---|---:|")
    split = {}
    for line in perf_lines(data, "--no-children", "-g", "none", "--sort", "comm,dso"):
        p = pct(line)
        if p is None:
            continue
        comm, dso = line.split("%", 1)[1].split(None, 1)
        name = next((k for k, v in GROUPS.items() if comm in v), comm)
        dso = "kernel" if "kernel" in dso else dso.strip()
        split[(name, dso)] = split.get((name, dso), 0.0) + p
    for (name, dso), p in sorted(split.items(), key=lambda kv: (kv[0][0] != "callhook", kv[0][0], -kv[1])):
        if p >= 0.5 and name != "idle":
            print(f"| {name} | {dso} | {p:.1f} |")
    print("\n## PostgreSQL insert path, inclusive (% of all CPU)\n")
    print("| step | function | % |\n|---|---|---:|")
    rows = perf_lines(data, "--children", "-g", "none", "--comms", "postgres", "--sort", "sym")
    for fn, label in PG_STEPS:
        for line in rows:
            if re.search(rf"\]\s+{re.escape(fn)}\s*$", line):
                print(f"| {label} | `{fn}` | {pct(line):.1f} |")
                break


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="pg-default")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--duration", type=int, default=8, help="seconds of load (perf records the middle)")
    ap.add_argument("--report", help="only summarise an earlier perf.data")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    if not shutil.which("perf"):
        sys.exit("perf is not installed: apt-get install -y linux-perf")
    bench.ensure_wrk()
    bins = bench.build()
    pg = bench.Postgres()
    workdir = tempfile.mkdtemp(prefix="callhook-prof-")
    server = None
    data = os.path.join(bench.ROOT, "bench/results", f"profile-{args.mode}.data")
    try:
        subprocess.run([bins[0], "migrate", "--database-url", pg.url], check=True, stdout=subprocess.DEVNULL)
        server, _, _ = bench.start_mode(args.mode, bins, pg, workdir)
        bench.run_wrk(server.port, args.conns, 2, "warm", workdir)
        record_for = max(2, args.duration - 3)
        for old in (data, data + ".old"):
            if os.path.exists(old):
                os.remove(old)
        perf_log = os.path.join(workdir, "perf.log")

        def record():
            time.sleep(1.5)
            with open(perf_log, "wb") as log:
                return subprocess.run(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "999",
                                       "-o", data, "--", "sleep", str(record_for)],
                                      stdout=subprocess.DEVNULL, stderr=log).returncode

        outcome = {}
        recorder = threading.Thread(target=lambda: outcome.update(rc=record()))
        t0 = time.time()
        recorder.start()
        result = bench.run_wrk(server.port, args.conns, args.duration, "prof", workdir)
        recorder.join()
        if outcome.get("rc") != 0 or not os.path.exists(data):
            with open(perf_log) as f:
                sys.exit(f"perf record failed (is kernel.perf_event_paranoid <= -1?):\n{f.read()}")
        secs = result["duration_us"] / 1e6
        acked = sum(t["acked"] for t in result["threads"])
        bench.log(f"{args.mode} at {args.conns} connections: {acked / secs:,.0f} req/s "
                  f"(perf recorded {record_for} s of {time.time() - t0:.0f} s)")
    finally:
        if server:
            server.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(data)


if __name__ == "__main__":
    main()
