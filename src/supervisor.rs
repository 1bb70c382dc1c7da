//! Supervision of the long-lived tasks: the batch writers (`writer`), the database prober
//! (`prober`), the outage journal's replay (`journal-replay`) and the metrics upkeep
//! (`metrics-upkeep`).
//!
//! Each runs under [`Supervisor::spawn`]. A task that ends early (it panics, or returns
//! although it should run until shutdown) is logged, listed in [`Tasks`] (so `/readyz`
//! answers 503 and names it) and restarted after [`RESTART_PAUSE`], counted in
//! `callhook_task_restarts_total{task}`. The pause keeps a task that fails at once from
//! spinning, and keeps its absence visible to the readiness probe. Every task here can be
//! restarted: each keeps its state in what it shares with the rest (the queue, the
//! database health, the journal), not in itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::metrics as m;

/// How long a task that ended early stays down before it is started again.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Which supervised tasks are not running now (`/readyz` reads it). Shared by every
/// [`Supervisor`] of the process.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Per task name, how many of its copies are down (the writers run several).
    down: Mutex<BTreeMap<&'static str, usize>>,
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
            self.tasks.mark_down(name);
            tracing::error!(
                task = name,
                reason = %why,
                pause_ms = self.pause.as_millis() as u64,
                "a long-lived task ended early; restarting it"
            );
            metrics::counter!(m::TASK_RESTARTS, "task" => name).increment(1);
            tokio::time::sleep(self.pause).await;
            self.tasks.mark_up(name);
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
    async fn a_task_that_ends_early_is_down_then_restarted() {
        let tasks = Arc::new(Tasks::default());
        let mut sup = Supervisor::new(Arc::clone(&tasks));
        sup.pause = PAUSE;
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&starts);
        sup.spawn("flaky", Lifetime::UntilAborted, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first copy fails");
                }
                std::future::pending::<()>().await;
            }
        });
        until(|| !tasks.down().is_empty()).await;
        let went_down = std::time::Instant::now();
        assert_eq!(tasks.down(), vec!["flaky"]);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        until(|| tasks.down().is_empty()).await;
        assert!(went_down.elapsed() >= PAUSE / 2, "down for the pause");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        sup.abort();
        sup.join().await;
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
