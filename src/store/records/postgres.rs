//! PostgreSQL's SQL for call records and reconcile runs. Times travel as bigint
//! milliseconds and become timestamptz here, exactly.

use super::{Findings, LastRun, PageWrite, RunEnd, RunKey, RunStart, distinct_calls};
use crate::store::StoreError;
use crate::store::postgres::{PgStore, classify};

const MS: &str = "interval '1 millisecond'";

fn ts(param: &str) -> String {
    format!("(timestamptz 'epoch' + {param} * {MS})")
}

fn resume_sql() -> String {
    format!(
        "SELECT id, pages::bigint, records, (extract(epoch FROM started_at) * 1000)::bigint
         FROM reconcile_runs
         WHERE sdkappid = $1 AND window_from = {} AND window_to = {} AND page_size = $4
           AND status <> 'ok' AND pages > 0
         ORDER BY id DESC LIMIT 1",
        ts("$2"),
        ts("$3")
    )
}

fn insert_run_sql() -> String {
    format!(
        "INSERT INTO reconcile_runs
             (sdkappid, window_from, window_to, page_size, trigger, status, started_at)
         VALUES ($1, {}, {}, $4, $5, 'running', {}) RETURNING id",
        ts("$2"),
        ts("$3"),
        ts("$6")
    )
}

/// A page's records, one array per column.
fn upsert_sql() -> String {
    let t = |c: &str| ts(&format!("t.{c}"));
    format!(
        "INSERT INTO call_records (sdkappid, call_id, caller, callees, media_type, call_type,
             call_result, started_at, accepted_at, ended_at, room_id, room_id_type, day, record,
             notes, fetched_at, last_seen_at)
         SELECT t.sdkappid, t.call_id, t.caller, t.callees::json, t.media_type, t.call_type,
                t.call_result, {}, {}, {}, t.room_id, t.room_id_type, t.day::date, t.record::json,
                t.notes, {seen}, {seen}
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
                     $12::int[], $13::text[], $14::text[], $15::text[])
           AS t(sdkappid, call_id, caller, callees, media_type, call_type, call_result,
                started_at, accepted_at, ended_at, room_id, room_id_type, day, record, notes)
         ON CONFLICT (sdkappid, call_id) DO UPDATE
         SET caller = EXCLUDED.caller, callees = EXCLUDED.callees,
             media_type = EXCLUDED.media_type, call_type = EXCLUDED.call_type,
             call_result = EXCLUDED.call_result, started_at = EXCLUDED.started_at,
             accepted_at = EXCLUDED.accepted_at, ended_at = EXCLUDED.ended_at,
             room_id = EXCLUDED.room_id, room_id_type = EXCLUDED.room_id_type,
             day = EXCLUDED.day, record = EXCLUDED.record, notes = EXCLUDED.notes,
             last_seen_at = EXCLUDED.last_seen_at",
        t("started_at"),
        t("accepted_at"),
        t("ended_at"),
        seen = ts("$16"),
    )
}

const PROGRESS: &str = "UPDATE reconcile_runs
    SET pages = $2, total = $3, records = records + $4, requests = $5, page_size = $6
    WHERE id = $1";

const FINISH: &str = "UPDATE reconcile_runs
    SET status = $2, error = $3, requests = $4, finished_at = now()
    WHERE id = $1";

fn findings_sql() -> String {
    let seen = ts("$2");
    let (from, to) = (ts("$3"), ts("$4"));
    format!(
        "WITH seen AS (
             SELECT k.sdkappid, k.call_id,
                    EXISTS (SELECT 1 FROM call_events e
                            WHERE e.sdkappid = k.sdkappid AND e.call_id = k.call_id) AS known
             FROM call_records k
             WHERE k.sdkappid = $1 AND k.last_seen_at >= {seen}),
         gaps AS (
             SELECT g.call_id, g.kind FROM call_gaps g
             WHERE g.sdkappid = $1
               AND g.day >= ({from} AT TIME ZONE 'UTC')::date
               AND g.day <= ({to} AT TIME ZONE 'UTC')::date
               AND g.kind IN ('missing_record', 'outcome', 'started_at', 'accepted_at', 'ended_at')
               AND (g.kind <> 'missing_record' OR (g.call_time >= {from} AND g.call_time < {to})))
         SELECT (SELECT count(*) FROM seen WHERE known),
                (SELECT count(*) FROM seen WHERE NOT known),
                (SELECT count(*) FROM gaps WHERE kind = 'missing_record'),
                (SELECT count(DISTINCT g.call_id) FROM gaps g
                 WHERE g.kind <> 'missing_record'
                   AND g.call_id IN (SELECT call_id FROM seen))"
    )
}

const LAST_OK: &str = "SELECT (extract(epoch FROM window_to) * 1000)::bigint,
       (extract(epoch FROM started_at) * 1000)::bigint
FROM reconcile_runs WHERE sdkappid = $1 AND status = 'ok'
ORDER BY window_to DESC LIMIT 1";

impl PgStore {
    pub(crate) async fn start_run(
        &self,
        key: &RunKey,
        now: crate::protocol::Millis,
    ) -> Result<RunStart, StoreError> {
        let mut tx = self.pool().begin().await.map_err(classify)?;
        let found: Option<(i64, i64, i64, i64)> = sqlx::query_as(&resume_sql())
            .bind(key.sdkappid)
            .bind(key.from)
            .bind(key.to)
            .bind(key.page_size as i32)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let start = match found {
            Some((id, pages, records, started_at)) => {
                sqlx::query(
                    "UPDATE reconcile_runs SET status = 'running', error = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                RunStart {
                    id,
                    started_at,
                    next_page: pages as u64 + 1,
                    records_before: records as u64,
                }
            }
            None => {
                let id: i64 = sqlx::query_scalar(&insert_run_sql())
                    .bind(key.sdkappid)
                    .bind(key.from)
                    .bind(key.to)
                    .bind(key.page_size as i32)
                    .bind(key.trigger.as_str())
                    .bind(now)
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
        let rows = distinct_calls(page.rows);
        let col = |f: &dyn Fn(&crate::protocol::call_record::CallRecordRow) -> Option<String>| {
            rows.iter().map(|r| f(r)).collect::<Vec<_>>()
        };
        let word = |v: &Option<String>| v.clone();
        let mut tx = self.pool().begin().await.map_err(classify)?;
        if !rows.is_empty() {
            sqlx::query(&upsert_sql())
                .bind(rows.iter().map(|r| r.sdkappid).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.call_id.clone()).collect::<Vec<_>>())
                .bind(col(&|r| word(&r.caller)))
                .bind(rows.iter().map(|r| r.callees_json()).collect::<Vec<_>>())
                .bind(col(&|r| {
                    r.media_type.as_ref().map(|v| v.as_str().to_owned())
                }))
                .bind(col(&|r| {
                    r.call_type.as_ref().map(|v| v.as_str().to_owned())
                }))
                .bind(col(&|r| {
                    r.call_result.as_ref().map(|v| v.as_str().to_owned())
                }))
                .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.accepted_at).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.ended_at).collect::<Vec<_>>())
                .bind(col(&|r| word(&r.room_id)))
                .bind(
                    rows.iter()
                        .map(|r| r.room_id_type.and_then(|t| i32::try_from(t).ok()))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|r| r.day(page.seen_at).to_string())
                        .collect::<Vec<_>>(),
                )
                .bind(rows.iter().map(|r| r.record.clone()).collect::<Vec<_>>())
                .bind(col(&|r| word(&r.notes)))
                .bind(page.seen_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query(PROGRESS)
            .bind(page.run)
            .bind(page.page as i32)
            .bind(page.total as i64)
            .bind(page.rows.len() as i64)
            .bind(page.requests as i64)
            .bind(page.page_size as i32)
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
            .execute(self.pool())
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub(crate) async fn findings(
        &self,
        key: &RunKey,
        seen_since: crate::protocol::Millis,
    ) -> Result<Findings, StoreError> {
        let row: (i64, i64, i64, i64) = sqlx::query_as(&findings_sql())
            .bind(key.sdkappid)
            .bind(seen_since)
            .bind(key.from)
            .bind(key.to)
            .fetch_one(self.pool())
            .await
            .map_err(classify)?;
        Ok(Findings::from(row))
    }

    pub(crate) async fn last_successful_run(
        &self,
        sdkappid: i64,
    ) -> Result<Option<LastRun>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(LAST_OK)
            .bind(sdkappid)
            .fetch_optional(self.pool())
            .await
            .map_err(classify)?;
        Ok(row.map(|(window_to, started_at)| LastRun {
            window_to,
            started_at,
        }))
    }
}
