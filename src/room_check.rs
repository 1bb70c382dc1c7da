//! The room check task of `callhook serve`: how many of TRTC's room, media and recording
//! callbacks came for rooms no known call used. Every callback of a TUICallKit call's room
//! has a call beside it, so such callbacks usually mean a misconfigured app: call
//! callbacks sent under another SDKAppID, a call callback URL not registered, or call
//! callbacks lost.
//!
//! The definition (docs/src/metrics.md says it too). Every [`EVERY`] the task judges the
//! room callbacks (families `room`, `media`, `recording`; those with a room id) of the
//! configured apps that arrived in the hour that ended [`JUDGED_AFTER`] ago. A callback is
//! *without a known call* when no call callback (`status`, `event` or `v4`, not
//! `Call.CallbackAfterRecordChanged`) of the same app, arrived from [`LOOKBACK`] before
//! that hour up to the check, names its room for a call whose span (its earliest start,
//! else event time, else arrival, to its latest end, likewise, over those callbacks) comes
//! within [`MARGIN`] of the callback's event time (its arrival when it has none). The
//! half hour before judging lets the call callbacks of calls up to about half an hour long
//! arrive (the status family arrives after the call); each check judges the whole hour
//! again, so a call callback that arrives later still clears its room's callbacks at the
//! next check. A call still running when its room callbacks are judged, of an app that
//! receives only end-of-call callbacks, has them counted until its end arrives.
//!
//! Two gauges per configured app and family: the callbacks judged, and of them those
//! without a known call. They are read from the database, so every replica reports the
//! same values (aggregate with `max`). The read takes the callbacks of two and a half
//! hours by arrival time (an index), and of the call families only those naming a judged
//! room; nothing is added to the request path.

use std::sync::Arc;
use std::time::Duration;

use crate::health::DbHealth;
use crate::metrics as m;
use crate::protocol::Millis;
use crate::store::{RoomCount, RoomWindow, Store};
use crate::supervisor::{Period, periodically};

/// Between two checks.
pub const EVERY: Duration = Duration::from_secs(300);
/// After a failed check.
const RETRY: Duration = Duration::from_secs(60);
/// How old a room callback is (by arrival) before it is judged.
pub const JUDGED_AFTER: Duration = Duration::from_secs(30 * 60);
/// The span of arrival times judged by each check.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// How far before the judged window the call callbacks that make a call known are read.
pub const LOOKBACK: Duration = Duration::from_secs(3600);
/// How far from a call's span a room callback may be and still be the call's (room
/// callbacks come before the first call callback, recordings finish uploading after the
/// last, and the two senders' clocks differ).
pub const MARGIN: Duration = Duration::from_secs(600);

/// The families judged, and the `family` label's values.
pub const FAMILIES: [&str; 3] = ["room", "media", "recording"];

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

/// What a check at `now_ms` reads.
pub fn window(apps: &[i64], now_ms: Millis) -> RoomWindow {
    let to = now_ms - ms(JUDGED_AFTER);
    let from = to - ms(WINDOW);
    RoomWindow {
        apps: apps.to_vec(),
        from,
        to,
        calls_from: from - ms(LOOKBACK),
        calls_to: now_ms,
        margin_ms: ms(MARGIN),
    }
}

/// One check as of `now_ms`: sets both gauges of every app and family (0 for those with
/// no callback judged) and returns what it read.
pub async fn run_once(
    store: &Store,
    apps: &[i64],
    now_ms: Millis,
) -> anyhow::Result<Vec<RoomCount>> {
    let w = window(apps, now_ms);
    let counts = store
        .rooms_without_call(&w)
        .await
        .map_err(|e| anyhow::anyhow!("counting the room callbacks without a known call: {e}"))?;
    for &app in apps {
        for family in FAMILIES {
            let found = counts
                .iter()
                .find(|c| c.sdkappid == app && c.family == family);
            let (checked, without) = found.map_or((0, 0), |c| (c.checked, c.without_call));
            let sdkappid = app.to_string();
            metrics::gauge!(m::ROOM_CALLBACKS_CHECKED, "sdkappid" => sdkappid.clone(), "family" => family)
                .set(checked as f64);
            metrics::gauge!(m::ROOM_CALLBACKS_WITHOUT_CALL, "sdkappid" => sdkappid, "family" => family)
                .set(without as f64);
        }
    }
    Ok(counts)
}

/// Runs for ever (the supervisor restarts it should it panic), while the database is up
/// and migrated. A failed check leaves the gauges at the last successful one's values.
#[tracing::instrument(name = "room_check", skip_all)]
pub async fn run(store: Store, health: Arc<DbHealth>, apps: Vec<i64>) {
    let period = Period {
        every: EVERY,
        retry: RETRY,
        failed: "room check failed; trying again in a minute",
    };
    let (store, apps) = (&store, &apps);
    periodically(&health, period, move || {
        run_once(store, apps, crate::now_millis())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_judges_the_hour_that_ended_half_an_hour_ago() {
        let now = 10 * 3_600_000;
        let w = window(&[1], now);
        assert_eq!(w.to, now - 1_800_000);
        assert_eq!(w.from, now - 5_400_000);
        assert_eq!(w.calls_from, now - 9_000_000);
        assert_eq!(w.calls_to, now);
        assert_eq!(w.margin_ms, 600_000);
    }
}
