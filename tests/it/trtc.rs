//! TRTC's own callbacks (issue 16 B) through the real endpoint, on both backends: the
//! signature, every event type of the fixtures, retries, and the views that join room,
//! media and recording events to calls (call_presence, call_recordings, all_calls), with
//! the book's TRTC recipes for them (docs/src/trtc.md).

use serde_json::{Value, json};

use callhook::config::{AppSettings, Secret};
use callhook::store::Store;

use crate::both_backends;
use crate::helpers::*;

/// An app with a TRTC key: Tencent's documented example key (trtc.io doc 54912).
const KEYED_APP: i64 = 1_400_000_003;
const KEY: &str = "123654";
/// The `Sign` of `sign-example-204.json` with [`KEY`], as Tencent's page gives it.
const EXAMPLE_SIGN: &str = "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA=";
const UNVERIFIED: &str = "unverified: no trtc_key configured for this app";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/trtc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        let keyed = AppSettings {
            trtc_key: Some(Secret::new(KEY)),
            ..AppSettings::new(KEYED_APP)
        };
        s.apps.insert(KEYED_APP, keyed);
    })
    .await
}

/// POSTs a TRTC callback to `/trtc` with the `SdkAppId` header (when given) and `Sign`
/// (when given); returns the status and the JSON answer.
async fn post_trtc(
    app: &TestApp,
    sdkappid: Option<&str>,
    sign: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url("/trtc"))
        .header("Content-Type", "application/json");
    if let Some(id) = sdkappid {
        req = req.header("SdkAppId", id);
    }
    if let Some(s) = sign {
        req = req.header("Sign", s);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /trtc: {e}"));
    parse(resp).await
}

async fn post_app(app: &TestApp, body: &Value) -> (u16, Value) {
    post_trtc(app, Some(&APP.to_string()), None, body.to_string()).await
}

/// Runs `sql` (its columns named in `cols`) and returns each row as JSON values, read the
/// same way on both backends: times as Unix ms, numbers as f64, PostgreSQL arrays as
/// comma-separated text (as SQLite's lists), JSON text parsed.
async fn rows(store: &Store, cols: &[&str], sql: &str) -> Vec<Vec<Value>> {
    let texts: Vec<String> = match store {
        Store::Postgres(s) => {
            let q = format!("SELECT row_to_json(t)::text FROM ({sql}) t");
            sqlx::query_scalar::<_, String>(&q)
                .fetch_all(s.pool())
                .await
        }
        Store::Sqlite(s) => {
            let pairs: Vec<String> = cols.iter().map(|c| format!("'{c}', t.{c}")).collect();
            let q = format!("SELECT json_object({}) FROM ({sql}) t", pairs.join(", "));
            sqlx::query_scalar::<_, String>(&q)
                .fetch_all(s.pool())
                .await
        }
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    texts
        .iter()
        .map(|t| {
            let obj: Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            cols.iter().map(|c| norm(&obj[*c])).collect()
        })
        .collect()
}

fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::String(s) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return json!(t.timestamp_millis() as f64);
            }
            if (s.starts_with('[') || s.starts_with('{'))
                && let Ok(parsed) = serde_json::from_str::<Value>(s)
            {
                return norm(&parsed);
            }
            v.clone()
        }
        Value::Array(items) if items.iter().all(Value::is_string) => json!(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.clone(),
    }
}

/// The TRTC columns of the stored rows, by id.
async fn trtc_rows(store: &Store) -> Vec<Vec<Value>> {
    let cols = [
        "sdkappid",
        "family",
        "command",
        "event",
        "room_id",
        "user_id",
        "role",
        "event_time",
        "trtc_event_type",
        "unique_id",
        "terminal_type",
        "user_type",
        "reason",
        "task_id",
        "trtc_status",
        "files",
        "notes",
        "deliveries",
    ];
    rows(
        store,
        &cols,
        &format!("SELECT {} FROM call_events ORDER BY id", cols.join(", ")),
    )
    .await
}

both_backends! {
    async fn the_signature_is_checked_with_a_key(backend: Backend) {
        let app = spawn(backend).await;
        let body = fixture("sign-example-204.json");
        let keyed = KEYED_APP.to_string();

        // Missing and wrong signatures: 403 with an envelope, not stored, kept.
        let (status, answer) = post_trtc(&app, Some(&keyed), None, body.clone()).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["code"], 71102);
        assert_eq!(answer["ErrorCode"], 71102);
        let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let (status, answer) = post_trtc(&app, Some(&keyed), Some(wrong), body.clone()).await;
        assert_eq!(status, 403, "{answer}");
        assert!(
            answer["ErrorMessage"].as_str().unwrap_or_default().contains("does not match"),
            "{answer}"
        );
        assert!(app.events().await.is_empty(), "a refused delivery is not stored");
        let rejected = app.rejected().await;
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        for r in &rejected {
            assert_eq!(r.sdkappid, KEYED_APP);
            assert_eq!(r.error_code, 71102);
            assert_eq!(r.command.as_deref(), Some("trtc"));
            assert_eq!(r.body.as_bytes(), &body[..]);
        }
        // The same wrong delivery again: counted, not a new row.
        post_trtc(&app, Some(&keyed), Some(wrong), body.clone()).await;
        let rejected = app.rejected().await;
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected.iter().map(|r| r.deliveries).max(), Some(2));

        // Tencent's example, byte for byte, with its Sign: stored, no note.
        let (status, answer) = post_trtc(&app, Some(&keyed), Some(EXAMPLE_SIGN), body.clone()).await;
        assert_eq!((status, answer), (200, json!({"code": 0})));
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored.len(), 1);
        let r = &stored[0];
        assert_eq!(r[0], json!(KEYED_APP as f64));
        assert_eq!(r[1], "media");
        assert_eq!(r[2], "trtc");
        assert_eq!(r[3], "stop_audio");
        assert_eq!(r[4], "8489");
        assert_eq!(r[5], "user_85034614");
        assert_eq!(r[7], json!(1_664_209_748_180.0));
        assert_eq!(r[8], json!(204.0));
        assert_eq!(r[12], json!(0.0));
        assert_eq!(r[16], Value::Null, "a verified delivery has no note");
        let payload = app.events().await[0].payload_text.clone();
        assert_eq!(payload.as_deref().map(str::as_bytes), Some(&body[..]), "kept byte for byte");

        // An app without a key: stored, marked unverified.
        let (status, _) = post_trtc(&app, Some(&APP.to_string()), None, body.clone()).await;
        assert_eq!(status, 200);
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored[1][16], UNVERIFIED);

        // No SdkAppId, or one not configured: refused, not kept.
        let (status, answer) = post_trtc(&app, None, None, body.clone()).await;
        assert_eq!((status, answer["code"].clone()), (400, json!(70001)));
        let (status, answer) = post_trtc(&app, Some("1400009999"), None, body.clone()).await;
        assert_eq!((status, answer["code"].clone()), (403, json!(71101)));
        assert_eq!(app.rejected().await.len(), 2);
        assert_eq!(app.events().await.len(), 2);
    }
}

both_backends! {
    async fn every_event_type_is_stored(backend: Backend) {
        let app = spawn(backend).await;
        let mut names: Vec<String> = std::fs::read_dir(format!(
            "{}/tests/fixtures/trtc",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_else(|e| panic!("fixtures: {e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".json") && !n.starts_with("record-changed") && !n.starts_with("sign-"))
        .collect();
        names.sort();
        for name in &names {
            let (status, answer) =
                post_trtc(&app, Some(&APP.to_string()), None, fixture(name)).await;
            assert_eq!((status, answer), (200, json!({"code": 0})), "{name}");
        }
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored.len(), names.len(), "one row per fixture");
        for (name, r) in names.iter().zip(&stored) {
            let ty: i64 = name.split('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
            let family = match ty / 100 {
                1 => "room",
                2 => "media",
                3 => "recording",
                _ => "trtc",
            };
            if ty != 0 {
                assert_eq!(r[1], family, "{name}");
                assert_eq!(r[8], json!(ty as f64), "{name}");
            }
            assert_eq!(r[2], "trtc");
            assert!(r[3].is_string(), "{name}: an event name");
            assert!(r[7].is_number(), "{name}: an event time");
            assert!(
                r[16].as_str().unwrap_or_default().contains(UNVERIFIED),
                "{name}: {}",
                r[16]
            );
            assert_eq!(r[17], json!(1.0));
        }
        let by_name = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .map(|i| stored[i].clone())
                .unwrap_or_else(|| panic!("{n}"))
        };
        // The enter event fills every room column.
        let enter = by_name("103-enter-room.json");
        assert_eq!(enter[3], "enter_room");
        assert_eq!(enter[4], "48213907", "a numeric RoomId digit for digit");
        assert_eq!(enter[5], "user_0317");
        assert_eq!(enter[6], "anchor");
        assert_eq!(enter[7], json!(1_764_403_209_520.0), "EventMsTs");
        assert_eq!(enter[9], "1764403209311");
        assert_eq!(
            (enter[10].clone(), enter[11].clone(), enter[12].clone()),
            (json!(2.0), json!(3.0), json!(1.0))
        );
        // Recording: the task, the status, the files as received.
        let vod = by_name("311-vod-commit.json");
        assert_eq!(vod[1], "recording");
        assert_eq!(vod[3], "vod_commit");
        assert_eq!(vod[13], "Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef");
        assert_eq!(vod[14], json!(0.0));
        assert_eq!(vod[15]["TencentVod"]["FileId"], "5285890812345678901");
        let stop = by_name("302-recorder-stop.json");
        assert!(stop[14].is_number(), "302's LeaveCode is its status");
        // Unknown group and type numbers are stored, named generically.
        let unknown = by_name("unknown-type-107.json");
        assert_eq!((unknown[1].clone(), unknown[3].clone()), (json!("room"), json!("unknown_107")));
        let group7 = by_name("unknown-group-7.json");
        assert_eq!(group7[1], "trtc");

        // A body that is not a JSON object is refused (400) and kept.
        let (status, answer) = post_trtc(&app, Some(&APP.to_string()), None, "[1]").await;
        assert_eq!((status, answer["code"].clone()), (400, json!(71001)));
        assert_eq!(app.rejected().await.len(), 1);
    }
}

both_backends! {
    async fn a_retry_with_a_new_callback_ts_merges(backend: Backend) {
        let app = spawn(backend).await;
        let body = |callback_ts: i64, reason: i64| {
            json!({"EventGroupId": 1, "EventType": 103, "CallbackTs": callback_ts,
                   "EventInfo": {"RoomId": 777, "EventTs": 1764403209, "EventMsTs": 1764403209520_i64,
                                 "UserId": "u1", "Role": 20, "Reason": reason}})
        };
        assert_eq!(post_app(&app, &body(1764403209557, 1)).await.0, 200);
        assert_eq!(post_app(&app, &body(1764403219557, 1)).await.0, 200, "retried 10 s later");
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0][17], json!(2.0), "deliveries");
        // Another reason is another event.
        assert_eq!(post_app(&app, &body(1764403209557, 3)).await.0, 200);
        assert_eq!(trtc_rows(app.store()).await.len(), 2);
    }
}

both_backends! {
    /// Issue 23, item 12: a TRTC `RoomId`, `UserId` and `TaskId` longer than a PostgreSQL
    /// B-tree entry holds (~2.7 kB that does not compress; these are 4 kB) are stored on
    /// both backends (PostgreSQL refused them, 400/71003): the room and task index columns
    /// hold the bounded form, the row a note, the payload the full values; a retry merges,
    /// and `Call.CallbackAfterRecordChanged` with the same long ids still links the call to
    /// its recording (`call_recordings`).
    async fn very_long_room_and_task_ids_are_stored_bounded(backend: Backend) {
        let app = spawn(backend).await;
        let room = incompressible("room", 4096);
        let user = incompressible("robot", 4096);
        let task = incompressible("task", 4096);
        let call = incompressible("recorded-call", 4096);
        let recording = |callback_ts: i64| json!({"EventGroupId": 3, "EventType": 301,
            "CallbackTs": callback_ts, "EventInfo": {"RoomId": room, "EventTs": 1764403210,
            "EventMsTs": 1764403210620_i64, "UserId": user, "TaskId": task, "Payload": {"Status": 0}}});
        assert_eq!(post_app(&app, &recording(1764403210776)).await, (200, json!({"code": 0})));
        assert_eq!(post_app(&app, &recording(1764403220776)).await, (200, json!({"code": 0})), "retried");
        let link = json!({"CallId": call, "CallbackCommand": "Call.CallbackAfterRecordChanged",
            "EventTime": 1764403210723_i64, "Callback": {"EventGroupId": 3, "EventType": 301,
            "CallbackTs": 1764403210723_i64, "EventInfo": {"RoomId": room, "EventTs": 1764403210,
            "EventMsTs": 1764403210620_i64, "UserId": user, "TaskId": task, "Payload": {"Status": 0}}}});
        let (status, answer) = app.post(&v4_query(APP, "Call.CallbackAfterRecordChanged"), link.to_string()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
        assert!(app.rejected().await.is_empty(), "nothing refused");

        let rows = app.events().await;
        assert_eq!(rows.len(), 2, "the recording event once, the link once");
        let (rec, v4) = (&rows[0], &rows[1]);
        assert_eq!((rec.family.as_str(), rec.deliveries), ("recording", 2), "the retry merged");
        assert_eq!(rec.room_id.as_deref(), Some(bounded(&room).as_str()));
        assert_eq!(rec.user_id.as_deref(), Some(bounded(&user).as_str()));
        assert_eq!(rec.payload["EventInfo"]["RoomId"].as_str(), Some(room.as_str()));
        assert_eq!(rec.payload["EventInfo"]["TaskId"].as_str(), Some(task.as_str()));
        assert_eq!(rec.payload["EventInfo"]["UserId"].as_str(), Some(user.as_str()));
        let notes = rec.notes.as_deref().unwrap_or_default();
        for column in ["room_id", "user_id", "task_id"] {
            assert!(notes.contains(&format!("{column}: 4096 bytes")), "{column}: {notes}");
        }
        assert_eq!((v4.family.as_str(), v4.call_id.as_deref()), ("v4", Some(bounded(&call).as_str())));
        assert_eq!(v4.room_id.as_deref(), Some(bounded(&room).as_str()));
        let tasks = text_rows(app.store(), "SELECT task_id FROM call_events ORDER BY id").await;
        assert_eq!(tasks, vec![vec![Some(bounded(&task))]; 2], "the task column, bounded alike");

        let linked = scalar(app.store(), &format!(
            "SELECT count(*) FROM call_recordings WHERE call_id = '{}' AND task_id = '{}' AND status = 'recording'",
            bounded(&call), bounded(&task))).await;
        assert_eq!(linked, 1, "the call is linked to its recording");
    }
}

both_backends! {
    /// Issue 23, item 11: a JSON object whose member names serde cannot decode (an unpaired
    /// surrogate escape in a name) may be TRTC's, so it is not refused (it was, with 71001):
    /// it is stored with family `trtc` and a note, answered 200 `{"code":0}`, and keyed by its
    /// bytes (two different ones are two rows, a retry adds to its deliveries).
    async fn an_object_whose_names_cannot_be_decoded_is_stored(backend: Backend) {
        let app = spawn(backend).await;
        let a = r#"{"\ud800":1,"EventGroupId":1,"EventType":103,"EventInfo":{"RoomId":"r","UserId":"u"}}"#;
        let b = r#"{"\udc00":1,"EventGroupId":1,"EventType":103,"EventInfo":{"RoomId":"r","UserId":"u"}}"#;
        for body in [a, b, a] {
            let answer = post_trtc(&app, Some(&APP.to_string()), None, body).await;
            assert_eq!(answer, (200, json!({"code": 0})), "{body}");
        }
        let rows = text_rows(
            app.store(),
            "SELECT CAST(payload AS TEXT), CAST(deliveries AS TEXT), notes, family, command \
             FROM call_events ORDER BY id",
        )
        .await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (row, (body, deliveries)) in rows.iter().zip([(a, "2"), (b, "1")]) {
            assert_eq!(row[0].as_deref(), Some(body), "the body byte for byte");
            assert_eq!(row[1].as_deref(), Some(deliveries));
            let notes = row[2].as_deref().unwrap_or_default();
            assert!(notes.contains("none of its fields could be read"), "{notes}");
            assert!(notes.contains(UNVERIFIED), "{notes}");
            assert_eq!((row[3].as_deref(), row[4].as_deref()), (Some("trtc"), Some("trtc")));
        }
        assert!(app.rejected().await.is_empty(), "nothing refused");
    }
}

both_backends! {
    async fn record_changed_links_a_call_to_its_task(backend: Backend) {
        let app = spawn(backend).await;
        let query = v4_query(APP, "Call.CallbackAfterRecordChanged");
        let (status, answer) = app.post(&query, fixture("record-changed-301.json")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["ActionStatus"], "OK");
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored.len(), 1);
        let r = &stored[0];
        assert_eq!(r[1], "v4");
        assert_eq!(r[2], "Call.CallbackAfterRecordChanged");
        assert_eq!(r[3], "recorder_start");
        assert_eq!(r[4], "48213907");
        assert_eq!(r[5], Value::Null, "the recording robot is not a participant");
        assert_eq!(r[8], json!(301.0));
        assert_eq!(r[13], "Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef");
        assert_eq!(r[14], json!(0.0));
        assert_eq!(r[16], Value::Null);
        let events = app.events().await;
        assert_eq!(events[0].call_id.as_deref(), Some("6c1f0e52-2f4b-4d7e-9a3b-0d6a1c2e7f90"));

        // The other fixtures: 311 (a file in VOD), and 312 under the Chinese edition's
        // spelling of the command; then the task has a status and its files.
        let query = v4_query(APP, "Call.CallbackAfterRecordChanged");
        assert_eq!(app.post(&query, fixture("record-changed-311.json")).await.0, 200);
        let query = v4_query(APP, "Call.CallbackAfterCloudRecordingChanged");
        let body = fixture("record-changed-312-cloud-recording-spelling.json");
        assert_eq!(app.post(&query, body).await.0, 200);
        let stored = trtc_rows(app.store()).await;
        let kinds: Vec<(Value, Value, Value)> = stored
            .iter()
            .map(|r| (r[1].clone(), r[3].clone(), r[8].clone()))
            .collect();
        assert_eq!(kinds, vec![
            (json!("v4"), json!("recorder_start"), json!(301.0)),
            (json!("v4"), json!("vod_commit"), json!(311.0)),
            (json!("v4"), json!("vod_stop"), json!(312.0)),
        ]);
        assert_eq!(stored[1][15]["TencentVod"]["FileId"], "5285890812345678901");
        let cols = ["call_id", "task_id", "status"];
        let recordings = rows(app.store(), &cols,
            "SELECT call_id, task_id, status FROM call_recordings").await;
        assert_eq!(recordings, vec![vec![json!("6c1f0e52-2f4b-4d7e-9a3b-0d6a1c2e7f90"),
            json!("Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef"), json!("done")]]);
    }
}

/// Yesterday 08:00 UTC, Unix ms: the scenario happens yesterday, so that the cookbook's
/// "yesterday" recipes run as written.
fn base_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    now - now.rem_euclid(day) - day + 8 * 3_600_000
}

/// A TRTC room or media event at `at_ms` (`base_ms()` + offset).
fn room_event(ty: i64, at_ms: i64, room: Value, user: Option<&str>, extra: Value) -> Value {
    let mut info = json!({"RoomId": room, "EventTs": at_ms / 1000, "EventMsTs": at_ms});
    if let Some(u) = user {
        info["UserId"] = json!(u);
    }
    if let (Some(info), Some(extra)) = (info.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            info.insert(k.clone(), v.clone());
        }
    }
    json!({"EventGroupId": ty / 100, "EventType": ty, "CallbackTs": at_ms + 37, "EventInfo": info})
}

/// A status callback (`normal_end`) of a call in `room`, times in ms.
fn status(
    call: &str,
    user: &str,
    role: &str,
    room: &str,
    start: i64,
    accept: i64,
    end: i64,
) -> Value {
    json!({"UserId": user, "RoomId": room, "TotalNum": 2, "MediaType": "audio",
           "CallType": "single", "CallId": call, "Role": role, "CallResult": "normal_end",
           "EventTime": end / 1000 + 1, "StartCallTs": start / 1000, "AcceptTs": accept / 1000,
           "EndTs": end / 1000})
}

const VIDEO_URL: &str = "https://1400000001.vod-qcloud.com/abcd/52858908/f0.mp4";

/// Two calls in one reused room (room events and status callbacks), a room known only from
/// its events, and a recording of the first call linked by Call.CallbackAfterRecordChanged.
async fn scenario(app: &TestApp) {
    let b = base_ms();
    let s = 1000;
    let room = json!(48213907);
    let anchor = |reason: i64| json!({"Role": 20, "Reason": reason});
    let none = json!({});
    // call-1: 08:00:00 to 08:03:03, in room 48213907.
    for (user, role) in [("user_a", "caller"), ("user_b", "callee")] {
        let body = status("call-1", user, role, "48213907", b, b + 9 * s, b + 183 * s);
        assert_eq!(app.post_status("call_end", &body).await.0, 200);
    }
    // call-2: two hours later in the same room; user_d stays 3 s.
    let c2 = b + 7200 * s;
    for (user, role) in [("user_c", "caller"), ("user_d", "callee")] {
        let body = status("call-2", user, role, "48213907", c2, c2 + 5 * s, c2 + 8 * s);
        assert_eq!(app.post_status("call_end", &body).await.0, 200);
    }
    // A room known only from its events, four hours later.
    let z = b + 14_400 * s;
    let zr = json!("room-7f3a");
    let events = [
        room_event(101, b + 119, room.clone(), Some("user_a"), none.clone()),
        room_event(103, b + 120, room.clone(), Some("user_a"), anchor(1)),
        room_event(203, b + 400, room.clone(), Some("user_a"), none.clone()),
        room_event(103, b + 9520, room.clone(), Some("user_b"), anchor(1)),
        room_event(203, b + 9800, room.clone(), Some("user_b"), none.clone()),
        room_event(201, b + 10_000, room.clone(), Some("user_b"), none.clone()),
        room_event(
            202,
            b + 70_000,
            room.clone(),
            Some("user_b"),
            json!({"Reason": 0}),
        ),
        room_event(104, b + 183_200, room.clone(), Some("user_a"), anchor(1)),
        room_event(104, b + 183_370, room.clone(), Some("user_b"), anchor(2)),
        room_event(102, b + 183_500, room.clone(), None, none.clone()),
        room_event(101, c2 + 200, room.clone(), Some("user_c"), none.clone()),
        room_event(103, c2 + 210, room.clone(), Some("user_c"), anchor(1)),
        room_event(103, c2 + 5300, room.clone(), Some("user_d"), anchor(1)),
        room_event(104, c2 + 8300, room.clone(), Some("user_d"), anchor(1)),
        room_event(104, c2 + 8400, room.clone(), Some("user_c"), anchor(1)),
        room_event(102, c2 + 9000, room.clone(), None, none.clone()),
        room_event(101, z, zr.clone(), Some("user_x"), none.clone()),
        room_event(103, z + 10, zr.clone(), Some("user_x"), anchor(1)),
        room_event(103, z + 7000, zr.clone(), Some("user_y"), anchor(1)),
        room_event(104, z + 307_000, zr.clone(), Some("user_y"), anchor(1)),
        room_event(104, z + 307_500, zr.clone(), Some("user_x"), anchor(1)),
        room_event(102, z + 308_000, zr.clone(), None, none.clone()),
    ];
    // Recording of call-1: task T1, from 08:00:10.620 to 08:03:06.
    let robot = "callkit_1400000001_record_48213907";
    let rec = |ty: i64, at: i64, payload: Value| {
        room_event(
            ty,
            at,
            json!("48213907"),
            Some(robot),
            json!({"TaskId": "T1", "Payload": payload}),
        )
    };
    let vod = json!({"UserId": "", "TrackType": "audio_video", "MediaId": "mix",
                     "FileId": "52858908", "VideoUrl": VIDEO_URL});
    let recording = [
        rec(301, b + 10_620, json!({"Status": 0})),
        rec(302, b + 183_300, json!({"LeaveCode": 0})),
        rec(311, b + 185_000, json!({"Status": 0, "TencentVod": vod})),
        rec(312, b + 186_000, json!({"Status": 0})),
    ];
    for e in events.iter().chain(&recording) {
        let (status, answer) = post_app(app, e).await;
        assert_eq!(status, 200, "{e}: {answer}");
    }
    let linked = json!({"CallId": "call-1", "Callback": {
        "EventGroupId": 3, "EventType": 301, "CallbackTs": b + 10_700,
        "EventInfo": {"RoomId": "48213907", "EventTs": (b + 10_620) / 1000, "UserId": robot,
                      "TaskId": "T1", "Payload": {"Status": 0}, "EventMsTs": b + 10_620},
        "KitType": 2}, "CallbackCommand": "Call.CallbackAfterRecordChanged", "EventTime": b + 10_700});
    let query = v4_query(APP, "Call.CallbackAfterRecordChanged");
    assert_eq!(app.post(&query, linked.to_string()).await.0, 200);
}

fn at(ms: i64) -> Value {
    json!(ms as f64)
}

both_backends! {
    async fn rooms_join_their_calls(backend: Backend) {
        let app = spawn(backend).await;
        scenario(&app).await;
        let b = base_ms();
        let c2 = b + 7_200_000;
        let z = b + 14_400_000;
        let room_only = format!("room:room-7f3a@{z}");

        // Presence: room events and call callbacks of one call, joined; the reused room's
        // second session belongs to call-2 only.
        let cols = ["call_id", "user_id", "entered_at", "left_at", "seconds_in_room",
                    "exit_reason", "audio_seconds", "video_seconds", "source"];
        let presence = rows(app.store(), &cols,
            "SELECT call_id, user_id, entered_at, left_at, seconds_in_room, exit_reason, \
             audio_seconds, video_seconds, source FROM call_presence \
             WHERE sdkappid = 1400000001 ORDER BY call_id, user_id").await;
        let want = vec![
            vec![json!("call-1"), json!("user_a"), at(b + 120), at(b + 183_200), json!(183.08),
                 json!("left"), json!(182.8), Value::Null, json!("both")],
            vec![json!("call-1"), json!("user_b"), at(b + 9520), at(b + 183_370), json!(173.85),
                 json!("timeout"), json!(173.57), json!(60.0), json!("both")],
            vec![json!("call-2"), json!("user_c"), at(c2 + 210), at(c2 + 8400), json!(8.19),
                 json!("left"), Value::Null, Value::Null, json!("both")],
            vec![json!("call-2"), json!("user_d"), at(c2 + 5300), at(c2 + 8300), json!(3.0),
                 json!("left"), Value::Null, Value::Null, json!("both")],
            vec![json!(room_only), json!("user_x"), at(z + 10), at(z + 307_500), json!(307.49),
                 json!("left"), Value::Null, Value::Null, json!("room_events")],
            vec![json!(room_only), json!("user_y"), at(z + 7000), at(z + 307_000), json!(300.0),
                 json!("left"), Value::Null, Value::Null, json!("room_events")],
        ];
        assert_eq!(presence, want);

        // Calls: call-1 and call-2 from both sources, the room-only session as a call.
        let cols = ["call_id", "caller", "callees", "outcome", "started_at", "ended_at", "source"];
        let calls = rows(app.store(), &cols,
            "SELECT call_id, caller, callees, outcome, started_at, ended_at, source FROM all_calls \
             WHERE sdkappid = 1400000001 ORDER BY call_id").await;
        assert_eq!(calls, vec![
            vec![json!("call-1"), json!("user_a"), json!("user_b"), json!("normal_end"), at(b),
                 at(b + 183_000), json!("both")],
            vec![json!("call-2"), json!("user_c"), json!("user_d"), json!("normal_end"), at(c2),
                 at(c2 + 8000), json!("both")],
            vec![json!(room_only), json!("user_x"), json!("user_y"), Value::Null, at(z),
                 at(z + 308_000), json!("room_events")],
        ]);
        // `calls` itself is unchanged: the call-callback calls only.
        assert_eq!(scalar(app.store(), "SELECT count(*) FROM calls").await, 2);

        // The recording, linked through Call.CallbackAfterRecordChanged.
        let cols = ["call_id", "task_id", "status", "started_at", "stopped_at", "files"];
        let recordings = rows(app.store(), &cols,
            "SELECT call_id, task_id, status, started_at, stopped_at, files FROM call_recordings \
             ORDER BY call_id, task_id").await;
        assert_eq!(recordings.len(), 1, "{recordings:?}");
        let r = &recordings[0];
        assert_eq!(&r[..5], &[json!("call-1"), json!("T1"), json!("done"), at(b + 10_620),
                              at(b + 183_300)]);
        assert_eq!(r[5][0]["TencentVod"]["VideoUrl"], VIDEO_URL, "{}", r[5]);
    }
}

/// The book's TRTC recipes (docs/src/trtc.md), PostgreSQL and SQLite spellings (kept
/// identical to the page: a test below checks that it holds each of them).
const MINUTES_PG: &str = "SELECT sdkappid, user_id, round(sum(seconds_in_room)::numeric / 60, 1) AS minutes
FROM call_presence
WHERE entered_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '1 day') AT TIME ZONE 'UTC'
  AND entered_at < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
GROUP BY sdkappid, user_id
ORDER BY minutes DESC, user_id";
const MINUTES_SQLITE: &str =
    "SELECT sdkappid, user_id, round(sum(seconds_in_room) / 60, 1) AS minutes
FROM call_presence
WHERE entered_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', 'start of day', '-1 day')
  AND entered_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', 'start of day')
GROUP BY sdkappid, user_id
ORDER BY minutes DESC, user_id";
const SHORT_STAYS: &str = "SELECT sdkappid, call_id, user_id, seconds_in_room, exit_reason
FROM call_presence
WHERE seconds_in_room < 5
ORDER BY entered_at DESC";
const RECORDING_PG: &str =
    "SELECT r.task_id, r.status, f -> 'TencentVod' ->> 'VideoUrl' AS video_url
FROM call_recordings r, json_array_elements(r.files) AS f
WHERE r.sdkappid = 1400000001 AND r.call_id = 'call-1'";
const RECORDING_SQLITE: &str =
    "SELECT r.task_id, r.status, json_extract(f.value, '$.TencentVod.VideoUrl') AS video_url
FROM call_recordings r, json_each(r.files) AS f
WHERE r.sdkappid = 1400000001 AND r.call_id = 'call-1'";

both_backends! {
    async fn the_cookbook_recipes_run(backend: Backend) {
        let app = spawn(backend).await;
        scenario(&app).await;
        let pg = backend == Backend::Postgres;
        let minutes = rows(app.store(), &["sdkappid", "user_id", "minutes"],
            if pg { MINUTES_PG } else { MINUTES_SQLITE }).await;
        let got: Vec<(String, f64)> = minutes
            .iter()
            .map(|r| (r[1].as_str().unwrap_or_default().to_owned(), r[2].as_f64().unwrap_or(-1.0)))
            .collect();
        let want: Vec<(String, f64)> = [("user_x", 5.1), ("user_y", 5.0), ("user_a", 3.1),
            ("user_b", 2.9), ("user_c", 0.1), ("user_d", 0.1)]
            .iter().map(|(u, m)| ((*u).to_owned(), *m)).collect();
        assert_eq!(got, want);

        let short = rows(app.store(),
            &["sdkappid", "call_id", "user_id", "seconds_in_room", "exit_reason"], SHORT_STAYS).await;
        assert_eq!(short, vec![vec![json!(1_400_000_001.0), json!("call-2"), json!("user_d"),
                                    json!(3.0), json!("left")]]);

        let recording = rows(app.store(), &["task_id", "status", "video_url"],
            if pg { RECORDING_PG } else { RECORDING_SQLITE }).await;
        assert_eq!(recording, vec![vec![json!("T1"), json!("done"), json!(VIDEO_URL)]]);
    }
}

#[test]
fn the_book_holds_the_tested_recipes() {
    let path = format!("{}/docs/src/trtc.md", env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for recipe in [
        MINUTES_PG,
        MINUTES_SQLITE,
        SHORT_STAYS,
        RECORDING_PG,
        RECORDING_SQLITE,
    ] {
        assert!(
            page.contains(recipe),
            "docs/src/trtc.md lacks the recipe:\n{recipe}"
        );
    }
}

/// With PostgreSQL down, TRTC events are journaled and answered 200 like every callback
/// (a retry with a new CallbackTs merging into the journaled row), then replayed, every
/// TRTC column intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trtc_events_go_through_the_outage_journal() {
    let cluster = crate::pg::PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let db = TestDb::postgres_at(cluster.create_database().await);
    let spool = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool_dir = spool.path().to_path_buf();
    let app = TestApp::spawn_on(db, move |s| s.spool.dir = Some(spool_dir)).await;
    cluster.stop_server().unwrap_or_else(|e| panic!("{e:#}"));
    let body = |callback_ts: i64| {
        json!({"EventGroupId": 3, "EventType": 311, "CallbackTs": callback_ts,
               "EventInfo": {"RoomId": "48213907", "EventMsTs": 1_764_403_445_120_i64,
                             "UserId": "robot", "TaskId": "T7",
                             "Payload": {"Status": 0, "TencentVod": {"FileId": "77"}}}})
    };
    for ts in [1_764_403_445_276_i64, 1_764_403_455_276] {
        let (status, answer) = post_app(&app, &body(ts)).await;
        assert_eq!((status, answer), (200, json!({"code": 0})));
    }
    cluster.start_server().unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ok = match app.store() {
            Store::Postgres(s) => {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM call_events")
                    .fetch_one(s.pool())
                    .await
                    .unwrap_or(0)
                    > 0
            }
            Store::Sqlite(_) => true,
        };
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replay within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stored = trtc_rows(app.store()).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let r = &stored[0];
    assert_eq!(
        (r[1].clone(), r[3].clone()),
        (json!("recording"), json!("vod_commit"))
    );
    assert_eq!((r[13].clone(), r[14].clone()), (json!("T7"), json!(0.0)));
    assert_eq!(r[15], json!({"TencentVod": {"FileId": "77"}}));
    assert_eq!(r[16], UNVERIFIED);
    assert_eq!(r[17], json!(2.0), "two deliveries, one row");
}

/// `callhook send --family all` with a TRTC key: the call families and TRTC's own callbacks
/// of the same calls, signed, all acknowledged and stored (none refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_includes_signed_trtc_callbacks() {
    let app = spawn(Backend::Sqlite).await;
    let cmdline = format!(
        "send --url {} --sdkappid {KEYED_APP} --trtc-key {KEY} --family all --calls 12 --seed 3",
        app.url("/")
    );
    let argv = cmdline.split_whitespace().collect::<Vec<_>>();
    let args = match <callhook::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("callhook").chain(argv),
    ) {
        Ok(callhook::cli::Cli {
            command: callhook::cli::Command::Send(a),
            ..
        }) => a,
        other => panic!("{cmdline} does not parse: {other:?}"),
    };
    let summary = callhook::send::execute(&args, std::future::pending())
        .await
        .unwrap_or_else(|e| panic!("{cmdline}: {e:#}"));
    assert_eq!(summary.dropped, 0, "{}", summary.to_text());
    assert_eq!(summary.acknowledged, summary.deliveries);
    let families: Vec<&str> = summary
        .deliveries_by_family
        .keys()
        .map(String::as_str)
        .collect();
    assert!(families.len() > 3, "{families:?}");
    assert!(
        app.rejected().await.is_empty(),
        "every TRTC callback verified"
    );
    let trtc = scalar(
        app.store(),
        "SELECT count(*) FROM call_events WHERE family IN ('room', 'media', 'recording') \
         AND notes IS NULL",
    )
    .await;
    assert!(trtc > 12, "{trtc} TRTC rows, signed (no unverified note)");
    let calls = scalar(app.store(), "SELECT count(*) FROM calls").await;
    let joined = scalar(
        app.store(),
        "SELECT count(*) FROM all_calls WHERE source = 'both'",
    )
    .await;
    assert_eq!(calls, 12);
    assert!(joined > 0, "rooms joined to their calls");
}

both_backends! {
    async fn the_report_shows_time_in_rooms(backend: Backend) {
        let app = spawn(backend).await;
        let today = chrono::Utc::now().date_naive();
        let range = callhook::store::DayRange {
            since: today - chrono::Duration::days(1),
            until: today + chrono::Duration::days(1),
        };
        // Without room events: no room line (the report is as before).
        let before = callhook::report::build(app.store(), range, None)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(before.rooms, None);

        scenario(&app).await;
        let report = callhook::report::build(app.store(), range, None)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let rooms = report.rooms.clone().unwrap_or_else(|| panic!("room stats"));
        // 183.08 + 173.85 + 8.19 + 3.0 + 307.49 + 300.0 person-seconds in three calls; the
        // call callbacks' talk time 174 + 3 s in two.
        assert!((rooms.in_room_seconds - 975.61).abs() < 1e-6, "{rooms:?}");
        assert_eq!((rooms.in_room_calls, rooms.room_only_calls), (3, 1));
        assert!((rooms.talk_seconds - 177.0).abs() < 1e-6, "{rooms:?}");
        assert_eq!(rooms.talk_calls, 2);
        let summary = "In TRTC rooms (room events): 16.3 person-minutes in 3 calls, 1 of them \
                       known only from room events; talk time from the call callbacks: 3.0 \
                       minutes in 2 calls.";
        assert_eq!(report.rooms_summary().as_deref(), Some(summary));
        for format in [callhook::cli::ReportFormat::Table, callhook::cli::ReportFormat::Html] {
            let text = callhook::report::render(&report, format)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert!(text.contains(summary), "{format:?}: {text}");
        }
        let one_app = callhook::report::build(app.store(), range, Some(KEYED_APP))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(one_app.rooms, None, "another app's rooms are not counted");
    }
}

/// An app with a token that opted in to unsigned TRTC callbacks.
const OPTED_IN_APP: i64 = 1_400_000_004;

/// The value of a counter on `/metrics` with these labels (0 when it is not there yet).
async fn counter(app: &TestApp, name_and_labels: &str) -> f64 {
    let (_, text) = app.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn rejected_count(app: &TestApp) -> i64 {
    scalar(app.store(), "SELECT count(*) FROM rejected_deliveries").await
}

both_backends! {
    /// An app that protects its call callbacks with a token and has no TRTC key refuses
    /// TRTC's callbacks (anyone could send them) and keeps nothing; with the opt-in they are
    /// stored, marked unverified; an app with neither token nor key stores them as before.
    async fn a_token_app_without_a_key_refuses_trtc_callbacks(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| {
            let opted_in = AppSettings {
                token: Some(Secret::new("another-token")),
                trtc_allow_unsigned: true,
                ..AppSettings::new(OPTED_IN_APP)
            };
            s.apps.insert(OPTED_IN_APP, opted_in);
        })
        .await;
        let body = fixture("sign-example-204.json");
        let token_app = TOKEN_APP.to_string();
        for sign in [None, Some(EXAMPLE_SIGN)] {
            let (status, answer) = post_trtc(&app, Some(&token_app), sign, body.clone()).await;
            assert_eq!(status, 403, "{answer}");
            assert_eq!((answer["code"].clone(), answer["ErrorCode"].clone()), (json!(71102), json!(71102)));
            let message = answer["ErrorMessage"].as_str().unwrap_or_default();
            for needed in ["trtc_key", "trtc_key_env", "CALLHOOK_TRTC_KEY_1400000002", "trtc_allow_unsigned"] {
                assert!(message.contains(needed), "{needed} not in {message}");
            }
        }
        assert!(app.events().await.is_empty(), "nothing stored");
        assert_eq!(rejected_count(&app).await, 0, "nothing kept");

        // Opted in: stored, with the note.
        let (status, answer) =
            post_trtc(&app, Some(&OPTED_IN_APP.to_string()), None, body.clone()).await;
        assert_eq!((status, answer), (200, json!({"code": 0})));
        // Neither token nor key: stored with the note, as before.
        let (status, _) = post_trtc(&app, Some(&APP.to_string()), None, body.clone()).await;
        assert_eq!(status, 200);
        let stored = trtc_rows(app.store()).await;
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0][0], json!(OPTED_IN_APP as f64));
        assert_eq!(stored[0][16], UNVERIFIED);
        assert_eq!(stored[1][0], json!(APP as f64));
        assert_eq!(stored[1][16], UNVERIFIED);
        assert_eq!(rejected_count(&app).await, 0);

        // The token app's call callbacks are unaffected.
        let query = format!("{}&token={TOKEN}", status_query(TOKEN_APP, "call_end"));
        let (status, answer) =
            app.post(&query, status_body("c-1", "u", "caller", "normal_end").to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
}

both_backends! {
    /// Refusals anyone could cause (a failed `Sign`, a body too large to check it) are kept
    /// at most `failed_signatures_kept_per_minute` per app and minute; past the cap they are
    /// answered the same, not kept, and counted. Retries of a kept one still count on its
    /// row; refusals of an authenticated or unverified app are not capped.
    async fn failed_signatures_past_the_cap_are_not_kept(backend: Backend) {
        let app = spawn_with_cap(backend, 3).await;
        let keyed = KEYED_APP.to_string();
        let body = fixture("sign-example-204.json");
        let capped_sign = "callhook_rejected_records_capped_total{reason=\"auth_failed\"}";
        let capped_size = "callhook_rejected_records_capped_total{reason=\"body_too_large\"}";
        let before = (counter(&app, capped_sign).await, counter(&app, capped_size).await);

        let wrong = |n: usize| callhook::auth::trtc::sign(format!("wrong-key-{n}").as_bytes(), &body);
        for n in 0..5 {
            let (status, answer) = post_trtc(&app, Some(&keyed), Some(&wrong(n)), body.clone()).await;
            assert_eq!((status, answer["code"].clone()), (403, json!(71102)), "{n}");
        }
        assert_eq!(rejected_count(&app).await, 3, "the cap");
        // A retry of one that was kept: counted on its row, no new row.
        let (status, _) = post_trtc(&app, Some(&keyed), Some(&wrong(0)), body.clone()).await;
        assert_eq!(status, 403);
        let rejected = app.rejected().await;
        assert_eq!(rejected.len(), 3);
        assert_eq!(rejected.iter().map(|r| r.deliveries).max(), Some(2));
        // A retry of one that was not kept is not kept either.
        let (status, _) = post_trtc(&app, Some(&keyed), Some(&wrong(4)), body.clone()).await;
        assert_eq!(status, 403);
        // Too large to check the Sign: as unauthenticated, so capped too.
        let large = vec![b' '; 70 * 1024];
        let (status, answer) = post_trtc(&app, Some(&keyed), Some(&wrong(9)), large).await;
        assert_eq!((status, answer["code"].clone()), (413, json!(71203)));
        assert_eq!(rejected_count(&app).await, 3);
        let after = (counter(&app, capped_sign).await, counter(&app, capped_size).await);
        // The metric is the process's: the other backend's run may add to it meanwhile.
        assert!(after.0 - before.0 >= 3.0, "{before:?} -> {after:?}");
        assert!(after.1 - before.1 >= 1.0, "{before:?} -> {after:?}");

        // The signed delivery is stored all the same.
        let (status, _) = post_trtc(&app, Some(&keyed), Some(EXAMPLE_SIGN), body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(app.events().await.len(), 1);
        // An app without a key has nothing to authenticate: its refusals are not capped.
        for n in 0..5 {
            let (status, _) = post_trtc(&app, Some(&APP.to_string()), None, format!("[{n}]")).await;
            assert_eq!(status, 400);
        }
        assert_eq!(rejected_count(&app).await, 8);
    }
}

async fn spawn_with_cap(backend: Backend, cap: u32) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        let keyed = AppSettings {
            trtc_key: Some(Secret::new(KEY)),
            ..AppSettings::new(KEYED_APP)
        };
        s.apps.insert(KEYED_APP, keyed);
        s.failed_signatures_kept_per_minute = cap;
    })
    .await
}
