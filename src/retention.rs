//! The history upkeep task of `callhook serve`: every hour, makes the coming weeks'
//! partitions of `call_events` (PostgreSQL) and, with `[retention] days`, removes the raw
//! history older than that (src/store/retention.rs). A failed run is tried again a minute
//! later. Replicas may all run it: every step is idempotent and takes turns on its locks.

use std::sync::Arc;
use std::time::Duration;

use crate::health::DbHealth;
use crate::metrics as m;
use crate::store::{Pace, Removed, Store, cutoff_day};
use crate::supervisor::{Period, periodically};

/// Between two runs.
pub const EVERY: Duration = Duration::from_secs(3600);
/// After a failed run.
const RETRY: Duration = Duration::from_secs(60);

/// One run: partitions ahead, then retention when configured. Returns what was removed.
pub async fn run_once(
    store: &Store,
    retention_days: Option<u32>,
    now_ms: i64,
) -> anyhow::Result<Removed> {
    let today = cutoff_day(now_ms, 0);
    let made = store
        .make_partitions(today)
        .await
        .map_err(|e| anyhow::anyhow!("making the coming weeks' partitions: {e}"))?;
    if made > 0 {
        tracing::info!(
            partitions = made,
            "made the coming weeks' partitions of call_events"
        );
    }
    let Some(days) = retention_days else {
        return Ok(Removed::default());
    };
    let cutoff = cutoff_day(now_ms, days);
    let removed = store
        .remove_before(cutoff, Pace::for_store(store))
        .await
        .map_err(|e| anyhow::anyhow!("removing the history before {cutoff}: {e}"))?;
    for (table, n) in [
        ("events", removed.events),
        ("rejected", removed.rejected),
        ("forwarded", removed.forwarded),
        ("records", removed.records),
        ("rollup_calls", removed.rollup_calls),
    ] {
        metrics::counter!(m::RETENTION_REMOVED, "table" => table).increment(n);
    }
    metrics::counter!(m::RETENTION_PARTITIONS).increment(removed.partitions);
    if removed.total_rows() > 0 {
        tracing::info!(
            before = %cutoff,
            partitions = removed.partitions,
            events = removed.events,
            rejected = removed.rejected,
            forwarded = removed.forwarded,
            records = removed.records,
            "retention removed the history older than {days} days"
        );
    }
    Ok(removed)
}

/// Runs for ever (the supervisor restarts it should it panic), while the database is up
/// and migrated.
#[tracing::instrument(name = "history", skip_all)]
pub async fn run(store: Store, health: Arc<DbHealth>, retention_days: Option<u32>) {
    let period = Period {
        every: EVERY,
        retry: RETRY,
        failed: "history upkeep failed; trying again in a minute",
    };
    let store = &store;
    periodically(&health, period, move || async move {
        let done = run_once(store, retention_days, crate::now_millis()).await;
        match &done {
            Ok(_) => {
                metrics::gauge!(m::UPKEEP_LAST_SUCCESS).set(crate::now_millis() as f64 / 1000.0)
            }
            Err(_) => metrics::counter!(m::UPKEEP_ERRORS).increment(1),
        }
        done
    })
    .await
}
