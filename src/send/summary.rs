//! What a run did: the counters kept while it runs, and the summary printed at the end.
//!
//! The text summary is one `name value…` line per fact, names padded to one column.
//! The names, their order and the first number on each line are stable (scripts and the
//! tests parse them); `answer` and `failure` lines repeat, one per distinct answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Distinct answer messages and failure reasons kept; the rest are counted as "(other)".
const MAX_KINDS: usize = 32;
const OTHER: &str = "(other)";

/// Counters, updated by every delivery task (behind a mutex: updates are tiny).
#[derive(Debug, Default)]
pub struct Stats {
    pub deliveries: u64,
    pub by_family: BTreeMap<&'static str, u64>,
    pub acknowledged: u64,
    pub dropped: u64,
    pub attempts: u64,
    pub retried: u64,
    pub retry_attempts: u64,
    /// Deliveries that failed at least once and are not finished yet.
    pub retrying: u64,
    latencies_us: Vec<u32>,
    answers: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
}

impl Stats {
    pub fn dispatched(&mut self, family: &'static str) {
        self.deliveries += 1;
        *self.by_family.entry(family).or_default() += 1;
    }

    /// An attempt that was not acknowledged. `first` = the delivery's first failure.
    pub fn failed_attempt(&mut self, reason: String, first: bool) {
        self.attempts += 1;
        if first {
            self.retrying += 1;
        }
        count(&mut self.failures, reason);
    }

    pub fn acknowledged_attempt(&mut self, message: String, latency: Duration) {
        self.attempts += 1;
        self.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        count(&mut self.answers, message);
    }

    /// A delivery is over: acknowledged after `attempts` attempts, or dropped.
    pub fn finished(&mut self, attempts: u64, acknowledged: bool) {
        if acknowledged {
            self.acknowledged += 1;
        } else {
            self.dropped += 1;
        }
        if attempts > 1 {
            self.retried += 1;
            self.retry_attempts += attempts - 1;
        }
        if attempts > 1 || !acknowledged {
            // It had failed at least once.
            self.retrying = self.retrying.saturating_sub(1);
        }
    }

    /// Adds another engine's counts (a run that sends through two engines: the call
    /// families and TRTC's own callbacks).
    pub fn absorb(&mut self, other: Stats) {
        self.deliveries += other.deliveries;
        for (family, n) in other.by_family {
            *self.by_family.entry(family).or_default() += n;
        }
        self.acknowledged += other.acknowledged;
        self.dropped += other.dropped;
        self.attempts += other.attempts;
        self.retried += other.retried;
        self.retry_attempts += other.retry_attempts;
        self.retrying += other.retrying;
        self.latencies_us.extend(other.latencies_us);
        for (k, n) in other.answers {
            *self.answers.entry(k).or_default() += n;
        }
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
    }

    /// The summary, consuming the latencies.
    pub fn summarize(&mut self, run: RunInfo, elapsed: Duration) -> Summary {
        let mut lat = std::mem::take(&mut self.latencies_us);
        lat.sort_unstable();
        let latency_ms = (!lat.is_empty()).then(|| Latency {
            p50: percentile(&lat, 50),
            p90: percentile(&lat, 90),
            p99: percentile(&lat, 99),
            max: lat.last().map_or(0.0, |&v| f64::from(v) / 1000.0),
        });
        let secs = elapsed.as_secs_f64();
        let finished = self.acknowledged + self.dropped;
        Summary {
            run,
            deliveries: self.deliveries,
            deliveries_by_family: self
                .by_family
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            acknowledged: self.acknowledged,
            retried: self.retried,
            retry_attempts: self.retry_attempts,
            dropped: self.dropped,
            unfinished: self.deliveries - finished,
            attempts: self.attempts,
            latency_ms,
            elapsed_s: secs,
            deliveries_per_s: if secs > 0.0 {
                finished as f64 / secs
            } else {
                0.0
            },
            answers: self.answers.clone(),
            failures: self.failures.clone(),
        }
    }
}

fn count(map: &mut BTreeMap<String, u64>, key: String) {
    if map.len() >= MAX_KINDS && !map.contains_key(&key) {
        *map.entry(OTHER.to_owned()).or_default() += 1;
    } else {
        *map.entry(key).or_default() += 1;
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile(sorted_us: &[u32], p: usize) -> f64 {
    let rank = (sorted_us.len() * p).div_ceil(100).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |&v| f64::from(v) / 1000.0)
}

/// What was run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The target URL, secrets redacted.
    pub url: String,
    pub sdkappid: i64,
    /// `status`, `event`, `v4`, `all`, or `example`.
    pub family: String,
    /// Generator seed and end time (absent for `--example`).
    pub seed: Option<u64>,
    pub end_time: Option<i64>,
    pub calls: u64,
    /// The run was stopped (Ctrl-C) before every delivery was finished.
    pub interrupted: bool,
}

/// Latency of acknowledged attempts, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The end-of-run summary (`--summary-json` writes it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub run: RunInfo,
    /// Deliveries started (one per callback; retries are attempts of the same delivery).
    pub deliveries: u64,
    pub deliveries_by_family: BTreeMap<String, u64>,
    /// Answered HTTP 2xx with `ErrorCode` 0.
    pub acknowledged: u64,
    /// Deliveries that needed more than one attempt, and how many attempts beyond the first.
    pub retried: u64,
    pub retry_attempts: u64,
    /// Deliveries given up after the whole retry schedule.
    pub dropped: u64,
    /// Deliveries neither acknowledged nor dropped (the run was interrupted).
    pub unfinished: u64,
    pub attempts: u64,
    /// Of acknowledged attempts; absent when none was.
    pub latency_ms: Option<Latency>,
    pub elapsed_s: f64,
    /// Finished deliveries per second of the run.
    pub deliveries_per_s: f64,
    /// `ErrorMessage` of acknowledged attempts → count (e.g. duplicates).
    pub answers: BTreeMap<String, u64>,
    /// Why attempts failed → count.
    pub failures: BTreeMap<String, u64>,
}

impl Summary {
    /// The text summary (see the module documentation for its stable shape).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<13} {value}");
        };
        line(
            "target",
            format!("{} (sdkappid {})", self.run.url, self.run.sdkappid),
        );
        line("family", self.run.family.clone());
        if let (Some(seed), Some(end)) = (self.run.seed, self.run.end_time) {
            line(
                "seed",
                format!("{seed} (--seed {seed} --end-time {end} repeats these calls)"),
            );
        }
        line("calls", self.run.calls.to_string());
        let families: Vec<String> = self
            .deliveries_by_family
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        line(
            "deliveries",
            format!("{} ({})", self.deliveries, families.join(", ")),
        );
        line("acknowledged", self.acknowledged.to_string());
        line(
            "retried",
            format!("{} ({} extra attempts)", self.retried, self.retry_attempts),
        );
        line("dropped", self.dropped.to_string());
        if self.run.interrupted {
            line("unfinished", format!("{} (interrupted)", self.unfinished));
        }
        line("attempts", self.attempts.to_string());
        line(
            "latency",
            match self.latency_ms {
                Some(l) => format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    l.p50, l.p90, l.p99, l.max
                ),
                None => "- (nothing was acknowledged)".to_owned(),
            },
        );
        line(
            "elapsed",
            format!(
                "{:.2} s ({:.1} deliveries/s)",
                self.elapsed_s, self.deliveries_per_s
            ),
        );
        for (message, n) in &self.answers {
            line("answer", format!("{n} {message:?}"));
        }
        for (reason, n) in &self.failures {
            line("failure", format!("{n} {reason}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            url: "http://127.0.0.1:8080/".into(),
            sdkappid: 1_400_000_001,
            family: "status".into(),
            seed: Some(42),
            end_time: Some(1_704_900_000),
            calls: 2,
            interrupted: false,
        }
    }

    #[test]
    fn counts_and_text() {
        let mut s = Stats::default();
        for _ in 0..4 {
            s.dispatched("status");
        }
        s.acknowledged_attempt("Success".into(), Duration::from_millis(2));
        s.finished(1, true);
        s.failed_attempt("HTTP 503, ErrorCode 70005 \"overloaded\"".into(), true);
        s.acknowledged_attempt(
            "Success (duplicate delivery, already stored)".into(),
            Duration::from_millis(4),
        );
        s.finished(2, true);
        s.acknowledged_attempt("Success".into(), Duration::from_millis(1));
        s.finished(1, true);
        s.failed_attempt("timeout".into(), true);
        s.failed_attempt("timeout".into(), false);
        s.finished(2, false);
        assert_eq!(s.retrying, 0);
        let sum = s.summarize(info(), Duration::from_secs(2));
        assert_eq!(
            (sum.deliveries, sum.acknowledged, sum.dropped, sum.attempts),
            (4, 3, 1, 6)
        );
        assert_eq!((sum.retried, sum.retry_attempts), (2, 2));
        let l = sum.latency_ms.unwrap_or(Latency {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
        });
        assert_eq!((l.p50, l.p90, l.max), (2.0, 4.0, 4.0));
        let text = sum.to_text();
        let lines: Vec<&str> = text.lines().collect();
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            names,
            [
                "target",
                "family",
                "seed",
                "calls",
                "deliveries",
                "acknowledged",
                "retried",
                "dropped",
                "attempts",
                "latency",
                "elapsed",
                "answer",
                "answer",
                "failure",
                "failure"
            ]
        );
        assert!(text.contains("deliveries    4 (status 4)\n"), "{text}");
        assert!(
            text.contains("retried       2 (2 extra attempts)\n"),
            "{text}"
        );
        assert!(text.contains("answer        2 \"Success\"\n"), "{text}");
        assert!(text.contains("failure       2 timeout\n"), "{text}");
        assert!(
            text.contains("elapsed       2.00 s (2.0 deliveries/s)\n"),
            "{text}"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[7000], 90), 7.0);
    }

    #[test]
    fn distinct_kinds_are_capped() {
        let mut m = BTreeMap::new();
        for i in 0..40 {
            count(&mut m, format!("reason {i}"));
        }
        assert_eq!(m.len(), MAX_KINDS + 1);
        assert_eq!(m.get(OTHER), Some(&8));
    }
}
