//! PostgreSQL's analytics reads, each in a read-only transaction without JIT.

use sqlx::postgres::PgRow;

use super::{DayRange, PeriodQuery, RecentEvent, RoomStats, RoomStatsRow, with_app_filter};
use crate::store::StoreError;
use crate::store::postgres::{PgStore, classify};

/// Events stored with notes, by the field their first note names (through the partial
/// index call_events_noted_idx).
const NOTED: &str = r#"
SELECT split_part(notes, ':', 1) AS field, count(*)
FROM call_events
WHERE notes IS NOT NULL
  AND received_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
  AND received_at < ($2::date)::timestamp AT TIME ZONE 'UTC'
"#;

/// Whether the period has TRTC room events (through the room index), and the room views.
const HAS_ROOM_EVENTS: &str = r#"
SELECT to_regclass('call_presence') IS NOT NULL AND EXISTS (
    SELECT 1 FROM call_events
    WHERE family IN ('room', 'media', 'recording')
      AND event_time >= $1::date::timestamp AT TIME ZONE 'UTC'
      AND event_time < $2::date::timestamp AT TIME ZONE 'UTC'
      AND ($3::bigint IS NULL OR sdkappid = $3))
"#;

/// The period's talk time (call callbacks), in-room time (room events) and room-only calls.
const ROOM_STATS: &str = r#"
SELECT t.talk, t.talk_calls, p.in_room, p.in_room_calls, o.room_only
FROM (SELECT coalesce(sum(talk_seconds), 0)::float8 AS talk,
             count(talk_seconds) AS talk_calls
      FROM calls
      WHERE day >= $1::date AND day < $2::date AND ($3::bigint IS NULL OR sdkappid = $3)) t,
     (SELECT coalesce(sum(seconds_in_room), 0)::float8 AS in_room,
             count(DISTINCT (sdkappid, call_id)) AS in_room_calls
      FROM call_presence
      WHERE source <> 'call_callbacks'
        AND entered_at >= $1::date::timestamp AT TIME ZONE 'UTC'
        AND entered_at < $2::date::timestamp AT TIME ZONE 'UTC'
        AND ($3::bigint IS NULL OR sdkappid = $3)) p,
     (SELECT count(*) AS room_only
      FROM room_only_calls
      WHERE day >= $1::date AND day < $2::date AND ($3::bigint IS NULL OR sdkappid = $3)) o
"#;

/// Tencent's recorded calls of the period and how many of them arrived as callbacks (no
/// rows when call_records does not exist yet).
const COMPLETENESS: &str = r#"
SELECT count(*),
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM call_events e
                                      WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id))
FROM call_records k
WHERE k.day >= $1::date AND k.day < $2::date AND ($3::bigint IS NULL OR k.sdkappid = $3)
"#;

/// The latest events, newest `$1` by id, returned oldest first.
const RECENT_EVENTS: &str = r#"
SELECT id, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS received_at,
       sdkappid, family, command, call_id, user_id, role, event, call_result, media_type,
       call_type, client_ip, opt_platform, remote_addr, deliveries::bigint AS deliveries,
       to_char(last_delivery_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS last_delivery_at
FROM (
    SELECT * FROM call_events
    WHERE $2::bigint IS NULL OR sdkappid = $2
    ORDER BY id DESC
    LIMIT $1
) AS latest
ORDER BY id
"#;

impl PgStore {
    /// Runs a period query: the period binds as parameters 1 and 2, the app (when asked)
    /// as 3.
    pub(super) async fn period_rows<T>(
        &self,
        query: PeriodQuery,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let base = match query {
            PeriodQuery::Noted => NOTED,
        };
        let sql = with_app_filter(base, query, sdkappid, "$3");
        let mut q = sqlx::query_as(&sql)
            .bind(range.since.to_string())
            .bind(range.until.to_string());
        if let Some(app) = sdkappid {
            q = q.bind(app);
        }
        let mut tx = self.analytics_tx().await?;
        let rows = q.fetch_all(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(rows)
    }

    /// A read-only transaction for the analytics views, without JIT: the views' per-call
    /// folding makes the planner's cost estimate large enough to trigger JIT compilation,
    /// which takes longer than the query itself (about 1 s at a million events).
    async fn analytics_tx(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool().begin().await.map_err(classify)?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        Ok(tx)
    }

    pub(crate) async fn has_analytics(&self) -> Result<bool, StoreError> {
        // The newest of the analytics objects (migration 0010): a database migrated by an
        // older callhook has the views but not the rollups the report reads.
        sqlx::query_scalar("SELECT to_regclass('rollup_queue') IS NOT NULL")
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
        let mut tx = self.analytics_tx().await?;
        let any: bool = sqlx::query_scalar(HAS_ROOM_EVENTS)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if !any {
            return Ok(None);
        }
        let row: RoomStatsRow = sqlx::query_as(ROOM_STATS)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(Some(row.into()))
    }

    pub(crate) async fn completeness(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<(i64, i64), StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('call_records') IS NOT NULL")
            .fetch_one(self.pool())
            .await
            .map_err(classify)?;
        if !exists {
            return Ok((0, 0));
        }
        let mut tx = self.analytics_tx().await?;
        let row = sqlx::query_as(COMPLETENESS)
            .bind(range.since.to_string())
            .bind(range.until.to_string())
            .bind(sdkappid)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(row)
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
