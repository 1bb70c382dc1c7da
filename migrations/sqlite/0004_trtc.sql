-- TRTC's own callbacks (issue 16), SQLite: the same columns, indexes and views as
-- PostgreSQL's 0006, with the same results (tests compare them). Read that file for what
-- each column and view means; this one notes where the spelling differs.
--
-- Syntax SQLite 3.37 understands, as in 0002 (no FILTER, no `->`, no ORDER BY inside
-- aggregates, no FULL JOIN, no LATERAL). Times are ISO-8601 UTC text of one width;
-- differences go through julianday() and are rounded to whole milliseconds; ± 60 s goes
-- through strftime(), which keeps the width, so text comparisons stay chronological.
-- Lists: `callees` comma-separated (as in `calls`), `files` a JSON array text.
--
-- SQLite uses a partial index only when the query repeats its condition, so every read of
-- TRTC rows says `family IN ('room', 'media', 'recording')` (then narrows it).
--
-- The columns are appended in the order of migrations/journal/0002_trtc.sql, which keeps
-- the outage journal's table in step.

ALTER TABLE call_events ADD COLUMN trtc_event_type INTEGER;
ALTER TABLE call_events ADD COLUMN unique_id TEXT;
ALTER TABLE call_events ADD COLUMN terminal_type INTEGER;
ALTER TABLE call_events ADD COLUMN user_type INTEGER;
ALTER TABLE call_events ADD COLUMN reason INTEGER;
ALTER TABLE call_events ADD COLUMN task_id TEXT;
ALTER TABLE call_events ADD COLUMN trtc_status INTEGER;
ALTER TABLE call_events ADD COLUMN files TEXT;

CREATE INDEX call_events_room_idx ON call_events (sdkappid, room_id, event_time)
    WHERE family IN ('room', 'media', 'recording');
CREATE INDEX call_events_task_idx ON call_events (sdkappid, task_id)
    WHERE task_id IS NOT NULL;

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

-- had_video: 1 or 0.
CREATE VIEW room_sessions AS
SELECT sdkappid,
       room_id,
       session_no,
       min(CASE WHEN trtc_event_type = 101 THEN event_time END) AS created_at,
       max(CASE WHEN trtc_event_type = 102 THEN event_time END) AS dismissed_at,
       min(event_time) AS first_event_at,
       max(event_time) AS last_event_at,
       min(CASE WHEN trtc_event_type = 101 THEN user_id END) AS created_by,
       count(DISTINCT CASE WHEN trtc_event_type = 103 THEN user_id END) AS users,
       sum(CASE WHEN trtc_event_type = 103 THEN 1 ELSE 0 END) AS entries,
       max(CASE WHEN trtc_event_type = 201 THEN 1 ELSE 0 END) AS had_video,
       count(*) AS events
FROM room_timeline
GROUP BY sdkappid, room_id, session_no;

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

CREATE VIEW call_rooms AS
SELECT sdkappid,
       call_id,
       min(room_id) AS room_id,
       min(coalesce(start_call_ts, event_time, received_at)) AS span_start,
       max(coalesce(end_ts, event_time, received_at)) AS span_end
FROM call_events
WHERE family IN ('status', 'event', 'v4') AND call_id IS NOT NULL AND trtc_event_type IS NULL
GROUP BY sdkappid, call_id
HAVING min(room_id) IS NOT NULL;

-- The synthetic id's milliseconds: julianday of the Unix epoch is 2440587.5.
CREATE VIEW call_sessions AS
SELECT cr.sdkappid, cr.call_id, rs.room_id, rs.session_no, 'call_callbacks' AS known_from
FROM call_rooms cr
JOIN room_sessions rs
  ON rs.sdkappid = cr.sdkappid AND rs.room_id = cr.room_id
 AND rs.first_event_at <= strftime('%Y-%m-%dT%H:%M:%fZ', cr.span_end, '+60 seconds')
 AND rs.last_event_at >= strftime('%Y-%m-%dT%H:%M:%fZ', cr.span_start, '-60 seconds')
UNION ALL
SELECT rs.sdkappid,
       'room:' || rs.room_id || '@'
           || CAST(round((julianday(rs.first_event_at) - 2440587.5) * 86400000.0) AS INTEGER),
       rs.room_id, rs.session_no, 'room_events'
FROM room_sessions rs
WHERE NOT EXISTS (
    SELECT 1
    FROM call_rooms cr
    WHERE cr.sdkappid = rs.sdkappid AND cr.room_id = rs.room_id
      AND rs.first_event_at <= strftime('%Y-%m-%dT%H:%M:%fZ', cr.span_end, '+60 seconds')
      AND rs.last_event_at >= strftime('%Y-%m-%dT%H:%M:%fZ', cr.span_start, '-60 seconds'));

CREATE VIEW call_presence AS
WITH room_side AS NOT MATERIALIZED (
    SELECT sdkappid, call_id, user_id,
           min(entered_at) AS entered_at,
           max(left_at) AS left_at,
           CAST(round(sum(julianday(left_at) - julianday(entered_at)) * 86400000.0) AS INTEGER)
               AS ms_in_room,
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
           CAST(round(sum(CASE WHEN mi.media = 'audio'
                               THEN julianday(mi.ended_at) - julianday(mi.started_at) END)
                      * 86400000.0) AS INTEGER) AS audio_ms,
           CAST(round(sum(CASE WHEN mi.media = 'video'
                               THEN julianday(mi.ended_at) - julianday(mi.started_at) END)
                      * 86400000.0) AS INTEGER) AS video_ms
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
                        min(CASE WHEN event IN ('accept', 'accept_call', 'call_accepted', 'join',
                                                'join_in_group_call')
                                 THEN event_time END)) AS entered_at,
               coalesce(max(end_ts),
                        max(CASE WHEN event IN ('hangup', 'call_end', 'call_interrupted',
                                                'offline')
                                 THEN event_time END)) AS left_at
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
                CAST(round((julianday(c.left_at) - julianday(c.entered_at)) * 86400000.0)
                     AS INTEGER)) / 1000.0 AS seconds_in_room,
       CASE r.exit_reason
           WHEN 1 THEN 'left' WHEN 2 THEN 'timeout' WHEN 3 THEN 'removed'
           WHEN 4 THEN 'cross_room_ended' WHEN 5 THEN 'process_killed'
           ELSE CAST(r.exit_reason AS TEXT)
       END AS exit_reason,
       m.audio_ms / 1000.0 AS audio_seconds,
       m.video_ms / 1000.0 AS video_seconds,
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

-- files: a JSON array text, built in event order by the window trick of `calls.callees`;
-- a files value that is not valid JSON (it always is: callhook writes it) would be a string
-- in it rather than break the view.
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
           max(CASE WHEN e.family = 'recording' THEN 1 ELSE 0 END)
               OVER (PARTITION BY l.sdkappid, l.call_id, l.task_id) AS has_direct
    FROM links l
    JOIN call_events e
      ON e.task_id IS NOT NULL AND e.sdkappid = l.sdkappid AND e.task_id = l.task_id
     AND e.family IN ('recording', 'v4')
)
SELECT g.sdkappid,
       g.call_id,
       g.task_id,
       g.status,
       g.started_at,
       g.stopped_at,
       (SELECT json_group_array(json(CASE WHEN json_valid(f.files) THEN f.files
                                          ELSE json_quote(f.files) END)) OVER (
                   ORDER BY f.event_time, f.id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        FROM task_events f
        WHERE f.sdkappid = g.sdkappid AND f.call_id = g.call_id AND f.task_id = g.task_id
          AND f.files IS NOT NULL AND (f.family = 'recording' OR f.has_direct = 0)
        LIMIT 1) AS files
FROM (
    SELECT sdkappid,
           call_id,
           task_id,
           CASE
               WHEN max(CASE WHEN trtc_event_type IN (301, 311, 312) AND trtc_status <> 0
                             THEN 1 ELSE 0 END) = 1 THEN 'failed'
               WHEN max(CASE WHEN trtc_event_type = 312 THEN 1 ELSE 0 END) = 1 THEN 'done'
               WHEN max(CASE WHEN trtc_event_type IN (311, 310)
                                  OR (trtc_event_type = 305 AND trtc_status = 0)
                             THEN 1 ELSE 0 END) = 1 THEN 'uploaded'
               WHEN max(CASE WHEN trtc_event_type = 302 THEN 1 ELSE 0 END) = 1 THEN 'stopped'
               WHEN max(CASE WHEN trtc_event_type = 301 THEN 1 ELSE 0 END) = 1 THEN 'recording'
               ELSE 'unknown'
           END AS status,
           min(CASE WHEN trtc_event_type = 301 THEN event_time END) AS started_at,
           max(CASE WHEN trtc_event_type = 302 THEN event_time END) AS stopped_at
    FROM task_events
    GROUP BY sdkappid, call_id, task_id
) g;

CREATE VIEW room_only_calls AS
SELECT x.sdkappid,
       x.call_id,
       x.caller,
       coalesce((
           SELECT group_concat(n.user_id, ',') OVER (
                      ORDER BY n.user_id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
           FROM (SELECT DISTINCT st.user_id
                 FROM room_stays st
                 WHERE st.sdkappid = x.sdkappid AND st.room_id = x.room_id
                   AND st.session_no = x.session_no AND st.user_id IS NOT x.caller) n
           LIMIT 1), '') AS callees,
       x.media_type,
       x.call_type,
       NULL AS outcome,
       x.started_at,
       (SELECT min(st.entered_at) FROM room_stays st
        WHERE st.sdkappid = x.sdkappid AND st.room_id = x.room_id
          AND st.session_no = x.session_no AND st.user_id IS NOT x.caller) AS accepted_at,
       x.ended_at,
       x.participants,
       x.events,
       date(x.started_at) AS day,
       'room_events' AS source
FROM (
    SELECT cs.sdkappid, cs.call_id, rs.room_id, rs.session_no,
           coalesce(rs.created_by,
                    (SELECT st.user_id FROM room_stays st
                     WHERE st.sdkappid = rs.sdkappid AND st.room_id = rs.room_id
                       AND st.session_no = rs.session_no
                     ORDER BY st.entered_at, st.user_id LIMIT 1)) AS caller,
           CASE WHEN rs.had_video = 1 THEN 'video' ELSE 'audio' END AS media_type,
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

-- `all_calls`: the rows of `calls` (0003, unchanged) with `source` last, then the calls
-- known only from room events. (`calls` itself keeps its columns and rows, so that
-- call_stats_daily and existing queries mean what they meant.)
CREATE VIEW all_calls AS
SELECT r.sdkappid,
       r.call_id,
       r.caller,
       coalesce((
           SELECT group_concat(n.name, ',') OVER (
                      ORDER BY n.name ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
           FROM (
               SELECT e.user_id AS name
               FROM call_events e
               WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
               UNION
               SELECT a.value
               FROM call_events e, json_each(e.members) a
               WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.members IS NOT NULL
           ) n
           WHERE n.name <> '' AND n.name IS NOT r.caller
           LIMIT 1), '') AS callees,
       r.media_type,
       r.call_type,
       r.outcome,
       r.started_at,
       r.accepted_at,
       r.ended_at,
       r.ring_ms / 1000.0 AS ring_seconds,
       r.talk_ms / 1000.0 AS talk_seconds,
       max(coalesce(r.total_num, 0), (
           SELECT count(DISTINCT n.name) + CASE WHEN r.caller IS NULL THEN 0 ELSE 1 END
           FROM (
               SELECT e.user_id AS name
               FROM call_events e
               WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
               UNION ALL
               SELECT a.value
               FROM call_events e, json_each(e.members) a
               WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.members IS NOT NULL
           ) n
           WHERE n.name <> '' AND n.name IS NOT r.caller)) AS participants,
       r.events,
       r.day,
       (SELECT CASE WHEN k.room_id IS NOT NULL AND (
                        EXISTS (SELECT 1 FROM call_events t
                                WHERE t.family IN ('room', 'media', 'recording')
                                  AND t.family <> 'recording'
                                  AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                  AND t.event_time >= strftime('%Y-%m-%dT%H:%M:%fZ', k.span_start,
                                                               '-60 seconds')
                                  AND t.event_time <= strftime('%Y-%m-%dT%H:%M:%fZ', k.span_end,
                                                               '+60 seconds'))
                        OR (coalesce((SELECT coalesce(t.trtc_event_type, 0) FROM call_events t
                                      WHERE t.family IN ('room', 'media', 'recording')
                                        AND t.family <> 'recording'
                                        AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                        AND t.event_time < strftime('%Y-%m-%dT%H:%M:%fZ',
                                                                    k.span_start, '-60 seconds')
                                      ORDER BY t.event_time DESC,
                                               CASE t.trtc_event_type WHEN 101 THEN 0
                                                    WHEN 102 THEN 2 ELSE 1 END DESC,
                                               t.id DESC
                                      LIMIT 1), 102) <> 102
                            AND coalesce((SELECT coalesce(t.trtc_event_type, 0) FROM call_events t
                                          WHERE t.family IN ('room', 'media', 'recording')
                                            AND t.family <> 'recording'
                                            AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                            AND t.event_time > strftime('%Y-%m-%dT%H:%M:%fZ',
                                                                        k.span_end, '+60 seconds')
                                          ORDER BY t.event_time,
                                                   CASE t.trtc_event_type WHEN 101 THEN 0
                                                        WHEN 102 THEN 2 ELSE 1 END,
                                                   t.id
                                          LIMIT 1), 101) <> 101))
                    THEN 'both' ELSE 'call_callbacks' END
        FROM (SELECT min(e.room_id) AS room_id,
                     min(coalesce(e.start_call_ts, e.event_time, e.received_at)) AS span_start,
                     max(coalesce(e.end_ts, e.event_time, e.received_at)) AS span_end
              FROM call_events e
              WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
                AND e.family IN ('status', 'event', 'v4') AND e.trtc_event_type IS NULL) k)
           AS source
FROM call_rollup r
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
       CAST(round((julianday(o.accepted_at) - julianday(o.started_at)) * 86400000.0) AS INTEGER)
           / 1000.0,
       CAST(round((julianday(o.ended_at) - julianday(o.accepted_at)) * 86400000.0) AS INTEGER)
           / 1000.0,
       o.participants,
       o.events,
       o.day,
       o.source
FROM room_only_calls o;
