//! The HTML report: one self-contained page (inline CSS and SVG; no scripts, no fonts,
//! nothing fetched) that reads without explanation — headline numbers, calls per day
//! stacked by result, the answer rate per day, the talk-time distribution, and the daily
//! table. The markup is well-formed XML (void elements self-closed), so it is easy to check.
//!
//! Each chart is drawn twice, for a wide screen (and print) and for a phone, and CSS shows
//! the one that fits: an SVG scales as a whole, so one drawing 960 units wide shrunk onto a
//! 390 px phone has 4 px labels. The legends are HTML, so they wrap.
//! `ci/report-browser-test.sh` opens the page in Chromium at both widths and checks it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;

use super::{Report, TALK_BUCKETS, Totals, last_day, percent, scope};

/// The results stacked in the daily chart, bottom up: label and colour.
const SERIES: [(&str, &str); 7] = [
    ("Answered", "#2e7d32"),
    ("No answer", "#f2a900"),
    ("Rejected", "#c62828"),
    ("Busy", "#8e24aa"),
    ("Cancelled", "#607d8b"),
    ("Interrupted", "#e65100"),
    ("Other", "#b0bec5"),
];

const ACCENT: &str = "#1565c0";

/// The two drawings of every chart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    /// 960 units for a screen (or page) of 640 px and more.
    Wide,
    /// 360 units for a phone, drawn with larger text (`svg.narrow` in the CSS).
    Narrow,
}

impl Size {
    fn width(self) -> f64 {
        match self {
            Size::Wide => 960.0,
            Size::Narrow => 360.0,
        }
    }
    /// The width of one character of the axis labels, in drawing units, about.
    fn char_width(self) -> f64 {
        match self {
            Size::Wide => 6.6,
            Size::Narrow => 7.8,
        }
    }
    fn class(self) -> &'static str {
        match self {
            Size::Wide => "wide",
            Size::Narrow => "narrow",
        }
    }
}

const STYLE: &str = r#"
body { margin: 0; background: #f5f6f8; color: #1f2933; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 28px 20px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 2px; }
p.sub { margin: 0 0 20px; color: #52606d; }
p.note { margin: 0 0 10px; color: #52606d; font-size: 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 14px; margin-bottom: 18px; }
.card { min-width: 0; overflow-wrap: anywhere; background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .label { color: #52606d; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 30px; font-weight: 650; margin: 2px 0; }
.card .detail { color: #52606d; font-size: 13px; }
section { background: #fff; border-radius: 8px; padding: 16px 18px 10px; margin-bottom: 18px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
svg { display: block; width: 100%; height: auto; }
svg.narrow { display: none; }
svg.narrow text { font-size: 14px; }
svg.narrow .value-label { font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0 4px; padding: 0; list-style: none; font-size: 13px; color: #3e4c59; }
.legend li { display: flex; align-items: center; gap: 6px; }
.legend .box { width: 12px; height: 12px; border-radius: 2px; }
.legend .line { width: 18px; border-top: 2.5px solid; }
.legend .dashed { border-top-style: dashed; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size: 12px; fill: #3e4c59; }
svg .axis-title { font-size: 13px; fill: #1f2933; }
svg .value-label { font-size: 11px; fill: #1f2933; }
svg .empty { font-size: 16px; fill: #7b8794; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 6px; text-align: right; border-bottom: 1px solid #e4e7eb; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { color: #52606d; font-weight: 600; white-space: normal; vertical-align: bottom; }
tr.total td { font-weight: 700; border-top: 2px solid #9aa5b1; }
footer { color: #52606d; font-size: 13px; }
footer p { margin: 4px 0; }
@media (max-width: 640px) {
  main { padding: 18px 12px 28px; }
  h1 { font-size: 22px; }
  section { padding: 14px 12px 8px; }
  .cards { grid-template-columns: 1fr 1fr; gap: 10px; }
  .card { padding: 12px; }
  .card .value { font-size: 24px; }
  svg.wide { display: none; }
  svg.narrow { display: block; }
}
@media print {
  body { background: #fff; }
  section, .card { box-shadow: none; border: 1px solid #e4e7eb; break-inside: avoid; }
  svg.wide { display: block; }
  svg.narrow { display: none; }
}
"#;

/// The whole page.
pub fn page(report: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, report);
    cards(&mut out, &report.totals);
    charts(&mut out, report);
    daily_table(&mut out, report);
    summaries(&mut out, report);
    out.push_str(FOOTER);
    out
}

/// What the numbers mean, and the end of the page.
const FOOTER: &str = "<footer>\n\
         <p>Days are UTC. A call counts on the day it started (when no start time was reported: the day of its first event).</p>\n\
         <p>Answered: the call connected and ended normally. Answer rate: answered calls ÷ all calls. \
         Talk time: from answer to hang-up, for the calls where both are known; averages and percentiles are over those calls.</p>\n\
         <p>Other: calls whose result is “offline”, unknown, or not reported yet. Generated by callhook from the call_stats_daily view.</p>\n\
         </footer>\n</main>\n</body>\n</html>\n";

/// The document head, the title and the period.
fn head(out: &mut String, report: &Report) {
    let title = format!(
        "Call report: {} to {}",
        report.range.since,
        last_day(report.range)
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    let _ = write!(
        out,
        "<h1>Call report</h1>\n<p class=\"sub\">{} to {} ({} days, UTC) · {}</p>\n",
        long_date(report.range.since),
        long_date(last_day(report.range)),
        report.range.days(),
        esc(&scope(report))
    );
}

/// The three charts, each in its section with a note on how to read it.
fn charts(out: &mut String, report: &Report) {
    let t = &report.totals;
    let per_day = per_day(report);
    let _ = write!(
        out,
        "<section>\n<h2>Calls per day, by result</h2>\n\
         <p class=\"note\">Each bar is one day; its coloured parts show how the calls ended.</p>\n{}{}{}</section>\n",
        legend(&calls_legend(report)),
        calls_chart(&per_day, Size::Wide),
        calls_chart(&per_day, Size::Narrow)
    );
    let whole = t.answer_rate.map_or_else(String::new, |r| {
        format!(
            " The dashed line is the rate over the whole period ({}).",
            percent(Some(r))
        )
    });
    let _ = write!(
        out,
        "<section>\n<h2>Answer rate per day</h2>\n\
         <p class=\"note\">Share of the day’s calls that were answered.{whole}</p>\n{}{}{}</section>\n",
        legend(&[
            ("Answer rate that day", ACCENT, Mark::Line),
            ("Whole period", "#52606d", Mark::Dashed),
        ]),
        rate_chart(report, &per_day, Size::Wide),
        rate_chart(report, &per_day, Size::Narrow)
    );
    let talk_note = match (t.talk.p50_seconds, t.talk.p90_seconds) {
        (Some(p50), Some(p90)) => format!(
            "{} calls with a known talk time: half were shorter than {}, 90% shorter than {}.",
            t.talk.calls,
            duration(p50),
            duration(p90)
        ),
        _ => "No call in this period has a known talk time.".to_owned(),
    };
    let _ = write!(
        out,
        "<section>\n<h2>How long calls lasted</h2>\n<p class=\"note\">Talk time, from answer to hang-up. {}</p>\n{}{}</section>\n",
        esc(&talk_note),
        talk_chart(report, Size::Wide),
        talk_chart(report, Size::Narrow)
    );
}

/// Retention, the completeness, the room time and the noted events, when the period has
/// any.
fn summaries(out: &mut String, report: &Report) {
    if let Some(retention) = report.retention_summary() {
        let _ = write!(
            out,
            "<section>\n<h2>Retention</h2>\n<p class=\"note\">{}</p>\n</section>\n",
            esc(&retention)
        );
    }
    if let Some(complete) = report.completeness_summary() {
        let _ = write!(
            out,
            "<section>\n<h2>Completeness</h2>\n<p class=\"note\">{}</p>\n</section>\n",
            esc(&complete)
        );
    }
    if let Some(rooms) = report.rooms_summary() {
        let _ = write!(
            out,
            "<section>\n<h2>Time in TRTC rooms</h2>\n<p class=\"note\">{}</p>\n<p class=\"note\">From TRTC's \
             room events: each participant from entering the room to leaving it, summed \
             (call_presence); the call callbacks' talk time runs from answer to hang-up, once \
             per call.</p>\n</section>\n",
            esc(&rooms)
        );
    }
    if let Some(noted) = report.noted_summary() {
        let _ = write!(
            out,
            "<section>\n<h2>Stored with notes</h2>\n<p class=\"note\">{}: a field could not be read, \
             a time was not plausible, or the command is unknown. Every one is stored as it arrived; \
             the notes column of call_events says what could not be read.</p>\n</section>\n",
            esc(&noted)
        );
    }
}

fn cards(out: &mut String, t: &Totals) {
    let missed = t.calls - t.answered;
    let card = |out: &mut String, label: &str, value: &str, detail: &str| {
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"detail\">{}</div></div>",
            esc(label),
            esc(value),
            esc(detail)
        );
    };
    let none = t.calls == 0;
    out.push_str("<div class=\"cards\">\n");
    card(out, "Calls", &t.calls.to_string(), "in this period");
    card(
        out,
        "Answer rate",
        &t.answer_rate
            .map_or_else(|| "–".to_owned(), |r| percent(Some(r))),
        &if none {
            "no calls in this period".to_owned()
        } else {
            format!("{} of {} calls answered", t.answered, t.calls)
        },
    );
    let mut detail = format!(
        "{} no answer, {} rejected, {} busy, {} cancelled, {} interrupted",
        t.not_answer, t.reject, t.call_busy, t.cancel, t.interrupt
    );
    if t.other() > 0 {
        let _ = write!(detail, ", {} other", t.other());
    }
    if none {
        detail = "no calls in this period".to_owned();
    }
    card(out, "Missed or failed", &missed.to_string(), &detail);
    card(
        out,
        "Average talk time",
        &t.talk.avg_seconds.map_or_else(|| "–".to_owned(), duration),
        &match t.talk.p50_seconds {
            Some(p50) => format!("median {}", duration(p50)),
            None => "no call with a known talk time".to_owned(),
        },
    );
    out.push_str("</div>\n");
}

/// Calls per day by result, every app together: [answered, no answer, rejected, busy,
/// cancelled, interrupted, other].
fn per_day(report: &Report) -> BTreeMap<NaiveDate, [i64; 7]> {
    let mut map: BTreeMap<NaiveDate, [i64; 7]> = report.range.iter().map(|d| (d, [0; 7])).collect();
    for d in &report.days {
        let e = map.entry(d.day).or_insert([0; 7]);
        let known = [
            d.answered,
            d.not_answer,
            d.reject,
            d.call_busy,
            d.cancel,
            d.interrupt,
        ];
        for (slot, v) in e.iter_mut().zip(known) {
            *slot += v;
        }
        e[6] += d.calls - known.iter().sum::<i64>();
    }
    map
}

/// The plot area of a chart.
struct Frame {
    size: Size,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    /// A frame of `height` with room on the left for the y axis's labels (and, wide, its
    /// title) and below for the x axis's (`bottom`).
    fn new(size: Size, height: f64, bottom: f64) -> Self {
        Self {
            size,
            height,
            left: if size == Size::Wide { 64.0 } else { 46.0 },
            right: if size == Size::Wide { 16.0 } else { 8.0 },
            top: 20.0,
            bottom,
        }
    }
    fn width(&self) -> f64 {
        self.size.width()
    }
    fn plot_width(&self) -> f64 {
        self.width() - self.left - self.right
    }
    fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }
    fn y(&self, value: f64, max: f64) -> f64 {
        self.top + self.plot_height() * (1.0 - value / max)
    }
    fn open(&self, out: &mut String, title: &str) {
        let _ = write!(
            out,
            "<svg class=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n<title>{}</title>\n",
            self.size.class(),
            self.width(),
            self.height,
            esc(title),
            esc(title)
        );
    }
    /// Horizontal grid lines with labels, and the y axis title.
    fn y_axis(
        &self,
        out: &mut String,
        max: f64,
        step: f64,
        label: impl Fn(f64) -> String,
        title: &str,
    ) {
        let mut v = 0.0;
        while v <= max + step / 1000.0 {
            let y = self.y(v, max);
            let _ = write!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"1\" />\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                self.left,
                self.width() - self.right,
                if v == 0.0 { "#9aa5b1" } else { "#e4e7eb" },
                self.left - 8.0,
                y + 4.0,
                esc(&label(v))
            );
            v += step;
        }
        // A phone's chart has no room for the title; its section's heading says it.
        if self.size == Size::Narrow {
            return;
        }
        let cy = self.top + self.plot_height() / 2.0;
        let _ = writeln!(
            out,
            "<text class=\"axis-title\" x=\"16\" y=\"{cy:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {cy:.1})\">{}</text>",
            esc(title)
        );
    }
    /// A day's label under the x axis, centred on `cx`.
    fn day_label(&self, out: &mut String, cx: f64, day: NaiveDate) {
        let _ = writeln!(
            out,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            self.height - self.bottom + 18.0,
            day.format("%b %-d")
        );
    }
    /// Every how many of `slots` labels a label goes, so that labels of `chars`
    /// characters do not collide.
    fn label_every(&self, slots: usize, chars: usize) -> usize {
        let label = (chars as f64 + 2.0) * self.size.char_width();
        let fit = (self.plot_width() / label).floor().max(1.0) as usize;
        slots.div_ceil(fit).max(1)
    }
    /// Whether values fit above bars or dots `slot` units apart.
    fn values_fit(&self, slot: f64) -> bool {
        slot >= 5.0 * self.size.char_width()
    }
    fn x_title(&self, out: &mut String, title: &str) {
        let _ = writeln!(
            out,
            "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            self.left + self.plot_width() / 2.0,
            self.height - 8.0,
            esc(title)
        );
    }
    fn empty(&self, out: &mut String, text: &str) {
        let _ = writeln!(
            out,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            self.left + self.plot_width() / 2.0,
            self.top + self.plot_height() / 2.0,
            esc(text)
        );
    }
}

/// A round axis maximum and step for counts up to `max` (about five steps).
fn nice_scale(max: i64) -> (f64, f64) {
    let max = max.max(1) as f64;
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(1.0);
    ((max / step).ceil() * step, step)
}

/// How a legend entry is marked.
#[derive(Clone, Copy)]
enum Mark {
    Box,
    Line,
    Dashed,
}

/// A chart's legend, in HTML so that it wraps on a narrow screen.
fn legend(items: &[(&str, &str, Mark)]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for (label, colour, mark) in items {
        let (class, style) = match mark {
            Mark::Box => ("box", format!("background:{colour}")),
            Mark::Line => ("line", format!("border-color:{colour}")),
            Mark::Dashed => ("line dashed", format!("border-color:{colour}")),
        };
        let _ = write!(
            out,
            "<li><span class=\"{class}\" style=\"{style}\"></span>{}</li>",
            esc(label)
        );
    }
    out.push_str("</ul>\n");
    out
}

/// The results the daily chart shows: the six named ones, and "Other" when there is any.
fn calls_legend(report: &Report) -> Vec<(&'static str, &'static str, Mark)> {
    let show_other = report.totals.other() > 0;
    SERIES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 6 || show_other)
        .map(|(_, (l, c))| (*l, *c, Mark::Box))
        .collect()
}

fn calls_chart(per_day: &BTreeMap<NaiveDate, [i64; 7]>, size: Size) -> String {
    let f = Frame::new(size, if size == Size::Wide { 316.0 } else { 300.0 }, 56.0);
    let mut out = String::new();
    f.open(&mut out, "Calls per day, stacked by result");
    let max_calls = per_day
        .values()
        .map(|v| v.iter().sum::<i64>())
        .max()
        .unwrap_or(0);
    let (max, step) = nice_scale(max_calls);
    f.y_axis(&mut out, max, step, |v| format!("{v:.0}"), "Calls");
    let n = per_day.len().max(1);
    let slot = f.plot_width() / n as f64;
    let bar = (slot * 0.7).min(56.0);
    let every = f.label_every(n, 6);
    for (i, (day, counts)) in per_day.iter().enumerate() {
        let cx = f.left + slot * (i as f64 + 0.5);
        let mut base = 0i64;
        for (k, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let y_top = f.y((base + count) as f64, max);
            let y_bottom = f.y(base as f64, max);
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{y_top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{day}: {count} {}</title></rect>",
                cx - bar / 2.0,
                y_bottom - y_top,
                SERIES[k].1,
                SERIES[k].0.to_lowercase()
            );
            base += count;
        }
        if base > 0 && n <= 31 && f.values_fit(slot) {
            let _ = writeln!(
                out,
                "<text class=\"value-label\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{base}</text>",
                f.y(base as f64, max) - 5.0
            );
        }
        if i % every == 0 {
            f.day_label(&mut out, cx, *day);
        }
    }
    if max_calls == 0 {
        f.empty(&mut out, "No calls in this period");
    }
    f.x_title(&mut out, "Day (UTC)");
    out.push_str("</svg>\n");
    out
}

fn rate_chart(report: &Report, per_day: &BTreeMap<NaiveDate, [i64; 7]>, size: Size) -> String {
    let f = Frame::new(size, if size == Size::Wide { 276.0 } else { 260.0 }, 56.0);
    let mut out = String::new();
    f.open(&mut out, "Answer rate per day");
    f.y_axis(
        &mut out,
        1.0,
        0.2,
        |v| format!("{:.0}%", v * 100.0),
        "Answer rate",
    );
    let n = per_day.len().max(1);
    let slot = f.plot_width() / n as f64;
    let every = f.label_every(n, 6);
    let (segments, dots) = rate_points(&f, per_day, slot);
    for (i, (day, _)) in per_day.iter().enumerate() {
        if i % every == 0 {
            f.day_label(&mut out, f.left + slot * (i as f64 + 0.5), *day);
        }
    }
    if let Some(rate) = report.totals.answer_rate {
        let y = f.y(rate, 1.0);
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#52606d\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"><title>Whole period: {}</title></line>",
            f.left,
            f.width() - f.right,
            percent(Some(rate))
        );
    }
    for s in segments.iter().filter(|s| !s.is_empty()) {
        let points: Vec<String> = s.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{ACCENT}\" stroke-width=\"2.5\" stroke-linejoin=\"round\" />",
            points.join(" ")
        );
    }
    out.push_str(&dots);
    if report.totals.calls == 0 {
        f.empty(&mut out, "No calls in this period");
    }
    f.x_title(&mut out, "Day (UTC)");
    out.push_str("</svg>\n");
    out
}

/// The answer-rate line (broken on days without calls) and its dots, labelled with the
/// rate when there are few enough days to read them.
fn rate_points(
    f: &Frame,
    per_day: &BTreeMap<NaiveDate, [i64; 7]>,
    slot: f64,
) -> (Vec<Vec<(f64, f64)>>, String) {
    let labelled = per_day.len() <= 21 && f.values_fit(slot);
    let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    let mut dots = String::new();
    for (i, (day, counts)) in per_day.iter().enumerate() {
        let cx = f.left + slot * (i as f64 + 0.5);
        let calls: i64 = counts.iter().sum();
        if calls == 0 {
            if segments.last().is_some_and(|s| !s.is_empty()) {
                segments.push(Vec::new());
            }
            continue;
        }
        let rate = counts[0] as f64 / calls as f64;
        let y = f.y(rate, 1.0);
        if let Some(s) = segments.last_mut() {
            s.push((cx, y));
        }
        let _ = writeln!(
            dots,
            "<circle cx=\"{cx:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{ACCENT}\"><title>{day}: {} of {calls} calls answered ({})</title></circle>",
            counts[0],
            percent(Some(rate))
        );
        if labelled {
            let _ = writeln!(
                dots,
                "<text class=\"value-label\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}%</text>",
                y - 9.0,
                rate * 100.0
            );
        }
    }
    (segments, dots)
}

fn talk_chart(report: &Report, size: Size) -> String {
    // A phone's labels are slanted, so they need more room below.
    let f = Frame::new(
        size,
        if size == Size::Wide { 300.0 } else { 340.0 },
        if size == Size::Wide { 56.0 } else { 112.0 },
    );
    let mut out = String::new();
    f.open(&mut out, "Calls by talk time");
    let max_count = report.talk_histogram.iter().copied().max().unwrap_or(0);
    let (max, step) = nice_scale(max_count as i64);
    f.y_axis(&mut out, max, step, |v| format!("{v:.0}"), "Calls");
    let n = TALK_BUCKETS.len();
    let slot = f.plot_width() / n as f64;
    let bar = slot * 0.8;
    for (i, ((label, _), count)) in TALK_BUCKETS.iter().zip(&report.talk_histogram).enumerate() {
        let cx = f.left + slot * (i as f64 + 0.5);
        if *count > 0 {
            let y = f.y(*count as f64, max);
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{ACCENT}\"><title>{}: {count} calls</title></rect>\n\
                 <text class=\"value-label\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{count}</text>\n",
                cx - bar / 2.0,
                f.y(0.0, max) - y,
                esc(label),
                y - 5.0
            );
        }
        let y = f.height - f.bottom + 18.0;
        match size {
            Size::Wide => {
                let _ = writeln!(
                    out,
                    "<text x=\"{cx:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{}</text>",
                    esc(label)
                );
            }
            Size::Narrow => {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" transform=\"rotate(-50 {:.1} {y:.1})\">{}</text>",
                    cx + 4.0,
                    cx + 4.0,
                    esc(label)
                );
            }
        }
    }
    if max_count == 0 {
        f.empty(&mut out, "No call with a known talk time in this period");
    }
    f.x_title(&mut out, "Talk time (from answer to hang-up)");
    out.push_str("</svg>\n");
    out
}

fn daily_table(out: &mut String, report: &Report) {
    out.push_str(
        "<section>\n<h2>Daily numbers</h2>\n<div class=\"scroll\">\n<table>\n<thead><tr><th>Day</th><th>App</th><th>Calls</th><th>Answered</th>\
         <th>No answer</th><th>Rejected</th><th>Busy</th><th>Cancelled</th><th>Interrupted</th>\
         <th>Answer rate</th><th>Avg talk</th><th>Median talk</th><th>90% talk</th></tr></thead>\n<tbody>\n",
    );
    let dur = |s: Option<f64>| s.map_or_else(|| "–".to_owned(), short_duration);
    for d in &report.days {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.day,
            d.sdkappid,
            d.calls,
            d.answered,
            d.not_answer,
            d.reject,
            d.call_busy,
            d.cancel,
            d.interrupt,
            percent(Some(d.answer_rate)),
            dur(d.avg_talk_seconds),
            dur(d.p50_talk_seconds),
            dur(d.p90_talk_seconds)
        );
    }
    if report.days.is_empty() {
        out.push_str("<tr><td colspan=\"13\">No calls in this period.</td></tr>\n");
    }
    let t = &report.totals;
    let _ = write!(
        out,
        "</tbody>\n<tfoot><tr class=\"total\"><td>Total</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></tfoot>\n</table>\n</div>\n</section>\n",
        report
            .sdkappid
            .map_or_else(|| "all".to_owned(), |a| a.to_string()),
        t.calls,
        t.answered,
        t.not_answer,
        t.reject,
        t.call_busy,
        t.cancel,
        t.interrupt,
        t.answer_rate
            .map_or_else(|| "–".to_owned(), |r| percent(Some(r))),
        dur(t.talk.avg_seconds),
        dur(t.talk.p50_seconds),
        dur(t.talk.p90_seconds)
    );
}

/// `Monday 8 January 2024`.
fn long_date(day: NaiveDate) -> String {
    day.format("%A %-d %B %Y").to_string()
}

/// A talk time for people: `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// A talk time for a table cell: `42s`, `3m 05s`, `1h 02m`.
pub fn short_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.4), "0 s");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
        assert_eq!(short_duration(185.0), "3m 05s");
        assert_eq!(short_duration(3725.0), "1h 02m");
    }

    #[test]
    fn axis_scales_are_round() {
        assert_eq!(nice_scale(0), (1.0, 1.0));
        assert_eq!(nice_scale(7), (8.0, 2.0));
        assert_eq!(nice_scale(23), (25.0, 5.0));
        assert_eq!(nice_scale(9_870), (10_000.0, 2_000.0));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
