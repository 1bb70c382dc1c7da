//! Fault injection, for the randomized fault test (tests/it/simulation.rs): at every
//! statement the PostgreSQL store and the outage journal run, a [`Plan`] may make the
//! statement fail before it runs, fail after it committed, hang past every deadline
//! (before or after running), or have the server kill the connections.
//!
//! The hooks are in every build, so the code under test is the code that ships; but only a
//! build with the `test-hooks` feature (the integration tests turn it on) can hold a plan.
//! Without it a [`Faults`] is empty and [`Faults::run`] is the statement itself.

use std::future::Future;
use std::time::Duration;

/// Where a fault can strike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// One attempt at a live batch write (events, rejected deliveries) to PostgreSQL.
    PgWrite,
    /// The prober's `SELECT 1`.
    PgPing,
    /// A replay step's first statements: its deadlines, the progress row made and locked.
    PgReplayBegin,
    /// A replay step settling the fence of a write of unknown outcome.
    PgReplaySettle,
    /// A replay step writing its rows (or keeping them in `rejected_deliveries`).
    PgReplayWrite,
    /// A replay step's commit (with the progress it moved).
    PgReplayCommit,
    /// An append to the outage journal (its whole transaction).
    JournalAppend,
    /// The replay deleting a finished chunk from the journal and taking the next one.
    JournalTake,
}

impl Point {
    pub const ALL: [Point; 8] = [
        Point::PgWrite,
        Point::PgPing,
        Point::PgReplayBegin,
        Point::PgReplaySettle,
        Point::PgReplayWrite,
        Point::PgReplayCommit,
        Point::JournalAppend,
        Point::JournalTake,
    ];

    /// Whether the statement runs in PostgreSQL (else in the journal's SQLite file).
    pub fn is_postgres(self) -> bool {
        !matches!(self, Self::JournalAppend | Self::JournalTake)
    }
}

/// What a fault does to the statement it strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The connection breaks before the statement is sent: nothing happens, the caller
    /// sees an I/O error.
    FailBefore,
    /// The statement runs (and commits, if it ends a transaction); then the connection
    /// breaks before the answer arrives: the caller sees an I/O error.
    FailAfter,
    /// The statement is held past every deadline before it runs (the caller gives up
    /// first, so it never runs while anyone waits for it).
    HangBefore,
    /// The statement runs and commits, but its answer arrives only after every deadline.
    HangAfter,
    /// The server terminates every connection of the process under test, then the
    /// statement is sent (on a connection that may be gone). On the journal, whose file
    /// has no server, its connection breaks as in [`Fault::FailBefore`].
    KillConnections,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::FailBefore,
        Fault::FailAfter,
        Fault::HangBefore,
        Fault::HangAfter,
        Fault::KillConnections,
    ];
}

/// A schedule of faults, asked at every [`Point`].
pub trait Plan: Send + Sync + std::fmt::Debug + 'static {
    /// The fault that strikes this statement, if any.
    fn at(&self, point: Point) -> Option<Fault>;
    /// How long a hang at `point` lasts: past the deadline of what waits for it.
    fn hang(&self, point: Point) -> Duration;
    /// Has the server terminate every database connection of the process under test.
    fn kill_connections(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The fault plan of one store or journal: none, outside the randomized fault test.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    #[cfg(any(test, feature = "test-hooks"))]
    plan: Option<std::sync::Arc<dyn Plan>>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Faults as `plan` has them (test builds only).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn new(plan: std::sync::Arc<dyn Plan>) -> Self {
        Self { plan: Some(plan) }
    }

    /// Runs the statement `op` at `point`, under whatever fault the plan has for it.
    pub async fn run<T>(
        &self,
        point: Point,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        #[cfg(any(test, feature = "test-hooks"))]
        if let Some(plan) = &self.plan
            && let Some(fault) = plan.at(point)
        {
            return strike(plan.as_ref(), point, fault, op).await;
        }
        #[cfg(not(any(test, feature = "test-hooks")))]
        let _ = point;
        op.await
    }
}

#[cfg(any(test, feature = "test-hooks"))]
async fn strike<T>(
    plan: &dyn Plan,
    point: Point,
    fault: Fault,
    op: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let broken = || {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("fault injected at {point:?}: {fault:?}"),
        ))
    };
    match fault {
        Fault::FailBefore => Err(broken()),
        Fault::FailAfter => {
            op.await?;
            Err(broken())
        }
        Fault::HangBefore => {
            tokio::time::sleep(plan.hang(point)).await;
            op.await
        }
        Fault::HangAfter => {
            let result = op.await;
            tokio::time::sleep(plan.hang(point)).await;
            result
        }
        Fault::KillConnections if point.is_postgres() => {
            plan.kill_connections().await;
            op.await
        }
        // The journal's file has no server: its connection breaks as in FailBefore.
        Fault::KillConnections => Err(broken()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Always(Fault, AtomicUsize);

    impl Plan for Always {
        fn at(&self, _: Point) -> Option<Fault> {
            Some(self.0)
        }
        fn hang(&self, _: Point) -> Duration {
            Duration::from_millis(50)
        }
        fn kill_connections(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(async {
                self.1.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    async fn run(fault: Fault, point: Point) -> (Result<u8, String>, usize, Arc<AtomicUsize>) {
        let ran = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(Always(fault, AtomicUsize::new(0)));
        let faults = Faults::new(plan.clone());
        let counter = Arc::clone(&ran);
        let result = faults
            .run(point, async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(7)
            })
            .await
            .map_err(|e| e.to_string());
        (result, plan.1.load(Ordering::SeqCst), ran)
    }

    #[tokio::test]
    async fn each_fault_does_what_it_says() {
        let (r, _, ran) = run(Fault::FailBefore, Point::PgWrite).await;
        assert!(r.is_err() && ran.load(Ordering::SeqCst) == 0);
        let (r, _, ran) = run(Fault::FailAfter, Point::PgWrite).await;
        assert!(
            r.is_err() && ran.load(Ordering::SeqCst) == 1,
            "ran, then failed"
        );
        let (r, _, ran) = run(Fault::HangAfter, Point::PgWrite).await;
        assert!(r == Ok(7) && ran.load(Ordering::SeqCst) == 1);
        let hung = tokio::time::timeout(
            Duration::from_millis(10),
            run(Fault::HangBefore, Point::PgWrite),
        )
        .await;
        assert!(hung.is_err(), "held past the caller's deadline");
        let (r, kills, _) = run(Fault::KillConnections, Point::PgReplayCommit).await;
        assert_eq!((r, kills), (Ok(7), 1));
        let (r, kills, ran) = run(Fault::KillConnections, Point::JournalAppend).await;
        assert!(r.is_err() && kills == 0 && ran.load(Ordering::SeqCst) == 0);
        let none = Faults::none()
            .run(Point::PgWrite, async { Ok::<_, sqlx::Error>(1) })
            .await;
        assert!(none.is_ok());
    }
}
