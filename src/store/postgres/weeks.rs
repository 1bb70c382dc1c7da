//! The weekly partitions of `call_events` a live write may name.
//!
//! An upsert through the partitioned parent costs PostgreSQL the setup of `ON CONFLICT`
//! for the partition each statement's rows are routed to, about as much again as the
//! upsert itself (docs/src/benchmarks/analytics.md, "Partitions and retention"). A batch
//! whose rows all fall in one week that has its partition is therefore written into that
//! partition by name. Everything else (rows of several weeks, a week without a partition,
//! a body without a time) goes through the parent, which routes it as before.
//!
//! Writing into a partition directly is the same write: the partition holds every row of
//! its week (the default partition holds none of them once the week's partition is
//! attached, src/store/retention.rs), so the dedupe key meets the same rows. Two things
//! differ, and the statement does them itself (src/store/postgres.rs): the parent's
//! statement trigger, which queues the touched calls for the rollups, does not fire, and
//! the partition may be gone (retention dropped it, here or in another replica). A
//! partition that is gone fails the statement before anything is written; the batch is
//! then written again through the parent, and the list is read again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{Datelike as _, NaiveDate};
use sqlx::PgPool;

use crate::protocol::EventRow;
use crate::store::BatchRow;

/// How long a read list of partitions is trusted. New weeks are made two weeks ahead
/// (src/store/retention.rs), so a list this old still names the current week's partition.
const FRESH_FOR: Duration = Duration::from_secs(600);
/// How soon a failed reading is tried again: while the database is away, writes must not
/// each wait for one.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long a reading may take before it counts as failed.
const READ_WITHIN: Duration = Duration::from_secs(5);

const MS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, Default)]
pub(crate) struct Weeks {
    state: RwLock<State>,
    /// One reading at a time; the writes use what is known meanwhile.
    reading: AtomicBool,
    /// Bumped by [`Weeks::forget`]: a reading that began before is not kept.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The Mondays (days since 1970-01-01) whose partitions are attached.
    mondays: BTreeSet<i64>,
    /// When the list was last read, and whether that succeeded.
    read_at: Option<(Instant, bool)>,
}

/// The partition key of a row, in days since 1970-01-01, which the statement binds: the
/// day of the event's own time as its body gives it (`EventRow::own_day`), or, for a row
/// journaled before rows carried it, as `callhook_event_day` computes it: the UTC day of
/// the first of its start, event, end and accept times, else 1970-01-01.
pub(crate) fn event_day(row: &EventRow) -> i64 {
    row.own_day.unwrap_or_else(|| {
        first_day([row.start_call_ts, row.event_time, row.end_ts, row.accept_ts])
    })
}

/// The UTC day of the first time given, else 0.
fn first_day(times: [Option<i64>; 4]) -> i64 {
    times
        .into_iter()
        .flatten()
        .next()
        .map_or(0, |ms| ms.div_euclid(MS_PER_DAY))
}

/// The Monday of a day's week (1970-01-01 was a Thursday).
pub(crate) fn monday(day: i64) -> i64 {
    day - (day + 3).rem_euclid(7)
}

/// The name callhook gives a week's partition (`callhook_ensure_week`).
pub(crate) fn partition_name(monday: i64) -> Option<String> {
    let date = NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::TimeDelta::try_days(monday)?)?;
    Some(format!("call_events_p{}", date.format("%Y%m%d")))
}

/// What the statement's check says of a table that is no longer a partition of
/// call_events (detached by hand): see `attached` in src/store/postgres.rs.
pub(crate) const NOT_A_PARTITION: &str = "is not a partition of call_events (callhook)";

/// Whether a statement naming a partition failed because that partition is not (or no
/// longer) the one for its rows: dropped, or its rows outside its bounds. Nothing was
/// written then; the rows go through the parent.
pub(crate) fn gone(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    match db.code().as_deref() {
        // undefined_table: dropped before the statement was planned.
        Some("42P01") => true,
        Some("23514") => db.message().contains("partition constraint"),
        // Dropped while the statement waited for its lock.
        Some("XX000") => db.message().contains("could not open relation"),
        // Detached: the statement's own check.
        Some("22P02") => db.message().contains(NOT_A_PARTITION),
        _ => false,
    }
}

impl Weeks {
    /// The Monday of the partition the whole batch may be written into, if any.
    pub(crate) fn target(&self, rows: &[BatchRow<'_>]) -> Option<i64> {
        let first = monday(event_day(rows.first()?.row));
        if rows.iter().any(|r| monday(event_day(r.row)) != first) {
            return None;
        }
        let state = self.state.read().ok()?;
        state.mondays.contains(&first).then_some(first)
    }

    /// Starts reading the list again, in a task of its own, when it is old or was never
    /// read; the write that notices goes on with what is known (a week not known goes
    /// through the parent). A failure is tried again after [`RETRY_AFTER`].
    pub(crate) fn refresh_if_stale(self: &Arc<Self>, pool: &PgPool) {
        let due = match self.state.read().map(|s| s.read_at) {
            Ok(None) => true,
            Ok(Some((at, ok))) => at.elapsed() >= if ok { FRESH_FOR } else { RETRY_AFTER },
            Err(_) => false,
        };
        if !due || self.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however the task ends, a dropped future included.
        struct Reading(Arc<Weeks>);
        impl Drop for Reading {
            fn drop(&mut self) {
                self.0.reading.store(false, Ordering::Release);
            }
        }
        let reading = Reading(Arc::clone(self));
        let pool = pool.clone();
        tokio::spawn(async move {
            let weeks = &reading.0;
            let read = tokio::time::timeout(READ_WITHIN, weeks.read(&pool)).await;
            if !matches!(read, Ok(Ok(()))) {
                let why = match read {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {READ_WITHIN:?}"),
                };
                tracing::debug!(error = %why, "could not read the partitions of call_events; writing through the parent");
                if let Ok(mut s) = weeks.state.write() {
                    s.read_at = Some((Instant::now(), false));
                }
            }
        });
    }

    /// Reads which weeks have their partition now.
    pub(crate) async fn read(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let generation = self.generation.load(Ordering::Acquire);
        // The bound is compared in SQL, where it and the expected text follow the same
        // DateStyle.
        let parts: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, \
                 LATERAL (SELECT to_date(substr(c.relname, 14), 'YYYYMMDD') AS monday) d \
             WHERE i.inhparent = 'call_events'::regclass \
               AND c.relname ~ '^call_events_p[0-9]{8}$' \
               AND pg_get_expr(c.relpartbound, c.oid) = \
                   format('FOR VALUES FROM (%L) TO (%L)', d.monday, d.monday + 7)",
        )
        .fetch_all(pool)
        .await?;
        let mondays = parts.iter().filter_map(|name| week_of(name)).collect();
        if let Ok(mut s) = self.state.write() {
            // A write found a named partition gone since this reading began: what it read
            // may still name that partition, so it is not kept (the next write reads again).
            if self.generation.load(Ordering::Acquire) == generation {
                *s = State {
                    mondays,
                    read_at: Some((Instant::now(), true)),
                };
            }
        }
        Ok(())
    }

    /// After a write into a partition failed as [`gone`]: forget the list until it is
    /// read again.
    pub(crate) fn forget(&self) {
        if let Ok(mut s) = self.state.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            *s = State::default();
        }
    }
}

/// The Monday of a partition named as callhook names them (its bounds checked by the
/// query), else None.
fn week_of(name: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(name.strip_prefix("call_events_p")?, "%Y%m%d").ok()?;
    if date.weekday() != chrono::Weekday::Mon {
        return None;
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some(date.signed_duration_since(epoch).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> i64 {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("{s}: {e}"));
        d.signed_duration_since(NaiveDate::default()).num_days()
    }

    #[test]
    fn mondays_and_names() {
        assert_eq!(monday(day("2026-12-07")), day("2026-12-07"));
        assert_eq!(monday(day("2026-12-13")), day("2026-12-07"));
        assert_eq!(monday(day("2026-12-14")), day("2026-12-14"));
        assert_eq!(monday(0), day("1969-12-29"));
        assert_eq!(monday(-1), day("1969-12-29"));
        assert_eq!(
            partition_name(day("2026-12-07")).as_deref(),
            Some("call_events_p20261207")
        );
    }

    #[test]
    fn only_callhooks_own_weeks_are_named() {
        assert_eq!(week_of("call_events_p20261207"), Some(day("2026-12-07")));
        assert_eq!(week_of("call_events_default"), None);
        // Not a Monday, not a date, another name.
        assert_eq!(week_of("call_events_p20261208"), None);
        assert_eq!(week_of("call_events_p20261399"), None);
        assert_eq!(week_of("events_p20261207"), None);
    }

    #[test]
    fn the_day_is_the_first_known_time() {
        assert_eq!(first_day([None; 4]), 0);
        assert_eq!(first_day([None, None, None, Some(-1)]), -1);
        assert_eq!(
            first_day([None, Some(MS_PER_DAY * 3 + 5), None, Some(-1)]),
            3
        );
        assert_eq!(first_day([Some(MS_PER_DAY * 10), Some(5), None, None]), 10);
        assert_eq!(first_day([None, None, Some(MS_PER_DAY - 1), None]), 0);
    }
}
