//! The callback endpoint (status family): storage field by field, deduplication, every
//! rejection class, concurrency and restarts — on both backends.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::*;

/// Sends raw bytes and returns the raw HTTP answer.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(request)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(raw: &str) -> Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("answer body is not JSON ({e}): {raw}"))
}

both_backends! {
    /// The request exactly as Tencent's documentation shows it (no Content-Type header),
    /// over a raw socket, stored field by field.
    async fn documented_example_is_stored_field_by_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let request = format!(
            "POST /?sdkappid={APP}&command=call_end&contenttype=json&clientip=127.0.0.1&optplatform=iOS HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{DOC_BODY}",
            DOC_BODY.len()
        );
        let before = callhook::now_millis();
        let raw = raw_http(app.addr, request.as_bytes()).await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert_eq!(body_of(&raw), json!({"ErrorCode": 0, "ErrorMessage": "Success"}));

        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_documented_example(r);
        assert_eq!(r.deliveries, 1);
        assert!(r.received_at >= before - 1 && r.received_at <= callhook::now_millis() + 1);
        assert_eq!(r.received_at, r.last_delivery_at);
    }
}

both_backends! {
    /// Each of the six results, in the wire spelling and the docs' capitalised one.
    async fn every_call_result_is_normalised(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let results = [
            ("not_answer", "not_answer"), ("Not_answer", "not_answer"), ("reject", "reject"),
            ("Reject", "reject"), ("call_busy", "call_busy"), ("CallBusy", "call_busy"),
            ("cancel", "cancel"), ("Cancel", "cancel"), ("normal_end", "normal_end"),
            ("NormalEnd", "normal_end"), ("interrupt", "interrupt"), ("Interrupt", "interrupt"),
        ];
        for (i, (sent, _)) in results.iter().enumerate() {
            let mut body = status_body(&format!("call-{i}"), "bob", "Callee", sent);
            body["MediaType"] = json!("Audio");
            body["CallType"] = json!("Group");
            let (status, answer) = app.post_status("call_end", &body).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{sent}: {answer}");
        }
        let rows = app.events().await;
        assert_eq!(rows.len(), results.len());
        for (row, (sent, want)) in rows.iter().zip(results) {
            assert_eq!(row.call_result.as_deref(), Some(want), "sent {sent}");
            assert_eq!(row.role.as_deref(), Some("callee"));
            assert_eq!(row.media_type.as_deref(), Some("audio"));
            assert_eq!(row.call_type.as_deref(), Some("group"));
        }
    }
}

both_backends! {
    /// The six result words are also commands; with an empty CallResult the command is the
    /// result. Every status command is accepted.
    async fn status_commands_are_accepted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        for (i, command) in callhook::protocol::STATUS_COMMANDS.iter().enumerate() {
            let body = status_body(&format!("c{i}"), "u", "caller", "");
            let (status, answer) = app.post_status(&command.to_uppercase(), &body).await;
            assert_eq!(status, 200, "{command}: {answer}");
        }
        let rows = app.events().await;
        let results: Vec<Option<&str>> = rows.iter().map(|r| r.call_result.as_deref()).collect();
        assert_eq!(
            results,
            vec![None, Some("not_answer"), Some("reject"), Some("call_busy"), Some("cancel"), Some("normal_end"), Some("interrupt")]
        );
        assert_eq!(rows[0].command, "CALL_END", "command is stored as received");
    }
}

both_backends! {
    /// A retry is answered 0, stores nothing new and is counted; caller and callee, or two
    /// results, are different events.
    async fn retries_are_counted_not_stored(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let caller = status_body("call-1", "alice", "caller", "normal_end");
        let callee = status_body("call-1", "bob", "callee", "normal_end");
        for _ in 0..3 {
            let (status, answer) = app.post_status("call_end", &caller).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)));
        }
        app.post_status("call_end", &callee).await;
        // The same participant with another result is another event.
        app.post_status("call_end", &status_body("call-1", "bob", "callee", "reject")).await;
        // A retry that arrives pretty-printed, its keys in another order, is the same
        // delivery (the content is compared in canonical form).
        let mut members: Vec<(String, Value)> = caller.as_object().cloned().unwrap_or_default().into_iter().collect();
        members.reverse();
        let reordered = format!(
            "{{\n{}\n}}",
            members.iter().map(|(k, v)| format!("    {}: {}", Value::from(k.as_str()), v)).collect::<Vec<_>>().join(",\n")
        );
        assert_ne!(reordered, caller.to_string());
        let (status, answer) = app.post(&status_query(APP, "normal_end"), reordered).await;
        assert_eq!(status, 200);
        assert_eq!(answer["ErrorMessage"], "Success (duplicate delivery, already stored)");
        // The same participant and times with any other content is another delivery, kept.
        let mut other = caller.clone();
        other["EndTs"] = json!(1_704_856_886);
        let (_, answer) = app.post(&status_query(APP, "normal_end"), other.to_string()).await;
        assert_eq!(answer["ErrorMessage"], "Success");

        let rows = app.events().await;
        let summary: Vec<(Option<&str>, Option<&str>, i64)> =
            rows.iter().map(|r| (r.user_id.as_deref(), r.call_result.as_deref(), r.deliveries)).collect();
        assert_eq!(
            summary,
            vec![
                (Some("alice"), Some("normal_end"), 4),
                (Some("bob"), Some("normal_end"), 1),
                (Some("bob"), Some("reject"), 1),
                (Some("alice"), Some("normal_end"), 1),
            ]
        );
        assert!(rows[0].last_delivery_at >= rows[0].received_at);
    }
}

both_backends! {
    /// Unknown enum values and unknown fields are kept, numbers may arrive as strings, and
    /// 0 timestamps are NULL.
    async fn unknown_values_and_lenient_types_are_kept(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let body = json!({
            "UserId": 10086, "CallId": "c-x", "Role": "Observer", "CallResult": "TeleportedAway",
            "MediaType": "Hologram", "CallType": "Conference", "TotalNum": "3", "RoomId": 42,
            "EventTime": "1704856890", "StartCallTs": 0, "AcceptTs": "", "EndTs": null,
            "Brand": {"new": ["field", 1]}
        });
        let text = body.to_string().replacen('{', "{\"Count\": 12345678901234567890123, ", 1);
        let (status, answer) = app.post(&status_query(APP, "call_end"), text).await;
        assert_eq!(status, 200, "{answer}");
        let rows = app.events().await;
        let r = &rows[0];
        assert_eq!(r.user_id.as_deref(), Some("10086"));
        assert_eq!(r.role.as_deref(), Some("observer"));
        assert_eq!(r.call_result.as_deref(), Some("teleported_away"));
        assert_eq!(r.media_type.as_deref(), Some("hologram"));
        assert_eq!(r.call_type.as_deref(), Some("conference"));
        assert_eq!(r.total_num, Some(3));
        assert_eq!(r.room_id.as_deref(), Some("42"));
        assert_eq!(r.event_time, Some(1_704_856_890_000));
        assert_eq!((r.start_call_ts, r.accept_ts, r.end_ts), (None, None, None));
        assert_eq!(r.payload["Brand"], json!({"new": ["field", 1]}));
        let text = r.payload_text.clone().unwrap_or_default();
        assert!(text.contains("12345678901234567890123"), "big numbers keep every digit: {text}");
        assert_eq!(r.payload["UserId"], 10086);
    }
}

/// One malformed delivery: what is sent, and what must come back.
struct Bad {
    name: &'static str,
    query: String,
    body: String,
    status: u16,
    code: i64,
    kept: bool,
}

both_backends! {
    /// Every rejection class answers the envelope with the right status and code, adds no
    /// call_events row, and is kept in rejected_deliveries exactly when the app is ours.
    async fn every_rejection_class(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| {
            s.body_limit = 2048;
            if let Some(a) = s.apps.get_mut(&APP) {
                a.commands = Some(["call_end".to_owned(), "caller_start_call".to_owned()].into());
            }
        }).await;
        let ok = status_body("c", "u", "caller", "normal_end").to_string();
        let q = status_query(APP, "call_end");
        let cases = vec![
            Bad { name: "no sdkappid", query: "command=call_end".into(), body: ok.clone(), status: 400, code: 70001, kept: false },
            Bad { name: "sdkappid not a number", query: "sdkappid=abc&command=call_end".into(), body: ok.clone(), status: 400, code: 70001, kept: false },
            Bad { name: "unknown sdkappid", query: status_query(1_400_009_999, "call_end"), body: ok.clone(), status: 403, code: 71101, kept: false },
            // The app lists its commands: nothing else can be its callback.
            Bad { name: "no command", query: format!("sdkappid={APP}"), body: ok.clone(), status: 400, code: 70001, kept: true },
            Bad { name: "command not allowed", query: status_query(APP, "reject"), body: ok.clone(), status: 400, code: 70001, kept: true },
            Bad { name: "unknown command", query: status_query(APP, "dance"), body: ok.clone(), status: 400, code: 70001, kept: true },
            Bad { name: "not JSON", query: q.clone(), body: "{\"UserId\": ".into(), status: 400, code: 71001, kept: true },
            Bad { name: "empty body", query: q.clone(), body: String::new(), status: 400, code: 71001, kept: true },
            Bad { name: "array body", query: q.clone(), body: "[1,2]".into(), status: 400, code: 71001, kept: true },
            Bad { name: "two documents", query: q.clone(), body: "{} {}".into(), status: 400, code: 71001, kept: true },
            Bad { name: "too large", query: q.clone(), body: format!("{{\"CallId\":\"c\",\"UserId\":\"u\",\"Pad\":\"{}\"}}", "x".repeat(3000)), status: 413, code: 71203, kept: true },
        ];
        for case in &cases {
            let (status, answer) = app.post(&case.query, case.body.clone()).await;
            assert_eq!(status, case.status, "{}: {answer}", case.name);
            assert_eq!(answer["ErrorCode"].as_i64(), Some(case.code), "{}: {answer}", case.name);
            assert!(answer["ErrorMessage"].as_str().is_some_and(|m| !m.is_empty()), "{}", case.name);
        }
        assert!(app.events().await.is_empty(), "no rejected delivery adds a call_events row");
        // The sender retries a refusal: each retry is counted on the refused delivery's row.
        for case in cases.iter().filter(|c| c.kept) {
            for retry in 0..2 {
                // Chat-style signing changes with every attempt; it does not make another row.
                let query = format!("{}&RequestTime={retry}&Sign=s{retry}", case.query);
                app.post(&query, case.body.clone()).await;
            }
        }
        let kept = app.rejected().await;
        let expected: Vec<&Bad> = cases.iter().filter(|c| c.kept).collect();
        assert_eq!(kept.len(), expected.len(), "{kept:#?}");
        assert!(kept.iter().all(|r| r.deliveries == 3), "{kept:#?}");
        assert!(kept.iter().all(|r| r.last_delivery_at >= r.received_at));
        for (row, case) in kept.iter().zip(expected) {
            assert_eq!(row.sdkappid, APP, "{}", case.name);
            assert_eq!(row.error_code, case.code, "{}", case.name);
            assert_eq!(row.query, case.query, "{}", case.name);
            assert!(!row.reason.is_empty());
            assert_eq!(row.remote_addr.as_deref(), Some("127.0.0.1"));
            if case.status == 413 {
                assert_eq!(row.body, "", "an oversized body is not read");
            } else {
                assert_eq!(row.body, case.body, "{}", case.name);
            }
        }
    }
}

/// A delivery Tencent could have sent, with something callhook cannot read: what is sent,
/// and the note its row must carry.
struct Odd {
    name: &'static str,
    query: String,
    body: String,
    note: &'static str,
}

both_backends! {
    /// What is not an unknown app, failed authentication, a command outside an explicit
    /// list or a body that is not a JSON object is stored and answered 0: a field that
    /// cannot be read is NULL, and the row's notes say which, what was expected and what
    /// came.
    async fn unreadable_fields_are_stored_with_notes(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let q = status_query(APP, "call_end");
        let cases = vec![
            Odd { name: "no command", query: format!("sdkappid={APP}&contenttype=json"), body: json!({"CallId": "c1", "UserId": "u"}).to_string(), note: "query: command (or CallbackCommand) is missing" },
            Odd { name: "contenttype", query: format!("sdkappid={APP}&command=call_end&contenttype=xml"), body: json!({"CallId": "c2", "UserId": "u"}).to_string(), note: "query: contenttype is \"xml\", not json" },
            Odd { name: "missing CallId", query: q.clone(), body: json!({"UserId": "u3"}).to_string(), note: "CallId: missing" },
            Odd { name: "missing UserId", query: q.clone(), body: json!({"CallId": "c4"}).to_string(), note: "UserId: missing" },
            Odd { name: "ill-typed EventTime", query: q.clone(), body: json!({"CallId": "c5", "UserId": "u", "EventTime": "yesterday"}).to_string(), note: "EventTime: expected an integer, found the string \"yesterday\"" },
            Odd { name: "ill-typed CallId", query: q.clone(), body: json!({"CallId": {"a": 1}, "UserId": "u6"}).to_string(), note: "CallId: expected a string or a number, found an object" },
            Odd { name: "NUL escape", query: q.clone(), body: "{\"CallId\":\"c7\",\"UserId\":\"u\",\"X\":\"a\\u0000b\"}".into(), note: "payload: it holds a \\u0000 escape, which PostgreSQL's JSON functions cannot read (stored as received)" },
        ];
        for case in &cases {
            let (status, answer) = app.post(&case.query, case.body.clone()).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{}: {answer}", case.name);
        }
        let rows = app.events().await;
        assert_eq!(rows.len(), cases.len());
        for (row, case) in rows.iter().zip(&cases) {
            assert_eq!(row.notes.as_deref(), Some(case.note), "{}", case.name);
            assert_eq!(row.payload_text.as_deref(), Some(case.body.as_str()), "{}: the body as received", case.name);
        }
        assert_eq!(rows[0].family, "other", "a delivery without a command is of no known family");
        assert_eq!((rows[2].call_id.as_deref(), rows[2].user_id.as_deref()), (None, Some("u3")));
        assert_eq!((rows[4].call_id.as_deref(), rows[4].event_time), (Some("c5"), None));
        assert_eq!((rows[5].call_id.as_deref(), rows[5].user_id.as_deref()), (None, Some("u6")));
        assert!(app.rejected().await.is_empty());
        let (_, metrics) = app.get("/metrics").await;
        assert!(
            metrics.lines().any(|l| l.starts_with("callhook_noted_deliveries_total{family=\"status\"}")),
            "{metrics}"
        );
        // `callhook report` tells how many, by the field noted first.
        let today = chrono::Utc::now().date_naive();
        let range = callhook::store::DayRange { since: today, until: today + chrono::Duration::days(1) };
        let report = callhook::report::build(app.store(), range, None).await.unwrap_or_else(|e| panic!("{e:#}"));
        let text = callhook::report::render(&report, callhook::cli::ReportFormat::Table).unwrap_or_default();
        assert!(text.contains("Stored with notes: 7 events ("), "{text}");
        let mut fields: Vec<(String, i64)> = report.noted.clone();
        fields.sort();
        assert_eq!(
            fields,
            vec![("CallId".into(), 2), ("EventTime".into(), 1), ("UserId".into(), 1), ("payload".into(), 1), ("query".into(), 2)]
        );
    }
}

both_backends! {
    /// 404, 405 and panics answer the envelope too.
    async fn other_routes_answer_the_envelope(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let resp = app.client.get(app.url("/nope")).send().await.unwrap_or_else(|e| panic!("{e}"));
        let (status, answer) = parse(resp).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (404, Some(71201)));
        let resp = app.client.get(app.url(&format!("/?{}", status_query(APP, "call_end")))).send().await.unwrap_or_else(|e| panic!("{e}"));
        let (status, answer) = parse(resp).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (405, Some(71202)));
        let resp = app.client.put(app.url("/healthz")).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse(resp).await.0, 405);

        use tower::ServiceExt;
        let router = callhook::http::router_with(
            std::sync::Arc::clone(&app.state),
            axum::Router::new().route("/boom", axum::routing::get(|| async {
                let v: Vec<u8> = Vec::new();
                // An index out of bounds: a bug, caught.
                #[allow(clippy::indexing_slicing)]
                let _ = v[usize::from(v.is_empty())];
                "unreachable"
            })),
        );
        let req = axum::http::Request::builder().uri("/boom").body(axum::body::Body::empty()).unwrap_or_default();
        let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
        assert_eq!(resp.status(), 500);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap_or_default();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(answer["ErrorCode"], 71500);
    }
}

both_backends! {
    /// A request that does not finish in time is answered 503 with the timeout code, and
    /// nothing is stored.
    async fn slow_requests_time_out_with_the_envelope(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| s.request_timeout = Duration::from_millis(300)).await;
        let head = format!(
            "POST /?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"CallId\":",
            status_query(APP, "call_end")
        );
        let raw = raw_http(app.addr, head.as_bytes()).await;
        assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
        assert_eq!(body_of(&raw)["ErrorCode"], 71302);
        assert!(app.events().await.is_empty());
    }
}

both_backends! {
    /// 2,000 concurrent deliveries of 1,800 events (10% repeats) leave exactly one row per
    /// event with the right delivery counts, and every one was acknowledged.
    async fn concurrent_deliveries_with_repeats(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let events = 1800usize;
        let mut deliveries: Vec<usize> = (0..events).collect();
        deliveries.extend((0..events).step_by(9)); // 200 repeats
        // Interleave repeats with originals so both race.
        deliveries.sort_by_key(|i| (i * 7919) % 2003);
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for i in deliveries {
            let client = app.client.clone();
            let url = app.url(&format!("/?{}", status_query(APP, "call_end")));
            let permit = std::sync::Arc::clone(&sem).acquire_owned().await;
            tasks.spawn(async move {
                let _permit = permit;
                let body = status_body(&format!("call-{i}"), &format!("user-{i}"), "caller", "normal_end");
                let resp = client.post(url).body(body.to_string()).send().await.unwrap_or_else(|e| panic!("{e}"));
                parse(resp).await
            });
        }
        let mut acknowledged = 0;
        while let Some(res) = tasks.join_next().await {
            let (status, answer) = res.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, 200, "{answer}");
            acknowledged += 1;
        }
        assert_eq!(acknowledged, 2000);
        let rows = app.events().await;
        assert_eq!(rows.len(), events);
        let total: i64 = rows.iter().map(|r| r.deliveries).sum();
        assert_eq!(total, 2000);
        for r in &rows {
            let i: usize = r.call_id.as_deref().and_then(|c| c.strip_prefix("call-")).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
            let want = if i.is_multiple_of(9) { 2 } else { 1 };
            assert_eq!(r.deliveries, want, "call-{i}");
        }
    }
}

both_backends! {
    /// Rows and deduplication survive a restart of the service.
    async fn restart_keeps_rows_and_dedupe(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let body = status_body("call-r", "alice", "caller", "cancel");
        app.post_status("cancel", &body).await;
        let db = app.stop().await;
        let app = TestApp::spawn_on(db, |_| {}).await;
        let (status, answer) = app.post_status("cancel", &body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["ErrorMessage"], "Success (duplicate delivery, already stored)");
        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].deliveries, 2);
    }
}
