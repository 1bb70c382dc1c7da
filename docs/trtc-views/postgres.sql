-- DRAFT for issue 16 part B (not a migration yet): TRTC room, media and recording events in
-- call_events, and the views that join them to calls. PostgreSQL. Checked by check.py on
-- hand-made rows (docs/trtc-callbacks.md, "Views"). The SQLite file next to it defines the
-- same views with the same results.
--
-- Assumes the rows described in docs/trtc-callbacks.md: family 'room' | 'media' |
-- 'recording' (other TRTC groups: 'trtc'), event = the event name (enter_room, …),
-- event_time = EventMsTs (else EventTs), user_id = EventInfo.UserId, room_id as text;
-- Call.CallbackAfterRecordChanged in family 'v4' with call_id = CallId, task_id and the
-- wrapped event's type, status and files, user_id NULL (the recorder is not a participant).

ALTER TABLE call_events
    ADD COLUMN trtc_group      integer,     -- EventGroupId as sent
    ADD COLUMN trtc_event_type integer,     -- EventType as sent (event: its name, NULL if unknown)
    ADD COLUMN callback_ts     timestamptz, -- CallbackTs: when TRTC sent this attempt
    ADD COLUMN room_id_type    smallint,    -- 1: RoomId came as a JSON number, 2: as a string
    ADD COLUMN unique_id       text,        -- EventInfo.UniqueId (older apps only)
    ADD COLUMN trtc_role       smallint,    -- 20 anchor, 21 audience
    ADD COLUMN terminal_type   smallint,    -- 1 Windows, 2 Android, 3 iOS, 4 Linux, 100 other
    ADD COLUMN user_type       smallint,    -- 1 WebRTC, 2 mini program, 3 native SDK
    ADD COLUMN reason          smallint,    -- 103: 1..4, 104: 1 left 2 timeout 3 removed 4 5; media stops 0
    ADD COLUMN task_id         text,        -- recording task (EventInfo.TaskId)
    ADD COLUMN trtc_status     integer,     -- EventInfo.Payload.Status
    ADD COLUMN leave_code      integer,     -- EventInfo.Payload.LeaveCode (302, 305)
    ADD COLUMN kit_type        smallint,    -- Call.CallbackAfterRecordChanged Callback.KitType
    ADD COLUMN files           json,        -- the payload's file members, values as received
    ADD COLUMN signed          boolean;     -- TRTC families: true Sign verified, false no key (unverified)

CREATE INDEX call_events_room_idx ON call_events (sdkappid, room_id, event_time)
    WHERE family IN ('room', 'media');
CREATE INDEX call_events_task_idx ON call_events (sdkappid, task_id)
    WHERE task_id IS NOT NULL;

-- Room and media events numbered into room sessions. TRTC reuses room ids, so a room's
-- events are cut into sessions: a session starts with a 101 (room created), with the first
-- event after a 102 (room dismissed), or with the room's first event. Events of one
-- millisecond sort 101 first and 102 last.
CREATE VIEW room_timeline AS
SELECT t.*,
       sum(t.starts) OVER (PARTITION BY t.sdkappid, t.room_id
                           ORDER BY t.event_time, t.ord, t.id
                           ROWS UNBOUNDED PRECEDING) AS session_no
FROM (
    SELECT e.id, e.sdkappid, e.room_id, e.trtc_event_type, e.user_id, e.event_time, e.reason,
           e.terminal_type, e.user_type,
           CASE e.trtc_event_type WHEN 101 THEN 0 WHEN 102 THEN 2 ELSE 1 END AS ord,
           CASE WHEN e.trtc_event_type = 101 THEN 1
                WHEN lag(e.trtc_event_type) OVER w IS NULL THEN 1
                WHEN lag(e.trtc_event_type) OVER w = 102 THEN 1
                ELSE 0
           END AS starts
    FROM call_events e
    WHERE e.family IN ('room', 'media') AND e.room_id IS NOT NULL AND e.event_time IS NOT NULL
    WINDOW w AS (PARTITION BY e.sdkappid, e.room_id
                 ORDER BY e.event_time,
                          CASE e.trtc_event_type WHEN 101 THEN 0 WHEN 102 THEN 2 ELSE 1 END,
                          e.id)
) t;

-- One row per room session: created (101) and dismissed (102) when seen, the first and
-- last event, who created it, how many users entered (distinct) and how often, whether
-- anyone sent video.
CREATE VIEW room_sessions AS
SELECT sdkappid,
       room_id,
       session_no,
       min(event_time) FILTER (WHERE trtc_event_type = 101) AS created_at,
       max(event_time) FILTER (WHERE trtc_event_type = 102) AS dismissed_at,
       min(event_time) AS first_event_at,
       max(event_time) AS last_event_at,
       min(user_id COLLATE "C") FILTER (WHERE trtc_event_type = 101) AS created_by,
       count(DISTINCT user_id) FILTER (WHERE trtc_event_type = 103) AS users,
       count(*) FILTER (WHERE trtc_event_type = 103) AS entries,
       coalesce(bool_or(trtc_event_type = 201), false) AS had_video,
       count(*) AS events
FROM room_timeline
GROUP BY sdkappid, room_id, session_no;

-- One row per entry (103): until the user's next event if that is an exit (104, with its
-- reason), else until the session was dismissed (exit_reason NULL).
CREATE VIEW room_stays AS
SELECT s.sdkappid, s.room_id, s.session_no, s.user_id, s.entered_at,
       coalesce(s.left_at, rs.dismissed_at) AS left_at,
       s.exit_reason, s.terminal_type, s.user_type
FROM (
    SELECT sdkappid, room_id, session_no, user_id, trtc_event_type, event_time AS entered_at,
           terminal_type, user_type,
           CASE WHEN lead(trtc_event_type) OVER u = 104 THEN lead(event_time) OVER u END AS left_at,
           CASE WHEN lead(trtc_event_type) OVER u = 104 THEN lead(reason) OVER u END AS exit_reason
    FROM room_timeline
    WHERE trtc_event_type IN (103, 104) AND user_id IS NOT NULL
    WINDOW u AS (PARTITION BY sdkappid, room_id, session_no, user_id ORDER BY event_time, id)
) s
JOIN room_sessions rs
  ON rs.sdkappid = s.sdkappid AND rs.room_id = s.room_id AND rs.session_no = s.session_no
WHERE s.trtc_event_type = 103;

-- One row per audio or video "on" (203, 201): until the user's next audio (video) event,
-- entry or exit — a stop (204, 202), an exit (104: TRTC sends no stop then) — else until
-- the session ended.
CREATE VIEW media_intervals AS
SELECT x.sdkappid, x.room_id, x.session_no, x.user_id, x.media, x.started_at,
       coalesce(x.ended_at, rs.dismissed_at, rs.last_event_at) AS ended_at
FROM (
    SELECT t.sdkappid, t.room_id, t.session_no, t.user_id, k.media, t.trtc_event_type, k.on_type,
           t.event_time AS started_at,
           lead(t.event_time) OVER (PARTITION BY t.sdkappid, t.room_id, t.session_no, t.user_id,
                                                 k.media
                                    ORDER BY t.event_time, t.id) AS ended_at
    FROM room_timeline t
    JOIN (SELECT 'audio' AS media, 203 AS on_type, 204 AS off_type
          UNION ALL SELECT 'video', 201, 202) k
      ON t.trtc_event_type IN (k.on_type, k.off_type, 103, 104)
    WHERE t.user_id IS NOT NULL
) x
JOIN room_sessions rs
  ON rs.sdkappid = x.sdkappid AND rs.room_id = x.room_id AND rs.session_no = x.session_no
WHERE x.trtc_event_type = x.on_type;

-- Which room session belongs to which call. A call (from its call callbacks) names its
-- room; its span is started_at..ended_at (else its events' first and last times). A session
-- of that room overlapping the span (60 s of slack each side) is the call's. A session no
-- call claims is a call of its own, known only from room events, with the synthetic id
-- 'room:<room_id>@<session start, Unix ms>'.
CREATE VIEW call_rooms AS
SELECT c.sdkappid, c.call_id, r.room_id,
       coalesce(c.started_at, r.first_at) AS span_start,
       coalesce(c.ended_at, r.last_at) AS span_end
FROM call_rollup c
JOIN (SELECT sdkappid, call_id, min(room_id COLLATE "C") AS room_id,
             min(event_time) AS first_at, max(event_time) AS last_at
      FROM call_events
      WHERE family IN ('status', 'event', 'v4') AND call_id IS NOT NULL AND room_id IS NOT NULL
      GROUP BY sdkappid, call_id) r
  ON r.sdkappid = c.sdkappid AND r.call_id = c.call_id;

CREATE VIEW call_sessions AS
SELECT m.sdkappid, m.call_id, m.room_id, m.session_no, 'call_callbacks' AS known_from
FROM (
    SELECT cr.sdkappid, cr.call_id, rs.room_id, rs.session_no
    FROM call_rooms cr
    JOIN room_sessions rs
      ON rs.sdkappid = cr.sdkappid AND rs.room_id = cr.room_id
     AND coalesce(rs.created_at, rs.first_event_at) <= cr.span_end + interval '60 seconds'
     AND coalesce(rs.dismissed_at, rs.last_event_at) >= cr.span_start - interval '60 seconds'
) m
UNION ALL
SELECT rs.sdkappid,
       'room:' || rs.room_id || '@'
           || round(extract(epoch FROM coalesce(rs.created_at, rs.first_event_at)) * 1000)::bigint,
       rs.room_id, rs.session_no, 'room_events'
FROM room_sessions rs
WHERE NOT EXISTS (
    SELECT 1
    FROM call_rooms cr
    WHERE cr.sdkappid = rs.sdkappid AND cr.room_id = rs.room_id
      AND coalesce(rs.created_at, rs.first_event_at) <= cr.span_end + interval '60 seconds'
      AND coalesce(rs.dismissed_at, rs.last_event_at) >= cr.span_start - interval '60 seconds');

-- Per call and user: when they entered and left, seconds in the room (the sum of their
-- stays), the reason of their last exit, seconds with audio and with video on, and where
-- this comes from: room events ('room_events'), the call callbacks alone (accept and end
-- times; no reason, no media), or both. Recording robots (the UserId of a recording
-- event in that room) are left out.
CREATE VIEW call_presence AS
WITH room_side AS (
    SELECT sdkappid, call_id, user_id,
           min(entered_at) AS entered_at,
           max(left_at) AS left_at,
           round(sum(extract(epoch FROM left_at - entered_at)) * 1000)::bigint AS ms_in_room,
           max(last_reason) AS exit_reason
    FROM (
        SELECT cs.sdkappid, cs.call_id, st.user_id, st.entered_at, st.left_at,
               first_value(st.exit_reason) OVER (
                   PARTITION BY cs.sdkappid, cs.call_id, st.user_id
                   ORDER BY st.left_at IS NULL, st.left_at DESC) AS last_reason
        FROM call_sessions cs
        JOIN room_stays st
          ON st.sdkappid = cs.sdkappid AND st.room_id = cs.room_id
         AND st.session_no = cs.session_no
        WHERE NOT EXISTS (SELECT 1 FROM call_events r
                          WHERE r.family = 'recording' AND r.sdkappid = st.sdkappid
                            AND r.room_id = st.room_id AND r.user_id = st.user_id)
    ) s
    GROUP BY sdkappid, call_id, user_id
),
media AS (
    SELECT cs.sdkappid, cs.call_id, mi.user_id,
           round(sum(extract(epoch FROM mi.ended_at - mi.started_at))
                 FILTER (WHERE mi.media = 'audio') * 1000)::bigint AS audio_ms,
           round(sum(extract(epoch FROM mi.ended_at - mi.started_at))
                 FILTER (WHERE mi.media = 'video') * 1000)::bigint AS video_ms
    FROM call_sessions cs
    JOIN media_intervals mi
      ON mi.sdkappid = cs.sdkappid AND mi.room_id = cs.room_id
     AND mi.session_no = cs.session_no
    GROUP BY cs.sdkappid, cs.call_id, mi.user_id
),
callback_side AS (
    SELECT *
    FROM (
        SELECT sdkappid, call_id, user_id,
               coalesce(min(accept_ts),
                        min(event_time) FILTER (WHERE event IN ('accept', 'accept_call',
                            'call_accepted', 'join', 'join_in_group_call'))) AS entered_at,
               coalesce(max(end_ts),
                        max(event_time) FILTER (WHERE event IN ('hangup', 'call_end',
                            'call_interrupted', 'offline'))) AS left_at
        FROM call_events
        WHERE family IN ('status', 'event', 'v4') AND call_id IS NOT NULL AND user_id IS NOT NULL
        GROUP BY sdkappid, call_id, user_id
    ) c
    WHERE entered_at IS NOT NULL
),
who AS (
    SELECT sdkappid, call_id, user_id FROM room_side
    UNION
    SELECT sdkappid, call_id, user_id FROM callback_side
)
SELECT w.sdkappid,
       w.call_id,
       w.user_id,
       coalesce(r.entered_at, c.entered_at) AS entered_at,
       coalesce(r.left_at, c.left_at) AS left_at,
       coalesce(r.ms_in_room,
                round(extract(epoch FROM c.left_at - c.entered_at) * 1000)::bigint)::float8 / 1000
           AS seconds_in_room,
       CASE r.exit_reason
           WHEN 1 THEN 'left' WHEN 2 THEN 'timeout' WHEN 3 THEN 'removed'
           WHEN 4 THEN 'cross_room_ended' WHEN 5 THEN 'process_killed'
           ELSE r.exit_reason::text
       END AS exit_reason,
       m.audio_ms::float8 / 1000 AS audio_seconds,
       m.video_ms::float8 / 1000 AS video_seconds,
       CASE WHEN r.user_id IS NOT NULL AND c.user_id IS NOT NULL THEN 'both'
            WHEN r.user_id IS NOT NULL THEN 'room_events'
            ELSE 'call_callbacks'
       END AS source
FROM who w
LEFT JOIN room_side r
  ON r.sdkappid = w.sdkappid AND r.call_id = w.call_id AND r.user_id = w.user_id
LEFT JOIN callback_side c
  ON c.sdkappid = w.sdkappid AND c.call_id = w.call_id AND c.user_id = w.user_id
LEFT JOIN media m
  ON m.sdkappid = w.sdkappid AND m.call_id = w.call_id AND m.user_id = w.user_id;

-- Per call and recording task: linked by Call.CallbackAfterRecordChanged (call_id and
-- task_id on one row), or, without it, by the task's events in one of the call's room
-- sessions. status: 'failed' (a non-zero 301/311/312 status), 'done' (312), 'uploaded'
-- (311, 310 or 305 without error), 'stopped' (302), 'recording' (301), else 'unknown'.
-- files: the files values of the task's recording events (of its record-changed callbacks
-- when TRTC's own did not arrive), in event order, as a JSON array.
CREATE VIEW call_recordings AS
WITH links AS (
    SELECT DISTINCT sdkappid, call_id, task_id
    FROM call_events
    WHERE family = 'v4' AND task_id IS NOT NULL AND call_id IS NOT NULL
    UNION
    SELECT cs.sdkappid, cs.call_id, e.task_id
    FROM call_sessions cs
    JOIN room_sessions rs
      ON rs.sdkappid = cs.sdkappid AND rs.room_id = cs.room_id AND rs.session_no = cs.session_no
    JOIN call_events e
      ON e.sdkappid = cs.sdkappid AND e.room_id = cs.room_id AND e.family = 'recording'
     AND e.task_id IS NOT NULL
     AND e.event_time BETWEEN coalesce(rs.created_at, rs.first_event_at)
                          AND coalesce(rs.dismissed_at, rs.last_event_at)
    WHERE NOT EXISTS (SELECT 1 FROM call_events v
                      WHERE v.family = 'v4' AND v.sdkappid = e.sdkappid AND v.task_id = e.task_id)
),
task_events AS (
    SELECT l.sdkappid, l.call_id, l.task_id, e.family, e.trtc_event_type, e.trtc_status,
           e.leave_code, e.event_time, e.files, e.id,
           bool_or(e.family = 'recording') OVER (PARTITION BY l.sdkappid, l.call_id, l.task_id)
               AS has_direct
    FROM links l
    JOIN call_events e
      ON e.sdkappid = l.sdkappid AND e.task_id = l.task_id
     AND e.family IN ('recording', 'v4')
)
SELECT sdkappid,
       call_id,
       task_id,
       CASE
           WHEN bool_or(trtc_event_type IN (301, 311, 312) AND trtc_status <> 0) THEN 'failed'
           WHEN bool_or(trtc_event_type = 312) THEN 'done'
           WHEN bool_or(trtc_event_type IN (311, 310) OR (trtc_event_type = 305 AND leave_code = 0))
               THEN 'uploaded'
           WHEN bool_or(trtc_event_type = 302) THEN 'stopped'
           WHEN bool_or(trtc_event_type = 301) THEN 'recording'
           ELSE 'unknown'
       END AS status,
       min(event_time) FILTER (WHERE trtc_event_type = 301) AS started_at,
       max(event_time) FILTER (WHERE trtc_event_type = 302) AS stopped_at,
       json_agg(files ORDER BY event_time, id)
           FILTER (WHERE files IS NOT NULL AND (family = 'recording' OR NOT has_direct)) AS files
FROM task_events
GROUP BY sdkappid, call_id, task_id;

-- The rows `calls` gains for sessions no call claims (known only from room events): the
-- session's creator as caller, everyone else who entered as callees, video when anyone
-- sent video, group with more than two users, accepted when a second user entered, ended
-- when the room was dismissed (else its last event). No outcome: room events do not say.
-- `calls` itself would become its current rows with source 'call_callbacks' (or 'both'
-- when a session matched) UNION ALL these.
CREATE VIEW room_only_calls AS
SELECT x.sdkappid,
       x.call_id,
       x.caller,
       ARRAY(SELECT DISTINCT st.user_id COLLATE "C"
             FROM room_stays st
             WHERE st.sdkappid = x.sdkappid AND st.room_id = x.room_id
               AND st.session_no = x.session_no AND st.user_id IS DISTINCT FROM x.caller
             ORDER BY 1) AS callees,
       x.media_type,
       x.call_type,
       NULL::text AS outcome,
       x.started_at,
       (SELECT min(st.entered_at) FROM room_stays st
        WHERE st.sdkappid = x.sdkappid AND st.room_id = x.room_id
          AND st.session_no = x.session_no AND st.user_id IS DISTINCT FROM x.caller)
           AS accepted_at,
       x.ended_at,
       x.participants,
       x.events,
       (x.started_at AT TIME ZONE 'UTC')::date AS day,
       'room_events' AS source
FROM (
    SELECT cs.sdkappid, cs.call_id, rs.room_id, rs.session_no,
           coalesce(rs.created_by,
                    (SELECT st.user_id FROM room_stays st
                     WHERE st.sdkappid = rs.sdkappid AND st.room_id = rs.room_id
                       AND st.session_no = rs.session_no
                     ORDER BY st.entered_at, st.user_id COLLATE "C" LIMIT 1)) AS caller,
           CASE WHEN rs.had_video THEN 'video' ELSE 'audio' END AS media_type,
           CASE WHEN rs.users > 2 THEN 'group' ELSE 'single' END AS call_type,
           coalesce(rs.created_at, rs.first_event_at) AS started_at,
           coalesce(rs.dismissed_at, rs.last_event_at) AS ended_at,
           rs.users AS participants,
           rs.events
    FROM call_sessions cs
    JOIN room_sessions rs
      ON rs.sdkappid = cs.sdkappid AND rs.room_id = cs.room_id AND rs.session_no = cs.session_no
    WHERE cs.known_from = 'room_events'
) x;
