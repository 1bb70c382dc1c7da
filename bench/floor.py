#!/usr/bin/env python3
"""The latency floor of a durable callback on this machine: what PostgreSQL alone takes.

Issue 17 asks for a p50 of at most 1 ms at 4 connections. A receiver that answers only
after the event is committed cannot answer faster than one durable commit plus one HTTP
exchange. This script measures both parts on the machine at hand, in one run, interleaved:

  select1    pgbench `SELECT 1`: a round trip to PostgreSQL, nothing written
  commit     pgbench one-row INSERT into a table with no index: the durable commit alone
             (the WAL write and its fdatasync, with default settings)
  naive      pgbench naive-rust's own statement (../shared/bench-peers), one row into its
             table with its one unique index
  callhook   pgbench callhook's live-write statement with one row: the fence CTE, the
             unnest of 25 arrays, ON CONFLICT on the dedupe key, RETURNING, into
             call_events with its indexes (mirrors src/store/postgres.rs)
  unfenced   the same statement without the fence CTE (measurement only: the fence is what
             settles a write of unknown outcome, src/store/fence.rs)
  http       wrk against ceiling-http (../shared/bench-peers): the HTTP exchange alone,
             callhook's workload, no database

each at 1 and 4 clients (pgbench -M prepared, one transaction per statement, as the
receivers send them), on the same throwaway PostgreSQL 15 cluster with default settings
and a warmed WAL as bench/run.py's. It prints the median over --reps of each p50 and p99,
and the floor for the p50 at 4 connections: commit p50 + http p50.

Usage:  python3 bench/floor.py [--reps 3] [--duration 8]
Writes bench/results/floor-<timestamp>.jsonl.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import run as bench

BODY = ('{"UserId":"user-1","RoomId":"room-1","TotalNum":2,"MediaType":"video",'
        '"CallType":"single","CallId":"floor-1","Role":"caller","CallResult":"normal_end",'
        '"EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,'
        '"EndTs":1704856885}').replace('":', '": ')  # pgbench would read `:2` as a variable

SCRIPTS = {
    "select1": ("bench", "SELECT 1;\n"),
    "commit": ("bench", "INSERT INTO floor_commit (x) VALUES (1);\n"),
    # naive-rust's INSERT_SQL, with a fresh call id per transaction.
    "naive": (bench.NAIVE_DB, f"""\\set n random(1, 2000000000)
INSERT INTO call_events (sdkappid, command, client_ip, opt_platform, user_id, room_id, total_num,
  media_type, call_type, call_id, role, call_result, event_time, start_call_ts, accept_ts, end_ts, raw)
VALUES (1400000001, 'call_end', '10.1.2.3', 'Android', 'user-1', 'room-1', 2, 'video', 'single',
  'floor-' || :client_id || '-' || :n, 'caller', 'normal_end', 1704856890, 1704856873, 1704856876,
  1704856885, '{BODY}'::jsonb)
ON CONFLICT (sdkappid, call_id, user_id, role, call_result, event_time) DO NOTHING;
"""),
    # callhook's fenced events statement (src/store/postgres.rs, without the TRTC arrays),
    # for a batch of one row. The fence's batch number must rise: the clock does.
    "callhook": ("bench", f"""\\set n random(1, 2000000000)
WITH fence AS (INSERT INTO ingest_fences AS f (writer_id, last_batch)
  VALUES (convert_to('floor-' || :client_id, 'UTF8'),
          (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
  ON CONFLICT (writer_id) DO UPDATE SET last_batch = EXCLUDED.last_batch, updated_at = now()
  WHERE f.last_batch < EXCLUDED.last_batch RETURNING 1)
INSERT INTO call_events (sdkappid, family, command, call_id, user_id, role, event, call_result,
  media_type, call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts,
  client_ip, opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at,
  dedupe_key, members, notes)
SELECT t.sdkappid, t.family, t.command, t.call_id, t.user_id, t.role, t.event, t.call_result,
  t.media_type, t.call_type, t.room_id, t.total_num,
  timestamptz 'epoch' + t.event_time * interval '1 millisecond',
  timestamptz 'epoch' + t.start_call_ts * interval '1 millisecond',
  timestamptz 'epoch' + t.accept_ts * interval '1 millisecond',
  timestamptz 'epoch' + t.end_ts * interval '1 millisecond',
  t.client_ip, t.opt_platform, t.remote_addr, t.payload::json, t.deliveries,
  timestamptz 'epoch' + t.received_at * interval '1 millisecond',
  timestamptz 'epoch' + t.received_at * interval '1 millisecond',
  t.dedupe_key, t.members::json, t.notes
FROM unnest(ARRAY[1400000001]::bigint[], ARRAY['status']::text[], ARRAY['call_end']::text[],
  ARRAY['floor-' || :client_id || '-' || :n]::text[], ARRAY['user-1']::text[],
  ARRAY['caller']::text[], ARRAY[NULL]::text[], ARRAY['normal_end']::text[],
  ARRAY['video']::text[], ARRAY['single']::text[], ARRAY['room-1']::text[], ARRAY[2]::bigint[],
  ARRAY[1704856890000]::bigint[], ARRAY[1704856873000]::bigint[], ARRAY[1704856876000]::bigint[],
  ARRAY[1704856885000]::bigint[], ARRAY['10.1.2.3']::text[], ARRAY['Android']::text[],
  ARRAY['127.0.0.1']::text[], ARRAY['{BODY}']::text[], ARRAY[1]::int[],
  ARRAY[(extract(epoch FROM clock_timestamp()) * 1000)::bigint]::bigint[],
  ARRAY[sha256(convert_to('floor-' || :client_id || '-' || :n, 'UTF8'))]::bytea[],
  ARRAY[NULL]::text[], ARRAY[NULL]::text[])
AS t(sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
  call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, client_ip,
  opt_platform, remote_addr, payload, deliveries, received_at, dedupe_key, members, notes)
WHERE EXISTS (SELECT 1 FROM fence)
ON CONFLICT (sdkappid, dedupe_key) DO UPDATE
  SET deliveries = call_events.deliveries + EXCLUDED.deliveries,
      last_delivery_at = GREATEST(call_events.last_delivery_at, EXCLUDED.last_delivery_at)
RETURNING dedupe_key, deliveries;
"""),
}
SCRIPTS["unfenced"] = ("bench", SCRIPTS["callhook"][1]
                       .replace(SCRIPTS["callhook"][1][SCRIPTS["callhook"][1].index("WITH fence"):
                                                       SCRIPTS["callhook"][1].index("INSERT INTO call_events")], "")
                       .replace("WHERE EXISTS (SELECT 1 FROM fence)\n", ""))


def pgbench(pg, name, clients, duration, workdir):
    """One pgbench run of SCRIPTS[name]; its p50 and p99 from the per-transaction log."""
    db, sql = SCRIPTS[name]
    script = os.path.join(workdir, f"{name}.sql")
    with open(script, "w") as f:
        f.write(sql)
    logdir = tempfile.mkdtemp(dir=workdir)
    cmd = [os.path.join(pg.bin, "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(pg.port),
           "-U", "postgres", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
           "-T", str(duration), "-f", script, "--log", "--log-prefix", os.path.join(logdir, "tx"), db]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=logdir)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench {name} failed: {out.stderr.strip()}")
    latencies = []
    for path in glob.glob(os.path.join(logdir, "tx*")):
        with open(path) as f:
            latencies += [int(line.split()[2]) for line in f if line.strip()]
    shutil.rmtree(logdir, ignore_errors=True)
    if not latencies:
        raise RuntimeError(f"pgbench {name} logged no transaction")
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000
    return {"tps": len(latencies) / duration, "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def http(server, clients, duration, run_id, workdir):
    res = bench.run_wrk(server.port, clients, duration, run_id, workdir)
    return {"tps": res["requests"] / (res["duration_us"] / 1e6), "p50_ms": res["p50_us"] / 1000,
            "p99_ms": res["p99_us"] / 1000}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--peers", default=bench.PEERS_DIR)
    args = ap.parse_args()
    bench.ensure_wrk()
    callhook, _ = bench.build()
    peers = bench.build_peers(args.peers)
    workdir = tempfile.mkdtemp(prefix="callhook-floor-")
    pg = bench.Postgres()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = os.path.join(bench.ROOT, "bench/results", f"floor-{stamp}.jsonl")
    records = []
    try:
        bench.sh([callhook, "migrate", "--database-url", pg.url], stdout=subprocess.DEVNULL)
        pg.psql("CREATE TABLE floor_commit (x int)", db="bench")
        pg.psql(f"CREATE DATABASE {bench.NAIVE_DB}")
        with open(os.path.join(args.peers, "sql/schema.sql")) as f:
            pg.psql(f.read(), db=bench.NAIVE_DB)
        clients = [int(c) for c in args.clients.split(",")]
        for rep in range(1, args.reps + 1):
            for name in [*SCRIPTS, "http"]:
                for c in clients:
                    if name == "http":
                        server, _, _ = bench.start_mode("ceiling-http", {**peers, "callhook": callhook, "noop": None},
                                                        pg, workdir)
                        try:
                            rec = http(server, c, args.duration, f"floor{rep}c{c}", workdir)
                        finally:
                            server.stop()
                    else:
                        rec = pgbench(pg, name, c, args.duration, workdir)
                    rec.update(rep=rep, name=name, clients=c, loadavg_1m=os.getloadavg()[0])
                    records.append(rec)
                    with open(results_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    bench.log(f"rep {rep} {name:9} {c} clients: {rec['tps']:>8,.0f}/s  "
                              f"p50 {rec['p50_ms']:.3f} ms  p99 {rec['p99_ms']:.3f} ms")
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"results: {os.path.relpath(results_path, bench.ROOT)}\n")
    print(summarize(records, clients))


def summarize(records, clients):
    med = lambda name, c, k: statistics.median(r[k] for r in records if r["name"] == name and r["clients"] == c)
    lines = ["| step | " + " | ".join(f"{c} client{'s' if c > 1 else ''}: /s, p50, p99" for c in clients) + " |",
             "|---|" + "---:|" * len(clients)]
    for name in [*SCRIPTS, "http"]:
        cells = [f"{med(name, c, 'tps'):,.0f}, {med(name, c, 'p50_ms'):.2f} ms, {med(name, c, 'p99_ms'):.2f} ms"
                 for c in clients]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    c = max(clients)
    lines.append("")
    lines.append(f"floor of a durable answer's p50 at {c} connections (commit p50 + http p50): "
                 f"{med('commit', c, 'p50_ms') + med('http', c, 'p50_ms'):.2f} ms; with callhook's statement "
                 f"instead of the bare commit: {med('callhook', c, 'p50_ms') + med('http', c, 'p50_ms'):.2f} ms; "
                 f"without its fence: {med('unfenced', c, 'p50_ms') + med('http', c, 'p50_ms'):.2f} ms; "
                 f"with naive-rust's: {med('naive', c, 'p50_ms') + med('http', c, 'p50_ms'):.2f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
