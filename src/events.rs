//! `callhook events`: the latest stored events, as a table or JSON, read through a
//! read-only connection. A look at what arrived without an SQL shell.

use std::fmt::Write as _;

use crate::cli::{EventsArgs, EventsFormat};
use crate::config::DatabaseUrl;
use crate::store::RecentEvent;

/// Prints the latest events of the configured database to stdout.
pub async fn run(args: &EventsArgs, url: &DatabaseUrl) -> anyhow::Result<()> {
    let store = crate::store::Store::connect_for_reading(url.expose()).await?;
    let rows = store.recent_events(args.last, args.sdkappid).await;
    store.close().await;
    let text = render(&rows?, args.format)?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The text `callhook events` prints for `rows`.
pub fn render(rows: &[RecentEvent], format: EventsFormat) -> anyhow::Result<String> {
    Ok(match format {
        EventsFormat::Json => {
            let mut s = serde_json::to_string_pretty(rows)?;
            s.push('\n');
            s
        }
        EventsFormat::Table => table(rows),
    })
}

const HEADERS: [&str; 10] = [
    "received_at",
    "sdkappid",
    "family",
    "command",
    "call_id",
    "user_id",
    "role",
    "result",
    "deliveries",
    "remote_addr",
];

/// An aligned table of the main columns; `result` is the call result, else the event.
fn table(rows: &[RecentEvent]) -> String {
    if rows.is_empty() {
        return "no events stored\n".to_owned();
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.received_at.clone(),
                r.sdkappid.to_string(),
                r.family.clone(),
                r.command.clone(),
                opt(&r.call_id),
                opt(&r.user_id),
                opt(&r.role),
                opt(&r.call_result.clone().or_else(|| r.event.clone())),
                r.deliveries.to_string(),
                opt(&r.remote_addr),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            // deliveries, the only number after sdkappid, to the right
            if i == 8 {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&HEADERS.map(str::to_owned));
    for row in &cells {
        line(row);
    }
    out
}
