-- callhook schema, SQLite: the same tables and columns as PostgreSQL in SQLite types.
-- Timestamps are ISO-8601 UTC text ('2024-01-10T03:01:13.000Z'), which SQLite's date and
-- time functions read directly; payload is the JSON text as received.

CREATE TABLE call_events (
    id               INTEGER PRIMARY KEY,
    sdkappid         INTEGER NOT NULL,
    family           TEXT    NOT NULL,
    command          TEXT    NOT NULL,
    call_id          TEXT,
    user_id          TEXT,
    role             TEXT,
    event            TEXT,
    call_result      TEXT,
    media_type       TEXT,
    call_type        TEXT,
    room_id          TEXT,
    total_num        INTEGER,
    event_time       TEXT,
    start_call_ts    TEXT,
    accept_ts        TEXT,
    end_ts           TEXT,
    client_ip        TEXT,
    opt_platform     TEXT,
    remote_addr      TEXT,
    payload          TEXT    NOT NULL,
    deliveries       INTEGER NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    received_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_delivery_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    dedupe_key       BLOB    NOT NULL,
    CONSTRAINT call_events_dedupe UNIQUE (sdkappid, dedupe_key)
) STRICT;

CREATE INDEX call_events_call_idx ON call_events (sdkappid, call_id);
CREATE INDEX call_events_received_at_idx ON call_events (received_at);

CREATE TABLE rejected_deliveries (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    sdkappid    INTEGER NOT NULL,
    command     TEXT,
    query       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    error_code  INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    remote_addr TEXT
) STRICT;

CREATE INDEX rejected_deliveries_received_at_idx ON rejected_deliveries (received_at);
