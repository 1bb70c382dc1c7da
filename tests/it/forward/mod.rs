//! Forwarding (issue 26): the outbox written with the events on both backends and in the
//! journal's replay (`outbox.rs`); delivery by real `callhook` processes to a real
//! receiver that fails, hangs and resets, across kill -9 and two replicas
//! (`delivery.rs`); `callhook forward status`/`retry` and `callhook listen`
//! (`commands.rs`). Every signature is checked by `tests/forward/receiver.py` with the
//! `standardwebhooks` package (the Standard Webhooks reference implementation), not by
//! callhook's own code.

mod commands;
mod delivery;
mod messages;
mod outbox;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callhook::config::Destination;
use callhook::store::{Route, Store};
use callhook::webhook::SigningKey;
use serde::Deserialize;

use crate::helpers::*;

/// The destinations' secret in these tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A real webhook receiver: `tests/forward/receiver.py`, a Python process that checks
/// every message with the `standardwebhooks` package and answers by a plan (see there).
pub struct Receiver {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The environment that lets `python3` import `standardwebhooks`: none when it is
/// installed; otherwise the package is installed once (per build directory, under a lock,
/// as several test processes may ask at once) into `CARGO_TARGET_TMPDIR/python`, and that
/// directory is put on `PYTHONPATH`. So `cargo test` needs nothing installed by hand.
pub fn python_path() -> Vec<(&'static str, String)> {
    static PATH: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let imports = |env: &[(&str, String)]| {
            Command::new("python3")
                .envs(env.iter().cloned())
                .args(["-c", "import standardwebhooks"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if imports(&[]) {
            return Vec::new();
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python");
        let env = vec![("PYTHONPATH", dir.display().to_string())];
        let lock =
            std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("python.lock"))
                .unwrap_or_else(|e| panic!("the lock of {}: {e}", dir.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", dir.display()));
        if !imports(&env) {
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                ])
                .arg(&dir)
                .arg("standardwebhooks")
                .status()
                .unwrap_or_else(|e| panic!("python3 -m pip: {e}"));
            assert!(
                status.success() && imports(&env),
                "could not install the standardwebhooks package into {}: install it with \
                 python3 -m pip install standardwebhooks",
                dir.display()
            );
        }
        env
    })
    .clone()
}

/// One request the receiver got, as it logged it on arrival.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub path: String,
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub content_type: Option<String>,
    pub verified: bool,
    pub error: Option<String>,
    pub attempt: u32,
    pub answer: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub call_id: Option<String>,
    pub family: Option<String>,
    pub event_id: Option<i64>,
    pub version: Option<u32>,
}

impl Receiver {
    /// Starts it with `plan` (`500,hang,reset`: the answers to each message's first
    /// attempts; 200 after), hanging `hang_secs` on `hang`, and answering after
    /// `delay_ms`. Fails the test, saying what to install, when the package is missing.
    pub fn start(plan: &str, hang_secs: f64, delay_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forward/receiver.py");
        let mut child = Command::new("python3")
            .envs(python_path())
            .arg(&script)
            .args(["--secret", SECRET, "--plan", plan])
            .args(["--hang-secs", &hang_secs.to_string()])
            .args(["--delay-ms", &delay_ms.to_string()])
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
        let mut first = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut first);
        }
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(e) = child.stderr.take() {
                    let _ = BufReader::new(e).read_line(&mut err);
                }
                panic!(
                    "the test receiver did not start ({first:?}; {err}): it needs the \
                     standardwebhooks package, which the tests install when it is missing \
                     (python3 -m pip install standardwebhooks)"
                )
            });
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits (at most `within`) until `done` holds for the requests so far.
    pub async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Request]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the receiver got:\n{requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests answered 2xx, by path and call id.
pub fn delivered(requests: &[Request]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = requests
        .iter()
        .filter(|r| r.answer == "200" || r.answer == "204")
        .map(|r| (r.path.clone(), r.call_id.clone().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// A destination for in-process tests (`Settings::forward`).
pub fn destination(name: &str, url: &str, configure: impl FnOnce(&mut Route)) -> Destination {
    let mut route = Route {
        destination: name.to_owned(),
        sdkappids: None,
        families: None,
        commands: None,
        results: None,
    };
    configure(&mut route);
    Destination {
        route,
        url: url.to_owned(),
        key: SigningKey::parse(SECRET).unwrap_or_else(|e| panic!("{e}")),
        timeout: Duration::from_secs(2),
        retry_schedule: vec![Duration::ZERO, Duration::from_millis(200)],
        max_in_flight: 4,
    }
}

/// A configuration file for `callhook serve`: the test app and `forward`, the
/// `[[forward]]` tables' text.
pub fn config_file(dir: &Path, forward: &str) -> PathBuf {
    let path = dir.join("callhook.toml");
    let text = format!("[[apps]]\nsdkappid = {APP}\n\n{forward}");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// One `[[forward]]` table.
pub fn forward_table(name: &str, url: &str, extra: &str) -> String {
    format!("[[forward]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n\n")
}

/// A row of `forward_outbox` with its event's call id, read the same on both backends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub destination: String,
    pub call_id: String,
    pub user_id: String,
    pub message_id: String,
    pub state: String,
    pub attempts: i64,
}

pub async fn entries(store: &Store) -> Vec<Entry> {
    let rows = text_rows(
        store,
        "SELECT o.destination, e.call_id, e.user_id, o.message_id, o.state, \
         CAST(o.attempts AS TEXT) FROM forward_outbox o JOIN call_events e ON e.id = o.event_id \
         ORDER BY 1, 2, 3",
    )
    .await;
    rows.into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            Entry {
                destination: s(0),
                call_id: s(1),
                user_id: s(2),
                message_id: s(3),
                state: s(4),
                attempts: s(5).parse().unwrap_or(-1),
            }
        })
        .collect()
}

/// The entries' (destination, call id) pairs.
pub fn pairs(entries: &[Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e.destination.clone(), e.call_id.clone()))
        .collect()
}

/// Posts a status callback for [`APP`] to a process or app at `base`.
pub async fn post_status(client: &reqwest::Client, base: &str, call: &str, result: &str) {
    let body = status_body(call, "u", "callee", result).to_string();
    let url = format!("{base}/?{}", status_query(APP, "call_end"));
    let resp = client
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200, "{call}");
}

/// Waits (at most `within`) until `done` holds for the outbox.
pub async fn wait_entries(store: &Store, within: Duration, done: impl Fn(&[Entry]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let now = entries(store).await;
        if done(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; the outbox holds {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
