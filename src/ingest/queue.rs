//! The bounded queue between the requests and the writers: a [`Job`] per request, waiting
//! with the channel its answer goes back on, and every critical section on the queue's
//! lock ([`Shared::push`], [`Shared::take`], [`Shared::depth`], [`Shared::close`]).
//!
//! A request pushes through the handle in `mod.rs`; a writer (`writer.rs`) takes up to
//! `max_batch` jobs at once and sorts them into a batch (`batch.rs`).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::outcome::{IngestError, Outcome};
use crate::protocol::EventRow;
use crate::store::RejectedRow;

/// Where a delivery's outcome goes back to the request waiting for it.
pub(super) type Reply = oneshot::Sender<Result<Outcome, IngestError>>;

pub(super) enum Job {
    Events {
        rows: Vec<EventRow>,
        reply: Reply,
        enqueued: Instant,
    },
    Rejected {
        row: RejectedRow,
        reply: oneshot::Sender<bool>,
        enqueued: Instant,
    },
}

impl Job {
    pub(super) fn enqueued(&self) -> Instant {
        match self {
            Self::Events { enqueued, .. } | Self::Rejected { enqueued, .. } => *enqueued,
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The queue, and how the writers are woken: what the handle and every writer share.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    pub(super) notify: Notify,
    capacity: usize,
    pub(super) max_batch: usize,
    /// Writers asked to panic by [`super::Ingest::kill_writer`].
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) kills: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// An open, empty queue of at most `capacity` jobs, taken `max_batch` at a time.
    pub(super) fn new(capacity: usize, max_batch: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            capacity,
            max_batch,
            #[cfg(any(test, feature = "test-hooks"))]
            kills: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a push or a drain), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` and wakes a writer; refused at once when the queue is full or closed.
    pub(super) fn push(&self, job: Job) -> Result<(), IngestError> {
        {
            let mut q = self.lock();
            if q.closed {
                return Err(IngestError::ShuttingDown);
            }
            if q.jobs.len() >= self.capacity {
                return Err(IngestError::Overloaded(q.jobs.len()));
            }
            q.jobs.push_back(job);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Moves up to `max_batch` waiting jobs into `batch` (never waiting for more); returns
    /// whether more are waiting, and whether the queue is closed.
    pub(super) fn take(&self, batch: &mut Vec<Job>) -> (bool, bool) {
        let mut q = self.lock();
        let n = q.jobs.len().min(self.max_batch);
        batch.extend(q.jobs.drain(..n));
        (!q.jobs.is_empty(), q.closed)
    }

    /// Jobs waiting for a writer, and how long the oldest has waited.
    pub(super) fn depth(&self) -> (usize, Duration) {
        let q = self.lock();
        let age = q
            .jobs
            .front()
            .map(|j| j.enqueued().elapsed())
            .unwrap_or_default();
        (q.jobs.len(), age)
    }

    /// Takes no more jobs, and wakes every writer to finish what is queued.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}
