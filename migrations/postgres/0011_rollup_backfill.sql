-- The calls stored before the rollups (0010) existed, queued once each; the running
-- service's rollup task folds them in the background (docs/BENCHMARKS.md, "Daily
-- rollups": how long). A migration of its own, so that it runs in a transaction of its
-- own: 0010's triggers are committed first, and this long read of call_events blocks no
-- write (a call written meanwhile is queued twice, which is harmless).
INSERT INTO rollup_queue (sdkappid, call_id)
SELECT sdkappid, call_id FROM call_events WHERE call_id IS NOT NULL GROUP BY 1, 2
UNION
SELECT sdkappid, call_id FROM call_records;
