//! The ingest step between HTTP and storage: a bounded queue and batch writers (group
//! commit).
//!
//! A request puts its event rows on the queue and waits. A writer takes whatever is waiting
//! (up to `max_batch`, never waiting for more), deduplicates it, writes it in one
//! transaction, and answers each request with its own outcome only after the commit. While
//! one writer commits, the next batch collects, so under load each transaction carries many
//! requests; when idle, a lone request is written at once. A full queue answers 503
//! (70005) immediately instead of growing memory.
//!
//! This file is the face: the handle requests use ([`Ingest`]) and the running writers
//! ([`Writers`]). The steps live beside it, in the order a delivery takes them:
//! - `queue.rs`: the bounded queue of jobs, each with the channel its answer goes back on;
//! - `writer.rs`: a writer takes a batch off the queue, writes it in one transaction
//!   through the [`BatchSink`] and answers each job; a batch refused for its data is
//!   written one delivery at a time;
//! - `batch.rs`: the batch sorted into deliveries and rejections, and its plan (distinct
//!   rows written, one outcome per delivery answered);
//! - `handoff.rs`: a batch the database cannot take goes into the outage journal
//!   (`crate::journal`), or is answered 503;
//! - `outcome.rs`: what a request gets back ([`Outcome`], or an [`IngestError`]).

mod batch;
mod handoff;
mod outcome;
mod queue;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use self::outcome::{IngestError, Outcome};
use self::queue::{Job, Shared};
pub use self::writer::BatchSink;
use self::writer::Writer;
use crate::config::IngestSettings;
use crate::health::DbHealth;
use crate::journal::Journal;
use crate::metrics as m;
use crate::protocol::EventRow;
use crate::store::RejectedRow;
use crate::supervisor::{Lifetime, Supervisor, Tasks};

/// The handle requests use. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    shared: Arc<Shared>,
}

/// The running writers, each supervised (a writer that panics is replaced);
/// [`Writers::finish`] waits for them to drain the queue.
pub struct Writers {
    supervisor: Supervisor,
}

/// The writers' task name in [`Tasks`] and in `callhook_task_restarts_total`.
pub const WRITER_TASK: &str = "writer";

impl Ingest {
    /// Starts `settings.writers` batch writers writing into `sink`, journaling into
    /// `journal` (when there is one) what the database cannot take, and reporting whether
    /// they run into `tasks`.
    pub fn start(
        sink: Arc<dyn BatchSink>,
        settings: &IngestSettings,
        health: Arc<DbHealth>,
        journal: Option<Arc<Journal>>,
        tasks: Arc<Tasks>,
    ) -> (Self, Writers) {
        let shared = Arc::new(Shared::new(settings.queue_depth, settings.max_batch));
        metrics::gauge!(m::QUEUE_CAPACITY).set(settings.queue_depth as f64);
        let writer = Writer {
            shared: Arc::clone(&shared),
            sink,
            health,
            journal,
        };
        let mut supervisor = Supervisor::new(tasks);
        for _ in 0..settings.writers {
            // A writer that panics is replaced at once (after a pause only if writers keep
            // dying, see crate::supervisor): the requests of its batch get their answer at
            // once (503, their reply channels closed with it), so the sender retries.
            let writer = writer.clone();
            let mut restart = false;
            supervisor.spawn(WRITER_TASK, Lifetime::UntilDone, move || {
                if std::mem::replace(&mut restart, true) {
                    metrics::counter!(m::WRITER_RESTARTS).increment(1);
                }
                writer.clone().run()
            });
        }
        (Self { shared }, Writers { supervisor })
    }

    /// Queues a delivery's rows and waits for the commit that holds them.
    pub async fn submit(&self, rows: Vec<EventRow>) -> Result<Outcome, IngestError> {
        let (tx, rx) = oneshot::channel();
        self.push(Job::Events {
            rows,
            reply: tx,
            enqueued: Instant::now(),
        })?;
        rx.await
            .unwrap_or_else(|_| Err(IngestError::Unavailable("the writer stopped".into())))
    }

    /// Queues a rejected delivery for `rejected_deliveries` and waits for its commit.
    /// Returns whether it was recorded (it is dropped, with a metric, when the queue is
    /// full or the database is down: the sender was told to retry anyway).
    pub async fn record_rejected(&self, row: RejectedRow) -> bool {
        let (tx, rx) = oneshot::channel();
        let pushed = self.push(Job::Rejected {
            row,
            reply: tx,
            enqueued: Instant::now(),
        });
        let recorded = pushed.is_ok() && rx.await.unwrap_or(false);
        if !recorded {
            metrics::counter!(m::REJECTED_RECORDS_DROPPED).increment(1);
        }
        recorded
    }

    fn push(&self, job: Job) -> Result<(), IngestError> {
        self.shared.push(job)
    }

    /// Deliveries waiting for a writer, and how long the oldest has waited.
    pub fn depth(&self) -> (usize, Duration) {
        self.shared.depth()
    }

    /// Stops taking new deliveries; the writers finish what is queued, then exit.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Test hook: makes one idle writer panic, as a bug would (its supervisor restarts it;
    /// a second death soon after is restarted after a pause, meanwhile `/readyz` names it).
    #[doc(hidden)]
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn kill_writer(&self) {
        self.shared
            .kills
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.shared.notify.notify_one();
    }
}

impl Writers {
    /// Waits until every writer has drained the queue and exited (call after
    /// [`Ingest::close`]).
    pub async fn finish(self) {
        self.supervisor.join().await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Mutex, PoisonError};

    use super::*;
    use crate::protocol::{Context, Kind, parse_delivery};
    use crate::store::{BatchRow, StoreError};

    /// One status callback's rows for call `call` (also the batch tests' delivery).
    pub(super) fn delivery(call: &str) -> Vec<EventRow> {
        let ctx = Context {
            sdkappid: 1,
            command: "call_end",
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 0,
        };
        let body = format!(r#"{{"CallId":"{call}","UserId":"u"}}"#);
        parse_delivery(Kind::Status, false, &ctx, body.as_bytes()).unwrap_or_default()
    }

    /// A sink that refuses, for its data, any batch holding a row of call "poison", panics
    /// on a batch holding a row of call "panic", and records what it committed.
    #[derive(Default)]
    struct Picky {
        committed: Mutex<Vec<String>>,
        rejected: Mutex<Vec<String>>,
    }

    impl BatchSink for Picky {
        fn write_batch<'a>(
            &'a self,
            rows: &'a [BatchRow<'a>],
            rejected: &'a [RejectedRow],
        ) -> Pin<Box<dyn Future<Output = Result<Vec<bool>, StoreError>> + Send + 'a>> {
            Box::pin(async move {
                if rows
                    .iter()
                    .any(|r| r.row.call_id.as_deref() == Some("panic"))
                {
                    panic!("a bug in the writer");
                }
                if rows
                    .iter()
                    .any(|r| r.row.call_id.as_deref() == Some("poison"))
                {
                    return Err(StoreError::Data("invalid input syntax".into()));
                }
                let mut c = self
                    .committed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                c.extend(rows.iter().filter_map(|r| r.row.call_id.clone()));
                let mut rj = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
                rj.extend(rejected.iter().map(|r| r.reason.clone()));
                Ok(vec![true; rows.len()])
            })
        }
    }

    fn start(sink: Arc<Picky>, writers: usize) -> (Ingest, Writers) {
        let settings = IngestSettings {
            queue_depth: 64,
            max_batch: 64,
            writers,
        };
        Ingest::start(
            sink,
            &settings,
            Arc::new(DbHealth::default()),
            None,
            Arc::default(),
        )
    }

    #[tokio::test]
    async fn a_delivery_the_database_refuses_is_isolated_and_kept() {
        let sink = Arc::new(Picky::default());
        let (ingest, writers) = start(Arc::clone(&sink), 1);
        // Alone in its batch: answered as unstorable and kept, not retried forever.
        let alone = ingest.submit(delivery("poison")).await;
        assert!(
            matches!(alone, Err(IngestError::Unstorable(_))),
            "{alone:?}"
        );
        // In a batch with good deliveries: only it is refused.
        let (a, p, b) = tokio::join!(
            ingest.submit(delivery("a")),
            ingest.submit(delivery("poison")),
            ingest.submit(delivery("b")),
        );
        assert_eq!((a, b), (Ok(Outcome::Inserted), Ok(Outcome::Inserted)));
        assert!(matches!(p, Err(IngestError::Unstorable(_))));
        ingest.close();
        writers.finish().await;
        let mut committed = sink
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        committed.sort();
        assert_eq!(committed, vec!["a", "b"]);
        let kept = sink
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(
            kept.len(),
            2,
            "both refusals are kept in rejected_deliveries: {kept:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_a_closed_one_too() {
        let sink = Arc::new(Picky::default());
        let settings = IngestSettings {
            queue_depth: 1,
            max_batch: 1,
            writers: 1,
        };
        let health = Arc::new(DbHealth::default());
        let (ingest, writers) = Ingest::start(sink, &settings, health, None, Arc::default());
        // Nothing drains while this task holds the (current-thread) runtime: the first
        // delivery fills the queue, the second is refused without waiting.
        let first = ingest.push(Job::Events {
            rows: delivery("x"),
            reply: oneshot::channel().0,
            enqueued: Instant::now(),
        });
        assert!(first.is_ok());
        let second = ingest.submit(delivery("y")).await;
        assert_eq!(second, Err(IngestError::Overloaded(1)));
        ingest.close();
        assert_eq!(
            ingest.submit(delivery("z")).await,
            Err(IngestError::ShuttingDown)
        );
        writers.finish().await;
    }

    #[tokio::test]
    async fn a_writer_that_panics_is_replaced_and_nobody_waits_for_it() {
        let sink = Arc::new(Picky::default());
        // One writer, as on SQLite: without a restart, nothing would drain the queue.
        let (ingest, writers) = start(Arc::clone(&sink), 1);
        let answered =
            tokio::time::timeout(Duration::from_secs(5), ingest.submit(delivery("panic"))).await;
        assert!(
            matches!(answered, Ok(Err(IngestError::Unavailable(_)))),
            "the request of the panicked batch is answered at once: {answered:?}"
        );
        for call in ["after-1", "after-2"] {
            let later =
                tokio::time::timeout(Duration::from_secs(5), ingest.submit(delivery(call))).await;
            assert_eq!(later, Ok(Ok(Outcome::Inserted)), "{call}");
        }
        ingest.close();
        writers.finish().await;
        let committed = sink
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(committed, vec!["after-1", "after-2"]);
    }
}
