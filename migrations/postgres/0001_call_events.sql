-- callhook schema, PostgreSQL. The column names are a public contract (README: "Schema").

-- One row per distinct delivered event, any callback family. A retry of the same event
-- does not add a row: it increments `deliveries` (the unique key below enforces it, across
-- restarts, concurrent requests and replicas).
CREATE TABLE call_events (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sdkappid         bigint      NOT NULL,
    family           text        NOT NULL,             -- status | event | v4
    command          text        NOT NULL,             -- as received
    call_id          text,
    user_id          text,
    role             text,                             -- caller | callee | other, lower snake case
    event            text,                             -- v1 Event / v4 member ActionType, normalised
    call_result      text,                             -- normal_end, not_answer, …; NULL when empty
    media_type       text,                             -- audio | video | other
    call_type        text,                             -- single | group | other
    room_id          text,
    total_num        bigint,
    event_time       timestamptz,                      -- NULL when absent or 0
    start_call_ts    timestamptz,
    accept_ts        timestamptz,
    end_ts           timestamptz,
    client_ip        text,                             -- Tencent's clientip parameter
    opt_platform     text,                             -- Tencent's optplatform parameter
    remote_addr      text,                             -- the peer we saw, through trusted proxies
    payload          jsonb       NOT NULL,             -- the body as received
    deliveries       integer     NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_delivery_at timestamptz NOT NULL DEFAULT now(),
    dedupe_key       bytea       NOT NULL,             -- identifies the event across retries
    CONSTRAINT call_events_dedupe UNIQUE (sdkappid, dedupe_key)
);

CREATE INDEX call_events_call_idx ON call_events (sdkappid, call_id);
CREATE INDEX call_events_received_at_idx ON call_events (received_at);

-- Deliveries answered with a non-zero code for a configured app: kept for inspection.
CREATE TABLE rejected_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    sdkappid    bigint      NOT NULL,
    command     text,
    query       text        NOT NULL,                  -- secrets (token, Sign) redacted
    body        text        NOT NULL,                  -- capped at 8 KiB
    error_code  integer     NOT NULL,
    reason      text        NOT NULL,
    remote_addr text
);

CREATE INDEX rejected_deliveries_received_at_idx ON rejected_deliveries (received_at);
