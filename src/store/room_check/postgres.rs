//! PostgreSQL's SQL for the room check. Times travel as bigint milliseconds and become
//! timestamptz here, exactly.

use super::{RoomCount, RoomWindow};
use crate::store::StoreError;
use crate::store::postgres::{PgStore, classify};

const MS: &str = "interval '1 millisecond'";

fn ts(param: &str) -> String {
    format!("(timestamptz 'epoch' + {param} * {MS})")
}

/// Parameters: 1 the apps, 2 and 3 the judged window, 4 and 5 the call window, 6 the
/// margin in ms. Both windows are ranges of `received_at` (an index of every partition);
/// the call callbacks read are only those naming a judged room.
fn check_sql() -> String {
    format!(
        "WITH judged AS (
             SELECT e.sdkappid, e.family, e.room_id, coalesce(e.event_time, e.received_at) AS t
             FROM call_events e
             WHERE e.received_at >= {from} AND e.received_at < {to}
               AND e.family IN ('room', 'media', 'recording')
               AND e.room_id IS NOT NULL AND e.sdkappid = ANY($1)),
         calls AS (
             SELECT c.sdkappid, c.room_id,
                    min(coalesce(c.start_call_ts, c.event_time, c.received_at)) - $6 * {MS}
                        AS span_start,
                    max(coalesce(c.end_ts, c.event_time, c.received_at)) + $6 * {MS}
                        AS span_end
             FROM call_events c
             WHERE c.received_at >= {calls_from} AND c.received_at < {calls_to}
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
         ORDER BY 1, 2",
        from = ts("$2"),
        to = ts("$3"),
        calls_from = ts("$4"),
        calls_to = ts("$5"),
    )
}

impl PgStore {
    pub(crate) async fn rooms_without_call(
        &self,
        w: &RoomWindow,
    ) -> Result<Vec<RoomCount>, StoreError> {
        // Read-only and without JIT: the planner's estimate for a busy hour is large
        // enough to start JIT compilation, which takes longer than the query itself
        // (seconds against about one at a million calls a day).
        let mut tx = self.pool().begin().await.map_err(classify)?;
        for setting in ["SET TRANSACTION READ ONLY", "SET LOCAL jit = off"] {
            sqlx::query(setting)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(&check_sql())
            .bind(&w.apps)
            .bind(w.from)
            .bind(w.to)
            .bind(w.calls_from)
            .bind(w.calls_to)
            .bind(w.margin_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(rows.into_iter().map(RoomCount::from).collect())
    }
}
