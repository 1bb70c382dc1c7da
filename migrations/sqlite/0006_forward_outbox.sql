-- Forwarding (issue 26), SQLite: the same table as PostgreSQL's 0009 in SQLite types (read
-- that file for what each column means). Times are ISO-8601 UTC text of one width, so text
-- comparisons are chronological. SQLite uses a partial index only when the query repeats
-- its condition: every read of the due entries says `state = 'pending'`.
CREATE TABLE forward_outbox (
    event_id        INTEGER NOT NULL,
    destination     TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    last_attempt_at TEXT,
    delivered_at    TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    PRIMARY KEY (event_id, destination)
) STRICT, WITHOUT ROWID;

CREATE INDEX forward_outbox_due ON forward_outbox (destination, next_attempt_at, created_at)
    WHERE state = 'pending';
CREATE INDEX forward_outbox_dead ON forward_outbox (destination) WHERE state = 'dead';
