//! The read behind the room check (src/room_check.rs): TRTC room, media and recording
//! callbacks of a window of arrival times, counted per app and family, and of them those
//! without a known call. Each backend's SQL is in its own file below; both read
//! `call_events` by arrival time alone (its `received_at` index), so a check costs the rows
//! of its window and lookback, whatever the history's length.

mod postgres;
mod sqlite;

use crate::protocol::Millis;

use super::{Store, StoreError};

/// What one check reads, in Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomWindow {
    /// The configured apps: callbacks of any other app are left out.
    pub apps: Vec<i64>,
    /// The room callbacks judged: those that arrived from `from` (included) to `to`
    /// (excluded).
    pub from: Millis,
    pub to: Millis,
    /// The call callbacks that make calls known: those that arrived from `calls_from`
    /// (included) to `calls_to` (excluded, the time of judging).
    pub calls_from: Millis,
    pub calls_to: Millis,
    /// How far from a call's span a room callback's time may be and still be the call's.
    pub margin_ms: i64,
}

/// The judged room callbacks of one app and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCount {
    pub sdkappid: i64,
    /// `room`, `media` or `recording`.
    pub family: String,
    /// Callbacks judged (with a room id).
    pub checked: i64,
    /// Of those, the ones no known call claims.
    pub without_call: i64,
}

impl From<(i64, String, i64, i64)> for RoomCount {
    /// The columns of the backends' query, in order.
    fn from(row: (i64, String, i64, i64)) -> Self {
        let (sdkappid, family, checked, without_call) = row;
        Self {
            sdkappid,
            family,
            checked,
            without_call,
        }
    }
}

impl Store {
    /// Per app and family, the room callbacks of `w` and those of them without a known
    /// call: no call callback of the same app, among those of `w`'s call window, names
    /// their room with a span (the call's earliest start to its latest end, over those
    /// callbacks) that comes within `w.margin_ms` of their event time (their arrival when
    /// they have none). Apps and families without callbacks are not returned.
    pub async fn rooms_without_call(&self, w: &RoomWindow) -> Result<Vec<RoomCount>, StoreError> {
        if w.apps.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Postgres(s) => s.rooms_without_call(w).await,
            Self::Sqlite(s) => s.rooms_without_call(w).await,
        }
    }
}
