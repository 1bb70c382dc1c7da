//! SQLite's rollup pass and exact period read: the same steps as PostgreSQL's, one call
//! and one row per statement (in process, each is a few microseconds).

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

use super::{
    CORRECTION_LIMIT, CallFold, DayRow, Deltas, PeriodStats, Stored, TalkTimes, assemble, changes,
    distinct_calls, from_folds, stored_map,
};
use crate::store::analytics::{DailyStatsRow, daily_stats_from};
use crate::store::sqlite::{SqliteStore, classify};
use crate::store::{DayRange, StoreError};

const TAKE: &str = r#"
DELETE FROM rollup_queue
WHERE id IN (SELECT id FROM rollup_queue ORDER BY id LIMIT ?1)
RETURNING sdkappid, call_id
"#;

const OLD_FOLD: &str = r#"
SELECT sdkappid, call_id, day, outcome, talk_ms
FROM rollup_calls WHERE sdkappid = ?1 AND call_id = ?2
"#;

const NEW_FOLD: &str = r#"
SELECT sdkappid, call_id, day, outcome, talk_ms
FROM call_rollup WHERE sdkappid = ?1 AND call_id = ?2
"#;

const UPSERT_CALL: &str = r#"
INSERT OR REPLACE INTO rollup_calls (sdkappid, call_id, day, outcome, talk_ms)
VALUES (?1, ?2, ?3, ?4, ?5)
"#;

const ADD_DAY: &str = r#"
INSERT INTO rollup_days AS d (day, sdkappid, calls, answered, not_answer, reject, call_busy,
                              cancel, interrupt, talk_calls, talk_ms_sum)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
ON CONFLICT (day, sdkappid) DO UPDATE SET
    calls = d.calls + excluded.calls,
    answered = d.answered + excluded.answered,
    not_answer = d.not_answer + excluded.not_answer,
    reject = d.reject + excluded.reject,
    call_busy = d.call_busy + excluded.call_busy,
    cancel = d.cancel + excluded.cancel,
    interrupt = d.interrupt + excluded.interrupt,
    talk_calls = d.talk_calls + excluded.talk_calls,
    talk_ms_sum = d.talk_ms_sum + excluded.talk_ms_sum
"#;

const ADD_TALK: &str = r#"
INSERT INTO rollup_talk AS t (day, sdkappid, bucket_ms, calls, talk_ms_sum)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (day, sdkappid, bucket_ms) DO UPDATE SET
    calls = t.calls + excluded.calls,
    talk_ms_sum = t.talk_ms_sum + excluded.talk_ms_sum
"#;

const DAILY_STATS: &str = r#"
SELECT day, sdkappid, calls, answered, not_answer, reject, call_busy, cancel, interrupt,
       answer_rate, avg_talk_seconds, p50_talk_seconds, p90_talk_seconds
FROM call_stats_daily
WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR sdkappid = ?3)
ORDER BY day, sdkappid
"#;

const PERIOD_TALK: &str = r#"
SELECT bucket_ms, sum(calls), sum(talk_ms_sum)
FROM rollup_talk
WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR sdkappid = ?3)
GROUP BY bucket_ms
"#;

/// The backlog, for the choice between correcting the rollups and folding the period from
/// scratch; 0 (always correct) when retention removed events of the period, whose
/// statistics only the rollups still hold.
const BACKLOG: &str = r#"
SELECT CASE WHEN EXISTS (SELECT 1 FROM retention_horizon WHERE events_before > ?2) THEN 0
            ELSE (SELECT count(*) FROM (SELECT 1 FROM rollup_queue LIMIT ?1)) END
"#;

/// The period's calls, folded from scratch (through call_rollup's day index).
const PERIOD_FOLDS: &str = r#"
SELECT sdkappid, call_id, day, outcome, talk_ms
FROM call_rollup
WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR sdkappid = ?3)
"#;

const QUEUED: &str = r#"
SELECT DISTINCT sdkappid, call_id FROM rollup_queue WHERE ?1 IS NULL OR sdkappid = ?1
"#;

const STORED_DAY: &str = r#"
SELECT day, sdkappid, calls, answered, not_answer, reject, call_busy, cancel, interrupt,
       talk_calls, talk_ms_sum
FROM rollup_days WHERE day = ?1 AND sdkappid = ?2
"#;

const STORED_TALK: &str = r#"
SELECT day, sdkappid, bucket_ms, calls, talk_ms_sum
FROM rollup_talk WHERE day = ?1 AND sdkappid = ?2
"#;

/// The old and new folds of some calls.
async fn folds(
    conn: &mut SqliteConnection,
    apps: &[i64],
    ids: &[String],
) -> Result<(Vec<CallFold>, Vec<CallFold>), StoreError> {
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for (app, id) in apps.iter().zip(ids) {
        for (sql, into) in [(OLD_FOLD, &mut old), (NEW_FOLD, &mut new)] {
            let fold: Option<CallFold> = sqlx::query_as(sql)
                .bind(app)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
            into.extend(fold);
        }
    }
    Ok((old, new))
}

/// Writes the new folds of the calls and moves the deltas into the rollups.
async fn apply(
    conn: &mut SqliteConnection,
    old: &[CallFold],
    new: &[CallFold],
    deltas: &Deltas,
) -> Result<(), StoreError> {
    let (vanished, changed) = changes(old, new);
    for (app, id) in &vanished {
        sqlx::query("DELETE FROM rollup_calls WHERE sdkappid = ?1 AND call_id = ?2")
            .bind(app)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    for f in changed {
        sqlx::query(UPSERT_CALL)
            .bind(f.sdkappid)
            .bind(&f.call_id)
            .bind(&f.day)
            .bind(&f.outcome)
            .bind(f.talk_ms)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    for ((day, app), c) in &deltas.days {
        sqlx::query(ADD_DAY)
            .bind(day)
            .bind(app)
            .bind(c.calls)
            .bind(c.answered)
            .bind(c.not_answer)
            .bind(c.reject)
            .bind(c.call_busy)
            .bind(c.cancel)
            .bind(c.interrupt)
            .bind(c.talk_calls)
            .bind(c.talk_ms_sum)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    for ((day, app), t) in &deltas.talk {
        for (bucket, b) in &t.0 {
            sqlx::query(ADD_TALK)
                .bind(day)
                .bind(app)
                .bind(bucket)
                .bind(b.calls)
                .bind(b.talk_ms_sum)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
    }
    for (day, app) in deltas.keys() {
        for sql in [
            "DELETE FROM rollup_days WHERE day = ?1 AND sdkappid = ?2 AND calls = 0",
            "DELETE FROM rollup_talk WHERE day = ?1 AND sdkappid = ?2 AND calls = 0",
        ] {
            sqlx::query(sql)
                .bind(&day)
                .bind(app)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
    }
    Ok(())
}

/// What the still-queued calls change in a period (for one app, when asked), and the
/// stored rollups of the days they change.
async fn correction(
    conn: &mut SqliteConnection,
    range: DayRange,
    sdkappid: Option<i64>,
) -> Result<(Deltas, Stored), StoreError> {
    let queued: Vec<(i64, String)> = sqlx::query_as(QUEUED)
        .bind(sdkappid)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
    let mut stored = BTreeMap::new();
    let mut deltas = Deltas::default();
    if !queued.is_empty() {
        let (apps, ids) = distinct_calls(queued);
        let (old, new) = folds(conn, &apps, &ids).await?;
        deltas = Deltas::between(&old, &new).within(range, sdkappid);
        let (mut day_rows, mut talk_rows) = (Vec::<DayRow>::new(), Vec::new());
        for (day, app) in deltas.keys() {
            day_rows.extend(
                sqlx::query_as::<_, DayRow>(STORED_DAY)
                    .bind(&day)
                    .bind(app)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(classify)?,
            );
            talk_rows.extend(
                sqlx::query_as::<_, (String, i64, i64, i64, i64)>(STORED_TALK)
                    .bind(&day)
                    .bind(app)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(classify)?,
            );
        }
        stored = stored_map(day_rows, talk_rows);
    }
    Ok((deltas, stored))
}

impl SqliteStore {
    pub(crate) async fn rollup_pass(&self, limit: i64) -> Result<usize, StoreError> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let taken: Vec<(i64, String)> = sqlx::query_as(TAKE)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let n = taken.len();
        if n > 0 {
            let (apps, ids) = distinct_calls(taken);
            let (old, new) = folds(&mut tx, &apps, &ids).await?;
            let deltas = Deltas::between(&old, &new);
            apply(&mut tx, &old, &new, &deltas).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(n)
    }

    pub(crate) async fn rollup_backlog(&self) -> Result<(i64, f64), StoreError> {
        sqlx::query_as(
            "SELECT coalesce((SELECT max(id) FROM rollup_queue) \
                             - (SELECT min(id) FROM rollup_queue) + 1, 0), \
                    coalesce((julianday('now') - julianday((SELECT queued_at FROM rollup_queue \
                                                            ORDER BY id LIMIT 1))) * 86400.0, 0.0)",
        )
        .fetch_one(self.pool())
        .await
        .map_err(classify)
    }

    pub(crate) async fn period_stats(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<PeriodStats, StoreError> {
        let (since, until) = (range.since.to_string(), range.until.to_string());
        // A read transaction: one snapshot of the WAL for every read below.
        let mut tx = self.pool().begin().await.map_err(classify)?;
        let backlog: i64 = sqlx::query_scalar(BACKLOG)
            .bind(CORRECTION_LIMIT + 1)
            .bind(&since)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if backlog > CORRECTION_LIMIT {
            let folds: Vec<CallFold> = sqlx::query_as(PERIOD_FOLDS)
                .bind(&since)
                .bind(&until)
                .bind(sdkappid)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            return from_folds(&folds);
        }
        let rows: Vec<DailyStatsRow> = sqlx::query_as(DAILY_STATS)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let view_rows = rows
            .into_iter()
            .map(daily_stats_from)
            .collect::<Result<Vec<_>, _>>()?;
        let buckets: Vec<(i64, i64, i64)> = sqlx::query_as(PERIOD_TALK)
            .bind(&since)
            .bind(&until)
            .bind(sdkappid)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        let mut talk = TalkTimes::default();
        for (bucket, calls, sum) in buckets {
            talk.add(bucket, calls, sum);
        }
        let (deltas, stored) = correction(&mut tx, range, sdkappid).await?;
        tx.commit().await.map_err(classify)?;
        assemble(view_rows, talk, deltas, &stored)
    }
}
