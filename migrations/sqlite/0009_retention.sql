-- Retention (README: "Retention"): the day before which events may have been removed, so
-- that `report` can say its older days come from the rollups alone; and the rollups'
-- per-call folds leave by day with the events. (SQLite has no partitions: retention
-- deletes in small batches, src/store/retention.rs.)
CREATE TABLE retention_horizon (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    events_before TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX rollup_calls_day_idx ON rollup_calls (day);
