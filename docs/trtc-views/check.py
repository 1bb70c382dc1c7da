#!/usr/bin/env python3
"""Checks the draft TRTC views (postgres.sql, sqlite.sql) on hand-made rows.

Loads callhook's migrations 0001-0003 (PostgreSQL) or 0001-0002 (SQLite), then the draft,
into a throwaway database of each kind, inserts the rows below, and checks that both give
the expected answers, row for row the same.

    python3 docs/trtc-views/check.py --pg-host /tmp/pgsock --pg-port 5432 [--pg-user postgres]

The PostgreSQL server is not started here; the script creates and drops a database
`trtc_views_check` on it. Without --pg-host only SQLite is checked.

The rows (sdkappid 1400000001 unless said):
  call-1  room 48213907 at 08:00, call callbacks (status) and room events; the callee mutes
          and turns the camera off, then times out; recorded (task T1) with both TRTC's
          recording events and Call.CallbackAfterRecordChanged; the recorder's own 103/104.
  call-2  the same room id at 10:00 (TRTC reuses it): v4 callbacks, the callee leaves 3 s
          after answering.
  room-7f3a at 12:00: room events only (an old client): a call known only from the room,
          recorded (task T3) without a record-changed callback.
  call-4  call callbacks only (no room events).
  app 1400000002, room 48213907 at 08:01: another app's room of the same id.
"""

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

APP, APP2 = 1400000001, 1400000002
ROBOT = "callkit_1400000001_record_48213907"


def t(hms):
    """2025-11-29, HH:MM:SS.mmm UTC."""
    return f"2025-11-29T{hms}Z"


ROWS = []


def row(family, command, **cols):
    cols.setdefault("sdkappid", APP)
    ROWS.append(dict(family=family, command=command, **cols))


def status(call, user, role, room, start, accept, end, result="normal_end"):
    row("status", "call_end", call_id=call, user_id=user, role=role, room_id=room,
        call_result=result, media_type="video", call_type="single", event_time=t(end),
        start_call_ts=t(start), accept_ts=t(accept), end_ts=t(end))


def trtc(etype, at, room, user=None, sdkappid=APP, **cols):
    family = {1: "room", 2: "media", 3: "recording"}[etype // 100]
    names = {101: "create_room", 102: "dismiss_room", 103: "enter_room", 104: "exit_room",
             201: "start_video", 202: "stop_video", 203: "start_audio", 204: "stop_audio",
             301: "recorder_start", 302: "recorder_stop", 311: "vod_commit", 312: "vod_stop"}
    row(family, "trtc", sdkappid=sdkappid, user_id=user, room_id=room, event=names[etype],
        trtc_group=etype // 100, trtc_event_type=etype, event_time=t(at), signed=1, **cols)


def record_changed(call, etype, at, room, task, **cols):
    names = {301: "recorder_start", 311: "vod_commit", 312: "vod_stop"}
    row("v4", "Call.CallbackAfterRecordChanged", call_id=call, room_id=room,
        event=names[etype], trtc_group=3, trtc_event_type=etype, event_time=t(at),
        task_id=task, kit_type=2, **cols)


R1, R3 = "48213907", "room-7f3a"
VOD1 = json.dumps({"TencentVod": {"FileId": "5285890812345678901", "MediaId": "mix",
                                  "VideoUrl": "https://vod.example/f0.mp4"}})
VOD3 = json.dumps({"TencentVod": {"FileId": "5285890899999999999", "MediaId": "mix"}})

# call-1: status callbacks of both participants, room and media events, a recording.
status("call-1", "user_a", "caller", R1, "08:00:00.000", "08:00:09.000", "08:03:03.000")
status("call-1", "user_b", "callee", R1, "08:00:00.000", "08:00:09.000", "08:03:03.000")
trtc(101, "08:00:00.119", R1, "user_a")
trtc(103, "08:00:00.120", R1, "user_a", trtc_role=20, terminal_type=2, user_type=3, reason=1)
trtc(203, "08:00:00.400", R1, "user_a")
trtc(201, "08:00:00.700", R1, "user_a")
trtc(103, "08:00:09.520", R1, "user_b", trtc_role=20, terminal_type=3, user_type=3, reason=1)
trtc(203, "08:00:09.970", R1, "user_b")
trtc(201, "08:00:10.020", R1, "user_b")
trtc(103, "08:00:10.600", R1, ROBOT, trtc_role=21, terminal_type=4, user_type=3, reason=1)
trtc(301, "08:00:10.620", R1, ROBOT, task_id="T1", trtc_status=0)
trtc(202, "08:01:10.220", R1, "user_b", reason=0)
trtc(204, "08:01:35.120", R1, "user_b", reason=0)
trtc(203, "08:01:45.120", R1, "user_b")
trtc(104, "08:03:03.200", R1, "user_a", trtc_role=20, reason=1)
trtc(104, "08:03:03.370", R1, "user_b", trtc_role=20, reason=2)
trtc(104, "08:03:06.000", R1, ROBOT, trtc_role=21, reason=1)
trtc(302, "08:03:06.000", R1, ROBOT, task_id="T1", leave_code=0)
trtc(102, "08:03:08.500", R1)
trtc(311, "08:04:10.000", R1, ROBOT, task_id="T1", trtc_status=0, files=VOD1)
trtc(312, "08:04:11.000", R1, ROBOT, task_id="T1", trtc_status=0)
record_changed("call-1", 301, "08:00:10.620", R1, "T1", trtc_status=0)
record_changed("call-1", 311, "08:04:10.000", R1, "T1", trtc_status=0, files=VOD1)

# call-2: the same room id two hours later; v4 callbacks; the callee stays 3 s.
row("v4", "Call.CallbackAfterEndCall", call_id="call-2", user_id="user_c", role="caller",
    room_id=R1, call_result="normal_end", media_type="audio", call_type="single",
    event_time=t("10:00:08.000"), start_call_ts=t("10:00:00.000"),
    accept_ts=t("10:00:05.000"), end_ts=t("10:00:08.000"))
row("v4", "Call.CallbackAfterMemberChanged", call_id="call-2", user_id="user_d",
    event="accept", event_time=t("10:00:05.000"))
row("v4", "Call.CallbackAfterMemberChanged", call_id="call-2", user_id="user_d",
    event="hangup", event_time=t("10:00:08.000"))
trtc(101, "10:00:00.200", R1, "user_c")
trtc(103, "10:00:00.210", R1, "user_c", trtc_role=20, terminal_type=1, user_type=1, reason=1)
trtc(203, "10:00:00.500", R1, "user_c")
trtc(103, "10:00:05.300", R1, "user_d", trtc_role=20, terminal_type=2, user_type=2, reason=1)
trtc(203, "10:00:05.600", R1, "user_d")
trtc(104, "10:00:08.300", R1, "user_d", trtc_role=20, reason=1)
trtc(104, "10:00:08.400", R1, "user_c", trtc_role=20, reason=1)
trtc(102, "10:00:09.000", R1)

# room-7f3a: room events only, recorded without a record-changed callback.
trtc(101, "12:00:00.000", R3, "user_x")
trtc(103, "12:00:00.010", R3, "user_x", trtc_role=20, terminal_type=3, user_type=3, reason=1)
trtc(203, "12:00:00.300", R3, "user_x")
trtc(103, "12:00:07.000", R3, "user_y", trtc_role=20, terminal_type=2, user_type=3, reason=1)
trtc(203, "12:00:07.200", R3, "user_y")
trtc(301, "12:00:08.000", R3, "callkit_1400000001_record_room-7f3a", task_id="T3",
     trtc_status=0)
trtc(104, "12:05:07.000", R3, "user_y", trtc_role=20, reason=1)
trtc(104, "12:05:07.500", R3, "user_x", trtc_role=20, reason=1)
trtc(302, "12:05:07.800", R3, "callkit_1400000001_record_room-7f3a", task_id="T3",
     leave_code=0)
trtc(102, "12:05:08.000", R3)
trtc(311, "12:06:00.000", R3, "callkit_1400000001_record_room-7f3a", task_id="T3",
     trtc_status=0, files=VOD3)

# call-4: call callbacks only.
status("call-4", "user_e", "caller", "55555555", "14:00:00.000", "14:00:04.000", "14:01:04.000")
status("call-4", "user_f", "callee", "55555555", "14:00:00.000", "14:00:04.000", "14:01:04.000")

# Another app, the same room id, at the same time as call-1.
trtc(101, "08:01:00.000", R1, "other_1", sdkappid=APP2)
trtc(103, "08:01:00.010", R1, "other_1", sdkappid=APP2, reason=1)
trtc(104, "08:01:30.010", R1, "other_1", sdkappid=APP2, reason=1)
trtc(102, "08:01:31.000", R1, sdkappid=APP2)

COLUMNS = ["sdkappid", "family", "command", "call_id", "user_id", "role", "event",
           "call_result", "media_type", "call_type", "room_id", "event_time", "start_call_ts",
           "accept_ts", "end_ts", "trtc_group", "trtc_event_type", "reason", "trtc_role",
           "terminal_type", "user_type", "task_id", "trtc_status", "leave_code", "kit_type",
           "files", "signed"]

# What each view is read as: (view, columns, order). Times, lists and JSON are normalised.
QUERIES = [
    ("room_sessions", ["sdkappid", "room_id", "session_no", "created_at", "dismissed_at",
                       "created_by", "users", "entries", "had_video", "events"],
     "sdkappid, room_id, session_no"),
    ("call_sessions", ["sdkappid", "call_id", "room_id", "session_no", "known_from"],
     "sdkappid, call_id"),
    ("call_presence", ["sdkappid", "call_id", "user_id", "entered_at", "left_at",
                       "seconds_in_room", "exit_reason", "audio_seconds", "video_seconds",
                       "source"], "sdkappid, call_id, user_id"),
    ("call_recordings", ["sdkappid", "call_id", "task_id", "status", "started_at",
                         "stopped_at", "files"], "sdkappid, call_id, task_id"),
    ("room_only_calls", ["sdkappid", "call_id", "caller", "callees", "media_type",
                         "call_type", "outcome", "started_at", "accepted_at", "ended_at",
                         "participants", "events", "day", "source"], "sdkappid, call_id"),
    # The README cookbook's questions, as part B would answer them.
    # "How many real seconds (minutes) did each user spend in calls that day?"
    ("(SELECT sdkappid, user_id, sum(seconds_in_room) AS seconds FROM call_presence"
     " WHERE entered_at >= '2025-11-29T00:00:00.000Z' AND entered_at < '2025-11-30T00:00:00.000Z'"
     " GROUP BY sdkappid, user_id) q", ["sdkappid", "user_id", "seconds"],
     "sdkappid, user_id"),
    # "Which calls had a participant leave within 5 s?"
    ("(SELECT DISTINCT call_id FROM call_presence WHERE seconds_in_room < 5) q",
     ["call_id"], "call_id"),
    # "Where is the recording of call X?"
    ("(SELECT task_id, status, files FROM call_recordings WHERE call_id = 'call-1') q",
     ["task_id", "status", "files"], "task_id"),
]

TS = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|\+00:00|\+00)?$")


def norm(col, v):
    if v is None:
        return None
    if col == "files":
        return json.loads(v) if isinstance(v, str) else v
    if col == "callees":
        return ",".join(v) if isinstance(v, list) else v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, str):
        m = TS.match(v)
        if m and m.group(2):
            frac = (m.group(3) or ".000")[1:].ljust(3, "0")[:3]
            return f"{m.group(1)}T{m.group(2)}.{frac}Z"
    return v


def sqlite_results():
    db = sqlite3.connect(":memory:")
    for name in ["0001_call_events.sql", "0002_analytics.sql"]:
        with open(os.path.join(ROOT, "migrations", "sqlite", name)) as f:
            db.executescript(f.read())
    with open(os.path.join(HERE, "sqlite.sql")) as f:
        db.executescript(f.read())
    cols = COLUMNS + ["payload", "dedupe_key"]
    for i, r in enumerate(ROWS):
        values = [r.get(c) for c in COLUMNS] + ["{}", i.to_bytes(8, "little")]
        db.execute(f"INSERT INTO call_events ({', '.join(cols)}) "
                   f"VALUES ({', '.join('?' * len(cols))})", values)
    out = {}
    for view, columns, order in QUERIES:
        cur = db.execute(f"SELECT {', '.join(columns)} FROM {view} ORDER BY {order}")
        out[view] = [[norm(c, v) for c, v in zip(columns, r)] for r in cur.fetchall()]
    return out


def pg_literal(c, v):
    if v is None:
        return "NULL"
    if c == "signed":
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def pg_results(host, port, user):
    def psql(db, sql):
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p",
                            str(port), "-U", user, "-d", db, "-At"],
                           input=sql, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"psql failed:\n{p.stderr}")
        return p.stdout

    psql("postgres", "DROP DATABASE IF EXISTS trtc_views_check;"
                     "CREATE DATABASE trtc_views_check;")
    try:
        script = []
        for name in ["0001_call_events.sql", "0002_analytics.sql",
                     "0003_drop_redundant_call_index.sql"]:
            with open(os.path.join(ROOT, "migrations", "postgres", name)) as f:
                script.append(f.read())
        with open(os.path.join(HERE, "postgres.sql")) as f:
            script.append(f.read())
        cols = COLUMNS + ["payload", "dedupe_key"]
        for i, r in enumerate(ROWS):
            values = [pg_literal(c, r.get(c)) for c in COLUMNS]
            values += ["'{}'", f"'\\x{i.to_bytes(8, 'little').hex()}'"]
            script.append(f"INSERT INTO call_events ({', '.join(cols)}) "
                          f"VALUES ({', '.join(values)});")
        psql("trtc_views_check", "\n".join(script))
        out = {}
        for view, columns, order in QUERIES:
            text = psql("trtc_views_check",
                        f"SELECT coalesce(json_agg(json_build_array({', '.join(columns)})), '[]')"
                        f" FROM (SELECT * FROM {view} ORDER BY {order}) v;")
            out[view] = [[norm(c, v) for c, v in zip(columns, r)] for r in json.loads(text)]
        return out
    finally:
        psql("postgres", "DROP DATABASE IF EXISTS trtc_views_check;")


S1 = "room:48213907@1764403260000"  # the other app's session start, Unix ms
S3 = "room:room-7f3a@1764417600000"

EXPECTED = {
    "room_sessions": [
        [APP, "48213907", 1, t("08:00:00.119"), t("08:03:08.500"), "user_a", 3, 3, 1, 15],
        [APP, "48213907", 2, t("10:00:00.200"), t("10:00:09.000"), "user_c", 2, 2, 0, 8],
        [APP, "room-7f3a", 1, t("12:00:00.000"), t("12:05:08.000"), "user_x", 2, 2, 0, 8],
        [APP2, "48213907", 1, t("08:01:00.000"), t("08:01:31.000"), "other_1", 1, 1, 0, 4],
    ],
    "call_sessions": [
        [APP, "call-1", "48213907", 1, "call_callbacks"],
        [APP, "call-2", "48213907", 2, "call_callbacks"],
        [APP, S3, "room-7f3a", 1, "room_events"],
        [APP2, S1, "48213907", 1, "room_events"],
    ],
    "call_presence": [
        # user_a: 183.08 s, audio from 00.400 and video from 00.700 until the exit.
        [APP, "call-1", "user_a", t("08:00:00.120"), t("08:03:03.200"), 183.08, "left",
         182.8, 182.5, "both"],
        # user_b: muted 08:01:35.120-08:01:45.120, camera off from 08:01:10.220, timed out.
        [APP, "call-1", "user_b", t("08:00:09.520"), t("08:03:03.370"), 173.85, "timeout",
         163.4, 60.2, "both"],
        [APP, "call-2", "user_c", t("10:00:00.210"), t("10:00:08.400"), 8.19, "left", 7.9,
         None, "both"],
        [APP, "call-2", "user_d", t("10:00:05.300"), t("10:00:08.300"), 3.0, "left", 2.7,
         None, "both"],
        [APP, "call-4", "user_e", t("14:00:04.000"), t("14:01:04.000"), 60.0, None, None,
         None, "call_callbacks"],
        [APP, "call-4", "user_f", t("14:00:04.000"), t("14:01:04.000"), 60.0, None, None,
         None, "call_callbacks"],
        [APP, S3, "user_x", t("12:00:00.010"), t("12:05:07.500"), 307.49, "left", 307.2,
         None, "room_events"],
        [APP, S3, "user_y", t("12:00:07.000"), t("12:05:07.000"), 300.0, "left", 299.8,
         None, "room_events"],
        [APP2, S1, "other_1", t("08:01:00.010"), t("08:01:30.010"), 30.0, "left", None, None,
         "room_events"],
    ],
    "call_recordings": [
        [APP, "call-1", "T1", "done", t("08:00:10.620"), t("08:03:06.000"),
         [json.loads(VOD1)]],
        [APP, S3, "T3", "uploaded", t("12:00:08.000"), t("12:05:07.800"),
         [json.loads(VOD3)]],
    ],
    "room_only_calls": [
        [APP, S3, "user_x", "user_y", "audio", "single", None, t("12:00:00.000"),
         t("12:00:07.000"), t("12:05:08.000"), 2, 8, "2025-11-29", "room_events"],
        [APP2, S1, "other_1", "", "audio", "single", None, t("08:01:00.000"), None,
         t("08:01:31.000"), 1, 4, "2025-11-29", "room_events"],
    ],
}


EXPECTED["cookbook: seconds per user"] = [
    [APP, "user_a", 183.08], [APP, "user_b", 173.85], [APP, "user_c", 8.19],
    [APP, "user_d", 3.0], [APP, "user_e", 60.0], [APP, "user_f", 60.0],
    [APP, "user_x", 307.49], [APP, "user_y", 300.0], [APP2, "other_1", 30.0],
]
EXPECTED["cookbook: left within 5 s"] = [["call-2"]]
EXPECTED["cookbook: recording of call-1"] = [["T1", "done", [json.loads(VOD1)]]]
COOKBOOK = {q[0]: k for q, k in zip(QUERIES[-3:], [k for k in EXPECTED if k.startswith("cookbook")])}


def compare(name, got):
    got = {COOKBOOK.get(view, view): rows for view, rows in got.items()}
    ok = True
    for view, want in EXPECTED.items():
        if got[view] != want:
            ok = False
            print(f"{name}: {view} differs")
            for g in got[view]:
                print("  got ", g)
            for w in want:
                print("  want", w)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-host")
    ap.add_argument("--pg-port", default=5432, type=int)
    ap.add_argument("--pg-user", default="postgres")
    args = ap.parse_args()
    results = {"sqlite": sqlite_results()}
    if args.pg_host:
        results["postgres"] = pg_results(args.pg_host, args.pg_port, args.pg_user)
    ok = all([compare(name, got) for name, got in results.items()])
    for name in results:
        print(f"{name}: {'ok' if ok else 'see above'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
