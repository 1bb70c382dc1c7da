//! The outage spool, with a real PostgreSQL stopped and restarted: acknowledged while the
//! database is down, replayed when it returns (also after kill -9), never duplicated, and
//! refused (503) when full.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::pg::PgCluster;
use crate::process::Server;

async fn cluster_db() -> (PgCluster, TestDb) {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database().await;
    (cluster, TestDb::postgres_at(url))
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_and_replayed_without_duplicates() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool_dir.path().to_owned();
    let app = TestApp::spawn_on(db, |s| s.spool.dir = Some(dir)).await;

    let body = |id: &str| status_body(id, "u", "caller", "normal_end");
    assert_eq!(app.post_status("call_end", &body("before")).await.0, 200);

    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    let mut spooled = BTreeSet::new();
    for i in 0..40 {
        let id = format!("during-{i}");
        let (status, answer) = app.post_status("call_end", &body(&id)).await;
        assert_eq!(
            (status, answer["ErrorCode"].as_i64()),
            (200, Some(0)),
            "{answer}"
        );
        assert!(
            answer["ErrorMessage"]
                .as_str()
                .is_some_and(|m| m.contains("spooled")),
            "{answer}"
        );
        spooled.insert(id);
    }
    // A retry of a spooled event while still down: spooled again.
    app.post_status("call_end", &body("during-0")).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "still ready while spooling: {ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap_or_default();
    assert_eq!(ready["database"], "down");
    assert_eq!(ready["spooled_events"], 41);
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains("callhook_spool_events 41"), "{metrics}");

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    // A retry that reaches the database directly after it returns, racing the replay.
    wait_for(
        "the database to take writes again",
        Duration::from_secs(20),
        async || {
            app.post_status("call_end", &body("during-1")).await.1["ErrorMessage"]
                == "Success (duplicate delivery, already stored)"
                || app
                    .state
                    .spool
                    .as_ref()
                    .is_some_and(|s| s.stats().events < 41)
        },
    )
    .await;
    wait_for("the spool to drain", Duration::from_secs(30), async || {
        app.state
            .spool
            .as_ref()
            .is_some_and(|s| s.stats().events == 0)
    })
    .await;

    let rows = app.events().await;
    let ids: Vec<String> = rows.iter().filter_map(|r| r.call_id.clone()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no event stored twice");
    spooled.insert("before".into());
    assert_eq!(unique, spooled, "every acknowledged event is stored");
    let during0 = rows
        .iter()
        .find(|r| r.call_id.as_deref() == Some("during-0"))
        .map(|r| r.deliveries);
    assert_eq!(during0, Some(2), "the spooled retry counts as a delivery");
    let during1 = rows
        .iter()
        .find(|r| r.call_id.as_deref() == Some("during-1"))
        .map(|r| r.deliveries);
    assert!(
        during1.is_some_and(|d| d >= 2),
        "the direct retry and the replay make one row: {during1:?}"
    );
    let received = rows
        .iter()
        .find(|r| r.call_id.as_deref() == Some("during-5"))
        .map(|r| r.received_at);
    assert!(
        received.is_some_and(|t| t < callhook::now_millis() - 50),
        "received_at is when callhook got it, not the replay time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_kill_9_and_are_replayed_at_start() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool_arg = spool_dir.path().display().to_string();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--sdkappid",
        "1400000001",
        "--spool-dir",
        spool_arg.as_str(),
    ];
    let mut server = Server::start(&args, &[]).await;
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));

    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    for i in 0..25 {
        let id = format!("k-{i}");
        let resp = client
            .post(server.url(&format!("/?{}", status_query(APP, "call_end"))))
            .body(status_body(&id, "u", "callee", "not_answer").to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if resp.status().as_u16() == 200 {
            acked.insert(id);
        }
    }
    assert_eq!(acked.len(), 25, "log:\n{}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("acknowledging events from the local spool")
    );
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10)).await;

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    let restarted = Server::start(&args, &[]).await;
    let store = callhook::store::Store::connect(&callhook::config::DatabaseSettings::new(&db.url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    wait_for(
        "the replay after restart",
        Duration::from_secs(30),
        async || read_events(&store).await.len() >= 25,
    )
    .await;
    let rows = read_events(&store).await;
    let ids: BTreeSet<String> = rows.iter().filter_map(|r| r.call_id.clone()).collect();
    assert_eq!(ids, acked);
    assert_eq!(rows.len(), 25);
    wait_for(
        "the drained log line",
        Duration::from_secs(10),
        async || restarted.log_text().contains("spool drained"),
    )
    .await;
    assert!(
        restarted
            .log_text()
            .contains("the spool holds events from an earlier run")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool_dir.path().to_owned();
    let app = TestApp::spawn_on(db, |s| {
        s.spool.dir = Some(dir);
        s.spool.max_bytes = 4000;
    })
    .await;
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    let mut answers = Vec::new();
    for i in 0..20 {
        let (status, answer) = app
            .post_status(
                "call_end",
                &status_body(&format!("f-{i}"), "u", "caller", "cancel"),
            )
            .await;
        answers.push((status, answer["ErrorCode"].as_i64()));
    }
    let spooled = answers.iter().filter(|a| **a == (200, Some(0))).count();
    let refused = answers.iter().filter(|a| **a == (503, Some(71301))).count();
    assert!(spooled > 0 && refused > 0, "{answers:?}");
    assert_eq!(spooled + refused, 20, "{answers:?}");
    assert!(
        answers[..spooled].iter().all(|a| a.0 == 200),
        "refusals start when the spool is full"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(
        status, 503,
        "not ready with the database down and the spool full: {ready}"
    );

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    wait_for("the spool to drain", Duration::from_secs(30), async || {
        app.state
            .spool
            .as_ref()
            .is_some_and(|s| s.stats().events == 0)
    })
    .await;
    assert_eq!(
        app.events().await.len(),
        spooled,
        "exactly the acknowledged ones are stored"
    );
}
