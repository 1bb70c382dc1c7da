-- One call's `calls` row at a cost that does not grow with the partitions kept (issue 25;
-- docs/src/benchmarks/analytics.md, "One call's calls row").
--
-- A lookup by call names no partition key, so PostgreSQL plans every read of call_events
-- in it against every weekly partition. 0008's views read call_events five times for one
-- call (the call's days, its fold, the test for a call known only from its record, and
-- twice for the names in `callees`): 85 partition scans to plan at 17 partitions, 6 ms
-- warm and 15 to 25 ms on a new connection. Here they read it twice, and the answers are
-- the same (columns, types, collations and rows):
--
-- * callhook_call_fold(sdkappid, call_id) folds one call's events in one pass: 0005's
--   rules for every column, plus `names`, every user_id and v4 member its events name
--   (unsorted, with repeats; empty ones left out). It is a plain SQL function that
--   PostgreSQL inlines into the query that calls it, so conditions and unused columns are
--   planned through it as through a subquery: the rollup task, which reads neither the
--   names nor the start, still folds from the fold index alone. Its body is SQL-standard
--   (BEGIN ATOMIC, PostgreSQL 14 and later): like a view's, its tables are bound when it
--   is made, whatever the search_path of a query that uses it. Unlike a view, it reads
--   them with the rights of the role that queries, so a role that reads `calls` needs
--   SELECT on call_events and call_records too (docs/src/schema.md).
-- * call_rollup takes its calls from one list: each (app, call, day) its events fall on,
--   and each of Tencent's records. A call with events keeps the row whose day is the
--   fold's; a record is a call of its own only when the fold finds no events. A condition
--   on `day` reaches both parts of the list through their day indexes, as before.
-- * calls takes the names from the fold rather than reading the events again, and
--   all_calls reads calls rather than restating it.
-- * callback_rollup (call_gaps' fold of the callbacks alone) folds through the same
--   function, so the rules are written once.

CREATE FUNCTION callhook_call_fold(app bigint, call text)
RETURNS TABLE (caller text, media_type text, call_type text, outcome text,
               started_at timestamptz, accepted_at timestamptz, ended_at timestamptz,
               total_num bigint, events bigint, day date, names text[])
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
SELECT f.caller,
       f.media_type,
       f.call_type,
       CASE f.result_rank
           WHEN 1 THEN 'normal_end'
           WHEN 2 THEN 'reject'
           WHEN 3 THEN 'call_busy'
           WHEN 4 THEN 'not_answer'
           WHEN 5 THEN 'cancel'
           WHEN 6 THEN 'interrupt'
           WHEN 7 THEN 'offline'
           WHEN 8 THEN f.other_result
       END,
       f.started_at,
       f.accepted_at,
       f.ended_at,
       f.total_num,
       f.events,
       (coalesce(f.started_at, f.first_event_at, f.first_received_at) AT TIME ZONE 'UTC')::date,
       ARRAY(SELECT unnest(f.user_ids)
             UNION ALL
             SELECT json_array_elements_text(m) FROM json_array_elements(f.member_lists) AS m)
FROM (
    SELECT min(e.user_id COLLATE "C") FILTER (WHERE e.role = 'caller') AS caller,
           max(e.media_type COLLATE "C") AS media_type,
           max(e.call_type COLLATE "C") AS call_type,
           min(CASE e.call_result
                   WHEN 'normal_end' THEN 1
                   WHEN 'reject' THEN 2
                   WHEN 'call_busy' THEN 3
                   WHEN 'not_answer' THEN 4
                   WHEN 'cancel' THEN 5
                   WHEN 'interrupt' THEN 6
                   WHEN 'offline' THEN 7
                   ELSE 8
               END) AS result_rank,
           min(e.call_result COLLATE "C") FILTER (WHERE e.call_result NOT IN (
               'normal_end', 'reject', 'call_busy', 'not_answer', 'cancel', 'interrupt',
               'offline')) AS other_result,
           coalesce(min(e.start_call_ts),
                    min(e.event_time) FILTER (WHERE e.event = 'start_call')) AS started_at,
           coalesce(min(e.accept_ts),
                    min(e.event_time) FILTER (WHERE e.event IN ('accept_call', 'call_accepted', 'accept')))
               AS accepted_at,
           coalesce(max(e.end_ts), max(e.event_time) FILTER (WHERE e.event = 'call_end'))
               AS ended_at,
           min(e.event_time) AS first_event_at,
           min(e.received_at) AS first_received_at,
           max(e.total_num) AS total_num,
           count(*) AS events,
           array_agg(e.user_id) FILTER (WHERE e.user_id <> '') AS user_ids,
           json_agg(e.members) FILTER (WHERE e.members IS NOT NULL) AS member_lists
    FROM call_events e
    WHERE e.sdkappid = app AND e.call_id = call
) f;
END;

CREATE OR REPLACE VIEW callback_rollup AS
SELECT c.sdkappid,
       c.call_id,
       f.caller COLLATE "C" AS caller,
       f.media_type COLLATE "C" AS media_type,
       f.call_type COLLATE "C" AS call_type,
       f.outcome COLLATE "C" AS outcome,
       f.started_at,
       f.accepted_at,
       f.ended_at,
       round(extract(epoch FROM f.accepted_at - f.started_at) * 1000)::bigint AS ring_ms,
       round(extract(epoch FROM f.ended_at - f.accepted_at) * 1000)::bigint AS talk_ms,
       f.total_num,
       f.events,
       c.day
FROM (
    SELECT sdkappid,
           call_id,
           (coalesce(start_call_ts, event_time, received_at) AT TIME ZONE 'UTC')::date AS day
    FROM call_events
    WHERE call_id IS NOT NULL
    GROUP BY 1, 2, 3
) c
CROSS JOIN LATERAL callhook_call_fold(c.sdkappid, c.call_id) f
WHERE f.day = c.day;

-- 0008's columns and meanings, and `names` last (the fold's, for calls and all_calls).
CREATE OR REPLACE VIEW call_rollup AS
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
       x.source,
       x.names
FROM (
    SELECT c.sdkappid,
           c.call_id,
           coalesce(f.caller, (SELECT k.caller FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) COLLATE "C"
               AS caller,
           coalesce(f.media_type, (SELECT k.media_type FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) COLLATE "C"
               AS media_type,
           coalesce(f.call_type, (SELECT k.call_type FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) COLLATE "C"
               AS call_type,
           coalesce(f.outcome, (SELECT k.call_result FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) COLLATE "C"
               AS outcome,
           coalesce(f.started_at, (SELECT k.started_at FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) AS started_at,
           coalesce(f.accepted_at,
                    CASE WHEN f.outcome IS NULL
                              OR f.outcome NOT IN ('not_answer', 'reject', 'call_busy', 'cancel')
                         THEN (SELECT k.accepted_at FROM call_records k
                               WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)
                    END) AS accepted_at,
           coalesce(f.ended_at, (SELECT k.ended_at FROM call_records k
                     WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)) AS ended_at,
           f.total_num,
           f.events,
           c.day,
           CASE WHEN c.recorded THEN 'record_api'
                WHEN EXISTS (SELECT 1 FROM call_records k
                             WHERE k.sdkappid = c.sdkappid AND k.call_id = c.call_id)
                THEN 'both'
                ELSE 'callbacks' END AS source,
           f.names
    FROM (
        SELECT sdkappid,
               call_id,
               (coalesce(start_call_ts, event_time, received_at) AT TIME ZONE 'UTC')::date AS day,
               false AS recorded
        FROM call_events
        WHERE call_id IS NOT NULL
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT sdkappid, call_id, day, true
        FROM call_records
    ) c
    CROSS JOIN LATERAL callhook_call_fold(c.sdkappid, c.call_id) f
    WHERE CASE WHEN c.recorded THEN f.events = 0 ELSE f.day = c.day END
) x;

-- 0008's calls, its callees from the fold's names and the record's CalleeList_Account.
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
            SELECT unnest(r.names)
            UNION ALL
            SELECT json_array_elements_text(k.callees)
            FROM call_records k
            WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
        ) u(name)
        WHERE u.name <> '' AND u.name IS DISTINCT FROM r.caller
        ORDER BY 1
    ) AS callees
) n;

-- 0008's all_calls, its calls branch now read from `calls` (above) rather than restating it.
CREATE OR REPLACE VIEW all_calls AS
SELECT r.sdkappid,
       r.call_id,
       r.caller,
       r.callees,
       r.media_type,
       r.call_type,
       r.outcome,
       r.started_at,
       r.accepted_at,
       r.ended_at,
       r.ring_seconds,
       r.talk_seconds,
       r.participants,
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
FROM calls r
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
