//! Supervision of the long-lived tasks: a writer that dies is restarted at once; writers
//! that keep dying are restarted after a pause during which `/readyz` names them (503);
//! the restarts are counted, and deliveries are stored before, during and after.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

/// Polls `/readyz` until `want` holds for its status and JSON (at most 10 s).
async fn readyz_until(app: &TestApp, want: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get("/readyz").await;
        let ready: Value = serde_json::from_str(&body).unwrap_or_default();
        if want(status, &ready) {
            return (status, ready);
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never became what was wanted; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends! {
    async fn writers_that_keep_dying_fail_readiness_until_restarted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (status, ready) = readyz_until(&app, |s, _| s == 200).await;
        assert_eq!(ready["tasks_down"], serde_json::json!([]), "{ready}");
        let before = app.post_status("call_end", &status_body("sup-1", "u", "caller", "normal_end")).await;
        assert_eq!((status, before.0), (200, 200), "{before:?}");

        // Two deaths in a row: the first is restarted at once, the second after the pause.
        app.state.ingest.kill_writer();
        app.state.ingest.kill_writer();
        let (status, ready) = readyz_until(&app, |s, _| s == 503).await;
        assert_eq!(status, 503);
        assert_eq!(ready["tasks_down"], serde_json::json!(["writer"]), "{ready}");
        assert_eq!(ready["ErrorCode"], 70005, "{ready}");
        let message = ready["ErrorMessage"].as_str().unwrap_or_default();
        assert!(message.contains("writer"), "{ready}");
        assert_eq!(ready["database"], "up", "{ready}");

        // Meanwhile deliveries wait for a writer (on SQLite, the restarted one), not lost.
        let during = app.post_status("call_end", &status_body("sup-2", "u", "caller", "normal_end")).await;
        assert_eq!(during.0, 200, "{during:?}");

        let (_, ready) = readyz_until(&app, |s, _| s == 200).await;
        assert_eq!(ready["tasks_down"], serde_json::json!([]), "{ready}");
        assert_eq!(ready["ErrorCode"], 0, "{ready}");
        let after = app.post_status("call_end", &status_body("sup-3", "u", "caller", "normal_end")).await;
        assert_eq!(after.0, 200, "{after:?}");

        let mut stored: Vec<(Option<String>, i64)> = app
            .events()
            .await
            .into_iter()
            .map(|e| (e.call_id, e.deliveries))
            .collect();
        stored.sort();
        let want = ["sup-1", "sup-2", "sup-3"].map(|c| (Some(c.to_owned()), 1));
        assert_eq!(stored, want);

        // The recorder is global to the test process: only that the restart is counted.
        let (_, metrics) = app.get("/metrics").await;
        for needle in [
            "callhook_task_restarts_total{task=\"writer\"}",
            "callhook_writer_restarts_total",
        ] {
            assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
        }
    }
}
