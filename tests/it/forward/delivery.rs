//! Delivery by real `callhook serve` processes to a real receiver (`Receiver`): through
//! answers of 500, hangs past the timeout and connection resets; across kill -9 in the
//! middle of deliveries; and by two replicas on one PostgreSQL. Every matching event must
//! arrive (answered 2xx) with a valid signature, under the same `webhook-id` on every
//! attempt, and nothing that does not match may arrive. The stored entries are checked too.

use std::collections::BTreeMap;
use std::time::Duration;

use callhook::config::DatabaseSettings;
use callhook::store::Store;

use super::*;
use crate::both_backends;
use crate::process::Server;

/// A short schedule: five attempts 300 ms apart, then dead.
const SCHEDULE: &str = r#"retry_schedule = ["0s", "300ms", "300ms", "300ms", "300ms"]"#;

/// `callhook serve` on `db` with the configuration file, its journal (PostgreSQL) in `dir`.
async fn serve(db: &TestDb, config: &Path, dir: &Path) -> Server {
    let spool = dir.join(format!("spool-{}", unique_suffix()));
    let (config, spool) = (config.display().to_string(), spool.display().to_string());
    Server::start(
        &[
            "--config",
            &config,
            "--database-url",
            &db.url,
            "--spool-dir",
            &spool,
        ],
        &[],
    )
    .await
}

async fn store(db: &TestDb) -> Store {
    Store::connect(&DatabaseSettings::new(&db.url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn fixture(path: &str, call_id_from: &str, call_id: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{path}: {e}"))
    .replace(call_id_from, call_id)
}

async fn post(client: &reqwest::Client, server: &Server, query: &str, body: String) {
    let resp = client
        .post(server.url(&format!("/?{query}")))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200, "{query}");
}

/// The requests of each `webhook-id`, in order of arrival.
fn by_id(requests: &[Request]) -> BTreeMap<String, Vec<Request>> {
    let mut out: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in requests {
        out.entry(r.id.clone().unwrap_or_default())
            .or_default()
            .push(r.clone());
    }
    out
}

/// What every forwarded request must be, whatever happened to it: verified by the
/// reference implementation, JSON, version 1, a webhook-id and a timestamp.
fn assert_well_formed(requests: &[Request]) {
    for r in requests {
        assert!(
            r.verified && r.error.is_none(),
            "the signature verifies: {r:?}"
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{r:?}");
        assert_eq!(r.version, Some(1), "{r:?}");
        assert!(r.timestamp.is_some() && r.event_id.is_some(), "{r:?}");
    }
}

/// Each message keeps one webhook-id for one (destination, call): returns them.
fn one_id_per_message(requests: &[Request]) -> BTreeMap<(String, String), String> {
    let mut ids = BTreeMap::new();
    for (id, attempts) in by_id(requests) {
        let first = &attempts[0];
        let key = (
            first.path.clone(),
            first.call_id.clone().unwrap_or_default(),
        );
        for (n, a) in attempts.iter().enumerate() {
            assert_eq!(
                (&a.path, &a.call_id, a.attempt as usize),
                (&first.path, &first.call_id, n + 1),
                "{id} is one message"
            );
        }
        let before = ids.insert(key.clone(), id.clone());
        assert!(
            before.is_none(),
            "{key:?} came under two webhook-ids: {before:?} and {id}"
        );
    }
    ids
}

fn expected(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    v.sort();
    v
}

both_backends! {
    async fn every_matching_event_arrives_signed_through_500s_hangs_and_resets(backend: Backend) {
        let receiver = Receiver::start("500,hang,reset", 3.0, 0);
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let forward = forward_table(
            "missed",
            &receiver.url("/missed"),
            &format!("families = [\"status\"]\nresults = [\"not_answer\", \"reject\"]\ntimeout_ms = 1000\n{SCHEDULE}"),
        ) + &forward_table(
            "v4",
            &receiver.url("/v4"),
            &format!("families = [\"v4\"]\ntimeout_ms = 1000\n{SCHEDULE}"),
        );
        let config = config_file(dir.path(), &forward);
        let server = serve(&db, &config, dir.path()).await;
        let client = reqwest::Client::new();
        for (call, result) in [("m1", "not_answer"), ("m2", "not_answer"), ("r1", "reject"), ("n1", "normal_end")] {
            post_status(&client, &server.url(""), call, result).await;
        }
        post_status(&client, &server.url(""), "m1", "not_answer").await; // a retry
        let v4 = fixture("v4/Call.CallbackAfterEndCall.json", "7c1f9e52-0a4d-4b8e-b0f3-6d2c8e4a9b10", "v1");
        post(&client, &server, &v4_query(APP, "Call.CallbackAfterEndCall"), v4).await;
        let event = fixture("event/caller_start_call.json", "2f6d0c84-31b5-4f27-8d0e-5e9a7c1b00a1", "e1");
        post(&client, &server, &status_query(APP, "caller_start_call"), event).await;

        let want = expected(&[("/missed", "m1"), ("/missed", "m2"), ("/missed", "r1"), ("/v4", "v1")]);
        receiver
            .wait_for("every matching message answered 200", Duration::from_secs(90), |r| delivered(r) == want)
            .await;
        tokio::time::sleep(Duration::from_millis(700)).await; // anything more would show now
        let requests = receiver.requests();
        assert_well_formed(&requests);
        let ids = one_id_per_message(&requests);
        assert_eq!(ids.keys().cloned().collect::<Vec<_>>(), want, "nothing else arrived: {requests:#?}");
        for (id, attempts) in by_id(&requests) {
            let answers: Vec<&str> = attempts.iter().map(|a| a.answer.as_str()).collect();
            assert_eq!(answers, ["500", "hang", "reset", "200"], "{id}: each failure retried");
            let (want_type, want_family) = if attempts[0].path == "/v4" {
                ("call.v4.Call.CallbackAfterEndCall", "v4")
            } else {
                ("call.status.call_end", "status")
            };
            assert_eq!(attempts[0].kind.as_deref(), Some(want_type));
            assert_eq!(attempts[0].family.as_deref(), Some(want_family));
        }

        // The outbox says the same: delivered, after four attempts, under those ids.
        let store = store(&db).await;
        let settled = |e: &[Entry]| e.len() == 4 && e.iter().all(|e| e.state == "delivered");
        wait_entries(&store, Duration::from_secs(10), settled).await;
        let stored = entries(&store).await;
        let got: Vec<(String, String, String, i64, String)> = stored
            .iter()
            .map(|e| (e.destination.clone(), e.call_id.clone(), e.state.clone(), e.attempts, e.message_id.clone()))
            .collect();
        let path = |d: &str| if d == "v4" { "/v4".to_owned() } else { "/missed".to_owned() };
        let want_rows: Vec<(String, String, String, i64, String)> = stored
            .iter()
            .map(|e| {
                let id = ids.get(&(path(&e.destination), e.call_id.clone())).cloned().unwrap_or_default();
                (e.destination.clone(), e.call_id.clone(), "delivered".to_owned(), 4, id)
            })
            .collect();
        assert_eq!(got, want_rows);
        assert_eq!(stored.len(), 4);
        store.close().await;

        // And the process's metrics.
        let metrics = reqwest::get(server.url("/metrics")).await.unwrap_or_else(|e| panic!("{e}"))
            .text().await.unwrap_or_default();
        for (outcome, n) in [("delivered", 3), ("refused", 3), ("timeout", 3), ("unreachable", 3)] {
            let line = format!("callhook_forward_attempts_total{{destination=\"missed\",outcome=\"{outcome}\"}} {n}");
            assert!(metrics.contains(&line), "{line} in:\n{metrics}");
        }
        assert!(metrics.contains("callhook_forward_delivery_latency_seconds_count{destination=\"v4\"} 1"), "{metrics}");
    }
}

both_backends! {
    async fn kill_9_in_the_middle_of_deliveries_loses_none(backend: Backend) {
        // The first attempt of each message hangs: callhook is killed while it waits.
        let receiver = Receiver::start("hang", 30.0, 0);
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let forward = forward_table("all", &receiver.url("/all"), &format!("timeout_ms = 2000\n{SCHEDULE}"));
        let config = config_file(dir.path(), &forward);
        let mut first = serve(&db, &config, dir.path()).await;
        let client = reqwest::Client::new();
        for call in ["k1", "k2", "k3"] {
            post_status(&client, &first.url(""), call, "reject").await;
        }
        receiver
            .wait_for("the first attempts to arrive", Duration::from_secs(20), |r| r.len() == 3)
            .await;
        first.signal("KILL");
        first.wait_exit(Duration::from_secs(10)).await;
        let store = store(&db).await;
        let in_flight = entries(&store).await;
        assert!(
            in_flight.iter().all(|e| e.state == "pending" && e.attempts == 1),
            "claimed, not settled: {in_flight:#?}"
        );

        // A new process takes them over once their leases (timeout + 5 s) end.
        let second = serve(&db, &config, dir.path()).await;
        let want = expected(&[("/all", "k1"), ("/all", "k2"), ("/all", "k3")]);
        receiver
            .wait_for("every message delivered after the restart", Duration::from_secs(60), |r| delivered(r) == want)
            .await;
        let requests = receiver.requests();
        assert_well_formed(&requests);
        let ids = one_id_per_message(&requests);
        for (id, attempts) in by_id(&requests) {
            let answers: Vec<&str> = attempts.iter().map(|a| a.answer.as_str()).collect();
            assert_eq!(answers, ["hang", "200"], "{id}");
            let stamps: Vec<i64> = attempts
                .iter()
                .map(|a| a.timestamp.as_deref().and_then(|t| t.parse().ok()).unwrap_or_default())
                .collect();
            assert!(stamps[1] > stamps[0], "each attempt is signed at its own time: {stamps:?}");
        }
        // The receiver logs a request as it arrives; the outcome is recorded after its answer.
        let settled = |e: &[Entry]| e.iter().all(|e| e.state == "delivered");
        wait_entries(&store, Duration::from_secs(10), settled).await;
        let stored = entries(&store).await;
        assert!(
            stored.iter().all(|e| e.state == "delivered"
                && e.attempts == 2
                && ids.get(&("/all".to_owned(), e.call_id.clone())) == Some(&e.message_id)),
            "{stored:#?}"
        );
        store.close().await;
        drop(second);
    }
}

/// Two replicas on one PostgreSQL share the outbox: each claims with `FOR UPDATE SKIP
/// LOCKED` and a lease, so with no fault every message is sent exactly once (the promise
/// is at least once; a duplicate here would mean two replicas claimed one entry), and
/// both do part of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_and_send_each_message_once() {
    let receiver = Receiver::start("", 0.0, 20);
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let forward = forward_table("all", &receiver.url("/all"), "max_in_flight = 4");
    let config = config_file(dir.path(), &forward);
    let replicas = [
        serve(&db, &config, dir.path()).await,
        serve(&db, &config, dir.path()).await,
    ];
    let client = reqwest::Client::new();
    let mut sending = tokio::task::JoinSet::new();
    for i in 0..80 {
        let (client, base) = (client.clone(), replicas[i % 2].url(""));
        sending.spawn(
            async move { post_status(&client, &base, &format!("t{i}"), "not_answer").await },
        );
    }
    while let Some(done) = sending.join_next().await {
        done.unwrap_or_else(|e| panic!("{e}"));
    }
    let want = expected(
        &(0..80)
            .map(|i| ("/all", format!("t{i}")))
            .collect::<Vec<_>>()
            .iter()
            .map(|(p, c)| (*p, c.as_str()))
            .collect::<Vec<_>>(),
    );
    receiver
        .wait_for("every message delivered", Duration::from_secs(60), |r| {
            delivered(r) == want
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.requests();
    assert_well_formed(&requests);
    one_id_per_message(&requests);
    assert_eq!(requests.len(), 80, "each message sent once");
    let store = store(&db).await;
    let settled = |e: &[Entry]| e.len() == 80 && e.iter().all(|e| e.state == "delivered");
    wait_entries(&store, Duration::from_secs(10), settled).await;
    let stored = entries(&store).await;
    assert!(stored.iter().all(|e| e.attempts == 1), "{stored:#?}");
    store.close().await;
    let mut shares = Vec::new();
    for r in &replicas {
        let metrics = reqwest::get(r.url("/metrics"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        let prefix = "callhook_forward_attempts_total{destination=\"all\",outcome=\"delivered\"} ";
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        shares.push(n);
    }
    assert_eq!(shares.iter().sum::<u64>(), 80, "{shares:?}");
    assert!(
        shares.iter().all(|&n| n > 0),
        "both replicas delivered some: {shares:?}"
    );
}
