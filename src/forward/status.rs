//! `callhook forward status` (the outbox per destination, read-only) and `callhook forward
//! retry` (makes delivered or dead entries due again).

use crate::cli::{ForwardRetryArgs, ForwardStatusArgs, StatusFormat};
use crate::config::{DatabaseSettings, DatabaseUrl, parse_duration};
use crate::protocol::Millis;
use crate::store::{DestinationStatus, RetryFilter, Store};

/// Prints the outbox per destination: every destination with entries, and every one the
/// configuration names (`configured`), with none yet.
pub async fn status(
    args: &ForwardStatusArgs,
    url: &DatabaseUrl,
    configured: &[String],
) -> anyhow::Result<()> {
    let store = Store::connect_for_reading(url.expose()).await?;
    let rows = store.outbox_status().await;
    store.close().await;
    let mut rows = rows?;
    for name in configured {
        if !rows.iter().any(|r| &r.destination == name) {
            rows.push(DestinationStatus {
                destination: name.clone(),
                pending: 0,
                due: 0,
                delivered: 0,
                dead: 0,
                oldest_pending_seconds: None,
                last_error: None,
                last_error_at: None,
            });
        }
    }
    rows.sort_by(|a, b| a.destination.cmp(&b.destination));
    let text = match args.format {
        StatusFormat::Json => serde_json::to_string_pretty(&rows)? + "\n",
        StatusFormat::Table => table(&rows),
    };
    print!("{text}");
    Ok(())
}

/// Makes the entries the arguments select due again and says how many.
pub async fn retry(args: &ForwardRetryArgs, url: &DatabaseUrl) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|t| since(t, crate::now_millis()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let filter = RetryFilter {
        destination: args.name.clone(),
        dead_only: args.dead,
        since,
        call_id: args.call_id.clone(),
    };
    let store = Store::connect(&DatabaseSettings::new(url.expose())).await?;
    let n = store.retry_entries(&filter).await;
    store.close().await;
    let n = n?;
    let which = if args.dead {
        "dead"
    } else {
        "delivered or dead"
    };
    let (noun, verb) = if n == 1 {
        ("entry", "is")
    } else {
        ("entries", "are")
    };
    println!(
        "{n} {which} {noun} of {} {verb} due again (the same webhook-id; the retry schedule starts over)",
        args.name
    );
    Ok(())
}

/// `--since`: a duration back from `now` (`24h`) or an RFC 3339 time.
pub fn since(text: &str, now: Millis) -> Result<Millis, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.timestamp_millis());
    }
    let back = parse_duration(text)
        .map_err(|_| format!("{text:?} is neither a duration (24h, 30m) nor an RFC 3339 time"))?;
    Ok(now.saturating_sub(i64::try_from(back.as_millis()).unwrap_or(i64::MAX)))
}

const HEADERS: [&str; 7] = [
    "destination",
    "pending",
    "due",
    "delivered",
    "dead",
    "oldest_pending",
    "last_error",
];

/// Seconds as `45s`, `12m`, `3h`, `2d`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn table(rows: &[DestinationStatus]) -> String {
    if rows.is_empty() {
        return "no destination configured and no outbox entries\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let error = match (&r.last_error_at, &r.last_error) {
                (Some(at), Some(e)) => format!("{at} {e}"),
                (None, Some(e)) => e.clone(),
                _ => "-".to_owned(),
            };
            vec![
                r.destination.clone(),
                r.pending.to_string(),
                r.due.to_string(),
                r.delivered.to_string(),
                r.dead.to_string(),
                r.oldest_pending_seconds.map_or("-".to_owned(), age),
                error,
            ]
        })
        .collect();
    crate::text_table::aligned(&HEADERS, &cells, &[1, 2, 3, 4, 5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = 1_700_000_000_000;
        assert_eq!(since("24h", now), Ok(now - 86_400_000));
        assert_eq!(since("2024-01-10T03:01:13Z", now), Ok(1_704_855_673_000));
        assert!(since("yesterday", now).is_err());
    }

    #[test]
    fn the_table() {
        let rows = [DestinationStatus {
            destination: "push".into(),
            pending: 3,
            due: 1,
            delivered: 120,
            dead: 2,
            oldest_pending_seconds: Some(754.0),
            last_error: Some("HTTP 500 Internal Server Error".into()),
            last_error_at: Some("2026-12-07T10:00:00.000Z".into()),
        }];
        assert_eq!(
            table(&rows),
            "destination  pending  due  delivered  dead  oldest_pending  last_error\n\
             push               3    1        120     2             12m  2026-12-07T10:00:00.000Z HTTP 500 Internal Server Error\n"
        );
    }
}
