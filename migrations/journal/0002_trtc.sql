-- TRTC's own callbacks (issue 16): journal_events takes the columns that SQLite's
-- call_events gained in migrations/sqlite/0004_trtc.sql, in the same order, before the
-- journal's own (fence, chunk). ALTER TABLE … ADD COLUMN would append them after those, so
-- the table is rebuilt (a journal is small: it holds what waits for PostgreSQL).

CREATE TABLE journal_events_new (
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
    trtc_event_type  INTEGER,
    unique_id        TEXT,
    terminal_type    INTEGER,
    user_type        INTEGER,
    reason           INTEGER,
    task_id          TEXT,
    trtc_status      INTEGER,
    files            TEXT,
    fence            BLOB    NOT NULL DEFAULT x'',
    chunk            INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT journal_events_dedupe UNIQUE (sdkappid, dedupe_key, fence, chunk)
) STRICT;

INSERT INTO journal_events_new
    (id, sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
     call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, client_ip,
     opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at,
     dedupe_key, members, notes, fence, chunk)
SELECT id, sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
       call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, client_ip,
       opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at,
       dedupe_key, members, notes, fence, chunk
FROM journal_events;

DROP TABLE journal_events;
ALTER TABLE journal_events_new RENAME TO journal_events;
