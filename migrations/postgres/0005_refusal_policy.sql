-- The refusal policy (README: "What callhook refuses"): a field that cannot be read is
-- NULL and noted, the body is kept exactly as received, and retries are merged only when
-- they are the same delivery.
--
-- call_events
--   payload  json instead of jsonb: the body exactly as received (jsonb reorders keys and
--            drops repeated ones; rows stored before this migration keep jsonb's text).
--            NULL on all but the first row of a delivery that makes several rows.
--   members  the accounts a v4 body names, as a JSON array (the views read these instead
--            of parsing payloads, so no payload can break a view)
--   notes    what could not be read, "; "-separated; NULL when everything could
-- rejected_deliveries
--   dedupe_key, deliveries, last_delivery_at: one row per distinct refused delivery, its
--   retries counted (rows from before this migration have no key and stay as they are)

DROP VIEW call_stats_daily;
DROP VIEW calls;
DROP VIEW call_rollup;

ALTER TABLE call_events ADD COLUMN members json, ADD COLUMN notes text;

-- The accounts of the v4 rows stored so far, from their (still jsonb) payloads.
UPDATE call_events e
SET members = (
    SELECT to_json(array_agg(DISTINCT u.name))
    FROM (
        SELECT CASE WHEN jsonb_typeof(e.payload -> 'CallRecord' -> 'Caller_Account') IN ('string', 'number')
                    THEN e.payload -> 'CallRecord' -> 'Caller_Account' #>> '{}' END AS name
        UNION ALL
        SELECT CASE WHEN jsonb_typeof(a.value) IN ('string', 'number') THEN a.value #>> '{}' END
        FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(e.payload -> 'CallRecord' -> 'CalleeList_Account') = 'array'
                 THEN e.payload -> 'CallRecord' -> 'CalleeList_Account' END) a
        UNION ALL
        SELECT CASE WHEN jsonb_typeof(m.value -> 'User_Account') IN ('string', 'number')
                    THEN m.value -> 'User_Account' #>> '{}' END
        FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(e.payload -> 'UserList') = 'array'
                 THEN e.payload -> 'UserList' END) m
    ) u
    WHERE u.name IS NOT NULL AND u.name <> ''
)
WHERE e.family = 'v4';

ALTER TABLE call_events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN payload DROP NOT NULL;

ALTER TABLE rejected_deliveries
    ADD COLUMN dedupe_key bytea,
    ADD COLUMN deliveries integer NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    ADD COLUMN last_delivery_at timestamptz;
UPDATE rejected_deliveries SET last_delivery_at = received_at;
ALTER TABLE rejected_deliveries
    ALTER COLUMN last_delivery_at SET NOT NULL,
    ALTER COLUMN last_delivery_at SET DEFAULT now();
CREATE UNIQUE INDEX rejected_deliveries_dedupe ON rejected_deliveries (sdkappid, dedupe_key);

-- The events stored with notes, by time (callhook report): rare, so a small index.
CREATE INDEX call_events_noted_idx ON call_events (received_at) WHERE notes IS NOT NULL;

-- The analytics views of 0002, unchanged but for `callees` and `participants`, which now
-- read `members` rather than the payloads.
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
            SELECT m.name
            FROM call_events e
            CROSS JOIN LATERAL json_array_elements_text(e.members) AS m(name)
            WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id AND e.members IS NOT NULL
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
