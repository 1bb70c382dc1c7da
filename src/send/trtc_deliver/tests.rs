use std::sync::Mutex as StdMutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;

use super::*;
use crate::auth::trtc::{sign, verify};
use crate::cli::SendAuth;

/// What the test server received: path and query, headers, body.
type Seen = Arc<StdMutex<Vec<(String, HeaderMap, Bytes)>>>;
/// The answers, by request number: HTTP status and body.
type Script = Arc<Vec<(u16, &'static str)>>;

/// A server answering the n-th request with `script[n]` (the last one from then on).
async fn server(script: Vec<(u16, &'static str)>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let state = (Arc::clone(&seen), Arc::new(script));
    let app = Router::new()
        .fallback(post(
            |State((seen, script)): State<(Seen, Script)>,
             uri: Uri,
             headers: HeaderMap,
             body: Bytes| async move {
                let n = {
                    let mut seen = seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    seen.push((uri.to_string(), headers, body));
                    seen.len() - 1
                };
                let (status, body) = script[n.min(script.len() - 1)];
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body)
            },
        ))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), seen)
}

const KEY: &[u8] = b"k3y";

fn engine(base: &str, schedule: TrtcSchedule) -> TrtcEngine {
    let call = Target::new(base, Some("t0ken"), SendAuth::Token).unwrap_or_else(|e| panic!("{e}"));
    let url = default_trtc_url(base).unwrap_or_else(|e| panic!("{e}"));
    TrtcEngine::new(
        &url,
        1_400_000_001,
        call,
        4,
        Duration::from_secs(2),
        schedule,
        vec![Duration::from_millis(20); 2],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn room_delivery() -> TrtcDelivery {
    let body = "{\n\t\"EventGroupId\":\t1,\n\t\"EventType\":\t101,\n\t\"CallbackTs\":\t1764403200157,\n\t\"EventInfo\":\t{\n\t\t\"RoomId\":\t48213907,\n\t\t\"EventTs\":\t1764403200,\n\t\t\"EventMsTs\":\t1764403200120,\n\t\t\"UserId\":\t\"user_0042\"\n\t}\n}";
    TrtcDelivery {
        family: "room",
        event_type: 101,
        at: 1_764_403_200_157,
        body: body.to_owned(),
        sign: Some(sign(KEY, body.as_bytes())),
        query: None,
    }
}

const FAST: TrtcSchedule = TrtcSchedule {
    first_retry: Duration::ZERO,
    every: Duration::from_millis(30),
    until: Duration::from_secs(2),
};

#[tokio::test]
async fn signed_headers_and_retries_until_http_200() {
    let (base, seen) = server(vec![(500, "oops"), (503, ""), (200, r#"{"code":0}"#)]).await;
    let e = engine(&base, FAST);
    let d = room_delivery();
    assert!(e.deliver(&d).await);
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!(seen.len(), 3);
    for (uri, headers, body) in seen.iter() {
        assert_eq!(uri, "/trtc", "no query");
        assert_eq!(
            body.as_ref(),
            d.body.as_bytes(),
            "the bytes that were signed"
        );
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["sdkappid"], "1400000001");
        let sign = headers.get("sign").map(|v| v.as_bytes());
        assert_eq!(verify(KEY, body, sign), Ok(()));
    }
    let s = e.stats();
    assert_eq!(
        (s.acknowledged, s.dropped, s.retried, s.retry_attempts),
        (1, 0, 1, 2)
    );
}

#[tokio::test]
async fn retries_at_once_then_every_interval_until_the_limit() {
    let (base, seen) = server(vec![(500, "")]).await;
    let schedule = TrtcSchedule {
        first_retry: Duration::ZERO,
        every: Duration::from_millis(100),
        until: Duration::from_millis(350),
    };
    let e = engine(&base, schedule);
    let started = Instant::now();
    assert!(!e.deliver(&room_delivery()).await);
    let elapsed = started.elapsed();
    let attempts = seen.lock().map(|s| s.len()).unwrap_or_default();
    // 0, at once, +100, +100, +100 ms; a sixth would start after 350 ms.
    assert!((4..=5).contains(&attempts), "{attempts}");
    assert!(elapsed < Duration::from_millis(450), "{elapsed:?}");
    assert_eq!(e.stats().dropped, 1);
}

#[tokio::test]
async fn record_changed_goes_to_the_call_url_as_v4() {
    let envelope = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success"}"#;
    let (base, seen) = server(vec![(200, r#"{"ErrorCode":70005}"#), (200, envelope)]).await;
    let e = engine(&base, FAST);
    let d = TrtcDelivery {
        family: "v4",
        event_type: 301,
        at: 0,
        body: r#"{"CallId":"c","Callback":{},"CallbackCommand":"Call.CallbackAfterRecordChanged","EventTime":1}"#.to_owned(),
        sign: None,
        query: Some(super::super::generate::v4_query(
            1_400_000_001,
            crate::protocol::v4_record::RECORD_CHANGED,
            "192.0.2.7",
            "iOS",
        )),
    };
    assert!(e.deliver(&d).await, "a non-zero ErrorCode is retried");
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!(seen.len(), 2);
    let (uri, headers, _) = &seen[1];
    assert!(
        uri.starts_with("/?SdkAppid=1400000001&CallbackCommand=Call.CallbackAfterRecordChanged&"),
        "{uri}"
    );
    assert!(uri.ends_with("&token=t0ken"), "{uri}");
    assert!(headers.get("sign").is_none());
    assert!(headers.get("sdkappid").is_none());
}

#[test]
fn trtc_judges_by_http_200_alone() {
    let ok = |status, body: &str| match judge_trtc(status, body.as_bytes(), Duration::ZERO) {
        Attempt::Acknowledged { message, .. } => Some(message),
        Attempt::Failed(_) => None,
    };
    assert_eq!(
        ok(200, r#"{"code":0}"#).as_deref(),
        Some(r#"HTTP 200 {"code":0}"#)
    );
    assert!(ok(200, "").is_some_and(|m| m.contains("without")));
    assert!(ok(200, r#"{"code":1}"#).is_some_and(|m| m.contains("code 1")));
    assert!(ok(200, r#"{"ErrorCode":70005}"#).is_some());
    assert_eq!(ok(204, r#"{"code":0}"#), None);
    assert_eq!(ok(403, r#"{"code":0}"#), None);
    match judge_trtc(502, b"<html>bad gateway</html>", Duration::ZERO) {
        Attempt::Failed(why) => assert_eq!(why, r#"HTTP 502 "<html>bad gateway</html>""#),
        Attempt::Acknowledged { .. } => panic!("502 acknowledged"),
    }
}

#[test]
fn the_trtc_url_is_derived_from_the_callback_url() {
    let d = |u: &str| default_trtc_url(u).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/trtc");
    assert_eq!(d("http://127.0.0.1:8080"), "http://127.0.0.1:8080/trtc");
    assert_eq!(
        d("https://h.example/hooks/"),
        "https://h.example/hooks/trtc"
    );
    assert_eq!(
        d("https://h.example/?token=s3cret#x"),
        "https://h.example/trtc"
    );
    assert!(default_trtc_url("not a url").is_err());
    let call = Target::new("http://h/", None, SendAuth::Both).unwrap_or_else(|e| panic!("{e}"));
    let bad = TrtcEngine::new(
        "ftp://h/trtc",
        1,
        call,
        1,
        Duration::from_secs(1),
        TrtcSchedule::TENCENT,
        Vec::new(),
    );
    assert!(bad.is_err());
}

#[test]
fn tencents_schedule() {
    assert_eq!(TrtcSchedule::TENCENT.first_retry, Duration::ZERO);
    assert_eq!(TrtcSchedule::TENCENT.every, Duration::from_secs(10));
    assert_eq!(TrtcSchedule::TENCENT.until, Duration::from_secs(60));
}
