-- callhook analytics, PostgreSQL: calls folded from their events, and daily statistics.
-- `calls` and `call_stats_daily` are public contracts (README: "Schema"); `call_rollup`
-- is the shared building block of both and may change. The SQLite migration of the same
-- number defines the same views with the same results (tests compare them row by row).
--
-- Text comparisons use COLLATE "C" (byte order, like SQLite), so the caller picked among
-- several, the order of `callees` and the fallback outcome do not depend on the database's
-- locale.

-- One row per (sdkappid, call_id), with what the events say about the call.
--   caller       the smallest user_id of an event with role 'caller'
--   media_type   the greatest value seen ('video' over 'audio'), call_type likewise
--                ('group' over 'single')
--   outcome      'normal_end' when any event carries it, otherwise the first result
--                present in: reject, call_busy, not_answer, cancel, interrupt, offline,
--                then any other value (the smallest); NULL when no event carries a result
--   started_at   the earliest start_call_ts; without one, the earliest event time of a
--                'start_call' action (event family)
--   accepted_at  the earliest accept_ts; without one, the earliest event time of an
--                accept action ('accept_call', 'call_accepted', v4 'accept')
--   ended_at     the latest end_ts; without one, the latest event time of a 'call_end'
--   ring_ms      accepted_at − started_at, talk_ms ended_at − accepted_at, in whole
--                milliseconds; NULL when either end is unknown
--   day          the UTC day of started_at; without it, of the earliest event_time; without
--                that, of the earliest received_at
--
-- How `day` is found, so that a filter on it can use an index: every event offers a
-- candidate day, the day of coalesce(start_call_ts, event_time, received_at). The call's
-- day (the rule above) is always one of its events' candidate days — that of the event
-- whose time decides it. So the view takes the distinct (sdkappid, call_id, candidate day)
-- of the events (a condition on `day` narrows this step through call_events_day_idx),
-- folds each such call from all its events (LATERAL, through call_events_fold_idx), and
-- keeps the one candidate that is the call's day.
CREATE VIEW call_rollup AS
SELECT c.sdkappid,
       c.call_id,
       x.caller,
       x.media_type,
       x.call_type,
       CASE x.result_rank
           WHEN 1 THEN 'normal_end'
           WHEN 2 THEN 'reject'
           WHEN 3 THEN 'call_busy'
           WHEN 4 THEN 'not_answer'
           WHEN 5 THEN 'cancel'
           WHEN 6 THEN 'interrupt'
           WHEN 7 THEN 'offline'
           WHEN 8 THEN x.other_result
       END AS outcome,
       x.started_at,
       x.accepted_at,
       x.ended_at,
       round(extract(epoch FROM x.accepted_at - x.started_at) * 1000)::bigint AS ring_ms,
       round(extract(epoch FROM x.ended_at - x.accepted_at) * 1000)::bigint AS talk_ms,
       x.total_num,
       x.events,
       c.day
FROM (
    SELECT sdkappid,
           call_id,
           (coalesce(start_call_ts, event_time, received_at) AT TIME ZONE 'UTC')::date AS day
    FROM call_events
    WHERE call_id IS NOT NULL
    GROUP BY 1, 2, 3
) c
CROSS JOIN LATERAL (
    SELECT f.*,
           (coalesce(f.started_at, f.first_event_at, f.first_received_at) AT TIME ZONE 'UTC')::date
               AS day
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
               count(*) AS events
        FROM call_events e
        WHERE e.sdkappid = c.sdkappid AND e.call_id = c.call_id
    ) f
) x
WHERE x.day = c.day;

-- One row per call. `callees`: every user the call's events name — user_id of any event,
-- the v4 end record's CalleeList_Account, the v4 UserList — except the caller, sorted,
-- without duplicates. `participants`: the larger of the reported TotalNum and the number
-- of users named (caller included). `day`: the UTC day the call counts on in
-- call_stats_daily; filter on it to read one period's calls quickly.
CREATE VIEW calls AS
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
       r.day
FROM call_rollup r
CROSS JOIN LATERAL (
    SELECT ARRAY(
        SELECT DISTINCT u.name COLLATE "C"
        FROM (
            SELECT e.user_id AS name
            FROM call_events e
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
            UNION ALL
            SELECT CASE WHEN jsonb_typeof(a.value) IN ('string', 'number') THEN a.value #>> '{}' END
            FROM call_events e
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(e.payload -> 'CallRecord' -> 'CalleeList_Account') = 'array'
                     THEN e.payload -> 'CallRecord' -> 'CalleeList_Account' END) a
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.family = 'v4'
            UNION ALL
            SELECT CASE WHEN jsonb_typeof(m.value -> 'User_Account') IN ('string', 'number')
                        THEN m.value ->> 'User_Account' END
            FROM call_events e
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(e.payload -> 'UserList') = 'array'
                     THEN e.payload -> 'UserList' END) m
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.family = 'v4'
        ) u
        WHERE u.name <> '' AND u.name IS DISTINCT FROM r.caller
        ORDER BY 1
    ) AS callees
) n;

-- One row per UTC day (call_rollup.day) and sdkappid.
--   answered … interrupt  calls by outcome (answered = normal_end); calls with another
--                         outcome (offline, unknown, none yet) count only in `calls`
--   answer_rate           answered / calls
--   avg_talk_seconds      mean talk time of the calls whose talk time is known, rounded
--                         to the millisecond (half up)
--   p50/p90_talk_seconds  percentile_cont (linear interpolation between the two nearest
--                         ranks) of those talk times, rounded to the millisecond (half up)
-- All arithmetic is done on whole milliseconds, so SQLite's spelling of this view gives
-- bit-for-bit the same numbers.
CREATE VIEW call_stats_daily AS
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

-- What keeps the views fast at millions of events (docs/BENCHMARKS.md, "Analytics"):
-- a condition on `day` finds the candidate (sdkappid, call_id, day) of those days in the
-- first index alone (index-only: it carries the columns the day is computed from), and
-- each call is folded from the second alone (it carries every column the fold reads).
CREATE INDEX call_events_day_idx
    ON call_events (((coalesce(start_call_ts, event_time, received_at) AT TIME ZONE 'UTC')::date),
                    sdkappid, call_id)
    INCLUDE (start_call_ts, event_time, received_at);
CREATE INDEX call_events_fold_idx
    ON call_events (sdkappid, call_id)
    INCLUDE (role, user_id, event, call_result, media_type, call_type, total_num, event_time,
             start_call_ts, accept_ts, end_ts, received_at);
