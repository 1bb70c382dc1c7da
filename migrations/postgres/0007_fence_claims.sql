-- A fence's outcome, settled once (issue 23). The replay settles a write of unknown
-- outcome by raising its fence in ingest_fences; when that write's journaled rows are
-- replayed in more than one transaction (a chunk boundary inside them, the row-by-row
-- fallback, a chunk shrunk after a timeout), every later transaction must reach the
-- same answer as the first. A raised fence alone cannot say who raised it, so the
-- replay records here that IT claimed the write: a claimed fence means "the original
-- never committed, the journaled rows are to be stored", an unclaimed raised one "the
-- original committed, skip them". Internal bookkeeping, not part of the analytics
-- interface (src/store/fence.rs).
CREATE TABLE fence_claims (
    writer_id  bytea       NOT NULL,
    batch      bigint      NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (writer_id, batch)
);
