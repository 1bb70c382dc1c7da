//! SQLite's outbox reads and updates. One process owns an SQLite database, so a claim needs
//! no lock beyond the write it is; times are this machine's clock, as ISO-8601 text.

use super::{Backlog, Claimed, DestinationStatus, ForwardedEvent, RetryFilter, Settled};
use crate::protocol::Millis;
use crate::store::StoreError;
use crate::store::sqlite::{SqliteStore, classify, iso_millis};

/// `?1` destination, `?2` limit, `?3` the lease's end, `?4` now.
const CLAIM: &str = r#"
UPDATE forward_outbox
SET attempts = attempts + 1, next_attempt_at = ?3, last_attempt_at = ?4
WHERE destination = ?1 AND state = 'pending' AND event_id IN (
    SELECT event_id FROM forward_outbox
    WHERE destination = ?1 AND state = 'pending' AND next_attempt_at <= ?4
    ORDER BY next_attempt_at
    LIMIT ?2)
RETURNING event_id, message_id, attempts,
          CAST(round(unixepoch(created_at, 'subsec') * 1000) AS INTEGER)
"#;

const EVENTS: &str = r#"
SELECT id, sdkappid, family, command, call_id, user_id, role, event, call_result,
       media_type, call_type, room_id, total_num,
       CAST(round(unixepoch(event_time, 'subsec') * 1000) AS INTEGER) AS event_time,
       CAST(round(unixepoch(start_call_ts, 'subsec') * 1000) AS INTEGER) AS start_call_ts,
       CAST(round(unixepoch(accept_ts, 'subsec') * 1000) AS INTEGER) AS accept_ts,
       CAST(round(unixepoch(end_ts, 'subsec') * 1000) AS INTEGER) AS end_ts,
       client_ip, opt_platform, remote_addr, members, notes,
       CAST(round(unixepoch(received_at, 'subsec') * 1000) AS INTEGER) AS received_at,
       payload, trtc_event_type, unique_id, terminal_type, user_type, reason, task_id,
       trtc_status, files
FROM call_events WHERE id IN (SELECT value FROM json_each(?1))
"#;

/// `?1` destination, `?2` event, `?3` attempt, `?4` state, `?5` due again at, `?6` now,
/// `?7` status, `?8` error.
const SETTLE: &str = r#"
UPDATE forward_outbox
SET state = ?4,
    next_attempt_at = CASE WHEN ?4 = 'pending' THEN ?5 ELSE next_attempt_at END,
    delivered_at = CASE WHEN ?4 = 'delivered' THEN ?6 ELSE delivered_at END,
    last_status = ?7,
    last_error = ?8
WHERE destination = ?1 AND event_id = ?2 AND attempts = ?3 AND state = 'pending'
"#;

/// `?1` now.
const STATUS: &str = r#"
SELECT c.destination, c.pending, c.due, c.delivered, c.dead, c.oldest_pending_seconds,
       e.last_error, e.last_error_at
FROM (SELECT destination,
             sum(state = 'pending') AS pending,
             sum(state = 'pending' AND next_attempt_at <= ?1) AS due,
             sum(state = 'delivered') AS delivered,
             sum(state = 'dead') AS dead,
             (julianday(?1) - julianday(min(CASE WHEN state = 'pending' THEN created_at END)))
                 * 86400.0 AS oldest_pending_seconds
      FROM forward_outbox GROUP BY destination) c
LEFT JOIN (SELECT destination, last_error, max(last_attempt_at) AS last_error_at
           FROM forward_outbox WHERE last_error IS NOT NULL GROUP BY destination) e
     USING (destination)
ORDER BY c.destination
"#;

/// `?1` now. Through the partial indexes only.
const BACKLOG: &str = r#"
SELECT destination, sum(pending) AS pending, max(oldest) AS oldest_pending_seconds,
       sum(dead) AS dead
FROM (SELECT destination, count(*) AS pending,
             (julianday(?1) - julianday(min(created_at))) * 86400.0 AS oldest, 0 AS dead
      FROM forward_outbox WHERE state = 'pending' GROUP BY destination
      UNION ALL
      SELECT destination, 0, NULL, count(*)
      FROM forward_outbox WHERE state = 'dead' GROUP BY destination)
GROUP BY destination ORDER BY destination
"#;

/// `?1` destination, `?2` dead only, `?3` since, `?4` call id, `?5` now.
const RETRY: &str = r#"
UPDATE forward_outbox
SET state = 'pending', attempts = 0, next_attempt_at = ?5
WHERE destination = ?1
  AND state IN ('delivered', 'dead') AND (NOT ?2 OR state = 'dead')
  AND (?3 IS NULL OR created_at >= ?3)
  AND (?4 IS NULL OR event_id IN (SELECT id FROM call_events WHERE call_id = ?4))
"#;

fn now() -> Option<String> {
    iso_millis(crate::now_millis())
}

fn after(ms: i64) -> Option<String> {
    iso_millis(crate::now_millis().saturating_add(ms))
}

impl SqliteStore {
    pub(super) async fn claim_due(
        &self,
        destination: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows: Vec<(i64, String, i32, Millis)> = sqlx::query_as(CLAIM)
            .bind(destination)
            .bind(limit)
            .bind(after(lease_ms))
            .bind(now())
            .fetch_all(self.pool())
            .await
            .map_err(classify)?;
        let mut claimed: Vec<Claimed> = rows
            .into_iter()
            .map(|(event_id, message_id, attempt, created_at)| Claimed {
                event_id,
                message_id,
                attempt,
                created_at,
            })
            .collect();
        // RETURNING gives no order; send the oldest first, as PostgreSQL does.
        claimed.sort_by_key(|c| (c.created_at, c.event_id));
        Ok(claimed)
    }

    pub(super) async fn forwarded_events(
        &self,
        ids: &[i64],
    ) -> Result<Vec<ForwardedEvent>, StoreError> {
        let ids = serde_json::to_string(ids).map_err(|e| StoreError::Other(e.to_string()))?;
        sqlx::query_as(EVENTS)
            .bind(ids)
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }

    pub(super) async fn settle(
        &self,
        destination: &str,
        settled: &[Settled],
    ) -> Result<u64, StoreError> {
        let write = async {
            let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
            let mut done = 0;
            for s in settled {
                done += sqlx::query(SETTLE)
                    .bind(destination)
                    .bind(s.event_id)
                    .bind(s.attempt)
                    .bind(s.next.state())
                    .bind(after(s.next.delay_ms()))
                    .bind(now())
                    .bind(s.status.map(i32::from))
                    .bind(s.error.as_deref())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        };
        write.await.map_err(classify)
    }

    pub(super) async fn outbox_status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        sqlx::query_as(STATUS)
            .bind(now())
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }

    pub(super) async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        sqlx::query_as(BACKLOG)
            .bind(now())
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }

    pub(super) async fn retry_entries(&self, filter: &RetryFilter) -> Result<u64, StoreError> {
        let done = sqlx::query(RETRY)
            .bind(&filter.destination)
            .bind(filter.dead_only)
            .bind(filter.since.and_then(iso_millis))
            .bind(filter.call_id.as_deref())
            .bind(now())
            .execute(self.pool())
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
