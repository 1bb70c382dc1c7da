//! The room check (src/room_check.rs) through the real endpoints, on both backends: TRTC
//! room, media and recording callbacks with and without a call of their room, the gauges
//! a check sets, and a late call callback that clears its room's callbacks at the next
//! check.

use std::time::Duration;

use serde_json::{Value, json};

use callhook::config::AppSettings;
use callhook::room_check;
use callhook::store::RoomCount;

use crate::both_backends;
use crate::helpers::*;

/// A TRTC callback of group `group`, type `kind`, in `room` (none: no `RoomId`), at
/// `at_ms`.
fn trtc(group: i64, kind: i64, room: Option<&str>, at_ms: i64) -> Value {
    let mut info = json!({"EventTs": at_ms / 1000, "EventMsTs": at_ms, "UserId": "user_1"});
    if let Some(r) = room {
        info["RoomId"] = json!(r);
    }
    if group == 3 {
        info["TaskId"] = json!(format!("task-{}", room.unwrap_or("none")));
        info["Payload"] = json!({"Status": 0});
    }
    json!({"EventGroupId": group, "EventType": kind, "CallbackTs": at_ms + 40, "EventInfo": info})
}

async fn post_trtc(app: &TestApp, sdkappid: i64, body: &Value) {
    let resp = app
        .client
        .post(app.url("/trtc"))
        .header("Content-Type", "application/json")
        .header("SdkAppId", sdkappid.to_string())
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /trtc: {e}"));
    let (status, answer) = parse(resp).await;
    assert_eq!(status, 200, "{answer}");
}

/// The caller's `normal_end` status callback of `call_id` in `room`, from `start` to `end`
/// (Unix seconds).
async fn post_call(app: &TestApp, sdkappid: i64, call_id: &str, room: &str, start: i64, end: i64) {
    let mut body = status_body(call_id, "alice", "caller", "normal_end");
    body["RoomId"] = json!(room);
    body["StartCallTs"] = json!(start);
    body["AcceptTs"] = json!(start + 3);
    body["EndTs"] = json!(end);
    body["EventTime"] = json!(end + 1);
    let (status, answer) = app
        .post(&status_query(sdkappid, "call_end"), body.to_string())
        .await;
    assert_eq!(
        (status, answer["ErrorCode"].as_i64()),
        (200, Some(0)),
        "{answer}"
    );
}

/// The value of the sample `name{sdkappid="…",family="…"}` on `/metrics`, if there is one.
async fn gauge(app: &TestApp, name: &str, sdkappid: i64, family: &str) -> Option<f64> {
    let (_, text) = app.get("/metrics").await;
    let prefix = format!("{name}{{sdkappid=\"{sdkappid}\",family=\"{family}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// `(checked, without a known call)` of each family, as the gauges say.
async fn gauges(app: &TestApp, sdkappid: i64) -> Vec<(&'static str, f64, f64)> {
    let mut out = Vec::new();
    for family in room_check::FAMILIES {
        let checked = gauge(app, "callhook_room_callbacks_checked", sdkappid, family).await;
        let without = gauge(
            app,
            "callhook_room_callbacks_without_call",
            sdkappid,
            family,
        )
        .await;
        out.push((family, checked.unwrap_or(-1.0), without.unwrap_or(-1.0)));
    }
    out
}

both_backends! {
    /// A room callback counts as without a known call when no call callback of its app
    /// names its room for a call whose span comes within the margin of it: another room,
    /// the same room an hour before the call or long after it, the same room in another
    /// app. A call callback that arrives late clears its room's callbacks at the next check.
    async fn room_callbacks_without_a_known_call_are_counted(backend: Backend) {
        // The recorder is global to the test process: an app of this test's own, per
        // backend, keeps the gauges apart from every other test's.
        let app_id: i64 = match backend {
            Backend::Postgres => 1_400_000_781,
            Backend::Sqlite => 1_400_000_782,
        };
        let app = TestApp::spawn_with(backend, |s| {
            s.apps.insert(app_id, AppSettings::new(app_id));
        })
        .await;
        // The task's first check, at start: nothing judged yet, every gauge exported as 0.
        // (Its next check is minutes away: the checks below are this test's alone.)
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while gauges(&app, app_id).await.iter().any(|&(_, c, w)| c < 0.0 || w < 0.0) {
            assert!(std::time::Instant::now() < deadline, "no first check: {:?}", gauges(&app, app_id).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            gauges(&app, app_id).await,
            vec![("room", 0.0, 0.0), ("media", 0.0, 0.0), ("recording", 0.0, 0.0)]
        );

        // A call 20 minutes ago, from t to t + 60 s, in room r-known.
        let t = callhook::now_millis() / 1000 - 1200;
        post_call(&app, app_id, "c-known", "r-known", t, t + 60).await;
        let ms = |s: i64| s * 1000;
        for body in [
            trtc(1, 101, Some("r-known"), ms(t - 5)),        // created just before: known
            trtc(1, 103, Some("r-known"), ms(t + 1)),        // entered: known
            trtc(2, 203, Some("r-known"), ms(t + 4)),        // audio on: known
            trtc(3, 301, Some("r-known"), ms(t + 2)),        // recorder started: known
            trtc(1, 104, Some("r-known"), ms(t + 60 + 300)), // 5 min after the end: known
            trtc(2, 201, Some("r-known"), ms(t + 60 + 660)), // 11 min after: without
            trtc(1, 103, Some("r-known"), ms(t - 3600)),     // an hour before: without
            trtc(1, 103, Some("r-lost"), ms(t)),             // no call: without
            trtc(2, 201, Some("r-lost"), ms(t + 10)),        // no call: without
            trtc(1, 103, Some("r-other-app"), ms(t)),        // the call is another app's
            trtc(1, 103, Some("r-late"), ms(t)),             // its call arrives later
            trtc(1, 103, None, ms(t)),                       // no room: not judged
        ] {
            post_trtc(&app, app_id, &body).await;
        }
        post_call(&app, APP, "c-other", "r-other-app", t, t + 60).await;

        // A check 31 minutes from now judges the hour of arrivals that ended a minute ago.
        let apps: Vec<i64> = app.state.settings.apps.keys().copied().collect();
        let later = callhook::now_millis() + 31 * 60 * 1000;
        let counts = room_check::run_once(app.store(), &apps, later)
            .await
            .unwrap_or_else(|e| panic!("check: {e:#}"));
        let ours: Vec<RoomCount> = counts.into_iter().filter(|c| c.sdkappid == app_id).collect();
        let expected = |room_without: i64| {
            vec![
                RoomCount { sdkappid: app_id, family: "media".into(), checked: 3, without_call: 2 },
                RoomCount { sdkappid: app_id, family: "recording".into(), checked: 1, without_call: 0 },
                RoomCount { sdkappid: app_id, family: "room".into(), checked: 7, without_call: room_without },
            ]
        };
        assert_eq!(ours, expected(4));
        assert_eq!(
            gauges(&app, app_id).await,
            vec![("room", 7.0, 4.0), ("media", 3.0, 2.0), ("recording", 1.0, 0.0)]
        );

        // r-late's call callback arrives; the next check judges the same hour again.
        post_call(&app, app_id, "c-late", "r-late", t - 30, t + 30).await;
        let counts = room_check::run_once(app.store(), &apps, later + 1000)
            .await
            .unwrap_or_else(|e| panic!("check: {e:#}"));
        let ours: Vec<RoomCount> = counts.into_iter().filter(|c| c.sdkappid == app_id).collect();
        assert_eq!(ours, expected(3));
        assert_eq!(
            gauges(&app, app_id).await,
            vec![("room", 7.0, 3.0), ("media", 3.0, 2.0), ("recording", 1.0, 0.0)]
        );

        // Two hours on, these callbacks have left the judged hour.
        room_check::run_once(app.store(), &apps, later + 2 * 3_600_000)
            .await
            .unwrap_or_else(|e| panic!("check: {e:#}"));
        assert_eq!(
            gauges(&app, app_id).await,
            vec![("room", 0.0, 0.0), ("media", 0.0, 0.0), ("recording", 0.0, 0.0)]
        );
        app.stop().await;
    }
}
