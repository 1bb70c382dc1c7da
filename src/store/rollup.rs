//! Incremental rollups: the daily statistics of `call_stats_daily` and `report` kept as
//! calls change (migrations/postgres/0010_rollups.sql says how they stay right).
//!
//! Writes queue every call they touch (a trigger, in the writing transaction). A rollup
//! pass ([`Store::rollup_pass`], run by the service's rollup task) takes queued calls in
//! order, folds each again from `call_rollup`, and moves the difference from the call's
//! last fold (`rollup_calls`) into `rollup_days` and `rollup_talk`. Readers
//! ([`Store::period_stats`]) read the rollups and apply the calls still queued, in the same
//! snapshot, so their answer is what a fold of every event would give.

mod postgres;
mod sqlite;

use std::collections::{BTreeMap, BTreeSet};

use super::{DailyStats, DayRange, Store, StoreError};

/// Each doubling of talk time above 256 ms is cut into 2^SUB_BITS buckets.
pub const SUB_BITS: u32 = 7;

/// Talk times (ms) where a bucket always starts: the bounds of `report`'s histogram, so
/// that its bars count exactly.
pub const HISTOGRAM_BOUNDS: [i64; 9] = [
    10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_200_000, 1_800_000, 3_600_000,
];

/// The lower bound of the bucket a talk time (ms) counts in: the time itself below 256 ms
/// (negative times included), else the time with all but its top `SUB_BITS + 1` bits
/// cleared, raised to the histogram bound below it when that is higher.
pub fn talk_bucket(ms: i64) -> i64 {
    if ms < 256 {
        return ms;
    }
    let top = 63 - i64::from(ms.leading_zeros());
    let shift = top - i64::from(SUB_BITS);
    let floor = (ms >> shift) << shift;
    let bound = HISTOGRAM_BOUNDS
        .iter()
        .rev()
        .find(|&&b| b <= ms)
        .copied()
        .unwrap_or(0);
    floor.max(bound)
}

/// One bucket of talk times: how many, and their sum (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TalkBucket {
    pub calls: i64,
    pub talk_ms_sum: i64,
}

/// Talk times by bucket (lower bound, ms), ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TalkTimes(pub BTreeMap<i64, TalkBucket>);

impl TalkTimes {
    /// Counts each time in its bucket.
    pub fn from_times(times_ms: impl IntoIterator<Item = i64>) -> Self {
        let mut t = Self::default();
        for ms in times_ms {
            t.add(talk_bucket(ms), 1, ms);
        }
        t
    }

    fn add(&mut self, bucket: i64, calls: i64, talk_ms_sum: i64) {
        let b = self.0.entry(bucket).or_default();
        b.calls += calls;
        b.talk_ms_sum += talk_ms_sum;
        // A delta may hold no call and a sum: a call whose talk time changed within its
        // bucket. Only a bucket with neither is empty.
        if *b == TalkBucket::default() {
            self.0.remove(&bucket);
        }
    }

    /// How many times.
    pub fn calls(&self) -> i64 {
        self.0.values().map(|b| b.calls).sum()
    }

    /// Their sum (ms).
    pub fn sum_ms(&self) -> i64 {
        self.0.values().map(|b| b.talk_ms_sum).sum()
    }

    /// The mean in seconds, rounded half up to the millisecond (on whole milliseconds, as
    /// `call_stats_daily` computes it).
    pub fn avg_seconds(&self) -> Option<f64> {
        let n = self.calls();
        (n > 0).then(|| ((2 * self.sum_ms() + n) / (2 * n)) as f64 / 1000.0)
    }

    /// The time at 0-based rank `rank`, read as the mean of its bucket.
    fn at_rank(&self, rank: i64) -> Option<f64> {
        let mut below = 0;
        for b in self.0.values() {
            if rank < below + b.calls {
                return Some(b.talk_ms_sum as f64 / b.calls as f64);
            }
            below += b.calls;
        }
        None
    }

    /// `percentile_cont(p)` over the times, each bucket's read as their mean, in seconds
    /// rounded half up to the millisecond: the same floating-point steps as the view.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.calls();
        if n == 0 {
            return None;
        }
        let pos = p * (n - 1) as f64;
        let lo = self.at_rank(pos.floor() as i64)?;
        let hi = self.at_rank(pos.ceil() as i64)?;
        let value = lo + (pos - pos.floor()) * (hi - lo);
        Some((value + 0.5).trunc() / 1000.0)
    }

    /// Adds another set of times to these.
    pub fn merge(&mut self, other: &TalkTimes) {
        for (&bucket, b) in &other.0 {
            self.add(bucket, b.calls, b.talk_ms_sum);
        }
    }
}

/// A call as the rollups count it: its day, outcome and talk time.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallFold {
    pub sdkappid: i64,
    pub call_id: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub outcome: Option<String>,
    pub talk_ms: Option<i64>,
}

/// One `rollup_days` row's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub calls: i64,
    pub answered: i64,
    pub not_answer: i64,
    pub reject: i64,
    pub call_busy: i64,
    pub cancel: i64,
    pub interrupt: i64,
    pub talk_calls: i64,
    pub talk_ms_sum: i64,
}

impl DayCounts {
    fn add(&mut self, fold: &CallFold, sign: i64) {
        self.calls += sign;
        match fold.outcome.as_deref() {
            Some("normal_end") => self.answered += sign,
            Some("not_answer") => self.not_answer += sign,
            Some("reject") => self.reject += sign,
            Some("call_busy") => self.call_busy += sign,
            Some("cancel") => self.cancel += sign,
            Some("interrupt") => self.interrupt += sign,
            _ => {}
        }
        if let Some(ms) = fold.talk_ms {
            self.talk_calls += sign;
            self.talk_ms_sum += sign * ms;
        }
    }

    fn plus(&mut self, d: &DayCounts) {
        self.calls += d.calls;
        self.answered += d.answered;
        self.not_answer += d.not_answer;
        self.reject += d.reject;
        self.call_busy += d.call_busy;
        self.cancel += d.cancel;
        self.interrupt += d.interrupt;
        self.talk_calls += d.talk_calls;
        self.talk_ms_sum += d.talk_ms_sum;
    }

    /// The `call_stats_daily` row of a day with these counts and talk times.
    pub fn stats(&self, day: chrono::NaiveDate, sdkappid: i64, talk: &TalkTimes) -> DailyStats {
        DailyStats {
            day,
            sdkappid,
            calls: self.calls,
            answered: self.answered,
            not_answer: self.not_answer,
            reject: self.reject,
            call_busy: self.call_busy,
            cancel: self.cancel,
            interrupt: self.interrupt,
            answer_rate: self.answered as f64 / self.calls as f64,
            avg_talk_seconds: talk.avg_seconds(),
            p50_talk_seconds: talk.percentile(0.5),
            p90_talk_seconds: talk.percentile(0.9),
        }
    }
}

/// (day, sdkappid), the key of `rollup_days`.
pub type DayKey = (String, i64);

/// What a set of refolded calls changes in the rollups.
#[derive(Debug, Default)]
pub struct Deltas {
    pub days: BTreeMap<DayKey, DayCounts>,
    pub talk: BTreeMap<DayKey, TalkTimes>,
}

impl Deltas {
    /// The change from each call's last fold (`old`) to its new one (`new`).
    pub fn between(old: &[CallFold], new: &[CallFold]) -> Self {
        let mut d = Self::default();
        for f in old {
            d.add(f, -1);
        }
        for f in new {
            d.add(f, 1);
        }
        d.days.retain(|_, c| *c != DayCounts::default());
        d.talk.retain(|_, t| !t.0.is_empty());
        d
    }

    fn add(&mut self, fold: &CallFold, sign: i64) {
        let key = (fold.day.clone(), fold.sdkappid);
        self.days.entry(key.clone()).or_default().add(fold, sign);
        if let Some(ms) = fold.talk_ms {
            self.talk
                .entry(key)
                .or_default()
                .add(talk_bucket(ms), sign, sign * ms);
        }
    }

    /// Only the days of a period (and of one app, when asked).
    fn within(mut self, range: DayRange, sdkappid: Option<i64>) -> Self {
        let (since, until) = (range.since.to_string(), range.until.to_string());
        let keep = |(day, app): &DayKey| {
            *day >= since && *day < until && sdkappid.is_none_or(|a| a == *app)
        };
        self.days.retain(|k, _| keep(k));
        self.talk.retain(|k, _| keep(k));
        self
    }

    /// The (day, app) keys touched.
    fn keys(&self) -> BTreeSet<DayKey> {
        self.days.keys().chain(self.talk.keys()).cloned().collect()
    }
}

/// What a period's analytics read: its `call_stats_daily` rows and its talk times, every
/// app of the read together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodStats {
    pub days: Vec<DailyStats>,
    pub talk: TalkTimes,
}

/// One `rollup_days` row as both backends return it.
pub(crate) type DayRow = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

fn counts_of(row: &DayRow) -> DayCounts {
    DayCounts {
        calls: row.2,
        answered: row.3,
        not_answer: row.4,
        reject: row.5,
        call_busy: row.6,
        cancel: row.7,
        interrupt: row.8,
        talk_calls: row.9,
        talk_ms_sum: row.10,
    }
}

fn parse_day(day: &str) -> Result<chrono::NaiveDate, StoreError> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|e| StoreError::Other(format!("rollup day {day:?}: {e}")))
}

/// Replaces the `call_stats_daily` rows of the days the queued calls change: each such
/// day's stored counts and talk times (`stored`) plus the deltas, recomputed.
pub(crate) fn corrected_days(
    mut days: Vec<DailyStats>,
    deltas: &Deltas,
    stored: &BTreeMap<DayKey, (DayCounts, TalkTimes)>,
) -> Result<Vec<DailyStats>, StoreError> {
    for key in deltas.keys() {
        let (mut counts, mut talk) = stored.get(&key).cloned().unwrap_or_default();
        if let Some(d) = deltas.days.get(&key) {
            counts.plus(d);
        }
        if let Some(t) = deltas.talk.get(&key) {
            talk.merge(t);
        }
        let day = parse_day(&key.0)?;
        days.retain(|r| !(r.day == day && r.sdkappid == key.1));
        if counts.calls > 0 {
            days.push(counts.stats(day, key.1, &talk));
        }
    }
    days.sort_by_key(|r| (r.day, r.sdkappid));
    Ok(days)
}

impl Store {
    /// Folds up to `limit` queued calls into the rollups, in one transaction; returns how
    /// many queue entries it took (0: none was queued).
    pub async fn rollup_pass(&self, limit: i64) -> Result<usize, StoreError> {
        match self {
            Self::Postgres(s) => s.rollup_pass(limit).await,
            Self::Sqlite(s) => s.rollup_pass(limit).await,
        }
    }

    /// Folds what is queued now (not what writes queue meanwhile, so a busy service
    /// cannot keep it going); returns the queue entries taken. On SQLite each pass is
    /// followed by a rest as long as it, so that a running service's writer gets the write
    /// lock between passes.
    pub async fn rollup_catch_up(&self) -> Result<usize, StoreError> {
        let (queued, _) = self.rollup_backlog().await?;
        let (limit, rest) = if self.is_remote() {
            (PASS_LIMIT, 0)
        } else {
            (64, 1)
        };
        let mut total = 0;
        while (total as i64) < queued {
            let started = std::time::Instant::now();
            let n = self.rollup_pass(limit).await?;
            if n == 0 {
                break;
            }
            total += n;
            tokio::time::sleep(started.elapsed() * rest).await;
        }
        Ok(total)
    }

    /// How far behind the rollups are: queue entries waiting, and the age (seconds) of
    /// the oldest.
    pub async fn rollup_backlog(&self) -> Result<(i64, f64), StoreError> {
        match self {
            Self::Postgres(s) => s.rollup_backlog().await,
            Self::Sqlite(s) => s.rollup_backlog().await,
        }
    }

    /// A period's `call_stats_daily` rows (ordered by day and app) and talk times, exact:
    /// the rollups with the calls still queued applied, read in one snapshot.
    pub async fn period_stats(
        &self,
        range: DayRange,
        sdkappid: Option<i64>,
    ) -> Result<PeriodStats, StoreError> {
        match self {
            Self::Postgres(s) => s.period_stats(range, sdkappid).await,
            Self::Sqlite(s) => s.period_stats(range, sdkappid).await,
        }
    }
}

/// Queue entries one pass takes at most.
pub const PASS_LIMIT: i64 = 500;

/// The period's stats from what a backend read in one snapshot: the view's rows, the
/// period's merged buckets, and for the days the queued calls change, their stored rows.
pub(crate) fn assemble(
    view_rows: Vec<DailyStats>,
    mut talk: TalkTimes,
    deltas: Deltas,
    stored: &BTreeMap<DayKey, (DayCounts, TalkTimes)>,
) -> Result<PeriodStats, StoreError> {
    for t in deltas.talk.values() {
        talk.merge(t);
    }
    let days = corrected_days(view_rows, &deltas, stored)?;
    Ok(PeriodStats { days, talk })
}

/// What a pass writes to `rollup_calls`: the calls whose fold is gone (no event or record
/// left), and the folds that are new or changed (a call folded again unchanged, as most
/// are, writes nothing).
fn changes<'a>(old: &[CallFold], new: &'a [CallFold]) -> (Vec<(i64, String)>, Vec<&'a CallFold>) {
    let key = |f: &CallFold| (f.sdkappid, f.call_id.clone());
    let new_keys: BTreeSet<(i64, String)> = new.iter().map(key).collect();
    let old_by_key: BTreeMap<(i64, String), &CallFold> = old.iter().map(|f| (key(f), f)).collect();
    let vanished = old_by_key
        .keys()
        .filter(|k| !new_keys.contains(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|f| old_by_key.get(&key(f)) != Some(f))
        .collect();
    (vanished, changed)
}

/// Queue entries above which a read folds the period's calls from scratch instead of
/// applying every queued call (after an upgrade, the whole history is queued once).
pub const CORRECTION_LIMIT: i64 = 20_000;

/// A period's statistics folded from scratch: its calls' folds (`call_rollup`, filtered
/// on the period), counted with the rollups' own arithmetic.
pub(crate) fn from_folds(folds: &[CallFold]) -> Result<PeriodStats, StoreError> {
    let d = Deltas::between(&[], folds);
    let mut talk = TalkTimes::default();
    for t in d.talk.values() {
        talk.merge(t);
    }
    let days = corrected_days(Vec::new(), &d, &BTreeMap::new())?;
    Ok(PeriodStats { days, talk })
}

/// Distinct (sdkappid, call_id) of queue entries, as two arrays.
fn distinct_calls(taken: Vec<(i64, String)>) -> (Vec<i64>, Vec<String>) {
    let set: BTreeSet<(i64, String)> = taken.into_iter().collect();
    set.into_iter().unzip()
}

/// The stored rollups of some days: counts and talk times by (day, app).
type Stored = BTreeMap<DayKey, (DayCounts, TalkTimes)>;

/// Stored (day, app) rows as the correction needs them.
fn stored_map(rows: Vec<DayRow>, buckets: Vec<(String, i64, i64, i64, i64)>) -> Stored {
    let mut map: BTreeMap<DayKey, (DayCounts, TalkTimes)> = BTreeMap::new();
    for row in &rows {
        map.entry((row.0.clone(), row.1)).or_default().0 = counts_of(row);
    }
    for (day, app, bucket, calls, sum) in buckets {
        map.entry((day, app)).or_default().1.add(bucket, calls, sum);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_256_ms_and_within_1_in_128_above() {
        for ms in [-5, 0, 1, 255] {
            assert_eq!(talk_bucket(ms), ms);
        }
        assert_eq!(talk_bucket(256), 256);
        assert_eq!(talk_bucket(257), 256);
        for ms in (256..5_000_000).step_by(997) {
            let b = talk_bucket(ms);
            assert!(b <= ms && ms - b <= ms / 128, "{ms} in bucket {b}");
        }
    }

    #[test]
    fn histogram_bounds_start_a_bucket() {
        for &b in &HISTOGRAM_BOUNDS {
            assert_eq!(talk_bucket(b), b);
            assert!(talk_bucket(b - 1) < b);
        }
    }

    #[test]
    fn whole_seconds_up_to_two_minutes_each_have_a_bucket() {
        let buckets: BTreeSet<i64> = (0..=131).map(|s| talk_bucket(s * 1000)).collect();
        assert_eq!(buckets.len(), 132);
    }

    #[test]
    fn percentile_is_percentile_cont_when_buckets_hold_one_time() {
        let t = TalkTimes::from_times([1000, 2000, 3000, 4000]);
        assert_eq!(t.percentile(0.5), Some(2.5));
        assert_eq!(t.percentile(0.9), Some(3.7));
        assert_eq!(t.avg_seconds(), Some(2.5));
        assert_eq!(TalkTimes::default().percentile(0.5), None);
        assert_eq!(TalkTimes::from_times([0, 1]).percentile(0.5), Some(0.001));
    }

    #[test]
    fn percentile_reads_a_shared_bucket_at_its_mean() {
        // 600,000 and 600,100 ms share a bucket (width 4,096 ms from 600,000).
        let t = TalkTimes::from_times([600_000, 600_100]);
        assert_eq!(t.0.len(), 1);
        assert_eq!(t.percentile(0.5), Some(600.05));
        assert_eq!(t.percentile(0.9), Some(600.05));
    }

    #[test]
    fn deltas_move_a_call_between_days() {
        let fold = |day: &str, outcome: &str, talk| CallFold {
            sdkappid: 1,
            call_id: "c".into(),
            day: day.into(),
            outcome: Some(outcome.into()),
            talk_ms: talk,
        };
        let d = Deltas::between(
            &[fold("2026-01-02", "not_answer", None)],
            &[fold("2026-01-01", "normal_end", Some(5000))],
        );
        let old = &d.days[&("2026-01-02".to_string(), 1)];
        assert_eq!((old.calls, old.not_answer), (-1, -1));
        let new = &d.days[&("2026-01-01".to_string(), 1)];
        assert_eq!((new.calls, new.answered, new.talk_ms_sum), (1, 1, 5000));
        // A talk time that changes within its bucket changes the bucket's sum.
        let d = Deltas::between(
            &[fold("2026-01-01", "normal_end", Some(300_000))],
            &[fold("2026-01-01", "normal_end", Some(301_000))],
        );
        let t = &d.talk[&("2026-01-01".to_string(), 1)];
        assert_eq!(
            t.0[&talk_bucket(300_000)],
            TalkBucket {
                calls: 0,
                talk_ms_sum: 1000
            }
        );
        // A call folded again unchanged changes nothing.
        let same = fold("2026-01-01", "normal_end", Some(5000));
        let d = Deltas::between(std::slice::from_ref(&same), std::slice::from_ref(&same));
        assert!(d.days.is_empty() && d.talk.is_empty());
    }
}
