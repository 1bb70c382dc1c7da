-- Forwarding (issue 26): the outbox. One row per stored event and [[forward]] destination
-- it matched, written in the same transaction as the event (the statement that stores a
-- new event inserts its rows here too), never for a repeat of an event already stored.
-- The delivery workers claim due rows (FOR UPDATE SKIP LOCKED), send them, and record the
-- outcome here. The column names are a public contract (README: "Forwarding", "Schema").
--
-- No foreign key to call_events: it would cost a lookup on every insert, and an entry
-- whose event was deleted is simply answered "dead: the event is no longer stored".
CREATE TABLE forward_outbox (
    event_id        bigint      NOT NULL,             -- call_events.id
    destination     text        NOT NULL,             -- the [[forward]] name
    message_id      text        NOT NULL,             -- the webhook-id header, the same on every attempt
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,   -- attempts started (a claimed one counts)
    created_at      timestamptz NOT NULL DEFAULT now(),  -- committed with the event
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- pending: when it is due (or its claim lapses)
    last_attempt_at timestamptz,
    delivered_at    timestamptz,                      -- the last 2xx answer
    last_status     integer,                          -- HTTP status of the last answer; NULL: none
    last_error      text,                             -- why the last attempt failed; NULL after a success
    PRIMARY KEY (event_id, destination)
);

-- What the workers claim (the due entries of one destination, oldest due first) and what
-- the backlog gauges count: pending entries only, so delivered ones cost nothing here.
CREATE INDEX forward_outbox_due ON forward_outbox (destination, next_attempt_at)
    INCLUDE (created_at) WHERE state = 'pending';
-- The dead letters, for `callhook forward status` and the dead-entry gauge.
CREATE INDEX forward_outbox_dead ON forward_outbox (destination) WHERE state = 'dead';
