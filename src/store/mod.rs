//! Storage: one small interface, a PostgreSQL and an SQLite implementation. Each backend's
//! SQL lives in its own module; nothing above this layer knows which one runs.
//!
//! The interface is what the ingest step needs: write a batch of events (deduplicated by
//! the database) and rejected deliveries in one transaction, ping, migrate; and what the
//! outage journal needs: replay a chunk of journaled rows exactly once.

mod analytics;
mod backend;
mod fence;
mod outbox;
mod postgres;
mod records;
mod retention;
mod rollup;
mod room_check;
mod settings;
mod sqlite;

use std::time::Duration;

use crate::protocol::{DedupeKey, EventRow, Millis};

pub use analytics::{Completeness, DailyStats, DayRange, RecentEvent, RoomStats};
pub use backend::BackendKind;
pub use fence::Fence;
pub use outbox::{
    Backlog, Claimed, DestinationStatus, ForwardedEvent, Next, RetryFilter, Route, Routes, Settled,
    message_id,
};
pub use postgres::PgStore;
pub use records::{Findings, LastRun, PageWrite, RunEnd, RunKey, RunStart, Trigger};
pub use retention::{MOVE_LIMIT, Pace, Removed, WEEKS_AHEAD, cutoff_day, monday_of};
pub use rollup::{
    CallFold, DayCounts, HISTOGRAM_BOUNDS, PeriodStats, TalkBucket, TalkTimes, talk_bucket,
};
pub use room_check::{RoomCount, RoomWindow};
pub use settings::{DatabaseSettings, DatabaseUrl};
pub use sqlite::{
    JournalDb, JournalOpenError, SqliteStore, iso_millis, journal_is_corrupt, journal_is_full,
};

/// One distinct event of a batch and how many deliveries of it the batch holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    pub row: &'a EventRow,
    pub deliveries: i32,
}

/// A delivery answered with a non-zero code, kept in `rejected_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub received_at: Millis,
    pub sdkappid: i64,
    pub command: Option<String>,
    /// The query string, secrets redacted.
    pub query: String,
    /// The body as text (lossy UTF-8, NULs escaped), capped at [`REJECTED_BODY_CAP`] bytes.
    pub body: String,
    pub error_code: i32,
    pub reason: String,
    pub remote_addr: Option<String>,
    /// Identifies the refused delivery across the sender's retries: a retry increments
    /// the stored row's `deliveries` instead of adding a row.
    pub dedupe_key: DedupeKey,
}

/// Merges rejected rows with the same key: each distinct one with its count, in order.
pub(crate) fn merge_rejected(rows: &[RejectedRow]) -> Vec<(&RejectedRow, i32)> {
    let mut out: Vec<(&RejectedRow, i32)> = Vec::with_capacity(rows.len());
    for r in rows {
        match out
            .iter_mut()
            .find(|(o, _)| o.sdkappid == r.sdkappid && o.dedupe_key == r.dedupe_key)
        {
            Some((_, n)) => *n += 1,
            None => out.push((r, 1)),
        }
    }
    out
}

/// How much of a rejected body is kept.
pub const REJECTED_BODY_CAP: usize = 8 * 1024;

impl RejectedRow {
    /// Makes a body storable as text in both backends: invalid UTF-8 replaced, NUL escaped,
    /// capped at a character boundary.
    pub fn body_text(body: &[u8]) -> String {
        let capped = &body[..body.len().min(REJECTED_BODY_CAP)];
        let mut text = String::from_utf8_lossy(capped).replace('\0', "\\u0000");
        if text.len() > REJECTED_BODY_CAP {
            let mut end = REJECTED_BODY_CAP;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

/// Why a write failed, which decides what the requests are told.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot take writes right now (connection lost,
    /// pool timeout, shutting down, read-only after a failover, disk full, lock timeout).
    /// Nothing was committed; the same batch may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its outcome is unknown: its deadline passed or the connection
    /// broke while the database had it. It may still commit. `fence` names it, so that a
    /// replay of the same rows can later settle whether it did (see [`Fence`]).
    #[error("database unavailable, write outcome unknown: {reason}")]
    Indeterminate { reason: String, fence: Fence },
    /// The database refused the data itself (a value it cannot store). Retrying the same
    /// rows will fail again; other rows of the batch may be fine.
    #[error("database refused the data: {0}")]
    Data(String),
    /// Anything else (schema missing, permissions): an operator has to look.
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    /// Classifies a driver error. `sqlstate` is PostgreSQL's SQLSTATE or SQLite's extended
    /// result code as text.
    fn from_sqlx(e: sqlx::Error, data_class: impl Fn(&str) -> Option<bool>) -> Self {
        let text = e.to_string();
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(text),
            sqlx::Error::Database(db) => match db.code().as_deref().and_then(&data_class) {
                Some(true) => Self::Data(text),
                Some(false) => Self::Unavailable(text),
                None => Self::Other(text),
            },
            _ => Self::Other(text),
        }
    }
}

/// The backend in use. Callers use only the methods below.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connects (lazily for PostgreSQL, so a database that is down at start-up is retried)
    /// and checks the URL.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        if settings.url.backend().is_embedded() {
            Ok(Self::Sqlite(SqliteStore::connect(settings).await?))
        } else {
            Ok(Self::Postgres(PgStore::connect(settings)?))
        }
    }

    /// Whether the database lives behind a network and can be unreachable (PostgreSQL):
    /// its migrations run in the background, and an outage journal can stand in for it.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations (PostgreSQL takes an advisory lock, so replicas starting
    /// together apply them once), giving up after `deadline`.
    pub async fn migrate(&self, deadline: Duration) -> anyhow::Result<()> {
        match self {
            Self::Postgres(s) => s.migrate(deadline).await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    /// Writes events and rejected deliveries in one transaction. Returns, for each row in
    /// order, whether it was newly inserted (`false`: it was already stored and its
    /// `deliveries` grew by the row's count). Keys in `rows` must be distinct.
    pub async fn write_batch(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Postgres(s) => s.write_batch(rows, rejected).await,
            Self::Sqlite(s) => s.write_batch(rows, rejected).await,
        }
    }

    /// Replays journaled rows into the database, exactly once: the rows and the journal's
    /// progress are committed in one transaction. Rows the progress says are replayed
    /// already are skipped when they are of the chunk that was in flight, and written
    /// anyway (and reported) when they are of an earlier one. Rows written by a write whose
    /// outcome was unknown (their [`JournalRow::fence`]) are skipped when that write turns
    /// out to have committed; the answer, once settled, holds for every later transaction.
    /// Only PostgreSQL has an outage journal. No deadline of its own: the caller bounds it
    /// (see [`Store::replay_deadline`]).
    pub async fn replay(
        &self,
        journal_id: &str,
        rows: &[JournalRow],
    ) -> Result<ReplayReport, StoreError> {
        match self {
            Self::Postgres(s) => s.replay(journal_id, rows).await,
            Self::Sqlite(_) => Err(no_journal()),
        }
    }

    /// Records, exactly once, that a journaled row was refused by the database for its
    /// data: it goes to `rejected_deliveries` with `reason`, and the journal's progress
    /// moves past it.
    pub async fn replay_refused(
        &self,
        journal_id: &str,
        row: &JournalRow,
        reason: &str,
    ) -> Result<ReplayReport, StoreError> {
        match self {
            Self::Postgres(s) => s.replay_refused(journal_id, row, reason).await,
            Self::Sqlite(_) => Err(no_journal()),
        }
    }

    /// Records, exactly once, a journaled row this version cannot read (see
    /// [`Undecodable`]): it goes to `rejected_deliveries` as it is, and the journal's
    /// progress moves past it.
    pub async fn replay_set_aside(
        &self,
        journal_id: &str,
        row: &Undecodable,
    ) -> Result<ReplayReport, StoreError> {
        match self {
            Self::Postgres(s) => s.replay_set_aside(journal_id, row).await,
            Self::Sqlite(_) => Err(no_journal()),
        }
    }

    /// How long one replay step may take before it is abandoned (and retried smaller).
    pub fn replay_deadline(&self) -> Duration {
        match self {
            Self::Postgres(s) => s.replay_deadline(),
            Self::Sqlite(_) => Duration::from_secs(6),
        }
    }

    /// Whether the database answers a trivial query within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let result = match self {
            Self::Postgres(s) => tokio::time::timeout(timeout, s.ping()).await,
            Self::Sqlite(s) => tokio::time::timeout(timeout, s.ping()).await,
        };
        result.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {timeout:?}"
            )))
        })
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Self::Postgres(s) => s.close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}

fn no_journal() -> StoreError {
    StoreError::Other("an outage journal replays into PostgreSQL only".into())
}

/// A row of the outage journal on its way back into the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// The replay chunk the row belongs to; with `id`, where replay progress is recorded.
    pub chunk: i64,
    pub id: i64,
    pub row: EventRow,
    /// How many deliveries of the event the journal merged into this row.
    pub deliveries: i32,
    /// Set when the row was journaled after a write whose outcome was unknown.
    pub fence: Option<Fence>,
}

/// A journal row this version cannot read back (a family a newer version wrote, before a
/// downgrade): kept whole for `rejected_deliveries` instead of blocking the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub chunk: i64,
    pub id: i64,
    /// The row as `rejected_deliveries` keeps it: its payload (or, when it has none, its
    /// columns as JSON) and why it could not be read.
    pub rejected: RejectedRow,
}

/// What the replay takes from the journal: a row, or one it cannot read. (Nearly every
/// entry is a row, moved once into the replay's list of rows: not worth a box each.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum JournalEntry {
    Row(JournalRow),
    Undecodable(Undecodable),
}

impl JournalEntry {
    /// The entry's replay position.
    pub fn position(&self) -> (i64, i64) {
        match self {
            Self::Row(r) => (r.chunk, r.id),
            Self::Undecodable(u) => (u.chunk, u.id),
        }
    }
}

/// What one replay step did, by the journal's progress as PostgreSQL records it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Rows after the recorded progress: written now (or set aside).
    pub replayed: usize,
    /// Rows of the chunk in flight that the database already has (it committed them, and
    /// the journal stopped before forgetting them): skipped, as they must be.
    pub already_replayed: usize,
    /// Rows of a chunk before the recorded one: the journal and the database disagree (a
    /// journal restored from a backup or recovered from a corrupt file). Written anyway,
    /// never dropped; a retry of one may then count in `deliveries` twice.
    pub behind: usize,
    /// The recorded progress after the step: (chunk, row id).
    pub position: (i64, i64),
}

/// Merges rows that are the same event (equal `sdkappid` and dedupe key) into distinct
/// batch rows with counts. Returns the distinct rows and, for each input row in order, the
/// index of its distinct row and whether it was the first to carry it.
pub fn merge<'a>(
    rows: impl IntoIterator<Item = &'a EventRow>,
) -> (Vec<BatchRow<'a>>, Vec<(usize, bool)>) {
    merge_counted(rows.into_iter().map(|r| (r, 1)))
}

/// [`merge`] for rows that each stand for a number of deliveries.
pub fn merge_counted<'a>(
    rows: impl IntoIterator<Item = (&'a EventRow, i32)>,
) -> (Vec<BatchRow<'a>>, Vec<(usize, bool)>) {
    let mut index: std::collections::HashMap<(i64, DedupeKey), usize> =
        std::collections::HashMap::new();
    let mut distinct: Vec<BatchRow<'a>> = Vec::new();
    let mut carriers = Vec::new();
    for (row, n) in rows {
        match index.entry((row.sdkappid, row.dedupe_key)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                distinct[*e.get()].deliveries += n;
                carriers.push((*e.get(), false));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(distinct.len());
                carriers.push((distinct.len(), true));
                distinct.push(BatchRow { row, deliveries: n });
            }
        }
    }
    (distinct, carriers)
}

/// Sorts a batch by key so that concurrent writers (and replicas) lock index entries in
/// the same order and cannot deadlock each other.
pub(crate) fn sorted_indices(rows: &[BatchRow<'_>]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_unstable_by_key(|&i| (rows[i].row.sdkappid, rows[i].row.dedupe_key));
    idx
}

/// Maps returned `(key, deliveries)` pairs onto the batch: a row is new when the stored
/// count equals the batch's own count.
pub(crate) fn inserted_flags(
    rows: &[BatchRow<'_>],
    returned: &[(Vec<u8>, i32)],
) -> Result<Vec<bool>, StoreError> {
    let mut by_key: std::collections::HashMap<&[u8], i32> =
        std::collections::HashMap::with_capacity(returned.len());
    for (k, d) in returned {
        by_key.insert(k.as_slice(), *d);
    }
    rows.iter()
        .map(|r| {
            let key: &DedupeKey = &r.row.dedupe_key;
            by_key
                .get(key.as_slice())
                .map(|&stored| stored == r.deliveries)
                .ok_or_else(|| {
                    StoreError::Other("a written row was not returned by the database".into())
                })
        })
        .collect()
}

impl Store {
    /// Connects for reading only (`callhook report`, `callhook events`): a small pool, no
    /// statement logging; SQLite opens the file read-only, PostgreSQL sessions are
    /// read-only transactions.
    pub async fn connect_for_reading(url: &str) -> anyhow::Result<Self> {
        if BackendKind::of(url).is_embedded() {
            Ok(Self::Sqlite(SqliteStore::connect_for_reading(url).await?))
        } else {
            Ok(Self::Postgres(PgStore::connect_for_reading(url)?))
        }
    }
}
