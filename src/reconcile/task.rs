//! The reconcile task of `serve` (`[reconcile] interval`): every interval, each app with a
//! secret key is reconciled over the last `window`, widened back to the end of its last
//! successful run's window when that is older, so the first run after callhook or its
//! database was down covers the whole gap (up to 7 days). Each run is recorded in
//! `reconcile_runs` and counted in the metrics; a failure is logged and the next interval
//! tries again.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AppSettings, ReconcileSettings, Window};
use crate::health::DbHealth;
use crate::metrics as m;
use crate::protocol::Millis;
use crate::store::{LastRun, RunKey, Store, Trigger};

use super::{AppReport, client_for, reconcile_app};

/// How long before the 7-day edge a widened window stops: the time a run takes to page
/// through a week of records (thousands of pages at the default 20 a second) must not
/// push its start past what Tencent keeps, or the run stops (`WindowExpired`).
const EDGE_MARGIN_MS: Millis = 3_600_000;
/// How often the task looks whether the database is ready, before its first run.
const READY_POLL: Duration = Duration::from_secs(1);

/// The window of a run at `now`: the last `window`, from the end of the last successful
/// run's window when that is earlier, never more than 7 days back.
pub fn window_for(now: Millis, window: Duration, last_ok: Option<LastRun>) -> Window {
    let kept = crate::config::RECORDS_KEPT.as_millis() as Millis;
    let mut from = now - window.as_millis() as Millis;
    if let Some(last) = last_ok {
        from = from.min(last.window_to);
    }
    Window {
        from: from.max(now - kept + EDGE_MARGIN_MS),
        to: now,
    }
}

/// Runs until aborted: the apps with a secret key, every `settings.interval` (the task is
/// not started without one).
#[tracing::instrument(name = "reconcile", skip_all)]
pub async fn run_task(
    store: Store,
    apps: Vec<AppSettings>,
    settings: ReconcileSettings,
    health: Arc<DbHealth>,
) {
    let Some(every) = settings.interval else {
        // Not started without an interval (see `Application`); never returns, if it were.
        return std::future::pending().await;
    };
    let apps: Vec<AppSettings> = apps
        .into_iter()
        .filter(|a| a.api.secret_key.is_some())
        .collect();
    for app in &apps {
        let id = app.sdkappid.to_string();
        metrics::gauge!(m::RECONCILE_INTERVAL, "sdkappid" => id).set(every.as_secs_f64());
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        health.ready(READY_POLL).await;
        for app in &apps {
            once(&store, app, &settings).await;
        }
    }
}

/// One run of one app, recorded in the metrics and the log.
async fn once(store: &Store, app: &AppSettings, settings: &ReconcileSettings) {
    let id = app.sdkappid.to_string();
    let last = match store.last_successful_run(app.sdkappid).await {
        Ok(last) => last,
        Err(e) => {
            metrics::counter!(m::RECONCILE_RUNS, "sdkappid" => id, "outcome" => "failed")
                .increment(1);
            tracing::warn!(sdkappid = app.sdkappid, error = %e, "reconcile: cannot read the last run");
            return;
        }
    };
    let window = window_for(crate::now_millis(), settings.window, last);
    let report = match client_for(app, settings.rate) {
        Ok(client) => {
            let key = RunKey {
                sdkappid: app.sdkappid,
                from: window.from,
                to: window.to,
                page_size: settings.page_size,
                trigger: Trigger::Serve,
            };
            reconcile_app(store, &client, key).await
        }
        Err(e) => {
            tracing::warn!(sdkappid = app.sdkappid, error = %e, "reconcile: no client");
            return;
        }
    };
    record(&report);
}

/// The metrics and the log line of a run.
fn record(r: &AppReport) {
    let id = r.sdkappid.to_string();
    let outcome = if r.status == "ok" { "ok" } else { "failed" };
    metrics::counter!(m::RECONCILE_RUNS, "sdkappid" => id.clone(), "outcome" => outcome)
        .increment(1);
    match (&r.findings, &r.error) {
        (Some(f), _) => {
            let now = crate::now_millis() as f64 / 1000.0;
            metrics::gauge!(m::RECONCILE_LAST_SUCCESS, "sdkappid" => id.clone()).set(now);
            metrics::gauge!(m::RECONCILE_RECORDS, "sdkappid" => id.clone())
                .set((r.records + r.records_before) as f64);
            metrics::gauge!(m::RECONCILE_RECORD_ONLY, "sdkappid" => id).set(f.record_only as f64);
            tracing::info!(
                sdkappid = r.sdkappid,
                from = %r.from,
                to = %r.to,
                records = r.records,
                record_only = f.record_only,
                callbacks_only = f.callbacks_only,
                disagree = f.disagree,
                requests = r.requests,
                "reconciled with Tencent's call records"
            );
        }
        (None, error) => tracing::warn!(
            sdkappid = r.sdkappid,
            from = %r.from,
            to = %r.to,
            error = error.as_deref().unwrap_or("unknown"),
            "reconcile failed; trying again at the next interval"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_765_000_000_000;
    const H: Millis = 3_600_000;

    #[test]
    fn the_window_widens_back_to_the_last_success_within_seven_days() {
        let two_hours = Duration::from_secs(7200);
        assert_eq!(
            window_for(NOW, two_hours, None),
            Window {
                from: NOW - 2 * H,
                to: NOW
            }
        );
        // The last run ended an hour ago: the usual window covers it.
        let recent = LastRun {
            window_to: NOW - H,
            started_at: NOW - H,
        };
        assert_eq!(window_for(NOW, two_hours, Some(recent)).from, NOW - 2 * H);
        // Down for a day: the first run covers the day.
        let day = LastRun {
            window_to: NOW - 24 * H,
            started_at: NOW - 24 * H,
        };
        assert_eq!(window_for(NOW, two_hours, Some(day)).from, NOW - 24 * H);
        // Down for ten days: as far back as Tencent keeps records, less an hour.
        let long = LastRun {
            window_to: NOW - 240 * H,
            started_at: NOW - 240 * H,
        };
        let w = window_for(NOW, two_hours, Some(long));
        assert_eq!(w.from, NOW - 7 * 24 * H + H);
        assert!(w.check(NOW).is_ok());
    }
}
