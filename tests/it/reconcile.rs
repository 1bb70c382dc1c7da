//! `callhook reconcile` against the fake of Tencent's REST API (tests/it/tencent_fake.rs),
//! on both backends: a day of calls whose callbacks partly arrived, partly not, partly
//! disagreeing with Tencent's record, checked in the rows of call_records, calls and
//! call_gaps; re-runs; every page boundary; interrupted and resumed runs; bad credentials;
//! a window past 7 days; rate limits and failures on demand.

use std::time::Duration;

use serde_json::{Value, json};

use callhook::config::DatabaseSettings;
use callhook::reconcile::{AppReport, reconcile_app};
use callhook::store::{RunKey, Store, Trigger};
use callhook::tencent::{Client, Credentials};

use crate::both_backends;
use crate::helpers::*;
use crate::tencent_fake::{Failure, FakeApp, FakeTencent, record};

pub const KEY: &str = "fake-secret-key-7d1c";

/// The start of the test's day of calls: 20 hours ago, on a whole hour.
fn day_start() -> i64 {
    let now = chrono::Utc::now().timestamp();
    (now - 20 * 3600) / 3600 * 3600
}

/// A status callback body for one participant of a call.
fn status(call: &str, user: &str, role: &str, result: &str, t: (i64, i64, i64)) -> Value {
    let (start, accept, end) = t;
    json!({
        "UserId": user, "RoomId": format!("room-{call}"), "TotalNum": 2, "MediaType": "audio",
        "CallType": "single", "CallId": call, "Role": role, "CallResult": result,
        "EventTime": end,
        "StartCallTs": if result == "normal_end" { start } else { 0 },
        "AcceptTs": if result == "normal_end" { accept } else { 0 },
        "EndTs": if result == "normal_end" { end } else { 0 },
    })
}

/// Delivers both participants' status callbacks through the real receiver.
async fn deliver(app: &TestApp, call: &str, result: &str, t: (i64, i64, i64)) {
    for (user, role) in [
        (format!("{call}-a"), "caller"),
        (format!("{call}-b"), "callee"),
    ] {
        let (status_code, body) = app
            .post_status("call_end", &status(call, &user, role, result, t))
            .await;
        assert_eq!(status_code, 200, "{body}");
    }
}

/// The day: 6 calls that agree, 5 whose callbacks never arrived, 1 whose result and 1
/// whose end time disagree, 2 Tencent has no record of. Returns Tencent's records.
async fn a_day_of_calls(app: &TestApp) -> Vec<Value> {
    let t0 = day_start();
    let at = |i: i64| (t0 + i * 600, t0 + i * 600 + 5, t0 + i * 600 + 65);
    let mut records = Vec::new();
    for i in 0..6 {
        let id = format!("agree-{i}");
        deliver(app, &id, "normal_end", at(i)).await;
        let (s, a, e) = at(i);
        records.push(record(
            &id,
            &format!("{id}-a"),
            &[&format!("{id}-b")],
            "NormalEnd",
            s,
            a,
            e,
        ));
    }
    for (i, result) in [
        (10, "NormalEnd"),
        (11, "NotAnswer"),
        (12, "Reject"),
        (13, "NormalEnd"),
        (14, "Cancel"),
    ] {
        let id = format!("lost-{i}");
        let (s, a, e) = at(i);
        let accept = if result == "NormalEnd" { a } else { 0 };
        records.push(record(
            &id,
            &format!("{id}-a"),
            &[&format!("{id}-b")],
            result,
            s,
            accept,
            e,
        ));
    }
    let (s, a, e) = at(20);
    deliver(app, "differ-result", "not_answer", (s, a, e)).await;
    records.push(record(
        "differ-result",
        "differ-result-a",
        &["differ-result-b"],
        "Cancel",
        s,
        0,
        e,
    ));
    let (s, a, e) = at(21);
    deliver(app, "differ-time", "normal_end", (s, a, e)).await;
    records.push(record(
        "differ-time",
        "differ-time-a",
        &["differ-time-b"],
        "NormalEnd",
        s,
        a,
        e + 60,
    ));
    for i in 30..32 {
        deliver(app, &format!("unrecorded-{i}"), "not_answer", at(i)).await;
    }
    records
}

/// Runs the real binary; returns its exit code, stdout and stderr.
pub async fn callhook(args: Vec<String>, envs: Vec<(String, String)>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(&args)
            .env_remove("CALLHOOK_DATABASE_URL")
            .env_remove("CALLHOOK_CONFIG")
            .envs(envs)
            .output()
            .unwrap_or_else(|e| panic!("running callhook: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file naming the fake as the app's API, the key in TEST_SECRET_KEY.
fn config_file(dir: &tempfile::TempDir, fake: &FakeTencent, extra: &str) -> String {
    let path = dir.path().join("callhook.toml");
    let text = format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key_env = \"TEST_SECRET_KEY\"\napi_url = \"{}\"\n{extra}",
        fake.url()
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

fn window_args(config: &str, db: &str, from: i64, to: i64) -> Vec<String> {
    [
        "reconcile",
        "--config",
        config,
        "--database-url",
        db,
        "--sdkappid",
        &APP.to_string(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--format",
        "json",
        "--page-size",
        "4",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Rows of `sql` as text, sorted, for a comparison that does not depend on row order.
async fn rows(store: &Store, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut r = text_rows(store, sql).await;
    r.sort();
    r
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

both_backends! {
    /// The day of calls, reconciled by the real binary: the counts it prints, and the rows
    /// of call_records, calls, call_gaps and call_stats_daily; then a second run, which
    /// changes nothing but last_seen_at.
    async fn a_day_of_calls_is_reconciled(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        let records = a_day_of_calls(&app).await;
        fake.set_records(APP, records);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = config_file(&dir, &fake, "");
        let (from, to) = (day_start(), chrono::Utc::now().timestamp());
        let env = vec![("TEST_SECRET_KEY".to_owned(), KEY.to_owned())];
        let (code, out, err) = callhook(window_args(&config, &app.db.url, from, to), env.clone()).await;
        assert_eq!(code, 0, "{out}\n{err}");
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let r = &report[0];
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["records"], 13);
        assert_eq!(r["total"], 13);
        assert_eq!(r["requests"], 4, "13 records in pages of 4");
        assert_eq!(
            r["findings"],
            json!({"also_callbacks": 8, "record_only": 5, "callbacks_only": 2, "disagree": 2})
        );
        assert!(!out.contains(KEY) && !err.contains(KEY), "the key never shows");

        let store = app.store();
        assert_eq!(scalar(store, "SELECT count(*) FROM call_records").await, 13);
        let lost = rows(store, "SELECT call_id, caller, CAST(callees AS TEXT), call_result, media_type, call_type, \
             CAST(room_id_type AS TEXT), notes FROM call_records WHERE call_id = 'lost-11'").await;
        assert_eq!(lost, [vec![s("lost-11"), s("lost-11-a"), s("[\"lost-11-b\"]"), s("not_answer"),
                               s("audio"), s("single"), s("2"), None]]);
        // The calls, by source: 8 both, 5 from the record only, 2 from callbacks only.
        let by_source = rows(store, "SELECT source, CAST(count(*) AS TEXT) FROM calls GROUP BY source").await;
        assert_eq!(by_source, [vec![s("both"), s("8")], vec![s("callbacks"), s("2")], vec![s("record_api"), s("5")]]);
        // A call known only from its record, in `calls` as its record says.
        let lost = rows(store, "SELECT call_id, caller, outcome, CAST(CAST(talk_seconds AS INTEGER) AS TEXT), \
             CAST(events AS TEXT), source FROM calls WHERE call_id = 'lost-10'").await;
        assert_eq!(lost, [vec![s("lost-10"), s("lost-10-a"), s("normal_end"), s("60"), s("0"), s("record_api")]]);
        let callees = scalar(store, "SELECT count(*) FROM calls WHERE call_id = 'lost-10' AND participants = 2").await;
        assert_eq!(callees, 1, "the record's callee is a participant");
        // all_calls: the same calls, call_source saying where each came from.
        let all = rows(store, "SELECT call_source, source, CAST(count(*) AS TEXT) FROM all_calls GROUP BY call_source, source").await;
        assert_eq!(all, [
            vec![s("both"), s("call_callbacks"), s("8")],
            vec![s("callbacks"), s("call_callbacks"), s("2")],
            vec![s("record_api"), s("record_api"), s("5")],
        ]);
        // Every disagreement, with its kind and the two values.
        let gaps = rows(store, "SELECT call_id, kind, callbacks, record FROM call_gaps WHERE kind <> 'missing_callbacks'").await;
        let end = |d: i64| callhook::store::iso_millis((day_start() + 21 * 600 + 65 + d) * 1000);
        assert_eq!(gaps, [
            vec![s("differ-result"), s("outcome"), s("not_answer"), s("cancel")],
            vec![s("differ-time"), s("ended_at"), end(0), end(60)],
            vec![s("unrecorded-30"), s("missing_record"), s("not_answer"), None],
            vec![s("unrecorded-31"), s("missing_record"), s("not_answer"), None],
        ]);
        assert_eq!(scalar(store, "SELECT count(*) FROM call_gaps WHERE kind = 'missing_callbacks'").await, 5);
        // The daily statistics count every call, the record-only ones with their outcomes.
        let stats = rows(store, "SELECT CAST(sum(calls) AS TEXT), CAST(sum(answered) AS TEXT), \
             CAST(sum(reject) AS TEXT), CAST(sum(cancel) AS TEXT) FROM call_stats_daily").await;
        assert_eq!(stats, [vec![s("15"), s("9"), s("1"), s("1")]]);

        // Again: idempotent. Same rows, first fetch kept, last seen moved on.
        let before = rows(store, "SELECT call_id, CAST(fetched_at AS TEXT), CAST(last_seen_at AS TEXT) FROM call_records").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (code, out, err) = callhook(window_args(&config, &app.db.url, from, to), env).await;
        assert_eq!(code, 0, "{out}\n{err}");
        let again: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(again[0]["findings"], r["findings"]);
        let after = rows(store, "SELECT call_id, CAST(fetched_at AS TEXT), CAST(last_seen_at AS TEXT) FROM call_records").await;
        assert_eq!(after.len(), 13);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b[0], &b[1]), (&a[0], &a[1]), "fetched_at is the first fetch");
            assert!(a[2] > b[2], "last_seen_at moves on: {b:?} {a:?}");
        }
        assert_eq!(scalar(store, "SELECT count(*) FROM calls").await, 15);
        assert_eq!(scalar(store, "SELECT count(*) FROM reconcile_runs WHERE status = 'ok'").await, 2);

        // The report of the period says how complete the callbacks were, and counts the calls
        // known only from the record in its totals.
        let args = vec!["report".to_owned(), "--database-url".to_owned(), app.db.url.clone()];
        let (code, out, err) = callhook(args, vec![]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Completeness: 61.5% of the 13 calls Tencent recorded arrived as callbacks; 5 are known only from Tencent's record"), "{out}");
        let total = out.lines().find(|l| l.starts_with("total")).unwrap_or_default();
        assert!(total.split_whitespace().nth(2) == Some("15"), "{total}");
        // The table: the same findings, one line for the app.
        let mut args = window_args(&config, &app.db.url, from, to);
        args.truncate(args.len() - 4);
        let env = vec![("TEST_SECRET_KEY".to_owned(), KEY.to_owned())];
        let (code, out, err) = callhook(args, env).await;
        assert_eq!(code, 0, "{err}");
        let line = out.lines().find(|l| l.starts_with(&APP.to_string())).unwrap_or_default();
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), [&APP.to_string(), "13", "8", "5", "2", "2", "1", "ok"], "{out}");
    }
}

both_backends! {
    /// A call whose callbacks say nobody answered takes no accept time from a record that
    /// has one, so it has no ring or talk time; an interrupted call (it may have been
    /// answered) does take it. What the callbacks leave unsaid otherwise (here the start
    /// and the end) still comes from the record.
    async fn unanswered_calls_take_no_accept_time_from_their_record(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = store_of(&app).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        let t0 = day_start();
        let at = |i: i64| (t0 + i * 600, t0 + i * 600 + 5, t0 + i * 600 + 65);
        let mut records = Vec::new();
        for (i, id, callbacks, result) in [
            (0, "not-answered", "not_answer", "NormalEnd"),
            (1, "rejected", "reject", "Reject"),
            (2, "interrupted", "interrupt", "Interrupt"),
        ] {
            let (s, a, e) = at(i);
            deliver(&app, id, callbacks, (s, a, e)).await;
            records.push(record(id, &format!("{id}-a"), &[&format!("{id}-b")], result, s, a, e));
        }
        fake.set_records(APP, records);
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 100.0), key(APP, 100)).await;
        assert_eq!((r.status, r.records), ("ok", 3), "{r:?}");
        let got = rows(&store, "SELECT call_id, outcome, \
             CASE WHEN accepted_at IS NULL THEN 'null' ELSE 'set' END, \
             CAST(CAST(ring_seconds AS INTEGER) AS TEXT), CAST(CAST(talk_seconds AS INTEGER) AS TEXT), \
             CASE WHEN started_at IS NULL OR ended_at IS NULL THEN 'unknown' ELSE 'known' END, \
             source FROM calls").await;
        assert_eq!(got, [
            vec![s("interrupted"), s("interrupt"), s("set"), s("5"), s("60"), s("known"), s("both")],
            vec![s("not-answered"), s("not_answer"), s("null"), None, None, s("known"), s("both")],
            vec![s("rejected"), s("reject"), s("null"), None, None, s("known"), s("both")],
        ]);
        // Its callbacks have no times at all: the interrupted call's ring and talk times are
        // its record's. Callbacks without an accept time disagree with no record's.
        let gaps = scalar(&store, "SELECT count(*) FROM call_gaps WHERE kind = 'accepted_at'").await;
        assert_eq!(gaps, 0);
        // The day's talk time is the interrupted call's alone (call_stats_daily reads the
        // rollups: fold the queued calls first, as the running service's task would).
        store.rollup_catch_up().await.unwrap_or_else(|e| panic!("rollups: {e}"));
        let talk = rows(&store, "SELECT CAST(CAST(avg_talk_seconds AS INTEGER) AS TEXT), \
             CAST(answered AS TEXT) FROM call_stats_daily").await;
        assert_eq!(talk, [vec![s("60"), s("0")]]);
    }
}

/// A client of the fake with short pauses between attempts.
fn client(fake: &FakeTencent, app: i64, key: &str, rate: f64) -> Client {
    Client::new(
        &fake.url(),
        Credentials::new(app, "administrator", key),
        rate,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .with_retry_delays(vec![Duration::from_millis(20); 3])
}

async fn store_of(app: &TestApp) -> Store {
    Store::connect(&DatabaseSettings::new(&app.db.url))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `n` records of app `app`, a minute apart, from the day's start.
fn records_of(app: i64, n: usize) -> Vec<Value> {
    let t0 = day_start();
    (0..n)
        .map(|i| {
            let t = t0 + i as i64 * 60;
            record(
                &format!("c{app}-{i:03}"),
                "a",
                &["b"],
                "NormalEnd",
                t,
                t + 3,
                t + 30,
            )
        })
        .collect()
}

fn key(app: i64, page_size: u32) -> RunKey {
    RunKey {
        sdkappid: app,
        from: day_start() * 1000,
        to: callhook::now_millis(),
        page_size,
        trigger: Trigger::Command,
    }
}

async fn reconcile_once(store: &Store, client: &Client, key: RunKey) -> AppReport {
    reconcile_app(store, client, key).await
}

both_backends! {
    /// Every page boundary: no record, one, a page less one, a page, a page and one, two
    /// pages, and a page size Tencent caps below what is asked.
    async fn every_page_boundary(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = store_of(&app).await;
        let totals = [0usize, 1, 2, 3, 4, 6, 7];
        let fake = FakeTencent::start(
            (1..=totals.len() as i64 + 1).map(|id| (id, FakeApp::new(KEY))),
        ).await;
        for (i, &total) in totals.iter().enumerate() {
            let id = i as i64 + 1;
            fake.set_records(id, records_of(id, total));
            fake.forget_requests();
            let c = client(&fake, id, KEY, 100.0);
            let r = reconcile_once(&store, &c, key(id, 3)).await;
            assert_eq!((r.status, r.records, r.total), ("ok", total as u64, Some(total as u64)), "{r:?}");
            let pages = total.div_ceil(3).max(1);
            assert_eq!(fake.requests(), pages, "total {total}");
            let stored = scalar(&store, &format!("SELECT count(*) FROM call_records WHERE sdkappid = {id}")).await;
            assert_eq!(stored, total as i64);
            let pages_seen: Vec<u64> = fake.seen().iter().map(|s| s.body["Page"].as_u64().unwrap_or(0)).collect();
            assert_eq!(pages_seen, (1..=pages as u64).collect::<Vec<_>>());
        }
        // Tencent pages 2 records whatever is asked: callhook pages with 2.
        let capped = totals.len() as i64 + 1;
        fake.set_records(capped, records_of(capped, 5));
        fake.cap_pages(Some(2));
        fake.forget_requests();
        let r = reconcile_once(&store, &client(&fake, capped, KEY, 100.0), key(capped, 3)).await;
        assert_eq!((r.status, r.records), ("ok", 5), "{r:?}");
        assert_eq!(fake.requests(), 3);
        let stored = format!("SELECT count(*) FROM call_records WHERE sdkappid = {capped}");
        assert_eq!(scalar(&store, &stored).await, 5);
    }
}

both_backends! {
    /// A page that keeps failing stops the run with the pages before it stored; the same
    /// window again resumes at that page, and every record is stored once. Failures that
    /// pass (HTTP 502, 70005, an answer that is not JSON then) are retried.
    async fn interrupted_and_resumed(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = store_of(&app).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        fake.set_records(APP, records_of(APP, 10));
        fake.fail_page(Some((3, Failure::Http(500))));
        let k = key(APP, 3);
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 100.0), k).await;
        assert_eq!(r.status, "failed");
        assert_eq!(r.records, 6);
        assert!(r.error.as_deref().is_some_and(|e| e.contains("HTTP 500")), "{r:?}");
        assert_eq!(fake.requests(), 2 + 4, "pages 1, 2, and page 3 four times");
        assert_eq!(scalar(&store, "SELECT count(*) FROM call_records").await, 6);
        let run_row = rows(&store, "SELECT status, CAST(pages AS TEXT), CAST(records AS TEXT), \
             CAST(total AS TEXT) FROM reconcile_runs").await;
        assert_eq!(run_row, [vec![s("failed"), s("2"), s("6"), s("10")]]);
        assert!(scalar(&store, "SELECT count(*) FROM reconcile_runs WHERE error LIKE '%HTTP 500%'").await == 1);

        fake.fail_page(None);
        fake.forget_requests();
        fake.fail_next(vec![Failure::Http(502), Failure::Code(70_005), Failure::NotJson]);
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 100.0), k).await;
        assert_eq!(r.status, "failed", "an answer that is not JSON is not retried: {r:?}");
        fake.forget_requests();
        fake.fail_next(vec![Failure::Http(502), Failure::Code(70_005)]);
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 100.0), k).await;
        assert_eq!((r.status, r.resumed_at_page, r.records_before, r.records), ("ok", Some(3), 6, 4), "{r:?}");
        let pages: Vec<u64> = fake.seen().iter().map(|s| s.body["Page"].as_u64().unwrap_or(0)).collect();
        assert_eq!(pages, [3, 3, 3, 4], "two failures retried, then pages 3 and 4");
        assert_eq!(scalar(&store, "SELECT count(*) FROM call_records").await, 10);
        let run_row = rows(&store, "SELECT status, CAST(pages AS TEXT), CAST(records AS TEXT) FROM reconcile_runs").await;
        assert_eq!(run_row, [vec![s("ok"), s("4"), s("10")]], "one run, resumed to its end");
        assert_eq!(r.findings.map(|f| f.record_only), Some(10));
    }
}

both_backends! {
    /// Credentials Tencent refuses: the binary exits 1 naming Tencent's code and what to
    /// fix, stores no record, shows no secret; the run is kept as failed.
    async fn bad_credentials_are_named(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        fake.set_records(APP, records_of(APP, 3));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (from, to) = (day_start(), chrono::Utc::now().timestamp());
        let cases: [(&str, &str, i64, &str, &str); 3] = [
            ("a-wrong-key", "", 0, "70003", "secret key"),
            (KEY, "admin_identifier = \"ops\"\n", 0, "70004", "admin_identifier"),
            (KEY, "", 7200, "70001", "clock"),
        ];
        for (key, extra, shift, code, fix) in cases {
            fake.shift_clock(shift);
            let config = config_file(&dir, &fake, extra);
            let env = vec![("TEST_SECRET_KEY".to_owned(), key.to_owned())];
            let (exit, out, err) = callhook(window_args(&config, &app.db.url, from, to), env).await;
            assert_eq!(exit, 1, "{out}\n{err}");
            assert!(err.contains(code) && err.contains(fix), "{code}: {err}");
            assert!(!err.contains(key) && !out.contains(key) && !err.contains("usersig="), "{err}");
        }
        assert_eq!(fake.requests(), 3, "Tencent's refusals are not retried");
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM call_records").await, 0);
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM reconcile_runs WHERE status = 'failed' AND error LIKE '%ErrorCode 700%'").await, 3);
    }
}

both_backends! {
    /// A window that starts more than 7 days ago is refused before anything is asked;
    /// Tencent would have answered from 7 days ago without a word.
    async fn a_window_past_seven_days_is_refused(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = config_file(&dir, &fake, "");
        let now = chrono::Utc::now().timestamp();
        let env = vec![("TEST_SECRET_KEY".to_owned(), KEY.to_owned())];
        let (exit, _, err) = callhook(window_args(&config, &app.db.url, now - 8 * 86_400, now), env.clone()).await;
        assert_eq!(exit, 2, "{err}");
        assert!(err.contains("more than 7 days ago") && err.contains("Tencent keeps call records for 7 days"), "{err}");
        let args: Vec<String> = ["reconcile", "--config", &config, "--database-url", &app.db.url, "--since", "8d"]
            .iter().map(|s| (*s).to_owned()).collect();
        let (exit, _, err) = callhook(args, env).await;
        assert_eq!(exit, 2, "{err}");
        assert_eq!(fake.requests(), 0);
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM reconcile_runs").await, 0);
    }
}

both_backends! {
    /// A run whose window's start has passed Tencent's 7 days by the time it asks (the
    /// check at the command line leaves 10 minutes for a run; a run can take longer)
    /// stops before asking, and says so: Tencent would answer from its limit instead.
    async fn a_start_that_passes_seven_days_during_a_run_stops_it(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = store_of(&app).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        fake.set_records(APP, records_of(APP, 3));
        let now = callhook::now_millis();
        let stale = RunKey { from: now - 7 * 86_400_000 - 1000, to: now, ..key(APP, 100) };
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 50.0), stale).await;
        assert_eq!(r.status, "failed", "{r:?}");
        let error = r.error.clone().unwrap_or_default();
        assert!(error.contains("passed Tencent's 7-day limit"), "{error}");
        assert_eq!(fake.requests(), 0, "nothing asked of Tencent");
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM call_records").await, 0);
    }
}

both_backends! {
    /// The pace: requests start no faster than the rate; Tencent's rate limit (70005) is
    /// waited out and retried.
    async fn the_rate_is_kept_and_rate_limits_retried(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let store = store_of(&app).await;
        let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
        fake.set_records(APP, records_of(APP, 10));
        let r = reconcile_once(&store, &client(&fake, APP, KEY, 10.0), key(APP, 2)).await;
        assert_eq!((r.status, r.records), ("ok", 10));
        // 5 requests at 10/s start 4 × 100 ms apart. The fake sees them arrive: the first
        // one's arrival includes the connection's setup, which on a busy machine took 16 ms
        // once, so 3 of the 4 periods are asked for (unpaced, 5 requests take a few ms).
        let seen = fake.seen();
        let spread = seen.last().map(|l| l.at.duration_since(seen[0].at)).unwrap_or_default();
        assert!(spread >= Duration::from_millis(300), "5 requests at 10/s: {spread:?}");

        fake.forget_requests();
        fake.limit_per_second(Some(2));
        let c = Client::new(&fake.url(), Credentials::new(APP, "administrator", KEY), 100.0)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_retry_delays(vec![Duration::from_millis(600); 4]);
        let r = reconcile_once(&store, &c, key(APP, 2)).await;
        assert_eq!((r.status, r.records), ("ok", 10), "{r:?}");
        let limited = fake.seen().iter().filter(|s| s.code == 70_005).count();
        assert!(limited > 0, "the fake limited some requests");
        assert_eq!(fake.requests(), 5 + limited);
        assert_eq!(scalar(&store, "SELECT count(*) FROM call_records").await, 10);
    }
}

/// The fake reads UserSigs as Tencent does: it takes one made by Tencent's own library
/// (tls-sig-api-v2, pinned in src/tencent/usersig.rs) while it is valid, and refuses it
/// once expired.
#[tokio::test]
async fn the_fake_takes_tencents_own_usersig() {
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let sig = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-Myi0uKEkvyi2BKilOyEwsKMlOACgxNDCDAECqXWlGQWZQKlDE2MzCAipVk5oJEDM3NTCGKYeZkpoPs0HYPK-JzjQpKrCrOKc-Qjiz0STJ0KkjULgoO83OMCArwq0ityPQsjDINzLZVqgUAIMY1ww__";
    let fake = FakeTencent::start([(1_400_000_001, FakeApp::new(key))]).await;
    let post = |shift: i64| {
        fake.shift_clock(shift);
        let url = format!(
            "{}/v4/call_config/get_callback?sdkappid=1400000001&identifier=administrator&usersig={sig}&random=7&contenttype=json",
            fake.url()
        );
        async move {
            let v: Value = reqwest::Client::new()
                .post(url)
                .body("{}")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            v["ErrorCode"].as_i64()
        }
    };
    // Made at 1765000000 for an hour: shift the fake's clock into that hour, then past it.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        post(1_765_000_100 - now).await,
        Some(999),
        "valid: no callback configured yet"
    );
    assert_eq!(post(1_765_003_700 - now).await, Some(70_001), "expired");
}

/// No answer at all (nothing listens): retried, then an error that names the API and never
/// the UserSig.
#[tokio::test]
async fn no_answer_is_retried_then_named() {
    let port = crate::process::free_port();
    let c = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Credentials::new(APP, "administrator", KEY),
        100.0,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .with_retry_delays(vec![Duration::from_millis(10); 2]);
    let e = callhook::tencent::records::page(
        &c,
        &callhook::tencent::records::PageQuery {
            start: 0,
            end: 1,
            per_page: 1,
            page: 1,
        },
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("no answer") && e.contains("3 attempts"), "{e}");
    assert!(!e.contains("usersig") && !e.contains(KEY), "{e}");
    assert_eq!(c.requests(), 3);
}

/// An app with the fake as its REST API.
fn api_app(id: i64, fake: &FakeTencent) -> callhook::config::AppSettings {
    callhook::config::AppSettings {
        api: callhook::config::ApiSettings {
            secret_key: Some(callhook::config::Secret::new(KEY)),
            admin_identifier: "administrator".into(),
            endpoint: callhook::config::ApiEndpoint::Url(fake.url()),
        },
        ..callhook::config::AppSettings::new(id)
    }
}

/// A metric's value in `/metrics`: the line of `name` that has every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

both_backends! {
    /// `serve` with [reconcile] interval: the first run, right after start, reaches back to
    /// the end of the last successful run's window (here a day and a half ago: callhook
    /// was down), not just the 2-hour window; the metrics say how it went.
    async fn serve_reconciles_and_covers_the_time_it_was_down(backend: Backend) {
        let id = match backend { Backend::Postgres => 1_400_000_071, Backend::Sqlite => 1_400_000_072 };
        let fake = FakeTencent::start([(id, FakeApp::new(KEY))]).await;
        let now = chrono::Utc::now().timestamp();
        let t = |ago: i64| now - ago;
        fake.set_records(id, vec![
            record("while-down", "a", &["b"], "NormalEnd", t(30 * 3600), t(30 * 3600) + 4, t(30 * 3600) + 90),
            record("just-now", "a", &["b"], "NotAnswer", t(600), 0, t(570)),
        ]);
        // The last successful run, before callhook went down, ended 36 hours ago.
        let db = TestDb::new(backend).await;
        let store = Store::connect(&DatabaseSettings::new(&db.url)).await.unwrap_or_else(|e| panic!("{e}"));
        store.migrate(Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}"));
        let old = RunKey {
            sdkappid: id,
            from: (now - 38 * 3600) * 1000,
            to: (now - 36 * 3600) * 1000,
            page_size: 100,
            trigger: Trigger::Serve,
        };
        let run = store.start_run(&old, old.to).await.unwrap_or_else(|e| panic!("{e}"));
        store.finish_run(run.id, &callhook::store::RunEnd::Ok, 1).await.unwrap_or_else(|e| panic!("{e}"));
        let app = TestApp::spawn_on(db, |s| {
            s.apps.insert(id, api_app(id, &fake));
            s.reconcile.interval = Some(Duration::from_secs(3600));
        }).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while scalar(app.store(), "SELECT count(*) FROM reconcile_runs WHERE status = 'ok' AND trigger = 'serve'").await < 2 {
            assert!(std::time::Instant::now() < deadline, "no run within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let calls = rows(app.store(), &format!("SELECT call_id, source FROM calls WHERE sdkappid = {id}")).await;
        assert_eq!(calls, [vec![s("just-now"), s("record_api")], vec![s("while-down"), s("record_api")]]);
        let from = fake.seen()[0].body["StartTime"].as_i64().unwrap_or_default();
        assert_eq!(from, now - 36 * 3600, "the window starts where the last success ended");
        // The run's row is committed before its metrics are counted: wait for them.
        let label = format!("sdkappid=\"{id}\"");
        let app_label = [label.as_str()];
        let text = loop {
            let (_, text) = app.get("/metrics").await;
            if metric(&text, "callhook_reconcile_runs_total", &[&label, "outcome=\"ok\""]).is_some()
                || std::time::Instant::now() > deadline
            {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ok = metric(&text, "callhook_reconcile_runs_total", &[&label, "outcome=\"ok\""]);
        assert_eq!(ok, Some(1.0), "{text}");
        assert_eq!(metric(&text, "callhook_reconcile_record_only_calls", &app_label), Some(2.0));
        assert_eq!(metric(&text, "callhook_reconcile_records", &app_label), Some(2.0));
        let last = metric(&text, "callhook_reconcile_last_success_timestamp_seconds", &app_label);
        assert!(last.is_some_and(|t| (t - now as f64).abs() < 60.0), "{last:?}");
        assert_eq!(metric(&text, "callhook_reconcile_interval_seconds", &app_label), Some(3600.0));
        let (_, ready) = app.get("/readyz").await;
        assert!(ready.contains("\"tasks_down\":[]"), "{ready}");
    }
}

both_backends! {
    /// `callhook send --record-api` plays both sides on one machine: it sends the callbacks
    /// of generated calls but withholds a quarter of the calls' callbacks, and serves
    /// Tencent's records of all of them; `callhook reconcile` against it finds exactly the
    /// withheld calls, and nothing that disagrees.
    async fn send_plays_the_record_api_end_to_end(backend: Backend) {
        use std::io::{BufRead as _, BufReader};
        let app = TestApp::spawn(backend).await;
        let port = crate::process::free_port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["send", "--url", &app.url("/"), "--sdkappid", &APP.to_string(), "--calls", "40",
                   "--family", "all", "--seed", "7", "--record-api", &format!("127.0.0.1:{port}"),
                   "--record-api-key", KEY, "--drop-percent", "25", "--retry-schedule", "0"])
            .env_remove("CALLHOOK_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let line = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("record API"))
        }).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no record API line"));
        let withheld: i64 = line.split(" of them").next().and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        // Which calls are withheld follows their ids, new on every run: about a quarter, a
        // binomial count (4 and 16 are as likely as 1 in 40 runs), so only "some, not all"
        // is asserted here; what matters is that reconcile finds exactly those, below.
        assert!(line.contains("40 calls' records") && (1..40).contains(&withheld), "{line}");

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("callhook.toml");
        std::fs::write(&path, format!(
            "[[apps]]\nsdkappid = {APP}\nsecret_key_env = \"TEST_SECRET_KEY\"\napi_url = \"http://127.0.0.1:{port}\"\n"
        )).unwrap_or_else(|e| panic!("{e}"));
        let args: Vec<String> = ["reconcile", "--config", &path.display().to_string(), "--database-url",
            &app.db.url, "--since", "25h", "--format", "json"].iter().map(|s| (*s).to_owned()).collect();
        let (code, out, err) = callhook(args, vec![("TEST_SECRET_KEY".to_owned(), KEY.to_owned())]).await;
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "send ends cleanly on SIGTERM: {status:?}");
        assert_eq!(code, 0, "{out}\n{err}");
        let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(r[0]["records"], 40);
        assert_eq!(
            r[0]["findings"],
            json!({"also_callbacks": 40 - withheld, "record_only": withheld, "callbacks_only": 0, "disagree": 0})
        );
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM calls WHERE source = 'record_api'").await, withheld);
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM call_gaps WHERE kind <> 'missing_callbacks'").await, 0);
    }
}
