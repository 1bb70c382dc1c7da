//! The forwarding outbox (`forward_outbox`): which destinations an event goes to, and the
//! entries the delivery workers take from the database and settle.
//!
//! Entries are written by the write path itself, in the transaction that stores the event
//! (`postgres.rs`: in the very statement; `sqlite.rs`: beside it; `postgres/replay.rs`: in
//! the journal's replay step), for new events only: a repeat of a stored event adds none.
//! Every write of the store consults the same [`Routes`], so no path can store an event
//! without its entries. The workers (`crate::forward`) then claim due entries in bounded
//! batches, send them and record each outcome; each backend's SQL for that is in
//! `outbox/{postgres,sqlite}.rs`.

mod postgres;
mod sqlite;

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{BatchRow, Store, StoreError};
use crate::protocol::{EventRow, Millis};

/// One destination's filters. An event gets an entry for the destination when every filter
/// that is given matches it (a filter left out matches everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination's name (`[[forward]] name`).
    pub destination: String,
    pub sdkappids: Option<Vec<i64>>,
    /// Family names as stored (`status`, `event`, `v4`, …).
    pub families: Option<Vec<String>>,
    /// Commands, lower-cased (matched in any case).
    pub commands: Option<Vec<String>>,
    /// Call results, normalised as `call_result` stores them (`not_answer`, …); an event
    /// without one does not match.
    pub results: Option<Vec<String>>,
}

impl Route {
    pub fn matches(&self, row: &EventRow) -> bool {
        fn given<T>(filter: &Option<Vec<T>>, ok: impl Fn(&T) -> bool) -> bool {
            filter.as_ref().is_none_or(|list| list.iter().any(ok))
        }
        given(&self.sdkappids, |&id| id == row.sdkappid)
            && given(&self.families, |f| f == row.family.as_str())
            && given(&self.commands, |c| c.eq_ignore_ascii_case(&row.command))
            && given(&self.results, |r| {
                row.call_result.as_ref().is_some_and(|v| v.as_str() == r)
            })
    }
}

/// The destinations the store writes entries for, and the signal it gives the workers
/// when it committed some.
#[derive(Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
    written: Notify,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes,
            written: Notify::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Resolves once the store next commits entries (or was told to by [`Routes::signal`]).
    /// Create it before looking for work, so a commit in between is not missed.
    pub fn written(&self) -> tokio::sync::futures::Notified<'_> {
        self.written.notified()
    }

    /// Wakes every worker waiting for entries.
    pub fn signal(&self) {
        self.written.notify_waiters();
    }

    /// The entries a batch's rows make (for every row; the store keeps those of the rows
    /// that turn out to be new).
    pub(crate) fn entries<'a>(&'a self, rows: &[BatchRow<'_>]) -> Vec<NewEntry<'a>> {
        if self.routes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, b) in rows.iter().enumerate() {
            for route in self.routes.iter().filter(|r| r.matches(b.row)) {
                out.push(NewEntry {
                    row: i,
                    destination: &route.destination,
                    message_id: message_id(&route.destination, b.row),
                });
            }
        }
        out
    }
}

/// An entry a batch writes if its row is new: the row's index in the batch, the
/// destination, the message's `webhook-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewEntry<'a> {
    pub row: usize,
    pub destination: &'a str,
    pub message_id: String,
}

/// The `webhook-id` of an event's message to a destination: `msg_` and 32 hex digits of
/// SHA-256 over the destination and the event's identity (its app and dedupe key), so the
/// same event and destination always give the same id, on every attempt, and a receiver
/// of several destinations' messages can tell them apart.
pub fn message_id(destination: &str, row: &EventRow) -> String {
    let mut h = Sha256::new();
    h.update(b"callhook.forward.v1\0");
    h.update(destination.as_bytes());
    h.update(b"\0");
    h.update(row.sdkappid.to_be_bytes());
    h.update(row.dedupe_key);
    format!("msg_{}", hex::encode(&h.finalize()[..16]))
}

/// An entry a worker claimed: the attempt it makes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub event_id: i64,
    pub message_id: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// When the entry (and its event) was committed.
    pub created_at: Millis,
}

/// A stored event as its message carries it: the `call_events` columns (times in Unix
/// milliseconds) and the payload's text as received.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ForwardedEvent {
    pub id: i64,
    pub sdkappid: i64,
    pub family: String,
    pub command: String,
    pub call_id: Option<String>,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub event: Option<String>,
    pub call_result: Option<String>,
    pub media_type: Option<String>,
    pub call_type: Option<String>,
    pub room_id: Option<String>,
    pub total_num: Option<i64>,
    pub event_time: Option<i64>,
    pub start_call_ts: Option<i64>,
    pub accept_ts: Option<i64>,
    pub end_ts: Option<i64>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub remote_addr: Option<String>,
    pub members: Option<String>,
    pub notes: Option<String>,
    pub received_at: i64,
    pub payload: Option<String>,
    pub trtc_event_type: Option<i64>,
    pub unique_id: Option<String>,
    pub terminal_type: Option<i64>,
    pub user_type: Option<i64>,
    pub reason: Option<i64>,
    pub task_id: Option<String>,
    pub trtc_status: Option<i64>,
    pub files: Option<String>,
}

/// What becomes of an entry after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Pending again, due after this delay.
    Retry(Duration),
    Dead,
}

impl Next {
    fn state(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry(_) => "pending",
            Self::Dead => "dead",
        }
    }

    fn delay_ms(self) -> i64 {
        match self {
            Self::Retry(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            _ => 0,
        }
    }
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub event_id: i64,
    /// The attempt's number: the outcome is recorded only if the entry is still on it (a
    /// worker whose claim lapsed and was taken over records nothing).
    pub attempt: i32,
    pub next: Next,
    /// The HTTP status of the answer, if one came.
    pub status: Option<u16>,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
}

/// One destination's entries, for `callhook forward status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct DestinationStatus {
    pub destination: String,
    pub pending: i64,
    /// Pending entries due now (the rest wait for a retry).
    pub due: i64,
    pub delivered: i64,
    pub dead: i64,
    pub oldest_pending_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// When the attempt that failed with `last_error` started (ISO-8601 UTC).
    pub last_error_at: Option<String>,
}

/// One destination's backlog, for the metrics.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Backlog {
    pub destination: String,
    pub pending: i64,
    pub oldest_pending_seconds: Option<f64>,
    pub dead: i64,
}

/// Which entries `callhook forward retry` makes due again: one destination's delivered
/// and dead entries (or dead only), optionally only those committed since a time, or of
/// one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryFilter {
    pub destination: String,
    pub dead_only: bool,
    pub since: Option<Millis>,
    pub call_id: Option<String>,
}

impl Store {
    /// Gives the store the destinations its writes make entries for (none by default).
    pub fn with_routes(self, routes: std::sync::Arc<Routes>) -> Self {
        match self {
            Self::Postgres(s) => Self::Postgres(s.with_routes(routes)),
            Self::Sqlite(s) => Self::Sqlite(s.with_routes(routes)),
        }
    }

    pub fn routes(&self) -> &std::sync::Arc<Routes> {
        match self {
            Self::Postgres(s) => s.routes(),
            Self::Sqlite(s) => s.routes(),
        }
    }

    /// Claims up to `limit` of a destination's due entries, oldest due first: each counts
    /// an attempt and is due again only after `lease` (so an attempt cut short by a crash
    /// is made again then). On PostgreSQL, entries another replica holds are skipped.
    pub async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Self::Postgres(s) => s.claim_due(destination, limit, lease_ms).await,
            Self::Sqlite(s) => s.claim_due(destination, limit, lease_ms).await,
        }
    }

    /// The stored events of these ids (an id whose event is gone is left out).
    pub async fn forwarded_events(&self, ids: &[i64]) -> Result<Vec<ForwardedEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.forwarded_events(ids).await,
            Self::Sqlite(s) => s.forwarded_events(ids).await,
        }
    }

    /// Records the outcomes of a destination's attempts, in one transaction. Returns how
    /// many were recorded (an outcome whose claim was taken over is not).
    pub async fn settle(&self, destination: &str, settled: &[Settled]) -> Result<u64, StoreError> {
        if settled.is_empty() {
            return Ok(0);
        }
        match self {
            Self::Postgres(s) => s.settle(destination, settled).await,
            Self::Sqlite(s) => s.settle(destination, settled).await,
        }
    }

    /// Every destination that has entries, with their counts (reads the whole table).
    pub async fn outbox_status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        match self {
            Self::Postgres(s) => s.outbox_status().await,
            Self::Sqlite(s) => s.outbox_status().await,
        }
    }

    /// The pending and dead entries per destination (through the partial indexes only).
    pub async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        match self {
            Self::Postgres(s) => s.backlog().await,
            Self::Sqlite(s) => s.backlog().await,
        }
    }

    /// Makes the entries `filter` selects pending and due now, their attempts counted from
    /// zero again (the same `webhook-id`). Returns how many.
    pub async fn retry_entries(&self, filter: &RetryFilter) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.retry_entries(filter).await,
            Self::Sqlite(s) => s.retry_entries(filter).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Context, Kind, parse_delivery};

    fn status_row(command: &str, result: &str) -> EventRow {
        let ctx = Context {
            sdkappid: 7,
            command,
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 0,
        };
        let body = format!(r#"{{"CallId":"c","UserId":"u","CallResult":"{result}"}}"#);
        let rows = parse_delivery(Kind::Status, false, &ctx, body.as_bytes());
        rows.ok()
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_else(|| panic!("a status row"))
    }

    fn route(name: &str) -> Route {
        Route {
            destination: name.to_owned(),
            sdkappids: None,
            families: None,
            commands: None,
            results: None,
        }
    }

    #[test]
    fn every_filter_given_must_match() {
        let missed = status_row("CALL_END", "NotAnswer");
        let answered = status_row("call_end", "normal_end");
        assert!(route("all").matches(&missed));
        let filtered = Route {
            sdkappids: Some(vec![1, 7]),
            families: Some(vec!["status".into()]),
            commands: Some(vec!["call_end".into()]),
            results: Some(vec!["not_answer".into(), "reject".into()]),
            ..route("missed")
        };
        assert!(filtered.matches(&missed), "commands match in any case");
        assert!(!filtered.matches(&answered));
        for other in [
            Route {
                sdkappids: Some(vec![8]),
                ..filtered.clone()
            },
            Route {
                families: Some(vec!["v4".into()]),
                ..filtered.clone()
            },
            Route {
                commands: Some(vec!["normal_end".into()]),
                ..filtered.clone()
            },
        ] {
            assert!(!other.matches(&missed), "{other:?}");
        }
        let mut no_result = missed.clone();
        no_result.call_result = None;
        assert!(
            !filtered.matches(&no_result),
            "no result matches no results filter"
        );
    }

    #[test]
    fn entries_name_each_matching_destination_with_a_stable_id() {
        let rows = [
            status_row("call_end", "reject"),
            status_row("call_end", "normal_end"),
        ];
        let batch: Vec<BatchRow<'_>> = rows
            .iter()
            .map(|row| BatchRow { row, deliveries: 1 })
            .collect();
        let routes = Routes::new(vec![
            route("all"),
            Route {
                results: Some(vec!["reject".into()]),
                ..route("rejects")
            },
        ]);
        let entries = routes.entries(&batch);
        let names: Vec<(usize, &str)> = entries.iter().map(|e| (e.row, e.destination)).collect();
        assert_eq!(names, vec![(0, "all"), (0, "rejects"), (1, "all")]);
        assert_eq!(entries[0].message_id, message_id("all", &rows[0]));
        assert_ne!(
            entries[0].message_id, entries[1].message_id,
            "per destination"
        );
        assert_ne!(entries[0].message_id, entries[2].message_id, "per event");
        assert!(entries[0].message_id.starts_with("msg_") && entries[0].message_id.len() == 36);
        assert!(Routes::default().entries(&batch).is_empty());
    }
}
