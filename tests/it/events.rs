//! `callhook events`: the real binary prints the latest stored events from a real
//! database (an SQLite file, a PostgreSQL database) while callhook serves it, and never
//! writes to it.

use serde_json::Value;

use callhook::store::Store;

use crate::both_backends;
use crate::helpers::*;

fn run_callhook(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(args)
        .env_remove("CALLHOOK_DATABASE_URL")
        .env_remove("CALLHOOK_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running callhook: {e}"))
}

/// Runs `callhook events --database-url URL ARGS…`; returns stdout, after checking that
/// it succeeded with nothing on stderr.
async fn events(url: &str, args: &[&str]) -> String {
    let mut all = vec![
        "events".to_owned(),
        "--database-url".to_owned(),
        url.to_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        run_callhook(&all.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "callhook events {args:?}: {stderr}");
    assert!(stderr.is_empty(), "callhook events {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn events_json(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let text = events(url, &all).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn call_ids(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["call_id"].as_str().unwrap_or_default())
        .collect()
}

/// Milliseconds as `callhook events` prints times.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

both_backends! {
    /// The latest events, oldest first, every column but the payload; --last, --sdkappid,
    /// the table; read while callhook serves the same database.
    async fn events_command_prints_the_latest_events(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let url = app.db.url.clone();
        assert_eq!(events_json(&url, &[]).await, Vec::<Value>::new(), "no events yet");
        assert_eq!(events(&url, &[]).await, "no events stored\n");

        // The documented example (twice: a retry), then twelve more calls, one of them for
        // the app with a token.
        let example = "sdkappid=1400000001&command=call_end&contenttype=json&clientip=127.0.0.1&optplatform=iOS";
        for _ in 0..2 {
            let (status, answer) = app.post(example, DOC_BODY).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)));
        }
        for n in 1..=11 {
            let (status, _) = app.post_status("call_end", &status_body(&format!("c{n:02}"), "bob", "callee", "reject")).await;
            assert_eq!(status, 200);
        }
        let query = format!("{}&token={TOKEN}", status_query(TOKEN_APP, "call_end"));
        let (status, _) = app.post(&query, status_body("t01", "carol", "caller", "not_answer").to_string()).await;
        assert_eq!(status, 200);
        let stored = app.events().await;
        assert_eq!(stored.len(), 13);

        // Default: the last 10, oldest first.
        let rows = events_json(&url, &[]).await;
        assert_eq!(call_ids(&rows), ["c03", "c04", "c05", "c06", "c07", "c08", "c09", "c10", "c11", "t01"]);
        let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap_or_default()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids: {ids:?}");

        // Every column of the example, as stored.
        let rows = events_json(&url, &["--last", "13"]).await;
        assert_eq!(rows.len(), 13);
        let e = &rows[0];
        let s = &stored[0];
        let expected = serde_json::json!({
            "id": e["id"],
            "received_at": iso(s.received_at),
            "sdkappid": APP,
            "family": "status",
            "command": "call_end",
            "call_id": "aheahfo-eqwnknoihfsd-qweqf",
            "user_id": "Alice",
            "role": "caller",
            "event": null,
            "call_result": "normal_end",
            "media_type": "audio",
            "call_type": "single",
            "client_ip": "127.0.0.1",
            "opt_platform": "iOS",
            "remote_addr": "127.0.0.1",
            "deliveries": 2,
            "last_delivery_at": iso(s.last_delivery_at),
        });
        assert_eq!(e, &expected);

        // One app only.
        let rows = events_json(&url, &["--sdkappid", &TOKEN_APP.to_string(), "--last", "5"]).await;
        assert_eq!(call_ids(&rows), ["t01"]);
        assert_eq!(rows[0]["user_id"], "carol");

        // The table: a header and one aligned line per event.
        let table = events(&url, &["--last", "2"]).await;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["received_at", "sdkappid", "family", "command", "call_id", "user_id", "role", "result", "deliveries", "remote_addr"]
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [iso(stored[12].received_at).as_str(), "1400000002", "status", "call_end", "t01", "carol", "caller", "not_answer", "1", "127.0.0.1"]
        );
        let column = lines[0].find("call_id");
        assert!(column.is_some());
        assert_eq!(lines[1].find("c11"), column, "aligned:\n{table}");
        assert_eq!(lines[2].find("t01"), column, "aligned:\n{table}");
        app.stop().await;
    }
}

both_backends! {
    /// The connection `events` (and `report`) reads through cannot write.
    async fn reading_connections_cannot_write(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, _) = app.post_status("call_end", &status_body("c1", "u", "caller", "normal_end")).await;
        assert_eq!(status, 200);
        let reader = Store::connect_for_reading(&app.db.url)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let delete = "DELETE FROM call_events";
        let result = match &reader {
            Store::Postgres(s) => sqlx::query(delete).execute(s.pool()).await.map(|_| ()),
            Store::Sqlite(s) => sqlx::query(delete).execute(s.pool()).await.map(|_| ()),
        };
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("read-only") || message.contains("readonly"), "{message:?}");
        reader.close().await;
        assert_eq!(app.events().await.len(), 1);
    }
}

/// `events` on an SQLite file that does not exist says so in one line, and creates nothing.
#[test]
fn events_on_a_missing_sqlite_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nothing.db");
    let url = format!("sqlite://{}", path.display());
    let out = run_callhook(&["events", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!path.exists());
    assert!(out.stdout.is_empty());
}
