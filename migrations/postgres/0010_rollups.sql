-- Incremental rollups (README: "Schema", DESIGN.md "Analytics"): the daily statistics of
-- call_stats_daily and `report` kept as they change, so that reading a period costs what
-- the answer holds (its days and talk-time buckets), not the events behind it.
--
-- How they stay right. Every statement that adds events or changes Tencent's records
-- queues the calls it touched (rollup_queue, in the same transaction: a committed event is
-- always queued). The service's rollup task takes queued calls in order, folds each again
-- from all its events and its record (call_rollup), and moves the difference between the
-- new fold and the last one (rollup_calls) into the day totals (rollup_days) and the
-- talk-time buckets (rollup_talk), all in one transaction under an advisory lock, so
-- replicas take turns. A late event that changes a call's day or outcome moves the call.
-- `report` reads the rollups and applies the queued calls itself, so its answer is exact
-- whatever the task's lag; call_stats_daily reads the rollups alone (lag: seconds).

-- Calls whose fold may have changed, oldest first. A call may be queued many times.
CREATE TABLE rollup_queue (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sdkappid  bigint      NOT NULL,
    call_id   text        NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- Each call as the rollups last counted it.
CREATE TABLE rollup_calls (
    sdkappid bigint NOT NULL,
    call_id  text   NOT NULL,
    day      date   NOT NULL,
    outcome  text,
    talk_ms  bigint,
    PRIMARY KEY (sdkappid, call_id)
);

-- One row per app and UTC day with calls: call_stats_daily's counts, and the count and
-- sum of the known talk times (the mean is exact).
CREATE TABLE rollup_days (
    day         date   NOT NULL,
    sdkappid    bigint NOT NULL,
    calls       bigint NOT NULL,
    answered    bigint NOT NULL,
    not_answer  bigint NOT NULL,
    reject      bigint NOT NULL,
    call_busy   bigint NOT NULL,
    cancel      bigint NOT NULL,
    interrupt   bigint NOT NULL,
    talk_calls  bigint NOT NULL,
    talk_ms_sum bigint NOT NULL,
    PRIMARY KEY (day, sdkappid)
);

-- Talk times by bucket, per app and day: a bucket holds the times from bucket_ms up to the
-- next bucket's bound. Below 256 ms every millisecond is a bucket of its own; above, each
-- doubling is cut into 128 buckets (so a bucket is at most 1/128 of its times wide), and
-- the report's histogram bounds (10 s, 30 s, 1, 2, 5, 10, 20, 30 and 60 min) always start
-- one. A bucket keeps the count and the sum of its times; a percentile reads a bucket's
-- times as their mean, which is exact while a bucket holds one distinct time (every whole
-- second up to about two minutes).
CREATE TABLE rollup_talk (
    day         date   NOT NULL,
    sdkappid    bigint NOT NULL,
    bucket_ms   bigint NOT NULL,
    calls       bigint NOT NULL,
    talk_ms_sum bigint NOT NULL,
    PRIMARY KEY (day, sdkappid, bucket_ms)
);

CREATE FUNCTION callhook_queue_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_queue (sdkappid, call_id)
    SELECT DISTINCT sdkappid, call_id FROM touched WHERE call_id IS NOT NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER call_events_rollup AFTER INSERT ON call_events
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION callhook_queue_calls();
CREATE TRIGGER call_records_rollup_insert AFTER INSERT ON call_records
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION callhook_queue_calls();
CREATE TRIGGER call_records_rollup_update AFTER UPDATE ON call_records
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION callhook_queue_calls();

-- call_stats_daily: its columns and meanings as before (0008), read from the rollups.
-- p50/p90_talk_seconds: percentile_cont over the day's talk times, each bucket's times
-- taken at their mean; rounded to the millisecond (half up) as before.
CREATE OR REPLACE VIEW call_stats_daily AS
SELECT d.day,
       d.sdkappid,
       d.calls,
       d.answered,
       d.not_answer,
       d.reject,
       d.call_busy,
       d.cancel,
       d.interrupt,
       d.answered::float8 / d.calls AS answer_rate,
       CASE WHEN d.talk_calls > 0
            THEN ((2 * d.talk_ms_sum + d.talk_calls) / (2 * d.talk_calls))::float8 / 1000
       END AS avg_talk_seconds,
       p.p50 AS p50_talk_seconds,
       p.p90 AS p90_talk_seconds
FROM rollup_days d
LEFT JOIN LATERAL (
    SELECT trunc(r.lo50 + (r.pos50 - floor(r.pos50)) * (r.hi50 - r.lo50) + 0.5) / 1000 AS p50,
           trunc(r.lo90 + (r.pos90 - floor(r.pos90)) * (r.hi90 - r.lo90) + 0.5) / 1000 AS p90
    FROM (
        SELECT max(w.mean) FILTER (WHERE w.below <= floor(q.pos50) AND floor(q.pos50) < w.below + w.calls) AS lo50,
               max(w.mean) FILTER (WHERE w.below <= ceil(q.pos50) AND ceil(q.pos50) < w.below + w.calls) AS hi50,
               max(w.mean) FILTER (WHERE w.below <= floor(q.pos90) AND floor(q.pos90) < w.below + w.calls) AS lo90,
               max(w.mean) FILTER (WHERE w.below <= ceil(q.pos90) AND ceil(q.pos90) < w.below + w.calls) AS hi90,
               min(q.pos50) AS pos50,
               min(q.pos90) AS pos90
        FROM (SELECT 0.5::float8 * (d.talk_calls - 1) AS pos50,
                     0.9::float8 * (d.talk_calls - 1) AS pos90) q
        CROSS JOIN (
            SELECT b.talk_ms_sum::float8 / b.calls AS mean,
                   b.calls,
                   (sum(b.calls) OVER (ORDER BY b.bucket_ms))::bigint - b.calls AS below
            FROM rollup_talk b
            WHERE b.day = d.day AND b.sdkappid = d.sdkappid
        ) w
    ) r
) p ON d.talk_calls > 0;
