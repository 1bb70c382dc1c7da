-- Tencent's own record of every call (issue 24), SQLite: the same tables, columns and views
-- as PostgreSQL's 0008, with the same results (the tests compare them). Read that file for
-- what each column and view means; this one notes where the spelling differs.
--
-- Times are ISO-8601 UTC text of one width, as in call_events; `day` is 'YYYY-MM-DD'.
-- SQLite cannot rename a view, so callback_rollup is 0003's call_rollup written again, and
-- every view that read call_rollup, calls or call_rooms is dropped and created again.
-- SQLite pushes a condition on `day` into neither a grouped subquery that is joined nor
-- through a join's aggregate (docs/BENCHMARKS.md, "Analytics"), so a call's record is read
-- through correlated subqueries on its primary key, never joined to the fold, each only
-- when the callbacks leave its column empty (as in PostgreSQL's 0008, which says why).

CREATE TABLE call_records (
    sdkappid     INTEGER NOT NULL,
    call_id      TEXT    NOT NULL,
    caller       TEXT,
    callees      TEXT    NOT NULL DEFAULT '[]',
    media_type   TEXT,
    call_type    TEXT,
    call_result  TEXT,
    started_at   TEXT,
    accepted_at  TEXT,
    ended_at     TEXT,
    room_id      TEXT,
    room_id_type INTEGER,
    day          TEXT    NOT NULL,
    record       TEXT    NOT NULL,
    notes        TEXT,
    fetched_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_seen_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (sdkappid, call_id)
) STRICT;
CREATE INDEX call_records_day_idx ON call_records (day, sdkappid);
CREATE INDEX call_records_seen_idx ON call_records (sdkappid, last_seen_at);

CREATE TABLE reconcile_runs (
    id           INTEGER PRIMARY KEY,
    sdkappid     INTEGER NOT NULL,
    window_from  TEXT    NOT NULL,
    window_to    TEXT    NOT NULL,
    trigger      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    started_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at  TEXT,
    page_size    INTEGER NOT NULL,
    pages        INTEGER NOT NULL DEFAULT 0,
    total        INTEGER,
    records      INTEGER NOT NULL DEFAULT 0,
    requests     INTEGER NOT NULL DEFAULT 0,
    error        TEXT
) STRICT;
CREATE INDEX reconcile_runs_app_idx ON reconcile_runs (sdkappid, started_at);

DROP VIEW all_calls;
DROP VIEW call_rooms;
DROP VIEW call_stats_daily;
DROP VIEW calls;
DROP VIEW call_rollup;

-- 0003's call_rollup, unchanged, under its new name.
CREATE VIEW callback_rollup AS
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
       CAST(round((julianday(x.accepted_at) - julianday(x.started_at)) * 86400000.0) AS INTEGER)
           AS ring_ms,
       CAST(round((julianday(x.ended_at) - julianday(x.accepted_at)) * 86400000.0) AS INTEGER)
           AS talk_ms,
       x.total_num,
       x.events,
       x.day,
       x.source
FROM (
    SELECT b.sdkappid,
           b.call_id,
           coalesce(b.caller, (SELECT k.caller FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS caller,
           coalesce(b.media_type, (SELECT k.media_type FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS media_type,
           coalesce(b.call_type, (SELECT k.call_type FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS call_type,
           coalesce(b.outcome, (SELECT k.call_result FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS outcome,
           coalesce(b.started_at, (SELECT k.started_at FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS started_at,
           coalesce(b.accepted_at,
                    CASE WHEN b.outcome IS NULL
                              OR b.outcome NOT IN ('not_answer', 'reject', 'call_busy', 'cancel')
                         THEN (SELECT k.accepted_at FROM call_records k
                               WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)
                    END) AS accepted_at,
           coalesce(b.ended_at, (SELECT k.ended_at FROM call_records k WHERE k.sdkappid = b.sdkappid AND k.call_id = b.call_id)) AS ended_at,
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
           NULL,
           0,
           k.day,
           'record_api'
    FROM call_records k
    WHERE NOT EXISTS (SELECT 1 FROM call_events e
                      WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id)
) x;

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
               UNION
               SELECT c.value
               FROM call_records k, json_each(k.callees) c
               WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
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
               UNION ALL
               SELECT c.value
               FROM call_records k, json_each(k.callees) c
               WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
           ) n
           WHERE n.name <> '' AND n.name IS NOT r.caller)) AS participants,
       r.events,
       r.day,
       r.source
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

CREATE VIEW call_rooms AS
SELECT sdkappid,
       call_id,
       min(room_id) AS room_id,
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
               UNION
               SELECT c.value
               FROM call_records k, json_each(k.callees) c
               WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
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
               UNION ALL
               SELECT c.value
               FROM call_records k, json_each(k.callees) c
               WHERE k.sdkappid = r.sdkappid AND k.call_id = r.call_id
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
                    THEN 'both'
                    WHEN r.source = 'record_api' THEN 'record_api'
                    ELSE 'call_callbacks' END
        FROM (SELECT coalesce(min(e.room_id),
                              (SELECT c.room_id FROM call_records c
                               WHERE c.sdkappid = r.sdkappid AND c.call_id = r.call_id))
                         AS room_id,
                     coalesce(min(coalesce(e.start_call_ts, e.event_time, e.received_at)),
                              (SELECT coalesce(c.started_at, c.ended_at) FROM call_records c
                               WHERE c.sdkappid = r.sdkappid AND c.call_id = r.call_id))
                         AS span_start,
                     coalesce(max(coalesce(e.end_ts, e.event_time, e.received_at)),
                              (SELECT coalesce(c.ended_at, c.started_at) FROM call_records c
                               WHERE c.sdkappid = r.sdkappid AND c.call_id = r.call_id))
                         AS span_end
              FROM call_events e
              WHERE e.sdkappid = r.sdkappid AND e.call_id = r.call_id
                AND e.family IN ('status', 'event', 'v4') AND e.trtc_event_type IS NULL) k)
           AS source,
       r.source AS call_source
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
       o.source,
       NULL
FROM room_only_calls o;

-- The disagreements need the callbacks' own outcome and times of each recorded call
-- (callback_rollup's rules). SQLite pushes no correlated condition into callback_rollup's
-- grouping, so they are folded here from the call's events (call_events_call_idx), as one
-- JSON object: SQLite has no LATERAL.
CREATE VIEW call_gaps AS
SELECT k.sdkappid, k.call_id, k.day, coalesce(k.started_at, k.ended_at) AS call_time,
       'missing_callbacks' AS kind,
       NULL AS callbacks, k.call_result AS record
FROM call_records k
WHERE NOT EXISTS (SELECT 1 FROM call_events e
                  WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id)
UNION ALL
SELECT sdkappid, call_id, day, call_time, kind, callbacks, record
FROM (
    SELECT f.sdkappid, f.call_id, f.day, coalesce(f.started_at, f.ended_at) AS call_time, d.kind,
           json_extract(f.folded, '$.' || d.kind) AS callbacks,
           CASE d.kind
               WHEN 'outcome' THEN f.call_result WHEN 'started_at' THEN f.started_at
               WHEN 'accepted_at' THEN f.accepted_at ELSE f.ended_at
           END AS record
    FROM (
        SELECT k.*,
               (SELECT json_object(
                           'outcome',
                           CASE min(CASE
                                        WHEN e.call_result IS NULL THEN NULL
                                        WHEN e.call_result = 'normal_end' THEN 1
                                        WHEN e.call_result = 'reject' THEN 2
                                        WHEN e.call_result = 'call_busy' THEN 3
                                        WHEN e.call_result = 'not_answer' THEN 4
                                        WHEN e.call_result = 'cancel' THEN 5
                                        WHEN e.call_result = 'interrupt' THEN 6
                                        WHEN e.call_result = 'offline' THEN 7
                                        ELSE 8
                                    END)
                               WHEN 1 THEN 'normal_end' WHEN 2 THEN 'reject'
                               WHEN 3 THEN 'call_busy' WHEN 4 THEN 'not_answer'
                               WHEN 5 THEN 'cancel' WHEN 6 THEN 'interrupt'
                               WHEN 7 THEN 'offline'
                               WHEN 8 THEN min(CASE WHEN e.call_result NOT IN (
                                                    'normal_end', 'reject', 'call_busy',
                                                    'not_answer', 'cancel', 'interrupt',
                                                    'offline')
                                               THEN e.call_result END)
                           END,
                           'started_at',
                           coalesce(min(e.start_call_ts),
                                    min(CASE WHEN e.event = 'start_call' THEN e.event_time END)),
                           'accepted_at',
                           coalesce(min(e.accept_ts),
                                    min(CASE WHEN e.event IN ('accept_call', 'call_accepted',
                                                              'accept')
                                             THEN e.event_time END)),
                           'ended_at',
                           coalesce(max(e.end_ts),
                                    max(CASE WHEN e.event = 'call_end' THEN e.event_time END)),
                           'events', count(*))
                FROM call_events e
                WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id) AS folded
        FROM call_records k
    ) f
    CROSS JOIN (SELECT 'outcome' AS kind UNION ALL SELECT 'started_at'
                UNION ALL SELECT 'accepted_at' UNION ALL SELECT 'ended_at') d
    WHERE json_extract(f.folded, '$.events') > 0
)
WHERE callbacks IS NOT NULL AND record IS NOT NULL
  AND CASE WHEN kind = 'outcome' THEN callbacks <> record
           ELSE abs(julianday(callbacks) - julianday(record)) * 86400.0 > 1 END
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
