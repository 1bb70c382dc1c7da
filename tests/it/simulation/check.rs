//! The promise, checked against the stored rows.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Connection as _;

use callhook::config::Destination;
use callhook::store::Route;
use callhook::webhook::SigningKey;

use super::Outcome;
use super::schedule::{Event, Family, Schedule};
use super::senders::Tally;

/// A stored row as the check reads it: call id, room id, user id, deliveries.
pub(super) type StoredRow = (Option<String>, Option<String>, Option<String>, i32);

/// The promise, against the stored rows: every acknowledged event is stored exactly once
/// (each of its rows once), its rows' `deliveries` lie between its acknowledged and its
/// sent attempts (exactly its acknowledged ones when every attempt was acknowledged), and
/// nothing is stored that was not sent.
pub(super) async fn check(
    s: &Schedule,
    url: &str,
    tallies: &BTreeMap<String, Tally>,
) -> Result<Outcome, String> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<StoredRow> =
        sqlx::query_as("SELECT call_id, room_id, user_id, deliveries FROM call_events ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    let unforwarded = check_outbox(&mut conn).await;
    let _ = conn.close().await;
    unforwarded?;
    // Rows by event: a TRTC room event is known by its room, the others by their call.
    let mut stored: BTreeMap<String, Vec<(Option<String>, i64)>> = BTreeMap::new();
    for (call, room, user, deliveries) in &rows {
        let id = call.clone().or_else(|| room.clone()).unwrap_or_default();
        stored
            .entry(id)
            .or_default()
            .push((user.clone(), i64::from(*deliveries)));
    }
    let mut outcome = Outcome {
        rows: rows.len(),
        ..Outcome::default()
    };
    let earlier = tallies.keys().filter(|id| id.starts_with("earlier-"));
    let earlier: Vec<Event> = earlier
        .map(|id| Event {
            id: id.clone(),
            family: Family::Status,
            at: Duration::ZERO,
            again: 0,
        })
        .collect();
    for ev in s.events.iter().chain(&earlier) {
        let t = tallies.get(&ev.id).copied().unwrap_or_default();
        outcome.deliveries += t.sent;
        outcome.acked += t.acked;
        let mine = stored.remove(&ev.id).unwrap_or_default();
        if t.acked == 0 {
            return Err(format!("{}: never acknowledged ({t:?})", ev.id));
        }
        let mut users: Vec<&Option<String>> = mine.iter().map(|(u, _)| u).collect();
        users.sort();
        users.dedup();
        if mine.len() != ev.rows() || users.len() != ev.rows() {
            return Err(format!(
                "{} ({:?}): {} rows stored, {} expected; acknowledged {} of {} attempts; rows {mine:?}",
                ev.id,
                ev.family,
                mine.len(),
                ev.rows(),
                t.acked,
                t.sent
            ));
        }
        for (user, d) in &mine {
            if *d < t.acked || *d > t.sent || (t.acked == t.sent && *d != t.acked) {
                return Err(format!(
                    "{} ({:?}) row {user:?}: deliveries {d}, but {} of {} attempts acknowledged",
                    ev.id, ev.family, t.acked, t.sent
                ));
            }
        }
    }
    if let Some((id, rows)) = stored.into_iter().next() {
        return Err(format!("{id}: stored ({rows:?}) but never sent"));
    }
    Ok(outcome)
}

/// Two destinations every schedule forwards to: `all` takes every event, `status` the
/// status family's. Nothing listens on port 1, so each entry's one attempt fails at once
/// and the next is days away: the outbox holds what the writes made, and the workers run
/// (claiming, settling) beside the faults all along.
pub(super) fn destinations() -> Vec<Destination> {
    let destination = |name: &str, families: Option<Vec<String>>| Destination {
        route: Route {
            destination: name.to_owned(),
            sdkappids: None,
            families,
            commands: None,
            results: None,
        },
        url: "http://127.0.0.1:1/".to_owned(),
        key: SigningKey::from_bytes(&[7; 32]),
        timeout: Duration::from_secs(1),
        retry_schedule: vec![Duration::ZERO, Duration::from_secs(7 * 86_400)],
        max_in_flight: 4,
    };
    vec![
        destination("all", None),
        destination("status", Some(vec!["status".to_owned()])),
    ]
}

/// A stored event's call, room and family, and its entries for `all` and `status`.
type EntryCounts = (Option<String>, Option<String>, String, i64, i64);

/// The outbox against the stored rows: every stored event has exactly one entry for `all`,
/// one for `status` if it is of the status family and none otherwise, and no entry lacks
/// its event (written without it, or left by a write that did not commit).
async fn check_outbox(conn: &mut sqlx::PgConnection) -> Result<(), String> {
    let wrong: Vec<EntryCounts> = sqlx::query_as(
        "SELECT e.call_id, e.room_id, e.family, \
                (SELECT count(*) FROM forward_outbox o WHERE o.event_id = e.id AND o.destination = 'all'), \
                (SELECT count(*) FROM forward_outbox o WHERE o.event_id = e.id AND o.destination = 'status') \
         FROM call_events e",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| e.to_string())?
    .into_iter()
    .filter(|(_, _, family, all, status)| *all != 1 || *status != i64::from(family == "status"))
    .collect();
    if let Some((call, room, family, all, status)) = wrong.first() {
        return Err(format!(
            "{} stored events without exactly their outbox entries, e.g. {:?} ({family}): {all} for all, {status} for status",
            wrong.len(),
            call.as_ref().or(room.as_ref())
        ));
    }
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM forward_outbox o \
         WHERE NOT EXISTS (SELECT 1 FROM call_events e WHERE e.id = o.event_id)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    if orphans > 0 {
        return Err(format!("{orphans} outbox entries without their event"));
    }
    Ok(())
}
