//! docs/src/forwarded-messages.md shows one message per family. Each example is marked with the
//! fixture it comes from (`<!-- message: FIXTURE QUERY -->`, QUERY being `trtc` for TRTC's
//! own callbacks, else the command of the query string), and must be exactly what callhook
//! sends for that fixture, on both backends, with `data.id` 1 and the time of receipt
//! 2024-01-10T03:21:13.000Z.

use serde_json::Value;

use super::*;
use crate::both_backends;

const FIXED_RECEIPT: i64 = 1_704_856_873_000;

/// The examples of docs/src/forwarded-messages.md: (fixture, query, message).
fn examples() -> Vec<(String, String, Value)> {
    let path = format!(
        "{}/docs/src/forwarded-messages.md",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    for part in text.split("<!-- message: ").skip(1) {
        let (marker, rest) = part.split_once(" -->").unwrap_or_default();
        let (fixture, query) = marker.split_once(' ').unwrap_or_default();
        let block = rest
            .split_once("```json\n")
            .and_then(|(_, b)| b.split_once("\n```"))
            .map(|(json, _)| json)
            .unwrap_or_else(|| panic!("no json block after the marker {marker}"));
        let message: Value =
            serde_json::from_str(block).unwrap_or_else(|e| panic!("{marker}: {e}\n{block}"));
        out.push((fixture.to_owned(), query.to_owned(), message));
    }
    out
}

/// What callhook sends for `fixture`, posted as `query` says.
async fn sent(app: &TestApp, fixture: &str, query: &str) -> Value {
    let body = std::fs::read(format!(
        "{}/tests/fixtures/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let request = if query == "trtc" {
        app.client
            .post(app.url("/trtc"))
            .header("SdkAppId", APP.to_string())
    } else if query.starts_with("Call.") {
        app.client
            .post(app.url(&format!("/?{}", v4_query(APP, query))))
    } else {
        app.client
            .post(app.url(&format!("/?{}", status_query(APP, query))))
    };
    let status = request
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{fixture}");
    let id = scalar(app.store(), "SELECT max(id) FROM call_events").await;
    let mut events = app
        .store()
        .forwarded_events(&[id])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut event = events.pop().unwrap_or_else(|| panic!("{fixture} stored"));
    event.id = 1;
    event.received_at = FIXED_RECEIPT;
    let body = callhook::forward::body(&event).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"))
}

both_backends! {
    async fn the_documented_messages_are_what_is_sent(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let examples = examples();
        let families: Vec<String> = examples
            .iter()
            .map(|(_, _, m)| m["data"]["family"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            families,
            ["status", "event", "v4", "other", "room", "media", "recording", "trtc"],
            "one example per family"
        );
        for (fixture, query, documented) in examples {
            let message = sent(&app, &fixture, &query).await;
            assert_eq!(
                message,
                documented,
                "{fixture}: callhook sends\n{}",
                serde_json::to_string_pretty(&message).unwrap_or_default()
            );
        }
    }
}
