//! Supervision of the long-lived tasks: the batch writers (`writer`), the database prober
//! (`prober`), the outage journal's replay (`journal-replay`) and the metrics upkeep
//! (`metrics-upkeep`) and, with `[reconcile] interval`, the reconcile against Tencent's call
//! records (`reconcile`).
//!
//! Each runs under [`Supervisor::spawn`]. A task that ends early (it panics, or returns
//! although it should run until shutdown) is logged, counted in
//! `callhook_task_restarts_total{task}` and restarted at once: a writer that died must not
//! leave deliveries waiting. A task of the same name that ends early again within
//! [`RAPID_FAILURES`] of the last restart waits [`RESTART_PAUSE`] first, listed in
//! [`Tasks`] meanwhile (so `/readyz` answers 503 and names it): that keeps a task that
//! fails at once (a delivery that crashes every writer it meets) from spinning, and makes
//! it visible to the readiness probe. Every task here can be restarted: each keeps its
//! state in what it shares with the rest (the queue, the database health, the journal),
//! not in itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::health::DbHealth;
use crate::logging::Complaint;
use crate::metrics as m;

/// How long a task that keeps ending early stays down before it is started again.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// A task restarted less than this long ago that ends early again is restarted only after
/// [`RESTART_PAUSE`].
pub const RAPID_FAILURES: Duration = Duration::from_secs(10);

/// Which supervised tasks are not running now (`/readyz` reads it). Shared by every
/// [`Supervisor`] of the process.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Per task name, how many of its copies are down (the writers run several).
    down: Mutex<BTreeMap<&'static str, usize>>,
    /// Per task name, when one of its copies was last restarted.
    restarted: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Tasks {
    /// The names of the tasks with a copy not running, in order, each once.
    pub fn down(&self) -> Vec<&'static str> {
        self.lock().keys().copied().collect()
    }

    fn mark_down(&self, name: &'static str) {
        *self.lock().entry(name).or_default() += 1;
    }

    fn mark_up(&self, name: &'static str) {
        let mut down = self.lock();
        if let Some(n) = down.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                down.remove(name);
            }
        }
    }

    /// Records a restart of `name` now; returns whether the one before was less than
    /// `window` ago.
    fn restarted_within(&self, name: &'static str, window: Duration) -> bool {
        let now = Instant::now();
        let mut restarted = self
            .restarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let previous = restarted.insert(name, now);
        previous.is_some_and(|t| now.duration_since(t) < window)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, usize>> {
        // Every critical section is one map update, so a poisoned lock is still consistent.
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a task is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// It runs until shutdown aborts it: returning at all is an early exit.
    UntilAborted,
    /// It returns when its work is done (a writer, once the queue is closed and drained):
    /// only a panic is an early exit.
    UntilDone,
}

/// A group of supervised tasks that stop together: the writers (drained at shutdown), or
/// the background tasks (aborted at shutdown).
pub struct Supervisor {
    tasks: Arc<Tasks>,
    running: JoinSet<()>,
    /// [`RESTART_PAUSE`] (shorter in this module's tests).
    pause: Duration,
}

impl Supervisor {
    /// A supervisor reporting into `tasks`.
    pub fn new(tasks: Arc<Tasks>) -> Self {
        Self {
            tasks,
            running: JoinSet::new(),
            pause: RESTART_PAUSE,
        }
    }

    /// Runs `start()` as task `name` and starts it again whenever it ends early.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, lifetime: Lifetime, start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = Task {
            tasks: Arc::clone(&self.tasks),
            name,
            lifetime,
            pause: self.pause,
            rapid: RAPID_FAILURES,
        };
        self.running.spawn(task.supervise(start));
    }

    /// Waits until every task has ended for good (for [`Lifetime::UntilDone`] tasks, after
    /// their work is closed).
    pub async fn join(mut self) {
        while let Some(ended) = self.running.join_next().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "a task supervisor failed");
            }
        }
    }

    /// Stops every task now.
    pub fn abort(&mut self) {
        self.running.abort_all();
    }
}

/// One supervised task.
struct Task {
    tasks: Arc<Tasks>,
    name: &'static str,
    lifetime: Lifetime,
    pause: Duration,
    rapid: Duration,
}

/// A task copy listed as down until this is dropped.
struct Down<'a> {
    tasks: &'a Tasks,
    name: &'static str,
}

impl<'a> Down<'a> {
    fn mark(tasks: &'a Tasks, name: &'static str) -> Self {
        tasks.mark_down(name);
        Self { tasks, name }
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        self.tasks.mark_up(self.name);
    }
}

impl Task {
    /// Runs one copy of the task until it ends for good. Aborting this future aborts the
    /// copy (it lives in a [`JoinSet`] of its own).
    async fn supervise<F, Fut>(self, mut start: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = self.name;
        loop {
            let mut copy = JoinSet::new();
            copy.spawn(start());
            let why = match copy.join_next().await {
                None => return,
                Some(Ok(())) if self.lifetime == Lifetime::UntilDone => return,
                Some(Ok(())) => "it returned".to_owned(),
                Some(Err(e)) if e.is_panic() => {
                    format!("it panicked: {}", panic_text(&*e.into_panic()))
                }
                // Cancelled: only shutdown does that.
                Some(Err(_)) => return,
            };
            let pause = if self.tasks.restarted_within(name, self.rapid) {
                self.pause
            } else {
                Duration::ZERO
            };
            tracing::error!(
                task = name,
                reason = %why,
                pause_ms = pause.as_millis() as u64,
                "a long-lived task ended early; restarting it"
            );
            metrics::counter!(m::TASK_RESTARTS, "task" => name).increment(1);
            if !pause.is_zero() {
                // Listed as down for the pause, and no longer if the pause is cut short
                // (shutdown aborts this future).
                let _down = Down::mark(&self.tasks, name);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// A panic's message, when it has one.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAUSE: Duration = Duration::from_millis(400);

    /// Waits (at most 10 s) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_early_is_restarted_at_once_then_after_a_pause() {
        let tasks = Arc::new(Tasks::default());
        let mut sup = Supervisor::new(Arc::clone(&tasks));
        sup.pause = PAUSE;
        let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let log = Arc::clone(&starts);
        sup.spawn("flaky", Lifetime::UntilAborted, move || {
            let n = {
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.push(Instant::now());
                log.len()
            };
            async move {
                // The first two copies fail at once; the third runs.
                if n <= 2 {
                    panic!("copy {n} fails");
                }
                std::future::pending::<()>().await;
            }
        });
        // The second failure comes right after the first restart: down for the pause.
        until(|| !tasks.down().is_empty()).await;
        assert_eq!(tasks.down(), vec!["flaky"]);
        until(|| tasks.down().is_empty()).await;
        let starts = starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(starts.len(), 3, "started three times");
        assert!(starts[1] - starts[0] < PAUSE / 2, "first restart at once");
        assert!(
            starts[2] - starts[1] >= PAUSE,
            "second restart after the pause"
        );
        sup.abort();
        sup.join().await;
    }

    #[tokio::test]
    async fn a_task_aborted_during_its_pause_is_not_left_listed_down() {
        let tasks = Arc::new(Tasks::default());
        let mut sup = Supervisor::new(Arc::clone(&tasks));
        sup.pause = Duration::from_secs(60);
        sup.spawn("crashing", Lifetime::UntilAborted, || async {
            panic!("always fails");
        });
        until(|| !tasks.down().is_empty()).await;
        sup.abort();
        sup.join().await;
        assert!(tasks.down().is_empty(), "{:?}", tasks.down());
    }

    #[tokio::test]
    async fn a_task_done_with_its_work_is_not_restarted() {
        let tasks = Arc::new(Tasks::default());
        let mut sup = Supervisor::new(Arc::clone(&tasks));
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&starts);
        sup.spawn("done", Lifetime::UntilDone, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        sup.join().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(tasks.down().is_empty());
    }

    #[test]
    fn copies_of_one_task_are_listed_once_until_all_are_up() {
        let tasks = Tasks::default();
        tasks.mark_down("writer");
        tasks.mark_down("writer");
        tasks.mark_down("prober");
        assert_eq!(tasks.down(), vec!["prober", "writer"]);
        tasks.mark_up("writer");
        tasks.mark_up("prober");
        assert_eq!(tasks.down(), vec!["writer"]);
        tasks.mark_up("writer");
        assert!(tasks.down().is_empty());
    }
}

/// The schedule of a periodic background task.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    /// Between the end of a run and the start of the next.
    pub every: Duration,
    /// After a failed run.
    pub retry: Duration,
    /// The log line of a failed run (the error rides along).
    pub failed: &'static str,
}

/// How often a periodic task looks whether the database is ready.
const READY_POLL: Duration = Duration::from_millis(500);

/// Runs `run` for ever (under [`Supervisor::spawn`], which restarts it should it panic):
/// each run once the database is up and migrated, the next [`Period::every`] after a run
/// that succeeded and [`Period::retry`] after one that failed. A failure is logged at most
/// once a minute ([`Complaint`]).
pub async fn periodically<T, F, Fut>(health: &DbHealth, period: Period, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut complaint = Complaint::default();
    loop {
        health.ready(READY_POLL).await;
        match run().await {
            Ok(_) => tokio::time::sleep(period.every).await,
            Err(e) => {
                complaint.log(&format!("{e:#}"), period.failed);
                tokio::time::sleep(period.retry).await;
            }
        }
    }
}
