-- callhook's outage journal (callhook-spool/journal.db): events acknowledged while
-- PostgreSQL could not take them, waiting to be replayed into it exactly once.
--
-- journal_events has the columns of call_events (migrations/sqlite/0001_call_events.sql
-- and 0003; a test keeps them in step) and merges repeats the same way, plus two of its own:
--   fence  the write that was in flight when the database stopped answering (24 bytes,
--          src/store/fence.rs), empty otherwise; rows of such a write merge only with
--          each other, so the replay can skip exactly them if that write committed after
--          all
--   chunk  0 while the row takes new deliveries; the replay chunk's number once the
--          replay has taken it (it then takes no more: a repeat starts a new row)

CREATE TABLE journal_events (
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
    payload          TEXT,
    deliveries       INTEGER NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    received_at      TEXT    NOT NULL,
    last_delivery_at TEXT    NOT NULL,
    dedupe_key       BLOB    NOT NULL,
    members          TEXT,
    notes            TEXT,
    fence            BLOB    NOT NULL DEFAULT x'',
    chunk            INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT journal_events_dedupe UNIQUE (sdkappid, dedupe_key, fence, chunk)
) STRICT;

-- The journal's identity (journal_progress.journal_id in PostgreSQL), the last replay
-- chunk number handed out, and the chunk being replayed (its number and last row id).
CREATE TABLE journal_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
