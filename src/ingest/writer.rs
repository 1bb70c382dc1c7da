//! A batch writer: takes up to `max_batch` jobs off the queue (`queue.rs`), never waiting
//! for more, sorts and plans them (`batch.rs`), writes them in one transaction through the
//! [`BatchSink`], and answers each request with its own outcome only after the commit. A
//! batch refused for its data is written again one delivery at a time, so only the one at
//! fault is refused (and kept in `rejected_deliveries`); a batch the database cannot take
//! at all goes to `handoff.rs` (the outage journal, or 503).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::batch::{self, Deliveries, Plan, Rejections};
use super::handoff;
use super::outcome::{IngestError, Outcome};
use super::queue::{Job, Shared};
use crate::health::DbHealth;
use crate::journal::Journal;
use crate::metrics as m;
use crate::protocol::ErrorCode;
use crate::store::{BatchRow, RejectedRow, Store, StoreError};

/// Where the writers put batches: the database ([`Store`]), or, in the benchmark's
/// HTTP-only ceiling, nothing at all. A sink bounds its own writes in time (the store
/// answers [`StoreError::Indeterminate`] when a write passes its deadline).
pub trait BatchSink: Send + Sync + 'static {
    fn write_batch<'a>(
        &'a self,
        rows: &'a [BatchRow<'a>],
        rejected: &'a [RejectedRow],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<bool>, StoreError>> + Send + 'a>>;
}

impl BatchSink for Store {
    fn write_batch<'a>(
        &'a self,
        rows: &'a [BatchRow<'a>],
        rejected: &'a [RejectedRow],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<bool>, StoreError>> + Send + 'a>> {
        Box::pin(Store::write_batch(self, rows, rejected))
    }
}

/// One batch writer; [`super::Ingest::start`] clones one per task, and its supervisor
/// one per restart.
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) sink: Arc<dyn BatchSink>,
    pub(super) health: Arc<DbHealth>,
    pub(super) journal: Option<Arc<Journal>>,
}

impl Writer {
    /// Takes batches off the queue and writes them until the queue is closed and empty.
    pub(super) async fn run(self) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.shared.max_batch);
        loop {
            #[cfg(any(test, feature = "test-hooks"))]
            self.die_if_asked();
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (more_waiting, closed) = self.shared.take(&mut batch);
            if batch.is_empty() {
                if closed {
                    return;
                }
                notified.await;
                continue;
            }
            if more_waiting {
                // Let another writer start on the rest while this one commits.
                self.shared.notify.notify_one();
            }
            self.write(&mut batch).await;
            if closed {
                // Wake the other writers so they see the closed queue too.
                self.shared.notify.notify_waiters();
            }
        }
    }

    /// Panics when [`super::Ingest::kill_writer`] asked for it (between batches: nothing is
    /// lost).
    #[cfg(any(test, feature = "test-hooks"))]
    fn die_if_asked(&self) {
        use std::sync::atomic::Ordering;
        let asked = self
            .shared
            .kills
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if asked.is_ok() {
            panic!("killed by a test hook");
        }
    }

    /// Writes one batch and answers every job in it.
    #[tracing::instrument(name = "batch", skip_all, fields(jobs = batch.len()))]
    async fn write(&self, batch: &mut Vec<Job>) {
        let (events, rejected) = batch::sort(batch);
        metrics::histogram!(m::BATCH_SIZE).record((events.len() + rejected.len()) as f64);

        let result = if self.health.is_up() {
            let plan = Plan::new(&events.rows);
            self.write_rows(&plan.rows, &rejected.rows)
                .await
                .map(|inserted| plan.outcomes(&inserted))
        } else {
            // The database is known to be down: answer (or journal) at once instead of
            // waiting for a connection timeout per batch. The prober marks it up again.
            Err(StoreError::Unavailable(
                "the database is not answering".into(),
            ))
        };
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in events.replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                rejected.answer(true);
            }
            Err(StoreError::Data(msg)) => {
                // Find the delivery at fault (even in a batch of one, so that it is kept in
                // rejected_deliveries and answered 400, not retried forever).
                tracing::warn!(error = %msg, "a batch was refused for its data; writing its deliveries one by one");
                self.write_one_by_one(events, rejected).await;
            }
            Err(e) => handoff::fail(self.journal.as_deref(), events, rejected, e).await,
        }
    }

    /// Writes, keeping health and metrics current (the sink bounds the write in time).
    async fn write_rows(
        &self,
        rows: &[BatchRow<'_>],
        rejected: &[RejectedRow],
    ) -> Result<Vec<bool>, StoreError> {
        let started = Instant::now();
        let result = self.sink.write_batch(rows, rejected).await;
        match &result {
            Ok(_) => {
                metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
                self.health.mark_up();
            }
            Err(e) => {
                let kind = match e {
                    StoreError::Unavailable(msg)
                    | StoreError::Indeterminate { reason: msg, .. } => {
                        self.health.mark_down(msg);
                        "unavailable"
                    }
                    StoreError::Data(_) => "data",
                    StoreError::Other(_) => "other",
                };
                metrics::counter!(m::DATABASE_ERRORS, "kind" => kind).increment(1);
            }
        }
        result
    }

    /// Isolates the deliveries a database refused: each is written in its own transaction;
    /// the ones refused for their data are answered 400 and recorded as rejected.
    async fn write_one_by_one(&self, events: Deliveries, rejected: Rejections) {
        for (rows, reply) in events.rows.into_iter().zip(events.replies) {
            let single = [rows];
            let plan = Plan::new(&single);
            let result = self
                .write_rows(&plan.rows, &[])
                .await
                .map(|ins| plan.outcomes(&ins));
            let [rows] = single;
            match result {
                Ok(outcomes) => {
                    let outcome = outcomes.first().copied().unwrap_or(Outcome::Duplicate);
                    let _ = reply.send(Ok(outcome));
                }
                Err(StoreError::Data(msg)) => {
                    tracing::warn!(error = %msg, "the database refused a delivery's data");
                    if let Some(first) = rows.first() {
                        let row = RejectedRow {
                            received_at: first.received_at,
                            sdkappid: first.sdkappid,
                            command: Some(first.command.clone()),
                            query: String::new(),
                            body: RejectedRow::body_text(
                                first.payload.as_deref().unwrap_or_default().as_bytes(),
                            ),
                            error_code: ErrorCode::Unstorable.code() as i32,
                            reason: format!("the database cannot store this body: {msg}"),
                            remote_addr: first.remote_addr.clone(),
                            dedupe_key: crate::protocol::derived_key(
                                b"unstorable",
                                &first.dedupe_key,
                            ),
                        };
                        let _ = self.write_rows(&[], &[row]).await;
                    }
                    let _ = reply.send(Err(IngestError::Unstorable(msg)));
                }
                Err(e) => {
                    let one = Deliveries {
                        rows: vec![rows],
                        replies: vec![reply],
                    };
                    handoff::fail(self.journal.as_deref(), one, Rejections::default(), e).await;
                }
            }
        }
        for (row, reply) in rejected.rows.into_iter().zip(rejected.replies) {
            let ok = self
                .write_rows(&[], std::slice::from_ref(&row))
                .await
                .is_ok();
            let _ = reply.send(ok);
        }
    }
}
