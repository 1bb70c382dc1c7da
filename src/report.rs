//! `callhook report`: call analytics for a period of UTC days, from the
//! `call_stats_daily` view (and `call_rollup` for the period's talk times), as a terminal
//! table, JSON, CSV or one self-contained HTML page with SVG charts.
//!
//! Building ([`build`]) and rendering ([`render`]) are separate, so tests (and other
//! programs) get the same text the command prints without running a process.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::NaiveDate;

use crate::cli::{ReportArgs, ReportFormat};
use crate::config::DatabaseUrl;
use crate::store::{Completeness, DailyStats, DayRange, RoomStats, Store, TalkTimes};

mod html;

/// Days covered when `--since` is not given.
pub const DEFAULT_DAYS: i64 = 7;

/// Everything a report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub range: DayRange,
    /// The one app reported on, or `None` for all.
    pub sdkappid: Option<i64>,
    /// The `call_stats_daily` rows of the period, by day and app.
    pub days: Vec<DailyStats>,
    pub totals: Totals,
    /// Calls by talk time, over [`TALK_BUCKETS`].
    pub talk_histogram: Vec<u64>,
    /// Events of the period stored with notes (something could not be read), by the first
    /// field their notes name, most first.
    pub noted: Vec<(String, i64)>,
    /// Time in TRTC rooms from room events, beside the call callbacks' talk time; `None`
    /// when the period has no TRTC room event.
    pub rooms: Option<RoomStats>,
    /// How many of Tencent's recorded calls of the period arrived as callbacks; `None`
    /// when no record of Tencent's is stored for the period (never reconciled).
    pub completeness: Option<Completeness>,
    /// The day before which retention removed the raw events, when the period starts
    /// before it: the statistics of those days come from the daily rollups alone.
    pub removed_before: Option<String>,
}

impl Report {
    /// "In TRTC rooms (room events): 16.3 person-minutes in 3 calls, 1 of them known only
    /// from room events; talk time from the call callbacks: 3.0 minutes in 2 calls.", or
    /// `None` without room events.
    pub fn rooms_summary(&self) -> Option<String> {
        let r = self.rooms.as_ref()?;
        let plural = |n: i64| if n == 1 { "" } else { "s" };
        Some(format!(
            "In TRTC rooms (room events): {:.1} person-minutes in {} call{}, {} of them known \
             only from room events; talk time from the call callbacks: {:.1} minutes in {} call{}.",
            r.in_room_seconds / 60.0,
            r.in_room_calls,
            plural(r.in_room_calls),
            r.room_only_calls,
            r.talk_seconds / 60.0,
            r.talk_calls,
            plural(r.talk_calls),
        ))
    }

    /// "Completeness: 97.5% of the 1,200 calls Tencent recorded arrived as callbacks; 30
    /// are known only from Tencent's record (source record_api).", or `None`.
    pub fn completeness_summary(&self) -> Option<String> {
        let c = self.completeness?;
        let missing = c.recorded - c.with_callbacks;
        Some(format!(
            "Completeness: {:.1}% of the {} calls Tencent recorded arrived as callbacks; {} {} known \
             only from Tencent's record (callhook reconcile; source record_api in calls).",
            100.0 * c.with_callbacks as f64 / c.recorded as f64,
            c.recorded,
            missing,
            if missing == 1 { "is" } else { "are" },
        ))
    }

    /// "Events before 2026-11-07 were removed by retention …", or `None` when the period
    /// has all its events.
    pub fn retention_summary(&self) -> Option<String> {
        let before = self.removed_before.as_ref()?;
        Some(format!(
            "Retention: the raw events before {before} were removed ([retention] days). The \
             calls, answers and talk times of those days come from the daily rollups and are \
             complete; the time in rooms, the completeness and the notes cover only the days \
             from {before}."
        ))
    }

    /// How many events of the period were stored with notes.
    pub fn noted_events(&self) -> i64 {
        self.noted.iter().map(|(_, n)| n).sum()
    }

    /// "12 events (EventTime 10, TotalNum 2)", or `None` when there are none.
    pub fn noted_summary(&self) -> Option<String> {
        let n = self.noted_events();
        (n > 0).then(|| {
            let fields: Vec<String> = self
                .noted
                .iter()
                .map(|(field, count)| format!("{field} {count}"))
                .collect();
            format!(
                "{n} event{} ({})",
                if n == 1 { "" } else { "s" },
                fields.join(", ")
            )
        })
    }
}

/// The whole period, every app of the report together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub calls: i64,
    pub answered: i64,
    pub not_answer: i64,
    pub reject: i64,
    pub call_busy: i64,
    pub cancel: i64,
    pub interrupt: i64,
    /// answered / calls; `None` without calls.
    pub answer_rate: Option<f64>,
    pub talk: TalkSummary,
}

impl Totals {
    /// Calls whose outcome is none of the six columns (offline, unknown, not known yet).
    pub fn other(&self) -> i64 {
        self.calls
            - self.answered
            - self.not_answer
            - self.reject
            - self.call_busy
            - self.cancel
            - self.interrupt
    }
}

/// Talk times of the calls whose talk time is known, with the same definitions (and the
/// same rounding, to the millisecond) as `call_stats_daily`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TalkSummary {
    pub calls: i64,
    pub avg_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

impl TalkSummary {
    /// From the talk times of a period, by bucket (`rollup_talk`).
    pub fn from_talk_times(talk: &TalkTimes) -> Self {
        Self {
            calls: talk.calls(),
            avg_seconds: talk.avg_seconds(),
            p50_seconds: talk.percentile(0.5),
            p90_seconds: talk.percentile(0.9),
        }
    }
}

/// Talk-time histogram buckets: a label and the lower bound in milliseconds (each bucket
/// runs to the next one's bound; the last is open).
pub const TALK_BUCKETS: [(&str, i64); 10] = [
    ("under 10 s", 0),
    ("10–30 s", 10_000),
    ("30–60 s", 30_000),
    ("1–2 min", 60_000),
    ("2–5 min", 120_000),
    ("5–10 min", 300_000),
    ("10–20 min", 600_000),
    ("20–30 min", 1_200_000),
    ("30–60 min", 1_800_000),
    ("1 h and more", 3_600_000),
];

/// Counts talk times per [`TALK_BUCKETS`] bucket (negative times count in the first):
/// exactly, since each of those bounds starts a rollup bucket
/// ([`crate::store::HISTOGRAM_BOUNDS`]).
pub fn histogram(talk: &TalkTimes) -> Vec<u64> {
    let mut counts = vec![0u64; TALK_BUCKETS.len()];
    for (&from, b) in &talk.0 {
        let i = TALK_BUCKETS
            .iter()
            .rposition(|&(_, bound)| from >= bound)
            .unwrap_or(0);
        counts[i] += u64::try_from(b.calls).unwrap_or(0);
    }
    counts
}

/// Why a report cannot be made from the arguments given: one line each.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("{flag} {value:?} is not a date: expected YYYY-MM-DD (a UTC day)")]
    BadDate { flag: &'static str, value: String },
    #[error(
        "the period is empty: --since {since} is not before --until {until} (--until is exclusive)"
    )]
    EmptyPeriod { since: NaiveDate, until: NaiveDate },
}

/// The period from `--since` / `--until`: UTC days, `until` exclusive. Defaults: until =
/// tomorrow (today included), since = [`DEFAULT_DAYS`] days before until.
pub fn resolve_range(
    since: Option<&str>,
    until: Option<&str>,
    today: NaiveDate,
) -> Result<DayRange, ReportError> {
    let parse = |flag: &'static str, value: &str| {
        NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| ReportError::BadDate {
            flag,
            value: value.to_owned(),
        })
    };
    let until = match until {
        Some(u) => parse("--until", u)?,
        None => today + chrono::Duration::days(1),
    };
    let since = match since {
        Some(s) => parse("--since", s)?,
        None => until - chrono::Duration::days(DEFAULT_DAYS),
    };
    if since >= until {
        return Err(ReportError::EmptyPeriod { since, until });
    }
    Ok(DayRange { since, until })
}

/// Reads what a report shows from the database.
pub async fn build(
    store: &Store,
    range: DayRange,
    sdkappid: Option<i64>,
) -> anyhow::Result<Report> {
    // Independent reads, two of them folding the period's calls: run them side by side.
    let (period, noted, rooms, completeness, horizon) = tokio::try_join!(
        async {
            store
                .period_stats(range, sdkappid)
                .await
                .context("reading the period's statistics (rollup_days, rollup_talk)")
        },
        async {
            store
                .noted_events(range, sdkappid)
                .await
                .context("reading the events stored with notes")
        },
        async {
            store
                .room_stats(range, sdkappid)
                .await
                .context("reading the time in TRTC rooms")
        },
        async {
            store
                .completeness(range, sdkappid)
                .await
                .context("reading Tencent's call records")
        },
        async {
            store
                .retention_horizon()
                .await
                .context("reading how far retention removed events (retention_horizon)")
        },
    )?;
    let since = range.since.format("%Y-%m-%d").to_string();
    let removed_before = horizon.filter(|h| since.as_str() < h.as_str());
    let days = period.days;
    let mut totals = Totals::default();
    for d in &days {
        totals.calls += d.calls;
        totals.answered += d.answered;
        totals.not_answer += d.not_answer;
        totals.reject += d.reject;
        totals.call_busy += d.call_busy;
        totals.cancel += d.cancel;
        totals.interrupt += d.interrupt;
    }
    totals.answer_rate = (totals.calls > 0).then(|| totals.answered as f64 / totals.calls as f64);
    totals.talk = TalkSummary::from_talk_times(&period.talk);
    Ok(Report {
        range,
        sdkappid,
        days,
        totals,
        talk_histogram: histogram(&period.talk),
        noted,
        rooms,
        completeness,
        removed_before,
    })
}

/// The report as the format asks: text ending in a newline.
pub fn render(report: &Report, format: ReportFormat) -> anyhow::Result<String> {
    Ok(match format {
        ReportFormat::Table => table(report),
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report.days)?;
            s.push('\n');
            s
        }
        ReportFormat::Csv => csv(report),
        ReportFormat::Html => html::page(report),
    })
}

/// `callhook report`.
pub async fn run(args: &ReportArgs, url: &DatabaseUrl) -> anyhow::Result<()> {
    let range = resolve_range(
        args.since.as_deref(),
        args.until.as_deref(),
        chrono::Utc::now().date_naive(),
    )?;
    let store = Store::connect_for_reading(url.expose()).await?;
    let result = async {
        if !store.has_analytics().await? {
            anyhow::bail!(
                "the database has no analytics tables of this version yet (the daily rollups): run `callhook migrate` (or restart `callhook serve`) to add them"
            );
        }
        let report = build(&store, range, args.sdkappid).await?;
        render(&report, args.format)
    }
    .await;
    store.close().await;
    let text = result?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Text formats

/// The `call_stats_daily` column names, in order.
pub const COLUMNS: [&str; 13] = [
    "day",
    "sdkappid",
    "calls",
    "answered",
    "not_answer",
    "reject",
    "call_busy",
    "cancel",
    "interrupt",
    "answer_rate",
    "avg_talk_seconds",
    "p50_talk_seconds",
    "p90_talk_seconds",
];

/// The last day a range includes, for people (`until` is exclusive).
fn last_day(range: DayRange) -> NaiveDate {
    range.until - chrono::Duration::days(1)
}

fn scope(report: &Report) -> String {
    match report.sdkappid {
        Some(app) => format!("sdkappid {app}"),
        None => "all apps".to_owned(),
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"))
}

/// An aligned table with a totals row.
fn table(report: &Report) -> String {
    let rows: Vec<Vec<String>> = report.days.iter().map(day_cells).collect();
    let total = total_cells(report);
    let header: Vec<String> = TABLE_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let columns = Columns::fit(rows.iter().chain([&header, &total]));
    let mut out = format!(
        "Calls from {} to {} (UTC, {} days), {}\n\n",
        report.range.since,
        last_day(report.range),
        report.range.days(),
        scope(report)
    );
    columns.line(&mut out, &header);
    if rows.is_empty() {
        out.push_str("(no calls in this period)\n");
    }
    for row in &rows {
        columns.line(&mut out, row);
    }
    columns.line(&mut out, &columns.rule());
    columns.line(&mut out, &total);
    if let Some(rooms) = report.rooms_summary() {
        let _ = write!(out, "\n{rooms}\n");
    }
    if let Some(complete) = report.completeness_summary() {
        let _ = write!(out, "\n{complete}\n");
    }
    if let Some(retention) = report.retention_summary() {
        let _ = write!(out, "\n{retention}\n");
    }
    if let Some(noted) = report.noted_summary() {
        let _ = write!(
            out,
            "\nStored with notes: {noted}. A field could not be read, a time was not \
             plausible, or the command is unknown; see call_events.notes.\n"
        );
    }
    out
}

const TABLE_HEADERS: [&str; 13] = [
    "day",
    "sdkappid",
    "calls",
    "answered",
    "not_answer",
    "reject",
    "call_busy",
    "cancel",
    "interrupt",
    "answer_rate",
    "avg_talk_s",
    "p50_talk_s",
    "p90_talk_s",
];

/// One day's row of the text table, in [`TABLE_HEADERS`]' order.
fn day_cells(d: &DailyStats) -> Vec<String> {
    vec![
        d.day.to_string(),
        d.sdkappid.to_string(),
        d.calls.to_string(),
        d.answered.to_string(),
        d.not_answer.to_string(),
        d.reject.to_string(),
        d.call_busy.to_string(),
        d.cancel.to_string(),
        d.interrupt.to_string(),
        percent(Some(d.answer_rate)),
        seconds(d.avg_talk_seconds),
        seconds(d.p50_talk_seconds),
        seconds(d.p90_talk_seconds),
    ]
}

/// The period's totals row of the text table.
fn total_cells(report: &Report) -> Vec<String> {
    let t = &report.totals;
    vec![
        "total".to_owned(),
        report
            .sdkappid
            .map_or_else(|| "all".to_owned(), |a| a.to_string()),
        t.calls.to_string(),
        t.answered.to_string(),
        t.not_answer.to_string(),
        t.reject.to_string(),
        t.call_busy.to_string(),
        t.cancel.to_string(),
        t.interrupt.to_string(),
        percent(t.answer_rate),
        seconds(t.talk.avg_seconds),
        seconds(t.talk.p50_seconds),
        seconds(t.talk.p90_seconds),
    ]
}

/// The text table's column widths: the widest cell of each column.
struct Columns {
    widths: Vec<usize>,
}

impl Columns {
    fn fit<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> Self {
        let mut widths = vec![0; TABLE_HEADERS.len()];
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        Self { widths }
    }

    /// A dashed line under every column.
    fn rule(&self) -> Vec<String> {
        self.widths.iter().map(|w| "-".repeat(*w)).collect()
    }

    /// Appends one row: day and sdkappid to the left, numbers to the right.
    fn line(&self, out: &mut String, cells: &[String]) {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&self.widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i < 2 {
                let _ = write!(s, "{cell:<w$}");
            } else {
                let _ = write!(s, "{cell:>w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
}

/// CSV with a header row; floats in their shortest exact form, empty for NULL.
fn csv(report: &Report) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for d in &report.days {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            d.day,
            d.sdkappid,
            d.calls,
            d.answered,
            d.not_answer,
            d.reject,
            d.call_busy,
            d.cancel,
            d.interrupt,
            d.answer_rate,
            opt(d.avg_talk_seconds),
            opt(d.p50_talk_seconds),
            opt(d.p90_talk_seconds),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn default_range_is_the_last_seven_days_including_today() {
        let r = resolve_range(None, None, day("2024-01-10"));
        assert_eq!(
            r,
            Ok(DayRange {
                since: day("2024-01-04"),
                until: day("2024-01-11")
            })
        );
        let r = resolve_range(None, Some("2024-02-01"), day("2024-01-10"));
        assert_eq!(r.map(|r| r.since), Ok(day("2024-01-25")));
    }

    #[test]
    fn bad_dates_are_one_line_errors() {
        let e = resolve_range(Some("2024-13-01"), None, day("2024-01-10"));
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("--since \"2024-13-01\" is not a date: expected YYYY-MM-DD (a UTC day)".to_owned())
        );
        let e = resolve_range(Some("2024-01-10"), Some("2024-01-10"), day("2024-01-10"));
        assert!(matches!(e, Err(ReportError::EmptyPeriod { .. })));
        assert!(resolve_range(None, Some("yesterday"), day("2024-01-10")).is_err());
    }

    #[test]
    fn every_histogram_bound_starts_a_rollup_bucket() {
        use crate::store::HISTOGRAM_BOUNDS;
        let bounds: Vec<i64> = TALK_BUCKETS.iter().skip(1).map(|&(_, b)| b).collect();
        assert_eq!(bounds, HISTOGRAM_BOUNDS);
    }

    #[test]
    fn talk_summary_rounds_the_mean_to_the_millisecond() {
        let s = TalkSummary::from_talk_times(&TalkTimes::from_times([1000, 1000, 1001]));
        assert_eq!(s.avg_seconds, Some(1.0));
        let s = TalkSummary::from_talk_times(&TalkTimes::from_times([1000, 1001]));
        assert_eq!(s.avg_seconds, Some(1.001), "1000.5 ms rounds half up");
        assert_eq!(
            TalkSummary::from_talk_times(&TalkTimes::default()),
            TalkSummary::default()
        );
    }

    #[test]
    fn histogram_buckets() {
        let h = histogram(&TalkTimes::from_times([
            -5, 0, 9_999, 10_000, 59_999, 3_600_000, 99_999_999,
        ]));
        assert_eq!(h, vec![3, 1, 1, 0, 0, 0, 0, 0, 0, 2]);
    }
}
