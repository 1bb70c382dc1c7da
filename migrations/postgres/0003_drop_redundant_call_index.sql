-- call_events_fold_idx (0002) starts with (sdkappid, call_id), so call_events_call_idx
-- (0001) answers no query the other cannot, and every insert paid for both. Measured in
-- docs/BENCHMARKS.md ("What the indexes cost"). SQLite keeps its call_events_call_idx: its
-- analytics fold reads through it.
DROP INDEX IF EXISTS call_events_call_idx;
