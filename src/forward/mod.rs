//! Forwarding: stored events to the app's own services, signed with Standard Webhooks.
//!
//! The outbox entries are written by the store with the events (`crate::store`'s
//! `outbox.rs`); this module delivers them:
//! - `worker.rs`: one supervised worker per destination claims due entries in bounded
//!   batches, sends them, records each outcome and schedules the next attempt;
//! - `attempt.rs`: one signed `POST` and what came of it;
//! - `message.rs`: the body of an event's message;
//! - `upkeep.rs`: the backlog gauges, read from the database;
//! - `status.rs`: `callhook forward status` and `callhook forward retry`.

mod attempt;
mod message;
mod status;
mod upkeep;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{DatabaseSettings, Destination};
use crate::store::{Route, Routes, Store};
use crate::supervisor::{Lifetime, Supervisor};
pub use attempt::Outcome;
pub use message::{VERSION, body, event_type};
pub use status::{retry, status};
pub use worker::next;

/// The workers' task name in `/readyz` and `callhook_task_restarts_total`.
pub const WORKER_TASK: &str = "forward";
/// The backlog gauges' task name.
pub const UPKEEP_TASK: &str = "forward-upkeep";

/// The routes the store writes entries by: every destination's filters.
pub fn routes(destinations: &[Destination]) -> Arc<Routes> {
    Arc::new(Routes::new(
        destinations
            .iter()
            .map(|d| d.route.clone())
            .collect::<Vec<Route>>(),
    ))
}

/// Starts a worker per destination and the backlog gauges, under `supervisor`, on a pool
/// of their own (a connection per destination and one for the gauges, at most 8), so
/// forwarding never takes a connection the batch writers wait for. `store` is the one the
/// writers use: its commits wake the workers. `poll` is how often a worker looks for due
/// entries when nothing wakes it. Returns the workers' store, to close at shutdown.
pub async fn start(
    supervisor: &mut Supervisor,
    store: &Store,
    database: &DatabaseSettings,
    destinations: &[Destination],
    poll: Duration,
) -> anyhow::Result<Option<Store>> {
    if destinations.is_empty() {
        return Ok(None);
    }
    let own = DatabaseSettings {
        pool_size: (destinations.len() as u32 + 1).min(8),
        ..database.clone()
    };
    let store = Store::connect(&own)
        .await
        .context("connecting the forwarding workers to the database")?
        .with_routes(Arc::clone(store.routes()));
    crate::install_tls_provider();
    for d in destinations {
        let client = reqwest::Client::builder()
            .timeout(d.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callhook/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(d.max_in_flight)
            .build()
            .with_context(|| format!("building the HTTP client of destination {}", d.name()))?;
        let r = &d.route;
        tracing::info!(
            destination = d.name(),
            url = %crate::config::redacted_url(&d.url),
            sdkappids = ?r.sdkappids,
            families = ?r.families,
            commands = ?r.commands,
            results = ?r.results,
            attempts = d.retry_schedule.len(),
            "forwarding"
        );
        let (store, destination) = (store.clone(), Arc::new(d.clone()));
        supervisor.spawn(WORKER_TASK, Lifetime::UntilAborted, move || {
            worker::Worker {
                store: store.clone(),
                destination: Arc::clone(&destination),
                client: client.clone(),
                poll,
            }
            .run()
        });
    }
    let names: Vec<String> = destinations.iter().map(|d| d.name().to_owned()).collect();
    let gauges = store.clone();
    supervisor.spawn(UPKEEP_TASK, Lifetime::UntilAborted, move || {
        upkeep::run(gauges.clone(), names.clone(), upkeep::PERIOD)
    });
    Ok(Some(store))
}
