-- TRTC's own callbacks (issue 16; README: "TRTC callbacks", "Schema"): room, media and
-- cloud-recording events, and Call.CallbackAfterRecordChanged, stored as rows of
-- call_events, and the views that join them to calls.
--
-- call_events gains the columns only these rows fill (NULL on every call-callback row; a
-- NULL costs a bit in the row's null bitmap, nothing else):
--   trtc_event_type  EventType as sent (event holds its name; NULL name: a type callhook
--                    does not know). Its group is trtc_event_type / 100.
--   unique_id        EventInfo.UniqueId (room events of apps configured before 2021-07-30)
--   terminal_type    EventInfo.TerminalType (103): 1 Windows, 2 Android, 3 iOS, 4 Linux, 100 other
--   user_type        EventInfo.UserType (103): 1 WebRTC, 2 mini program, 3 native SDK
--   reason           EventInfo.Reason: 103 1..4; 104 1 left, 2 timeout, 3 removed,
--                    4 cross-room link ended, 5 process killed; media stops send 0
--   task_id          EventInfo.TaskId: the recording task
--   trtc_status      Payload.Status; for 302 and 305 Payload.LeaveCode
--   files            the recording payload's file members, values as received (json)
-- role holds the TRTC role as a name (anchor, audience; another number as text).
ALTER TABLE call_events
    ADD COLUMN trtc_event_type integer,
    ADD COLUMN unique_id       text,
    ADD COLUMN terminal_type   integer,
    ADD COLUMN user_type       integer,
    ADD COLUMN reason          integer,
    ADD COLUMN task_id         text,
    ADD COLUMN trtc_status     integer,
    ADD COLUMN files           json;

-- Both indexes hold TRTC rows only, so the call families' inserts do not maintain them.
CREATE INDEX call_events_room_idx ON call_events (sdkappid, room_id, event_time)
    WHERE family IN ('room', 'media', 'recording');
CREATE INDEX call_events_task_idx ON call_events (sdkappid, task_id)
    WHERE task_id IS NOT NULL;

-- Room and media events numbered into room sessions. TRTC reuses room ids, so a room's
-- events are cut into sessions: a session starts with a 101 (room created), with the first
-- event after a 102 (room dismissed), or with the room's first event. Events of one
-- millisecond sort 101 first and 102 last. (A helper of the views below, not an interface.)
-- The family condition is the room index's, so SQLite's spelling can use it too.
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
                WHEN lag(e.id) OVER w IS NULL THEN 1
                WHEN lag(e.trtc_event_type) OVER w = 102 THEN 1
                ELSE 0
           END AS starts
    FROM call_events e
    WHERE e.family IN ('room', 'media', 'recording') AND e.family <> 'recording'
      AND e.room_id IS NOT NULL AND e.event_time IS NOT NULL
    WINDOW w AS (PARTITION BY e.sdkappid, e.room_id
                 ORDER BY e.event_time,
                          CASE e.trtc_event_type WHEN 101 THEN 0 WHEN 102 THEN 2 ELSE 1 END,
                          e.id)
) t;

-- One row per room session: created (101) and dismissed (102) when seen, the first and
-- last event, who created it, how many users entered (distinct) and how often, whether
-- anyone sent video, how many events.
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
-- reason), else until the session was dismissed (exit_reason NULL). (A helper.)
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
-- the session ended. (A helper.)
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

-- Each call's room and time span, from its call callbacks (Call.CallbackAfterRecordChanged
-- left out: its times are the recording's): the room named (the smallest, should they
-- differ), from the earliest start (else event time, else arrival) to the latest end (else
-- event time, else arrival). (A helper.)
CREATE VIEW call_rooms AS
SELECT sdkappid,
       call_id,
       min(room_id COLLATE "C") COLLATE "default" AS room_id,
       min(coalesce(start_call_ts, event_time, received_at)) AS span_start,
       max(coalesce(end_ts, event_time, received_at)) AS span_end
FROM call_events
WHERE family IN ('status', 'event', 'v4') AND call_id IS NOT NULL AND trtc_event_type IS NULL
GROUP BY sdkappid, call_id
HAVING min(room_id) IS NOT NULL;

-- Which room session belongs to which call: a session of the call's room (same app)
-- overlapping the call's span, with 60 s of slack each side. A session no call claims is
-- a call of its own, known only from room events, with the synthetic id
-- 'room:<room_id>@<session start, Unix ms>'. (A session's first event is its 101 when
-- there is one, its last its 102: first_event_at and last_event_at bound it.)
CREATE VIEW call_sessions AS
SELECT cr.sdkappid, cr.call_id, rs.room_id, rs.session_no, 'call_callbacks' AS known_from
FROM call_rooms cr
JOIN room_sessions rs
  ON rs.sdkappid = cr.sdkappid AND rs.room_id = cr.room_id
 AND rs.first_event_at <= cr.span_end + interval '60 seconds'
 AND rs.last_event_at >= cr.span_start - interval '60 seconds'
UNION ALL
SELECT rs.sdkappid,
       'room:' || rs.room_id || '@'
           || round(extract(epoch FROM rs.first_event_at) * 1000)::bigint,
       rs.room_id, rs.session_no, 'room_events'
FROM room_sessions rs
WHERE NOT EXISTS (
    SELECT 1
    FROM call_rooms cr
    WHERE cr.sdkappid = rs.sdkappid AND cr.room_id = rs.room_id
      AND rs.first_event_at <= cr.span_end + interval '60 seconds'
      AND rs.last_event_at >= cr.span_start - interval '60 seconds');

-- Per call and user: when they entered and left, seconds in the room (the sum of their
-- stays), the reason of their last exit, seconds with audio and with video on, and where
-- this comes from: room events ('room_events'), the call callbacks alone (accept and end
-- times; no reason, no media: 'call_callbacks'), or both. Recording robots (the UserId of a
-- recording event in that room) are left out. NOT MATERIALIZED: a condition on the call
-- reaches every part.
CREATE VIEW call_presence AS
WITH room_side AS NOT MATERIALIZED (
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
                          WHERE r.family IN ('room', 'media', 'recording')
                            AND r.family = 'recording' AND r.sdkappid = st.sdkappid
                            AND r.room_id = st.room_id AND r.user_id = st.user_id)
    ) s
    GROUP BY sdkappid, call_id, user_id
),
media AS NOT MATERIALIZED (
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
callback_side AS NOT MATERIALIZED (
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
who AS NOT MATERIALIZED (
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
-- task_id on one row), or, without one, by the task's events in one of the call's room
-- sessions. status: 'failed' (a non-zero 301/311/312 status), 'done' (312), 'uploaded'
-- (311, 310, or 305 with LeaveCode 0), 'stopped' (302), 'recording' (301), else 'unknown'.
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
      ON e.sdkappid = cs.sdkappid AND e.room_id = cs.room_id
     AND e.family IN ('room', 'media', 'recording') AND e.family = 'recording'
     AND e.task_id IS NOT NULL
     AND e.event_time BETWEEN rs.first_event_at AND rs.last_event_at
    WHERE NOT EXISTS (SELECT 1 FROM call_events v
                      WHERE v.task_id IS NOT NULL AND v.family = 'v4'
                        AND v.sdkappid = e.sdkappid AND v.task_id = e.task_id)
),
task_events AS (
    SELECT l.sdkappid, l.call_id, l.task_id, e.family, e.trtc_event_type, e.trtc_status,
           e.event_time, e.files, e.id,
           bool_or(e.family = 'recording') OVER (PARTITION BY l.sdkappid, l.call_id, l.task_id)
               AS has_direct
    FROM links l
    JOIN call_events e
      ON e.task_id IS NOT NULL AND e.sdkappid = l.sdkappid AND e.task_id = l.task_id
     AND e.family IN ('recording', 'v4')
)
SELECT sdkappid,
       call_id,
       task_id,
       CASE
           WHEN bool_or(trtc_event_type IN (301, 311, 312) AND trtc_status <> 0) THEN 'failed'
           WHEN bool_or(trtc_event_type = 312) THEN 'done'
           WHEN bool_or(trtc_event_type IN (311, 310) OR (trtc_event_type = 305 AND trtc_status = 0))
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

-- The calls known only from room events, as rows of `calls`: the session's creator as
-- caller (else its first user), everyone else who entered as callees, video when anyone
-- sent video, group with more than two users, accepted when a second user entered, ended
-- when the room was dismissed (else at its last event). No outcome: room events do not
-- say. (A helper of `calls`.)
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
           rs.first_event_at AS started_at,
           rs.last_event_at AS ended_at,
           rs.users AS participants,
           rs.events
    FROM call_sessions cs
    JOIN room_sessions rs
      ON rs.sdkappid = cs.sdkappid AND rs.room_id = cs.room_id AND rs.session_no = cs.session_no
    WHERE cs.known_from = 'room_events'
) x;

-- `all_calls`: the columns of `calls` and a last one, `source`: 'call_callbacks' for a call
-- known from its call callbacks, 'both' when a room session of its room overlaps its span
-- (call_sessions's rule, checked here on the room index for this one call, so that a query
-- for one call stays fast), and 'room_events' for the calls known only from room events
-- (room_only_calls). The call-callback rows are exactly those of `calls` (migration 0005),
-- which keeps its columns and rows, so that call_stats_daily and existing queries mean what
-- they meant.
CREATE VIEW all_calls AS
SELECT r.sdkappid,
       r.call_id,
       r.caller,
       n.callees,
       r.media_type,
       r.call_type,
       r.outcome,
       r.started_at,
       r.accepted_at,
       r.ended_at,
       r.ring_ms::float8 / 1000 AS ring_seconds,
       r.talk_ms::float8 / 1000 AS talk_seconds,
       greatest(coalesce(r.total_num, 0),
                cardinality(n.callees) + CASE WHEN r.caller IS NULL THEN 0 ELSE 1 END)::bigint
           AS participants,
       r.events,
       r.day,
       (SELECT CASE WHEN k.room_id IS NOT NULL AND (
                        -- an event of the room inside the span (with the slack) …
                        EXISTS (SELECT 1 FROM call_events t
                                WHERE t.family IN ('room', 'media', 'recording')
                                  AND t.family <> 'recording'
                                  AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                  AND t.event_time >= k.span_start - interval '60 seconds'
                                  AND t.event_time <= k.span_end + interval '60 seconds')
                        -- … or one session around it: the last event before it is no
                        -- dismissal and the first after it no creation
                        OR (coalesce((SELECT coalesce(t.trtc_event_type, 0) FROM call_events t
                                      WHERE t.family IN ('room', 'media', 'recording')
                                        AND t.family <> 'recording'
                                        AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                        AND t.event_time < k.span_start - interval '60 seconds'
                                      ORDER BY t.event_time DESC,
                                               CASE t.trtc_event_type WHEN 101 THEN 0
                                                    WHEN 102 THEN 2 ELSE 1 END DESC,
                                               t.id DESC
                                      LIMIT 1), 102) <> 102
                            AND coalesce((SELECT coalesce(t.trtc_event_type, 0) FROM call_events t
                                          WHERE t.family IN ('room', 'media', 'recording')
                                            AND t.family <> 'recording'
                                            AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                            AND t.event_time > k.span_end + interval '60 seconds'
                                          ORDER BY t.event_time,
                                                   CASE t.trtc_event_type WHEN 101 THEN 0
                                                        WHEN 102 THEN 2 ELSE 1 END,
                                                   t.id
                                          LIMIT 1), 101) <> 101))
                    THEN 'both' ELSE 'call_callbacks' END
        FROM (SELECT min(e.room_id COLLATE "C") COLLATE "default" AS room_id,
                     min(coalesce(e.start_call_ts, e.event_time, e.received_at)) AS span_start,
                     max(coalesce(e.end_ts, e.event_time, e.received_at)) AS span_end
              FROM call_events e
              WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
                AND e.family IN ('status', 'event', 'v4') AND e.trtc_event_type IS NULL) k)
           AS source
FROM call_rollup r
CROSS JOIN LATERAL (
    SELECT ARRAY(
        SELECT DISTINCT u.name COLLATE "C"
        FROM (
            SELECT e.user_id AS name
            FROM call_events e
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
            UNION ALL
            SELECT m.name
            FROM call_events e
            CROSS JOIN LATERAL json_array_elements_text(e.members) AS m(name)
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.members IS NOT NULL
        ) u
        WHERE u.name <> '' AND u.name IS DISTINCT FROM r.caller
        ORDER BY 1
    ) AS callees
) n
UNION ALL
SELECT o.sdkappid,
       o.call_id,
       o.caller,
       o.callees,
       o.media_type,
       o.call_type,
       o.outcome,
       o.started_at,
       o.accepted_at,
       o.ended_at,
       round(extract(epoch FROM o.accepted_at - o.started_at) * 1000)::float8 / 1000,
       round(extract(epoch FROM o.ended_at - o.accepted_at) * 1000)::float8 / 1000,
       o.participants,
       o.events,
       o.day,
       o.source
FROM room_only_calls o;
