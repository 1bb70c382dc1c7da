//! PostgreSQL backend: one statement per batch of events, `INSERT … SELECT FROM unnest(…)`
//! prepared once whatever the batch size, with `ON CONFLICT` on the dedupe key, committed
//! implicitly in the same round trip.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::fence::{Fence, Fences};
use super::outbox::{NewEntry, Routes};
use super::{BatchRow, RejectedRow, StoreError, inserted_flags, merge_rejected, sorted_indices};
use super::{DatabaseSettings, DatabaseUrl};
use crate::faults::{Faults, Point};
use crate::protocol::TrtcColumns;

mod replay;
mod weeks;

use weeks::Weeks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The identities live writes fence with (src/store/fence.rs).
    fences: Arc<Fences>,
    /// How long a write may take before its outcome counts as unknown.
    write_timeout: Duration,
    /// The randomized fault test's faults (none otherwise).
    faults: Faults,
    /// The destinations writes make outbox entries for (src/store/outbox.rs).
    routes: Arc<Routes>,
    /// The weekly partitions a live batch may be written into by name (weeks.rs).
    weeks: Arc<Weeks>,
}

/// The columns every event row binds (as `unnest` arrays `$1` to `$26`, the last the
/// partition key), then the eight TRTC columns (`$27` to `$34`), which a batch of call
/// callbacks alone leaves out: all NULL there, they would cost an array each for nothing.
const EVENTS_COLUMNS: &str = "sdkappid, family, command, call_id, user_id, role, event, \
    call_result, media_type, call_type, room_id, total_num, event_time, start_call_ts, \
    accept_ts, end_ts, client_ip, opt_platform, remote_addr, payload, deliveries, \
    received_at, last_delivery_at, dedupe_key, members, notes, event_day";
const EVENTS_VALUES: &str = "t.sdkappid, t.family, t.command, t.call_id, t.user_id, t.role, \
    t.event, t.call_result, t.media_type, t.call_type, t.room_id, t.total_num, \
    timestamptz 'epoch' + t.event_time * interval '1 millisecond', \
    timestamptz 'epoch' + t.start_call_ts * interval '1 millisecond', \
    timestamptz 'epoch' + t.accept_ts * interval '1 millisecond', \
    timestamptz 'epoch' + t.end_ts * interval '1 millisecond', \
    t.client_ip, t.opt_platform, t.remote_addr, t.payload::json, t.deliveries, \
    timestamptz 'epoch' + t.received_at * interval '1 millisecond', \
    timestamptz 'epoch' + t.received_at * interval '1 millisecond', \
    t.dedupe_key, t.members::json, t.notes, DATE '1970-01-01' + t.event_day";
const EVENTS_ARRAYS: &str = "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], \
    $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], \
    $19::text[], $20::text[], $21::int[], $22::bigint[], $23::bytea[], $24::text[], $25::text[], \
    $26::int[]";
const EVENTS_ALIASES: &str = "sdkappid, family, command, call_id, user_id, role, event, \
    call_result, media_type, call_type, room_id, total_num, event_time, start_call_ts, \
    accept_ts, end_ts, client_ip, opt_platform, remote_addr, payload, deliveries, \
    received_at, dedupe_key, members, notes, event_day";
const TRTC_COLUMNS: &str = ", trtc_event_type, unique_id, terminal_type, user_type, reason, \
    task_id, trtc_status, files";
const TRTC_VALUES: &str = ", t.trtc_event_type, t.unique_id, t.terminal_type, t.user_type, \
    t.reason, t.task_id, t.trtc_status, t.files::json";
const TRTC_ARRAYS: &str = ", $27::int[], $28::text[], $29::int[], $30::int[], $31::int[], \
    $32::text[], $33::int[], $34::text[]";
/// How many parameters the events' statement has without and with the TRTC columns.
const EVENTS_PARAMS: usize = 26;
const EVENTS_PARAMS_TRTC: usize = 34;

/// Events are written by ONE statement, `INSERT … SELECT FROM unnest(…)` with one array per
/// column (one prepared statement for every batch size above one; measured against
/// multi-row VALUES and COPY in docs/src/benchmarks/ingest.md). Sent outside an explicit transaction, it is its
/// own transaction: PostgreSQL commits it (and, with the default `synchronous_commit`,
/// flushes its WAL) before answering, so one round trip writes and durably commits the
/// batch. Timestamps travel as bigint milliseconds and become timestamptz here, exactly.
///
/// A batch of one row, the usual batch at low load, reads its values from a one-row
/// `VALUES` instead: the same statement with one value per parameter, which spares
/// PostgreSQL the arrays and the function scan (docs/src/benchmarks/ingest.md, "One-row batches").
///
/// The live writes' variant first raises its writer's fence, and writes its rows only if
/// that succeeded (src/store/fence.rs).
///
/// `partition` names the week's partition to write into instead of the parent (weeks.rs);
/// the statement keeps calling its target `call_events`.
fn events_insert(shape: Shape, trtc: bool, partition: Option<&str>) -> String {
    let (columns, values, arrays) = if trtc {
        (TRTC_COLUMNS, TRTC_VALUES, TRTC_ARRAYS)
    } else {
        ("", "", "")
    };
    let aliases = if trtc { TRTC_COLUMNS } else { "" };
    let params = format!("{EVENTS_ARRAYS}{arrays}");
    let source = match shape {
        Shape::Arrays => format!("unnest({params})"),
        // `$1::bigint[]` becomes `$1::bigint`. (Every parameter is a column of arrays;
        // should a column ever hold an array itself, this would need its own list.)
        Shape::One => format!("(VALUES ({}))", params.replace("[]", "")),
    };
    let target = match partition {
        Some(name) => format!("{name} AS call_events"),
        None => "call_events".to_owned(),
    };
    format!(
        "INSERT INTO {target} ({EVENTS_COLUMNS}{columns})\nSELECT {EVENTS_VALUES}{values}\n\
         FROM {source}\nAS t({EVENTS_ALIASES}{aliases})\n"
    )
}

const EVENTS_UPSERT: &str = r#"
ON CONFLICT (sdkappid, dedupe_key, event_day) DO UPDATE
    SET deliveries = call_events.deliveries + EXCLUDED.deliveries,
        last_delivery_at = GREATEST(call_events.last_delivery_at, EXCLUDED.last_delivery_at)
"#;
/// What every events statement answers: each row's key and stored count.
const EVENTS_RETURNING: &str = "RETURNING dedupe_key, deliveries";

/// What a write into a partition does in place of the parent's statement trigger
/// (`call_events_rollup`, which fires only for statements on the parent): it queues the
/// calls of the rows it inserted for the rollups, in the same transaction. `fresh` is
/// `xmax = 0`, true for a row this statement inserted rather than counted again, as the
/// trigger's transition table holds only inserted rows.
const QUEUE_CTE: &str = "queued AS (INSERT INTO rollup_queue (sdkappid, call_id)\n\
    SELECT DISTINCT sdkappid, call_id FROM ins WHERE fresh AND call_id IS NOT NULL)\n";

/// The outbox entries of the new rows (src/store/outbox.rs), written by the same statement
/// as the events when some row of the batch matches a destination: the upsert becomes the
/// CTE `ins`, and `outbox` inserts an entry for every (row, destination) pair the batch
/// binds whose row `ins` returns as new, that is with the batch's own count (the rule
/// `inserted_flags` answers the requests by; a repeat of a stored event returns a larger
/// count and gets no entry). A batch of arrays binds the pairs as four arrays after its
/// other parameters (app, dedupe key, count, destination, message id: five); a batch of
/// one row binds its destinations and message ids as two.
fn outbox_cte(shape: Shape, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    let (pairs, on) = match shape {
        Shape::Arrays => (
            format!(
                "unnest({}::bigint[], {}::bytea[], {}::int[], {}::text[], {}::text[]) \
                 AS o(sdkappid, dedupe_key, deliveries, destination, message_id)",
                p(0),
                p(1),
                p(2),
                p(3),
                p(4)
            ),
            "o.sdkappid = ins.sdkappid AND o.dedupe_key = ins.dedupe_key \
             AND o.deliveries = ins.deliveries"
                .to_owned(),
        ),
        // `$21` is the one row's own count (EVENTS_ARRAYS' 21st column).
        Shape::One => (
            format!(
                "unnest({}::text[], {}::text[]) AS o(destination, message_id)",
                p(0),
                p(1)
            ),
            "ins.deliveries = $21".to_owned(),
        ),
    };
    format!(
        "outbox AS (INSERT INTO forward_outbox (event_id, destination, message_id)\n\
         SELECT ins.id, o.destination, o.message_id FROM ins JOIN {pairs} ON {on}\n\
         ON CONFLICT DO NOTHING)\n"
    )
}

/// Rejected deliveries, the rare case: their own statement, so the events' statement does
/// not open `rejected_deliveries` and its indexes on every batch.
const REJECTED_INSERT: &str = r#"
INSERT INTO rejected_deliveries
    (received_at, last_delivery_at, sdkappid, command, query, body, error_code, reason,
     remote_addr, dedupe_key, deliveries)
SELECT timestamptz 'epoch' + r.received_at * interval '1 millisecond',
       timestamptz 'epoch' + r.received_at * interval '1 millisecond',
       r.sdkappid, r.command, r.query, r.body, r.error_code, r.reason, r.remote_addr,
       r.dedupe_key, r.deliveries
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::bytea[], $10::int[])
    AS r(received_at, sdkappid, command, query, body, error_code, reason, remote_addr,
         dedupe_key, deliveries)
"#;

/// A refused delivery's retries count in `deliveries`.
const REJECTED_UPSERT: &str = r#"
ON CONFLICT (sdkappid, dedupe_key) DO UPDATE
    SET deliveries = rejected_deliveries.deliveries + EXCLUDED.deliveries,
        last_delivery_at = GREATEST(rejected_deliveries.last_delivery_at, EXCLUDED.last_delivery_at)
"#;

/// A CTE that raises writer `writer`'s fence to batch `batch` (both parameters) and
/// returns a row only if the fence was below it.
fn raise_fence(writer: &str, batch: &str) -> String {
    format!(
        "fence AS (INSERT INTO ingest_fences AS f (writer_id, last_batch) \
         VALUES ({writer}, {batch}) ON CONFLICT (writer_id) DO UPDATE \
         SET last_batch = EXCLUDED.last_batch, updated_at = now() \
         WHERE f.last_batch < EXCLUDED.last_batch RETURNING 1)"
    )
}

const FENCED: &str = "WHERE EXISTS (SELECT 1 FROM fence)";

/// True when `name` is a partition of call_events, else an error (22P02, its message
/// naming [`weeks::NOT_A_PARTITION`]); evaluated once per statement. The error comes from
/// casting a text that is not a boolean, built with `now()` so that the planner cannot
/// fold it and fail every statement.
fn attached(name: &str) -> String {
    format!(
        "(SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_inherits \
         WHERE inhrelid = '{name}'::regclass AND inhparent = 'call_events'::regclass) \
         THEN true ELSE ('{name} {}' || now()::text)::boolean END)",
        weeks::NOT_A_PARTITION
    )
}

/// How a batch's rows are bound: one array per column, or one value per column for a batch
/// of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Arrays,
    One,
}

/// Which events statement a batch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Variant {
    shape: Shape,
    /// The batch has TRTC columns.
    trtc: bool,
    /// A live write: it raises its fence first (its two parameters follow the columns').
    fenced: bool,
    /// Some row matches a destination: the statement writes outbox entries too (their
    /// parameters come last).
    outbox: bool,
}

impl Variant {
    /// Its place among the 16 statements.
    fn index(self) -> usize {
        usize::from(self.shape == Shape::One)
            | usize::from(self.trtc) << 1
            | usize::from(self.fenced) << 2
            | usize::from(self.outbox) << 3
    }

    fn all() -> impl Iterator<Item = Self> {
        (0..16usize).map(|i| Self {
            shape: if i & 1 == 1 {
                Shape::One
            } else {
                Shape::Arrays
            },
            trtc: i & 2 != 0,
            fenced: i & 4 != 0,
            outbox: i & 8 != 0,
        })
    }

    /// The statement: `WITH fence, ins, queued, outbox` as needed around the upsert,
    /// always answering `(dedupe_key, deliveries)` per row. `partition` is the week's
    /// partition to write into, or None for the parent.
    fn sql(self, partition: Option<&str>) -> String {
        let mut next = if self.trtc {
            EVENTS_PARAMS_TRTC
        } else {
            EVENTS_PARAMS
        } + 1;
        let mut ctes = Vec::new();
        if self.fenced {
            ctes.push(raise_fence(&format!("${next}"), &format!("${}", next + 1)));
            next += 2;
        }
        // A statement naming a partition first checks, once, that the table still is one
        // of call_events' partitions, and fails if not (weeks.rs: `gone`): a partition
        // detached by hand would otherwise take rows that call_events no longer shows.
        let guard = match (self.fenced, partition) {
            (true, Some(name)) => format!("{FENCED} AND {}", attached(name)),
            (false, Some(name)) => format!("WHERE {}", attached(name)),
            (true, None) => FENCED.to_owned(),
            (false, None) => String::new(),
        };
        let upsert = format!(
            "{}{guard}{EVENTS_UPSERT}",
            events_insert(self.shape, self.trtc, partition)
        );
        let body = if self.outbox || partition.is_some() {
            let fresh = match partition {
                Some(_) => ", call_id, xmax = 0 AS fresh",
                None => "",
            };
            ctes.push(format!(
                "ins AS ({upsert}RETURNING id, sdkappid, dedupe_key, deliveries{fresh})"
            ));
            if partition.is_some() {
                ctes.push(QUEUE_CTE.to_owned());
            }
            if self.outbox {
                ctes.push(outbox_cte(self.shape, next));
            }
            "SELECT dedupe_key, deliveries FROM ins".to_owned()
        } else {
            format!("{upsert}{EVENTS_RETURNING}")
        };
        match ctes.is_empty() {
            true => body,
            false => format!("WITH {}\n{body}", ctes.join(",\n")),
        }
    }
}

/// The statements: events (every [`Variant`]) and rejected deliveries, plain (replay) and
/// fenced (live writes).
struct Statements {
    events: Vec<String>,
    rejected: String,
    rejected_fenced: String,
}

impl Statements {
    fn events(&self, variant: Variant) -> &str {
        &self.events[variant.index()]
    }
}

fn statements() -> &'static Statements {
    static SQL: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let mut events = vec![String::new(); 16];
        for v in Variant::all() {
            events[v.index()] = v.sql(None);
        }
        Statements {
            events,
            rejected: format!("{REJECTED_INSERT}{REJECTED_UPSERT} RETURNING 1"),
            rejected_fenced: format!(
                "WITH {}{REJECTED_INSERT}{FENCED}{REJECTED_UPSERT} RETURNING 1",
                raise_fence("$11", "$12")
            ),
        }
    })
}

/// What a live write's statements came to.
enum Written {
    /// The returned `(dedupe_key, deliveries)` of the events.
    Rows(Vec<(Vec<u8>, i32)>),
    /// The fence was already raised: an earlier attempt of this very write committed.
    AlreadyCommitted,
}

/// The connection options of a PostgreSQL URL. Parameters named like a password that sqlx
/// cannot use (`sslpassword`, `PASSWORD`…) are left out with a warning that names them:
/// sqlx would log each one it does not know, value included. No error shows the URL
/// unredacted.
fn connect_options(url: &DatabaseUrl) -> anyhow::Result<PgConnectOptions> {
    let (usable, dropped) = url.without_unusable_secrets();
    for name in &dropped {
        tracing::warn!(
            parameter = %name,
            "ignoring a password-like parameter of the database URL that PostgreSQL connections do not use"
        );
    }
    PgConnectOptions::from_str(&usable)
        .with_context(|| format!("invalid PostgreSQL URL {}", url.redacted()))
}

impl PgStore {
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = connect_options(&settings.url)?.application_name("callhook");
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            // No ping before every use: a broken connection fails its batch, which is
            // retried once on a fresh connection (see `write_batch`).
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            fences: Arc::new(Fences::default()),
            write_timeout: settings.write_timeout(),
            faults: settings.faults.clone(),
            routes: Arc::default(),
            weeks: Arc::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn with_routes(self, routes: Arc<Routes>) -> Self {
        Self { routes, ..self }
    }

    pub(super) fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// Applies pending migrations, within `deadline` (a migration that does not finish by
    /// then is rolled back with its connection, and retried by the caller).
    pub async fn migrate(&self, deadline: Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(deadline, MIGRATOR.run(&self.pool)).await {
            Ok(result) => result.context("applying PostgreSQL migrations"),
            Err(_) => {
                anyhow::bail!("applying PostgreSQL migrations: no answer within {deadline:?}")
            }
        }
    }

    /// How many of this version's migrations the database has applied, and how many it
    /// has not.
    pub async fn migration_state(&self) -> anyhow::Result<(usize, usize)> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .context("looking for the migrations table")?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .context("reading the applied migrations")?
        } else {
            Vec::new()
        };
        let pending = MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count();
        Ok((applied.len(), pending))
    }

    /// `SELECT 1`, retried once on a fresh connection when the pooled one turns out to be
    /// dead (after a database restart), so recovery is seen at the first probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let select = || {
            self.faults
                .run(Point::PgPing, sqlx::query("SELECT 1").execute(&self.pool))
        };
        match select().await {
            Err(e) if is_stale_connection(&e) => select().await,
            other => other,
        }
        .map(|_| ())
        .map_err(classify)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a live batch within the write deadline, under a fresh fence. When the
    /// outcome is unknown (the deadline passed, or the connection broke with the statement
    /// possibly sent), the answer is [`StoreError::Indeterminate`] with the fence, and the
    /// fence's identity is retired.
    pub async fn write_batch(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
    ) -> Result<Vec<bool>, StoreError> {
        let fence = self.fences.next();
        let entries = self.routes.entries(rows);
        if !rows.is_empty() {
            self.weeks.refresh_if_stale(&self.pool);
        }
        let attempts = async {
            let attempt = || {
                self.faults.run(
                    Point::PgWrite,
                    self.try_write(rows, rejected, fence, &entries),
                )
            };
            match attempt().await {
                // A pooled connection may have died with a database restart; one
                // immediate retry on a fresh connection hides that from the senders. The
                // retry carries the same fence, so it cannot write the rows twice. A pool
                // timeout is not retried: the database is down and the senders must hear
                // it fast.
                Err(e) if is_stale_connection(&e) && !self.pool.is_closed() => {
                    tracing::debug!(error = %e, "batch failed on a stale connection; retrying once");
                    let first_maybe_sent = maybe_sent(&e);
                    attempt()
                        .await
                        .map_err(|e| (first_maybe_sent || maybe_sent(&e), e))
                }
                other => other.map_err(|e| (maybe_sent(&e), e)),
            }
        };
        match tokio::time::timeout(self.write_timeout, attempts).await {
            Ok(Ok(written)) => {
                self.fences.release(fence);
                if !entries.is_empty() {
                    self.routes.signal();
                }
                match written {
                    Written::Rows(returned) => inserted_flags(rows, &returned),
                    Written::AlreadyCommitted => Ok(vec![true; rows.len()]),
                }
            }
            Ok(Err((true, e))) => Err(StoreError::Indeterminate {
                reason: e.to_string(),
                fence,
            }),
            Ok(Err((false, e))) => {
                self.fences.release(fence);
                Err(classify(e))
            }
            Err(_) => Err(StoreError::Indeterminate {
                reason: format!("the write did not finish within {:?}", self.write_timeout),
                fence,
            }),
        }
    }

    /// Writes into the week's partition when the whole batch falls in one that exists
    /// (weeks.rs), else through the parent; a partition that turns out to be gone failed
    /// the statement before anything was written, and the batch goes through the parent.
    async fn try_write(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
        fence: Fence,
        entries: &[NewEntry<'_>],
    ) -> Result<Written, sqlx::Error> {
        let week = self.weeks.target(rows);
        match self
            .try_write_into(week, rows, rejected, fence, entries)
            .await
        {
            Err(e) if week.is_some() && weeks::gone(&e) => {
                tracing::info!(error = %e, "a week's partition of call_events is gone; writing through the parent and reading the partitions again");
                self.weeks.forget();
                self.try_write_into(None, rows, rejected, fence, entries)
                    .await
            }
            other => other,
        }
    }

    /// Reads which weekly partitions exist (after the upkeep made some).
    pub(crate) async fn read_partitions(&self) -> Result<(), StoreError> {
        self.weeks.read(&self.pool).await.map_err(classify)
    }

    /// One implicit transaction when the batch holds only events (the common case) or only
    /// rejections; an explicit one around both statements otherwise. The first statement
    /// raises the fence.
    async fn try_write_into(
        &self,
        week: Option<i64>,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
        fence: Fence,
        entries: &[NewEntry<'_>],
    ) -> Result<Written, sqlx::Error> {
        let fenced = |returned: Vec<(Vec<u8>, i32)>| {
            if returned.is_empty() {
                Written::AlreadyCommitted
            } else {
                Written::Rows(returned)
            }
        };
        match (rows.is_empty(), rejected.is_empty()) {
            (true, true) => Ok(Written::Rows(Vec::new())),
            (false, true) => Ok(fenced(
                insert_events(&self.pool, rows, Some(fence), entries, week).await?,
            )),
            (true, false) => {
                let n = insert_rejected(&self.pool, rejected, Some(fence)).await?;
                Ok(if n == 0 {
                    Written::AlreadyCommitted
                } else {
                    Written::Rows(Vec::new())
                })
            }
            (false, false) => {
                let mut tx = self.pool.begin().await?;
                let written =
                    fenced(insert_events(&mut *tx, rows, Some(fence), entries, week).await?);
                if matches!(written, Written::Rows(_)) {
                    insert_rejected(&mut *tx, rejected, None).await?;
                }
                tx.commit().await?;
                Ok(written)
            }
        }
    }
}

/// Writes a batch's events, and the outbox entries of those that are new (`entries`, from
/// [`Routes::entries`]), in one statement: into the partition of week `week` (its Monday,
/// every row of the batch in it) or through the parent.
async fn insert_events<'c>(
    db: impl sqlx::PgExecutor<'c>,
    rows: &[BatchRow<'_>],
    fence: Option<Fence>,
    entries: &[NewEntry<'_>],
    week: Option<i64>,
) -> Result<Vec<(Vec<u8>, i32)>, sqlx::Error> {
    let trtc = rows.iter().any(|r| r.row.trtc != TrtcColumns::default());
    let variant = |shape| Variant {
        shape,
        trtc,
        fenced: fence.is_some(),
        outbox: !entries.is_empty(),
    };
    let shape = match rows {
        [] => return Ok(Vec::new()),
        [_] => Shape::One,
        _ => Shape::Arrays,
    };
    // The statement naming a partition is made per batch (microseconds); PostgreSQL
    // prepares it once per connection like the others, its text being the cache's key.
    let named = week
        .and_then(weeks::partition_name)
        .map(|name| variant(shape).sql(Some(&name)));
    let sql = named
        .as_deref()
        .unwrap_or_else(|| statements().events(variant(shape)));
    let query = match rows {
        [one] => bind_events(sqlx::query_as(sql), &OneRow(one), trtc),
        _ => {
            let arrays = Arrays {
                rows,
                order: sorted_indices(rows),
            };
            bind_events(sqlx::query_as(sql), &arrays, trtc)
        }
    };
    let query = match fence {
        Some(f) => query.bind(f.writer.to_vec()).bind(f.batch),
        None => query,
    };
    bind_entries(query, rows, entries).fetch_all(db).await
}

/// Binds the outbox pairs of [`outbox_cte`] (nothing when there are none).
fn bind_entries<'q>(
    query: EventsQuery<'q>,
    rows: &[BatchRow<'_>],
    entries: &[NewEntry<'_>],
) -> EventsQuery<'q> {
    if entries.is_empty() {
        return query;
    }
    let destinations: Vec<String> = entries.iter().map(|e| e.destination.to_owned()).collect();
    let ids: Vec<String> = entries.iter().map(|e| e.message_id.clone()).collect();
    if rows.len() == 1 {
        return query.bind(destinations).bind(ids);
    }
    let of = |e: &NewEntry<'_>| rows[e.row];
    query
        .bind(
            entries
                .iter()
                .map(|e| of(e).row.sdkappid)
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| of(e).row.dedupe_key.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(entries.iter().map(|e| of(e).deliveries).collect::<Vec<_>>())
        .bind(destinations)
        .bind(ids)
}

type EventsQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (Vec<u8>, i32), sqlx::postgres::PgArguments>;

/// Binds one column of the events' statement, in the batch's shape.
trait BindColumn<'a> {
    fn column<'q, T>(
        &self,
        query: EventsQuery<'q>,
        f: impl Fn(&BatchRow<'a>) -> T,
    ) -> EventsQuery<'q>
    where
        T: ColumnValue<'q>;
}

/// What a column's value must be to be bound alone or as an array.
trait ColumnValue<'q>:
    'q
    + Send
    + sqlx::Encode<'q, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
    + sqlx::postgres::PgHasArrayType
{
}

impl<'q, T> ColumnValue<'q> for T where
    T: 'q
        + Send
        + sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
{
}

/// A batch as one array per column, its rows in dedupe-key order (see `sorted_indices`).
struct Arrays<'r, 'a> {
    rows: &'r [BatchRow<'a>],
    order: Vec<usize>,
}

impl<'a> BindColumn<'a> for Arrays<'_, 'a> {
    fn column<'q, T>(
        &self,
        query: EventsQuery<'q>,
        f: impl Fn(&BatchRow<'a>) -> T,
    ) -> EventsQuery<'q>
    where
        T: ColumnValue<'q>,
    {
        query.bind(
            self.order
                .iter()
                .map(|&i| f(&self.rows[i]))
                .collect::<Vec<T>>(),
        )
    }
}

/// A batch of one row, as one value per column.
struct OneRow<'r, 'a>(&'r BatchRow<'a>);

impl<'a> BindColumn<'a> for OneRow<'_, 'a> {
    fn column<'q, T>(
        &self,
        query: EventsQuery<'q>,
        f: impl Fn(&BatchRow<'a>) -> T,
    ) -> EventsQuery<'q>
    where
        T: ColumnValue<'q>,
    {
        query.bind(f(self.0))
    }
}

/// Binds the events' columns (`$1` to `$26`, then the TRTC columns `$27` to `$34` when the
/// batch has them), in the order of EVENTS_ARRAYS and TRTC_ARRAYS.
fn bind_events<'q, 'a: 'q>(
    query: EventsQuery<'q>,
    batch: &impl BindColumn<'a>,
    trtc: bool,
) -> EventsQuery<'q> {
    // The TRTC codes are integer columns; the parser keeps them within range
    // (src/protocol/trtc_rows.rs), so nothing is lost here.
    let int32 = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
    let mut q = query;
    q = batch.column(q, |b| b.row.sdkappid);
    q = batch.column(q, |b| b.row.family.as_str());
    q = batch.column(q, |b| b.row.command.as_str());
    q = batch.column(q, |b| b.row.call_id.as_deref());
    q = batch.column(q, |b| b.row.user_id.as_deref());
    q = batch.column(q, |b| b.row.role.as_ref().map(|v| v.as_str()));
    q = batch.column(q, |b| b.row.event.as_deref());
    q = batch.column(q, |b| b.row.call_result.as_ref().map(|v| v.as_str()));
    q = batch.column(q, |b| b.row.media_type.as_ref().map(|v| v.as_str()));
    q = batch.column(q, |b| b.row.call_type.as_ref().map(|v| v.as_str()));
    q = batch.column(q, |b| b.row.room_id.as_deref());
    q = batch.column(q, |b| b.row.total_num);
    q = batch.column(q, |b| b.row.event_time);
    q = batch.column(q, |b| b.row.start_call_ts);
    q = batch.column(q, |b| b.row.accept_ts);
    q = batch.column(q, |b| b.row.end_ts);
    q = batch.column(q, |b| b.row.client_ip.as_deref());
    q = batch.column(q, |b| b.row.opt_platform.as_deref());
    q = batch.column(q, |b| b.row.remote_addr.as_deref());
    q = batch.column(q, |b| b.row.payload.as_deref());
    q = batch.column(q, |b| b.deliveries);
    q = batch.column(q, |b| b.row.received_at);
    q = batch.column(q, |b| &b.row.dedupe_key[..]);
    q = batch.column(q, |b| b.row.members.as_deref());
    q = batch.column(q, |b| b.row.notes.as_deref());
    // The partition key, computed here (weeks.rs) so that the week a write names and the
    // day it stores are one computation. Days since 1970 fit an int for any time a body
    // can give (values::unix_time stops at 9999-12-31).
    q = batch.column(q, |b| i32::try_from(weeks::event_day(b.row)).unwrap_or(0));
    if trtc {
        q = batch.column(q, |b| int32(b.row.trtc.event_type));
        q = batch.column(q, |b| b.row.trtc.unique_id.as_deref());
        q = batch.column(q, |b| int32(b.row.trtc.terminal_type));
        q = batch.column(q, |b| int32(b.row.trtc.user_type));
        q = batch.column(q, |b| int32(b.row.trtc.reason));
        q = batch.column(q, |b| b.row.trtc.task_id.as_deref());
        q = batch.column(q, |b| int32(b.row.trtc.status));
        q = batch.column(q, |b| b.row.trtc.files.as_deref());
    }
    q
}

/// Returns how many rows were written (0 when the fence stopped them).
async fn insert_rejected<'c>(
    db: impl sqlx::PgExecutor<'c>,
    rejected: &[RejectedRow],
    fence: Option<Fence>,
) -> Result<usize, sqlx::Error> {
    let sql = statements();
    let merged = merge_rejected(rejected);
    let text =
        |f: fn(&RejectedRow) -> Option<&str>| merged.iter().map(|(r, _)| f(r)).collect::<Vec<_>>();
    let query = sqlx::query(match fence {
        Some(_) => &sql.rejected_fenced,
        None => &sql.rejected,
    })
    .bind(
        merged
            .iter()
            .map(|(r, _)| r.received_at)
            .collect::<Vec<_>>(),
    )
    .bind(merged.iter().map(|(r, _)| r.sdkappid).collect::<Vec<_>>())
    .bind(text(|r| r.command.as_deref()))
    .bind(text(|r| Some(r.query.as_str())))
    .bind(text(|r| Some(r.body.as_str())))
    .bind(merged.iter().map(|(r, _)| r.error_code).collect::<Vec<_>>())
    .bind(text(|r| Some(r.reason.as_str())))
    .bind(text(|r| r.remote_addr.as_deref()))
    .bind(
        merged
            .iter()
            .map(|(r, _)| r.dedupe_key.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(merged.iter().map(|(_, n)| *n).collect::<Vec<_>>());
    let query = match fence {
        Some(f) => query.bind(f.writer.to_vec()).bind(f.batch),
        None => query,
    };
    Ok(query.fetch_all(db).await?.len())
}

/// Whether a failed statement may have reached the database (and so may have committed):
/// the connection broke (I/O, protocol) rather than the database answering with an error
/// or the pool never handing out a connection.
fn maybe_sent(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
    )
}

fn is_stale_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// SQLSTATE classes: 22 data exception and 54 program limit are the row's fault; 08
/// connection, 57 operator intervention (shutdown, crash recovery), 53 insufficient
/// resources, 40 rollback (deadlock, serialization) and 25006 (read-only, e.g. a standby
/// after failover) are the database's state and may pass.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    // A row routed to a partition that a concurrent attach has just narrowed: transient,
    // the same row goes to the new partition when it is tried again. (callhook's own
    // attach waits for the writes in flight, so this is for partitions made by others.)
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("23514")
        && db.message().contains("partition constraint")
    {
        return StoreError::Unavailable(e.to_string());
    }
    StoreError::from_sqlx(e, |code| match code.get(..2)? {
        "22" | "54" => Some(true),
        "08" | "57" | "53" | "40" | "58" => Some(false),
        _ if code == "25006" => Some(false),
        _ => None,
    })
}

impl PgStore {
    /// A small pool for reading analytics (`callhook report`): statement logging off, so a
    /// long report query is not reported as a slow statement on the user's terminal.
    pub fn connect_for_reading(url: &str) -> anyhow::Result<Self> {
        use sqlx::ConnectOptions as _;
        let options = connect_options(&DatabaseUrl::new(url))?
            .application_name("callhook (read-only)")
            .options([("default_transaction_read_only", "on")])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            fences: Arc::new(Fences::default()),
            write_timeout: Duration::from_secs(10),
            faults: Faults::none(),
            routes: Arc::default(),
            weeks: Arc::default(),
        })
    }
}
