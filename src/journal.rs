//! The outage journal: while PostgreSQL cannot take writes, acknowledged events go to a
//! local SQLite database (`<spool dir>/journal.db`) instead, and are replayed into
//! PostgreSQL, exactly once, when it answers again.
//!
//! - **Durable before acknowledged.** An append is committed in SQLite's WAL with
//!   `synchronous=FULL` (fsynced) before any of its deliveries is answered; SQLite gives
//!   torn-write and crash safety. Repeats merge as they do in `call_events`.
//! - **One owner.** The process holds an exclusive lock on the spool directory
//!   (src/journal/lock.rs); a second process on it is refused at start.
//! - **Bounded.** Appends stop at `spool.max_bytes` (the deliveries are then answered 503);
//!   the replay keeps a reserve above it, so a full journal always drains. Replay reads
//!   bounded chunks, oldest first, so memory does not grow with the outage.
//! - **Exactly once.** Each replay step is written into PostgreSQL in one transaction
//!   together with the journal's progress (src/journal/replay.rs,
//!   src/store/postgres/replay.rs); a crash at any point replays nothing twice. Rows of a
//!   write whose outcome was unknown carry its fence, settled once, and are skipped if that
//!   write committed after all (src/store/fence.rs).
//! - **Nothing blocks it for good.** Rows PostgreSQL refuses for their data, and rows this
//!   version cannot read, go to `rejected_deliveries`; a step too slow for its deadline is
//!   retried with fewer rows, and the steps grow back with care (src/journal/pace.rs).
//! - **Never deleted while it holds rows.** A journal SQLite reports corrupt is moved
//!   aside (`journal-corrupt-<time>.db`, never overwriting an earlier one), logged and
//!   counted, and a fresh one is started; only the file that failed is ever moved.
//! - Segment files of the spool that came before it (`spool-*.seg`) are imported at
//!   start-up, resuming where an interrupted import stopped, and, when they do not fit,
//!   as the replay frees room (src/journal/legacy.rs).

mod legacy;
mod lock;
mod pace;
mod replay;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::faults::Faults;
use crate::metrics as m;
use crate::protocol::{EventRow, Millis};
use crate::store::{
    BatchRow, Fence, JournalDb, JournalOpenError, StoreError, journal_is_corrupt, journal_is_full,
    merge,
};
use lock::SpoolLock;

/// The journal's file name in the spool directory.
pub const FILE_NAME: &str = "journal.db";
pub use lock::FILE_NAME as LOCK_FILE_NAME;

/// Why an append failed; the deliveries are then answered 503.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the outage journal is full ({max} bytes)")]
    Full { max: u64 },
    #[error("cannot write the outage journal: {0}")]
    Failed(String),
}

/// Counts for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Rows waiting to be replayed (repeats merged).
    pub events: u64,
    /// Bytes on disk (database and WAL).
    pub bytes: u64,
    pub oldest_received_at: Option<Millis>,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    max_bytes: u64,
    /// This process's hold on the spool directory, for as long as the journal lives.
    _lock: SpoolLock,
    /// Every SQLite operation goes through here: one writer at a time, and a corrupt file
    /// can be swapped for a fresh one. The row count (`events`) changes only while this is
    /// held, so it stays exact.
    db: tokio::sync::Mutex<JournalDb>,
    /// Held by the replay, so only one runs at a time.
    replay_lock: tokio::sync::Mutex<()>,
    events: AtomicU64,
    bytes: AtomicU64,
    /// The oldest waiting row's `received_at`; 0 when empty.
    oldest: AtomicI64,
    /// Set when an append hit the size cap; cleared when a replay frees space.
    full: AtomicBool,
    /// Whether rows were waiting at the last change (for the once-per-outage log lines).
    active: AtomicBool,
    /// Rows per replay step (src/journal/pace.rs). Replays take turns (`replay_lock`).
    pace: std::sync::Mutex<pace::Pace>,
    /// Whether old segment files still wait to be imported (the journal was full).
    legacy_pending: AtomicBool,
    /// The randomized fault test's faults (none otherwise), for a fresh file too.
    faults: Faults,
}

impl Journal {
    /// Takes the spool directory, opens (creating) the journal in it, moving a corrupt one
    /// aside, and imports any segment files an older callhook left there (as many as fit;
    /// the rest as the replay frees room).
    pub async fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        Self::open_with(dir, max_bytes, Faults::none()).await
    }

    /// [`Journal::open`], its statements under `faults` (the randomized fault test's).
    pub async fn open_with(dir: &Path, max_bytes: u64, faults: Faults) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating spool directory {}: {e}", dir.display()))?;
        let lock = SpoolLock::take(dir)?;
        let path = dir.join(FILE_NAME);
        let db = match JournalDb::open(&path, max_bytes).await {
            Ok(db) => db.with_faults(faults.clone()),
            Err(JournalOpenError::Corrupt(why)) => {
                quarantine(&path, &why)?;
                let fresh = JournalDb::open(&path, max_bytes).await.map_err(|e| {
                    anyhow::anyhow!("opening a fresh journal {}: {e}", path.display())
                })?;
                fresh.with_faults(faults.clone())
            }
            Err(JournalOpenError::Other(e)) => {
                return Err(e.context(format!("opening the outage journal {}", path.display())));
            }
        };
        let journal = Self {
            dir: dir.to_owned(),
            max_bytes,
            _lock: lock,
            db: tokio::sync::Mutex::new(db),
            replay_lock: tokio::sync::Mutex::new(()),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            oldest: AtomicI64::new(0),
            full: AtomicBool::new(false),
            active: AtomicBool::new(false),
            pace: std::sync::Mutex::default(),
            legacy_pending: AtomicBool::new(true),
            faults,
        };
        // Exported at 0 from the start, so that rate() counts the first appends and replays.
        metrics::counter!(m::JOURNAL_APPENDED).increment(0);
        metrics::counter!(m::JOURNAL_REPLAYED).increment(0);
        journal.recount().await?;
        let imported = journal.import_legacy().await?;
        let stats = journal.stats();
        if stats.events > 0 {
            tracing::warn!(
                events = stats.events,
                bytes = stats.bytes,
                imported,
                "the outage journal holds events from an earlier run; replaying them once the database answers"
            );
            journal.active.store(true, Ordering::Relaxed);
        }
        Ok(journal)
    }

    /// Reads the counts from the file (at start-up, and after a swap).
    async fn recount(&self) -> anyhow::Result<()> {
        let db = self.db.lock().await;
        self.recount_locked(&db).await?;
        drop(db);
        self.publish();
        Ok(())
    }

    async fn recount_locked(&self, db: &JournalDb) -> anyhow::Result<()> {
        let events = db.count().await?;
        let oldest = db.oldest().await?;
        self.events.store(events, Ordering::Relaxed);
        self.oldest.store(oldest.unwrap_or(0), Ordering::Relaxed);
        self.bytes.store(db.size_bytes(), Ordering::Relaxed);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal's identity: where PostgreSQL records how far it was replayed.
    pub async fn id(&self) -> String {
        self.db.lock().await.id().to_owned()
    }

    pub fn stats(&self) -> JournalStats {
        let oldest = self.oldest.load(Ordering::Relaxed);
        JournalStats {
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            oldest_received_at: (oldest != 0).then_some(oldest),
        }
    }

    /// Whether the last append found the journal at its size cap.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn publish(&self) {
        let s = self.stats();
        metrics::gauge!(m::JOURNAL_EVENTS).set(s.events as f64);
        metrics::gauge!(m::JOURNAL_BYTES).set(s.bytes as f64);
    }

    /// Appends rows durably: committed and fsynced when this returns `Ok`. `fence` names
    /// the write they come from when its outcome is unknown. Fails without writing
    /// anything when the rows would pass the size cap.
    pub async fn append(
        &self,
        rows: &[&EventRow],
        fence: Option<Fence>,
    ) -> Result<(), JournalError> {
        let (batch, _) = merge(rows.iter().copied());
        match self.append_noting(&batch, fence, None).await {
            Ok(()) => {
                metrics::counter!(m::JOURNAL_APPENDED).increment(rows.len() as u64);
                if !self.active.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), "database unavailable: acknowledging events from the outage journal");
                }
                Ok(())
            }
            Err(e) => {
                metrics::counter!(m::JOURNAL_ERRORS, "op" => "append").increment(1);
                Err(e)
            }
        }
    }

    /// Writes distinct rows (and, in the same transaction, a note in `journal_meta`),
    /// counting the new ones while the file is held. A corrupt file is swapped for a fresh
    /// one (the rows are not written: the caller answers 503).
    async fn append_noting(
        &self,
        batch: &[BatchRow<'_>],
        fence: Option<Fence>,
        note: Option<(&str, &str)>,
    ) -> Result<(), JournalError> {
        let db = self.db.lock().await;
        let result = db.append_noting(batch, fence, note).await;
        if let Ok(new) = &result
            && self.events.fetch_add(*new, Ordering::Relaxed) == 0
        {
            let oldest = batch.iter().map(|r| r.row.received_at).min().unwrap_or(0);
            self.oldest.store(oldest, Ordering::Relaxed);
        }
        let failed_id = db.id().to_owned();
        self.bytes.store(db.size_bytes(), Ordering::Relaxed);
        drop(db);
        self.publish();
        let Err(e) = result else {
            return Ok(());
        };
        if journal_is_full(&e) {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    max_bytes = self.max_bytes,
                    "the outage journal is full; callbacks are answered 503 until the database returns"
                );
            }
            return Err(JournalError::Full {
                max: self.max_bytes,
            });
        }
        if journal_is_corrupt(&e) {
            self.swap_corrupt(&failed_id, &e.to_string()).await;
        }
        Err(JournalError::Failed(e.to_string()))
    }

    /// Imports what old segment files hold, while they fit. Returns how many records came
    /// in; when the journal is full, the rest waits for the replay to free room.
    async fn import_legacy(&self) -> anyhow::Result<u64> {
        if !self.legacy_pending.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let import = legacy::import(self).await?;
        if import.complete {
            self.legacy_pending.store(false, Ordering::Relaxed);
        } else {
            tracing::warn!(
                imported = import.records,
                "old spool segments do not fit in the outage journal yet; the rest is imported as the replay frees room"
            );
        }
        Ok(import.records)
    }

    /// A read of the journal failed: counted, and when SQLite says the file is corrupt,
    /// the file (if it is still `failed_id`) is moved aside and a fresh journal started.
    async fn read_failed(&self, failed_id: &str, e: sqlx::Error) -> StoreError {
        metrics::counter!(m::JOURNAL_ERRORS, "op" => "replay").increment(1);
        if journal_is_corrupt(&e) {
            self.swap_corrupt(failed_id, &e.to_string()).await;
        }
        StoreError::Other(format!("reading the outage journal: {e}"))
    }

    /// Moves the journal `failed_id` aside and continues with a fresh one. Does nothing
    /// when that journal was swapped already (another operation on the same file failed
    /// too): the journal in use now is a healthy, newer one, and its rows keep replaying.
    async fn swap_corrupt(&self, failed_id: &str, why: &str) {
        let mut db = self.db.lock().await;
        if db.id() != failed_id {
            tracing::debug!(
                reason = why,
                "a late corruption report for a journal already moved aside"
            );
            return;
        }
        let path = db.path().to_owned();
        db.close().await;
        if let Err(e) = quarantine(&path, why) {
            tracing::error!(error = %e, "could not move the corrupt journal aside");
        }
        match JournalDb::open(&path, self.max_bytes).await {
            Ok(fresh) => *db = fresh.with_faults(self.faults.clone()),
            Err(e) => tracing::error!(error = %e, "could not open a fresh outage journal"),
        }
        if let Err(e) = self.recount_locked(&db).await {
            tracing::error!(error = %e, "could not read the fresh outage journal");
        }
        drop(db);
        self.publish();
    }

    pub async fn close(&self) {
        self.db.lock().await.close().await;
    }
}

/// Moves a journal SQLite reports corrupt (with its WAL and shared-memory files) aside,
/// never deleting it: it may hold acknowledged events that `sqlite3 … .recover` can save.
/// The name is new: a second corrupt journal never overwrites the first.
fn quarantine(path: &Path, why: &str) -> anyhow::Result<()> {
    let aside = aside_name(path);
    for suffix in ["", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = aside.as_os_str().to_owned();
        to.push(suffix);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "moving {} aside: {e}",
                    PathBuf::from(from).display()
                ));
            }
        }
    }
    metrics::counter!(m::JOURNAL_CORRUPT).increment(1);
    tracing::error!(
        moved_to = %aside.display(),
        reason = why,
        "the outage journal is corrupt: it was moved aside (not deleted) and a fresh one started; \
         recover what it holds with `sqlite3 <file> .recover` (docs/src/outages.md)"
    );
    Ok(())
}

/// `journal-corrupt-<UTC time>.db`, or with `-2`, `-3`, … when that name (or its WAL) is
/// taken already.
fn aside_name(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let taken = |p: &Path| {
        ["", "-wal", "-shm"].iter().any(|suffix| {
            let mut f = p.as_os_str().to_owned();
            f.push(suffix);
            Path::new(&f).exists()
        })
    };
    let mut n = 1;
    loop {
        let name = match n {
            1 => format!("journal-corrupt-{stamp}.db"),
            _ => format!("journal-corrupt-{stamp}-{n}.db"),
        };
        let candidate = path.with_file_name(name);
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Context, Kind, parse_delivery};

    fn delivery(call: &str, received_at: Millis) -> EventRow {
        let ctx = Context {
            sdkappid: 1_400_000_001,
            command: "call_end",
            client_ip: Some("10.0.0.1"),
            opt_platform: Some("iOS"),
            remote_addr: None,
            received_at,
        };
        let body = format!(
            r#"{{"CallId":"{call}","UserId":"u","Role":"caller","CallResult":"cancel","EventTime":1704856890}}"#
        );
        parse_delivery(Kind::Status, false, &ctx, body.as_bytes())
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_else(|| panic!("the test body parses"))
    }

    /// The readable rows of a chunk (every row of these tests is).
    fn readable(entries: Vec<crate::store::JournalEntry>) -> Vec<crate::store::JournalRow> {
        entries
            .into_iter()
            .map(|e| match e {
                crate::store::JournalEntry::Row(r) => r,
                crate::store::JournalEntry::Undecodable(u) => panic!("unreadable: {u:?}"),
            })
            .collect()
    }

    async fn open(dir: &Path, max_bytes: u64) -> Journal {
        Journal::open(dir, max_bytes)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// (call id, deliveries, chunk) of the rows the next chunk holds, by call id.
    async fn chunk(journal: &Journal) -> Vec<(String, i32, i64)> {
        let db = journal.db.lock().await;
        let mut rows: Vec<(String, i32, i64)> =
            readable(db.take_chunk(100).await.unwrap_or_else(|e| panic!("{e}")))
                .into_iter()
                .map(|r| (r.row.call_id.unwrap_or_default(), r.deliveries, r.chunk))
                .collect();
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn repeats_merge_until_the_replay_takes_the_row() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        let (a, b) = (delivery("a", 1_000), delivery("b", 2_000));
        for batch in [vec![&a, &b, &a], vec![&a]] {
            journal
                .append(&batch, None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(journal.stats().events, 2);
        assert_eq!(journal.stats().oldest_received_at, Some(1_000));
        let taken = chunk(&journal).await;
        assert_eq!(taken, vec![("a".into(), 3, 1), ("b".into(), 1, 1)]);
        // A repeat after the chunk was taken starts a new row, in no chunk yet: the taken
        // row's count is what the replay commits.
        journal
            .append(&[&a], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            chunk(&journal).await,
            taken,
            "the same chunk until it is finished"
        );
        let db = journal.db.lock().await;
        assert_eq!(db.finish_chunk(1).await.ok(), Some(2));
        drop(db);
        assert_eq!(chunk(&journal).await, vec![("a".into(), 1, 2)]);
        // A fenced write's rows do not merge with the others.
        let fence = Fence {
            writer: [7; 16],
            batch: 3,
        };
        journal
            .append(&[&a], Some(fence))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let db = journal.db.lock().await;
        assert_eq!(db.finish_chunk(2).await.ok(), Some(1));
        let rows = readable(db.take_chunk(100).await.unwrap_or_default());
        assert_eq!(
            rows.iter().map(|r| r.fence).collect::<Vec<_>>(),
            vec![Some(fence)]
        );
    }

    #[tokio::test]
    async fn a_taken_chunk_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        let rows: Vec<EventRow> = (0..5).map(|i| delivery(&format!("c{i}"), i)).collect();
        let refs: Vec<&EventRow> = rows.iter().collect();
        journal
            .append(&refs, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let before = chunk(&journal).await;
        journal.close().await;
        drop(journal);
        let reopened = open(dir.path(), 1 << 30).await;
        assert_eq!(reopened.stats().events, 5);
        assert_eq!(chunk(&reopened).await, before);
    }

    #[tokio::test]
    async fn a_full_journal_refuses_whole_batches() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // 64 pages of 4 KiB: the smallest cap.
        let journal = open(dir.path(), 0).await;
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..200 {
            let row = delivery(&format!("{i}-{}", "x".repeat(2000)), i);
            match journal.append(&[&row], None).await {
                Ok(()) => accepted += 1,
                Err(JournalError::Full { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            accepted > 10 && refused > 0,
            "{accepted} accepted, {refused} refused"
        );
        assert!(journal.is_full());
        assert_eq!(journal.stats().events, accepted);
    }

    /// A TRTC event (and a recording linked by Call.CallbackAfterRecordChanged) goes through
    /// the journal with every column, the TRTC ones included.
    #[tokio::test]
    async fn trtc_rows_come_back_unchanged() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        let ctx = Context {
            sdkappid: 1_400_000_001,
            command: crate::protocol::TRTC_COMMAND,
            client_ip: None,
            opt_platform: None,
            remote_addr: Some("10.1.2.3"),
            received_at: 1_764_403_300_000,
        };
        let body = br#"{"EventGroupId":3,"EventType":311,"CallbackTs":1764403245276,"EventInfo":{"RoomId":"r1","EventTs":1764403245,"EventMsTs":1764403245120,"UserId":"robot","TaskId":"T9","Payload":{"Status":2,"TencentVod":{"FileId":"1","VideoUrl":"https://v/1.mp4"}}}}"#;
        let mut row = crate::protocol::parse_trtc_delivery(&ctx, body)
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_else(|| panic!("the test body parses"));
        row.add_note("unverified: no trtc_key configured for this app");
        row.trtc.unique_id = Some("42".into());
        row.trtc.terminal_type = Some(2);
        row.trtc.user_type = Some(3);
        row.trtc.reason = Some(1);
        journal
            .append(&[&row], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let db = journal.db.lock().await;
        let back = readable(db.take_chunk(10).await.unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].row, row);
        assert_eq!(
            back[0].row.trtc.files.as_deref(),
            Some(r#"{"TencentVod":{"FileId":"1","VideoUrl":"https://v/1.mp4"}}"#)
        );
    }

    #[tokio::test]
    async fn a_corrupt_journal_is_moved_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let garbage = b"this was a journal until a disk ate it".repeat(200);
        std::fs::write(dir.path().join(FILE_NAME), &garbage).unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        assert_eq!(journal.stats().events, 0, "a fresh journal");
        let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        let kept: Vec<&PathBuf> = aside
            .iter()
            .filter(|p| p.to_string_lossy().contains("journal-corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(kept[0]).ok(),
            Some(garbage),
            "kept byte for byte"
        );
        let row = delivery("after", 1);
        journal
            .append(&[&row], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A late corruption report about a journal that was moved aside already leaves the
    /// fresh, healthy one alone (the rows acknowledged from it keep waiting for the replay),
    /// and two journals moved aside within one second keep a name each.
    #[tokio::test]
    async fn only_the_journal_that_failed_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        let first = journal.id().await;
        let before = delivery("before", 1);
        journal
            .append(&[&before], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Two operations on the first file found it corrupt; the first report swaps it.
        journal.swap_corrupt(&first, "first report").await;
        let second = journal.id().await;
        assert_ne!(first, second, "a fresh journal");
        let after = delivery("acked-after", 2);
        journal
            .append(&[&after], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        journal
            .swap_corrupt(&first, "the second, late report")
            .await;
        assert_eq!(journal.id().await, second, "the healthy journal stays");
        assert_eq!(
            chunk(&journal).await,
            vec![("acked-after".into(), 1, 1)],
            "its acknowledged row waits for the replay"
        );
        // The second file fails too, within the same second: it is kept under a new name.
        journal
            .swap_corrupt(&second, "the second file failed")
            .await;
        let mut aside: Vec<String> = std::fs::read_dir(dir.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("journal-corrupt-") && n.ends_with(".db"))
                    .collect()
            })
            .unwrap_or_default();
        aside.sort();
        assert_eq!(aside.len(), 2, "{aside:?}");
    }

    /// The journal's table must keep the columns of the SQLite `call_events`, so that a row
    /// goes through it unchanged.
    #[tokio::test]
    async fn the_journal_has_the_columns_of_call_events() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let events = crate::store::SqliteStore::connect(&crate::config::DatabaseSettings::new(url))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        events.migrate().await.unwrap_or_else(|e| panic!("{e:#}"));
        let journal = open(dir.path(), 1 << 30).await;
        let names = |pool: &sqlx::SqlitePool, table: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                ))
                .fetch_all(&pool)
                .await
                .unwrap_or_default()
            }
        };
        let want = names(events.pool(), "call_events").await;
        let db = journal.db.lock().await;
        let have = names(db.pool(), "journal_events").await;
        assert!(!want.is_empty());
        assert_eq!(
            have[..want.len()],
            want[..],
            "same columns, same order, then its own"
        );
        assert_eq!(
            have[want.len()..],
            ["fence", "chunk", "own_day"].map(str::to_owned)
        );
    }

    /// A row journaled by a version that did not bound the indexed text columns (a 4 kB
    /// call id, which PostgreSQL refuses to index) is replayed bounded, like a new row
    /// (src/protocol/bounded.rs), not refused into rejected_deliveries.
    #[tokio::test]
    async fn rows_journaled_unbounded_are_replayed_bounded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = open(dir.path(), 1 << 30).await;
        let long = "c".repeat(4096);
        let mut row = delivery("short", 1_000);
        row.call_id = Some(long.clone());
        journal
            .append(&[&row], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let db = journal.db.lock().await;
        let taken = readable(db.take_chunk(100).await.unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(taken.len(), 1);
        let replayed = &taken[0].row;
        let bounded = crate::protocol::bounded::bounded_form(&long);
        assert_eq!(replayed.call_id, bounded);
        let notes = replayed.notes.as_deref().unwrap_or_default();
        assert!(notes.contains("call_id: 4096 bytes"), "{notes}");
        assert_eq!(replayed.dedupe_key, row.dedupe_key);
    }
}
