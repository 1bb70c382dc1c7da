-- Exactly-once replay of the outage journal (README: "Database outages and the journal").
-- Internal bookkeeping, not part of the analytics interface.

-- How far each replica's outage journal has been replayed: (replayed_chunk, replayed_id)
-- is the last journal row committed here, advanced in the same transaction as the rows.
CREATE TABLE journal_progress (
    journal_id     text        PRIMARY KEY,
    replayed_chunk bigint      NOT NULL,
    replayed_id    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per writer identity: the last batch it wrote. Every live write raises it in the
-- statement that writes its rows; a replay raises it to settle a write whose outcome was
-- unknown (src/store/fence.rs).
CREATE TABLE ingest_fences (
    writer_id  bytea       PRIMARY KEY,
    last_batch bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
