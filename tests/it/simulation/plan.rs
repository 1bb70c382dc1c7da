//! The fault plan the store and the journal ask at every statement (src/faults.rs): a
//! drawn rate and mix of faults, and the outage switch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callhook::faults::{Fault, Plan, Point};
use sqlx::Connection as _;

use super::WRITE_DEADLINE;
use super::schedule::Rng;

#[derive(Debug)]
pub(super) struct FaultPlan {
    pub(super) rng: Mutex<Rng>,
    pub(super) rate: u64,
    pub(super) points: Vec<Point>,
    pub(super) kinds: Vec<Fault>,
    /// Faults strike only while this is set (off for the healing at the end).
    pub(super) on: AtomicBool,
    /// Every PostgreSQL statement fails while this is set.
    pub(super) outage: AtomicBool,
    /// The schedule's database (whose connections a kill terminates) and the cluster.
    pub(super) database: String,
    pub(super) admin_url: String,
    pub(super) struck: Mutex<BTreeMap<(Point, Fault), u64>>,
}

impl Plan for FaultPlan {
    fn at(&self, point: Point) -> Option<Fault> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let fault = if self.outage.load(Ordering::Relaxed) && point.is_postgres() {
            Some(Fault::FailBefore)
        } else {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            // The replay's statements run far less often than the live writes: three
            // times the rate, so that they meet faults as often.
            let rate = match point {
                Point::PgWrite | Point::PgPing | Point::JournalAppend => self.rate,
                _ => (self.rate * 3).min(600),
            };
            (self.points.contains(&point) && rng.below(1000) < rate).then(|| rng.pick(&self.kinds))
        }?;
        *self
            .struck
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((point, fault))
            .or_default() += 1;
        Some(fault)
    }

    fn hang(&self, point: Point) -> Duration {
        match point {
            // Past a replay step's deadline (four writes').
            Point::PgReplayBegin
            | Point::PgReplaySettle
            | Point::PgReplayWrite
            | Point::PgReplayCommit
            | Point::JournalTake => WRITE_DEADLINE * 5,
            _ => WRITE_DEADLINE * 2,
        }
    }

    fn kill_connections(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND application_name = 'callhook'",
                )
                .bind(&self.database)
                .execute(&mut conn)
                .await;
                let _ = conn.close().await;
            }
        })
    }
}
