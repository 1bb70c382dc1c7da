//! The database's health as the writers see it. Transitions are logged once each (not once
//! per request) and exported as `callhook_database_up`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
    /// Whether the schema is known to be in place (migrations applied, or not ours to
    /// apply). Until then the database never counts as up, whatever answers a ping.
    schema: AtomicBool,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self::new(true)
    }
}

impl DbHealth {
    /// Health as known at start-up: up for SQLite (opened and migrated before serving);
    /// down for PostgreSQL until the first probe (and the migrations) succeed, so that
    /// callbacks are journaled, not failed, while it is unreachable.
    pub fn new(up: bool) -> Self {
        metrics::gauge!(crate::metrics::DATABASE_UP).set(if up { 1.0 } else { 0.0 });
        Self {
            up: AtomicBool::new(up),
            schema: AtomicBool::new(up),
        }
    }

    /// Records that the schema is in place; the next successful round trip marks the
    /// database up.
    pub fn schema_ready(&self) {
        self.schema.store(true, Ordering::Relaxed);
    }

    pub fn has_schema(&self) -> bool {
        self.schema.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Returns once the database is up and migrated, looking every `poll` until then: what
    /// the background tasks wait for before each run.
    pub async fn ready(&self, poll: Duration) {
        while !(self.has_schema() && self.is_up()) {
            tokio::time::sleep(poll).await;
        }
    }

    /// Records a successful database round trip (ignored until the schema is in place).
    pub fn mark_up(&self) {
        if self.has_schema() && !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("database is reachable again; writing events normally");
            metrics::gauge!(crate::metrics::DATABASE_UP).set(1.0);
        }
    }

    /// Records that the database could not take a write or answer a ping.
    pub fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(%reason, "database unavailable; callbacks are journaled (or answered 503) until it returns");
            metrics::gauge!(crate::metrics::DATABASE_UP).set(0.0);
        }
    }
}
