//! `callhook reconcile`, and the same inside `serve`: Tencent keeps its own record of every
//! call for 7 days; fetching it fills in the calls whose callbacks never arrived (an outage,
//! a wrong URL in the console, a client too old to send them) and flags where the
//! callbacks and the record disagree (docs/src/reconcile.md).
//!
//! - [`fetch`]: one app and window, page by page, resumable;
//! - [`output`]: what the command prints;
//! - [`task`]: the supervised task of `serve`.

pub mod fetch;
pub mod output;
pub mod task;

use anyhow::Context as _;

use crate::cli::ReconcileFormat;
use crate::config::{AppSettings, ReconcileJob};
use crate::store::{RunKey, Store, Trigger};
use crate::tencent::{Client, Credentials};

pub use fetch::{AppReport, reconcile_app};

/// The REST client of an app that has a secret key.
pub fn client_for(app: &AppSettings, rate: f64) -> anyhow::Result<Client> {
    let key = app
        .api
        .secret_key
        .as_ref()
        .with_context(|| format!("app {} has no secret key", app.sdkappid))?;
    Client::new(
        &app.api.endpoint.base_url(),
        Credentials::new(app.sdkappid, &app.api.admin_identifier, key.expose()),
        rate,
    )
}

/// A reconcile that did not succeed for every app.
#[derive(Debug, thiserror::Error)]
#[error("reconcile failed for {0}")]
pub struct Failed(pub String);

/// `callhook reconcile`: every app of the job, one after the other, then the table (or
/// JSON). An error when any app failed (after printing what the others found).
pub async fn run(job: ReconcileJob) -> anyhow::Result<()> {
    let store = Store::connect(&crate::config::DatabaseSettings::new(job.db.expose()))
        .await
        .with_context(|| format!("opening {}", job.db.redacted()))?;
    store.migrate(std::time::Duration::from_secs(600)).await?;
    let mut reports = Vec::with_capacity(job.apps.len());
    for app in &job.apps {
        let client = client_for(app, job.rate)?;
        let key = RunKey {
            sdkappid: app.sdkappid,
            from: job.window.from,
            to: job.window.to,
            page_size: job.page_size,
            trigger: Trigger::Command,
        };
        reports.push(reconcile_app(&store, &client, key).await);
    }
    // The records change calls' days and outcomes: fold them into the daily rollups now,
    // so call_stats_daily shows them without waiting for a running service's rollup task.
    if let Err(e) = store.rollup_catch_up().await {
        tracing::warn!(error = %e, "the daily rollups are not updated yet; `callhook serve` will");
    }
    store.close().await;
    match job.format {
        ReconcileFormat::Table => print!("{}", output::table(&reports)),
        ReconcileFormat::Json => println!("{}", output::json(&reports)),
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.status != "ok")
        .map(|r| {
            format!(
                "app {}: {}",
                r.sdkappid,
                r.error.as_deref().unwrap_or("unknown error")
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failed(failed.join("; ")).into())
    }
}
