//! The promise, checked against the stored rows.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Connection as _;

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
    let _ = conn.close().await;
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
