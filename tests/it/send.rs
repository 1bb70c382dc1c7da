//! `callhook send`: generated calls end up in a real receiver on both backends, the
//! documented example arrives byte for byte, tokens and signatures work, and delivery
//! follows Tencent's retry schedule against receivers that fail — in process and through
//! the real binary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use callhook::cli::{Cli, Command, SendArgs};
use callhook::send::{Dropped, Summary};
use clap::Parser;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

const DUPLICATE: &str = "Success (duplicate delivery, already stored)";

/// `callhook send` arguments from one command line (split on whitespace).
fn send_args(cmdline: &str) -> SendArgs {
    let argv = ["callhook", "send"]
        .into_iter()
        .chain(cmdline.split_whitespace());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Send(a),
            ..
        }) => a,
        other => panic!("send {cmdline} does not parse: {other:?}"),
    }
}

async fn send(cmdline: &str) -> Summary {
    callhook::send::execute(&send_args(cmdline), std::future::pending())
        .await
        .unwrap_or_else(|e| panic!("send {cmdline}: {e:#}"))
}

// ---------------------------------------------------------------------------------------
// A scriptable receiver: fails the first attempts of every delivery as told, records
// every attempt.

#[derive(Clone, Copy, Debug)]
enum Fail {
    /// HTTP 503 with a non-JSON body, as a proxy would answer.
    Unavailable,
    /// HTTP 200 with a non-zero ErrorCode.
    ErrorCode,
    /// No answer for this long.
    Hang(Duration),
}

#[derive(Clone, Copy, Debug)]
enum Then {
    Ok,
    /// Succeeds after this delay.
    SlowOk(Duration),
    Fail(Fail),
}

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    path: String,
    query: String,
    content_type: Option<String>,
    body: String,
}

struct Script {
    first: Vec<Fail>,
    then: Then,
    hits: Mutex<Vec<Hit>>,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
}

struct Receiver {
    addr: SocketAddr,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(first: Vec<Fail>, then: Then) -> Self {
        let script = Arc::new(Script {
            first,
            then,
            hits: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            max_inflight: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, script, task }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    fn hits(&self) -> Vec<Hit> {
        self.script
            .hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Attempt times per delivery (a delivery is identified by its body).
    fn attempts(&self) -> BTreeMap<String, Vec<Instant>> {
        let mut by: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
        for h in self.hits() {
            by.entry(h.body).or_default().push(h.at);
        }
        by
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let attempt = {
        let mut hits = script
            .hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = hits.iter().filter(|h| h.body == body).count();
        hits.push(Hit {
            at: Instant::now(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        });
        n
    };
    let now = script.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    script.max_inflight.fetch_max(now, Ordering::SeqCst);
    let then = match script.first.get(attempt) {
        Some(f) => Then::Fail(*f),
        None => script.then,
    };
    let json = |status: StatusCode, body: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_owned(),
        )
            .into_response()
    };
    let ok = || {
        json(
            StatusCode::OK,
            r#"{"ErrorCode":0,"ErrorMessage":"Success"}"#,
        )
    };
    let response = match then {
        Then::Ok => ok(),
        Then::SlowOk(d) => {
            tokio::time::sleep(d).await;
            ok()
        }
        Then::Fail(Fail::Unavailable) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        }
        Then::Fail(Fail::ErrorCode) => json(
            StatusCode::OK,
            r#"{"ErrorCode":70005,"ErrorMessage":"slow down"}"#,
        ),
        Then::Fail(Fail::Hang(d)) => {
            tokio::time::sleep(d).await;
            ok()
        }
    };
    script.inflight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// Gaps between consecutive attempts, in seconds.
fn gaps(times: &[Instant]) -> Vec<f64> {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect()
}

/// Each gap lies in its `(min, max)` range, in seconds.
fn assert_gaps(actual: &[f64], expected: &[(f64, f64)]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, (min, max)) in actual.iter().zip(expected) {
        assert!(
            a >= min && a <= max,
            "attempt gaps {actual:?}, expected within {expected:?}"
        );
    }
}

/// Gaps after failures answered at once: the receiver sees them at least the retry delay
/// apart (the sender sleeps that long after the answer), and not much more.
fn after_answers(delays: &[f64], slack: f64) -> Vec<(f64, f64)> {
    delays.iter().map(|d| (d - 0.005, d + slack)).collect()
}

// ---------------------------------------------------------------------------------------
// Generated calls against the real application.

/// `send --calls 50 --family F` leaves 50 calls with several outcomes, every delivery
/// stored once; the same seed and end time again are all duplicates.
async fn fifty_calls(backend: Backend, family: &str) {
    let app = TestApp::spawn(backend).await;
    let url = app.url("/");
    let end_time = (callhook::now_millis() / 1000).to_string();
    let args = format!(
        "--url {url} --sdkappid 1400000001 --calls 50 --family {family} --seed 2024 \
         --end-time {end_time} --concurrency 16"
    );
    let summary = send(&args).await;
    assert_eq!(summary.run.calls, 50);
    assert_eq!(summary.dropped, 0, "{}", summary.to_text());
    assert_eq!(summary.acknowledged, summary.deliveries);
    assert!(summary.deliveries >= 100, "{}", summary.to_text());
    // Every delivery was a new event: no two generated deliveries share a dedupe key.
    let fresh: BTreeMap<String, u64> = [("Success".to_owned(), summary.deliveries)].into();
    assert_eq!(summary.answers, fresh, "{}", summary.to_text());
    assert!(summary.latency_ms.is_some());

    let rows = app.events().await;
    let call_ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.call_id.as_deref()).collect();
    assert_eq!(call_ids.len(), 50);
    let results: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.call_result.as_deref())
        .collect();
    assert!(results.len() >= 4, "several outcomes: {results:?}");
    assert!(results.contains("normal_end"), "{results:?}");
    let families: BTreeSet<&str> = rows.iter().map(|r| r.family.as_str()).collect();
    let want: BTreeSet<&str> = match family {
        "all" => ["event", "status", "v4"].into(),
        f => [f].into(),
    };
    assert_eq!(families, want);
    let callers: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.role.as_deref() == Some("caller"))
        .filter_map(|r| r.user_id.as_deref())
        .collect();
    assert!(!callers.is_empty());
    let others = rows
        .iter()
        .filter_map(|r| r.user_id.as_deref())
        .filter(|u| !callers.contains(u))
        .count();
    assert!(others > 0, "callee rows are stored too");
    if family != "v4" {
        assert!(rows.iter().any(|r| r.role.as_deref() == Some("callee")));
    }
    assert!(
        rows.iter()
            .all(|r| r.sdkappid == APP && r.client_ip.is_some() && r.opt_platform.is_some())
    );
    let single: BTreeSet<&str> = rows.iter().filter_map(|r| r.call_type.as_deref()).collect();
    assert!(single.contains("single"), "{single:?}");

    // The same seed and end time send the same bytes: all duplicates, nothing new.
    let again = send(&args).await;
    let dup: BTreeMap<String, u64> = [(DUPLICATE.to_owned(), summary.deliveries)].into();
    assert_eq!(again.answers, dup, "{}", again.to_text());
    assert_eq!(app.events().await.len(), rows.len());
}

both_backends! {
    async fn fifty_status_calls_are_stored(backend: Backend) {
        fifty_calls(backend, "status").await;
    }
}

both_backends! {
    async fn fifty_event_calls_are_stored(backend: Backend) {
        fifty_calls(backend, "event").await;
    }
}

both_backends! {
    async fn fifty_v4_calls_are_stored(backend: Backend) {
        fifty_calls(backend, "v4").await;
    }
}

both_backends! {
    async fn fifty_calls_in_all_families_are_stored(backend: Backend) {
        fifty_calls(backend, "all").await;
    }
}

both_backends! {
    /// `--example` stores the documented example field by field (the expectations of
    /// `documented_example_is_stored_field_by_field`); a second run is a duplicate.
    async fn example_is_stored_field_by_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let url = app.url("/");
        let args = format!("--url {url} --sdkappid 1400000001 --example");
        let summary = send(&args).await;
        assert_eq!((summary.deliveries, summary.acknowledged, summary.dropped), (1, 1, 0));
        assert_eq!(summary.run.family, "example");

        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_documented_example(r);
        assert_eq!(r.deliveries, 1);

        let again = send(&args).await;
        assert_eq!(again.answers.get(DUPLICATE), Some(&1));
        assert_eq!(app.events().await[0].deliveries, 2);
    }
}

both_backends! {
    /// An app with a token: the token and the signature each get in, alone or together;
    /// a wrong token is refused, retried and dropped.
    async fn token_and_signature(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let url = app.url("/");
        let mut stored = 0;
        for (seed, auth) in [("1", "both"), ("2", "token"), ("3", "sign")] {
            let summary = send(&format!(
                "--url {url} --sdkappid 1400000002 --token {TOKEN} --auth {auth} --calls 3 \
                 --seed {seed}"
            ))
            .await;
            assert_eq!(summary.dropped, 0, "--auth {auth}: {}", summary.to_text());
            stored += summary.deliveries as usize;
            assert_eq!(app.events().await.len(), stored);
        }
        // The token in the registered URL, as Tencent would be told to use it.
        let with_token = app.url(&format!("/?token={TOKEN}"));
        let summary = send(&format!("--url {with_token} --sdkappid 1400000002 --calls 2")).await;
        assert_eq!(summary.dropped, 0, "{}", summary.to_text());

        let args = send_args(&format!(
            "--url {url} --sdkappid 1400000002 --token wrong --calls 1 \
             --retry-schedule 0.05,0.05 --quiet"
        ));
        let before = app.events().await.len();
        let err = callhook::send::run_until(args, std::future::pending())
            .await
            .err()
            .unwrap_or_else(|| panic!("a wrong token must fail"));
        // One call: two deliveries for a 1-to-1 call, more for a group call.
        let dropped = err.downcast_ref::<Dropped>().map_or(0, |d| d.0);
        assert!(dropped >= 2, "{err:#}");
        assert_eq!(app.events().await.len(), before);
    }
}

// ---------------------------------------------------------------------------------------
// The wire, against the scriptable receiver.

/// The example request exactly as documented: query, body, and no Content-Type.
#[tokio::test]
async fn example_request_is_byte_for_byte() {
    let rx = Receiver::start(vec![], Then::Ok).await;
    let summary = send(&format!(
        "--url {} --sdkappid 1400000001 --example",
        rx.url("/")
    ))
    .await;
    assert_eq!(summary.acknowledged, 1);
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].query,
        "sdkappid=1400000001&command=call_end&contenttype=json&clientip=127.0.0.1&optplatform=iOS"
    );
    assert_eq!(hits[0].body, DOC_BODY);
    assert_eq!(hits[0].content_type, None);
}

/// Tencent's parameters, in Tencent's order and spelling per family, appended to the
/// registered URL's own query; the token is not added twice; each attempt is signed.
#[tokio::test]
async fn query_strings_are_tencents() {
    let rx = Receiver::start(vec![], Then::Ok).await;
    let summary = send(&format!(
        "--url {} --sdkappid 1400000001 --token s3cret --family all --calls 20 --seed 5",
        rx.url("/hook/trtc?token=s3cret")
    ))
    .await;
    assert_eq!(summary.dropped, 0);
    let hits = rx.hits();
    assert_eq!(hits.len() as u64, summary.deliveries);
    let mut commands = BTreeSet::new();
    for h in &hits {
        assert_eq!(h.path, "/hook/trtc");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(h.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        let value = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let v4 = names.get(1) == Some(&"SdkAppid");
        let want: &[&str] = if v4 {
            &[
                "token",
                "SdkAppid",
                "CallbackCommand",
                "contenttype",
                "ClientIP",
                "OptPlatform",
                "RequestTime",
                "Sign",
            ]
        } else {
            &[
                "token",
                "sdkappid",
                "command",
                "contenttype",
                "clientip",
                "optplatform",
                "RequestTime",
                "Sign",
            ]
        };
        assert_eq!(names, want, "{}", h.query);
        assert_eq!(value("token"), Some("s3cret"));
        assert_eq!(value("contenttype"), Some("json"));
        assert_eq!(
            value(if v4 { "SdkAppid" } else { "sdkappid" }),
            Some("1400000001")
        );
        let rt = value("RequestTime").unwrap_or_default();
        assert_eq!(
            value("Sign"),
            Some(callhook::auth::sign("s3cret", rt).as_str())
        );
        let now = callhook::now_millis() / 1000;
        assert!(rt.parse::<i64>().is_ok_and(|t| (now - t).abs() < 60));
        assert_eq!(
            h.content_type.as_deref(),
            if v4 { Some("application/json") } else { None }
        );
        commands.insert(
            value(if v4 { "CallbackCommand" } else { "command" })
                .unwrap_or_default()
                .to_owned(),
        );
        let body: Value = serde_json::from_str(&h.body).unwrap_or_default();
        if v4 {
            assert_eq!(body["CallbackCommand"].as_str(), value("CallbackCommand"));
            assert!(
                body["EventTime"].as_i64().unwrap_or(0) > 1_000_000_000_000,
                "v4 EventTime is in ms"
            );
        } else {
            assert!(
                body["EventTime"].as_i64().unwrap_or(i64::MAX) < 10_000_000_000,
                "seconds"
            );
        }
    }
    for c in [
        "call_end",
        "caller_start_call",
        "callee_receive_call",
        "Call.CallbackAfterStartCall",
        "Call.CallbackAfterMemberChanged",
        "Call.CallbackAfterEndCall",
    ] {
        assert!(commands.contains(c), "{c} missing from {commands:?}");
    }
}

/// Failures of every kind — 503 from a proxy, a non-zero ErrorCode, no answer before the
/// timeout — are retried after the schedule's delays, and then acknowledged.
#[tokio::test]
async fn failed_attempts_are_retried_on_the_schedule() {
    let rx = Receiver::start(
        vec![
            Fail::Unavailable,
            Fail::ErrorCode,
            Fail::Hang(Duration::from_secs(2)),
        ],
        Then::Ok,
    )
    .await;
    let url = rx.url("/");
    let summary = send(&format!(
        "--url {url} --sdkappid 1400000001 --calls 2 --seed 1 \
         --retry-schedule 0.2,0.4,0.6,5 --timeout-ms 300"
    ))
    .await;
    let n = summary.deliveries;
    assert!(n >= 4);
    assert_eq!(
        (summary.acknowledged, summary.dropped),
        (n, 0),
        "{}",
        summary.to_text()
    );
    assert_eq!(
        (summary.retried, summary.retry_attempts, summary.attempts),
        (n, 3 * n, 4 * n)
    );
    let failures: BTreeMap<String, u64> = [
        ("HTTP 200, ErrorCode 70005 \"slow down\"".to_owned(), n),
        ("HTTP 503, no numeric ErrorCode in the answer".to_owned(), n),
        ("timeout (no answer within 300 ms)".to_owned(), n),
    ]
    .into();
    assert_eq!(summary.failures, failures);
    let attempts = rx.attempts();
    assert_eq!(attempts.len() as u64, n);
    for times in attempts.values() {
        // The third attempt fails by timing out 0.3 s after the sender started it (a bit
        // before the receiver saw it), then waits 0.6 s.
        let mut want = after_answers(&[0.2, 0.4], 0.4);
        want.push((0.8, 1.3));
        assert_gaps(&gaps(times), &want);
    }
}

/// An always-failing receiver, the real binary and Tencent's own schedule: seven
/// attempts 0, 1, 1, 2, 3, 5 s apart, dropped after about 12 s, exit code 1, and the
/// summary says so.
#[tokio::test]
async fn gives_up_after_the_default_schedule() {
    let rx = Receiver::start(vec![], Then::Fail(Fail::ErrorCode)).await;
    let started = Instant::now();
    let url = rx.url("/");
    let out = binary(&format!(
        "send --url {url} --sdkappid 1400000001 --calls 1 --seed 3"
    ))
    .output()
    .await
    .unwrap_or_else(|e| panic!("running callhook send: {e}"));
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!((12.0..16.0).contains(&elapsed), "took {elapsed} s");
    assert!(
        stderr.contains("2 deliveries were dropped after the retry schedule"),
        "{stderr}"
    );
    assert_eq!(field(&stdout, "deliveries"), Some(2), "{stdout}");
    assert_eq!(field(&stdout, "acknowledged"), Some(0), "{stdout}");
    assert_eq!(field(&stdout, "dropped"), Some(2), "{stdout}");
    assert_eq!(field(&stdout, "attempts"), Some(14), "{stdout}");
    assert!(
        stdout.contains("retried       2 (12 extra attempts)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failure       14 HTTP 200, ErrorCode 70005 \"slow down\""),
        "{stdout}"
    );
    let attempts = rx.attempts();
    assert_eq!(attempts.len(), 2);
    for times in attempts.values() {
        assert_gaps(
            &gaps(times),
            &after_answers(&[0.0, 1.0, 1.0, 2.0, 3.0, 5.0], 0.5),
        );
    }
}

/// `--concurrency` bounds the requests in flight; `--rate` the deliveries started per
/// second.
#[tokio::test]
async fn concurrency_and_rate_limits() {
    let rx = Receiver::start(vec![], Then::SlowOk(Duration::from_millis(100))).await;
    let summary = send(&format!(
        "--url {} --sdkappid 1400000001 --calls 10 --concurrency 3",
        rx.url("/")
    ))
    .await;
    assert_eq!(summary.dropped, 0);
    let max = rx.script.max_inflight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "max in flight {max}");

    let rx = Receiver::start(vec![], Then::Ok).await;
    let started = Instant::now();
    let summary = send(&format!(
        "--url {} --sdkappid 1400000001 --calls 10 --rate 40 --seed 8",
        rx.url("/")
    ))
    .await;
    let n = summary.deliveries as f64;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        elapsed >= (n - 1.0) / 40.0 - 0.01,
        "{n} deliveries in {elapsed} s"
    );
    let times: Vec<Instant> = rx.hits().iter().map(|h| h.at).collect();
    let span = times
        .last()
        .map_or(0.0, |l| l.duration_since(times[0]).as_secs_f64());
    // Arrivals, unlike starts, carry the scheduler's jitter (the first request also opens
    // the connection): a loaded machine compresses the span by tens of milliseconds, a
    // broken rate limit by nearly all of it.
    assert!(
        span >= (n - 1.0) / 40.0 - 0.05,
        "{n} deliveries arrived within {span} s"
    );
}

/// Stopping a run (Ctrl-C in the command) abandons what is in flight and still
/// summarises.
#[tokio::test]
async fn a_stopped_run_still_summarises() {
    let rx = Receiver::start(vec![], Then::Fail(Fail::Hang(Duration::from_secs(30)))).await;
    let args = send_args(&format!(
        "--url {} --sdkappid 1400000001 --calls 5",
        rx.url("/")
    ));
    let started = Instant::now();
    let summary = callhook::send::execute(&args, tokio::time::sleep(Duration::from_millis(300)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(summary.run.interrupted);
    assert_eq!(summary.unfinished, summary.deliveries);
    assert!(summary.to_text().contains("unfinished"));
}

// ---------------------------------------------------------------------------------------
// The real binaries: `callhook serve` and `callhook send`.

/// The real `callhook` binary with the arguments of one command line (split on
/// whitespace), isolated from the caller's CALLHOOK_* environment.
fn binary(cmdline: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_callhook"));
    c.args(cmdline.split_whitespace());
    for var in [
        "CALLHOOK_CONFIG",
        "CALLHOOK_DATABASE_URL",
        "CALLHOOK_SDKAPPIDS",
        "CALLHOOK_SEND_URL",
        "CALLHOOK_SEND_TOKEN",
        "CALLHOOK_LISTEN",
    ] {
        c.env_remove(var);
    }
    c.env("RUST_LOG", "warn").kill_on_drop(true);
    c
}

/// The first number after `name` in the text summary.
fn field(summary: &str, name: &str) -> Option<u64> {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_send_against_a_real_serve() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db_url = format!("sqlite://{}", dir.path().join("callhook.db").display());
    let serve = crate::process::Server::start(
        &["--sdkappid", "1400000001", "--database-url", &db_url],
        &[],
    )
    .await;
    let listen = serve.addr;

    let summary_path = dir.path().join("summary.json");
    let out = binary(&format!(
        "send --url http://{listen}/ --sdkappid 1400000001 --calls 50 --family all --seed 9 \
         --concurrency 16 --summary-json {}",
        summary_path.display()
    ))
    .output()
    .await
    .unwrap_or_else(|e| panic!("running callhook send: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&stdout, "calls"), Some(50));
    assert_eq!(field(&stdout, "dropped"), Some(0));
    let deliveries = field(&stdout, "deliveries").unwrap_or(0);
    assert!(deliveries > 150, "{stdout}");
    assert_eq!(field(&stdout, "acknowledged"), Some(deliveries));
    let json: Value = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    assert_eq!(json["acknowledged"].as_u64(), Some(deliveries));
    assert_eq!(json["seed"].as_u64(), Some(9));
    assert!(json["latency_ms"]["p99"].as_f64().is_some(), "{json}");

    let mut serve = serve;
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(Duration::from_secs(30)).await, Some(0));
    let store = callhook::store::Store::connect(&callhook::config::DatabaseSettings::new(db_url))
        .await
        .unwrap_or_else(|e| panic!("opening the database: {e:#}"));
    let rows = read_events(&store).await;
    let calls: BTreeSet<&str> = rows.iter().filter_map(|r| r.call_id.as_deref()).collect();
    assert_eq!(calls.len(), 50);
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for r in rows.iter().filter(|r| r.family == "status") {
        *outcomes
            .entry(r.call_result.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    assert!(outcomes.len() >= 4, "{outcomes:?}");
    store.close().await;
}

/// Ctrl-C (SIGINT) stops the binary early: the summary is still printed, with what was
/// left unfinished, and the exit code is 1.
#[tokio::test]
async fn binary_interrupted_by_ctrl_c_still_summarises() {
    let rx = Receiver::start(vec![], Then::Fail(Fail::Hang(Duration::from_secs(30)))).await;
    let url = rx.url("/");
    let child = binary(&format!("send --url {url} --sdkappid 1400000001 --calls 3"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running callhook send: {e}"));
    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    // Wait until the requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.hits().is_empty() {
        assert!(Instant::now() < deadline, "nothing arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("callhook send did not stop on SIGINT"))
        .unwrap_or_else(|e| panic!("waiting for callhook send: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "acknowledged"), Some(0), "{stdout}");
    assert!(
        field(&stdout, "unfinished").is_some_and(|n| n > 0),
        "{stdout}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
}
