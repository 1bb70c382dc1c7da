//! The database's health as the writers see it. Transitions are logged once each (not once
//! per request) and exported as `callhook_database_up`.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
        }
    }
}

impl DbHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records a successful database round trip.
    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("database is reachable again; writing events normally");
            metrics::gauge!(crate::metrics::DATABASE_UP).set(1.0);
        }
    }

    /// Records that the database could not take a write or answer a ping.
    pub fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(%reason, "database unavailable; callbacks are answered 503 (or spooled) until it returns");
            metrics::gauge!(crate::metrics::DATABASE_UP).set(0.0);
        }
    }
}
