//! The rollup task of `callhook serve`: folds the calls writes have queued into the daily
//! rollups (`rollup_days`, `rollup_talk`; src/store/rollup.rs), pass after pass (each
//! followed by a rest three times its length, [`PACE`], and of at least [`BUSY_REST`]
//! while callbacks wait for a writer) while calls are queued, and every [`IDLE`]
//! otherwise. Replicas on one PostgreSQL take turns
//! (an advisory lock); on SQLite a pass takes the write lock for a few milliseconds.

use std::time::Duration;

use std::sync::Arc;

use crate::health::DbHealth;
use crate::ingest::Ingest;
use crate::logging::Complaint;
use crate::metrics as m;
use crate::store::Store;

/// How long the task waits when nothing was queued.
pub const IDLE: Duration = Duration::from_millis(500);

/// After a pass, the task rests this many times as long as the pass took, so that it
/// never takes more than a quarter of its time from the callbacks: under a burst the
/// rollups fall behind (the lag metric says by how much) rather than the answers slowing,
/// and catch up after it. On SQLite the rest also lets the writer take the write lock
/// between passes (its busy wait would otherwise lose the lock to the next pass).
const PACE: u32 = 3;

/// The least rest after a pass while callbacks wait for a writer: the callbacks first,
/// the rollups in the gaps (a pass of a thousand calls a second still folds far more
/// calls than any one deployment makes; a burst beyond it is folded after it).
const BUSY_REST: Duration = Duration::from_secs(1);

/// Queue entries one pass takes: a pass holds SQLite's write lock while it runs, so it is
/// kept short there.
fn pass_limit(store: &Store) -> i64 {
    if store.is_remote() { 1000 } else { 64 }
}

/// Runs passes for ever (the supervisor restarts it should it panic), while the database
/// is up and migrated.
#[tracing::instrument(name = "rollup", skip_all)]
pub async fn run(store: Store, health: Arc<DbHealth>, ingest: Ingest) {
    let limit = pass_limit(&store);
    let mut complaint = Complaint::default();
    loop {
        health.ready(IDLE).await;
        let started = std::time::Instant::now();
        match store.rollup_pass(limit).await {
            Ok(0) => {
                metrics::gauge!(m::ROLLUP_LAG).set(0.0);
                tokio::time::sleep(IDLE).await;
            }
            Ok(n) => {
                metrics::counter!(m::ROLLUP_CALLS).increment(n as u64);
                if let Ok((_, lag)) = store.rollup_backlog().await {
                    metrics::gauge!(m::ROLLUP_LAG).set(lag);
                }
                let mut rest = started.elapsed() * PACE;
                if ingest.depth().0 > 0 {
                    rest = rest.max(BUSY_REST);
                }
                tokio::time::sleep(rest).await;
            }
            Err(e) => {
                metrics::counter!(m::ROLLUP_ERRORS).increment(1);
                // The lag keeps growing while passes fail: say so (the alert watches it).
                if let Ok((_, lag)) = store.rollup_backlog().await {
                    metrics::gauge!(m::ROLLUP_LAG).set(lag);
                }
                complaint.log(
                    &e.to_string(),
                    "cannot fold queued calls into the rollups yet",
                );
                tokio::time::sleep(IDLE * 2).await;
            }
        }
    }
}
