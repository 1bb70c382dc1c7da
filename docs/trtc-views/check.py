#!/usr/bin/env python3
"""Checks the TRTC views of migrations/postgres/0006_trtc.sql and migrations/sqlite/0004_trtc.sql
on hand-made rows: both backends give the expected answers, row for row the same.

Loads every migration of each backend into a throwaway database, inserts the rows below,
and reads each view.

    python3 docs/trtc-views/check.py --pg-host /tmp/pgsock --pg-port 5432 [--pg-user postgres]

The PostgreSQL server is not started here; the script creates and drops a database
`trtc_views_check` on it. Without --pg-host only SQLite is checked. (The integration tests,
tests/it/trtc.rs, check the same views on rows stored through the real endpoint.)

The rows (sdkappid 1400000001 unless said):
  call-1  room 48213907 at 08:00, call callbacks (status) and room events; the callee mutes
          and turns the camera off, then times out; recorded (task T1) with both TRTC's
          recording events and Call.CallbackAfterRecordChanged; the recorder's own 103/104.
  call-2  the same room id at 10:00 (TRTC reuses it): v4 callbacks, the callee leaves 3 s
          after answering.
  room-7f3a at 12:00: room events only (an old client): a call known only from the room,
          recorded (task T3) without a record-changed callback.
  call-4  call callbacks only (no room events).
  call-5  call callbacks at 16:00 in room 777 whose session began at 15:58 and ends at
          16:10 with no event during the call (its session straddles the call).
  call-6  call callbacks at 18:00 in room 888, between two sessions of that room (the first
          without its 102): neither is the call's; both are calls known only from the room.
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
    if "trtc_role" in cols:
        cols["role"] = {20: "anchor", 21: "audience"}[cols.pop("trtc_role")]
    if "leave_code" in cols:
        cols["trtc_status"] = cols.pop("leave_code")
    row(family, "trtc", sdkappid=sdkappid, user_id=user, room_id=room, event=names[etype],
        trtc_event_type=etype, event_time=t(at), **cols)


def record_changed(call, etype, at, room, task, **cols):
    names = {301: "recorder_start", 311: "vod_commit", 312: "vod_stop"}
    row("v4", "Call.CallbackAfterRecordChanged", call_id=call, room_id=room,
        event=names[etype], trtc_event_type=etype, event_time=t(at), task_id=task, **cols)


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

# call-5: a session of room 777 around the call, without an event during it.
status("call-5", "user_g", "caller", "777", "16:00:00.000", "16:00:03.000", "16:01:00.000")
trtc(101, "15:58:00.000", "777", "user_g")
trtc(103, "15:58:00.100", "777", "user_g", trtc_role=20, reason=1)
trtc(104, "16:10:00.000", "777", "user_g", trtc_role=20, reason=1)
trtc(102, "16:10:01.000", "777")

# call-6: call callbacks at 18:00 in room 888, between a session whose dismissal was lost
# (17:00-17:05) and the next one (19:00): neither is the call's.
status("call-6", "user_h", "caller", "888", "18:00:00.000", "18:00:02.000", "18:00:30.000")
trtc(101, "17:00:00.000", "888", "user_i")
trtc(103, "17:00:01.000", "888", "user_i", trtc_role=20, reason=1)
trtc(104, "17:05:00.000", "888", "user_i", trtc_role=20, reason=2)
trtc(101, "19:00:00.000", "888", "user_j")
trtc(103, "19:00:01.000", "888", "user_j", trtc_role=20, reason=1)
trtc(104, "19:02:00.000", "888", "user_j", trtc_role=20, reason=1)
trtc(102, "19:02:01.000", "888")

# Another app, the same room id, at the same time as call-1.
trtc(101, "08:01:00.000", R1, "other_1", sdkappid=APP2)
trtc(103, "08:01:00.010", R1, "other_1", sdkappid=APP2, reason=1)
trtc(104, "08:01:30.010", R1, "other_1", sdkappid=APP2, reason=1)
trtc(102, "08:01:31.000", R1, sdkappid=APP2)

COLUMNS = ["sdkappid", "family", "command", "call_id", "user_id", "role", "event",
           "call_result", "media_type", "call_type", "room_id", "event_time", "start_call_ts",
           "accept_ts", "end_ts", "trtc_event_type", "reason", "terminal_type", "user_type",
           "task_id", "trtc_status", "files"]

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
    ("all_calls", ["sdkappid", "call_id", "caller", "callees", "outcome", "started_at",
               "accepted_at", "ended_at", "ring_seconds", "talk_seconds", "participants",
               "events", "day", "source"], "sdkappid, call_id"),
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


def migrations(backend):
    d = os.path.join(ROOT, "migrations", backend)
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".sql")]


def sqlite_results():
    db = sqlite3.connect(":memory:")
    for name in migrations("sqlite"):
        with open(name) as f:
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
        for name in migrations("postgres"):
            with open(name) as f:
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
S8A = "room:888@1764435600000"  # room 888, the session without its dismissal
S8B = "room:888@1764442800000"

EXPECTED = {
    "room_sessions": [
        [APP, "48213907", 1, t("08:00:00.119"), t("08:03:08.500"), "user_a", 3, 3, 1, 15],
        [APP, "48213907", 2, t("10:00:00.200"), t("10:00:09.000"), "user_c", 2, 2, 0, 8],
        [APP, "777", 1, t("15:58:00.000"), t("16:10:01.000"), "user_g", 1, 1, 0, 4],
        [APP, "888", 1, t("17:00:00.000"), None, "user_i", 1, 1, 0, 3],
        [APP, "888", 2, t("19:00:00.000"), t("19:02:01.000"), "user_j", 1, 1, 0, 4],
        [APP, "room-7f3a", 1, t("12:00:00.000"), t("12:05:08.000"), "user_x", 2, 2, 0, 8],
        [APP2, "48213907", 1, t("08:01:00.000"), t("08:01:31.000"), "other_1", 1, 1, 0, 4],
    ],
    "call_sessions": [
        [APP, "call-1", "48213907", 1, "call_callbacks"],
        [APP, "call-2", "48213907", 2, "call_callbacks"],
        [APP, "call-5", "777", 1, "call_callbacks"],
        [APP, S8A, "888", 1, "room_events"],
        [APP, S8B, "888", 2, "room_events"],
        [APP, S3, "room-7f3a", 1, "room_events"],
        [APP2, S1, "48213907", 1, "room_events"],
    ],
    "call_presence": [
        [APP, "call-1", "user_a", t("08:00:00.120"), t("08:03:03.200"), 183.08, "left", 182.8, 182.5, "both"],
        [APP, "call-1", "user_b", t("08:00:09.520"), t("08:03:03.370"), 173.85, "timeout", 163.4, 60.2, "both"],
        [APP, "call-2", "user_c", t("10:00:00.210"), t("10:00:08.400"), 8.19, "left", 7.9, None, "both"],
        [APP, "call-2", "user_d", t("10:00:05.300"), t("10:00:08.300"), 3.0, "left", 2.7, None, "both"],
        [APP, "call-4", "user_e", t("14:00:04.000"), t("14:01:04.000"), 60.0, None, None, None, "call_callbacks"],
        [APP, "call-4", "user_f", t("14:00:04.000"), t("14:01:04.000"), 60.0, None, None, None, "call_callbacks"],
        [APP, "call-5", "user_g", t("15:58:00.100"), t("16:10:00.000"), 719.9, "left", None, None, "both"],
        [APP, "call-6", "user_h", t("18:00:02.000"), t("18:00:30.000"), 28.0, None, None, None, "call_callbacks"],
        [APP, S8A, "user_i", t("17:00:01.000"), t("17:05:00.000"), 299.0, "timeout", None, None, "room_events"],
        [APP, S8B, "user_j", t("19:00:01.000"), t("19:02:00.000"), 119.0, "left", None, None, "room_events"],
        [APP, S3, "user_x", t("12:00:00.010"), t("12:05:07.500"), 307.49, "left", 307.2, None, "room_events"],
        [APP, S3, "user_y", t("12:00:07.000"), t("12:05:07.000"), 300.0, "left", 299.8, None, "room_events"],
        [APP2, S1, "other_1", t("08:01:00.010"), t("08:01:30.010"), 30.0, "left", None, None, "room_events"],
    ],
    "call_recordings": [
        [APP, "call-1", "T1", "done", t("08:00:10.620"), t("08:03:06.000"), [json.loads(VOD1)]],
        [APP, S3, "T3", "uploaded", t("12:00:08.000"), t("12:05:07.800"), [json.loads(VOD3)]],
    ],
    "room_only_calls": [
        [APP, S8A, "user_i", "", "audio", "single", None, t("17:00:00.000"), None, t("17:05:00.000"), 1, 3, "2025-11-29", "room_events"],
        [APP, S8B, "user_j", "", "audio", "single", None, t("19:00:00.000"), None, t("19:02:01.000"), 1, 4, "2025-11-29", "room_events"],
        [APP, S3, "user_x", "user_y", "audio", "single", None, t("12:00:00.000"), t("12:00:07.000"), t("12:05:08.000"), 2, 8, "2025-11-29", "room_events"],
        [APP2, S1, "other_1", "", "audio", "single", None, t("08:01:00.000"), None, t("08:01:31.000"), 1, 4, "2025-11-29", "room_events"],
    ],
    "all_calls": [
        [APP, "call-1", "user_a", "user_b", "normal_end", t("08:00:00.000"), t("08:00:09.000"), t("08:03:03.000"), 9.0, 174.0, 2, 4, "2025-11-29", "both"],
        [APP, "call-2", "user_c", "user_d", "normal_end", t("10:00:00.000"), t("10:00:05.000"), t("10:00:08.000"), 5.0, 3.0, 2, 3, "2025-11-29", "both"],
        [APP, "call-4", "user_e", "user_f", "normal_end", t("14:00:00.000"), t("14:00:04.000"), t("14:01:04.000"), 4.0, 60.0, 2, 2, "2025-11-29", "call_callbacks"],
        [APP, "call-5", "user_g", "", "normal_end", t("16:00:00.000"), t("16:00:03.000"), t("16:01:00.000"), 3.0, 57.0, 1, 1, "2025-11-29", "both"],
        [APP, "call-6", "user_h", "", "normal_end", t("18:00:00.000"), t("18:00:02.000"), t("18:00:30.000"), 2.0, 28.0, 1, 1, "2025-11-29", "call_callbacks"],
        [APP, S8A, "user_i", "", None, t("17:00:00.000"), None, t("17:05:00.000"), None, None, 1, 3, "2025-11-29", "room_events"],
        [APP, S8B, "user_j", "", None, t("19:00:00.000"), None, t("19:02:01.000"), None, None, 1, 4, "2025-11-29", "room_events"],
        [APP, S3, "user_x", "user_y", None, t("12:00:00.000"), t("12:00:07.000"), t("12:05:08.000"), 7.0, 301.0, 2, 8, "2025-11-29", "room_events"],
        [APP2, S1, "other_1", "", None, t("08:01:00.000"), None, t("08:01:31.000"), None, None, 1, 4, "2025-11-29", "room_events"],
    ],
}


EXPECTED["cookbook: seconds per user"] = [
    [APP, "user_a", 183.08],
    [APP, "user_b", 173.85],
    [APP, "user_c", 8.19],
    [APP, "user_d", 3.0],
    [APP, "user_e", 60.0],
    [APP, "user_f", 60.0],
    [APP, "user_g", 719.9],
    [APP, "user_h", 28.0],
    [APP, "user_i", 299.0],
    [APP, "user_j", 119.0],
    [APP, "user_x", 307.49],
    [APP, "user_y", 300.0],
    [APP2, "other_1", 30.0],
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
