//! PostgreSQL's outbox reads and updates. Times are the database's (`now()`), so replicas
//! on several machines share one clock for leases and schedules.

use super::{Backlog, Claimed, DestinationStatus, ForwardedEvent, RetryFilter, Settled};
use crate::store::StoreError;
use crate::store::postgres::{PgStore, classify};

/// A destination's due entries, oldest due first, locked and skipped by any other claim
/// meanwhile (so replicas share the work), each counted as an attempt and leased.
const CLAIM: &str = r#"
WITH due AS (
    SELECT event_id FROM forward_outbox
    WHERE destination = $1 AND state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE forward_outbox o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + $3 * interval '1 millisecond',
    last_attempt_at = now()
FROM due
WHERE o.destination = $1 AND o.event_id = due.event_id
RETURNING o.event_id, o.message_id, o.attempts,
          (extract(epoch FROM o.created_at) * 1000)::bigint
"#;

/// The columns a message carries, times as Unix milliseconds.
const EVENTS: &str = r#"
SELECT id, sdkappid, family, command, call_id, user_id, role, event, call_result,
       media_type, call_type, room_id, total_num,
       (extract(epoch FROM event_time) * 1000)::bigint AS event_time,
       (extract(epoch FROM start_call_ts) * 1000)::bigint AS start_call_ts,
       (extract(epoch FROM accept_ts) * 1000)::bigint AS accept_ts,
       (extract(epoch FROM end_ts) * 1000)::bigint AS end_ts,
       client_ip, opt_platform, remote_addr, members::text AS members, notes,
       (extract(epoch FROM received_at) * 1000)::bigint AS received_at,
       payload::text AS payload,
       trtc_event_type::bigint AS trtc_event_type, unique_id,
       terminal_type::bigint AS terminal_type, user_type::bigint AS user_type,
       reason::bigint AS reason, task_id, trtc_status::bigint AS trtc_status,
       files::text AS files
FROM call_events WHERE id = ANY($1)
"#;

/// Each outcome, if the entry is still on the attempt that made it.
const SETTLE: &str = r#"
UPDATE forward_outbox o
SET state = r.state,
    next_attempt_at = CASE WHEN r.state = 'pending'
                           THEN now() + r.delay_ms * interval '1 millisecond'
                           ELSE o.next_attempt_at END,
    delivered_at = CASE WHEN r.state = 'delivered' THEN now() ELSE o.delivered_at END,
    last_status = r.status,
    last_error = r.error
FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::int[], $7::text[])
    AS r(event_id, attempt, state, delay_ms, status, error)
WHERE o.destination = $1 AND o.event_id = r.event_id AND o.attempts = r.attempt
  AND o.state = 'pending'
"#;

const STATUS: &str = r#"
SELECT c.destination, c.pending, c.due, c.delivered, c.dead, c.oldest_pending_seconds,
       e.last_error, e.last_error_at
FROM (SELECT destination,
             count(*) FILTER (WHERE state = 'pending') AS pending,
             count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= now()) AS due,
             count(*) FILTER (WHERE state = 'delivered') AS delivered,
             count(*) FILTER (WHERE state = 'dead') AS dead,
             extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending'))::float8
                 AS oldest_pending_seconds
      FROM forward_outbox GROUP BY destination) c
LEFT JOIN (SELECT DISTINCT ON (destination) destination, last_error,
                  to_char(last_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                      AS last_error_at
           FROM forward_outbox WHERE last_error IS NOT NULL
           ORDER BY destination, last_attempt_at DESC) e USING (destination)
ORDER BY c.destination
"#;

/// Through the partial indexes only: pending (with the oldest) and dead, per destination.
const BACKLOG: &str = r#"
SELECT coalesce(p.destination, d.destination) AS destination,
       coalesce(p.pending, 0) AS pending, p.oldest_pending_seconds,
       coalesce(d.dead, 0) AS dead
FROM (SELECT destination, count(*) AS pending,
             extract(epoch FROM now() - min(created_at))::float8 AS oldest_pending_seconds
      FROM forward_outbox WHERE state = 'pending' GROUP BY destination) p
FULL JOIN (SELECT destination, count(*) AS dead
           FROM forward_outbox WHERE state = 'dead' GROUP BY destination) d
     USING (destination)
ORDER BY 1
"#;

const RETRY: &str = r#"
UPDATE forward_outbox
SET state = 'pending', attempts = 0, next_attempt_at = now()
WHERE destination = $1
  AND state IN ('delivered', 'dead') AND (NOT $2 OR state = 'dead')
  AND ($3::bigint IS NULL
       OR created_at >= timestamptz 'epoch' + $3 * interval '1 millisecond')
  AND ($4::text IS NULL OR event_id IN (SELECT id FROM call_events WHERE call_id = $4))
"#;

impl PgStore {
    pub(super) async fn claim_due(
        &self,
        destination: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows: Vec<(i64, String, i32, i64)> = sqlx::query_as(CLAIM)
            .bind(destination)
            .bind(limit)
            .bind(lease_ms)
            .fetch_all(self.pool())
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(event_id, message_id, attempt, created_at)| Claimed {
                event_id,
                message_id,
                attempt,
                created_at,
            })
            .collect())
    }

    pub(super) async fn forwarded_events(
        &self,
        ids: &[i64],
    ) -> Result<Vec<ForwardedEvent>, StoreError> {
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
        let done = sqlx::query(SETTLE)
            .bind(destination)
            .bind(settled.iter().map(|s| s.event_id).collect::<Vec<_>>())
            .bind(settled.iter().map(|s| s.attempt).collect::<Vec<_>>())
            .bind(settled.iter().map(|s| s.next.state()).collect::<Vec<_>>())
            .bind(
                settled
                    .iter()
                    .map(|s| s.next.delay_ms())
                    .collect::<Vec<_>>(),
            )
            .bind(
                settled
                    .iter()
                    .map(|s| s.status.map(i32::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                settled
                    .iter()
                    .map(|s| s.error.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(self.pool())
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    pub(super) async fn outbox_status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        sqlx::query_as(STATUS)
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }

    pub(super) async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        sqlx::query_as(BACKLOG)
            .fetch_all(self.pool())
            .await
            .map_err(classify)
    }

    pub(super) async fn retry_entries(&self, filter: &RetryFilter) -> Result<u64, StoreError> {
        let done = sqlx::query(RETRY)
            .bind(&filter.destination)
            .bind(filter.dead_only)
            .bind(filter.since)
            .bind(filter.call_id.as_deref())
            .execute(self.pool())
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
