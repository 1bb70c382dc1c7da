//! The commands around forwarding, as a user runs them: `callhook forward status` and
//! `callhook forward retry` over a real outbox, `callhook listen` checked against
//! messages signed by the `standardwebhooks` package and by `callhook serve` itself, and
//! `serve` refusing a bad `[[forward]]` at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhook::config::DatabaseSettings;
use callhook::store::Store;
use serde_json::Value;

use super::*;
use crate::both_backends;
use crate::process::{Server, free_port};

/// Runs `callhook ARGS…`; returns its exit code, stdout and stderr.
fn callhook(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(args)
        .env_remove("CALLHOOK_CONFIG")
        .env_remove("CALLHOOK_DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("callhook {args:?}: {e}"));
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = callhook(args);
    assert_eq!(code, Some(0), "callhook {args:?}: {err}");
    out
}

fn state_of(entries: &[Entry], call: &str) -> String {
    entries
        .iter()
        .find(|e| e.call_id == call)
        .map(|e| e.state.clone())
        .unwrap_or_default()
}

both_backends! {
    async fn forward_status_and_retry(backend: Backend) {
        // The first attempt of each message is answered 500, and there is no other: dead.
        let receiver = Receiver::start("500", 0.0, 0);
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let forward = forward_table("push", &receiver.url("/push"), "retry_schedule = [\"0s\"]")
            + &forward_table("quiet", &receiver.url("/quiet"), "sdkappids = [1]");
        let config = config_file(dir.path(), &forward);
        let spool = dir.path().join("spool").display().to_string();
        let config = config.display().to_string();
        let server = Server::start(&["--config", &config, "--database-url", &db.url, "--spool-dir", &spool], &[]).await;
        let client = reqwest::Client::new();
        for call in ["s1", "s2", "s3"] {
            post_status(&client, &server.url(""), call, "reject").await;
        }
        let store = Store::connect(&DatabaseSettings::new(&db.url)).await.unwrap_or_else(|e| panic!("{e:#}"));
        let all_dead = |e: &[Entry]| e.len() == 3 && e.iter().all(|e| e.state == "dead");
        wait_entries(&store, Duration::from_secs(20), all_dead).await;

        let status = ok(&["forward", "status", "--config", &config, "--database-url", &db.url, "--format", "json"]);
        let status: Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
        let push = &status[0];
        assert_eq!(
            (push["destination"].as_str(), push["pending"].as_i64(), push["delivered"].as_i64(), push["dead"].as_i64()),
            (Some("push"), Some(0), Some(0), Some(3)),
            "{status}"
        );
        assert!(push["last_error"].as_str().is_some_and(|e| e.starts_with("HTTP 500")), "{status}");
        assert_eq!(status[1]["destination"], "quiet", "a configured destination without entries is listed");
        assert_eq!(status[1]["dead"], 0);
        let table = ok(&["forward", "status", "--config", &config, "--database-url", &db.url]);
        assert!(table.starts_with("destination  pending  due  delivered  dead"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("push ") && l.contains(" 3  ")), "{table}");

        // One call's dead entry, then the rest.
        let out = ok(&["forward", "retry", "push", "--dead", "--call-id", "s1", "--database-url", &db.url]);
        assert!(out.starts_with("1 dead entry of push is due again"), "{out}");
        let s1_delivered = |e: &[Entry]| state_of(e, "s1") == "delivered";
        wait_entries(&store, Duration::from_secs(20), s1_delivered).await;
        assert_eq!(state_of(&entries(&store).await, "s2"), "dead", "only s1 was retried");
        let out = ok(&["forward", "retry", "push", "--since", "2999-01-01T00:00:00Z", "--database-url", &db.url]);
        assert!(out.starts_with("0 delivered or dead entries"), "{out}");
        let out = ok(&["forward", "retry", "push", "--since", "1h", "--database-url", &db.url]);
        assert!(out.starts_with("3 delivered or dead entries of push are due again"), "{out}");
        let delivered = |e: &[Entry]| e.len() == 3 && e.iter().all(|e| e.state == "delivered");
        wait_entries(&store, Duration::from_secs(20), delivered).await;
        store.close().await;

        // Each message kept its webhook-id through the replays: s1 was sent three times.
        let requests = receiver.requests();
        assert!(requests.iter().all(|r| r.verified && r.path == "/push"), "{requests:#?}");
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &requests {
            ids.entry(r.call_id.clone().unwrap_or_default())
                .or_default()
                .push(r.id.clone().unwrap_or_default());
        }
        for (call, id_list) in &ids {
            assert!(id_list.iter().all(|id| id == &id_list[0]), "{call}: {id_list:?}");
        }
        let attempts: Vec<usize> = ["s1", "s2", "s3"].iter().map(|c| ids[*c].len()).collect();
        assert_eq!(attempts, [3, 2, 2]);
        let bad = callhook(&["forward", "retry", "push", "--since", "yesterday", "--database-url", &db.url]);
        assert!(bad.0 != Some(0) && bad.2.contains("--since"), "{bad:?}");
    }
}

use std::collections::BTreeMap;

/// `callhook listen` as a child process, its stdout lines collected.
struct Listen {
    child: std::process::Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    async fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args([
                "listen",
                &format!("127.0.0.1:{port}"),
                "--secret",
                SECRET,
                "--format",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("callhook listen: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "callhook listen did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port, lines }
    }

    fn printed(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    async fn wait_printed(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let printed = self.printed();
            if printed.len() >= n {
                return printed;
            }
            assert!(Instant::now() < deadline, "listen printed {printed:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headers for `body` signed by the `standardwebhooks` package, `age` seconds ago.
fn signed_by_reference(id: &str, body: &str, age: i64) -> (String, String) {
    let script = "import sys, json, datetime\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, id, body, age = sys.argv[1:5]\n\
        ts = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=int(age))\n\
        print(json.dumps({'sig': Webhook(secret).sign(id, ts, body), 'ts': int(ts.timestamp())}))";
    let out = Command::new("python3")
        .envs(super::python_path())
        .args(["-c", script, SECRET, id, body, &age.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} (python3 -m pip install standardwebhooks)",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        v["sig"].as_str().unwrap_or_default().to_owned(),
        v["ts"].to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_checks_signatures_as_the_reference_makes_them() {
    let listen = Listen::start().await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/hooks", listen.port);
    let body = r#"{"type":"call.status.call_end","timestamp":"2024-01-10T03:01:13.000Z","version":1,"data":{"id":1}}"#;
    let send = |body: &'static str, sig: String, ts: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .header("webhook-id", "msg_ref")
                .header("webhook-timestamp", ts)
                .header("webhook-signature", sig)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let (sig, ts) = signed_by_reference("msg_ref", body, 0);
    assert_eq!(send(body, sig.clone(), ts.clone()).await, 204);
    let tampered = r#"{"type":"call.status.call_end","timestamp":"2024-01-10T03:01:13.000Z","version":1,"data":{"id":2}}"#;
    assert_eq!(send(tampered, sig, ts).await, 401);
    let (old_sig, old_ts) = signed_by_reference("msg_ref", body, 600);
    assert_eq!(send(body, old_sig, old_ts).await, 401);
    let printed = listen.wait_printed(3).await;
    assert_eq!(printed[0]["verified"], true, "{printed:?}");
    assert_eq!(printed[0]["webhook_id"], "msg_ref");
    assert_eq!(printed[0]["body"]["data"]["id"], 1);
    assert_eq!(printed[1]["verified"], false);
    assert!(
        printed[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no signature")),
        "{printed:?}"
    );
    assert!(
        printed[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("from now")),
        "{printed:?}"
    );

    // And what `callhook serve` forwards to it, as the book shows (docs/src/forwarding.md).
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = config_file(dir.path(), &forward_table("local", &url, ""));
    let config = config.display().to_string();
    let server = Server::start(&["--config", &config, "--database-url", &db.url], &[]).await;
    post_status(&client, &server.url(""), "l1", "not_answer").await;
    let printed = listen.wait_printed(4).await;
    let forwarded = &printed[3];
    assert_eq!(forwarded["verified"], true, "{forwarded}");
    assert_eq!(forwarded["body"]["type"], "call.status.call_end");
    assert_eq!(forwarded["body"]["data"]["call_id"], "l1");
    assert_eq!(
        forwarded["body"]["data"]["payload"]["CallResult"],
        "not_answer"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_destination_at_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (table, words) in [
        (
            "[[forward]]\nname = \"push\"\nurl = \"https://h/\"\nsecret = \"whsec_c2hvcnQ=\"\n",
            "line 7: forward[0].secret: the secret holds",
        ),
        (
            "[[forward]]\nname = \"push\"\nurl = \"ftp://h/\"\nsecret_env = \"X\"\n",
            "line 6: forward[0].url: ftp://h/ must be http",
        ),
        (
            "[[forward]]\nname = \"push\"\nurl = \"https://h/\"\nsecret_env = \"CALLHOOK_TEST_UNSET_VAR\"\n",
            "secret_env CALLHOOK_TEST_UNSET_VAR is not set",
        ),
    ] {
        let config = config_file(dir.path(), table);
        let (code, _, err) = callhook(&["serve", "--config", &config.display().to_string()]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(words), "{words:?} in {err}");
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }
}
