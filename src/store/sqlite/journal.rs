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
//!
//! **Room to replay.** Appends stop at the size cap (`spool.max_bytes`, SQLite's
//! `max_page_count` on the pool's connections). Taking a chunk rewrites its rows (a longer
//! chunk number) and may need pages too, so the replay's own transactions run with a
//! reserve of [`RESERVE_PAGES`] above the cap (and above the file's size, should the cap
//! have been lowered since), and take a smaller chunk if even that is not enough: a full
//! journal always drains.
//!
//! **Rows it cannot read** (a family a newer version wrote, before a downgrade) come back
//! as [`Undecodable`] entries, kept whole for `rejected_deliveries`, instead of failing
//! the chunk that holds them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{EVENT_COLUMNS, Target, durable, insert_events};
use crate::faults::{Faults, Point};
use crate::protocol::{CallResult, CallType, ErrorCode, EventRow, Family, MediaType, Millis, Role};
use crate::store::fence::{Fence, unique_id};
use crate::store::{BatchRow, JournalEntry, JournalRow, RejectedRow, Undecodable, inserted_flags};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/journal");

/// SQLite's page size for new journals; the size cap is counted in these.
const PAGE_SIZE: u64 = 4096;
/// Pages the replay may use above the size cap (4 MiB): room to take a chunk of a full
/// journal.
pub const RESERVE_PAGES: u64 = 1024;

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
    /// The size cap in pages, for appends.
    cap_pages: u64,
    /// The replay's cap: the size cap (or the file's size, if larger) plus the reserve.
    replay_pages: u64,
    /// The randomized fault test's faults (none otherwise).
    faults: Faults,
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
        let cap_pages = (max_bytes / PAGE_SIZE).max(64);
        let options = durable(SqliteConnectOptions::new().filename(path))
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .page_size(PAGE_SIZE as u32)
            .pragma("max_page_count", cap_pages.to_string())
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
            cap_pages,
            replay_pages: cap_pages + RESERVE_PAGES,
            faults: Faults::none(),
        };
        let opened = async {
            let id = db.check_and_migrate().await?;
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&db.pool)
                .await
                .map_err(|e| open_error(e, "reading the journal's size"))?;
            Ok::<_, OpenError>((id, pages.max(0) as u64))
        }
        .await;
        match opened {
            Ok((id, pages)) => Ok(Self {
                id,
                replay_pages: cap_pages.max(pages) + RESERVE_PAGES,
                ..db
            }),
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

    /// The same journal, its statements under `faults` (the randomized fault test's).
    pub fn with_faults(self, faults: Faults) -> Self {
        Self { faults, ..self }
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

    /// A value of `journal_meta`.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT value FROM journal_meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// The keys of `journal_meta` that start with `prefix`.
    pub async fn meta_keys(&self, prefix: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT key FROM journal_meta WHERE substr(key, 1, length(?1)) = ?1")
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
    }

    /// Removes a value of `journal_meta`.
    pub async fn forget_meta(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM journal_meta WHERE key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Writes rows (distinct keys) durably: committed and fsynced when this returns.
    /// Repeats of rows already waiting merge into them. Returns how many rows are new.
    pub async fn append(
        &self,
        rows: &[BatchRow<'_>],
        fence: Option<Fence>,
    ) -> Result<u64, sqlx::Error> {
        self.append_noting(rows, fence, None).await
    }

    /// [`JournalDb::append`], also setting a value of `journal_meta` in the same
    /// transaction (what the import of old segment files has read so far).
    pub async fn append_noting(
        &self,
        rows: &[BatchRow<'_>],
        fence: Option<Fence>,
        note: Option<(&str, &str)>,
    ) -> Result<u64, sqlx::Error> {
        let fence = fence.map(|f| f.to_bytes().to_vec()).unwrap_or_default();
        let append = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let returned = insert_events(&mut tx, Target::Journal, rows, &fence).await?;
            if let Some((key, value)) = note {
                sqlx::query("INSERT OR REPLACE INTO journal_meta (key, value) VALUES (?1, ?2)")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(returned)
        };
        let returned = self.faults.run(Point::JournalAppend, append).await?;
        let new = inserted_flags(rows, &returned)
            .map(|flags| flags.into_iter().filter(|&f| f).count())
            .unwrap_or(rows.len());
        Ok(new as u64)
    }

    /// The entries of the chunk being replayed, oldest first: the one taken before (a
    /// replay that did not finish), or else the next `limit` waiting rows, taken now.
    /// Empty when the journal is empty.
    pub async fn take_chunk(&self, limit: usize) -> Result<Vec<JournalEntry>, sqlx::Error> {
        self.next_chunk(None, limit).await.map(|(_, rows)| rows)
    }

    /// Deletes the chunk being replayed, once PostgreSQL has it. Returns how many rows
    /// went.
    pub async fn finish_chunk(&self, chunk: i64) -> Result<u64, sqlx::Error> {
        self.with_reserve(|conn| {
            Box::pin(async move {
                let mut tx = begin_immediate(conn).await?;
                let deleted = delete_chunk(&mut tx, chunk).await?;
                tx.commit().await?;
                Ok(deleted)
            })
        })
        .await
    }

    /// [`JournalDb::finish_chunk`] of `finished` (when given) and [`JournalDb::take_chunk`]
    /// in one transaction, so the replay pays one commit per chunk. Returns how many rows
    /// the finished chunk had, and the next chunk's entries. Runs with the replay's
    /// reserve of pages; should taking the chunk need more still, a smaller one is taken.
    pub async fn next_chunk(
        &self,
        finished: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<JournalEntry>), sqlx::Error> {
        let mut limit = limit.max(1);
        loop {
            let take = self.with_reserve(|conn| {
                Box::pin(async move {
                    let mut tx = begin_immediate(conn).await?;
                    let deleted = match finished {
                        Some(chunk) => delete_chunk(&mut tx, chunk).await?,
                        None => 0,
                    };
                    let rows = take_chunk(&mut tx, limit).await?;
                    tx.commit().await?;
                    Ok((deleted, rows))
                })
            });
            let result = self.faults.run(Point::JournalTake, take).await;
            match result {
                Err(e) if is_full(&e) && limit > 1 => {
                    limit /= 2;
                    tracing::warn!(
                        limit,
                        "the full outage journal has no room to take a chunk; taking a smaller one"
                    );
                }
                other => return other,
            }
        }
    }

    /// Runs `f` on one connection whose page cap is the replay's (the size cap plus the
    /// reserve), then puts the append cap back; a connection whose cap could not be put
    /// back is closed rather than returned to the pool.
    async fn with_reserve<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>,
        >,
    ) -> Result<T, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        set_page_cap(&mut conn, self.replay_pages).await?;
        let result = f(&mut conn).await;
        if let Err(e) = set_page_cap(&mut conn, self.cap_pages).await {
            tracing::debug!(error = %e, "closing a journal connection whose page cap could not be reset");
            let _ = sqlx::Connection::close(conn.detach()).await;
        }
        result
    }

    /// Whether any row waits in the journal (whatever the counts in memory say).
    pub async fn has_rows(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM journal_events)")
            .fetch_one(&self.pool)
            .await
    }

    /// Numbers the chunks taken from now on after `chunk`: PostgreSQL's record of this
    /// journal's progress is past the journal's own numbering (a journal restored from a
    /// backup), and new chunks must not look replayed already.
    pub async fn number_chunks_after(&self, chunk: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO journal_meta (key, value) VALUES ('last_chunk', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = ?1 \
             WHERE CAST(journal_meta.value AS INTEGER) < CAST(?1 AS INTEGER)",
        )
        .bind(chunk.to_string())
        .execute(&self.pool)
        .await
        .map(|_| ())
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
        self.with_reserve(|conn| {
            Box::pin(async move {
                sqlx::query("PRAGMA incremental_vacuum")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn set_page_cap(conn: &mut sqlx::SqliteConnection, pages: u64) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
        .execute(conn)
        .await
        .map(|_| ())
}

async fn begin_immediate(
    conn: &mut sqlx::SqliteConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
    sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await
}

/// In the open transaction: the chunk being replayed, or the next one, taken now (see
/// [`JournalDb::take_chunk`]).
async fn take_chunk(
    tx: &mut sqlx::SqliteConnection,
    limit: usize,
) -> Result<Vec<JournalEntry>, sqlx::Error> {
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
        "SELECT id, chunk, fence, own_day, {EVENT_COLUMNS} FROM journal_events \
         WHERE id <= ?1 AND chunk = ?2 ORDER BY id"
    );
    let rows = sqlx::query(&sql)
        .bind(through)
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(entry).collect()
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

/// A journal row as the replay takes it: decoded, or, when this version cannot read it,
/// kept whole as an [`Undecodable`] entry. Only a row without its place in the journal is
/// an error.
fn entry(r: &sqlx::sqlite::SqliteRow) -> Result<JournalEntry, sqlx::Error> {
    let chunk: i64 = r.try_get("chunk")?;
    let id: i64 = r.try_get("id")?;
    Ok(match decode(r) {
        Ok(row) => JournalEntry::Row(row),
        Err(why) => JournalEntry::Undecodable(Undecodable {
            chunk,
            id,
            rejected: set_aside(r, &why),
        }),
    })
}

/// An undecodable journal row as `rejected_deliveries` keeps it: its payload, or (a
/// delivery's later rows have none) its columns as JSON.
fn set_aside(r: &sqlx::sqlite::SqliteRow, why: &sqlx::Error) -> RejectedRow {
    let text = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
    let body = text("payload").unwrap_or_else(|| {
        let columns: serde_json::Map<String, serde_json::Value> = EVENT_COLUMNS
            .split(',')
            .map(str::trim)
            .map(|c| {
                let value = match r.try_get::<Option<i64>, _>(c) {
                    Ok(Some(n)) => n.into(),
                    _ => text(c).map_or(serde_json::Value::Null, Into::into),
                };
                (c.to_owned(), value)
            })
            .collect();
        serde_json::Value::Object(columns).to_string()
    });
    let key: Vec<u8> = r.try_get("dedupe_key").unwrap_or_default();
    RejectedRow {
        received_at: text("received_at")
            .as_deref()
            .and_then(parse_iso)
            .unwrap_or_else(crate::now_millis),
        sdkappid: r.try_get("sdkappid").unwrap_or_default(),
        command: text("command"),
        query: String::new(),
        body: RejectedRow::body_text(body.as_bytes()),
        error_code: ErrorCode::Unstorable.code() as i32,
        reason: format!(
            "replaying the outage journal: this version of callhook cannot read the journaled row ({why}); kept here as it was"
        ),
        remote_addr: text("remote_addr"),
        dedupe_key: crate::protocol::dedupe_key(&[b"journal-undecodable", &key]),
    }
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
        own_day: r.try_get("own_day")?,
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
