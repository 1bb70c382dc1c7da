//! SQLite's SQL for call records and reconcile runs. Times are ISO-8601 UTC text of one
//! width, as in call_events, so they compare as text. Writes begin IMMEDIATE: `serve`'s
//! batch writer shares the file.

use super::{Findings, LastRun, PageWrite, RunEnd, RunKey, RunStart, distinct_calls};
use crate::protocol::Millis;
use crate::store::StoreError;
use crate::store::sqlite::{SqliteStore, classify, iso_millis};

const RESUME: &str = "SELECT id, pages, records, started_at FROM reconcile_runs
    WHERE sdkappid = ?1 AND window_from = ?2 AND window_to = ?3 AND page_size = ?4
      AND status <> 'ok' AND pages > 0
    ORDER BY id DESC LIMIT 1";

const INSERT_RUN: &str = "INSERT INTO reconcile_runs
    (sdkappid, window_from, window_to, page_size, trigger, status, started_at)
    VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6) RETURNING id";

const UPSERT: &str = "INSERT INTO call_records (sdkappid, call_id, caller, callees, media_type,
        call_type, call_result, started_at, accepted_at, ended_at, room_id, room_id_type, day,
        record, notes, fetched_at, last_seen_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)
    ON CONFLICT (sdkappid, call_id) DO UPDATE
    SET caller = excluded.caller, callees = excluded.callees, media_type = excluded.media_type,
        call_type = excluded.call_type, call_result = excluded.call_result,
        started_at = excluded.started_at, accepted_at = excluded.accepted_at,
        ended_at = excluded.ended_at, room_id = excluded.room_id,
        room_id_type = excluded.room_id_type, day = excluded.day, record = excluded.record,
        notes = excluded.notes, last_seen_at = excluded.last_seen_at";

const PROGRESS: &str = "UPDATE reconcile_runs
    SET pages = ?2, total = ?3, records = records + ?4, requests = ?5, page_size = ?6
    WHERE id = ?1";

const FINISH: &str = "UPDATE reconcile_runs
    SET status = ?2, error = ?3, requests = ?4, finished_at = ?5
    WHERE id = ?1";

const FINDINGS: &str = "WITH seen AS (
        SELECT k.sdkappid, k.call_id,
               EXISTS (SELECT 1 FROM call_events e
                       WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id) AS known
        FROM call_records k
        WHERE k.sdkappid = ?1 AND k.last_seen_at >= ?2),
    gaps AS (
        SELECT g.call_id, g.kind FROM call_gaps g
        WHERE g.sdkappid = ?1 AND g.day >= substr(?3, 1, 10) AND g.day <= substr(?4, 1, 10)
          AND g.kind IN ('missing_record', 'outcome', 'started_at', 'accepted_at', 'ended_at')
          AND (g.kind <> 'missing_record' OR (g.call_time >= ?3 AND g.call_time < ?4)))
    SELECT (SELECT count(*) FROM seen WHERE known),
           (SELECT count(*) FROM seen WHERE NOT known),
           (SELECT count(*) FROM gaps WHERE kind = 'missing_record'),
           (SELECT count(DISTINCT g.call_id) FROM gaps g
            WHERE g.kind <> 'missing_record' AND g.call_id IN (SELECT call_id FROM seen))";

const LAST_OK: &str = "SELECT window_to, started_at FROM reconcile_runs
    WHERE sdkappid = ?1 AND status = 'ok' ORDER BY window_to DESC LIMIT 1";

fn iso(ms: Millis) -> Result<String, StoreError> {
    iso_millis(ms).ok_or_else(|| StoreError::Data(format!("{ms} ms is not a time SQLite stores")))
}

fn millis(text: &str) -> Result<Millis, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| StoreError::Other(format!("reconcile_runs time {text:?}: {e}")))
}

impl SqliteStore {
    pub(crate) async fn start_run(
        &self,
        key: &RunKey,
        now: Millis,
    ) -> Result<RunStart, StoreError> {
        let (from, to) = (iso(key.from)?, iso(key.to)?);
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let found: Option<(i64, i64, i64, String)> = sqlx::query_as(RESUME)
            .bind(key.sdkappid)
            .bind(&from)
            .bind(&to)
            .bind(i64::from(key.page_size))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let start = match found {
            Some((id, pages, records, started_at)) => {
                sqlx::query(
                    "UPDATE reconcile_runs SET status = 'running', error = NULL WHERE id = ?1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                RunStart {
                    id,
                    started_at: millis(&started_at)?,
                    next_page: pages as u64 + 1,
                    records_before: records as u64,
                }
            }
            None => {
                let id: i64 = sqlx::query_scalar(INSERT_RUN)
                    .bind(key.sdkappid)
                    .bind(&from)
                    .bind(&to)
                    .bind(i64::from(key.page_size))
                    .bind(key.trigger.as_str())
                    .bind(iso(now)?)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                RunStart {
                    id,
                    started_at: now,
                    next_page: 1,
                    records_before: 0,
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(start)
    }

    pub(crate) async fn write_records(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        let seen = iso(page.seen_at)?;
        let ts = |v: Option<Millis>| v.and_then(iso_millis);
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        for r in distinct_calls(page.rows) {
            sqlx::query(UPSERT)
                .bind(r.sdkappid)
                .bind(&r.call_id)
                .bind(&r.caller)
                .bind(r.callees_json())
                .bind(r.media_type.as_ref().map(|v| v.as_str()))
                .bind(r.call_type.as_ref().map(|v| v.as_str()))
                .bind(r.call_result.as_ref().map(|v| v.as_str()))
                .bind(ts(r.started_at))
                .bind(ts(r.accepted_at))
                .bind(ts(r.ended_at))
                .bind(&r.room_id)
                .bind(r.room_id_type)
                .bind(r.day(page.seen_at).to_string())
                .bind(&r.record)
                .bind(&r.notes)
                .bind(&seen)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query(PROGRESS)
            .bind(page.run)
            .bind(page.page as i64)
            .bind(page.total as i64)
            .bind(page.rows.len() as i64)
            .bind(page.requests as i64)
            .bind(i64::from(page.page_size))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    pub(crate) async fn finish_run(
        &self,
        run: i64,
        end: &RunEnd,
        requests: u64,
    ) -> Result<(), StoreError> {
        let (status, error) = end.columns();
        sqlx::query(FINISH)
            .bind(run)
            .bind(status)
            .bind(error)
            .bind(requests as i64)
            .bind(iso(crate::now_millis())?)
            .execute(self.pool())
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub(crate) async fn findings(
        &self,
        key: &RunKey,
        seen_since: Millis,
    ) -> Result<Findings, StoreError> {
        let row: (i64, i64, i64, i64) = sqlx::query_as(FINDINGS)
            .bind(key.sdkappid)
            .bind(iso(seen_since)?)
            .bind(iso(key.from)?)
            .bind(iso(key.to)?)
            .fetch_one(self.pool())
            .await
            .map_err(classify)?;
        Ok(Findings::from(row))
    }

    pub(crate) async fn last_successful_run(
        &self,
        sdkappid: i64,
    ) -> Result<Option<LastRun>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(LAST_OK)
            .bind(sdkappid)
            .fetch_optional(self.pool())
            .await
            .map_err(classify)?;
        row.map(|(to, started)| {
            Ok(LastRun {
                window_to: millis(&to)?,
                started_at: millis(&started)?,
            })
        })
        .transpose()
    }
}
