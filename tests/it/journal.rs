//! The outage journal, with real PostgreSQL servers that are stopped, frozen (SIGSTOP) and
//! restarted, and real callhook processes that are killed with SIGKILL: every acknowledged
//! delivery ends up stored exactly once, and `deliveries` counts each delivery at most once
//! (exactly once for every delivery that was acknowledged).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callhook::config::DatabaseSettings;
use callhook::store::Store;
use serde_json::Value;
use tokio::sync::RwLock;

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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn journal_events(app: &TestApp) -> u64 {
    app.state.journal.as_ref().map_or(0, |j| j.stats().events)
}

/// What the senders saw of one event: attempts made, and attempts acknowledged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    sent: i64,
    acked: i64,
}

/// A sender like Tencent's: each delivery is retried until acknowledged (at most six
/// attempts), each attempt going to the next URL of the list, so that behind several
/// replicas a retry lands on another one.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    urls: Arc<RwLock<Vec<String>>>,
    tallies: Arc<std::sync::Mutex<BTreeMap<String, Tally>>>,
}

impl Sender {
    fn new(urls: Vec<String>) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            urls: Arc::new(RwLock::new(urls)),
            tallies: Arc::default(),
        }
    }

    fn count(&self, call_id: &str, acked: bool) {
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        let e = t.entry(call_id.to_owned()).or_default();
        e.sent += 1;
        e.acked += i64::from(acked);
    }

    /// One attempt; whether it was acknowledged (HTTP 200, ErrorCode 0).
    async fn attempt(&self, url: &str, call_id: &str) -> bool {
        let body = status_body(call_id, "u", "caller", "normal_end").to_string();
        let target = format!("{url}/?{}", status_query(APP, "call_end"));
        let acked = match self.client.post(target).body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let json: Value = resp.json().await.unwrap_or_default();
                status == 200 && json["ErrorCode"] == 0
            }
            Err(_) => false,
        };
        self.count(call_id, acked);
        acked
    }

    /// Delivers `call_id` starting at URL `first`, retrying on the next URLs.
    async fn deliver(&self, call_id: &str, first: usize) -> bool {
        for attempt in 0..6 {
            let url = {
                let urls = self.urls.read().await;
                urls[(first + attempt) % urls.len()].clone()
            };
            if self.attempt(&url, call_id).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Delivers every call id of `plan` from `concurrency` tasks.
    async fn run(&self, plan: Vec<String>, concurrency: usize) {
        let plan = Arc::new(plan);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (me, plan, next) = (self.clone(), Arc::clone(&plan), Arc::clone(&next));
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(call_id) = plan.get(i) else { break };
                    me.deliver(call_id, i).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn tallies(&self) -> BTreeMap<String, Tally> {
        self.tallies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `n` events, each delivered `repeats` times, interleaved.
fn plan(prefix: &str, n: usize, repeats: usize) -> Vec<String> {
    (0..repeats)
        .flat_map(|_| (0..n).map(move |i| format!("{prefix}-{i}")))
        .collect()
}

/// Checks the database against what the senders saw: every acknowledged event is stored
/// exactly once; its `deliveries` is at least its acknowledged and at most its sent
/// attempts, and exactly its acknowledged ones when every attempt was acknowledged.
async fn assert_exact(url: &str, tallies: &BTreeMap<String, Tally>) {
    let store = Store::connect(&DatabaseSettings::new(url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows = read_events(&store).await;
    store.close().await;
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rows {
        let id = r.call_id.clone().unwrap_or_default();
        assert!(
            stored.insert(id.clone(), r.deliveries).is_none(),
            "{id} is stored twice"
        );
    }
    let mut exact = 0;
    for (id, t) in tallies {
        match stored.get(id) {
            None => assert_eq!(t.acked, 0, "{id} was acknowledged but is not stored"),
            Some(&d) => {
                assert!(
                    d >= t.acked && d <= t.sent,
                    "{id}: deliveries {d}, but {} acknowledged of {} sent",
                    t.acked,
                    t.sent
                );
                if t.acked == t.sent {
                    assert_eq!(d, t.acked, "{id}: every attempt was acknowledged");
                    exact += 1;
                }
            }
        }
    }
    assert!(
        stored.keys().all(|id| tallies.contains_key(id)),
        "nothing stored that was not sent"
    );
    assert!(exact > 0, "some events had every attempt acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_window_is_journaled_and_replayed() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool_dir.path().to_owned();
    let app = TestApp::spawn_on(db, |s| s.spool.dir = Some(dir)).await;

    let body = |id: &str| status_body(id, "u", "caller", "normal_end");
    assert_eq!(app.post_status("call_end", &body("before")).await.0, 200);

    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    // 14 s down: longer than Tencent's ~12 s of retries.
    let down = Instant::now();
    let mut journaled = BTreeSet::new();
    let mut i = 0;
    while down.elapsed() < Duration::from_secs(14) {
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
                .is_some_and(|m| m.contains("journaled")),
            "{answer}"
        );
        journaled.insert(id);
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = journaled.len() as u64;
    // A retry of a journaled event while still down merges into its row.
    app.post_status("call_end", &body("during-5")).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "still ready while journaling: {ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap_or_default();
    assert_eq!(ready["database"], "down");
    // One row per event; the first delivery may have one of its own: when its connection
    // broke in the middle of the write (rather than the database answering with an
    // error), it is journaled under that write's fence (src/store/fence.rs).
    let rows = ready["journal_events"].as_u64().unwrap_or_default();
    assert!(rows == n || rows == n + 1, "{rows} rows for {n} events");
    // The metrics recorder is global to the test process, and other tests journal at the
    // same time: only the presence of the gauges is this test's to check (the exact
    // values are read from /readyz above, which is this instance's own).
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains("callhook_journal_events "), "{metrics}");
    assert!(metrics.contains("callhook_database_up "), "{metrics}");

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    // A retry that reaches the database directly after it returns, racing the replay.
    wait_for(
        "the database to take writes again",
        Duration::from_secs(20),
        async || {
            let (_, a) = app.post_status("call_end", &body("during-1")).await;
            a["ErrorMessage"] != Ack::JOURNALED
        },
    )
    .await;
    wait_for(
        "the journal to drain",
        Duration::from_secs(30),
        async || journal_events(&app) == 0,
    )
    .await;

    let rows = app.events().await;
    let ids: Vec<String> = rows.iter().filter_map(|r| r.call_id.clone()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no event stored twice");
    journaled.insert("before".into());
    assert_eq!(unique, journaled, "every acknowledged event is stored");
    let deliveries = |id: &str| {
        rows.iter()
            .find(|r| r.call_id.as_deref() == Some(id))
            .map(|r| r.deliveries)
    };
    assert_eq!(
        deliveries("during-5"),
        Some(2),
        "the journaled retry counts"
    );
    assert_eq!(
        deliveries("during-0"),
        Some(1),
        "the fenced write counts once"
    );
    assert!(
        deliveries("during-1").is_some_and(|d| d >= 2),
        "the direct retries and the replay make one row"
    );
    let received = rows
        .iter()
        .find(|r| r.call_id.as_deref() == Some("during-9"))
        .map(|r| r.received_at);
    assert!(
        received.is_some_and(|t| t < callhook::now_millis() - 1000),
        "received_at is when callhook got it, not the replay time"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap_or_default();
    assert_eq!(ready["database"], "up", "{ready}");
    assert_eq!(ready["journal_events"], 0, "{ready}");
}

/// What `Ack::Journaled` says, to tell a journaled answer apart.
struct Ack;
impl Ack {
    const JOURNALED: &'static str = "Success (journaled: the database is unavailable; the event is kept and will be stored when it returns)";
}

/// SIGSTOP under load: batches in flight when the server froze are journaled too, the
/// senders are answered within the request timeout (each answer is a 200, never the
/// 71302 timeout), and after SIGCONT every delivery is counted exactly once — the frozen
/// writes that commit after all are settled by their fences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_under_load_loses_and_doubles_nothing() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool_dir.path().to_owned();
    let app = TestApp::spawn_on(db, |s| s.spool.dir = Some(dir)).await;
    let base = format!("http://{}", app.addr);
    let sender = Sender::new(vec![base]);

    let load = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run(plan("frozen", 1500, 2), 16).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.freeze().unwrap_or_else(|e| panic!("{e:#}"));
    wait_for("journaling to start", Duration::from_secs(10), async || {
        journal_events(&app) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(r#""database":"down""#), "{ready}");
    cluster.thaw().unwrap_or_else(|e| panic!("{e:#}"));
    load.await.unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the journal to drain",
        Duration::from_secs(60),
        async || journal_events(&app) == 0,
    )
    .await;

    let tallies = sender.tallies();
    let unacked: i64 = tallies.values().map(|t| t.sent - t.acked).sum();
    assert_eq!(
        unacked, 0,
        "every attempt was answered 0 (journaled when the database froze)"
    );
    assert_exact(&app.db.url, &tallies).await;
}

/// kill -9 while journaling (callhook restarted while PostgreSQL is still down, on a
/// database that was never migrated), and kill -9 in the middle of the replay: nothing
/// acknowledged is lost and nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_journaling_and_while_replaying() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool = spool_dir.path().display().to_string();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--sdkappid",
        "1400000001",
        "--spool-dir",
        spool.as_str(),
        // Small replay chunks, so the replay takes long enough to be killed in.
        "--max-batch",
        "16",
    ];
    // Down before callhook ever ran: it starts anyway, and migrates later.
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    let mut server = Server::start(&args, &[]).await;
    let sender = Sender::new(vec![format!("http://{}", server.addr)]);
    let load = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run(plan("k", 3000, 2), 16).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        server.log_text().contains("serving anyway"),
        "{}",
        server.log_text()
    );

    // Restarted with PostgreSQL still down: the journal from before is there, and the
    // senders' retries are journaled.
    let restarted = Server::start(&args, &[]).await;
    *sender.urls.write().await = vec![format!("http://{}", restarted.addr)];
    load.await.unwrap_or_else(|e| panic!("{e}"));
    let ready = |s: &Server| {
        let url = s.url("/readyz");
        async move {
            let body = reqwest::get(url).await.ok()?.text().await.ok()?;
            serde_json::from_str::<Value>(&body).ok()
        }
    };
    let waiting = ready(&restarted).await.map(|v| v["journal_events"].clone());
    assert!(
        waiting
            .as_ref()
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 1000),
        "{waiting:?}"
    );
    assert!(
        restarted
            .log_text()
            .contains("the outage journal holds events from an earlier run")
    );

    // PostgreSQL returns; kill -9 while the replay is half way.
    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    let mut restarted = restarted;
    let total = waiting.and_then(|v| v.as_u64()).unwrap_or(0);
    wait_for(
        "the replay to be under way",
        Duration::from_secs(60),
        async || {
            ready(&restarted)
                .await
                .and_then(|v| v["journal_events"].as_u64())
                .is_some_and(|n| n < total * 3 / 4)
        },
    )
    .await;
    restarted.signal("KILL");
    restarted.wait_exit(Duration::from_secs(10)).await;

    let last = Server::start(&args, &[]).await;
    wait_for(
        "the replay to finish",
        Duration::from_secs(90),
        async || {
            ready(&last)
                .await
                .is_some_and(|v| v["journal_events"] == 0 && v["database"] == "up")
        },
    )
    .await;
    assert_exact(&db.url, &sender.tallies()).await;
}

/// A journal SQLite reports corrupt is moved aside byte for byte, counted and logged, and
/// callhook carries on with a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_is_kept_and_replaced() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let garbage = b"SQLite format 3\0 but then the disk went wrong ".repeat(400);
    std::fs::write(spool_dir.path().join("journal.db"), &garbage).unwrap_or_else(|e| panic!("{e}"));
    let spool = spool_dir.path().display().to_string();
    let server = Server::start(
        &[
            "--database-url",
            db.url.as_str(),
            "--sdkappid",
            "1400000001",
            "--spool-dir",
            spool.as_str(),
        ],
        &[],
    )
    .await;
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(spool_dir.path())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    let kept: Vec<_> = aside
        .iter()
        .filter(|p| p.to_string_lossy().contains("journal-corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(kept[0]).ok().as_ref(), Some(&garbage));
    assert!(server.log_text().contains("the outage journal is corrupt"));
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("callhook_journal_corrupt_total 1"),
        "{metrics}"
    );
    // The journal's counters are exported at 0 before its first use, so that rate()
    // counts the first appends and replays.
    for counter in [
        "callhook_journal_appended_total 0",
        "callhook_journal_replayed_total 0",
    ] {
        assert!(metrics.contains(counter), "{counter}: {metrics}");
    }
    // The fresh journal works.
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    let sender = Sender::new(vec![format!("http://{}", server.addr)]);
    assert!(sender.deliver("after-corruption", 0).await);
    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    wait_for("the replay", Duration::from_secs(30), async || {
        let store = Store::connect(&DatabaseSettings::new(&db.url)).await;
        match store {
            Ok(s) => !read_events(&s).await.is_empty(),
            Err(_) => false,
        }
    })
    .await;
}

/// A journaled row PostgreSQL refuses (here a NUL in a text column, which SQLite stores
/// and PostgreSQL cannot) goes to rejected_deliveries with the reason; the rows around it
/// are replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_is_set_aside_and_the_rest_replays() {
    let (cluster, db) = cluster_db().await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = spool_dir.path().to_owned();
    let app = TestApp::spawn_on(db, |s| {
        s.spool.dir = Some(dir.clone());
        s.ingest.max_batch = 8;
    })
    .await;
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    for i in 0..20 {
        let id = format!("p-{i}");
        let (status, _) = app
            .post_status("call_end", &status_body(&id, "u", "caller", "cancel"))
            .await;
        assert_eq!(status, 200);
    }
    // Damage one journaled row the way a bug or a schema drift could.
    let journal_url = format!("sqlite://{}", dir.join("journal.db").display());
    let pool = sqlx::SqlitePool::connect(&journal_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let changed =
        sqlx::query("UPDATE journal_events SET call_id = 'p-7' || char(0) WHERE call_id = 'p-7'")
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .rows_affected();
    pool.close().await;
    assert_eq!(changed, 1);

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    wait_for(
        "the journal to drain",
        Duration::from_secs(30),
        async || journal_events(&app) == 0,
    )
    .await;
    let stored: BTreeSet<String> = app
        .events()
        .await
        .into_iter()
        .filter_map(|r| r.call_id)
        .collect();
    let want: BTreeSet<String> = (0..20)
        .filter(|&i| i != 7)
        .map(|i| format!("p-{i}"))
        .collect();
    assert_eq!(stored, want);
    let rejected = app.rejected().await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].reason.contains("replaying the outage journal"),
        "{rejected:?}"
    );
    assert!(rejected[0].body.contains("p-7"), "the body is kept");
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("callhook_journal_refused_total 1"),
        "{metrics}"
    );
}

/// The replay's progress is committed with its rows: replaying the same chunk again (as
/// after a crash between PostgreSQL's commit and the journal's delete) writes nothing
/// twice; and a journaled write whose original did commit (its fence raised) is skipped,
/// while one whose original did not is written and fences the original off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_idempotent_and_fences_settle_unknown_writes() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::spawn_on(db, |_| {}).await;
    let spool_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = callhook::journal::Journal::open(spool_dir.path(), 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows: Vec<callhook::protocol::EventRow> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let ctx = callhook::protocol::Context {
                sdkappid: APP,
                command: "call_end",
                client_ip: None,
                opt_platform: None,
                remote_addr: None,
                received_at: 1_700_000_000_000,
            };
            let body = status_body(id, "u", "caller", "cancel").to_string();
            callhook::protocol::parse_delivery(
                callhook::protocol::Kind::Status,
                false,
                &ctx,
                body.as_bytes(),
            )
            .ok()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("parses"))
        })
        .collect();
    let committed = callhook::store::Fence {
        writer: [1; 16],
        batch: 5,
    };
    let abandoned = callhook::store::Fence {
        writer: [2; 16],
        batch: 9,
    };
    journal
        .append(&[&rows[0], &rows[0]], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal
        .append(&[&rows[1]], Some(committed))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    journal
        .append(&[&rows[2]], Some(abandoned))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The write fenced `committed` did commit: its fence is up, and its row is stored.
    let Store::Postgres(pg) = app.store() else {
        panic!("a PostgreSQL test")
    };
    sqlx::query("INSERT INTO ingest_fences (writer_id, last_batch) VALUES ($1, 5)")
        .bind(&committed.writer[..])
        .execute(pg.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.store()
        .write_batch(
            &[callhook::store::BatchRow {
                row: &rows[1],
                deliveries: 1,
            }],
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let replayed = journal
        .replay(app.store(), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replayed, 3);
    let counts = || async {
        app.events()
            .await
            .into_iter()
            .map(|r| (r.call_id.unwrap_or_default(), r.deliveries))
            .collect::<BTreeMap<_, _>>()
    };
    let want: BTreeMap<String, i64> = [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)].into();
    assert_eq!(counts().await, want);
    let fence: i64 =
        sqlx::query_scalar("SELECT last_batch FROM ingest_fences WHERE writer_id = $1")
            .bind(&abandoned.writer[..])
            .fetch_one(pg.pool())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fence, 9, "the abandoned write is fenced off");

    // The same chunk once more, as after a crash before the journal forgot it.
    journal
        .append(&[&rows[0]], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let position: (i64, i64) =
        sqlx::query_as("SELECT replayed_chunk, replayed_id FROM journal_progress")
            .fetch_one(pg.pool())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let again = callhook::store::JournalRow {
        chunk: position.0,
        id: position.1,
        row: rows[0].clone(),
        deliveries: 2,
        fence: None,
    };
    let journal_id: String = sqlx::query_scalar("SELECT journal_id FROM journal_progress")
        .fetch_one(pg.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.store()
        .replay(&journal_id, &[again])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        counts().await,
        want,
        "a replayed chunk is not written twice"
    );
    journal
        .replay(app.store(), 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts().await.get("a"), Some(&3), "the later repeat is");
}

/// Two replicas, two real processes on one PostgreSQL, each with its own journal: every
/// event goes to both (a retry landing on the other replica), one replica is killed -9
/// in the middle, and the senders' retries move to the other. Rows and deliveries are
/// exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_mid_load() {
    let db = TestDb::new(Backend::Postgres).await;
    let dirs = [
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
    ];
    let start = |dir: &tempfile::TempDir| {
        let spool = dir.path().display().to_string();
        let url = db.url.clone();
        async move {
            Server::start(
                &[
                    "--database-url",
                    url.as_str(),
                    "--sdkappid",
                    "1400000001",
                    "--spool-dir",
                    spool.as_str(),
                ],
                &[],
            )
            .await
        }
    };
    let (a, b) = tokio::join!(start(&dirs[0]), start(&dirs[1]));
    let mut a = a;
    let urls = vec![format!("http://{}", a.addr), format!("http://{}", b.addr)];
    // Every event is sent twice at once: once starting at each replica.
    let sender = Sender::new(urls.clone());
    let events: Vec<String> = (0..2000).map(|i| format!("r-{i}")).collect();
    let load = {
        let sender = sender.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let first = {
                let s = sender.clone();
                let e = events.clone();
                async move { s.run(e, 12).await }
            };
            let second = {
                let s = Sender {
                    urls: Arc::new(RwLock::new(vec![urls[1].clone(), urls[0].clone()])),
                    ..sender.clone()
                };
                async move { s.run(events, 12).await }
            };
            tokio::join!(first, second);
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).await;
    load.await.unwrap_or_else(|e| panic!("{e}"));
    let tallies = sender.tallies();
    assert!(
        tallies.values().all(|t| t.acked >= 1),
        "every event was acknowledged by a replica"
    );
    assert_eq!(tallies.len(), events.len());
    assert_exact(&db.url, &tallies).await;
    assert!(
        b.log_text().contains("callhook is receiving callbacks"),
        "the other replica carried on"
    );
}

/// A graceful stop finishes within `shutdown_timeout_ms` in total, even with the database
/// frozen under connections that will never answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_with_a_frozen_database() {
    let (cluster, db) = cluster_db().await;
    let mut server = Server::start(
        &[
            "--database-url",
            db.url.as_str(),
            "--sdkappid",
            "1400000001",
            "--no-spool",
            "--shutdown-timeout-ms",
            "2000",
        ],
        &[],
    )
    .await;
    let sender = Sender::new(vec![format!("http://{}", server.addr)]);
    assert!(sender.deliver("before-freeze", 0).await);
    cluster.freeze().unwrap_or_else(|e| panic!("{e:#}"));
    let busy = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.run(plan("busy", 40, 1), 8).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    server.signal("TERM");
    let code = server.wait_exit(Duration::from_secs(20)).await;
    let took = asked.elapsed();
    cluster.thaw().unwrap_or_else(|e| panic!("{e:#}"));
    busy.abort();
    assert_eq!(code, Some(0), "{}", server.log_text());
    // The bound itself (2 s), plus process exit; before, the drain could take twice the
    // bound and closing the pool had none.
    assert!(
        took < Duration::from_millis(3500),
        "stopped after {took:?}; log:\n{}",
        server.log_text()
    );
}
