//! The outbox is written with the events: on both backends, in the statement (or
//! transaction) that stores a new event, for each destination it matches and for no
//! other; a repeat of a stored event adds nothing; an event whose entry cannot be written
//! is not stored either; and the outage journal's replay writes the entries of the events
//! it stores, and only of those.

use std::time::Duration;

use callhook::store::Store;

use super::*;
use crate::both_backends;

/// Nothing listens on port 1: every attempt fails at once, and the next is an hour away,
/// so the entries stay as written.
const NOWHERE: &str = "http://127.0.0.1:1/";

fn hold(d: &mut Destination) {
    d.retry_schedule = vec![Duration::ZERO, Duration::from_secs(3600)];
}

both_backends! {
    async fn matching_events_get_their_entries_and_repeats_none(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| {
            let mut all = destination("all", NOWHERE, |_| {});
            let mut missed = destination("missed", NOWHERE, |r| {
                r.families = Some(vec!["status".into()]);
                r.results = Some(vec!["not_answer".into(), "reject".into()]);
            });
            hold(&mut all);
            hold(&mut missed);
            s.forward = vec![all, missed];
        })
        .await;
        for (call, result) in [("a", "normal_end"), ("b", "not_answer"), ("c", "reject"), ("b", "not_answer")] {
            let (status, answer) = app.post_status("call_end", &status_body(call, "u", "callee", result)).await;
            assert_eq!(status, 200, "{answer}");
        }
        // An event-family callback: no call result, so only `all` takes it.
        let event = std::fs::read_to_string(format!(
            "{}/tests/fixtures/event/caller_start_call.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("2f6d0c84-31b5-4f27-8d0e-5e9a7c1b00a1", "d");
        let (status, _) = app.post(&status_query(APP, "caller_start_call"), event).await;
        assert_eq!(status, 200);

        let stored = entries(app.store()).await;
        let want: Vec<(String, String)> = [("all", "a"), ("all", "b"), ("all", "c"), ("all", "d"), ("missed", "b"), ("missed", "c")]
            .map(|(d, c)| (d.to_owned(), c.to_owned()))
            .to_vec();
        assert_eq!(pairs(&stored), want, "one entry per matching destination, the repeat of b none");
        let mut ids: Vec<&str> = stored.iter().map(|e| e.message_id.as_str()).collect();
        assert!(ids.iter().all(|id| id.starts_with("msg_") && id.len() == 36), "{ids:?}");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6, "a message id per event and destination");
        let b = app.events().await.into_iter().find(|e| e.call_id.as_deref() == Some("b"));
        assert_eq!(b.map(|b| b.deliveries), Some(2), "the repeat was counted, not forwarded");

        // Repeats after the fact add nothing either.
        for call in ["a", "c"] {
            let result = if call == "a" { "normal_end" } else { "reject" };
            app.post_status("call_end", &status_body(call, "u", "callee", result)).await;
        }
        assert_eq!(pairs(&entries(app.store()).await), want);

        // A destination added later takes the events stored from then on: a repeat of an
        // event stored before it is not one of them.
        let db = app.stop().await;
        let app = TestApp::spawn_on(db, |s| {
            let mut late = destination("late", NOWHERE, |_| {});
            hold(&mut late);
            s.forward = vec![late];
        })
        .await;
        app.post_status("call_end", &status_body("a", "u", "callee", "normal_end")).await;
        app.post_status("call_end", &status_body("e", "u", "callee", "normal_end")).await;
        let late: Vec<(String, String)> = pairs(&entries(app.store()).await)
            .into_iter()
            .filter(|(d, _)| d == "late")
            .collect();
        assert_eq!(late, vec![("late".to_owned(), "e".to_owned())]);
    }
}

/// A trigger that makes every insert into the outbox fail, and the statement removing it.
fn refusing_trigger(store: &Store) -> (&'static str, &'static str) {
    match store {
        Store::Postgres(_) => (
            "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$; \
             CREATE TRIGGER refuse_outbox BEFORE INSERT ON forward_outbox \
             FOR EACH ROW EXECUTE FUNCTION refuse_outbox()",
            "DROP TRIGGER refuse_outbox ON forward_outbox",
        ),
        Store::Sqlite(_) => (
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON forward_outbox \
             BEGIN SELECT RAISE(ABORT, 'outbox refused'); END",
            "DROP TRIGGER refuse_outbox",
        ),
    }
}

async fn execute(store: &Store, sql: &str) {
    match store {
        Store::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(|_| ()),
        Store::Sqlite(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

both_backends! {
    async fn an_event_whose_entry_cannot_be_written_is_not_stored(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| {
            let mut all = destination("all", NOWHERE, |_| {});
            hold(&mut all);
            s.forward = vec![all];
        })
        .await;
        let (refuse, allow) = refusing_trigger(app.store());
        execute(app.store(), refuse).await;
        let body = status_body("x", "u", "callee", "reject");
        let (status, answer) = app.post_status("call_end", &body).await;
        assert_ne!(status, 200, "not acknowledged: {answer}");
        assert!(app.events().await.is_empty(), "the event was not stored without its entry");

        execute(app.store(), allow).await;
        let (status, answer) = app.post_status("call_end", &body).await;
        assert_eq!(status, 200, "{answer}");
        let stored = entries(app.store()).await;
        assert_eq!(pairs(&stored), vec![("all".to_owned(), "x".to_owned())]);
        assert_eq!(app.events().await.len(), 1);
    }
}

/// A status event's row as the journal holds it.
fn row(call: &str) -> callhook::protocol::EventRow {
    status_row(call, callhook::now_millis())
}

/// The journal's replay stores events exactly once, in steps of their own: each step writes
/// the entries of the events it stores, and none for an event already stored directly
/// (a retry that reached the database while its first delivery sat in the journal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_replay_writes_entries_for_new_events_only() {
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        let mut all = destination("all", NOWHERE, |_| {});
        hold(&mut all);
        s.forward = vec![all];
    })
    .await;
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = callhook::journal::Journal::open(spool.path(), 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (j1, j2) = (row("j1"), row("j2"));
    for r in [&j1, &j2] {
        journal
            .append(&[r], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // j2's retry reached the database directly.
    let (status, _) = app
        .post_status("call_end", &status_body("j2", "u", "caller", "cancel"))
        .await;
    assert_eq!(status, 200);
    let replayed = journal
        .replay(app.store(), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replayed, 2);
    let stored = entries(app.store()).await;
    assert_eq!(
        pairs(&stored),
        vec![
            ("all".to_owned(), "j1".to_owned()),
            ("all".to_owned(), "j2".to_owned())
        ]
    );
    let j2_deliveries = app
        .events()
        .await
        .into_iter()
        .find(|e| e.call_id.as_deref() == Some("j2"))
        .map(|e| e.deliveries);
    assert_eq!(
        j2_deliveries,
        Some(2),
        "the replay merged into the stored row"
    );
    let j1 = stored
        .iter()
        .find(|e| e.call_id == "j1")
        .map(|e| e.message_id.clone());
    assert_eq!(j1, Some(callhook::store::message_id("all", &row("j1"))));
}
