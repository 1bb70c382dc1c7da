//! What `callhook reconcile` prints: one line per app (a table), or a JSON array.

use super::fetch::AppReport;

/// The table: a header naming the window, one line per app, what the columns mean, then
/// each app's remarks (a resumed run, records not stored, a failure and its reason).
pub fn table(reports: &[AppReport]) -> String {
    let mut out = String::new();
    if let Some(first) = reports.first() {
        out.push_str(&format!(
            "Tencent's call records from {} to {} (calls that started in the window)\n\n",
            first.from, first.to
        ));
    }
    out.push_str(&aligned(&cells(reports)));
    out.push_str(LEGEND);
    for r in reports {
        out.push_str(&remarks(r));
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

const HEADER: [&str; 8] = [
    "sdkappid",
    "records",
    "also_callbacks",
    "record_only",
    "callbacks_only",
    "disagree",
    "requests",
    "result",
];

const LEGEND: &str = "\nrecords: fetched from Tencent; also_callbacks: of those, calls that arrived as callbacks too;\n\
     record_only: calls none of whose callbacks arrived (now in `calls` with source record_api);\n\
     callbacks_only: ended calls of the window Tencent has no record of; disagree: recorded calls\n\
     whose callbacks say another result or other times (SELECT * FROM call_gaps).\n";

/// The header and one row of cells per app (`-` for what a failed run did not find).
fn cells(reports: &[AppReport]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|h| (*h).to_owned()).collect()];
    for r in reports {
        let f = r.findings.unwrap_or_default();
        let n = |v: i64| match r.findings {
            Some(_) => v.to_string(),
            None => "-".to_owned(),
        };
        rows.push(vec![
            r.sdkappid.to_string(),
            (r.records + r.records_before).to_string(),
            n(f.also_callbacks),
            n(f.record_only),
            n(f.callbacks_only),
            n(f.disagree),
            r.requests.to_string(),
            r.status.to_owned(),
        ]);
    }
    rows
}

/// Columns padded to their widest cell: the first and last left-aligned, numbers right.
fn aligned(rows: &[Vec<String>]) -> String {
    let last = HEADER.len() - 1;
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| match c {
                0 => format!("{v:<w$}", w = widths[c]),
                c if c == last => v.clone(),
                _ => format!("{v:>w$}", w = widths[c]),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// What else is worth saying about one app's run.
fn remarks(r: &AppReport) -> String {
    let mut out = String::new();
    if let Some(page) = r.resumed_at_page {
        out.push_str(&format!(
            "\n{}: resumed an interrupted run of this window at page {page} ({} records stored before)",
            r.sdkappid, r.records_before
        ));
    }
    if r.skipped > 0 {
        out.push_str(&format!(
            "\n{}: {} records could not be stored (see the log)",
            r.sdkappid, r.skipped
        ));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("\n{}: FAILED: {e}", r.sdkappid));
    }
    out
}

/// The reports as a JSON array.
pub fn json(reports: &[AppReport]) -> String {
    serde_json::to_string_pretty(reports).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
