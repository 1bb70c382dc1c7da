//! The backlog gauges: pending entries, the oldest one's age and dead entries per
//! destination, read from the database (through its partial indexes) every few seconds.
//! Every replica reports the same numbers: aggregate them with `max`, not `sum`.

use std::time::Duration;

use crate::metrics as m;
use crate::store::Store;

/// How often the gauges are read.
pub(super) const PERIOD: Duration = Duration::from_secs(5);

/// Refreshes the gauges of `destinations` every `period` until aborted; a destination
/// without entries reads 0. While the database does not answer, the gauges keep their
/// last values.
pub(super) async fn run(store: Store, destinations: Vec<String>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(Ok(backlog)) = tokio::time::timeout(period, store.backlog()).await else {
            continue;
        };
        for name in &destinations {
            let b = backlog.iter().find(|b| &b.destination == name);
            let label = || [("destination", name.clone())];
            metrics::gauge!(m::FORWARD_BACKLOG, &label()).set(b.map_or(0.0, |b| b.pending as f64));
            metrics::gauge!(m::FORWARD_OLDEST_AGE, &label()).set(
                b.and_then(|b| b.oldest_pending_seconds)
                    .unwrap_or(0.0)
                    .max(0.0),
            );
            metrics::gauge!(m::FORWARD_DEAD_ENTRIES, &label())
                .set(b.map_or(0.0, |b| b.dead as f64));
        }
    }
}
