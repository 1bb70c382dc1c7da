//! The daily rollups, as a property: after any sequence of deliveries — every call-callback
//! family, retried, late, out of order, moving calls between days and outcomes — the
//! rollups equal the statistics computed from scratch from the calls' fold (`call_rollup`).
//! Deliveries go through the real router while the service's rollup task runs; the exact
//! read (`period_stats`) is checked mid-stream, and `call_stats_daily` (the view over the
//! rollups) once the queue is folded.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use callhook::store::{DailyStats, DayRange, Store, TalkTimes};

use crate::both_backends;
use crate::helpers::*;

/// A small deterministic generator (the seed prints with a failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// 2024-05-01T00:00:00Z.
const T0: i64 = 1_714_521_600;

fn range() -> DayRange {
    let day =
        |d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap_or_else(|e| panic!("{e}"));
    DayRange {
        since: day("2024-04-20"),
        until: day("2024-05-10"),
    }
}

/// A start time (Unix seconds): one of four days, often within a minute of midnight, so
/// that a later delivery's earlier start moves the call to another day.
fn start_time(rng: &mut Rng) -> i64 {
    let day = T0 + (rng.below(4) - 1) * 86_400;
    if rng.below(2) == 0 {
        day + 86_400 - 60 + rng.below(120)
    } else {
        day + rng.below(86_400)
    }
}

/// One delivery: its query and body.
fn delivery(rng: &mut Rng, seed: u64) -> (String, Value) {
    let call = format!("k{seed:x}-{}", rng.below(10));
    let (app, token) = if rng.below(5) == 0 {
        (TOKEN_APP, true)
    } else {
        (APP, false)
    };
    let start = start_time(rng);
    let accept = start + rng.below(30);
    // Talk times from 0 to an hour and a half; often one of a few pairs a second apart,
    // which share a bucket above two minutes (a call refolded from 300 s to 301 s changes
    // its bucket's sum, not its count).
    let end = accept
        + match rng.below(3) {
            0 => rng.below(5400),
            _ => [5, 6, 300, 301, 1800, 1801][rng.below(6) as usize],
        };
    let user = rng.pick(&["ann", "bo", "cy"]);
    let (query, body) = match rng.below(6) {
        0..=1 => {
            let result = rng.pick(&[
                "normal_end",
                "reject",
                "not_answer",
                "call_busy",
                "cancel",
                "interrupt",
                "offline",
                "",
                "mystery",
            ]);
            let role = rng.pick(&["caller", "callee"]);
            let zero = |t: i64, keep: bool| if keep { t } else { 0 };
            let timed = rng.below(3) != 0;
            let body = json!({
                "UserId": user, "RoomId": format!("room-{call}"), "TotalNum": 2,
                "MediaType": rng.pick(&["audio", "video"]), "CallType": "single",
                "CallId": call, "Role": role, "CallResult": result, "EventTime": end + 1,
                "StartCallTs": zero(start, timed), "AcceptTs": zero(accept, timed && rng.below(4) != 0),
                "EndTs": zero(end, timed),
            });
            (status_query(app, "call_end"), body)
        }
        2 => {
            let command = rng.pick(&[
                "caller_start_call",
                "callee_receive_call",
                "callee_accept_call",
                "caller_call_end",
                "callee_reject_call",
            ]);
            let (role, action) = command.split_once('_').unwrap_or(("", command));
            let at = match action {
                "start_call" | "receive_call" => start,
                "accept_call" => accept,
                _ => end,
            };
            let body = json!({
                "UserId": user, "RoomId": format!("room-{call}"), "TotalNum": 2,
                "MediaType": "audio", "CallType": "single", "CallId": call, "Role": role,
                "CallResult": "", "Event": action, "EventTime": at,
                "StartCallTs": 0, "AcceptTs": 0, "EndTs": 0,
            });
            (status_query(app, command), body)
        }
        3 => {
            let result = rng.pick(&[
                "NormalEnd",
                "Reject",
                "Cancel",
                "Busy",
                "NoAnswer",
                "Interrupt",
                "Offline",
                "Weird",
            ]);
            let accepted = if result == "NormalEnd" || rng.below(3) == 0 {
                accept
            } else {
                0
            };
            let body = json!({
                "CallbackCommand": "Call.CallbackAfterEndCall",
                "CallRecord": {
                    "CallId": call, "Caller_Account": user, "MediaType": "Audio",
                    "CallType": "SingleCall", "StartTime": start, "AcceptTime": accepted,
                    "EndTime": end, "CallResult": result, "CalleeList_Account": [user, "dee"],
                    "RoomId": format!("r-{call}"), "RoomIdType": 2,
                },
                "EventTime": (end + 1) * 1000,
            });
            (v4_query(app, "Call.CallbackAfterEndCall"), body)
        }
        4 => {
            let (action, at) = if rng.below(2) == 0 {
                ("Answer", accept)
            } else {
                ("Hang Up", end)
            };
            let body = json!({
                "CallbackCommand": "Call.CallbackAfterMemberChanged", "CallId": call,
                "UserList": [{"User_Account": user, "Status": "Calling"}],
                "ChangedUserList": [{"User_Account": "dee", "ActionType": action}],
                "EventTime": at * 1000 + rng.below(1000),
            });
            (v4_query(app, "Call.CallbackAfterMemberChanged"), body)
        }
        _ => {
            let body = json!({
                "CallbackCommand": "Call.CallbackAfterStartCall",
                "CallInfo": {"CallId": call, "CallMediaType": "Video", "ChatGroupId": "",
                             "RoomId": format!("r-{call}"), "RoomIdType": 2},
                "UserList": [{"User_Account": user, "Status": "Calling"}],
                "EventTime": start * 1000 + rng.below(1000),
            });
            (v4_query(app, "Call.CallbackAfterStartCall"), body)
        }
    };
    let query = if token {
        format!("{query}&token={TOKEN}")
    } else {
        query
    };
    (query, body)
}

/// A day's calls: their outcomes and known talk times (ms).
type DayCalls = (Vec<Option<String>>, Vec<i64>);

/// `call_stats_daily` computed from scratch from `call_rollup`, independently of the
/// rollups' code, for a period and one app or all: counts by outcome, the mean on whole
/// milliseconds, percentiles over the talk times (each checked against the exact
/// percentile_cont, within a bucket's width); and the period's talk times.
async fn from_scratch(
    store: &Store,
    range: DayRange,
    app: Option<i64>,
) -> (Vec<DailyStats>, TalkTimes) {
    let rows = text_rows(
        store,
        "SELECT CAST(day AS TEXT), CAST(sdkappid AS TEXT), outcome, \
                                 CAST(talk_ms AS TEXT) FROM call_rollup",
    )
    .await;
    let (since, until) = (range.since.to_string(), range.until.to_string());
    let mut days: BTreeMap<(String, i64), DayCalls> = BTreeMap::new();
    for r in rows {
        let day = r[0]
            .clone()
            .unwrap_or_else(|| panic!("a call without a day: {r:?}"));
        let sdkappid: i64 = r[1]
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{r:?}"));
        if day < since || day >= until || app.is_some_and(|a| a != sdkappid) {
            continue;
        }
        let e = days.entry((day, sdkappid)).or_default();
        e.0.push(r[2].clone());
        e.1.extend(
            r[3].as_deref()
                .map(|t| t.parse::<i64>().unwrap_or_else(|e| panic!("{e}"))),
        );
    }
    let period = TalkTimes::from_times(days.values().flat_map(|d| d.1.iter().copied()));
    let stats = days
        .into_iter()
        .map(|((day, sdkappid), (outcomes, mut talk))| {
            let count =
                |o: &str| outcomes.iter().filter(|x| x.as_deref() == Some(o)).count() as i64;
            talk.sort_unstable();
            let n = talk.len() as i64;
            let sum: i64 = talk.iter().sum();
            let buckets = TalkTimes::from_times(talk.iter().copied());
            let p50 = buckets.percentile(0.5);
            let p90 = buckets.percentile(0.9);
            for (p, est) in [(0.5, p50), (0.9, p90)] {
                if let Some(est) = est {
                    let exact = percentile_cont(&talk, p);
                    assert!(
                        (est - exact).abs() <= exact.abs() / 128.0 + 0.002,
                        "{day}: p{p} estimated {est} s, exactly {exact} s"
                    );
                }
            }
            DailyStats {
                day: chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .unwrap_or_else(|e| panic!("{e}")),
                sdkappid,
                calls: outcomes.len() as i64,
                answered: count("normal_end"),
                not_answer: count("not_answer"),
                reject: count("reject"),
                call_busy: count("call_busy"),
                cancel: count("cancel"),
                interrupt: count("interrupt"),
                answer_rate: count("normal_end") as f64 / outcomes.len() as f64,
                avg_talk_seconds: (n > 0).then(|| ((2 * sum + n) / (2 * n)) as f64 / 1000.0),
                p50_talk_seconds: p50,
                p90_talk_seconds: p90,
            }
        })
        .collect();
    (stats, period)
}

/// percentile_cont over sorted milliseconds, in seconds.
fn percentile_cont(sorted: &[i64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (
        sorted[pos.floor() as usize] as f64,
        sorted[pos.ceil() as usize] as f64,
    );
    (lo + (pos - pos.floor()) * (hi - lo)) / 1000.0
}

/// Runs a statement on either backend.
async fn exec(store: &Store, sql: &str) {
    match store {
        Store::Postgres(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
        Store::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The periods checked: every day, and two days of one app (so that queued calls moving
/// in and out of the period, and other apps' calls, are applied or left out).
fn periods() -> [(DayRange, Option<i64>); 2] {
    let day =
        |d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap_or_else(|e| panic!("{e}"));
    [
        (range(), None),
        (
            DayRange {
                since: day("2024-04-30"),
                until: day("2024-05-02"),
            },
            Some(APP),
        ),
    ]
}

/// The exact read of each period equals its statistics from scratch.
async fn check(store: &Store, what: &str) {
    for (period, app) in periods() {
        let got = store
            .period_stats(period, app)
            .await
            .unwrap_or_else(|e| panic!("period_stats: {e}"));
        let (days, talk) = from_scratch(store, period, app).await;
        assert_eq!(got.days, days, "{what}, {period:?} app {app:?}");
        assert_eq!(got.talk, talk, "{what}, {period:?} app {app:?}: talk times");
    }
}

both_backends! {
    /// Random sequences of deliveries: the exact read equals the from-scratch statistics
    /// at every check, whatever the rollup task has folded; once it has folded everything,
    /// so do the view and each call's last fold.
    async fn rollups_equal_statistics_from_scratch(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let mut sent: Vec<(String, Value)> = Vec::new();
        for seed in 1..=6u64 {
            let mut rng = Rng(seed);
            for step in 1..=60 {
                let (query, body) = if !sent.is_empty() && rng.below(6) == 0 {
                    sent[rng.below(sent.len() as u64) as usize].clone()
                } else {
                    delivery(&mut rng, seed)
                };
                let (status, answer) = app.post(&query, body.to_string()).await;
                assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)),
                    "seed {seed} step {step}: {query} {body}: {answer}");
                sent.push((query, body));
                // Besides the service's own task, a small pass now and then, so that
                // calls are folded between the deliveries that change them.
                if rng.below(3) == 0 {
                    app.store().rollup_pass(rng.below(4) + 1).await
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: pass: {e}"));
                }
                if step % 10 == 0 {
                    check(app.store(), &format!("seed {seed} step {step}")).await;
                }
            }
        }
        app.store().rollup_catch_up().await.unwrap_or_else(|e| panic!("{e}"));
        let (scratch, _) = from_scratch(app.store(), range(), None).await;
        assert!(scratch.len() >= 6, "the deliveries span several days and both apps: {scratch:?}");
        assert!(scratch.iter().any(|d| d.p90_talk_seconds.is_some_and(|p| p.fract() != 0.0)));
        // Nothing queued: this is call_stats_daily, the view over the rollups, and
        // rollup_talk, as they are.
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM rollup_queue").await, 0);
        check(app.store(), "folded").await;
        // A backlog past what a read applies call by call (as after an upgrade, when the
        // whole history is queued): the read folds the period from scratch instead.
        let filler = match backend {
            Backend::Postgres => "INSERT INTO rollup_queue (sdkappid, call_id) \
                 SELECT 1, 'filler-' || g FROM generate_series(1, 20001) g",
            Backend::Sqlite => "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g \
                 WHERE n < 20001) INSERT INTO rollup_queue (sdkappid, call_id) \
                 SELECT 1, 'filler-' || n FROM g",
        };
        exec(app.store(), filler).await;
        check(app.store(), "a large backlog").await;
        let folds = |table| format!("SELECT CAST(sdkappid AS TEXT), call_id, CAST(day AS TEXT), \
                                     outcome, CAST(talk_ms AS TEXT) FROM {table} ORDER BY 1, 2");
        assert_eq!(text_rows(app.store(), &folds("rollup_calls")).await,
                   text_rows(app.store(), &folds("call_rollup")).await);
        // Days without calls leave no rows behind.
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM rollup_days WHERE calls = 0").await, 0);
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM rollup_talk WHERE calls = 0").await, 0);
    }
}
