//! Operations: health, readiness, metrics, proxies, overload, logs, configuration errors,
//! graceful shutdown and kill -9 under load, and a database outage with recovery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callhook::config::DatabaseSettings;
use callhook::store::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::*;
use crate::process::Server;

both_backends! {
    async fn health_readiness_and_metrics(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, body) = app.get("/healthz").await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap_or_default()["ErrorCode"], 0);
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 200, "{body}");
        let ready: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(ready["database"], "up");
        assert_eq!(ready["ErrorCode"], 0);

        app.post_status("call_end", &status_body("m-1", "u", "caller", "normal_end")).await;
        app.post_status("call_end", &status_body("m-1", "u", "caller", "normal_end")).await;
        let (status, text) = app.get("/metrics").await;
        assert_eq!(status, 200);
        for needle in [
            "callhook_deliveries_total{family=\"status\",command=\"call_end\",outcome=\"stored\",reason=\"success\"}",
            "callhook_deliveries_total{family=\"status\",command=\"call_end\",outcome=\"duplicate\",reason=\"success\"}",
            "callhook_request_duration_seconds_bucket",
            "callhook_batch_size_bucket",
            "callhook_commit_duration_seconds_bucket",
            "callhook_queue_wait_seconds_bucket",
            "callhook_queue_depth",
            "callhook_queue_oldest_age_seconds",
            // The recorder is global to the test process, where other tests stop their
            // databases: the value is this instance's only in /readyz, checked above.
            "callhook_database_up ",
            "# HELP callhook_deliveries_total",
        ] {
            assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
        }
        // The stored rows agree with what the metrics claim happened.
        let rows = app.events().await;
        assert_eq!((rows.len(), rows[0].deliveries), (1, 2));
    }
}

both_backends! {
    /// X-Forwarded-For is believed only from a trusted proxy.
    async fn forwarded_addresses_only_from_trusted_proxies(backend: Backend) {
        let trusting = TestApp::spawn_with(backend, |s| {
            s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        }).await;
        let sceptic = TestApp::spawn(backend).await;
        for app in [&trusting, &sceptic] {
            let resp = app
                .client
                .post(app.url(&format!("/?{}", status_query(APP, "call_end"))))
                .header("X-Forwarded-For", "198.51.100.23, 203.0.113.9")
                .body(status_body("p-1", "u", "caller", "cancel").to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parse(resp).await.0, 200);
        }
        assert_eq!(trusting.events().await[0].remote_addr.as_deref(), Some("203.0.113.9"));
        assert_eq!(sceptic.events().await[0].remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(trusting.events().await[0].client_ip.as_deref(), Some("10.0.0.7"), "Tencent's clientip is kept beside it");
    }
}

both_backends! {
    /// A proxy's X-Request-Id comes back on every answer: stored, refused, unknown path.
    async fn request_ids_are_echoed(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        for (path, status, body) in [
            (format!("/?{}", status_query(APP, "call_end")), 200, status_body("rid-1", "u", "caller", "reject").to_string()),
            (format!("/?{}", status_query(APP, "call_end")), 400, "{not json".to_owned()),
            ("/nowhere".to_owned(), 404, String::new()),
        ] {
            let resp = app
                .client
                .post(app.url(&path))
                .header("X-Request-Id", format!("rid-{status}"))
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let echoed = resp.headers().get("x-request-id").map(|v| v.as_bytes().to_vec());
            let (got, envelope) = parse(resp).await;
            assert_eq!(got, status, "{path}: {envelope}");
            assert_eq!(echoed.as_deref(), Some(format!("rid-{status}").as_bytes()), "{path}");
        }
        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].call_id.as_deref(), Some("rid-1"));
        // Keeping a refused delivery is best effort: a write that passes its deadline (a
        // CI machine's cores all busy) drops it, and the sender's retry keeps it, as
        // Tencent retries every answer that is not ErrorCode 0. So retry as it does.
        let mut kept = app.rejected().await;
        for _ in 0..6 {
            if !kept.is_empty() {
                break;
            }
            let resp = app
                .client
                .post(app.url(&format!("/?{}", status_query(APP, "call_end"))))
                .body("{not json")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parse(resp).await.0, 400);
            kept = app.rejected().await;
        }
        assert_eq!(kept.len(), 1, "the malformed one is kept, once: {kept:?}");
    }
}

/// Posts unique deliveries from `concurrency` tasks until `stop` is set or the server goes
/// away; returns the call ids that were acknowledged with ErrorCode 0.
async fn load(base: String, concurrency: usize, stop: Arc<AtomicBool>) -> BTreeSet<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let base = base.clone();
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let mut failures = 0;
            for n in 0.. {
                if stop.load(Ordering::Relaxed) || failures > 20 {
                    break;
                }
                let call_id = format!("load-{worker}-{n}");
                let body = status_body(&call_id, "u", "caller", "normal_end").to_string();
                let url = format!("{base}/?{}", status_query(APP, "call_end"));
                match client.post(url).body(body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let json: Value = resp.json().await.unwrap_or_default();
                        if status == 200 && json["ErrorCode"] == 0 {
                            acked.push(call_id);
                        } else {
                            failures += 1;
                        }
                    }
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            acked
        });
    }
    let mut all = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap_or_default());
    }
    all
}

async fn stored_call_ids(url: &str) -> (BTreeSet<String>, usize) {
    let store = Store::connect(&DatabaseSettings::new(url))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rows = read_events(&store).await;
    store.close().await;
    let n = rows.len();
    (rows.into_iter().filter_map(|r| r.call_id).collect(), n)
}

both_backends! {
    /// SIGTERM under load: exits 0 promptly, and every acknowledged event is stored.
    async fn sigterm_under_load_commits_everything_acknowledged(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut server = Server::start(&["--database-url", &db.url, "--sdkappid", &APP.to_string(), "--no-spool"], &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let loader = tokio::spawn(load(format!("http://{}", server.addr), 32, Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.signal("TERM");
        let code = server.wait_exit(Duration::from_secs(15)).await;
        stop.store(true, Ordering::Relaxed);
        let acked = loader.await.unwrap_or_default();
        assert_eq!(code, Some(0), "log:\n{}", server.log_text());
        assert!(acked.len() > 50, "the load ran ({} acknowledged)", acked.len());
        let (stored, rows) = stored_call_ids(&db.url).await;
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
        assert_eq!(rows, stored.len(), "no event stored twice");
        assert!(server.log_text().contains("callhook stopped"));
    }
}

both_backends! {
    /// kill -9 under load loses no acknowledged event.
    async fn kill_9_under_load_loses_nothing_acknowledged(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut server = Server::start(&["--database-url", &db.url, "--sdkappid", &APP.to_string(), "--no-spool"], &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let loader = tokio::spawn(load(format!("http://{}", server.addr), 32, Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.signal("KILL");
        let code = server.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(code, None, "killed by a signal");
        stop.store(true, Ordering::Relaxed);
        let acked = loader.await.unwrap_or_default();
        assert!(acked.len() > 50, "the load ran ({} acknowledged)", acked.len());
        let (stored, rows) = stored_call_ids(&db.url).await;
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
        assert_eq!(rows, stored.len());
    }
}

/// With PostgreSQL stopped a callback is refused fast with a non-zero envelope, readiness
/// fails, and after PostgreSQL restarts callbacks succeed again without a restart of
/// callhook; each transition is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_fails_fast_and_recovers() {
    let cluster = crate::pg::PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database().await;
    let server = Server::start(
        &[
            "--database-url",
            &url,
            "--sdkappid",
            &APP.to_string(),
            "--no-spool",
        ],
        &[],
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let post = |call_id: &str| {
        client
            .post(server.url(&format!("/?{}", status_query(APP, "call_end"))))
            .body(status_body(call_id, "u", "caller", "reject").to_string())
            .send()
    };
    assert_eq!(
        post("before").await.map(|r| r.status().as_u16()).ok(),
        Some(200)
    );

    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    for i in 0..5 {
        let started = Instant::now();
        let resp = post(&format!("during-{i}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["ErrorCode"], 71301, "{answer}");
        assert!(
            elapsed < Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
    }
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready.status().as_u16(), 503);
    let ready: Value = ready.json().await.unwrap_or_default();
    assert_eq!(ready["database"], "down");

    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = post("after")
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "callhook did not recover; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready.status().as_u16(), 200);

    let log = server.log_text();
    assert_eq!(
        log.matches("database unavailable;").count(),
        1,
        "down logged once:\n{log}"
    );
    assert_eq!(
        log.matches("database is reachable again").count(),
        1,
        "up logged once:\n{log}"
    );
    let (stored, _) = stored_call_ids(&url).await;
    assert_eq!(
        stored,
        ["after", "before"].into_iter().map(String::from).collect()
    );
}

/// A full queue is answered at once with 503 and 70005; what was acknowledged is stored,
/// what was refused is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_with_70005() {
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.ingest.queue_depth = 1;
        s.ingest.max_batch = 1;
        s.ingest.writers = 1;
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let client = app.client.clone();
        let url = app.url(&format!("/?{}", status_query(APP, "call_end")));
        tasks.spawn(async move {
            let body = status_body(&format!("o-{i}"), "u", "caller", "normal_end").to_string();
            let resp = client
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (format!("o-{i}"), parse(resp).await)
        });
    }
    let mut acked = BTreeSet::new();
    let mut overloaded = 0;
    while let Some(r) = tasks.join_next().await {
        let (id, (status, answer)) = r.unwrap_or_else(|e| panic!("{e}"));
        match (status, answer["ErrorCode"].as_i64()) {
            (200, Some(0)) => {
                acked.insert(id);
            }
            (503, Some(70005)) => overloaded += 1,
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    assert!(
        overloaded > 0,
        "a one-slot queue under 300 concurrent requests overflows"
    );
    let stored: BTreeSet<String> = app
        .events()
        .await
        .into_iter()
        .filter_map(|r| r.call_id)
        .collect();
    assert_eq!(stored, acked);
}

/// A client that never finishes its headers is disconnected after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was closed by the server");
    assert!(app.events().await.is_empty());
}

/// JSON logs: one line per callback with family, command, outcome and latency, and no
/// secret anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_and_no_secrets() {
    let db = TestDb::new(Backend::Sqlite).await;
    let token_var = format!("CALLHOOK_TOKEN_{TOKEN_APP}");
    let server = Server::start(
        &[
            "--database-url",
            &db.url,
            "--sdkappid",
            &TOKEN_APP.to_string(),
            "--log-format",
            "json",
        ],
        &[(&token_var, TOKEN)],
    )
    .await;
    let client = reqwest::Client::new();
    for (n, token) in [TOKEN, "wrong-token"].into_iter().enumerate() {
        let url = server.url(&format!(
            "/?{}&token={token}",
            status_query(TOKEN_APP, "call_end")
        ));
        let body = status_body("log-1", "u", "caller", "normal_end").to_string();
        client
            .post(url)
            .header("X-Request-Id", format!("proxy-req-{n}"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = server.log_lines();
    let entries: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        entries.len(),
        lines.len(),
        "every log line is JSON:\n{}",
        lines.join("\n")
    );
    let stored = entries
        .iter()
        .find(|e| e["message"] == "callback")
        .unwrap_or_else(|| panic!("no callback line:\n{}", lines.join("\n")));
    assert_eq!(stored["family"], "status");
    assert_eq!(stored["command"], "call_end");
    assert_eq!(stored["outcome"], "stored");
    assert_eq!(stored["request_id"], "proxy-req-0");
    assert!(stored["latency_ms"].as_f64().is_some());
    assert!(entries.iter().any(|e| e["message"] == "callback refused"
        && e["code"] == 71102
        && e["request_id"] == "proxy-req-1"));
    let all = lines.join("\n");
    assert!(
        !all.contains(TOKEN) && !all.contains("wrong-token"),
        "no token in the logs:\n{all}"
    );
    // In a fresh process, gauges set while starting reach the exporter too.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("callhook_queue_capacity 4096"),
        "{metrics}"
    );
}

/// A token mounted from a Kubernetes secret into the environment ends in a newline: it
/// authenticates all the same, as `token=` and as a `Sign` (the whitespace around every
/// secret is dropped when the configuration is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_trailing_newline_authenticates() {
    let db = TestDb::new(Backend::Sqlite).await;
    let token_var = format!("CALLHOOK_TOKEN_{TOKEN_APP}");
    let from_secret = format!("{TOKEN}\n");
    let server = Server::start(
        &[
            "--database-url",
            &db.url,
            "--sdkappid",
            &TOKEN_APP.to_string(),
        ],
        &[(&token_var, &from_secret)],
    )
    .await;
    let client = reqwest::Client::new();
    let query = status_query(TOKEN_APP, "call_end");
    let now = chrono::Utc::now().timestamp().to_string();
    let sign = callhook::auth::sign(TOKEN, &now);
    let attempts = [
        ("nl-1", format!("{query}&token={TOKEN}")),
        ("nl-2", format!("{query}&RequestTime={now}&Sign={sign}")),
    ];
    for (call_id, query) in &attempts {
        let body = status_body(call_id, "u", "caller", "normal_end").to_string();
        let resp = client
            .post(server.url(&format!("/?{query}")))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, answer) = parse(resp).await;
        assert_eq!(status, 200, "{call_id}: {answer}\n{}", server.log_text());
    }
    let store = Store::connect(&DatabaseSettings::new(db.url.clone()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let stored: Vec<Option<String>> = read_events(&store)
        .await
        .into_iter()
        .map(|e| e.call_id)
        .collect();
    assert_eq!(stored, [Some("nl-1".to_owned()), Some("nl-2".to_owned())]);
    store.close().await;
}

/// At start, one log line per app says which checks its callbacks get, never a secret's
/// value; an app whose TRTC callbacks are refused for want of a key is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_log_names_each_apps_checks() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("callhook.toml");
    std::fs::write(
        &config,
        "[[apps]]\nsdkappid = 1400000011\ntoken_env = \"T11\"\ncommands = [\"call_end\", \"reject\"]\n\
         [[apps]]\nsdkappid = 1400000012\ntrtc_key = \"SECRET-key-12\"\n\
         [[apps]]\nsdkappid = 1400000013\ntoken = \"SECRET-token-13\"\ntrtc_allow_unsigned = true\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(
        &[
            "--database-url",
            &db.url,
            "--config",
            &config.display().to_string(),
            "--sdkappid",
            "1400000014",
            "--log-format",
            "json",
        ],
        &[("T11", "SECRET-token-11\n")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = server.log_lines();
    let entries: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let checks = |id: i64| {
        entries
            .iter()
            .find(|e| e["message"] == "app checks" && e["sdkappid"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no checks for {id}:\n{}", lines.join("\n")))
    };
    let fields = |id: i64| {
        let e = checks(id);
        [e["token"].clone(), e["commands"].clone(), e["trtc"].clone()]
    };
    assert_eq!(
        fields(1_400_000_011),
        [
            json!("on"),
            json!("2 listed"),
            json!("refused (token but no trtc_key)")
        ]
    );
    assert_eq!(
        fields(1_400_000_012),
        [json!("off"), json!("all"), json!("signed (trtc_key)")]
    );
    assert_eq!(
        fields(1_400_000_013),
        [
            json!("on"),
            json!("all"),
            json!("unsigned allowed (trtc_allow_unsigned)")
        ]
    );
    assert_eq!(
        fields(1_400_000_014),
        [
            json!("off"),
            json!("all"),
            json!("unverified (no trtc_key, no token)")
        ]
    );
    assert!(
        entries.iter().any(|e| e["level"] == "WARN"
            && e["sdkappid"] == 1_400_000_011
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("CALLHOOK_TRTC_KEY_1400000011"))),
        "{}",
        lines.join("\n")
    );
    let all = lines.join("\n");
    assert!(!all.contains("SECRET"), "no secret in the log:\n{all}");
}

/// Configuration problems: one line naming the problem, exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[limits]\nbody_byts = 10\n").unwrap_or_else(|e| panic!("{e}"));
    let bad = bad_file.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve"], "no SDKAppID"),
        (vec!["serve", "--sdkappid", "abc"], "--sdkappid \"abc\""),
        (
            vec!["serve", "--sdkappid", "1", "--listen", "nowhere"],
            "listen address",
        ),
        (
            vec!["serve", "--sdkappid", "1", "--config", &bad],
            "body_byts",
        ),
        (
            vec!["serve", "--sdkappid", "1", "--database-url", "mysql://x"],
            "neither sqlite",
        ),
        (
            vec!["serve", "--sdkappid", "1", "--max-batch", "0"],
            "ingest.max_batch (--max-batch, CALLHOOK_MAX_BATCH) is 0",
        ),
        // A variable's bad value is named by the variable, not by its flag.
        (
            vec!["serve", "--sdkappid", "1", "CALLHOOK_BODY_LIMIT=abc"],
            "CALLHOOK_BODY_LIMIT=\"abc\": invalid digit",
        ),
    ];
    for (args, needle) in cases {
        let (vars, args): (Vec<&str>, Vec<&str>) =
            args.into_iter().partition(|a| a.starts_with("CALLHOOK_"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(&args)
            .envs(vars.iter().filter_map(|v| v.split_once('=')))
            .current_dir(dir.path())
            .env_remove("CALLHOOK_SDKAPPIDS")
            .env_remove("CALLHOOK_CONFIG")
            .env_remove("CALLHOOK_DATABASE_URL")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join("callhook.db").exists(),
        "nothing is created on a configuration error"
    );
}

/// `callhook migrate` prints the URL it migrated, and sqlx logs a connection parameter it
/// does not know with its value: no form of a password shows in either, nor in the error
/// of a URL that cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_shows_no_password() {
    let cluster = crate::pg::shared();
    let base = cluster.create_database().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    // Parameters every server ignores (sqlx has no use for them).
    let mut url = format!("{base}{sep}PassWord=SECRET-a&sslpassword=SECRET-b");
    if cluster.owned() {
        // The throwaway cluster trusts every local connection: any password does.
        url = url.replacen("postgres://postgres@", "postgres://postgres:SECRET-c@", 1);
        url.push_str("&password=SECRET-d");
    }
    let migrate = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["migrate", "--database-url", url])
            .env_remove("CALLHOOK_CONFIG")
            .env_remove("CALLHOOK_DATABASE_URL")
            .env("RUST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = migrate(&url);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("migrations applied to"), "{printed}");
    assert!(printed.contains("sslpassword=REDACTED"), "{printed}");
    assert!(!printed.contains("SECRET"), "{printed}");

    let unreadable = "postgres://app:SECRET-e@db:port/calls?password=SECRET-f";
    let out = migrate(unreadable);
    let printed = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("invalid PostgreSQL URL"), "{printed}");
    assert!(!printed.contains("SECRET"), "{printed}");
}

/// The SQLite events database checkpoints its WAL every 10,000 pages and cuts the WAL file
/// back to 64 MiB afterwards (docs/src/benchmarks/ingest.md, "SQLite: fewer, larger WAL checkpoints"),
/// on every connection of the pool, the writer's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_every_ten_thousand_pages() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect(&DatabaseSettings::new(db.url.clone()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let Store::Sqlite(sqlite) = &store else {
        panic!("a SQLite store");
    };
    // Two connections at once: both come from the pool's options.
    let mut a = sqlite
        .pool()
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    let mut b = sqlite
        .pool()
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    for conn in [&mut a, &mut b] {
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut **conn)
            .await
            .unwrap_or_else(|e| panic!("wal_autocheckpoint: {e}"));
        assert_eq!(pages, 10_000);
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(&mut **conn)
            .await
            .unwrap_or_else(|e| panic!("journal_size_limit: {e}"));
        assert_eq!(limit, 64 * 1024 * 1024);
    }
    drop((a, b));
    store.close().await;
}

/// The value of a sample on `/metrics`: the line starting with `name_and_labels` (0 when
/// there is none yet).
async fn sample(app: &TestApp, name_and_labels: &str) -> f64 {
    let (_, text) = app.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

both_backends! {
    /// The call-quality metrics count each call once, from the caller's status callback or
    /// v4's end record, never a callee's, a retry or a refused delivery; a completed call
    /// without talk time is counted apart; every callback's lag is observed.
    async fn call_quality_metrics_count_each_call_once(backend: Backend) {
        // The recorder is global to the test process: an app of this test's own, per
        // backend, keeps the counts apart from every other test's.
        let app_id: i64 = match backend {
            Backend::Postgres => 1_400_000_771,
            Backend::Sqlite => 1_400_000_772,
        };
        let app = TestApp::spawn_with(backend, |s| {
            s.apps.insert(app_id, callhook::config::AppSettings::new(app_id));
        })
        .await;
        let post = |body: Value| {
            let app = &app;
            async move {
                let (status, answer) = app.post(&status_query(app_id, "call_end"), body.to_string()).await;
                assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
            }
        };
        post(status_body("q-1", "alice", "caller", "normal_end")).await;
        post(status_body("q-1", "alice", "caller", "normal_end")).await; // a retry
        post(status_body("q-1", "bob", "callee", "normal_end")).await;
        post(status_body("q-2", "alice", "caller", "interrupt")).await;
        post(status_body("q-3", "alice", "caller", "not_answer")).await;
        post(status_body("q-3", "bob", "callee", "not_answer")).await;
        let mut zero = status_body("q-4", "alice", "caller", "normal_end");
        zero["AcceptTs"] = json!(1_704_856_885);
        post(zero).await;
        let end = json!({
            "CallbackCommand": "Call.CallbackAfterEndCall",
            "EventTime": 1_704_856_890_000_i64,
            "CallRecord": {
                "CallId": "q-5",
                "Caller_Account": "alice",
                "CalleeList_Account": ["bob"],
                "StartTime": 1_704_856_873,
                "AcceptTime": 0,
                "EndTime": 1_704_856_885,
                "CallResult": "Cancel"
            }
        });
        let (status, answer) = app.post(&v4_query(app_id, "Call.CallbackAfterEndCall"), end.to_string()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
        let stored: i64 = scalar(app.store(), &format!("SELECT count(*) FROM call_events WHERE sdkappid = {app_id}")).await;
        assert_eq!(stored, 7, "the retry merged, everything else stored");

        let ended = |family: &str, result: &str| {
            format!("callhook_calls_ended_total{{sdkappid=\"{app_id}\",family=\"{family}\",result=\"{result}\"}}")
        };
        assert_eq!(sample(&app, &ended("status", "normal_end")).await, 2.0, "q-1 and q-4, once each");
        assert_eq!(sample(&app, &ended("status", "interrupt")).await, 1.0);
        assert_eq!(sample(&app, &ended("status", "not_answer")).await, 1.0, "the callee's callback is not a second call");
        assert_eq!(sample(&app, &ended("v4", "cancel")).await, 1.0);
        let zero_talk = format!("callhook_calls_zero_talk_total{{sdkappid=\"{app_id}\",family=\"status\"}}");
        assert_eq!(sample(&app, &zero_talk).await, 1.0, "q-4");
        assert!(sample(&app, "callhook_callback_lag_seconds_count{family=\"status\"}").await >= 6.0);
    }
}
