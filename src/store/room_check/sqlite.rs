//! SQLite's SQL for the room check. Times are ISO-8601 UTC text of one width, as in
//! call_events, so they compare as text; the margin is applied with `strftime`.

use super::{RoomCount, RoomWindow};
use crate::protocol::Millis;
use crate::store::StoreError;
use crate::store::sqlite::{SqliteStore, classify, iso_millis};

/// Parameters: 1 the apps (a JSON array), 2 and 3 the judged window, 4 and 5 the call
/// window, 6 and 7 the margin as `strftime` modifiers (`-600.000 seconds`, `+600.000
/// seconds`). Both windows are ranges of `received_at` (indexed); the call callbacks read
/// are only those naming a judged room.
const CHECK: &str = "WITH judged AS (
        SELECT e.sdkappid, e.family, e.room_id, coalesce(e.event_time, e.received_at) AS t
        FROM call_events e
        WHERE e.received_at >= ?2 AND e.received_at < ?3
          AND e.family IN ('room', 'media', 'recording')
          AND e.room_id IS NOT NULL
          AND e.sdkappid IN (SELECT value FROM json_each(?1))),
    calls AS (
        SELECT c.sdkappid, c.room_id,
               strftime('%Y-%m-%dT%H:%M:%fZ',
                        min(coalesce(c.start_call_ts, c.event_time, c.received_at)), ?6)
                   AS span_start,
               strftime('%Y-%m-%dT%H:%M:%fZ',
                        max(coalesce(c.end_ts, c.event_time, c.received_at)), ?7)
                   AS span_end
        FROM call_events c
        WHERE c.received_at >= ?4 AND c.received_at < ?5
          AND c.family IN ('status', 'event', 'v4') AND c.trtc_event_type IS NULL
          AND c.call_id IS NOT NULL AND c.room_id IS NOT NULL
          AND (c.sdkappid, c.room_id) IN (SELECT sdkappid, room_id FROM judged)
        GROUP BY c.sdkappid, c.call_id, c.room_id),
    checked AS (
        SELECT sdkappid, family, count(*) AS n FROM judged GROUP BY sdkappid, family),
    claimed AS (
        SELECT j.sdkappid, j.family, count(*) AS n
        FROM judged j
        WHERE EXISTS (SELECT 1 FROM calls k
                      WHERE k.sdkappid = j.sdkappid AND k.room_id = j.room_id
                        AND j.t >= k.span_start AND j.t <= k.span_end)
        GROUP BY j.sdkappid, j.family)
    SELECT c.sdkappid, c.family, c.n, c.n - coalesce(k.n, 0)
    FROM checked c
    LEFT JOIN claimed k ON k.sdkappid = c.sdkappid AND k.family = c.family
    ORDER BY 1, 2";

fn iso(ms: Millis) -> Result<String, StoreError> {
    iso_millis(ms).ok_or_else(|| StoreError::Data(format!("{ms} ms is not a time SQLite stores")))
}

/// `±seconds` as a `strftime` modifier, to the millisecond.
fn modifier(sign: char, ms: i64) -> String {
    format!("{sign}{}.{:03} seconds", ms / 1000, ms % 1000)
}

impl SqliteStore {
    pub(crate) async fn rooms_without_call(
        &self,
        w: &RoomWindow,
    ) -> Result<Vec<RoomCount>, StoreError> {
        let apps = serde_json::to_string(&w.apps)
            .map_err(|e| StoreError::Other(format!("the apps as JSON: {e}")))?;
        let margin = w.margin_ms.max(0);
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(CHECK)
            .bind(apps)
            .bind(iso(w.from)?)
            .bind(iso(w.to)?)
            .bind(iso(w.calls_from)?)
            .bind(iso(w.calls_to)?)
            .bind(modifier('-', margin))
            .bind(modifier('+', margin))
            .fetch_all(self.pool())
            .await
            .map_err(classify)?;
        Ok(rows.into_iter().map(RoomCount::from).collect())
    }
}
