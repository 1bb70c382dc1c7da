//! The journal's replay into PostgreSQL: chunk by chunk, oldest first, each chunk in
//! steps that PostgreSQL commits together with the journal's progress
//! (src/store/postgres/replay.rs), and nothing that can block it for good:
//!
//! - a step that passes its deadline is retried with half the rows (down to one), and
//!   the size grows back in steps that finished, fast up to half the size that did not,
//!   slowly past it (src/journal/pace.rs): a database too slow for whole chunks drains in
//!   smaller steps instead of failing whole, again and again;
//! - a step PostgreSQL refuses for its data is replayed row by row, and only the rows at
//!   fault go to `rejected_deliveries`;
//! - a row this version cannot read is set aside in `rejected_deliveries`;
//! - rows behind PostgreSQL's record of the progress (not the chunk in flight) are stored,
//!   logged and counted, never dropped, and new chunks are numbered past that record;
//! - the chunk's rows are deleted from the journal only in the transaction that takes the
//!   next chunk, after PostgreSQL committed them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Journal;
use crate::metrics as m;
use crate::store::{JournalEntry, JournalRow, ReplayReport, Store, StoreError, Undecodable};

impl Journal {
    /// Replays every waiting row into `store`, oldest first, in chunks of `chunk_size`.
    /// Returns how many rows left the journal. Stops at the first error that is not a
    /// single row's fault (the rest waits for the next attempt).
    pub async fn replay(&self, store: &Store, chunk_size: usize) -> Result<u64, StoreError> {
        let _guard = self.replay_lock.lock().await;
        if !self.may_hold_rows().await {
            return Ok(0);
        }
        let mut total = 0u64;
        // The chunk the database has, deleted in the transaction that takes the next one.
        let mut finished: Option<(i64, u64)> = None;
        loop {
            let (journal_id, entries) = self
                .take(finished.map(|(chunk, _)| chunk), chunk_size)
                .await?;
            if let Some((_, n)) = finished.take() {
                total += n;
                metrics::counter!(m::JOURNAL_REPLAYED).increment(n);
                self.full.store(false, Ordering::Relaxed);
                self.refresh_oldest().await;
            }
            let Some((chunk, _)) = entries.first().map(JournalEntry::position) else {
                // Empty: old segment files that did not fit may fit now.
                let imported = self
                    .import_legacy()
                    .await
                    .map_err(|e| StoreError::Other(format!("{e:#}")))?;
                if imported > 0 {
                    continue;
                }
                break;
            };
            let n = entries.len() as u64;
            self.replay_chunk(store, &journal_id, entries, chunk_size)
                .await?;
            finished = Some((chunk, n));
        }
        if total > 0 {
            self.drained(total).await;
        }
        Ok(total)
    }

    /// Whether a replay has anything to do: rows the count knows of, rows the file holds
    /// that it missed, or old segment files waiting.
    async fn may_hold_rows(&self) -> bool {
        if self.events.load(Ordering::Relaxed) > 0 || self.legacy_pending.load(Ordering::Relaxed) {
            return true;
        }
        let db = self.db.lock().await;
        db.has_rows().await.unwrap_or(true)
    }

    /// Deletes the `finished` chunk and takes the next one (see
    /// [`crate::store::JournalDb::next_chunk`]), keeping the count exact while the file is
    /// held. Returns the journal's identity with the chunk's entries.
    async fn take(
        &self,
        finished: Option<i64>,
        chunk_size: usize,
    ) -> Result<(String, Vec<JournalEntry>), StoreError> {
        let db = self.db.lock().await;
        let id = db.id().to_owned();
        let taken = db.next_chunk(finished, chunk_size).await;
        match taken {
            Ok((deleted, entries)) => {
                if entries.is_empty() {
                    // The file holds no row: whatever the count says.
                    self.events.store(0, Ordering::Relaxed);
                } else {
                    let _ = self
                        .events
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            Some(n.saturating_sub(deleted))
                        });
                }
                drop(db);
                self.publish();
                Ok((id, entries))
            }
            Err(e) => {
                drop(db);
                Err(self.read_failed(&id, e).await)
            }
        }
    }

    /// One chunk into the database, in the order of its rows: runs of readable rows in
    /// steps, each row this version cannot read set aside where it lies.
    async fn replay_chunk(
        &self,
        store: &Store,
        journal_id: &str,
        entries: Vec<JournalEntry>,
        chunk_size: usize,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<JournalRow> = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                JournalEntry::Row(row) => rows.push(row),
                JournalEntry::Undecodable(row) => {
                    self.replay_rows(store, journal_id, &rows, chunk_size)
                        .await?;
                    rows.clear();
                    self.set_aside(store, journal_id, &row).await?;
                }
            }
        }
        self.replay_rows(store, journal_id, &rows, chunk_size).await
    }

    /// Rows into the database in steps of at most the current step size: a step past its
    /// deadline is retried with half as many rows, one refused for its data row by row.
    async fn replay_rows(
        &self,
        store: &Store,
        journal_id: &str,
        rows: &[JournalRow],
        chunk_size: usize,
    ) -> Result<(), StoreError> {
        let deadline = store.replay_deadline();
        let mut at = 0;
        while at < rows.len() {
            let step = self.pace().next(chunk_size);
            let part = &rows[at..rows.len().min(at + step)];
            match tokio::time::timeout(deadline, store.replay(journal_id, part)).await {
                Err(_) => self.step_timed_out(step, deadline)?,
                Ok(Err(StoreError::Data(msg))) => {
                    tracing::warn!(error = %msg, "the database refused a journaled step; replaying it row by row");
                    self.replay_one_by_one(store, journal_id, part).await?;
                    at += part.len();
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(report)) => {
                    self.noted(&report).await;
                    self.pace().finished(step, chunk_size);
                    at += part.len();
                }
            }
        }
        Ok(())
    }

    /// The rows of a step each in its own transaction; the ones refused for their data
    /// go to `rejected_deliveries`.
    async fn replay_one_by_one(
        &self,
        store: &Store,
        journal_id: &str,
        rows: &[JournalRow],
    ) -> Result<(), StoreError> {
        let deadline = store.replay_deadline();
        for row in rows {
            let one = std::slice::from_ref(row);
            let report = match bounded(deadline, store.replay(journal_id, one)).await {
                Err(StoreError::Data(reason)) => {
                    tracing::error!(
                        call_id = row.row.call_id.as_deref(),
                        %reason,
                        "the database refused a journaled event; it is kept in rejected_deliveries"
                    );
                    let report =
                        bounded(deadline, store.replay_refused(journal_id, row, &reason)).await?;
                    metrics::counter!(m::JOURNAL_REFUSED).increment(1);
                    report
                }
                other => other?,
            };
            self.noted(&report).await;
        }
        Ok(())
    }

    /// A row this version cannot read, into `rejected_deliveries`.
    async fn set_aside(
        &self,
        store: &Store,
        journal_id: &str,
        row: &Undecodable,
    ) -> Result<(), StoreError> {
        let deadline = store.replay_deadline();
        let report = bounded(deadline, store.replay_set_aside(journal_id, row)).await?;
        if report.replayed + report.behind > 0 {
            tracing::error!(
                sdkappid = row.rejected.sdkappid,
                reason = %row.rejected.reason,
                "a journaled row this version cannot read was set aside in rejected_deliveries"
            );
            metrics::counter!(m::JOURNAL_UNREADABLE).increment(1);
        }
        self.noted(&report).await;
        Ok(())
    }

    /// The step size's state (see src/journal/pace.rs).
    fn pace(&self) -> std::sync::MutexGuard<'_, super::pace::Pace> {
        self.pace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A step passed its deadline: the next one takes half the rows. A step of one row
    /// that cannot finish in time means the database cannot take writes now.
    fn step_timed_out(&self, step: usize, deadline: Duration) -> Result<(), StoreError> {
        metrics::counter!(m::JOURNAL_STEP_TIMEOUTS).increment(1);
        let Some(smaller) = self.pace().timed_out(step) else {
            return Err(StoreError::Unavailable(format!(
                "replaying one journaled row did not finish within {deadline:?}"
            )));
        };
        tracing::warn!(
            rows = step,
            retry_with = smaller,
            ?deadline,
            "a replay step did not finish in time; retrying it with fewer rows"
        );
        Ok(())
    }

    /// Logs (and counts) what a step's report says beyond the rows it replayed.
    async fn noted(&self, report: &ReplayReport) {
        if report.already_replayed > 0 {
            tracing::debug!(
                rows = report.already_replayed,
                "rows of the chunk in flight were already in the database; skipped"
            );
        }
        if report.behind == 0 {
            return;
        }
        metrics::counter!(m::JOURNAL_BEHIND).increment(report.behind as u64);
        tracing::error!(
            rows = report.behind,
            recorded_chunk = report.position.0,
            "journaled rows lie behind the replay progress PostgreSQL records for this journal (a journal restored from a backup?); they were stored anyway, and new chunks are numbered past the record"
        );
        let db = self.db.lock().await;
        if let Err(e) = db.number_chunks_after(report.position.0).await {
            tracing::warn!(error = %e, "could not renumber the journal's chunks");
        }
    }

    async fn refresh_oldest(&self) {
        let db = self.db.lock().await;
        if let Ok(oldest) = db.oldest().await {
            self.oldest.store(oldest.unwrap_or(0), Ordering::Relaxed);
        }
        self.bytes.store(db.size_bytes(), Ordering::Relaxed);
        drop(db);
        self.publish();
    }

    /// After a replay emptied the journal: its space goes back to the file system.
    async fn drained(&self, total: u64) {
        if self.events.load(Ordering::Relaxed) > 0 {
            return;
        }
        self.pace().drained();
        let db = self.db.lock().await;
        if let Err(e) = db.shrink().await {
            tracing::debug!(error = %e, "could not shrink the drained journal");
        }
        self.bytes.store(db.size_bytes(), Ordering::Relaxed);
        drop(db);
        self.publish();
        if self.active.swap(false, Ordering::Relaxed) {
            tracing::info!(
                replayed = total,
                "outage journal drained: every journaled event is in the database"
            );
        }
    }
}

/// A replay step within `deadline`; past it, the database counts as unavailable.
async fn bounded(
    deadline: Duration,
    step: impl std::future::Future<Output = Result<ReplayReport, StoreError>>,
) -> Result<ReplayReport, StoreError> {
    tokio::time::timeout(deadline, step)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "a replay step did not finish within {deadline:?}"
            )))
        })
}
