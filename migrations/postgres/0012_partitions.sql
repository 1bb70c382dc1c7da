-- call_events partitioned by week (README: "Schema", "Retention"), so that old events leave
-- by whole partitions (a DROP TABLE, not hours of DELETE and VACUUM) and one week's
-- indexes are what a week's writes touch.
--
-- The partition key, `event_day`, is the UTC day of the event's own time as the body
-- gives it (StartCallTs, else the event time, else the end, else the accept time), or
-- 1970-01-01 when the body has none. It never depends on when the delivery arrived: a
-- retry and a journal replay of the same body compute the same day, land in the same
-- partition and meet the same unique key, (sdkappid, dedupe_key, event_day), so the
-- dedupe guarantee holds across partition boundaries. (A unique key on a partitioned
-- table must include the partition key; this one does without weakening anything.)
--
-- Partitions are named call_events_pYYYYMMDD after their Monday and cover that week.
-- The service makes them ahead of time (src/store/retention.rs); a row whose week has no
-- partition (no time in its body, a clock years off) goes to call_events_default, and
-- moves into its week's partition when that is made (callhook_ensure_week). No row ever
-- lacks a place, whether or not the service's upkeep has run.
--
-- This migration copies the table once, in its transaction: docs/BENCHMARKS.md
-- ("Partitions") says how long at 1 M and 10 M events. callhook serves while it runs:
-- callbacks are journaled and replayed when it commits (README: "Upgrades").

SET LOCAL maintenance_work_mem = '256MB';

CREATE FUNCTION callhook_event_day(start_call_ts timestamptz, event_time timestamptz,
                                   end_ts timestamptz, accept_ts timestamptz)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((coalesce(start_call_ts, event_time, end_ts, accept_ts)
                     AT TIME ZONE 'UTC')::date, DATE '1970-01-01')
$$;

-- The views over call_events, saved in the order they can be made again, then dropped.
CREATE TEMP TABLE saved_views ON COMMIT DROP AS
WITH RECURSIVE deps AS (
    SELECT v.oid, 1 AS depth
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class
    WHERE d.refobjid = 'call_events'::regclass AND v.oid <> 'call_events'::regclass
    UNION
    SELECT v.oid, deps.depth + 1
    FROM deps
    JOIN pg_depend d ON d.refobjid = deps.oid
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class
    WHERE v.oid <> deps.oid AND deps.depth < 50
)
SELECT c.relname AS name, max(deps.depth) AS depth, pg_get_viewdef(c.oid) AS definition
FROM deps JOIN pg_class c ON c.oid = deps.oid
GROUP BY c.oid, c.relname;

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name FROM saved_views ORDER BY depth DESC LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I', v.name);
    END LOOP;
END
$$;

ALTER TABLE call_events RENAME TO call_events_unpartitioned;
ALTER SEQUENCE call_events_id_seq RENAME TO call_events_unpartitioned_id_seq;
ALTER TABLE call_events_unpartitioned RENAME CONSTRAINT call_events_pkey TO call_events_unpartitioned_pkey;
ALTER TABLE call_events_unpartitioned RENAME CONSTRAINT call_events_dedupe TO call_events_unpartitioned_dedupe;
ALTER TABLE call_events_unpartitioned RENAME CONSTRAINT call_events_deliveries_check TO call_events_unpartitioned_deliveries_check;
DROP TRIGGER call_events_rollup ON call_events_unpartitioned;

CREATE SEQUENCE call_events_id_seq AS bigint;

CREATE TABLE call_events (
    id               bigint      NOT NULL DEFAULT nextval('call_events_id_seq'),
    sdkappid         bigint      NOT NULL,
    family           text        NOT NULL,
    command          text        NOT NULL,
    call_id          text,
    user_id          text,
    role             text,
    event            text,
    call_result      text,
    media_type       text,
    call_type        text,
    room_id          text,
    total_num        bigint,
    event_time       timestamptz,
    start_call_ts    timestamptz,
    accept_ts        timestamptz,
    end_ts           timestamptz,
    client_ip        text,
    opt_platform     text,
    remote_addr      text,
    payload          json,
    deliveries       integer     NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_delivery_at timestamptz NOT NULL DEFAULT now(),
    dedupe_key       bytea       NOT NULL,
    members          json,
    notes            text,
    trtc_event_type  integer,
    unique_id        text,
    terminal_type    integer,
    user_type        integer,
    reason           integer,
    task_id          text,
    trtc_status      integer,
    files            json,
    event_day        date        NOT NULL   -- callhook_event_day(start_call_ts, event_time, end_ts, accept_ts)
) PARTITION BY RANGE (event_day);
ALTER SEQUENCE call_events_id_seq OWNED BY call_events.id;

CREATE TABLE call_events_default PARTITION OF call_events DEFAULT;

-- Makes the partition of the week starting `monday`, unless it exists; rows of that week
-- waiting in the default partition move into it. Writes are held for the moment it takes
-- (the service waits at most 200 ms for the lock, src/store/retention.rs), so that no row
-- of the week can reach the default partition between the move and the attach. Answers
-- whether it made the partition.
CREATE FUNCTION callhook_ensure_week(monday date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    name text := 'call_events_p' || to_char(monday, 'YYYYMMDD');
BEGIN
    IF extract(isodow FROM monday) <> 1 THEN
        RAISE EXCEPTION 'callhook_ensure_week: % is not a Monday', monday;
    END IF;
    -- Replicas take turns (two CREATE TABLEs of one name would fail one of them).
    PERFORM pg_advisory_xact_lock(hashtext('callhook_ensure_week'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Writes in flight chose their partition before this one existed: wait for them (and
    -- hold new ones for the moment the attach takes; reads go on), so that none of them
    -- puts a row of this week into the default partition after the move.
    LOCK TABLE call_events IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE call_events_default IN SHARE ROW EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE call_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format('WITH moved AS (DELETE FROM call_events_default WHERE event_day >= %L AND event_day < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', monday, monday + 7, name);
    EXECUTE format('ALTER TABLE call_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, monday, monday + 7);
    RETURN true;
END
$$;

-- A partition for every week the stored events fall in (within reason: times before 2000
-- or more than three weeks ahead stay in the default partition), and for this week and
-- the next two.
SELECT callhook_ensure_week(w)
FROM (
    SELECT DISTINCT date_trunc('week', d)::date AS w
    FROM (SELECT callhook_event_day(start_call_ts, event_time, end_ts, accept_ts) AS d
          FROM call_events_unpartitioned) days
    WHERE d >= DATE '2000-01-01' AND d < current_date + 21
    UNION
    SELECT date_trunc('week', current_date + 7 * n)::date FROM generate_series(0, 2) n
) weeks
ORDER BY w;

INSERT INTO call_events (id, sdkappid, family, command, call_id, user_id, role, event,
    call_result, media_type, call_type, room_id, total_num, event_time, start_call_ts,
    accept_ts, end_ts, client_ip, opt_platform, remote_addr, payload, deliveries,
    received_at, last_delivery_at, dedupe_key, members, notes, trtc_event_type, unique_id,
    terminal_type, user_type, reason, task_id, trtc_status, files, event_day)
SELECT id, sdkappid, family, command, call_id, user_id, role, event,
    call_result, media_type, call_type, room_id, total_num, event_time, start_call_ts,
    accept_ts, end_ts, client_ip, opt_platform, remote_addr, payload, deliveries,
    received_at, last_delivery_at, dedupe_key, members, notes, trtc_event_type, unique_id,
    terminal_type, user_type, reason, task_id, trtc_status, files,
    callhook_event_day(start_call_ts, event_time, end_ts, accept_ts)
FROM call_events_unpartitioned;

SELECT setval('call_events_id_seq', coalesce((SELECT max(id) FROM call_events_unpartitioned), 0) + 1, false);

DROP TABLE call_events_unpartitioned;

-- The same keys and indexes as before, each now one per partition. The primary key and
-- the dedupe key gain the partition key, as PostgreSQL requires; `id` still leads the
-- first (ids stay unique: one sequence gives them all).
ALTER TABLE call_events ADD CONSTRAINT call_events_pkey PRIMARY KEY (id, event_day);
ALTER TABLE call_events ADD CONSTRAINT call_events_dedupe UNIQUE (sdkappid, dedupe_key, event_day);
CREATE INDEX call_events_received_at_idx ON call_events (received_at);
CREATE INDEX call_events_day_idx
    ON call_events (((coalesce(start_call_ts, event_time, received_at) AT TIME ZONE 'UTC')::date),
                    sdkappid, call_id)
    INCLUDE (start_call_ts, event_time, received_at);
CREATE INDEX call_events_fold_idx
    ON call_events (sdkappid, call_id)
    INCLUDE (role, user_id, event, call_result, media_type, call_type, total_num, event_time,
             start_call_ts, accept_ts, end_ts, received_at);
CREATE INDEX call_events_noted_idx ON call_events (received_at) WHERE notes IS NOT NULL;
CREATE INDEX call_events_room_idx ON call_events (sdkappid, room_id, event_time)
    WHERE family IN ('room', 'media', 'recording');
CREATE INDEX call_events_task_idx ON call_events (sdkappid, task_id) WHERE task_id IS NOT NULL;

CREATE TRIGGER call_events_rollup AFTER INSERT ON call_events
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION callhook_queue_calls();

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name, definition FROM saved_views ORDER BY depth, name LOOP
        EXECUTE format('CREATE VIEW %I AS %s', v.name, v.definition);
    END LOOP;
END
$$;

ANALYZE call_events;

-- Retention (README: "Retention"): the day before which events may have been removed, so
-- that `report` can say its older days come from the rollups alone; and the rollups'
-- per-call folds leave by day with the events.
CREATE TABLE retention_horizon (
    id            integer     PRIMARY KEY CHECK (id = 1),
    events_before date        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_calls_day_idx ON rollup_calls (day);
