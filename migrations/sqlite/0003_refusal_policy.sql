-- The refusal policy (README: "What callhook refuses"), SQLite: the same changes as
-- PostgreSQL's 0005. SQLite cannot drop a NOT NULL, so call_events is rebuilt (the
-- procedure of SQLite's "ALTER TABLE" page: new table, copy, drop, rename), with its
-- indexes and the views.
--   payload  NULL on all but the first row of a delivery that makes several rows
--   members  the accounts a v4 body names, as a JSON array
--   notes    what could not be read, "; "-separated
-- rejected_deliveries gets dedupe_key, deliveries and last_delivery_at.

DROP VIEW call_stats_daily;
DROP VIEW calls;
DROP VIEW call_rollup;

CREATE TABLE call_events_new (
    id               INTEGER PRIMARY KEY,
    sdkappid         INTEGER NOT NULL,
    family           TEXT    NOT NULL,
    command          TEXT    NOT NULL,
    call_id          TEXT,
    user_id          TEXT,
    role             TEXT,
    event            TEXT,
    call_result      TEXT,
    media_type       TEXT,
    call_type        TEXT,
    room_id          TEXT,
    total_num        INTEGER,
    event_time       TEXT,
    start_call_ts    TEXT,
    accept_ts        TEXT,
    end_ts           TEXT,
    client_ip        TEXT,
    opt_platform     TEXT,
    remote_addr      TEXT,
    payload          TEXT,
    deliveries       INTEGER NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    received_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_delivery_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    dedupe_key       BLOB    NOT NULL,
    members          TEXT,
    notes            TEXT,
    CONSTRAINT call_events_dedupe UNIQUE (sdkappid, dedupe_key)
) STRICT;

INSERT INTO call_events_new (
    id, sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
    call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, client_ip,
    opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at, dedupe_key,
    members)
SELECT
    e.id, e.sdkappid, e.family, e.command, e.call_id, e.user_id, e.role, e.event,
    e.call_result, e.media_type, e.call_type, e.room_id, e.total_num, e.event_time,
    e.start_call_ts, e.accept_ts, e.end_ts, e.client_ip, e.opt_platform, e.remote_addr,
    e.payload, e.deliveries, e.received_at, e.last_delivery_at, e.dedupe_key,
    CASE WHEN e.family = 'v4' AND json_valid(e.payload) THEN (
        SELECT json_group_array(DISTINCT u.name)
        FROM (
            SELECT CASE json_type(e.payload, '$.CallRecord.Caller_Account')
                       WHEN 'text' THEN json_extract(e.payload, '$.CallRecord.Caller_Account')
                       WHEN 'integer' THEN CAST(json_extract(e.payload, '$.CallRecord.Caller_Account') AS TEXT)
                   END AS name
            UNION ALL
            SELECT CASE a.type WHEN 'text' THEN a.atom
                               WHEN 'integer' THEN CAST(a.atom AS TEXT) END
            FROM json_each(e.payload, '$.CallRecord.CalleeList_Account') a
            WHERE json_type(e.payload, '$.CallRecord.CalleeList_Account') = 'array'
            UNION ALL
            SELECT CASE json_type(m.value, '$.User_Account')
                       WHEN 'text' THEN json_extract(m.value, '$.User_Account')
                       WHEN 'integer' THEN CAST(json_extract(m.value, '$.User_Account') AS TEXT)
                   END
            FROM json_each(e.payload, '$.UserList') m
            WHERE json_type(e.payload, '$.UserList') = 'array' AND m.type = 'object'
        ) u
        WHERE u.name IS NOT NULL AND u.name <> ''
        HAVING count(*) > 0)
    END
FROM call_events e;

DROP TABLE call_events;
ALTER TABLE call_events_new RENAME TO call_events;
CREATE INDEX call_events_call_idx ON call_events (sdkappid, call_id);
CREATE INDEX call_events_received_at_idx ON call_events (received_at);
CREATE INDEX call_events_day_idx
    ON call_events (date(coalesce(start_call_ts, event_time, received_at)), sdkappid, call_id);

ALTER TABLE rejected_deliveries ADD COLUMN dedupe_key BLOB;
ALTER TABLE rejected_deliveries ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1 CHECK (deliveries >= 1);
ALTER TABLE rejected_deliveries ADD COLUMN last_delivery_at TEXT;
UPDATE rejected_deliveries SET last_delivery_at = received_at;
CREATE UNIQUE INDEX rejected_deliveries_dedupe ON rejected_deliveries (sdkappid, dedupe_key);

-- The events stored with notes, by time (callhook report): rare, so a small index.
CREATE INDEX call_events_noted_idx ON call_events (received_at) WHERE notes IS NOT NULL;

-- The analytics views of 0002, unchanged but for `callees` and `participants`, which now
-- read `members` rather than the payloads.
CREATE VIEW call_rollup AS
SELECT g.sdkappid,
       g.call_id,
       g.caller,
       g.media_type,
       g.call_type,
       CASE g.result_rank
           WHEN 1 THEN 'normal_end'
           WHEN 2 THEN 'reject'
           WHEN 3 THEN 'call_busy'
           WHEN 4 THEN 'not_answer'
           WHEN 5 THEN 'cancel'
           WHEN 6 THEN 'interrupt'
           WHEN 7 THEN 'offline'
           WHEN 8 THEN g.other_result
       END AS outcome,
       g.started_at,
       g.accepted_at,
       g.ended_at,
       CAST(round((julianday(g.accepted_at) - julianday(g.started_at)) * 86400000.0) AS INTEGER)
           AS ring_ms,
       CAST(round((julianday(g.ended_at) - julianday(g.accepted_at)) * 86400000.0) AS INTEGER)
           AS talk_ms,
       g.total_num,
       g.events,
       g.day
FROM (
    SELECT c.sdkappid,
           c.call_id,
           date(coalesce(c.start_call_ts, c.event_time, c.received_at)) AS day,
           min(CASE WHEN e.role = 'caller' THEN e.user_id END) AS caller,
           max(e.media_type) AS media_type,
           max(e.call_type) AS call_type,
           min(CASE
                   WHEN e.call_result IS NULL THEN NULL
                   WHEN e.call_result = 'normal_end' THEN 1
                   WHEN e.call_result = 'reject' THEN 2
                   WHEN e.call_result = 'call_busy' THEN 3
                   WHEN e.call_result = 'not_answer' THEN 4
                   WHEN e.call_result = 'cancel' THEN 5
                   WHEN e.call_result = 'interrupt' THEN 6
                   WHEN e.call_result = 'offline' THEN 7
                   ELSE 8
               END) AS result_rank,
           min(CASE WHEN e.call_result NOT IN ('normal_end', 'reject', 'call_busy', 'not_answer',
                                               'cancel', 'interrupt', 'offline')
                    THEN e.call_result END) AS other_result,
           coalesce(min(e.start_call_ts),
                    min(CASE WHEN e.event = 'start_call' THEN e.event_time END)) AS started_at,
           coalesce(min(e.accept_ts),
                    min(CASE WHEN e.event IN ('accept_call', 'call_accepted', 'accept')
                             THEN e.event_time END)) AS accepted_at,
           coalesce(max(e.end_ts), max(CASE WHEN e.event = 'call_end' THEN e.event_time END))
               AS ended_at,
           max(e.total_num) AS total_num,
           count(DISTINCT e.id) AS events
    FROM call_events c
    JOIN call_events e ON e.sdkappid = c.sdkappid AND e.call_id = c.call_id
    WHERE c.call_id IS NOT NULL
    GROUP BY c.sdkappid, c.call_id, date(coalesce(c.start_call_ts, c.event_time, c.received_at))
    HAVING date(coalesce(min(e.start_call_ts),
                         min(CASE WHEN e.event = 'start_call' THEN e.event_time END),
                         min(e.event_time),
                         min(e.received_at)))
           = date(coalesce(c.start_call_ts, c.event_time, c.received_at))
) g;

-- `callees` is a comma-separated list ('' when there is none). group_concat() has no
-- ORDER BY before SQLite 3.44, so the list is built by group_concat() as a window
-- function over the sorted names, whose order the window guarantees.
CREATE VIEW calls AS
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
       r.day
FROM call_rollup r;

-- SQLite has no percentile_cont(): the same definition with window functions. For n talk
-- times sorted ascending and p in (0.5, 0.9): pos = p·(n−1), lo = the value at rank
-- ⌊pos⌋+1, hi = the value at the next rank (lo when pos is whole), result = lo + (pos −
-- ⌊pos⌋)·(hi − lo) — PostgreSQL's formula, evaluated in the same floating-point steps.
-- Built from window functions partitioned by (day, sdkappid) only, with no GROUP BY:
-- SQLite pushes a condition on day through such windows down to the index, but not
-- through an aggregate.
CREATE VIEW call_stats_daily AS
SELECT day,
       sdkappid,
       calls,
       answered,
       not_answer,
       reject,
       call_busy,
       cancel,
       interrupt,
       CAST(answered AS REAL) / calls AS answer_rate,
       CASE WHEN n > 0 THEN ((2 * talk_sum + n) / (2 * n)) / 1000.0 END AS avg_talk_seconds,
       CAST(p50_lo + (0.5 * (n - 1) - CAST(0.5 * (n - 1) AS INTEGER))
                     * (coalesce(p50_hi, p50_lo) - p50_lo) + 0.5 AS INTEGER) / 1000.0
           AS p50_talk_seconds,
       CAST(p90_lo + (0.9 * (n - 1) - CAST(0.9 * (n - 1) AS INTEGER))
                     * (coalesce(p90_hi, p90_lo) - p90_lo) + 0.5 AS INTEGER) / 1000.0
           AS p90_talk_seconds
FROM (
    SELECT day,
           sdkappid,
           rn,
           n,
           count(*) OVER w AS calls,
           count(CASE WHEN outcome = 'normal_end' THEN 1 END) OVER w AS answered,
           count(CASE WHEN outcome = 'not_answer' THEN 1 END) OVER w AS not_answer,
           count(CASE WHEN outcome = 'reject' THEN 1 END) OVER w AS reject,
           count(CASE WHEN outcome = 'call_busy' THEN 1 END) OVER w AS call_busy,
           count(CASE WHEN outcome = 'cancel' THEN 1 END) OVER w AS cancel,
           count(CASE WHEN outcome = 'interrupt' THEN 1 END) OVER w AS interrupt,
           sum(talk_ms) OVER w AS talk_sum,
           max(CASE WHEN rn = 1 + CAST(0.5 * (n - 1) AS INTEGER) THEN talk_ms END) OVER w AS p50_lo,
           max(CASE WHEN rn = 2 + CAST(0.5 * (n - 1) AS INTEGER) THEN talk_ms END) OVER w AS p50_hi,
           max(CASE WHEN rn = 1 + CAST(0.9 * (n - 1) AS INTEGER) THEN talk_ms END) OVER w AS p90_lo,
           max(CASE WHEN rn = 2 + CAST(0.9 * (n - 1) AS INTEGER) THEN talk_ms END) OVER w AS p90_hi
    FROM (
        SELECT day,
               sdkappid,
               outcome,
               talk_ms,
               -- known talk times first, ascending: ranks 1..n
               row_number() OVER (PARTITION BY day, sdkappid ORDER BY talk_ms IS NULL, talk_ms)
                   AS rn,
               count(talk_ms) OVER (PARTITION BY day, sdkappid) AS n
        FROM call_rollup
    )
    WINDOW w AS (PARTITION BY day, sdkappid)
)
WHERE rn = 1;
