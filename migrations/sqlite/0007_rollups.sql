-- Incremental rollups, SQLite: the same tables, triggers and view as PostgreSQL's 0010,
-- with the same results (the tests compare them). Read that file for how they stay right;
-- here the one writer connection takes turns with the rollup task on the write lock, so
-- no advisory lock is needed, and the trigger is one per row (SQLite has no statement
-- triggers). Days are 'YYYY-MM-DD' text.

CREATE TABLE rollup_queue (
    id        INTEGER PRIMARY KEY,
    sdkappid  INTEGER NOT NULL,
    call_id   TEXT    NOT NULL,
    queued_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE rollup_calls (
    sdkappid INTEGER NOT NULL,
    call_id  TEXT    NOT NULL,
    day      TEXT    NOT NULL,
    outcome  TEXT,
    talk_ms  INTEGER,
    PRIMARY KEY (sdkappid, call_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE rollup_days (
    day         TEXT    NOT NULL,
    sdkappid    INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    answered    INTEGER NOT NULL,
    not_answer  INTEGER NOT NULL,
    reject      INTEGER NOT NULL,
    call_busy   INTEGER NOT NULL,
    cancel      INTEGER NOT NULL,
    interrupt   INTEGER NOT NULL,
    talk_calls  INTEGER NOT NULL,
    talk_ms_sum INTEGER NOT NULL,
    PRIMARY KEY (day, sdkappid)
) STRICT, WITHOUT ROWID;

CREATE TABLE rollup_talk (
    day         TEXT    NOT NULL,
    sdkappid    INTEGER NOT NULL,
    bucket_ms   INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    talk_ms_sum INTEGER NOT NULL,
    PRIMARY KEY (day, sdkappid, bucket_ms)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER call_events_rollup AFTER INSERT ON call_events
WHEN NEW.call_id IS NOT NULL
BEGIN
    INSERT INTO rollup_queue (sdkappid, call_id) VALUES (NEW.sdkappid, NEW.call_id);
END;
CREATE TRIGGER call_records_rollup_insert AFTER INSERT ON call_records
BEGIN
    INSERT INTO rollup_queue (sdkappid, call_id) VALUES (NEW.sdkappid, NEW.call_id);
END;
CREATE TRIGGER call_records_rollup_update AFTER UPDATE ON call_records
BEGIN
    INSERT INTO rollup_queue (sdkappid, call_id) VALUES (NEW.sdkappid, NEW.call_id);
END;

-- call_stats_daily from the rollups; the percentile as in PostgreSQL's 0010, step for
-- step: pos = p·(n − 1), the bucket means at ranks ⌊pos⌋ and ⌈pos⌉ (0-based), lo + (pos −
-- ⌊pos⌋)·(hi − lo), rounded half up to the millisecond.
DROP VIEW call_stats_daily;
CREATE VIEW call_stats_daily AS
SELECT d.day,
       d.sdkappid,
       d.calls,
       d.answered,
       d.not_answer,
       d.reject,
       d.call_busy,
       d.cancel,
       d.interrupt,
       CAST(d.answered AS REAL) / d.calls AS answer_rate,
       CASE WHEN d.talk_calls > 0
            THEN ((2 * d.talk_ms_sum + d.talk_calls) / (2 * d.talk_calls)) / 1000.0
       END AS avg_talk_seconds,
       (SELECT CAST(r.lo + (r.pos - CAST(r.pos AS INTEGER)) * (r.hi - r.lo) + 0.5 AS INTEGER) / 1000.0
        FROM (SELECT max(CASE WHEN w.below <= q.k AND q.k < w.below + w.calls THEN w.mean END) AS lo,
                     max(CASE WHEN w.below <= q.k + (q.pos > q.k) AND q.k + (q.pos > q.k) < w.below + w.calls
                              THEN w.mean END) AS hi,
                     min(q.pos) AS pos
              FROM (SELECT 0.5 * (d.talk_calls - 1) AS pos,
                           CAST(0.5 * (d.talk_calls - 1) AS INTEGER) AS k) q
              CROSS JOIN (SELECT CAST(b.talk_ms_sum AS REAL) / b.calls AS mean,
                                 b.calls,
                                 sum(b.calls) OVER (ORDER BY b.bucket_ms) - b.calls AS below
                          FROM rollup_talk b
                          WHERE b.day = d.day AND b.sdkappid = d.sdkappid) w) r
        WHERE d.talk_calls > 0) AS p50_talk_seconds,
       (SELECT CAST(r.lo + (r.pos - CAST(r.pos AS INTEGER)) * (r.hi - r.lo) + 0.5 AS INTEGER) / 1000.0
        FROM (SELECT max(CASE WHEN w.below <= q.k AND q.k < w.below + w.calls THEN w.mean END) AS lo,
                     max(CASE WHEN w.below <= q.k + (q.pos > q.k) AND q.k + (q.pos > q.k) < w.below + w.calls
                              THEN w.mean END) AS hi,
                     min(q.pos) AS pos
              FROM (SELECT 0.9 * (d.talk_calls - 1) AS pos,
                           CAST(0.9 * (d.talk_calls - 1) AS INTEGER) AS k) q
              CROSS JOIN (SELECT CAST(b.talk_ms_sum AS REAL) / b.calls AS mean,
                                 b.calls,
                                 sum(b.calls) OVER (ORDER BY b.bucket_ms) - b.calls AS below
                          FROM rollup_talk b
                          WHERE b.day = d.day AND b.sdkappid = d.sdkappid) w) r
        WHERE d.talk_calls > 0) AS p90_talk_seconds
FROM rollup_days d;
