//! The outage journal's database (`journal.db`): an SQLite file written with the same
//! durable settings and the same multi-row upsert as the SQLite events store, into a
//! table with the columns of `call_events` (migrations/journal/0001_journal.sql).
//!
//! Replay takes the journal in chunks, oldest rows first. Taking a chunk marks its rows
//! with the chunk's number in one transaction; from then on they take no more deliveries
//! (a repeat starts a new row), so what the replay commits into PostgreSQL is exactly what
//! it later deletes here. The chunk being replayed is recorded in `journal_meta`, so after
//! a crash the same chunk is taken again, and PostgreSQL's record of the replay's progress
//! decides which of its rows are already there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{EVENT_COLUMNS, Target, durable, insert_events};
use crate::protocol::{CallResult, CallType, EventRow, Family, MediaType, Millis, Role};
use crate::store::fence::{Fence, unique_id};
use crate::store::{BatchRow, JournalRow, inserted_flags};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/journal");

/// SQLite's page size for new journals; the size cap is counted in these.
const PAGE_SIZE: u64 = 4096;

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite reports the file corrupt (or not a database at all).
    #[error("the journal is corrupt: {0}")]
    Corrupt(String),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

/// An open journal database.
#[derive(Debug)]
pub struct JournalDb {
    pool: SqlitePool,
    path: PathBuf,
    id: String,
}

/// Whether SQLite says the database file is damaged: SQLITE_CORRUPT (11) or SQLITE_NOTADB
/// (26), in any extended form.
pub fn is_corrupt(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 11 | 26)),
        _ => false,
    }
}

/// Whether a write failed because the journal reached its size cap (SQLITE_FULL).
pub fn is_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| c & 0xff == 13),
        _ => false,
    }
}

fn open_error(e: sqlx::Error, what: &str) -> OpenError {
    if is_corrupt(&e) {
        OpenError::Corrupt(format!("{what}: {e}"))
    } else {
        OpenError::Other(anyhow::Error::new(e).context(what.to_owned()))
    }
}

impl JournalDb {
    /// Opens (creating) the journal at `path`, holding at most about `max_bytes`: a write
    /// past that fails with SQLITE_FULL. Checks the file with `PRAGMA quick_check`.
    pub async fn open(path: &Path, max_bytes: u64) -> Result<Self, OpenError> {
        let options = durable(SqliteConnectOptions::new().filename(path))
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .page_size(PAGE_SIZE as u32)
            .pragma(
                "max_page_count",
                (max_bytes / PAGE_SIZE).max(64).to_string(),
            )
            // After a checkpoint, the WAL file is cut back to at most 64 MiB.
            .pragma("journal_size_limit", "67108864")
            // Appends touch the last pages, the replay reads the first ones once: SQLite's
            // default 2 MiB page cache, not the events store's 16 MiB, keeps the process
            // small during a long outage's replay.
            .pragma("cache_size", "-2048");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| open_error(e, "opening the journal"))?;
        let db = Self {
            pool,
            path: path.to_owned(),
            id: String::new(),
        };
        match db.check_and_migrate().await {
            Ok(id) => Ok(Self { id, ..db }),
            Err(e) => {
                db.close().await;
                Err(e)
            }
        }
    }

    async fn check_and_migrate(&self) -> Result<String, OpenError> {
        let check: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| open_error(e, "checking the journal"))?;
        if check.first().map(String::as_str) != Some("ok") {
            return Err(OpenError::Corrupt(check.join("; ")));
        }
        if let Err(e) = MIGRATOR.run(&self.pool).await {
            return Err(match e {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
                    open_error(e, "creating the journal's tables")
                }
                other => OpenError::Other(
                    anyhow::Error::new(other).context("creating the journal's tables"),
                ),
            });
        }
        let id: Option<String> = self
            .meta("id")
            .await
            .map_err(|e| open_error(e, "reading the journal's id"))?;
        match id {
            Some(id) => Ok(id),
            None => {
                let id = hex::encode(unique_id());
                sqlx::query("INSERT INTO journal_meta (key, value) VALUES ('id', ?1)")
                    .bind(&id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| open_error(e, "writing the journal's id"))?;
                Ok(id)
            }
        }
    }

    /// The journal's identity: where PostgreSQL records how far it was replayed.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT value FROM journal_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Writes rows (distinct keys) durably: committed and fsynced when this returns.
    /// Repeats of rows already waiting merge into them. Returns how many rows are new.
    pub async fn append(
        &self,
        rows: &[BatchRow<'_>],
        fence: Option<Fence>,
    ) -> Result<u64, sqlx::Error> {
        let fence = fence.map(|f| f.to_bytes().to_vec()).unwrap_or_default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let returned = insert_events(&mut tx, Target::Journal, rows, &fence).await?;
        tx.commit().await?;
        let new = inserted_flags(rows, &returned)
            .map(|flags| flags.into_iter().filter(|&f| f).count())
            .unwrap_or(rows.len());
        Ok(new as u64)
    }

    /// The rows of the chunk being replayed, oldest first: the one taken before (a replay
    /// that did not finish), or else the next `limit` waiting rows, taken now. Empty when
    /// the journal is empty.
    pub async fn take_chunk(&self, limit: usize) -> Result<Vec<JournalRow>, sqlx::Error> {
        self.next_chunk(None, limit).await.map(|(_, rows)| rows)
    }

    /// Deletes the chunk being replayed, once PostgreSQL has it. Returns how many rows
    /// went.
    pub async fn finish_chunk(&self, chunk: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = delete_chunk(&mut tx, chunk).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// [`JournalDb::finish_chunk`] of `finished` (when given) and [`JournalDb::take_chunk`]
    /// in one transaction, so the replay pays one commit per chunk. Returns how many rows
    /// the finished chunk had, and the next chunk's rows.
    pub async fn next_chunk(
        &self,
        finished: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<JournalRow>), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = match finished {
            Some(chunk) => delete_chunk(&mut tx, chunk).await?,
            None => 0,
        };
        let rows = take_chunk(&mut tx, limit).await?;
        tx.commit().await?;
        Ok((deleted, rows))
    }

    /// How many rows wait in the journal.
    pub async fn count(&self) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// When the oldest waiting row was received.
    pub async fn oldest(&self) -> Result<Option<Millis>, sqlx::Error> {
        let t: Option<String> =
            sqlx::query_scalar("SELECT received_at FROM journal_events ORDER BY id LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(t.as_deref().and_then(parse_iso))
    }

    /// Bytes on disk: the database file and its WAL.
    pub fn size_bytes(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        len(&self.path) + len(Path::new(&wal))
    }

    /// Gives the space of replayed rows back to the file system (call when empty).
    pub async fn shrink(&self) -> Result<(), sqlx::Error> {
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&self.pool)
            .await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// In the open transaction: the chunk being replayed, or the next one, taken now (see
/// [`JournalDb::take_chunk`]).
async fn take_chunk(
    tx: &mut sqlx::SqliteConnection,
    limit: usize,
) -> Result<Vec<JournalRow>, sqlx::Error> {
    let taken: Option<(i64, i64)> = sqlx::query_as(
        "SELECT c.value, t.value FROM journal_meta c, journal_meta t \
         WHERE c.key = 'chunk' AND t.key = 'chunk_through'",
    )
    .fetch_optional(&mut *tx)
    .await?
    .and_then(|(c, t): (String, String)| Some((c.parse().ok()?, t.parse().ok()?)));
    let (chunk, through) = match taken {
        Some(t) => t,
        None => {
            let through: Option<i64> = sqlx::query_scalar(
                "SELECT max(id) FROM (SELECT id FROM journal_events WHERE chunk = 0 \
                 ORDER BY id LIMIT ?1)",
            )
            .bind(limit.max(1) as i64)
            .fetch_one(&mut *tx)
            .await?;
            let Some(through) = through else {
                return Ok(Vec::new());
            };
            let last: Option<String> =
                sqlx::query_scalar("SELECT value FROM journal_meta WHERE key = 'last_chunk'")
                    .fetch_optional(&mut *tx)
                    .await?;
            let chunk = last.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + 1;
            sqlx::query("UPDATE journal_events SET chunk = ?1 WHERE chunk = 0 AND id <= ?2")
                .bind(chunk)
                .bind(through)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT OR REPLACE INTO journal_meta (key, value) VALUES \
                 ('last_chunk', ?1), ('chunk', ?1), ('chunk_through', ?2)",
            )
            .bind(chunk.to_string())
            .bind(through.to_string())
            .execute(&mut *tx)
            .await?;
            (chunk, through)
        }
    };
    let sql = format!(
        "SELECT id, chunk, fence, {EVENT_COLUMNS} FROM journal_events \
         WHERE id <= ?1 AND chunk = ?2 ORDER BY id"
    );
    let rows = sqlx::query(&sql)
        .bind(through)
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(decode).collect()
}

/// In the open transaction: deletes a replayed chunk and forgets it was being replayed.
async fn delete_chunk(tx: &mut sqlx::SqliteConnection, chunk: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM journal_events WHERE chunk = ?1 AND id <= \
         (SELECT CAST(value AS INTEGER) FROM journal_meta WHERE key = 'chunk_through')",
    )
    .bind(chunk)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM journal_meta WHERE key IN ('chunk', 'chunk_through')")
        .execute(&mut *tx)
        .await?;
    Ok(deleted)
}

/// Reads back `2024-01-10T03:01:13.000Z` as milliseconds.
fn parse_iso(text: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn decode(r: &sqlx::sqlite::SqliteRow) -> Result<JournalRow, sqlx::Error> {
    let text = |c: &str| r.try_get::<Option<String>, _>(c);
    let time = |c: &str| -> Result<Option<Millis>, sqlx::Error> {
        Ok(text(c)?.as_deref().and_then(parse_iso))
    };
    let bad = |what: String| sqlx::Error::Decode(what.into());
    let family: String = r.try_get("family")?;
    let key: Vec<u8> = r.try_get("dedupe_key")?;
    let fence: Vec<u8> = r.try_get("fence")?;
    let received: String = r.try_get("received_at")?;
    let mut row = EventRow {
        sdkappid: r.try_get("sdkappid")?,
        family: Family::parse(&family).ok_or_else(|| bad(format!("family {family:?}")))?,
        command: r.try_get("command")?,
        call_id: text("call_id")?,
        user_id: text("user_id")?,
        role: text("role")?.as_deref().and_then(Role::from_wire),
        event: text("event")?,
        call_result: text("call_result")?
            .as_deref()
            .and_then(CallResult::from_wire),
        media_type: text("media_type")?
            .as_deref()
            .and_then(MediaType::from_wire),
        call_type: text("call_type")?.as_deref().and_then(CallType::from_wire),
        room_id: text("room_id")?,
        total_num: r.try_get("total_num")?,
        event_time: time("event_time")?,
        start_call_ts: time("start_call_ts")?,
        accept_ts: time("accept_ts")?,
        end_ts: time("end_ts")?,
        client_ip: text("client_ip")?,
        opt_platform: text("opt_platform")?,
        remote_addr: text("remote_addr")?,
        members: text("members")?,
        payload: text("payload")?.map(Into::into),
        notes: text("notes")?,
        trtc: crate::protocol::TrtcColumns {
            event_type: r.try_get("trtc_event_type")?,
            unique_id: text("unique_id")?,
            terminal_type: r.try_get("terminal_type")?,
            user_type: r.try_get("user_type")?,
            reason: r.try_get("reason")?,
            task_id: text("task_id")?,
            status: r.try_get("trtc_status")?,
            files: text("files")?,
        },
        received_at: parse_iso(&received)
            .ok_or_else(|| bad(format!("received_at {received:?}")))?,
        dedupe_key: key
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("a dedupe key of {} bytes", key.len())))?,
    };
    // A row journaled by an earlier version may hold an indexed text column too long for
    // PostgreSQL's index (this version's parsers bound them; a bounded row is left as is).
    crate::protocol::bounded::bound_indexed_columns(&mut row);
    Ok(JournalRow {
        chunk: r.try_get("chunk")?,
        id: r.try_get("id")?,
        deliveries: r.try_get("deliveries")?,
        fence: if fence.is_empty() {
            None
        } else {
            Some(Fence::from_bytes(&fence).ok_or_else(|| bad("a fence".into()))?)
        },
        row,
    })
}
