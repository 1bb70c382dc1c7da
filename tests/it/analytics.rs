//! Analytics: the `calls` and `call_stats_daily` views and `callhook report`, on a known
//! scenario built through the HTTP endpoint — every outcome, caller and callee status
//! events, event-family actions, v4 records and member changes, a group call, two UTC
//! days, two apps, retries — asserted row by row and format by format on both backends.

use chrono::{DateTime, NaiveDate};
use serde_json::{Value, json};

use callhook::cli::ReportFormat;
use callhook::report::{self, Report};
use callhook::store::{DayRange, Store};

use crate::both_backends;
use crate::helpers::*;

/// Unix seconds of a UTC time written `2024-01-10T10:00:00`.
fn secs(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(&format!("{t}Z"))
        .map(|d| d.timestamp())
        .unwrap_or_else(|e| panic!("bad time {t}: {e}"))
}

/// Unix milliseconds of a UTC time, for comparing with stored timestamps.
fn ms(t: &str) -> i64 {
    secs(t) * 1000
}

fn day(d: &str) -> NaiveDate {
    NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap_or_else(|e| panic!("bad day {d}: {e}"))
}

const OTHER_APP: i64 = TOKEN_APP;

/// What a status or event callback carries; times are `None` when Tencent sends 0.
struct V1<'a> {
    call: &'a str,
    user: &'a str,
    role: &'a str,
    result: &'a str,
    event: Option<&'a str>,
    media: &'a str,
    call_type: &'a str,
    total: i64,
    at: &'a str,
    start: Option<&'a str>,
    accept: Option<&'a str>,
    end: Option<&'a str>,
}

impl V1<'_> {
    fn body(&self) -> Value {
        let t = |v: Option<&str>| v.map_or(0, secs);
        let mut body = json!({
            "UserId": self.user, "RoomId": format!("room-{}", self.call), "TotalNum": self.total,
            "MediaType": self.media, "CallType": self.call_type, "CallId": self.call,
            "Role": self.role, "CallResult": self.result, "EventTime": secs(self.at),
            "StartCallTs": t(self.start), "AcceptTs": t(self.accept), "EndTs": t(self.end),
        });
        if let Some(e) = self.event {
            body["Event"] = json!(e);
        }
        body
    }
}

/// A 1-to-1 status callback without timestamps (as documented for every result but
/// `normal_end`).
fn status<'a>(call: &'a str, user: &'a str, role: &'a str, result: &'a str, at: &'a str) -> V1<'a> {
    V1 {
        call,
        user,
        role,
        result,
        event: None,
        media: "audio",
        call_type: "single",
        total: 2,
        at,
        start: None,
        accept: None,
        end: None,
    }
}

/// An event-family callback for `command` (role-prefixed; the body's Event is the rest).
fn event<'a>(call: &'a str, command: &'a str, user: &'a str, at: &'a str) -> (&'a str, V1<'a>) {
    let (role, action) = command.split_once('_').unwrap_or(("", command));
    let mut v = status(call, user, role, "", at);
    v.event = Some(action);
    (command, v)
}

async fn post_ok(app: &TestApp, query: String, body: &Value) {
    let (status, answer) = app.post(&query, body.to_string()).await;
    assert_eq!(
        (status, answer["ErrorCode"].as_i64()),
        (200, Some(0)),
        "{query}: {answer}"
    );
}

async fn post_v1(app: &TestApp, command: &str, v: &V1<'_>) {
    post_ok(app, status_query(APP, command), &v.body()).await;
}

async fn post_v4(app: &TestApp, command: &str, body: Value) {
    post_ok(app, v4_query(APP, command), &body).await;
}

/// Posts the scenario. Day 1 is 2024-01-10 (UTC), day 2 2024-01-11.
///
/// | call | app | how it arrives | outcome | talk |
/// |---|---|---|---|---|
/// | c01 alice→bob | APP | status ×2 (the caller's delivered 3 times), times on both | normal_end | 125 s |
/// | c02 alice→carol | APP | status: caller not_answer, callee reject, no times | reject | – |
/// | c03 bob→dave | APP | events start_call, receive_call, call_busy + caller status | call_busy | – |
/// | c04 erin→frank | APP | status ×2 | not_answer | – |
/// | c05 grace→heidi | APP | status ×2, the caller's as `command=cancel` with empty result | cancel | – |
/// | c06 ivan→judy | APP, day 2 | events start, accept, interrupted + status ×2 | interrupt | – (no end) |
/// | c07 judy→ken | APP | v4 start, member accept + hangup, end record (delivered twice) | normal_end | 300 s |
/// | c08 liam→123456789012345678 | APP | v4 end record only, callee as a JSON number | offline | – |
/// | c09 mallory→nick,olivia,peggy | APP, day 2 | status ×4, group | normal_end | 300 s |
/// | c10 trent→victor | APP, day 2 | events only: start, accept, call_end ×2 | (none) | 600 s |
/// | c11 walter→xena | OTHER_APP, day 2 | status ×2 | reject | – |
/// | c12 alice→bob | APP | status ×2, starts 23:59:50 on day 1, ends on day 2 | normal_end | 40 s |
async fn post_scenario(app: &TestApp) {
    // c01: answered, 5 s ringing, 125 s talk; the caller's callback is retried twice.
    let mut c01 = status(
        "c01",
        "alice",
        "caller",
        "normal_end",
        "2024-01-10T10:02:11",
    );
    c01.media = "video";
    c01.start = Some("2024-01-10T10:00:00");
    c01.accept = Some("2024-01-10T10:00:05");
    c01.end = Some("2024-01-10T10:02:10");
    for _ in 0..3 {
        post_v1(app, "call_end", &c01).await;
    }
    let c01b = V1 {
        user: "bob",
        role: "callee",
        at: "2024-01-10T10:02:12",
        ..c01
    };
    post_v1(app, "call_end", &c01b).await;

    // c02: the callee rejected; the caller saw it as not answered. reject wins.
    post_v1(
        app,
        "call_end",
        &status("c02", "carol", "callee", "reject", "2024-01-10T11:00:09"),
    )
    .await;
    post_v1(
        app,
        "call_end",
        &status(
            "c02",
            "alice",
            "caller",
            "not_answer",
            "2024-01-10T11:00:10",
        ),
    )
    .await;

    // c03: busy, known from events and the caller's status; the start comes from the
    // start_call event.
    for (command, v) in [
        event("c03", "caller_start_call", "bob", "2024-01-10T12:00:00"),
        event("c03", "callee_receive_call", "dave", "2024-01-10T12:00:01"),
        event("c03", "caller_call_busy", "bob", "2024-01-10T12:00:02"),
    ] {
        post_v1(app, command, &v).await;
    }
    post_v1(
        app,
        "call_end",
        &status("c03", "bob", "caller", "call_busy", "2024-01-10T12:00:03"),
    )
    .await;

    // c04: not answered.
    post_v1(
        app,
        "call_end",
        &status(
            "c04",
            "frank",
            "callee",
            "not_answer",
            "2024-01-10T13:00:30",
        ),
    )
    .await;
    post_v1(
        app,
        "not_answer",
        &status("c04", "erin", "caller", "Not_answer", "2024-01-10T13:00:31"),
    )
    .await;

    // c05: cancelled; the caller's result comes from the command word.
    post_v1(
        app,
        "cancel",
        &status("c05", "grace", "caller", "", "2024-01-10T13:30:05"),
    )
    .await;
    post_v1(
        app,
        "call_end",
        &status("c05", "heidi", "callee", "cancel", "2024-01-10T13:30:06"),
    )
    .await;

    // c06 (day 2): connected, then interrupted; no end time anywhere.
    let (cmd, mut start) = event("c06", "caller_start_call", "ivan", "2024-01-11T08:00:00");
    start.start = Some("2024-01-11T08:00:00");
    post_v1(app, cmd, &start).await;
    let (cmd, mut accept) = event("c06", "callee_accept_call", "judy", "2024-01-11T08:00:03");
    accept.accept = Some("2024-01-11T08:00:03");
    post_v1(app, cmd, &accept).await;
    let (cmd, v) = event(
        "c06",
        "caller_call_interrupted",
        "ivan",
        "2024-01-11T08:01:03",
    );
    post_v1(app, cmd, &v).await;
    post_v1(
        app,
        "call_end",
        &status("c06", "ivan", "caller", "interrupt", "2024-01-11T08:01:04"),
    )
    .await;
    post_v1(
        app,
        "call_end",
        &status("c06", "judy", "callee", "interrupt", "2024-01-11T08:01:05"),
    )
    .await;

    // c07: the v4 family from start to end; the end record is delivered twice.
    let users = json!([{"User_Account": "judy", "Status": "Calling"}, {"User_Account": "ken", "Status": "Waiting"}]);
    post_v4(app, "Call.CallbackAfterStartCall", json!({
        "CallbackCommand": "Call.CallbackAfterStartCall",
        "CallInfo": {"CallId": "c07", "CallMediaType": "Audio", "ChatGroupId": "", "RoomId": "r07", "RoomIdType": 2},
        "UserList": users, "EventTime": ms("2024-01-10T15:00:00"),
    })).await;
    for (action, at) in [
        ("Answer", "2024-01-10T15:00:10"),
        ("Hang Up", "2024-01-10T15:05:10"),
    ] {
        post_v4(app, "Call.CallbackAfterMemberChanged", json!({
            "CallbackCommand": "Call.CallbackAfterMemberChanged", "CallId": "c07",
            "UserList": users, "ChangedUserList": [{"User_Account": "ken", "ActionType": action}],
            "EventTime": ms(at),
        })).await;
    }
    let end = json!({
        "CallbackCommand": "Call.CallbackAfterEndCall",
        "CallRecord": {
            "CallId": "c07", "Caller_Account": "judy", "MediaType": "Audio", "CallType": "SingleCall",
            "StartTime": secs("2024-01-10T15:00:00"), "AcceptTime": secs("2024-01-10T15:00:10"),
            "EndTime": secs("2024-01-10T15:05:10"), "CallResult": "NormalEnd",
            "CalleeList_Account": ["judy", "ken"], "RoomId": "r07", "RoomIdType": 2,
        },
        "EventTime": ms("2024-01-10T15:05:11"),
    });
    post_v4(app, "Call.CallbackAfterEndCall", end.clone()).await;
    post_v4(app, "Call.CallbackAfterEndCall", end).await;

    // c08: only the v4 end record; the callee's account is an 18-digit JSON number.
    let body = r#"{"CallbackCommand":"Call.CallbackAfterEndCall","CallRecord":{"CallId":"c08","Caller_Account":"liam","MediaType":"Video","CallType":"SingleCall","StartTime":START,"AcceptTime":0,"EndTime":END,"CallResult":"Offline","CalleeList_Account":["liam",123456789012345678],"RoomId":"r08","RoomIdType":2},"EventTime":AT}"#
        .replace("START", &secs("2024-01-10T16:00:00").to_string())
        .replace("END", &secs("2024-01-10T16:00:20").to_string())
        .replace("AT", &ms("2024-01-10T16:00:21").to_string());
    let (code, answer) = app
        .post(&v4_query(APP, "Call.CallbackAfterEndCall"), body)
        .await;
    assert_eq!(
        (code, answer["ErrorCode"].as_i64()),
        (200, Some(0)),
        "{answer}"
    );

    // c09 (day 2): a group call, everyone reports normal_end with their own times.
    for (user, role, accept, end, at) in [
        (
            "mallory",
            "caller",
            Some("2024-01-11T09:00:04"),
            Some("2024-01-11T09:05:04"),
            "2024-01-11T09:05:05",
        ),
        (
            "nick",
            "callee",
            Some("2024-01-11T09:00:04"),
            Some("2024-01-11T09:05:04"),
            "2024-01-11T09:05:06",
        ),
        (
            "olivia",
            "callee",
            Some("2024-01-11T09:00:08"),
            Some("2024-01-11T09:03:20"),
            "2024-01-11T09:03:21",
        ),
        ("peggy", "callee", None, None, "2024-01-11T09:00:30"),
    ] {
        let mut v = status("c09", user, role, "normal_end", at);
        v.call_type = "group";
        v.media = "video";
        v.total = 4;
        v.start = Some("2024-01-11T09:00:00");
        v.accept = accept;
        v.end = end;
        post_v1(app, "call_end", &v).await;
    }

    // c10 (day 2): event callbacks only — no result anywhere; accept and end come from the
    // actions' event times.
    let (cmd, mut v) = event("c10", "caller_start_call", "trent", "2024-01-11T14:00:00");
    v.start = Some("2024-01-11T14:00:00");
    post_v1(app, cmd, &v).await;
    for (command, user, at) in [
        ("callee_accept_call", "victor", "2024-01-11T14:00:07"),
        ("caller_call_end", "trent", "2024-01-11T14:10:07"),
        ("callee_call_end", "victor", "2024-01-11T14:10:07"),
    ] {
        let (cmd, v) = event("c10", command, user, at);
        post_v1(app, cmd, &v).await;
    }

    // c11 (day 2): another app.
    for (user, role, at) in [
        ("xena", "callee", "2024-01-11T10:00:10"),
        ("walter", "caller", "2024-01-11T10:00:11"),
    ] {
        let v = status("c11", user, role, "reject", at);
        post_ok(
            app,
            format!("{}&token={TOKEN}", status_query(OTHER_APP, "call_end")),
            &v.body(),
        )
        .await;
    }

    // c12: starts just before midnight on day 1, its callbacks arrive on day 2; it counts
    // on day 1 (its start).
    for (user, role, at) in [
        ("alice", "caller", "2024-01-11T00:00:39"),
        ("bob", "callee", "2024-01-11T00:00:40"),
    ] {
        let mut v = status("c12", user, role, "normal_end", at);
        v.start = Some("2024-01-10T23:59:50");
        v.accept = Some("2024-01-10T23:59:58");
        v.end = Some("2024-01-11T00:00:38");
        post_v1(app, "call_end", &v).await;
    }
}

/// A row of `calls`, read the same way from both backends (times in Unix ms, callees as
/// a comma-separated list).
#[derive(Debug, Clone, PartialEq)]
struct CallRow {
    sdkappid: i64,
    call_id: String,
    caller: Option<String>,
    callees: String,
    media_type: Option<String>,
    call_type: Option<String>,
    outcome: Option<String>,
    started_at: Option<i64>,
    accepted_at: Option<i64>,
    ended_at: Option<i64>,
    ring_seconds: Option<f64>,
    talk_seconds: Option<f64>,
    participants: i64,
    events: i64,
    day: String,
}

type CallTuple = (
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    i64,
    i64,
    String,
);

const PG_CALLS: &str = r#"SELECT sdkappid, call_id, caller, array_to_string(callees, ','),
  media_type, call_type, outcome,
  (extract(epoch FROM started_at) * 1000)::bigint, (extract(epoch FROM accepted_at) * 1000)::bigint,
  (extract(epoch FROM ended_at) * 1000)::bigint, ring_seconds, talk_seconds, participants, events, day::text
  FROM calls ORDER BY sdkappid, call_id COLLATE "C""#;

const SQLITE_CALLS: &str = r#"SELECT sdkappid, call_id, caller, callees, media_type, call_type, outcome,
  CAST(round(unixepoch(started_at, 'subsec') * 1000) AS INTEGER),
  CAST(round(unixepoch(accepted_at, 'subsec') * 1000) AS INTEGER),
  CAST(round(unixepoch(ended_at, 'subsec') * 1000) AS INTEGER),
  ring_seconds, talk_seconds, participants, events, day
  FROM calls ORDER BY sdkappid, call_id"#;

async fn read_calls(store: &Store) -> Vec<CallRow> {
    let rows: Vec<CallTuple> = match store {
        Store::Postgres(s) => sqlx::query_as(PG_CALLS).fetch_all(s.pool()).await,
        Store::Sqlite(s) => sqlx::query_as(SQLITE_CALLS).fetch_all(s.pool()).await,
    }
    .unwrap_or_else(|e| panic!("reading calls: {e}"));
    rows.into_iter()
        .map(|r| CallRow {
            sdkappid: r.0,
            call_id: r.1,
            caller: r.2,
            callees: r.3,
            media_type: r.4,
            call_type: r.5,
            outcome: r.6,
            started_at: r.7,
            accepted_at: r.8,
            ended_at: r.9,
            ring_seconds: r.10,
            talk_seconds: r.11,
            participants: r.12,
            events: r.13,
            day: r.14,
        })
        .collect()
}

/// The expected `calls` row, built from readable values.
#[allow(clippy::too_many_arguments)]
fn call(
    sdkappid: i64,
    call_id: &str,
    caller: &str,
    callees: &str,
    media: &str,
    call_type: &str,
    outcome: Option<&str>,
    times: [Option<&str>; 3],
    participants: i64,
    events: i64,
    day: &str,
) -> CallRow {
    let [start, accept, end] = times.map(|t| t.map(ms));
    let diff = |a: Option<i64>, b: Option<i64>| Some((b? - a?) as f64 / 1000.0);
    CallRow {
        sdkappid,
        call_id: call_id.to_owned(),
        caller: Some(caller.to_owned()),
        callees: callees.to_owned(),
        media_type: Some(media.to_owned()),
        call_type: Some(call_type.to_owned()),
        outcome: outcome.map(str::to_owned),
        started_at: start,
        accepted_at: accept,
        ended_at: end,
        ring_seconds: diff(start, accept),
        talk_seconds: diff(accept, end),
        participants,
        events,
        day: day.to_owned(),
    }
}

fn expected_calls() -> Vec<CallRow> {
    let d1 = "2024-01-10";
    let d2 = "2024-01-11";
    let t = |s: &'static str| Some(s);
    vec![
        call(
            APP,
            "c01",
            "alice",
            "bob",
            "video",
            "single",
            Some("normal_end"),
            [
                t("2024-01-10T10:00:00"),
                t("2024-01-10T10:00:05"),
                t("2024-01-10T10:02:10"),
            ],
            2,
            2,
            d1,
        ),
        call(
            APP,
            "c02",
            "alice",
            "carol",
            "audio",
            "single",
            Some("reject"),
            [None, None, None],
            2,
            2,
            d1,
        ),
        call(
            APP,
            "c03",
            "bob",
            "dave",
            "audio",
            "single",
            Some("call_busy"),
            [t("2024-01-10T12:00:00"), None, None],
            2,
            4,
            d1,
        ),
        call(
            APP,
            "c04",
            "erin",
            "frank",
            "audio",
            "single",
            Some("not_answer"),
            [None, None, None],
            2,
            2,
            d1,
        ),
        call(
            APP,
            "c05",
            "grace",
            "heidi",
            "audio",
            "single",
            Some("cancel"),
            [None, None, None],
            2,
            2,
            d1,
        ),
        call(
            APP,
            "c06",
            "ivan",
            "judy",
            "audio",
            "single",
            Some("interrupt"),
            [t("2024-01-11T08:00:00"), t("2024-01-11T08:00:03"), None],
            2,
            5,
            d2,
        ),
        call(
            APP,
            "c07",
            "judy",
            "ken",
            "audio",
            "single",
            Some("normal_end"),
            [
                t("2024-01-10T15:00:00"),
                t("2024-01-10T15:00:10"),
                t("2024-01-10T15:05:10"),
            ],
            2,
            4,
            d1,
        ),
        call(
            APP,
            "c08",
            "liam",
            "123456789012345678",
            "video",
            "single",
            Some("offline"),
            [t("2024-01-10T16:00:00"), None, t("2024-01-10T16:00:20")],
            2,
            1,
            d1,
        ),
        call(
            APP,
            "c09",
            "mallory",
            "nick,olivia,peggy",
            "video",
            "group",
            Some("normal_end"),
            [
                t("2024-01-11T09:00:00"),
                t("2024-01-11T09:00:04"),
                t("2024-01-11T09:05:04"),
            ],
            4,
            4,
            d2,
        ),
        call(
            APP,
            "c10",
            "trent",
            "victor",
            "audio",
            "single",
            None,
            [
                t("2024-01-11T14:00:00"),
                t("2024-01-11T14:00:07"),
                t("2024-01-11T14:10:07"),
            ],
            2,
            4,
            d2,
        ),
        call(
            APP,
            "c12",
            "alice",
            "bob",
            "audio",
            "single",
            Some("normal_end"),
            [
                t("2024-01-10T23:59:50"),
                t("2024-01-10T23:59:58"),
                t("2024-01-11T00:00:38"),
            ],
            2,
            2,
            d1,
        ),
        call(
            OTHER_APP,
            "c11",
            "walter",
            "xena",
            "audio",
            "single",
            Some("reject"),
            [None, None, None],
            2,
            2,
            d2,
        ),
    ]
}

fn stats(
    d: &str,
    sdkappid: i64,
    counts: [i64; 7],
    answer_rate: f64,
    talk: Option<[f64; 3]>,
) -> callhook::store::DailyStats {
    callhook::store::DailyStats {
        day: day(d),
        sdkappid,
        calls: counts[0],
        answered: counts[1],
        not_answer: counts[2],
        reject: counts[3],
        call_busy: counts[4],
        cancel: counts[5],
        interrupt: counts[6],
        answer_rate,
        avg_talk_seconds: talk.map(|t| t[0]),
        p50_talk_seconds: talk.map(|t| t[1]),
        p90_talk_seconds: talk.map(|t| t[2]),
    }
}

/// Day 1: talk times 40, 125, 300 s → mean 155, median 125, p90 125 + 0.8·175 = 265.
/// Day 2: 300, 600 s → mean 450, median 450, p90 300 + 0.9·300 = 570.
fn expected_stats() -> Vec<callhook::store::DailyStats> {
    vec![
        stats(
            "2024-01-10",
            APP,
            [8, 3, 1, 1, 1, 1, 0],
            0.375,
            Some([155.0, 125.0, 265.0]),
        ),
        stats(
            "2024-01-11",
            APP,
            [3, 1, 0, 0, 0, 0, 1],
            1.0 / 3.0,
            Some([450.0, 450.0, 570.0]),
        ),
        stats("2024-01-11", OTHER_APP, [1, 0, 0, 1, 0, 0, 0], 0.0, None),
    ]
}

fn scenario_range() -> DayRange {
    DayRange {
        since: day("2024-01-10"),
        until: day("2024-01-12"),
    }
}

both_backends! {
    /// Every call of the scenario folds into exactly the expected `calls` row.
    async fn calls_view_folds_every_family(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        post_scenario(&app).await;
        let got = read_calls(app.store()).await;
        let want = expected_calls();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "call {}", w.call_id);
        }
        assert_eq!(got.len(), want.len());
        // Retries are counted in call_events, not as more events of the call.
        assert_eq!(scalar(app.store(), "SELECT CAST(max(deliveries) AS BIGINT) FROM call_events").await, 3);
    }
}

both_backends! {
    /// `call_stats_daily` gives exactly the expected rows; a filter on day selects them.
    async fn daily_stats_view_counts_each_day(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        post_scenario(&app).await;
        let got = app.store().daily_stats(scenario_range(), None).await
            .unwrap_or_else(|e| panic!("daily_stats: {e}"));
        assert_eq!(got, expected_stats());
        let one_day = DayRange { since: day("2024-01-11"), until: day("2024-01-12") };
        let got = app.store().daily_stats(one_day, Some(OTHER_APP)).await
            .unwrap_or_else(|e| panic!("daily_stats: {e}"));
        assert_eq!(got, expected_stats()[2..].to_vec());
        let none = DayRange { since: day("2024-01-12"), until: day("2024-02-01") };
        assert_eq!(app.store().daily_stats(none, None).await.map(|v| v.len()).ok(), Some(0));
        // The period's talk times, in their buckets.
        let talk = app.store().period_stats(scenario_range(), Some(APP)).await
            .unwrap_or_else(|e| panic!("period_stats: {e}")).talk;
        assert_eq!(talk, callhook::store::TalkTimes::from_times([40_000, 125_000, 300_000, 300_000, 600_000]));
    }
}

both_backends! {
    /// The views' columns are exactly the documented ones, in order.
    async fn view_columns_are_the_contract(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let columns = |view: &str| {
            let store = app.store().clone();
            let view = view.to_owned();
            async move {
                match &store {
                    Store::Postgres(s) => sqlx::query_scalar::<_, String>(
                        "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
                    ).bind(view).fetch_all(s.pool()).await,
                    Store::Sqlite(s) => sqlx::query_scalar::<_, String>(
                        "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
                    ).bind(view).fetch_all(s.pool()).await,
                }
                .unwrap_or_else(|e| panic!("columns: {e}"))
            }
        };
        assert_eq!(
            columns("calls").await,
            ["sdkappid", "call_id", "caller", "callees", "media_type", "call_type", "outcome",
             "started_at", "accepted_at", "ended_at", "ring_seconds", "talk_seconds",
             "participants", "events", "day", "source"]
        );
        assert_eq!(
            columns("all_calls").await,
            ["sdkappid", "call_id", "caller", "callees", "media_type", "call_type", "outcome",
             "started_at", "accepted_at", "ended_at", "ring_seconds", "talk_seconds",
             "participants", "events", "day", "source", "call_source"]
        );
        assert_eq!(
            columns("call_records").await,
            ["sdkappid", "call_id", "caller", "callees", "media_type", "call_type",
             "call_result", "started_at", "accepted_at", "ended_at", "room_id", "room_id_type",
             "day", "record", "notes", "fetched_at", "last_seen_at"]
        );
        assert_eq!(
            columns("call_gaps").await,
            ["sdkappid", "call_id", "day", "call_time", "kind", "callbacks", "record"]
        );
        assert_eq!(
            columns("call_stats_daily").await,
            ["day", "sdkappid", "calls", "answered", "not_answer", "reject", "call_busy",
             "cancel", "interrupt", "answer_rate", "avg_talk_seconds", "p50_talk_seconds",
             "p90_talk_seconds"]
        );
        if let Store::Postgres(_) = app.store() {
            let t = scalar(app.store(), "SELECT count(*) FROM information_schema.columns WHERE table_name = 'calls' AND column_name = 'callees' AND data_type = 'ARRAY'").await;
            assert_eq!(t, 1, "callees is text[] in PostgreSQL");
        }
    }
}

/// A fresh, migrated database holding many calls with millisecond talk times, spread over
/// 2024-03-01..07 with 1, 2, 3, 5, 10, 11 and 40 calls a day (a quarter unanswered),
/// written directly (no HTTP) with the receiver's own parser and batch insert.
async fn random_calls(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&callhook::config::DatabaseSettings::new(db.url.clone()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    store
        .migrate(std::time::Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let mut rows = Vec::new();
    let mut seed: u64 = 7;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let day0 = secs("2024-03-01T00:00:00") * 1000;
    for (d, calls) in [1u64, 2, 3, 5, 10, 11, 40].iter().enumerate() {
        for c in 0..*calls {
            let start = day0 + d as i64 * 86_400_000 + (next() % 80_000_000) as i64;
            let accept = start + (next() % 30_000) as i64;
            let end = accept + (next() % 3_600_000) as i64;
            let answered = next() % 4 != 0;
            let body = json!({
                "UserId": "u", "CallId": format!("d{d}-c{c}"), "Role": "caller",
                "CallResult": if answered { "normal_end" } else { "not_answer" },
                "EventTime": end + 1000, "StartCallTs": start,
                "AcceptTs": if answered { accept } else { 0 }, "EndTs": end,
            });
            let ctx = callhook::protocol::Context {
                sdkappid: APP,
                command: "call_end",
                client_ip: None,
                opt_platform: None,
                remote_addr: None,
                received_at: end + 2000,
            };
            let parsed = callhook::protocol::parse_delivery(
                callhook::protocol::Kind::Status,
                false,
                &ctx,
                body.to_string().as_bytes(),
            )
            .unwrap_or_else(|e| panic!("parse: {e}"));
            rows.extend(parsed);
        }
    }
    let batch: Vec<callhook::store::BatchRow<'_>> = rows
        .iter()
        .map(|row| callhook::store::BatchRow { row, deliveries: 1 })
        .collect();
    store
        .write_batch(&batch, &[])
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    (db, store)
}

fn random_calls_range() -> DayRange {
    DayRange {
        since: day("2024-03-01"),
        until: day("2024-03-08"),
    }
}

/// Both backends give bit-for-bit the same statistics for the same events, before and after
/// the rollups are folded: SQLite's view computes PostgreSQL's, step for step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_compute_identical_statistics() {
    let mut results = Vec::new();
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let (_db, store) = random_calls(backend).await;
        let daily = store
            .daily_stats(random_calls_range(), None)
            .await
            .unwrap_or_else(|e| panic!("stats: {e}"));
        assert_eq!(daily.len(), 7);
        // Read before the rollups are folded (the queued calls applied in Rust), then from
        // call_stats_daily itself once they are (the view's SQL): the same to the bit.
        store
            .rollup_catch_up()
            .await
            .unwrap_or_else(|e| panic!("rollups: {e}"));
        let folded = store
            .daily_stats(random_calls_range(), None)
            .await
            .unwrap_or_else(|e| panic!("stats: {e}"));
        assert_eq!(scalar(&store, "SELECT count(*) FROM rollup_queue").await, 0);
        assert_eq!(folded, daily);
        store.close().await;
        results.push(daily);
        results.push(folded);
    }
    let bits = |rows: &[callhook::store::DailyStats]| -> Vec<Vec<Option<u64>>> {
        rows.iter()
            .map(|r| {
                vec![
                    Some(r.answer_rate.to_bits()),
                    r.avg_talk_seconds.map(f64::to_bits),
                    r.p50_talk_seconds.map(f64::to_bits),
                    r.p90_talk_seconds.map(f64::to_bits),
                ]
            })
            .collect()
    };
    for r in &results[1..] {
        assert_eq!(&results[0], r);
        assert_eq!(bits(&results[0]), bits(r));
    }
    // Not every interpolation is whole: the test exercises the fractional path.
    assert!(
        results[0]
            .iter()
            .any(|r| r.p90_talk_seconds.is_some_and(|p| p.fract() != 0.0))
    );
}

async fn scenario_report(backend: Backend) -> (TestApp, Report) {
    let app = TestApp::spawn(backend).await;
    post_scenario(&app).await;
    let r = report::build(app.store(), scenario_range(), None)
        .await
        .unwrap_or_else(|e| panic!("report: {e:#}"));
    (app, r)
}

fn render(r: &Report, format: ReportFormat) -> String {
    report::render(r, format).unwrap_or_else(|e| panic!("render: {e:#}"))
}

const TABLE: &str = "\
Calls from 2024-01-10 to 2024-01-11 (UTC, 2 days), all apps

day         sdkappid    calls  answered  not_answer  reject  call_busy  cancel  interrupt  answer_rate  avg_talk_s  p50_talk_s  p90_talk_s
2024-01-10  1400000001      8         3           1       1          1       1          0        37.5%       155.0       125.0       265.0
2024-01-11  1400000001      3         1           0       0          0       0          1        33.3%       450.0       450.0       570.0
2024-01-11  1400000002      1         0           0       1          0       0          0         0.0%           -           -           -
----------  ----------  -----  --------  ----------  ------  ---------  ------  ---------  -----------  ----------  ----------  ----------
total       all            12         4           1       2          1       1          1        33.3%       273.0       300.0       480.0
";

const JSON: &str = r#"[
  {
    "day": "2024-01-10",
    "sdkappid": 1400000001,
    "calls": 8,
    "answered": 3,
    "not_answer": 1,
    "reject": 1,
    "call_busy": 1,
    "cancel": 1,
    "interrupt": 0,
    "answer_rate": 0.375,
    "avg_talk_seconds": 155.0,
    "p50_talk_seconds": 125.0,
    "p90_talk_seconds": 265.0
  },
  {
    "day": "2024-01-11",
    "sdkappid": 1400000001,
    "calls": 3,
    "answered": 1,
    "not_answer": 0,
    "reject": 0,
    "call_busy": 0,
    "cancel": 0,
    "interrupt": 1,
    "answer_rate": 0.3333333333333333,
    "avg_talk_seconds": 450.0,
    "p50_talk_seconds": 450.0,
    "p90_talk_seconds": 570.0
  },
  {
    "day": "2024-01-11",
    "sdkappid": 1400000002,
    "calls": 1,
    "answered": 0,
    "not_answer": 0,
    "reject": 1,
    "call_busy": 0,
    "cancel": 0,
    "interrupt": 0,
    "answer_rate": 0.0,
    "avg_talk_seconds": null,
    "p50_talk_seconds": null,
    "p90_talk_seconds": null
  }
]
"#;

const CSV: &str = "\
day,sdkappid,calls,answered,not_answer,reject,call_busy,cancel,interrupt,answer_rate,avg_talk_seconds,p50_talk_seconds,p90_talk_seconds
2024-01-10,1400000001,8,3,1,1,1,1,0,0.375,155,125,265
2024-01-11,1400000001,3,1,0,0,0,0,1,0.3333333333333333,450,450,570
2024-01-11,1400000002,1,0,0,1,0,0,0,0,,,
";

both_backends! {
    /// table, json and csv, exactly; the period's totals are over every call of the period.
    async fn report_text_formats_are_exact(backend: Backend) {
        let (_app, r) = scenario_report(backend).await;
        assert_eq!(render(&r, ReportFormat::Table), TABLE);
        assert_eq!(render(&r, ReportFormat::Json), JSON);
        assert_eq!(render(&r, ReportFormat::Csv), CSV);
        // 30–60 s: 40; 2–5 min: 125; 5–10 min: 300, 300 (5 min is the bucket's start);
        // 10–20 min: 600.
        assert_eq!(r.talk_histogram, vec![0, 0, 1, 0, 1, 2, 1, 0, 0, 0]);
    }
}

/// The report's period summary (totals) uses the view's definitions: for a one-day period
/// it is that day's row, to the bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_summary_matches_the_daily_view() {
    let (_db, store) = random_calls(Backend::Sqlite).await;
    let daily = store
        .daily_stats(random_calls_range(), None)
        .await
        .unwrap_or_else(|e| panic!("stats: {e}"));
    for row in &daily {
        let one = DayRange {
            since: row.day,
            until: row.day + chrono::Duration::days(1),
        };
        let r = report::build(&store, one, None)
            .await
            .unwrap_or_else(|e| panic!("report: {e:#}"));
        assert_eq!(r.totals.calls, row.calls);
        assert_eq!(r.totals.answer_rate, Some(row.answer_rate));
        assert_eq!(
            r.totals.talk.avg_seconds, row.avg_talk_seconds,
            "{}",
            row.day
        );
        assert_eq!(
            r.totals.talk.p50_seconds, row.p50_talk_seconds,
            "{}",
            row.day
        );
        assert_eq!(
            r.totals.talk.p90_seconds, row.p90_talk_seconds,
            "{}",
            row.day
        );
    }
    store.close().await;
}

/// Checks that markup is well-formed: every element closed, in order (void elements must
/// be self-closed), attributes quoted.
fn assert_well_formed(html: &str) {
    let body = html
        .strip_prefix("<!DOCTYPE html>\n")
        .unwrap_or_else(|| panic!("no doctype"));
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let close = rest
            .find('>')
            .unwrap_or_else(|| panic!("unclosed tag near {rest:.40}"));
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> without an opening tag"));
            assert_eq!(top, name, "</{name}> closes <{top}>");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default().to_owned();
            if name == "style" {
                // CSS may contain '>': skip to the end of the element.
                let end = rest
                    .find("</style>")
                    .unwrap_or_else(|| panic!("unclosed <style>"));
                rest = &rest[end + "</style>".len()..];
                continue;
            }
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

both_backends! {
    /// The HTML page: well-formed, self-contained, three charts (each drawn for a wide and a
    /// narrow screen), and the headline numbers.
    async fn report_html_is_self_contained(backend: Backend) {
        let (_app, r) = scenario_report(backend).await;
        let html = render(&r, ReportFormat::Html);
        assert_well_formed(&html);
        assert_eq!(html.matches("<svg class=\"wide\" ").count(), 3, "three wide charts");
        assert_eq!(html.matches("<svg class=\"narrow\" ").count(), 3, "three narrow charts");
        for forbidden in ["<script", "http://", "https://", "url(", "@import", " src=", "<link"] {
            assert!(!html.contains(forbidden), "the page must not contain {forbidden:?}");
        }
        for text in [
            "<title>Call report: 2024-01-10 to 2024-01-11</title>",
            "Calls per day, by result",
            "Answer rate per day",
            "How long calls lasted",
            "Day (UTC)",
            "Talk time (from answer to hang-up)",
            "</span>Answered</li>", "</span>Rejected</li>", "</span>Other</li>",
            "<div class=\"value\">12</div>",
            "<div class=\"value\">33.3%</div>",
            "4 of 12 calls answered",
            "<div class=\"value\">4 min 33 s</div>",
            "median 5 min 00 s",
            "<title>2024-01-10: 3 answered</title>",
            "<td>2024-01-10</td><td>1400000001</td><td>8</td><td>3</td>",
            "<tr class=\"total\"><td>Total</td><td>all</td><td>12</td><td>4</td>",
        ] {
            assert!(html.contains(text), "the page should contain {text:?}");
        }
    }
}

both_backends! {
    /// An empty period is a sensible report in every format, not an error.
    async fn empty_period_reports_no_calls(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let range = DayRange { since: day("2024-01-01"), until: day("2024-01-08") };
        let r = report::build(app.store(), range, None).await.unwrap_or_else(|e| panic!("{e:#}"));
        let table = render(&r, ReportFormat::Table);
        assert!(table.contains("(no calls in this period)"), "{table}");
        // The day column is as wide as "total"; every count 0, every rate and time "-".
        let sp = |n: usize| " ".repeat(n);
        let totals = format!(
            "total{}all{}0{}0{}0{}0{}0{}0{}0{}-{}-{}-{}-\n",
            sp(2), sp(11), sp(9), sp(11), sp(7), sp(10), sp(7), sp(10), sp(12), sp(11), sp(11), sp(11)
        );
        assert!(table.ends_with(&totals), "{table}");
        assert_eq!(render(&r, ReportFormat::Json), "[]\n");
        assert_eq!(render(&r, ReportFormat::Csv), format!("{}\n", report::COLUMNS.join(",")));
        let html = render(&r, ReportFormat::Html);
        assert_well_formed(&html);
        assert!(html.contains("No calls in this period"));
    }
}

fn run_callhook(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(args)
        .env_remove("CALLHOOK_DATABASE_URL")
        .env_remove("CALLHOOK_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running callhook: {e}"))
}

both_backends! {
    /// The real binary prints the same JSON as the library; bad input is one line on stderr.
    async fn report_command_prints_json(backend: Backend) {
        let (app, _) = scenario_report(backend).await;
        let url = app.db.url.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_callhook(&["report", "--database-url", &url, "--since", "2024-01-10", "--until", "2024-01-12", "--format", "json"])
        }).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), JSON);

        let url = app.db.url.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_callhook(&["report", "--database-url", &url, "--since", "2024-02-30"])
        }).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "callhook: error: --since \"2024-02-30\" is not a date: expected YYYY-MM-DD (a UTC day)\n"
        );
        assert!(out.stdout.is_empty());
    }
}

/// A report on an SQLite file that does not exist says so, and creates nothing.
#[test]
fn report_on_a_missing_sqlite_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nothing.db");
    let url = format!("sqlite://{}", path.display());
    let out = run_callhook(&["report", "--database-url", &url]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!path.exists());
}

/// Splits the book's SQL cookbook (docs/src/sql-cookbook.md) into its SQL blocks: (backends
/// it is for, SQL). A block that starts with `-- PostgreSQL` or `-- SQLite` is for that
/// backend only.
fn cookbook() -> Vec<(Option<Backend>, String)> {
    let section = include_str!("../../docs/src/sql-cookbook.md");
    assert!(
        section.starts_with("# SQL cookbook"),
        "docs/src/sql-cookbook.md is the SQL cookbook"
    );
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| {
            let sql = block
                .split("```")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let only = if sql.starts_with("-- PostgreSQL") {
                Some(Backend::Postgres)
            } else if sql.starts_with("-- SQLite") {
                Some(Backend::Sqlite)
            } else {
                None
            };
            (only, sql)
        })
        .collect()
}

both_backends! {
    /// Every recipe of the book's SQL cookbook runs as written on its backend(s).
    async fn book_cookbook_runs_as_written(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        post_scenario(&app).await;
        let recipes = cookbook();
        assert!(recipes.len() >= 6, "the cookbook has its recipes");
        let mut ran = 0;
        for (only, sql) in recipes {
            if only.is_some_and(|b| b != backend) {
                continue;
            }
            let rows = match app.store() {
                Store::Postgres(s) => sqlx::query(&sql).fetch_all(s.pool()).await.map(|r| r.len()),
                Store::Sqlite(s) => sqlx::query(&sql).fetch_all(s.pool()).await.map(|r| r.len()),
            };
            let rows = rows.unwrap_or_else(|e| panic!("{backend:?}: {e}\n{sql}"));
            // Recipes without a time window see the scenario.
            if !sql.contains("now") {
                assert!(rows > 0, "{backend:?}: no rows from\n{sql}");
            }
            ran += 1;
        }
        assert!(ran >= 5);
    }
}
