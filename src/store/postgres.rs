//! PostgreSQL backend: one statement per batch of events, `INSERT … SELECT FROM unnest(…)`
//! prepared once whatever the batch size, with `ON CONFLICT` on the dedupe key, committed
//! implicitly in the same round trip.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{BatchRow, RejectedRow, StoreError, inserted_flags, sorted_indices};
use crate::config::DatabaseSettings;
use crate::protocol::EventRow;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// Events are written by ONE statement, `INSERT … SELECT FROM unnest(…)` with one array per
/// column (one prepared statement whatever the batch size; measured against multi-row
/// VALUES and COPY in docs/BENCHMARKS.md). Sent outside an explicit transaction, it is its
/// own transaction: PostgreSQL commits it (and, with the default `synchronous_commit`,
/// flushes its WAL) before answering, so one round trip writes and durably commits the
/// batch. Timestamps travel as bigint milliseconds and become timestamptz here, exactly.
const INSERT_EVENTS: &str = r#"
INSERT INTO call_events (
    sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
    call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts, client_ip,
    opt_platform, remote_addr, payload, deliveries, received_at, last_delivery_at, dedupe_key)
SELECT
    t.sdkappid, t.family, t.command, t.call_id, t.user_id, t.role, t.event, t.call_result,
    t.media_type, t.call_type, t.room_id, t.total_num,
    timestamptz 'epoch' + t.event_time * interval '1 millisecond',
    timestamptz 'epoch' + t.start_call_ts * interval '1 millisecond',
    timestamptz 'epoch' + t.accept_ts * interval '1 millisecond',
    timestamptz 'epoch' + t.end_ts * interval '1 millisecond',
    t.client_ip, t.opt_platform, t.remote_addr, t.payload::jsonb, t.deliveries,
    timestamptz 'epoch' + t.received_at * interval '1 millisecond',
    timestamptz 'epoch' + t.received_at * interval '1 millisecond',
    t.dedupe_key
FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[],
    $14::bigint[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], $19::text[],
    $20::text[], $21::int[], $22::bigint[], $23::bytea[]
) AS t(sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
       call_type, room_id, total_num, event_time, start_call_ts, accept_ts, end_ts,
       client_ip, opt_platform, remote_addr, payload, deliveries, received_at, dedupe_key)
ON CONFLICT (sdkappid, dedupe_key) DO UPDATE
    SET deliveries = call_events.deliveries + EXCLUDED.deliveries,
        last_delivery_at = GREATEST(call_events.last_delivery_at, EXCLUDED.last_delivery_at)
RETURNING dedupe_key, deliveries
"#;

/// Rejected deliveries, the rare case: their own statement, so the events' statement does
/// not open `rejected_deliveries` and its indexes on every batch.
const INSERT_REJECTED: &str = r#"
INSERT INTO rejected_deliveries
    (received_at, sdkappid, command, query, body, error_code, reason, remote_addr)
SELECT timestamptz 'epoch' + r.received_at * interval '1 millisecond',
       r.sdkappid, r.command, r.query, r.body, r.error_code, r.reason, r.remote_addr
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[])
    AS r(received_at, sdkappid, command, query, body, error_code, reason, remote_addr)
"#;

impl PgStore {
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(settings.url.expose())
            .with_context(|| format!("invalid PostgreSQL URL {}", settings.url.redacted()))?
            .application_name("callhook");
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            // No ping before every use: a broken connection fails its batch, which is
            // retried once on a fresh connection (see `write_batch`).
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying PostgreSQL migrations")
    }

    /// `SELECT 1`, retried once on a fresh connection when the pooled one turns out to be
    /// dead (after a database restart), so recovery is seen at the first probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let select = || sqlx::query("SELECT 1").execute(&self.pool);
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

    pub async fn write_batch(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
    ) -> Result<Vec<bool>, StoreError> {
        let returned = match self.try_write(rows, rejected).await {
            // A pooled connection may have died with a database restart; one immediate
            // retry on a fresh connection hides that from the senders. A pool timeout is
            // not retried: the database is down and the senders must hear it fast.
            Err(e) if is_stale_connection(&e) && !self.pool.is_closed() => {
                tracing::debug!(error = %e, "batch failed on a stale connection; retrying once");
                self.try_write(rows, rejected).await
            }
            other => other,
        };
        inserted_flags(rows, &returned.map_err(classify)?)
    }

    /// One implicit transaction when the batch holds only events (the common case) or only
    /// rejections; an explicit one around both statements otherwise.
    async fn try_write(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
    ) -> Result<Vec<(Vec<u8>, i32)>, sqlx::Error> {
        match (rows.is_empty(), rejected.is_empty()) {
            (_, true) => insert_events(&self.pool, rows).await,
            (true, false) => insert_rejected(&self.pool, rejected)
                .await
                .map(|()| Vec::new()),
            (false, false) => {
                let mut tx = self.pool.begin().await?;
                let returned = insert_events(&mut *tx, rows).await?;
                insert_rejected(&mut *tx, rejected).await?;
                tx.commit().await?;
                Ok(returned)
            }
        }
    }
}

async fn insert_events<'c>(
    db: impl sqlx::PgExecutor<'c>,
    rows: &[BatchRow<'_>],
) -> Result<Vec<(Vec<u8>, i32)>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let order = &sorted_indices(rows);
    let col = |f: fn(&EventRow) -> Option<&str>| column(rows, order, f);
    let int = |f: fn(&EventRow) -> Option<i64>| column(rows, order, f);
    sqlx::query_as(INSERT_EVENTS)
        .bind(column(rows, order, |r| r.sdkappid))
        .bind(column(rows, order, |r| r.family.as_str()))
        .bind(column(rows, order, |r| r.command.as_str()))
        .bind(col(|r| r.call_id.as_deref()))
        .bind(col(|r| r.user_id.as_deref()))
        .bind(col(|r| r.role.as_ref().map(|v| v.as_str())))
        .bind(col(|r| r.event.as_deref()))
        .bind(col(|r| r.call_result.as_ref().map(|v| v.as_str())))
        .bind(col(|r| r.media_type.as_ref().map(|v| v.as_str())))
        .bind(col(|r| r.call_type.as_ref().map(|v| v.as_str())))
        .bind(col(|r| r.room_id.as_deref()))
        .bind(int(|r| r.total_num))
        .bind(int(|r| r.event_time))
        .bind(int(|r| r.start_call_ts))
        .bind(int(|r| r.accept_ts))
        .bind(int(|r| r.end_ts))
        .bind(col(|r| r.client_ip.as_deref()))
        .bind(col(|r| r.opt_platform.as_deref()))
        .bind(col(|r| r.remote_addr.as_deref()))
        .bind(column(rows, order, |r| &*r.payload))
        .bind(
            order
                .iter()
                .map(|&i| rows[i].deliveries)
                .collect::<Vec<i32>>(),
        )
        .bind(column(rows, order, |r| r.received_at))
        .bind(column(rows, order, |r| &r.dedupe_key[..]))
        .fetch_all(db)
        .await
}

async fn insert_rejected<'c>(
    db: impl sqlx::PgExecutor<'c>,
    rejected: &[RejectedRow],
) -> Result<(), sqlx::Error> {
    let text = |f: fn(&RejectedRow) -> Option<&str>| rejected.iter().map(f).collect::<Vec<_>>();
    sqlx::query(INSERT_REJECTED)
        .bind(rejected.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .bind(rejected.iter().map(|r| r.sdkappid).collect::<Vec<_>>())
        .bind(text(|r| r.command.as_deref()))
        .bind(text(|r| Some(r.query.as_str())))
        .bind(text(|r| Some(r.body.as_str())))
        .bind(rejected.iter().map(|r| r.error_code).collect::<Vec<_>>())
        .bind(text(|r| Some(r.reason.as_str())))
        .bind(text(|r| r.remote_addr.as_deref()))
        .execute(db)
        .await
        .map(|_| ())
}

/// One column of the batch, in lock order.
fn column<'a, T>(rows: &[BatchRow<'a>], order: &[usize], f: impl Fn(&'a EventRow) -> T) -> Vec<T> {
    order.iter().map(|&i| f(rows[i].row)).collect()
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
fn classify(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e, |code| match code.get(..2)? {
        "22" | "54" => Some(true),
        "08" | "57" | "53" | "40" | "58" => Some(false),
        _ if code == "25006" => Some(false),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------
// Analytics: reads of the views of migrations/postgres/0002_analytics.sql.

/// `call_stats_daily` for a period; `$3` (when present) narrows to one app.
const DAILY_STATS: &str = r#"
SELECT day::text, sdkappid, calls, answered, not_answer, reject, call_busy, cancel, interrupt,
       answer_rate, avg_talk_seconds, p50_talk_seconds, p90_talk_seconds
FROM call_stats_daily
WHERE day >= $1::date AND day < $2::date
"#;

const TALK_TIMES: &str = r#"
SELECT talk_ms
FROM call_rollup
WHERE day >= $1::date AND day < $2::date AND talk_ms IS NOT NULL
"#;

impl PgStore {
    pub(crate) async fn daily_stats(
        &self,
        range: super::DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<super::DailyStatsRow>, StoreError> {
        let sql = with_app_filter(DAILY_STATS, sdkappid, "ORDER BY day, sdkappid");
        let mut q = sqlx::query_as(&sql)
            .bind(range.since.to_string())
            .bind(range.until.to_string());
        if let Some(app) = sdkappid {
            q = q.bind(app);
        }
        let mut tx = self.analytics_tx().await?;
        let rows = q.fetch_all(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(rows)
    }

    pub(crate) async fn talk_times_ms(
        &self,
        range: super::DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = with_app_filter(TALK_TIMES, sdkappid, "ORDER BY talk_ms");
        let mut q = sqlx::query_scalar(&sql)
            .bind(range.since.to_string())
            .bind(range.until.to_string());
        if let Some(app) = sdkappid {
            q = q.bind(app);
        }
        let mut tx = self.analytics_tx().await?;
        let rows = q.fetch_all(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(rows)
    }

    /// A read-only transaction for the analytics views, without JIT: the views' per-call
    /// folding makes the planner's cost estimate large enough to trigger JIT compilation,
    /// which takes longer than the query itself (about 1 s at a million events).
    async fn analytics_tx(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        Ok(tx)
    }

    pub(crate) async fn has_analytics(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT to_regclass('call_stats_daily') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }
}

/// Appends `AND sdkappid = $3` when one app is asked for (a separate statement, so the
/// condition reaches the index), then `tail`.
fn with_app_filter(base: &str, sdkappid: Option<i64>, tail: &str) -> String {
    match sdkappid {
        Some(_) => format!("{base} AND sdkappid = $3\n{tail}"),
        None => format!("{base}{tail}"),
    }
}

impl PgStore {
    /// A small pool for reading analytics (`callhook report`): statement logging off, so a
    /// long report query is not reported as a slow statement on the user's terminal.
    pub fn connect_for_reading(url: &str) -> anyhow::Result<Self> {
        use sqlx::ConnectOptions as _;
        let options = PgConnectOptions::from_str(url)
            .with_context(|| {
                format!(
                    "invalid PostgreSQL URL {}",
                    crate::config::DatabaseUrl::new(url).redacted()
                )
            })?
            .application_name("callhook (read-only)")
            .options([("default_transaction_read_only", "on")])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }
}

/// The latest events, newest `$1` by id, returned oldest first.
const RECENT_EVENTS: &str = r#"
SELECT id, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS received_at,
       sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
       call_type, client_ip, opt_platform, remote_addr, deliveries::bigint AS deliveries,
       to_char(last_delivery_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS last_delivery_at
FROM (
    SELECT * FROM call_events
    WHERE $2::bigint IS NULL OR sdkappid = $2
    ORDER BY id DESC
    LIMIT $1
) AS latest
ORDER BY id
"#;

impl PgStore {
    pub(crate) async fn recent_events(
        &self,
        last: u32,
        sdkappid: Option<i64>,
    ) -> Result<Vec<super::RecentEvent>, StoreError> {
        sqlx::query_as(RECENT_EVENTS)
            .bind(i64::from(last))
            .bind(sdkappid)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)
    }
}
