//! The cap on refused deliveries kept in `rejected_deliveries` that anyone could have
//! caused: those refused before their sender was authenticated (a failed TRTC `Sign`, or a
//! body too large to check one). Without it, every forged request to `/trtc` would add a
//! row. At most `auth.failed_signatures_kept_per_minute` distinct deliveries are kept per
//! app and minute (a fixed window, counted from the first one); a retry of one already
//! kept in the window is still counted on its row. Past the cap a delivery gets the same
//! answer, is not kept, and is counted in `callhook_rejected_records_capped_total`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics as m;
use crate::protocol::DedupeKey;
use crate::protocol::reply::ErrorCode;

/// The window the cap counts in.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Per app, the distinct unauthenticated refusals kept in the current window.
pub struct RejectionCap {
    limit: usize,
    apps: Mutex<HashMap<i64, Window>>,
}

struct Window {
    started: Instant,
    kept: HashSet<DedupeKey>,
    /// Whether the cap was reached in this window (it is logged once per window).
    full: bool,
}

impl RejectionCap {
    /// At most `limit` distinct refusals per app and window (0: none is kept).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit as usize,
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refused delivery of `sdkappid`, identified by its `rejected_deliveries`
    /// dedupe key, may be kept now. The map holds only configured apps (nothing else gets
    /// this far), each with at most `limit` keys.
    pub fn admit(&self, sdkappid: i64, key: &DedupeKey, code: ErrorCode) -> bool {
        self.admit_at(sdkappid, key, code, Instant::now())
    }

    fn admit_at(&self, sdkappid: i64, key: &DedupeKey, code: ErrorCode, now: Instant) -> bool {
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        let window = apps.entry(sdkappid).or_insert_with(|| Window {
            started: now,
            kept: HashSet::new(),
            full: false,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                kept: HashSet::new(),
                full: false,
            };
        }
        if window.kept.contains(key) {
            return true;
        }
        if window.kept.len() < self.limit {
            window.kept.insert(*key);
            return true;
        }
        metrics::counter!(m::REJECTED_RECORDS_CAPPED, "reason" => code.label()).increment(1);
        if !window.full {
            window.full = true;
            tracing::warn!(
                sdkappid,
                limit = self.limit,
                "more refused deliveries that failed authentication this minute than auth.failed_signatures_kept_per_minute: the rest of the minute's are answered the same but not kept in rejected_deliveries"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: ErrorCode = ErrorCode::AuthFailed;

    fn key(n: u8) -> DedupeKey {
        [n; 16]
    }

    #[test]
    fn at_most_the_limit_per_app_and_window() {
        let cap = RejectionCap::new(2);
        let t0 = Instant::now();
        assert!(cap.admit_at(1, &key(1), AUTH, t0));
        assert!(cap.admit_at(1, &key(2), AUTH, t0));
        assert!(!cap.admit_at(1, &key(3), AUTH, t0), "over the cap");
        // A retry of one already kept: its row counts it, no new row.
        assert!(cap.admit_at(1, &key(1), AUTH, t0));
        // Another app has its own cap.
        assert!(cap.admit_at(2, &key(3), AUTH, t0));
        // The next window starts afresh.
        let later = t0 + WINDOW;
        assert!(cap.admit_at(1, &key(3), AUTH, later));
        assert!(cap.admit_at(1, &key(4), AUTH, later));
        assert!(!cap.admit_at(1, &key(5), AUTH, later));
    }

    #[test]
    fn zero_keeps_none() {
        let cap = RejectionCap::new(0);
        assert!(!cap.admit(1, &key(1), AUTH));
    }
}
