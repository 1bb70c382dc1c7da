//! SQLite backend: the zero-setup default. WAL journal with `synchronous=FULL`, so a
//! commit is on disk (the WAL is fsynced) before callhook acknowledges; one writer task
//! (the ingest step runs a single writer for SQLite) with `BEGIN IMMEDIATE`, so requests
//! never fight over the write lock; readers (readiness, reports) use the other pooled
//! connections concurrently.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::DatabaseSettings;
use super::outbox::{NewEntry, Routes};
use super::{BatchRow, RejectedRow, StoreError, inserted_flags, merge_rejected, sorted_indices};
use crate::protocol::Millis;

mod journal;

pub use journal::{
    JournalDb, OpenError as JournalOpenError, is_corrupt as journal_is_corrupt,
    is_full as journal_is_full,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// How long a write may take (a stalled disk) before its requests are answered 503.
    write_timeout: Duration,
    /// The destinations writes make outbox entries for (src/store/outbox.rs).
    routes: Arc<Routes>,
}

/// A batch is written as a few multi-row statements of these sizes (largest first), so a
/// batch crosses to SQLite's connection thread a few times instead of once per row, while
/// only five statement texts exist per table (each prepared once and cached).
const CHUNKS: [usize; 5] = [128, 32, 8, 2, 1];

/// Where a batch of events goes: `call_events`, or the outage journal's `journal_events`,
/// which has the same columns plus the fence of the write the rows come from and each
/// row's own day (PostgreSQL's partition key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Events,
    Journal,
}

const EVENT_COLUMNS: &str = "sdkappid, family, command, call_id, user_id, role, event, \
    call_result, media_type, call_type, room_id, total_num, event_time, start_call_ts, \
    accept_ts, end_ts, client_ip, opt_platform, remote_addr, payload, deliveries, received_at, \
    last_delivery_at, dedupe_key, members, notes, trtc_event_type, unique_id, terminal_type, \
    user_type, reason, task_id, trtc_status, files";
const EVENT_PARAMS: usize = 34;

/// `INSERT … VALUES (…) × n … ON CONFLICT … RETURNING` for `n` rows.
fn insert_events_sql(target: Target, n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let build = |table: &str, extra: &str, key: &str, params: usize| -> Vec<String> {
        CHUNKS
            .iter()
            .map(|&n| {
                let row = format!("({})", vec!["?"; params].join(", "));
                format!(
                    "INSERT INTO {table} ({EVENT_COLUMNS}{extra}) VALUES {} \
                     ON CONFLICT ({key}) DO UPDATE \
                     SET deliveries = deliveries + excluded.deliveries, \
                     last_delivery_at = max(last_delivery_at, excluded.last_delivery_at) \
                     RETURNING dedupe_key, deliveries",
                    vec![row; n].join(", ")
                )
            })
            .collect()
    };
    let all = SQL.get_or_init(|| {
        [
            build("call_events", "", "sdkappid, dedupe_key", EVENT_PARAMS),
            build(
                "journal_events",
                ", fence, own_day",
                "sdkappid, dedupe_key, fence, chunk",
                EVENT_PARAMS + 2,
            ),
        ]
    });
    let i = CHUNKS
        .iter()
        .position(|&c| c == n)
        .unwrap_or(CHUNKS.len() - 1);
    &all[target as usize][i]
}

/// Writes a batch's events into `target` in the open transaction, in key order (so that
/// concurrent writers cannot deadlock), as a few multi-row upserts. Returns each stored
/// row's key and `deliveries` count.
pub(crate) async fn insert_events(
    tx: &mut sqlx::SqliteConnection,
    target: Target,
    rows: &[BatchRow<'_>],
    fence: &[u8],
) -> Result<Vec<(Vec<u8>, i32)>, sqlx::Error> {
    let mut returned = Vec::with_capacity(rows.len());
    let order = sorted_indices(rows);
    let mut rest = &order[..];
    while !rest.is_empty() {
        let n = CHUNKS
            .iter()
            .copied()
            .find(|&c| c <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut query = sqlx::query_as::<_, (Vec<u8>, i32)>(insert_events_sql(target, n));
        for &i in chunk {
            let BatchRow { row: r, deliveries } = rows[i];
            let ts = |v: Option<Millis>| v.and_then(iso_millis);
            query = query
                .bind(r.sdkappid)
                .bind(r.family.as_str())
                .bind(&r.command)
                .bind(r.call_id.as_deref())
                .bind(r.user_id.as_deref())
                .bind(r.role.as_ref().map(|v| v.as_str()))
                .bind(r.event.as_deref())
                .bind(r.call_result.as_ref().map(|v| v.as_str()))
                .bind(r.media_type.as_ref().map(|v| v.as_str()))
                .bind(r.call_type.as_ref().map(|v| v.as_str()))
                .bind(r.room_id.as_deref())
                .bind(r.total_num)
                .bind(ts(r.event_time))
                .bind(ts(r.start_call_ts))
                .bind(ts(r.accept_ts))
                .bind(ts(r.end_ts))
                .bind(r.client_ip.as_deref())
                .bind(r.opt_platform.as_deref())
                .bind(r.remote_addr.as_deref())
                .bind(r.payload.as_deref())
                .bind(deliveries)
                .bind(ts(Some(r.received_at)))
                .bind(ts(Some(r.received_at)))
                .bind(&r.dedupe_key[..])
                .bind(r.members.as_deref())
                .bind(r.notes.as_deref())
                .bind(r.trtc.event_type)
                .bind(r.trtc.unique_id.as_deref())
                .bind(r.trtc.terminal_type)
                .bind(r.trtc.user_type)
                .bind(r.trtc.reason)
                .bind(r.trtc.task_id.as_deref())
                .bind(r.trtc.status)
                .bind(r.trtc.files.as_deref());
            if target == Target::Journal {
                query = query.bind(fence).bind(r.own_day);
            }
        }
        returned.extend(query.fetch_all(&mut *tx).await?);
    }
    Ok(returned)
}

/// The outbox entries of a batch's new events, found by their keys (just written in the same
/// transaction), a few multi-row statements of the sizes of [`CHUNKS`]. (Every parameter is
/// a plain `?`: sqlx numbers plain ones apart from numbered ones, so the two do not mix.)
async fn insert_outbox(
    tx: &mut sqlx::SqliteConnection,
    rows: &[BatchRow<'_>],
    entries: &[&NewEntry<'_>],
) -> Result<(), sqlx::Error> {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        CHUNKS
            .iter()
            .map(|&n| {
                format!(
                    "INSERT INTO forward_outbox \
                     (event_id, destination, message_id, created_at, next_attempt_at) \
                     SELECT e.id, v.column1, v.column2, v.column5, v.column5 \
                     FROM (VALUES {}) AS v \
                     JOIN call_events e ON e.sdkappid = v.column3 AND e.dedupe_key = v.column4 \
                     WHERE true ON CONFLICT DO NOTHING",
                    vec!["(?, ?, ?, ?, ?)"; n].join(", ")
                )
            })
            .collect()
    });
    let now = iso_millis(crate::now_millis());
    let mut rest = entries;
    while !rest.is_empty() {
        let i = CHUNKS
            .iter()
            .position(|&c| c <= rest.len())
            .unwrap_or(CHUNKS.len() - 1);
        let (chunk, tail) = rest.split_at(CHUNKS[i].min(rest.len()));
        rest = tail;
        let mut query = sqlx::query(&sql[i]);
        for e in chunk {
            let row = rows[e.row].row;
            query = query
                .bind(e.destination)
                .bind(&e.message_id)
                .bind(row.sdkappid)
                .bind(&row.dedupe_key[..])
                .bind(&now);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// A refused delivery; its retries count in `deliveries`.
const INSERT_REJECTED: &str = r#"
INSERT INTO rejected_deliveries
    (received_at, last_delivery_at, sdkappid, command, query, body, error_code, reason,
     remote_addr, dedupe_key, deliveries)
VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (sdkappid, dedupe_key) DO UPDATE
SET deliveries = deliveries + excluded.deliveries,
    last_delivery_at = max(last_delivery_at, excluded.last_delivery_at)
"#;

/// Milliseconds as SQLite's ISO-8601 text: `2024-01-10T03:01:13.000Z`.
pub fn iso_millis(ms: Millis) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The options every written SQLite file gets (the events database and the outage
/// journal): created if missing, WAL with `synchronous=FULL` (a commit is fsynced before it
/// returns), a busy timeout, statement journals in memory rather than temp files, and a
/// 16 MiB page cache instead of 2 MiB, so the indexes stay in memory.
fn durable(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-16384")
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let url = settings.url.expose();
        if url.contains(":memory:") || url.contains("mode=memory") {
            anyhow::bail!(
                "in-memory SQLite ({}) is not durable; use sqlite://PATH",
                settings.url.redacted()
            );
        }
        // The writer checkpoints the WAL every 10,000 pages (40 MiB) instead of SQLite's
        // 1,000: a page written again and again (an index's upper pages) is copied once per
        // checkpoint, so fewer checkpoints copy less in all (13% more callbacks a second,
        // docs/src/benchmarks/ingest.md "SQLite: fewer, larger WAL checkpoints"). After a checkpoint
        // the WAL file is cut back to at most 64 MiB.
        let options = durable(
            SqliteConnectOptions::from_str(url)
                .with_context(|| format!("invalid SQLite URL {}", settings.url.redacted()))?,
        )
        .pragma("wal_autocheckpoint", "10000")
        .pragma("journal_size_limit", "67108864")
        // A new file hands pages that retention frees back to the file system (an older
        // file keeps them for new rows; README: "Retention" says how to convert it).
        .auto_vacuum(SqliteAutoVacuum::Incremental);
        let path = options.get_filename().display().to_string();
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.pool_size.max(2))
            .acquire_timeout(settings.acquire_timeout.max(Duration::from_secs(5)))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        Ok(Self {
            pool,
            write_timeout: settings.write_timeout(),
            routes: Arc::default(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) fn with_routes(self, routes: Arc<Routes>) -> Self {
        Self { routes, ..self }
    }

    pub(super) fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying SQLite migrations")
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
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
        let entries = self.routes.entries(rows);
        let write = self.try_write(rows, rejected, &entries);
        let returned = tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the write did not finish within {:?}",
                    self.write_timeout
                ))
            })?
            .map_err(classify)?;
        if !entries.is_empty() {
            self.routes.signal();
        }
        inserted_flags(rows, &returned)
    }

    /// The events, the outbox entries of the new ones and the rejected deliveries, in one
    /// transaction.
    async fn try_write(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
        entries: &[NewEntry<'_>],
    ) -> Result<Vec<(Vec<u8>, i32)>, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let returned = insert_events(&mut tx, Target::Events, rows, &[]).await?;
        if !entries.is_empty() {
            let new = inserted_flags(rows, &returned)
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            let fresh: Vec<&NewEntry<'_>> = entries.iter().filter(|e| new[e.row]).collect();
            insert_outbox(&mut tx, rows, &fresh).await?;
        }
        for (r, n) in merge_rejected(rejected) {
            sqlx::query(INSERT_REJECTED)
                .bind(iso_millis(r.received_at))
                .bind(r.sdkappid)
                .bind(r.command.as_deref())
                .bind(&r.query)
                .bind(&r.body)
                .bind(r.error_code)
                .bind(&r.reason)
                .bind(r.remote_addr.as_deref())
                .bind(&r.dedupe_key[..])
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(returned)
    }
}

/// SQLite primary result codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
/// are the database's state; TOOBIG, CONSTRAINT, MISMATCH, RANGE are the row's fault.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e, |code| {
        let primary = code.parse::<i64>().ok()? & 0xff;
        match primary {
            5 | 6 | 8 | 10 | 13 | 14 | 15 => Some(false),
            18 | 19 | 20 | 25 => Some(true),
            _ => None,
        }
    })
}

impl SqliteStore {
    /// A small read-only pool for reading analytics (`callhook report`, `callhook events`):
    /// the file must exist and is never written; statement logging off.
    pub async fn connect_for_reading(url: &str) -> anyhow::Result<Self> {
        use sqlx::ConnectOptions as _;
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| {
                format!(
                    "invalid SQLite URL {}",
                    super::DatabaseUrl::new(url).redacted()
                )
            })?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            .disable_statement_logging();
        // A report never creates a database: a missing file is the user's mistake.
        if !options.get_filename().exists() {
            anyhow::bail!(
                "no database at {} (give --database-url)",
                options.get_filename().display()
            );
        }
        let path = options.get_filename().display().to_string();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        Ok(Self {
            pool,
            write_timeout: Duration::from_secs(10),
            routes: Arc::default(),
        })
    }
}
