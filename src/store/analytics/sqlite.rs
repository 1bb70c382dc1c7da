//! SQLite's analytics reads. Days compare as ISO text with the stored times.

use sqlx::sqlite::SqliteRow;

use super::{DayRange, PeriodQuery, RecentEvent, RoomStats, RoomStatsRow, with_app_filter};
use crate::store::StoreError;
use crate::store::sqlite::{SqliteStore, classify};

/// Events stored with notes, by the field their first note names (through the partial
/// index call_events_noted_idx); the days as ISO text compare with `received_at`'s.
const NOTED: &str = r#"
SELECT CASE WHEN instr(notes, ':') > 0 THEN substr(notes, 1, instr(notes, ':') - 1) ELSE notes END AS field,
       count(*)
FROM call_events
WHERE notes IS NOT NULL
  AND received_at >= ?1 AND received_at < ?2
"#;

/// The latest events, newest `?1` by id, returned oldest first. Times are stored as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` text already.
const RECENT_EVENTS: &str = r#"
SELECT id, received_at, sdkappid, family, command, call_id, user_id, role, event,
       call_result, media_type, call_type, client_ip, opt_platform, remote_addr, deliveries,
       last_delivery_at
FROM (
    SELECT * FROM call_events
    WHERE ?2 IS NULL OR sdkappid = ?2
    ORDER BY id DESC
    LIMIT ?1
)
ORDER BY id
"#;

/// Tencent's recorded calls of the period and how many of them arrived as callbacks.
const COMPLETENESS: &str = r#"
SELECT count(*),
       coalesce(sum(EXISTS (SELECT 1 FROM call_events e
                            WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id)), 0)
FROM call_records k
WHERE k.day >= ?1 AND k.day < ?2 AND (?3 IS NULL OR k.sdkappid = ?3)
"#;

/// Whether the period has TRTC room events (through the room index), and the room views.
const HAS_ROOM_EVENTS: &str = r#"
SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'view' AND name = 'call_presence')
   AND EXISTS (
    SELECT 1 FROM call_events
    WHERE family IN ('room', 'media', 'recording')
      AND event_time >= ?1 AND event_time < ?2
      AND (?3 IS NULL OR sdkappid = ?3))
"#;

/// The period's talk time (call callbacks), in-room time (room events) and room-only calls.
const ROOM_STATS: &str = r#"
SELECT t.talk, t.talk_calls, p.in_room, p.in_room_calls, o.room_only
FROM (SELECT CAST(coalesce(sum(talk_seconds), 0) AS REAL) AS talk,
             count(talk_seconds) AS talk_calls
      FROM calls
      WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR sdkappid = ?3)) t,
     (SELECT CAST(coalesce(sum(seconds_in_room), 0) AS REAL) AS in_room,
             count(DISTINCT sdkappid || '/' || call_id) AS in_room_calls
      FROM call_presence
      WHERE source <> 'call_callbacks' AND entered_at >= ?1 AND entered_at < ?2
        AND (?3 IS NULL OR sdkappid = ?3)) p,
     (SELECT count(*) AS room_only
      FROM room_only_calls
      WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR sdkappid = ?3)) o
"#;

impl SqliteStore {
    /// Runs a period query: the period binds as parameters 1 and 2, the app (when asked)
    /// as 3.
    pub(super) async fn period_rows<T>(
        &self,
        query: PeriodQuery,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let base = match query {
            PeriodQuery::Noted => NOTED,
        };
        let sql = with_app_filter(base, query, sdkappid, "?3");
        let mut q = sqlx::query_as(&sql)
            .bind(range.since.to_string())
            .bind(range.until.to_string());
        if let Some(app) = sdkappid {
            q = q.bind(app);
        }
        q.fetch_all(self.pool()).await.map_err(classify)
    }

    pub(crate) async fn has_analytics(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'rollup_queue'",
        )
        .fetch_one(self.pool())
        .await
        .map_err(classify)
    }

    pub(crate) async fn room_stats(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Option<RoomStats>, StoreError> {
        let (since, until) = (range.since.to_string(), range.until.to_string());
        let any: bool = sqlx::query_scalar(HAS_ROOM_EVENTS)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_one(self.pool())
            .await
            .map_err(classify)?;
        if !any {
            return Ok(None);
        }
        let row: RoomStatsRow = sqlx::query_as(ROOM_STATS)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_one(self.pool())
            .await
            .map_err(classify)?;
        Ok(Some(row.into()))
    }

    pub(crate) async fn completeness(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<(i64, i64), StoreError> {
        let exists: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'call_records'",
        )
        .fetch_one(self.pool())
        .await
        .map_err(classify)?;
        if !exists {
            return Ok((0, 0));
        }
        sqlx::query_as(COMPLETENESS)
            .bind(range.since.to_string())
            .bind(range.until.to_string())
            .bind(sdkappid)
            .fetch_one(self.pool())
            .await
            .map_err(classify)
    }

    pub(crate) async fn recent_events(
        &self,
        last: u32,
        sdkappid: Option<i64>,
    ) -> Result<Vec<RecentEvent>, StoreError> {
        sqlx::query_as(RECENT_EVENTS)
            .bind(i64::from(last))
            .bind(sdkappid)
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }
}
