-- The calls stored before the rollups (0007) existed, queued once each; the running
-- service's rollup task folds them in the background (docs/BENCHMARKS.md, "Daily
-- rollups": how long). A migration of its own, as PostgreSQL's 0011 is (there, so that the
-- triggers' lock on call_events is not held through this long read).
INSERT INTO rollup_queue (sdkappid, call_id)
SELECT sdkappid, call_id FROM call_events WHERE call_id IS NOT NULL GROUP BY 1, 2
UNION
SELECT sdkappid, call_id FROM call_records;
