//! `callhook events`: the latest stored events, as a table or JSON, read through a
//! read-only connection. A look at what arrived without an SQL shell.

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
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
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
    // deliveries, the only number after sdkappid, to the right
    crate::text_table::aligned(&HEADERS, &cells, &[8])
}
