-- Tencent's own record of every call (issue 24; README: "Reconcile", "Schema"), fetched by
-- `callhook reconcile` from the call record API, and the views that use it where a call's
-- callbacks are missing.
--
-- call_records: one row per app and call, the record's fields typed (normalised to the
-- callbacks' vocabulary: normal_end, single, video, …), the record as received, when it was
-- first fetched and last seen. `day` is the UTC day the call counts on (its start; without
-- one its end; without either the day it was fetched), set by callhook on each write.
CREATE TABLE call_records (
    sdkappid     bigint      NOT NULL,
    call_id      text        NOT NULL,
    caller       text,
    callees      json        NOT NULL DEFAULT '[]',   -- CalleeList_Account, as listed
    media_type   text,
    call_type    text,
    call_result  text,
    started_at   timestamptz,
    accepted_at  timestamptz,
    ended_at     timestamptz,
    room_id      text,
    room_id_type integer,                            -- 1 numeric room id, 2 string
    day          date        NOT NULL,
    record       json        NOT NULL,               -- the record as received
    notes        text,                               -- what could not be read
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sdkappid, call_id)
);
CREATE INDEX call_records_day_idx ON call_records (day, sdkappid);
CREATE INDEX call_records_seen_idx ON call_records (sdkappid, last_seen_at);

-- One row per reconcile of one app and window: its progress (pages stored, so that an
-- interrupted run of the same window resumes), its outcome, and what it found. A window
-- whose run succeeded is where a call known only from callbacks is a gap (call_gaps).
CREATE TABLE reconcile_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sdkappid     bigint      NOT NULL,
    window_from  timestamptz NOT NULL,
    window_to    timestamptz NOT NULL,
    trigger      text        NOT NULL,               -- command | serve
    status       text        NOT NULL,               -- running | ok | failed
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    page_size    integer     NOT NULL,
    pages        integer     NOT NULL DEFAULT 0,     -- pages stored, in order
    total        bigint,                             -- TotalNum, as Tencent last said
    records      bigint      NOT NULL DEFAULT 0,     -- records stored
    requests     bigint      NOT NULL DEFAULT 0,     -- HTTP requests, retries included
    error        text
);
CREATE INDEX reconcile_runs_app_idx ON reconcile_runs (sdkappid, started_at);

-- The fold of a call's callbacks keeps its definition (0005) under a new name; the views
-- that read call_rollup follow the rename, and are redefined below on the new call_rollup.
ALTER VIEW call_rollup RENAME TO callback_rollup;

-- One row per call known from its callbacks, its record, or both. Where the callbacks do
-- not say (no event has a result, a start, …), the record does; otherwise the callbacks
-- decide, as before. A call whose callbacks say nobody answered (not_answer, reject,
-- call_busy, cancel) takes no accept time from its record, so it has no ring or talk time
-- (an interrupted call may have been answered, and takes it). `day` is the callbacks'
-- (0002's rule) when there are callbacks, else the record's. `source`: callbacks,
-- record_api or both. Calls known only from a record have no events (0) and no reported
-- TotalNum.
--
-- The record of a call with callbacks is read by correlated subqueries on its primary
-- key, and each only when the callbacks leave its column empty (COALESCE evaluates no
-- further), so that call_stats_daily, which reads neither `source` nor the start, probes
-- call_records only for what it lacks (docs/BENCHMARKS.md, "Analytics").
CREATE VIEW call_rollup AS
SELECT x.sdkappid,
       x.call_id,
       x.caller,
       x.media_type,
       x.call_type,
       x.outcome,
       x.started_at,
       x.accepted_at,
       x.ended_at,
       round(extract(epoch FROM x.accepted_at - x.started_at) * 1000)::bigint AS ring_ms,
       round(extract(epoch FROM x.ended_at - x.accepted_at) * 1000)::bigint AS talk_ms,
       x.total_num,
       x.events,
       x.day,
       x.source
FROM (
    SELECT b.sdkappid,
           b.call_id,
           coalesce(b.caller, (SELECT k.caller FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS caller,
           coalesce(b.media_type, (SELECT k.media_type FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS media_type,
           coalesce(b.call_type, (SELECT k.call_type FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS call_type,
           coalesce(b.outcome, (SELECT k.call_result FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS outcome,
           coalesce(b.started_at, (SELECT k.started_at FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS started_at,
           coalesce(b.accepted_at,
                    CASE WHEN b.outcome IS NULL
                              OR b.outcome NOT IN ('not_answer', 'reject', 'call_busy', 'cancel')
                         THEN (SELECT k.accepted_at FROM call_records k
                               WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)
                    END) AS accepted_at,
           coalesce(b.ended_at, (SELECT k.ended_at FROM call_records k
                     WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS ended_at,
           b.total_num,
           b.events,
           b.day,
           CASE WHEN EXISTS (SELECT 1 FROM call_records k
                             WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)
                THEN 'both' ELSE 'callbacks' END AS source
    FROM callback_rollup b
    UNION ALL
    SELECT k.sdkappid,
           k.call_id,
           k.caller,
           k.media_type,
           k.call_type,
           k.call_result,
           k.started_at,
           k.accepted_at,
           k.ended_at,
           NULL::bigint,
           0::bigint,
           k.day,
           'record_api'
    FROM call_records k
    WHERE NOT EXISTS (SELECT 1 FROM call_events e
                      WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id)
) x;

-- `calls`: 0005's columns and meanings, now over the calls of the new call_rollup, the
-- record's CalleeList_Account among the names of `callees`, and `source` last.
CREATE OR REPLACE VIEW calls AS
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
       r.source
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
            UNION ALL
            SELECT c.name
            FROM call_records k
            CROSS JOIN LATERAL json_array_elements_text(k.callees) AS c(name)
            WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
        ) u
        WHERE u.name <> '' AND u.name IS DISTINCT FROM r.caller
        ORDER BY 1
    ) AS callees
) n;

-- Unchanged (0005), over the new call_rollup: a call known only from its record counts
-- on its day like any other.
CREATE OR REPLACE VIEW call_stats_daily AS
SELECT day,
       sdkappid,
       count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'normal_end') AS answered,
       count(*) FILTER (WHERE outcome = 'not_answer') AS not_answer,
       count(*) FILTER (WHERE outcome = 'reject') AS reject,
       count(*) FILTER (WHERE outcome = 'call_busy') AS call_busy,
       count(*) FILTER (WHERE outcome = 'cancel') AS cancel,
       count(*) FILTER (WHERE outcome = 'interrupt') AS interrupt,
       (count(*) FILTER (WHERE outcome = 'normal_end'))::float8 / count(*) AS answer_rate,
       CASE WHEN count(talk_ms) > 0
            THEN ((2 * sum(talk_ms)::bigint + count(talk_ms)) / (2 * count(talk_ms)))::float8 / 1000
       END AS avg_talk_seconds,
       trunc(percentile_cont(0.5) WITHIN GROUP (ORDER BY talk_ms) + 0.5) / 1000
           AS p50_talk_seconds,
       trunc(percentile_cont(0.9) WITHIN GROUP (ORDER BY talk_ms) + 0.5) / 1000
           AS p90_talk_seconds
FROM call_rollup
GROUP BY day, sdkappid;

-- 0006's call_rooms, and the rooms of the calls known only from their records (room and
-- times from the record), so that their room sessions are theirs rather than calls of
-- their own in room_only_calls.
CREATE OR REPLACE VIEW call_rooms AS
SELECT sdkappid,
       call_id,
       min(room_id COLLATE "C") COLLATE "default" AS room_id,
       min(coalesce(start_call_ts, event_time, received_at)) AS span_start,
       max(coalesce(end_ts, event_time, received_at)) AS span_end
FROM call_events
WHERE family IN ('status', 'event', 'v4') AND call_id IS NOT NULL AND trtc_event_type IS NULL
GROUP BY sdkappid, call_id
HAVING min(room_id) IS NOT NULL
UNION ALL
SELECT k.sdkappid,
       k.call_id,
       k.room_id,
       coalesce(k.started_at, k.ended_at),
       coalesce(k.ended_at, k.started_at)
FROM call_records k
WHERE k.room_id IS NOT NULL AND coalesce(k.started_at, k.ended_at) IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM call_events e
                  WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id
                    AND e.family IN ('status', 'event', 'v4') AND e.trtc_event_type IS NULL
                    AND e.room_id IS NOT NULL);

-- `all_calls`: 0006's columns and meanings over the new call_rollup, and `call_source`
-- last (calls.source; NULL for the calls known only from room events). `source` keeps its
-- values: call_callbacks, both (room events of the call's room fall in its span), and
-- room_events; a call known only from its record (call_source record_api) is record_api,
-- or both when room events match it. Its room and span come from its record.
CREATE OR REPLACE VIEW all_calls AS
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
                        EXISTS (SELECT 1 FROM call_events t
                                WHERE t.family IN ('room', 'media', 'recording')
                                  AND t.family <> 'recording'
                                  AND t.sdkappid = r.sdkappid AND t.room_id = k.room_id
                                  AND t.event_time >= k.span_start - interval '60 seconds'
                                  AND t.event_time <= k.span_end + interval '60 seconds')
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
                    THEN 'both'
                    WHEN r.source = 'record_api' THEN 'record_api'
                    ELSE 'call_callbacks' END
        FROM (SELECT coalesce(min(e.room_id COLLATE "C") COLLATE "default", c.room_id) AS room_id,
                     coalesce(min(coalesce(e.start_call_ts, e.event_time, e.received_at)),
                              c.started_at, c.ended_at) AS span_start,
                     coalesce(max(coalesce(e.end_ts, e.event_time, e.received_at)),
                              c.ended_at, c.started_at) AS span_end
              FROM (SELECT 1) one
              LEFT JOIN call_events e
                ON e.sdkappid = r.sdkappid AND e.call_id = r.call_id
               AND e.family IN ('status', 'event', 'v4') AND e.trtc_event_type IS NULL
              LEFT JOIN call_records c ON c.sdkappid = r.sdkappid AND c.call_id = r.call_id
              GROUP BY c.room_id, c.started_at, c.ended_at) k)
           AS source,
       r.source AS call_source
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
            UNION ALL
            SELECT c.name
            FROM call_records k
            CROSS JOIN LATERAL json_array_elements_text(k.callees) AS c(name)
            WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
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
       o.source,
       NULL::text
FROM room_only_calls o;

-- Every disagreement between a call's callbacks and Tencent's record of it, one row per
-- call and kind:
--   missing_callbacks  Tencent recorded the call; none of its callbacks arrived
--   missing_record     callbacks of a call that ended, inside the window of a successful
--                      reconcile of its app that started after the call ended, and
--                      Tencent had no record of it
--   outcome            the callbacks' outcome (call_rollup's rule) is not the record's result
--   started_at, accepted_at, ended_at
--                      the callbacks' time and the record's differ by more than a second
-- `callbacks` and `record` are the two values as text (times as ISO-8601 UTC, ms), `day`
-- the call's, `call_time` when it started (else ended; else, known only from callbacks,
-- its first event). Filter on `day` (and sdkappid) to read a period fast.
CREATE VIEW call_gaps AS
SELECT k.sdkappid, k.call_id, k.day, coalesce(k.started_at, k.ended_at) AS call_time,
       'missing_callbacks' AS kind,
       NULL::text AS callbacks, k.call_result AS record
FROM call_records k
WHERE NOT EXISTS (SELECT 1 FROM call_events e
                  WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id)
UNION ALL
SELECT k.sdkappid, k.call_id, k.day, coalesce(k.started_at, k.ended_at), d.kind,
       d.callbacks, d.record
FROM call_records k
CROSS JOIN LATERAL (SELECT b.outcome, b.started_at, b.accepted_at, b.ended_at
                    FROM callback_rollup b
                    WHERE b.sdkappid = k.sdkappid AND b.call_id = k.call_id) b
CROSS JOIN LATERAL (VALUES
    ('outcome', b.outcome, k.call_result, b.outcome IS DISTINCT FROM k.call_result),
    ('started_at',
     to_char(b.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     to_char(k.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     abs(extract(epoch FROM b.started_at - k.started_at)) > 1),
    ('accepted_at',
     to_char(b.accepted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     to_char(k.accepted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     abs(extract(epoch FROM b.accepted_at - k.accepted_at)) > 1),
    ('ended_at',
     to_char(b.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     to_char(k.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
     abs(extract(epoch FROM b.ended_at - k.ended_at)) > 1)
) d(kind, callbacks, record, differs)
WHERE d.callbacks IS NOT NULL AND d.record IS NOT NULL AND d.differs
UNION ALL
SELECT r.sdkappid, r.call_id, r.day, r.placed_at, 'missing_record', r.outcome, NULL
FROM (SELECT b.*,
             coalesce(b.started_at, b.ended_at,
                      (SELECT min(e.event_time) FROM call_events e
                       WHERE e.sdkappid = b.sdkappid AND e.call_id = b.call_id)) AS placed_at,
             coalesce(b.ended_at, b.started_at,
                      (SELECT max(e.event_time) FROM call_events e
                       WHERE e.sdkappid = b.sdkappid AND e.call_id = b.call_id)) AS over_at
      FROM callback_rollup b
      WHERE (b.ended_at IS NOT NULL OR b.outcome IS NOT NULL)
        AND NOT EXISTS (SELECT 1 FROM call_records k
                        WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) r
WHERE EXISTS (SELECT 1 FROM reconcile_runs w
              WHERE w.sdkappid = r.sdkappid AND w.status = 'ok'
                AND r.placed_at >= w.window_from AND r.placed_at < w.window_to
                AND r.over_at < w.started_at);
