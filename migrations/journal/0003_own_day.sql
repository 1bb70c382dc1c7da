-- own_day: the event's own day as its body gives it, in days since 1970-01-01
-- (src/protocol/mod.rs, `own_day`), which is the row's partition key in PostgreSQL, so that
-- a replayed row meets the same unique key as a retry written directly, whenever each
-- arrived. NULL on rows journaled before this column: their day is then their time
-- columns', as it was when they were journaled.
ALTER TABLE journal_events ADD COLUMN own_day INTEGER;
