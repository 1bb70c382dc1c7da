//! Partitions and retention (README: "Retention").
//!
//! On PostgreSQL `call_events` is partitioned by week of the event's own day
//! (migrations/postgres/0012_partitions.sql): [`Store::make_partitions`] makes this week's
//! and the next ones ahead of time, and retention drops whole weeks once all of a week is
//! older than the cutoff. On SQLite retention deletes in small batches, each its own short
//! transaction, and hands the freed pages back to the file system (incremental vacuum).
//! Both remove the rejected deliveries, the forwarded-message history (entries no longer
//! pending), Tencent's call records and the rollups' per-call folds of the same age; the
//! daily rollups themselves stay, so `report` still answers for removed days (it reads
//! [`Store::retention_horizon`] to say so).

use std::time::Duration;

use chrono::{Datelike as _, NaiveDate};

use super::{Store, StoreError};

/// How many weeks after the current one have a partition ahead of time.
pub const WEEKS_AHEAD: i64 = 2;

/// PostgreSQL's lock wait for a partition's DROP or attach: the statement needs a lock on
/// `call_events` itself, and every insert queues behind a lock request that waits, so the
/// request gives up quickly and is tried again (the bound on what it adds to a write).
const LOCK_TIMEOUT: &str = "200ms";

/// The most rows of one week moved out of the default partition when its partition is
/// made (the move holds writes while it runs).
pub const MOVE_LIMIT: i64 = 10_000;

/// How often a DROP that timed out on its lock is tried again in one run.
const LOCK_TRIES: u32 = 20;

/// What one retention run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Whole weekly partitions of `call_events` dropped (PostgreSQL).
    pub partitions: u64,
    /// Events removed (on PostgreSQL, the dropped partitions' rows as counted before the
    /// drop, plus the default partition's).
    pub events: u64,
    pub rejected: u64,
    pub forwarded: u64,
    pub records: u64,
    pub rollup_calls: u64,
}

impl Removed {
    pub fn total_rows(&self) -> u64 {
        self.events + self.rejected + self.forwarded + self.records + self.rollup_calls
    }
}

/// How a retention run paces itself: rows per step, and the rest between steps (SQLite's
/// writer takes the write lock in the gaps).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub batch: i64,
    pub rest: Duration,
}

impl Pace {
    pub fn for_store(store: &Store) -> Self {
        if store.is_remote() {
            Self {
                batch: 5000,
                rest: Duration::from_millis(10),
            }
        } else {
            Self {
                batch: 1000,
                rest: Duration::from_millis(20),
            }
        }
    }
}

/// The Monday of the week `day` falls in.
pub fn monday_of(day: NaiveDate) -> NaiveDate {
    day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()))
}

/// The UTC day `days` days before the one of `now_ms`: rows of days before it go.
pub fn cutoff_day(now_ms: i64, days: u32) -> NaiveDate {
    let today = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .date_naive();
    today - chrono::Days::new(u64::from(days))
}

/// The Monday a weekly partition's name (`call_events_pYYYYMMDD`) stands for.
fn partition_monday(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix("call_events_p")?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

impl Store {
    /// Makes the weekly partitions of `call_events` for the week of `today` and the
    /// [`WEEKS_AHEAD`] after it that do not exist yet, and those of the weeks of which at
    /// most [`MOVE_LIMIT`] rows wait in the default partition (which move into them), but
    /// for weeks retention has already removed: PostgreSQL; nothing on SQLite. Returns how
    /// many it made.
    pub async fn make_partitions(&self, today: NaiveDate) -> Result<usize, StoreError> {
        let Self::Postgres(s) = self else {
            return Ok(0);
        };
        let pg = super::postgres::classify;
        // The weeks of rows waiting in the default partition (made by this version's
        // writes before their week's partition existed: a late or early clock, events
        // loaded from an old export), up to the last week made ahead, then those ahead.
        // Not a week wholly before the retention horizon: retention would drop it again
        // at once; its rows wait in the default partition, whence retention deletes them.
        let horizon = monday_of(today) + chrono::Days::new(7 * (WEEKS_AHEAD as u64 + 1));
        let waiting: Vec<(String, i64)> = sqlx::query_as(
            "SELECT date_trunc('week', event_day)::date::text, count(*) FROM call_events_default \
             WHERE event_day >= DATE '2000-01-01' AND event_day < $1::date \
               AND date_trunc('week', event_day)::date + 7 > coalesce( \
                   (SELECT events_before FROM retention_horizon), DATE '2000-01-01') \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(horizon.format("%Y-%m-%d").to_string())
        .fetch_all(s.pool())
        .await
        .map_err(pg)?;
        // Moving a week's rows holds every write while it runs: only small weeks move
        // (milliseconds). A larger one, even one of those made ahead (bodies dated weeks
        // ahead wait there too), stays in the default partition, where it is stored,
        // deduplicated and read like any other, and retention removes it in batches.
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (week, rows) in waiting {
            let Ok(monday) = NaiveDate::parse_from_str(&week, "%Y-%m-%d") else {
                continue;
            };
            if rows <= MOVE_LIMIT {
                small.push(monday);
                continue;
            }
            tracing::warn!(
                week = %week,
                rows,
                "this week's rows wait in call_events_default and stay there: more than {MOVE_LIMIT} would hold the writes too long to move"
            );
            large.push(monday);
        }
        let ahead = (0..=WEEKS_AHEAD)
            .map(|week| monday_of(today) + chrono::Days::new(7 * week as u64))
            .filter(|monday| !large.contains(monday));
        let mut weeks: Vec<NaiveDate> = small.into_iter().chain(ahead).collect();
        weeks.sort();
        weeks.dedup();
        let mut made = 0;
        for monday in weeks {
            let day = monday.format("%Y-%m-%d").to_string();
            let new =
                under_short_lock(s, "SELECT callhook_ensure_week($1::date)", Some(&day)).await?;
            made += usize::from(new == Some(true));
        }
        // The live writes name the weeks' partitions they know (src/store/postgres/weeks.rs).
        reread_partitions(s).await;
        Ok(made)
    }

    /// Removes what is older than `cutoff` (rows of UTC days before it), pacing itself
    /// with `pace`. Safe to run at any time, by several replicas at once, and to stop
    /// half-way: each step is a transaction of its own and the next run goes on.
    pub async fn remove_before(
        &self,
        cutoff: NaiveDate,
        pace: Pace,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        if let Self::Postgres(s) = self {
            let (partitions, events) = drop_partitions(s, cutoff).await?;
            removed.partitions = partitions;
            removed.events = events;
        }
        let cutoff_text = cutoff.format("%Y-%m-%d").to_string();
        for (table, step) in self.retention_steps() {
            let n = self.delete_in_steps(step, &cutoff_text, pace).await?;
            match table {
                Table::Events => removed.events += n,
                Table::Rejected => removed.rejected += n,
                Table::Forwarded => removed.forwarded += n,
                Table::Records => removed.records += n,
                Table::RollupCalls => removed.rollup_calls += n,
            }
        }
        self.record_horizon(&cutoff_text).await?;
        if let Self::Sqlite(s) = self {
            s.give_space_back(pace).await?;
        }
        Ok(removed)
    }

    /// The UTC day before which events may have been removed by retention (`None`: never
    /// removed).
    pub async fn retention_horizon(&self) -> Result<Option<String>, StoreError> {
        const SQL_PG: &str = "SELECT events_before::text FROM retention_horizon";
        const SQL_SQLITE: &str = "SELECT events_before FROM retention_horizon";
        match self {
            Self::Postgres(s) => sqlx::query_scalar(SQL_PG)
                .fetch_optional(s.pool())
                .await
                .map_err(super::postgres::classify),
            Self::Sqlite(s) => sqlx::query_scalar(SQL_SQLITE)
                .fetch_optional(s.pool())
                .await
                .map_err(super::sqlite::classify),
        }
    }

    async fn record_horizon(&self, cutoff: &str) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => sqlx::query(
                "INSERT INTO retention_horizon (id, events_before) VALUES (1, $1::date) \
                 ON CONFLICT (id) DO UPDATE SET events_before = \
                 GREATEST(retention_horizon.events_before, EXCLUDED.events_before), \
                 updated_at = now()",
            )
            .bind(cutoff)
            .execute(s.pool())
            .await
            .map(drop)
            .map_err(super::postgres::classify),
            Self::Sqlite(s) => sqlx::query(
                "INSERT INTO retention_horizon (id, events_before) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET events_before = \
                 max(retention_horizon.events_before, excluded.events_before), \
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            )
            .bind(cutoff)
            .execute(s.pool())
            .await
            .map(drop)
            .map_err(super::sqlite::classify),
        }
    }

    /// Each table's one batched DELETE: `$1`/`?1` the cutoff day, `$2`/`?2` the batch.
    fn retention_steps(&self) -> Vec<(Table, &'static str)> {
        match self {
            // call_events: the whole weeks went with their partitions; what is left are the
            // default partition's rows: by their own day when they have one (a late event
            // of a week already removed, whose partition is not made again), else (no
            // time in the body: 1970-01-01) by when they arrived.
            Self::Postgres(_) => vec![
                (
                    Table::Events,
                    "DELETE FROM call_events_default WHERE ctid IN (SELECT ctid FROM \
                     call_events_default WHERE received_at < ($1::date::timestamp AT TIME ZONE 'UTC') \
                     OR (event_day >= DATE '2000-01-01' AND event_day < $1::date) LIMIT $2)",
                ),
                (
                    Table::Rejected,
                    "DELETE FROM rejected_deliveries WHERE id IN (SELECT id FROM \
                     rejected_deliveries WHERE received_at < ($1::date::timestamp AT TIME ZONE 'UTC') \
                     ORDER BY received_at LIMIT $2)",
                ),
                (
                    Table::Forwarded,
                    "DELETE FROM forward_outbox WHERE (event_id, destination) IN \
                     (SELECT event_id, destination FROM forward_outbox WHERE state <> 'pending' \
                     AND created_at < ($1::date::timestamp AT TIME ZONE 'UTC') ORDER BY event_id LIMIT $2)",
                ),
                (
                    Table::Records,
                    "DELETE FROM call_records WHERE (sdkappid, call_id) IN (SELECT sdkappid, \
                     call_id FROM call_records WHERE day < $1::date LIMIT $2)",
                ),
                (
                    Table::RollupCalls,
                    "DELETE FROM rollup_calls WHERE (sdkappid, call_id) IN (SELECT sdkappid, \
                     call_id FROM rollup_calls WHERE day < $1::date LIMIT $2)",
                ),
            ],
            Self::Sqlite(_) => vec![
                (
                    Table::Events,
                    "DELETE FROM call_events WHERE id IN (SELECT id FROM call_events \
                     WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                ),
                (
                    Table::Rejected,
                    "DELETE FROM rejected_deliveries WHERE id IN (SELECT id FROM \
                     rejected_deliveries WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                ),
                (
                    Table::Forwarded,
                    "DELETE FROM forward_outbox WHERE (event_id, destination) IN (SELECT event_id, \
                     destination FROM forward_outbox WHERE state <> 'pending' \
                     AND created_at < ?1 ORDER BY event_id LIMIT ?2)",
                ),
                (
                    Table::Records,
                    "DELETE FROM call_records WHERE rowid IN (SELECT rowid FROM call_records \
                     WHERE day < ?1 LIMIT ?2)",
                ),
                (
                    Table::RollupCalls,
                    "DELETE FROM rollup_calls WHERE (sdkappid, call_id) IN (SELECT sdkappid, call_id \
                     FROM rollup_calls WHERE day < ?1 LIMIT ?2)",
                ),
            ],
        }
    }

    /// Runs one batched DELETE until a step removes less than a batch.
    async fn delete_in_steps(
        &self,
        sql: &str,
        cutoff: &str,
        pace: Pace,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = match self {
                Self::Postgres(s) => sqlx::query(sql)
                    .bind(cutoff)
                    .bind(pace.batch)
                    .execute(s.pool())
                    .await
                    .map_err(super::postgres::classify)?
                    .rows_affected(),
                Self::Sqlite(s) => sqlx::query(sql)
                    .bind(cutoff)
                    .bind(pace.batch)
                    .execute(s.pool())
                    .await
                    .map_err(super::sqlite::classify)?
                    .rows_affected(),
            };
            total += n;
            if n < pace.batch as u64 {
                return Ok(total);
            }
            tokio::time::sleep(pace.rest).await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Table {
    Events,
    Rejected,
    Forwarded,
    Records,
    RollupCalls,
}

/// Runs `sql` (with one text parameter, or none) in a transaction of its own that waits at
/// most [`LOCK_TIMEOUT`] for its locks, and tries again, up to [`LOCK_TRIES`] times, when
/// that runs out. Answers the first column of its row, for a statement that returns a
/// boolean.
async fn under_short_lock(
    s: &super::PgStore,
    sql: &str,
    param: Option<&str>,
) -> Result<Option<bool>, StoreError> {
    let pg = super::postgres::classify;
    let mut tries = 0;
    loop {
        let mut tx = s.pool().begin().await.map_err(pg)?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        let mut query = sqlx::query_scalar::<_, bool>(sql);
        if let Some(p) = param {
            query = query.bind(p);
        }
        match query.fetch_optional(&mut *tx).await {
            Ok(answer) => {
                tx.commit().await.map_err(pg)?;
                return Ok(answer);
            }
            Err(e) if lock_timed_out(&e) && tries < LOCK_TRIES => {
                tries += 1;
                drop(tx);
                tokio::time::sleep(Duration::from_millis(100 * u64::from(tries))).await;
            }
            Err(e) => return Err(pg(e)),
        }
    }
}

fn lock_timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Drops the weekly partitions whose whole week is before `cutoff`, oldest first, each in
/// a transaction of its own that waits at most [`LOCK_TIMEOUT`] for its lock (and is
/// tried again). Returns the partitions dropped and their rows.
async fn drop_partitions(s: &super::PgStore, cutoff: NaiveDate) -> Result<(u64, u64), StoreError> {
    let pg = super::postgres::classify;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'call_events'::regclass ORDER BY c.relname",
    )
    .fetch_all(s.pool())
    .await
    .map_err(pg)?;
    let (mut dropped, mut rows) = (0, 0);
    for name in names {
        let Some(monday) = partition_monday(&name) else {
            continue;
        };
        if monday + chrono::Days::new(7) > cutoff {
            continue;
        }
        // Counted before the DROP, without its lock (a week this old takes no new rows but
        // a rare late one): counting under the lock would hold every write for the scan.
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{name}\""))
            .fetch_one(s.pool())
            .await
            .map_err(pg)?;
        under_short_lock(s, &format!("DROP TABLE IF EXISTS \"{name}\""), None).await?;
        dropped += 1;
        rows += n as u64;
        tracing::info!(partition = %name, events = n, "retention dropped a week of events");
    }
    if dropped > 0 {
        reread_partitions(s).await;
    }
    Ok((dropped, rows))
}

/// Tells the live writes which partitions exist now. A failure is only logged: the writes
/// read the list again within ten minutes, and one naming a dropped week falls back by
/// itself, so the upkeep's step has still succeeded.
async fn reread_partitions(s: &super::PgStore) {
    if let Err(e) = s.read_partitions().await {
        tracing::warn!(error = %e, "could not read the partitions of call_events after the upkeep; the writes read them again within ten minutes");
    }
}

impl super::SqliteStore {
    /// With incremental auto-vacuum (every file made by this version), gives the free
    /// pages back to the file system, 1,000 pages (4 MiB) per step with a rest between,
    /// so the writer takes the write lock in the gaps. An older file (auto-vacuum off)
    /// reuses its free pages for new rows instead; it does not grow until they are used.
    async fn give_space_back(&self, pace: Pace) -> Result<(), StoreError> {
        let sqlite = super::sqlite::classify;
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(self.pool())
            .await
            .map_err(sqlite)?;
        if mode != 2 {
            return Ok(());
        }
        loop {
            let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                .fetch_one(self.pool())
                .await
                .map_err(sqlite)?;
            if free == 0 {
                return Ok(());
            }
            sqlx::query("PRAGMA incremental_vacuum(1000)")
                .execute(self.pool())
                .await
                .map_err(sqlite)?;
            tokio::time::sleep(pace.rest).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(monday_of(d("2026-12-07")), d("2026-12-07"));
        assert_eq!(monday_of(d("2026-12-13")), d("2026-12-07"));
        assert_eq!(monday_of(d("2026-12-14")), d("2026-12-14"));
        assert_eq!(monday_of(d("2027-01-01")), d("2026-12-28"));
        assert_eq!(
            partition_monday("call_events_p20261207"),
            Some(d("2026-12-07"))
        );
        assert_eq!(partition_monday("call_events_default"), None);
        // 2026-12-07T12:00Z, 30 days: rows of 2026-11-06 and before go.
        assert_eq!(cutoff_day(1_796_644_800_000, 30), d("2026-11-07"));
    }
}
