//! The three callback families end to end: a fixture for every command of every family,
//! parsed by the protocol module and stored through the real endpoint on both backends;
//! the event and v4 families' specifics; commands callhook does not know; authentication
//! over HTTP; and hundreds of hostile and mutated bodies.
//!
//! Fixtures live in `tests/fixtures/<family>/<command>.json` (the body as Tencent would
//! send it, our own values) with `<command>.expected.json` beside it: the stored row(s),
//! column by column, timestamps in Unix milliseconds.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callhook::protocol::{Context, EventRow, classify, parse_delivery};
use callhook::store::Store;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// The columns every sidecar names, in this order.
const COLUMNS: [&str; 15] = [
    "family",
    "command",
    "call_id",
    "user_id",
    "role",
    "event",
    "call_result",
    "media_type",
    "call_type",
    "room_id",
    "total_num",
    "event_time",
    "start_call_ts",
    "accept_ts",
    "end_ts",
];

const PLAIN_OK: &str = r#"{"ErrorCode":0,"ErrorMessage":"Success"}"#;
const V4_OK: &str =
    r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success"}"#;
const DUPLICATE: &str = "Success (duplicate delivery, already stored)";

/// One fixture: a body and the rows it must store.
struct Fixture {
    family: &'static str,
    command: String,
    body: Vec<u8>,
    expected: Vec<Value>,
}

impl Fixture {
    fn v4(&self) -> bool {
        self.family == "v4"
    }

    /// The query Tencent builds for this family.
    fn query(&self) -> String {
        if self.v4() {
            v4_query(APP, &self.command)
        } else {
            status_query(APP, &self.command)
        }
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|e| panic!("{}: {e}", self.command))
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fixture, checked to cover exactly the commands callhook knows.
fn fixtures() -> Vec<Fixture> {
    let mut all = Vec::new();
    let families: [(&'static str, &[&str]); 3] = [
        ("status", &callhook::protocol::STATUS_COMMANDS),
        ("event", &callhook::protocol::EVENT_COMMANDS),
        ("v4", &callhook::protocol::V4_COMMANDS),
    ];
    for (family, commands) in families {
        let dir = fixtures_dir().join(family);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name())
            .filter_map(|n| n.to_str().map(str::to_owned))
            .filter_map(|n| {
                n.strip_suffix(".json")
                    .filter(|s| !s.ends_with(".expected"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        let want: BTreeSet<&str> = commands.iter().copied().collect();
        let have: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            have, want,
            "tests/fixtures/{family} covers every {family} command"
        );
        for command in names {
            let body = read(&dir.join(format!("{command}.json")));
            let sidecar = read(&dir.join(format!("{command}.expected.json")));
            let expected: Vec<Value> = serde_json::from_slice(&sidecar)
                .unwrap_or_else(|e| panic!("{command}.expected.json: {e}"));
            assert!(!expected.is_empty(), "{command}: no expected row");
            for row in &expected {
                let keys: Vec<&str> = row
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let mut want_keys = COLUMNS.to_vec();
                want_keys.sort_unstable();
                assert_eq!(
                    keys, want_keys,
                    "{command}.expected.json names every column"
                );
                assert_eq!(row["family"], family, "{command}");
                assert_eq!(row["command"], command.as_str(), "{command}");
            }
            all.push(Fixture {
                family,
                command,
                body,
                expected,
            });
        }
    }
    assert_eq!(all.len(), 29);
    all
}

/// The compared columns of a parsed row.
fn parsed_columns(r: &EventRow) -> Value {
    json!({
        "family": r.family.as_str(),
        "command": r.command,
        "call_id": r.call_id,
        "user_id": r.user_id,
        "role": r.role.as_ref().map(|v| v.as_str()),
        "event": r.event,
        "call_result": r.call_result.as_ref().map(|v| v.as_str()),
        "media_type": r.media_type.as_ref().map(|v| v.as_str()),
        "call_type": r.call_type.as_ref().map(|v| v.as_str()),
        "room_id": r.room_id,
        "total_num": r.total_num,
        "event_time": r.event_time,
        "start_call_ts": r.start_call_ts,
        "accept_ts": r.accept_ts,
        "end_ts": r.end_ts,
    })
}

/// The compared columns of a stored row.
fn stored_columns(r: &StoredEvent) -> Value {
    json!({
        "family": r.family,
        "command": r.command,
        "call_id": r.call_id,
        "user_id": r.user_id,
        "role": r.role,
        "event": r.event,
        "call_result": r.call_result,
        "media_type": r.media_type,
        "call_type": r.call_type,
        "room_id": r.room_id,
        "total_num": r.total_num,
        "event_time": r.event_time,
        "start_call_ts": r.start_call_ts,
        "accept_ts": r.accept_ts,
        "end_ts": r.end_ts,
    })
}

/// Rows in a stable order (a multi-row delivery's rows are not stored in body order).
fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| (r["user_id"].to_string(), r["event"].to_string()));
    rows
}

fn ctx<'a>(command: &'a str) -> Context<'a> {
    Context {
        sdkappid: APP,
        command,
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at: 1_704_900_000_000,
    }
}

/// Parses a body the way the endpoint does for `query`.
fn parse_like_endpoint(
    query: &str,
    body: &[u8],
) -> Result<Vec<EventRow>, callhook::protocol::Rejection> {
    let q = callhook::protocol::CallbackQuery::parse(query);
    let command = q.command.clone().unwrap_or_default();
    parse_delivery(classify(&command), q.v4_style, &ctx(&command), body)
}

/// POSTs and returns the status and the answer's exact text.
async fn post_raw(app: &TestApp, query: &str, body: Vec<u8>) -> (u16, String) {
    let resp = app
        .client
        .post(app.url(&format!("/?{query}")))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /?{query}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Fixtures: the protocol level, then through HTTP on both backends.
// ---------------------------------------------------------------------------------------

/// Every fixture parses into exactly its expected rows, with the payload kept verbatim,
/// and parsing is deterministic (the dedupe keys of a second parse are the same).
#[test]
fn every_fixture_parses_into_its_expected_rows() {
    for f in fixtures() {
        let parse = || {
            parse_delivery(classify(&f.command), f.v4(), &ctx(&f.command), &f.body)
                .unwrap_or_else(|r| panic!("{}: {r}", f.command))
        };
        let rows = parse();
        let got = sorted(rows.iter().map(parsed_columns).collect());
        assert_eq!(got, sorted(f.expected.clone()), "{}", f.command);
        for (i, r) in rows.iter().enumerate() {
            let payload = r.payload.as_deref();
            if i == 0 {
                assert_eq!(
                    payload,
                    Some(f.text()),
                    "{}: the payload is the body as sent",
                    f.command
                );
            } else {
                assert_eq!(
                    payload, None,
                    "{}: the body is stored once per delivery",
                    f.command
                );
            }
            assert_eq!(r.sdkappid, APP);
            assert_eq!(r.notes, None, "{}: everything could be read", f.command);
        }
        let keys: Vec<_> = rows.iter().map(|r| r.dedupe_key).collect();
        let again: Vec<_> = parse().iter().map(|r| r.dedupe_key).collect();
        assert_eq!(keys, again, "{}", f.command);
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{}: one key per row", f.command);
        // A retry with other whitespace and key order is the same event.
        let reformatted: Value = serde_json::from_slice(&f.body).unwrap_or_default();
        let compact = serde_json::to_vec(&reformatted).unwrap_or_default();
        let keys_compact: Vec<_> =
            parse_delivery(classify(&f.command), f.v4(), &ctx(&f.command), &compact)
                .unwrap_or_else(|r| panic!("{}: {r}", f.command))
                .iter()
                .map(|r| r.dedupe_key)
                .collect();
        assert_eq!(
            keys, keys_compact,
            "{}: reformatting is not a new event",
            f.command
        );
    }
}

both_backends! {
    /// Each fixture, posted with the query Tencent builds for its family, is answered with
    /// the family's exact envelope and stored field by field; a second delivery of each is
    /// a duplicate.
    async fn every_fixture_is_stored_field_by_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let fixtures = fixtures();
        let mut seen = 0;
        for f in &fixtures {
            let (status, answer) = post_raw(&app, &f.query(), f.body.clone()).await;
            assert_eq!(status, 200, "{}: {answer}", f.command);
            assert_eq!(answer, if f.v4() { V4_OK } else { PLAIN_OK }, "{}", f.command);

            let rows = app.events().await;
            let new = &rows[seen..];
            seen = rows.len();
            let got = sorted(new.iter().map(stored_columns).collect());
            assert_eq!(got, sorted(f.expected.clone()), "{} stored", f.command);
            let (ip, platform) = if f.v4() { ("10.0.0.8", "iOS") } else { ("10.0.0.7", "Android") };
            for r in new {
                assert_eq!(r.sdkappid, APP);
                assert_eq!(r.client_ip.as_deref(), Some(ip), "{}", f.command);
                assert_eq!(r.opt_platform.as_deref(), Some(platform), "{}", f.command);
                assert_eq!(r.remote_addr.as_deref(), Some("127.0.0.1"));
                assert_eq!(r.deliveries, 1);
                assert_eq!(r.notes, None, "{}", f.command);
            }
            // The body byte for byte, on both backends, once per delivery.
            let payloads: Vec<&str> = new.iter().filter_map(|r| r.payload_text.as_deref()).collect();
            assert_eq!(payloads, vec![f.text()], "{}: payload as received, once", f.command);
        }
        assert_eq!(seen, 30, "29 deliveries, the member change stores two rows");

        for f in &fixtures {
            let (status, answer) = post_raw(&app, &f.query(), f.body.clone()).await;
            assert_eq!(status, 200, "{}: {answer}", f.command);
            let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
            assert_eq!(answer["ErrorCode"], 0);
            assert_eq!(answer["ErrorMessage"], DUPLICATE, "{}", f.command);
            if f.v4() {
                assert_eq!((&answer["ActionStatus"], &answer["ErrorInfo"]), (&json!("OK"), &json!("")));
            }
        }
        let rows = app.events().await;
        assert_eq!(rows.len(), 30);
        assert!(rows.iter().all(|r| r.deliveries == 2), "every row was delivered twice");
        assert!(app.rejected().await.is_empty());
    }
}

/// The columns a body field feeds, per family: a field of another type may change these
/// columns, and only these. (`[]`: a field callhook does not read.)
fn fed_columns(family: &str, command: &str, path: &str) -> Vec<&'static str> {
    let v = |c: &[&'static str]| c.to_vec();
    match (family, path) {
        ("status" | "event", "UserId") => v(&["user_id"]),
        ("status" | "event", "RoomId") => v(&["room_id"]),
        ("status" | "event", "TotalNum") => v(&["total_num"]),
        ("status" | "event", "MediaType") => v(&["media_type"]),
        ("status" | "event", "CallType") => v(&["call_type"]),
        ("status" | "event", "CallId") => v(&["call_id"]),
        ("status" | "event", "Role") => v(&["role"]),
        ("status" | "event", "CallResult") => v(&["call_result"]),
        ("status" | "event", "Event") => v(&["event"]),
        ("status" | "event", "EventTime") => v(&["event_time"]),
        ("status" | "event", "StartCallTs") => v(&["start_call_ts"]),
        ("status" | "event", "AcceptTs") => v(&["accept_ts"]),
        ("status" | "event", "EndTs") => v(&["end_ts"]),
        ("v4", "EventTime") if command.ends_with("StartCall") => {
            v(&["event_time", "start_call_ts"])
        }
        ("v4", "EventTime") => v(&["event_time"]),
        ("v4", "CallId") => v(&["call_id"]),
        ("v4", "UserList") if command.ends_with("StartCall") => {
            v(&["user_id", "role", "call_type", "total_num"])
        }
        ("v4", "UserList") => v(&["total_num"]),
        ("v4", "CallInfo") => v(&["call_id", "media_type", "call_type", "room_id"]),
        ("v4", "CallInfo.CallId") => v(&["call_id"]),
        ("v4", "CallInfo.CallMediaType" | "CallInfo.MediaType") => v(&["media_type"]),
        ("v4", "CallInfo.ChatGroupId") => v(&["call_type"]),
        ("v4", "CallInfo.RoomId") => v(&["room_id"]),
        ("v4", "CallRecord") => v(&[
            "call_id",
            "user_id",
            "role",
            "total_num",
            "media_type",
            "call_type",
            "start_call_ts",
            "end_ts",
            "accept_ts",
            "call_result",
            "room_id",
        ]),
        ("v4", "CallRecord.CallId") => v(&["call_id"]),
        ("v4", "CallRecord.Caller_Account") => v(&["user_id", "role", "total_num"]),
        ("v4", "CallRecord.CalleeList_Account") => v(&["total_num"]),
        ("v4", "CallRecord.MediaType") => v(&["media_type"]),
        ("v4", "CallRecord.CallType") => v(&["call_type"]),
        ("v4", "CallRecord.StartTime") => v(&["start_call_ts"]),
        ("v4", "CallRecord.EndTime") => v(&["end_ts"]),
        ("v4", "CallRecord.AcceptTime") => v(&["accept_ts"]),
        ("v4", "CallRecord.CallResult") => v(&["call_result"]),
        ("v4", "CallRecord.RoomId") => v(&["room_id"]),
        ("v4", "ChangedUserList") => v(&["user_id", "event"]),
        _ => Vec::new(),
    }
}

/// Every field of a body (top level, and one level into `CallInfo` and `CallRecord`),
/// each given every JSON type it does not have.
fn type_mutants(body: &Value) -> Vec<(String, Value)> {
    let others = |v: &Value| -> Vec<Value> {
        [
            json!(true),
            json!({"x": 1}),
            json!([1, 2]),
            json!(null),
            json!(12345),
            json!("text-value"),
        ]
        .into_iter()
        .filter(|m| std::mem::discriminant(m) != std::mem::discriminant(v))
        .collect()
    };
    let mut out = Vec::new();
    let Some(top) = body.as_object() else {
        return out;
    };
    for (key, value) in top {
        for m in others(value) {
            let mut b = body.clone();
            b[key] = m;
            out.push((key.clone(), b));
        }
        if let Some(nested) = value.as_object() {
            for (inner, v) in nested {
                for m in others(v) {
                    let mut b = body.clone();
                    b[key][inner] = m;
                    out.push((format!("{key}.{inner}"), b));
                }
            }
        }
    }
    out
}

both_backends! {
    /// Tencent may change any field's type at any time: every fixture, with one field at a
    /// time given another JSON type, is stored and answered 0; the columns that field
    /// feeds may change (to NULL when it cannot be read, with a note naming it), and every
    /// other column stays exactly as for the documented body.
    async fn a_field_of_another_type_costs_only_its_own_columns(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let mut sent: Vec<Mutant> = Vec::new();
        for f in fixtures() {
            let body: Value = serde_json::from_slice(&f.body).unwrap_or_else(|e| panic!("{e}"));
            for (path, mutant) in type_mutants(&body) {
                let text = mutant.to_string();
                let (status, answer) = post_raw(&app, &f.query(), text.clone().into_bytes()).await;
                assert_eq!(status, 200, "{} {path}: {answer}", f.command);
                let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
                assert_eq!(answer["ErrorCode"], 0, "{} {path}", f.command);
                let fed = fed_columns(f.family, &f.command, &path);
                let leaf = path.rsplit('.').next().unwrap_or(&path);
                let unreadable = mutant.pointer(&format!("/{}", path.replace('.', "/")))
                    .is_some_and(|v| v.is_boolean() || v.is_object() || v.is_array()
                        || (v.is_string() && leaf != "RoomId" && !text_field(leaf)));
                let mut expected = f.expected.clone();
                if path == "ChangedUserList" {
                    expected.truncate(1);
                }
                let name = format!("{} {path} = {}", f.command, mutant.pointer(&format!("/{}", path.replace('.', "/"))).unwrap_or(&Value::Null));
                sent.push(Mutant { name, text, fed, unreadable, expected });
            }
        }
        assert!(sent.len() > 500, "{} mutants", sent.len());
        let rows = app.events().await;
        let mut at = 0;
        for Mutant { name, text, fed, unreadable, expected } in &sent {
            let mine = &rows[at..at + expected.len()];
            at += expected.len();
            assert_eq!(mine.iter().filter_map(|r| r.payload_text.as_deref()).collect::<Vec<_>>(), vec![text.as_str()], "{name}");
            let got = sorted(mine.iter().map(stored_columns).collect());
            let want = sorted(expected.clone());
            for (g, w) in got.iter().zip(&want) {
                for column in COLUMNS {
                    if !fed.contains(&column) {
                        assert_eq!(g[column], w[column], "{name}: {column} must not change");
                    }
                }
            }
            if *unreadable && !fed.is_empty() {
                assert!(
                    mine.iter().all(|r| r.notes.as_deref().is_some_and(|n| n.contains(name.split(' ').nth(1).unwrap_or_default()))),
                    "{name}: noted: {:?}", mine[0].notes
                );
            }
        }
        assert_eq!(at, rows.len(), "one delivery's rows per mutant");
    }
}

/// One fixture with one field of another type: what was sent, and what it may change.
struct Mutant {
    name: String,
    text: String,
    fed: Vec<&'static str>,
    unreadable: bool,
    expected: Vec<Value>,
}

/// Fields read as text, which a number also fills (its digits).
fn text_field(name: &str) -> bool {
    matches!(
        name,
        "UserId"
            | "CallId"
            | "MediaType"
            | "CallType"
            | "Role"
            | "CallResult"
            | "Event"
            | "Caller_Account"
            | "CallMediaType"
            | "ChatGroupId"
            | "CallbackCommand"
    )
}

// ---------------------------------------------------------------------------------------
// Event family specifics.
// ---------------------------------------------------------------------------------------

/// Command, call, user, role and event of a stored row.
type EventSummary<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn event_body(call: &str, user: &str, role: Option<&str>, event: Option<&str>) -> Value {
    let mut b = json!({
        "UserId": user, "RoomId": "7001", "TotalNum": 2, "MediaType": "video",
        "CallType": "single", "CallId": call, "CallResult": "", "EventTime": 1_704_880_100,
        "StartCallTs": 1_704_880_000, "AcceptTs": 0, "EndTs": 0,
    });
    if let Some(role) = role {
        b["Role"] = json!(role);
    }
    if let Some(event) = event {
        b["Event"] = json!(event);
    }
    b
}

both_backends! {
    /// `call_end` and `call_interrupted` exist for both roles with the same `Event`: only
    /// `Role` tells them apart, and they are four different events of one call. Without
    /// `Role` or `Event` in the body, the command's prefix and action fill them in. An empty
    /// `CallResult` and 0 timestamps are NULL.
    async fn event_family_roles_and_fallbacks(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let sends = [
            ("caller_call_end", event_body("ev-1", "alice", Some("caller"), Some("call_end"))),
            ("callee_call_end", event_body("ev-1", "bob", Some("callee"), Some("call_end"))),
            ("caller_call_interrupted", event_body("ev-1", "alice", Some("caller"), Some("call_interrupted"))),
            ("callee_call_interrupted", event_body("ev-1", "bob", Some("callee"), Some("call_interrupted"))),
            // Same user, same event, same time, other role: still a different event.
            ("callee_call_end", event_body("ev-2", "carol", Some("callee"), Some("call_end"))),
            ("caller_call_end", event_body("ev-2", "carol", Some("caller"), Some("call_end"))),
            // Fallbacks: the role from the prefix, the event from the command.
            ("Callee_Reject_Call", event_body("ev-3", "bob", None, None)),
            ("caller_start_call", event_body("ev-3", "alice", None, Some("StartCall"))),
            ("invite_user", event_body("ev-3", "carol", None, None)),
        ];
        for (command, body) in &sends {
            let (status, answer) = app.post(&status_query(APP, command), body.to_string()).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{command}: {answer}");
        }
        let rows = app.events().await;
        let got: Vec<EventSummary<'_>> = rows
            .iter()
            .map(|r| (r.command.as_str(), r.call_id.as_deref().unwrap_or_default(), r.user_id.as_deref(), r.role.as_deref(), r.event.as_deref()))
            .collect();
        assert_eq!(got, vec![
            ("caller_call_end", "ev-1", Some("alice"), Some("caller"), Some("call_end")),
            ("callee_call_end", "ev-1", Some("bob"), Some("callee"), Some("call_end")),
            ("caller_call_interrupted", "ev-1", Some("alice"), Some("caller"), Some("call_interrupted")),
            ("callee_call_interrupted", "ev-1", Some("bob"), Some("callee"), Some("call_interrupted")),
            ("callee_call_end", "ev-2", Some("carol"), Some("callee"), Some("call_end")),
            ("caller_call_end", "ev-2", Some("carol"), Some("caller"), Some("call_end")),
            ("Callee_Reject_Call", "ev-3", Some("bob"), Some("callee"), Some("reject_call")),
            ("caller_start_call", "ev-3", Some("alice"), Some("caller"), Some("start_call")),
            ("invite_user", "ev-3", Some("carol"), None, Some("invite_user")),
        ]);
        for r in &rows {
            assert_eq!(r.family, "event");
            assert_eq!(r.call_result, None, "an empty CallResult is NULL");
            assert_eq!(r.event_time, Some(1_704_880_100_000));
            assert_eq!(r.start_call_ts, Some(1_704_880_000_000));
            assert_eq!((r.accept_ts, r.end_ts), (None, None), "0 timestamps are NULL");
            assert_eq!(r.deliveries, 1);
        }
        // The body's Role wins over the prefix; an event command never infers a result.
        let body = event_body("ev-4", "dave", Some("callee"), Some("call_rejected"));
        app.post(&status_query(APP, "caller_call_rejected"), body.to_string()).await;
        let last = app.events().await.pop().unwrap_or_else(|| panic!("no row"));
        assert_eq!((last.role.as_deref(), last.call_result.as_deref()), (Some("callee"), None));
    }
}

// ---------------------------------------------------------------------------------------
// v4 family specifics.
// ---------------------------------------------------------------------------------------

fn end_call(call: &str, result: &str, call_type: &str, media: &str, accept: i64) -> String {
    json!({
        "CallbackCommand": "Call.CallbackAfterEndCall",
        "CallRecord": {
            "CallId": call, "Caller_Account": "alice", "MediaType": media, "CallType": call_type,
            "StartTime": 1_704_890_000, "EndTime": 1_704_890_060, "AcceptTime": accept,
            "CallResult": result, "CalleeList_Account": ["alice", "bob", "carol"],
            "RoomId": "5511", "RoomIdType": 1
        },
        "EventTime": 1_704_890_060_789_i64
    })
    .to_string()
}

both_backends! {
    /// v4 values map onto the status vocabulary, `EventTime` is milliseconds, the record's
    /// times seconds, and `AcceptTime` 0 is NULL. Every answer is the v4 envelope.
    async fn v4_values_are_mapped(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let cases = [
            ("NormalEnd", "SingleCall", "Audio", 1_704_890_004, "normal_end", "single", "audio"),
            ("NotAnswer", "SingleCall", "Video", 0, "not_answer", "single", "video"),
            ("CallBusy", "SingleCall", "Audio", 0, "call_busy", "single", "audio"),
            ("Cancel", "MultiCall", "Video", 0, "cancel", "group", "video"),
            ("Reject", "MultiCall", "Audio", 0, "reject", "group", "audio"),
            ("Interrupt", "MultiCall", "Video", 1_704_890_010, "interrupt", "group", "video"),
            ("Offline", "MultiCall", "Audio", 1_704_890_010, "offline", "group", "audio"),
            ("SpaceWarp", "HoloCall", "Smell", 0, "space_warp", "holo_call", "smell"),
        ];
        for (i, (result, call_type, media, accept, ..)) in cases.iter().enumerate() {
            let body = end_call(&format!("v4-{i}"), result, call_type, media, *accept);
            let (status, answer) = post_raw(&app, &v4_query(APP, "Call.CallbackAfterEndCall"), body.into_bytes()).await;
            assert_eq!((status, answer.as_str()), (200, V4_OK), "{result}");
        }
        let rows = app.events().await;
        assert_eq!(rows.len(), cases.len());
        for (r, (sent, _, _, accept, result, call_type, media)) in rows.iter().zip(cases) {
            assert_eq!(r.family, "v4");
            assert_eq!(r.command, "Call.CallbackAfterEndCall");
            assert_eq!(r.call_result.as_deref(), Some(result), "{sent}");
            assert_eq!(r.call_type.as_deref(), Some(call_type), "{sent}");
            assert_eq!(r.media_type.as_deref(), Some(media), "{sent}");
            assert_eq!(r.user_id.as_deref(), Some("alice"));
            assert_eq!(r.role.as_deref(), Some("caller"));
            assert_eq!(r.total_num, Some(3), "the caller listed among the callees counts once");
            assert_eq!(r.event_time, Some(1_704_890_060_789), "EventTime is in milliseconds");
            assert_eq!(r.start_call_ts, Some(1_704_890_000_000));
            assert_eq!(r.end_ts, Some(1_704_890_060_000));
            let want_accept = (accept != 0).then_some(accept * 1000);
            assert_eq!(r.accept_ts, want_accept, "{sent}: AcceptTime 0 is NULL");
            assert_eq!(r.room_id.as_deref(), Some("5511"));
        }
        // An end call without its record is stored, noted; a refusal is the v4 envelope too.
        let (status, answer) = post_raw(&app, &v4_query(APP, "Call.CallbackAfterEndCall"), b"{}".to_vec()).await;
        assert_eq!((status, answer.as_str()), (200, V4_OK));
        let rows = app.events().await;
        assert_eq!(rows.last().and_then(|r| r.notes.as_deref()), Some("CallRecord: missing"));
        let (status, answer) = post_raw(&app, &v4_query(APP, "Call.CallbackAfterEndCall"), b"[]".to_vec()).await;
        assert_eq!(status, 400);
        let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
        assert_eq!(answer["ActionStatus"], "FAIL");
        assert_eq!(answer["ErrorCode"], 71001);
        assert_eq!(answer["ErrorInfo"], answer["ErrorMessage"]);
    }
}

both_backends! {
    /// Member changes store one row per changed member, with both documented spellings of
    /// every `ActionType` mapped onto one value.
    async fn v4_member_actions_both_spellings(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let actions = [
            ("Answer", "accept"), ("Accept", "accept"), ("Hangup", "hangup"), ("Hang Up", "hangup"),
            ("Invite", "invite"), ("Invited", "invite"), ("Cancel_Invite", "cancel_invite"),
            ("Canncel_Invite", "cancel_invite"), ("Reject", "reject"), ("NotAnswer", "not_answer"),
            ("Join", "join"), ("Offline", "offline"),
        ];
        let changed: Vec<Value> = actions
            .iter()
            .enumerate()
            .map(|(i, (a, _))| json!({"User_Account": format!("user-{i:02}"), "ActionType": a}))
            .collect();
        let body = json!({
            "CallbackCommand": "Call.CallbackAfterMemberChanged",
            "CallId": "member-1",
            "UserList": [{"User_Account": "alice", "Status": "Calling"}, {"User_Account": "bob", "Status": "Waiting"}],
            "ChangedUserList": changed,
            "EventTime": 1_704_895_000_001_i64,
        });
        let (status, answer) = post_raw(&app, &v4_query(APP, "Call.CallbackAfterMemberChanged"), body.to_string().into_bytes()).await;
        assert_eq!((status, answer.as_str()), (200, V4_OK));
        let mut rows = app.events().await;
        rows.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let got: Vec<(Option<&str>, Option<&str>)> = rows.iter().map(|r| (r.user_id.as_deref(), r.event.as_deref())).collect();
        let want: Vec<(Option<String>, Option<&str>)> = actions.iter().enumerate().map(|(i, (_, e))| (Some(format!("user-{i:02}")), Some(*e))).collect();
        let want: Vec<(Option<&str>, Option<&str>)> = want.iter().map(|(u, e)| (u.as_deref(), *e)).collect();
        assert_eq!(got, want);
        for r in &rows {
            assert_eq!((r.family.as_str(), r.call_id.as_deref()), ("v4", Some("member-1")));
            assert_eq!(r.total_num, Some(2));
            assert_eq!(r.event_time, Some(1_704_895_000_001));
            assert_eq!(r.members, Some(json!(["alice", "bob"])));
        }
        let with_body: Vec<&StoredEvent> = rows.iter().filter(|r| r.payload_text.is_some()).collect();
        assert_eq!(with_body.len(), 1, "the body is stored once, however many rows it makes");
        assert_eq!(with_body[0].payload, body);
        // The same delivery again: every row is a repeat.
        let (_, answer) = app.post(&v4_query(APP, "Call.CallbackAfterMemberChanged"), body.to_string()).await;
        assert_eq!(answer["ErrorMessage"], DUPLICATE);
        assert!(app.events().await.iter().all(|r| r.deliveries == 2));

        // More changes than a delivery is stored as rows: one row, noted, the body kept.
        let many: Vec<Value> = (0..200).map(|i| json!({"User_Account": format!("m-{i}"), "ActionType": "Join"})).collect();
        let big = json!({
            "CallbackCommand": "Call.CallbackAfterMemberChanged", "CallId": "member-2",
            "ChangedUserList": many, "EventTime": 1_704_895_000_002_i64,
        });
        let (status, answer) = post_raw(&app, &v4_query(APP, "Call.CallbackAfterMemberChanged"), big.to_string().into_bytes()).await;
        assert_eq!((status, answer.as_str()), (200, V4_OK));
        let rows: Vec<StoredEvent> = app.events().await.into_iter().filter(|r| r.call_id.as_deref() == Some("member-2")).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].user_id, None);
        assert_eq!(
            rows[0].notes.as_deref(),
            Some("ChangedUserList: 200 changes, more than the 64 a delivery is stored as rows; stored as one row (the changes are in the payload)")
        );
        assert_eq!(rows[0].payload, big);
    }
}

both_backends! {
    /// Only true repeats merge: two different `invite_user` deliveries of one caller in the
    /// same second (two people invited) are two rows; the same one again is a repeat.
    async fn two_invitations_in_one_second_are_two_events(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let invite = |invitee: &str| {
            let mut b = event_body("inv-1", "alice", Some("caller"), Some("invite_user"));
            b["Invitee"] = json!(invitee);
            b
        };
        let q = status_query(APP, "invite_user");
        for body in [invite("carol"), invite("dave"), invite("carol")] {
            let (status, _) = app.post(&q, body.to_string()).await;
            assert_eq!(status, 200);
        }
        let rows = app.events().await;
        let got: Vec<(Option<String>, i64)> = rows
            .iter()
            .map(|r| (r.payload["Invitee"].as_str().map(str::to_owned), r.deliveries))
            .collect();
        assert_eq!(got, vec![(Some("carol".to_owned()), 2), (Some("dave".to_owned()), 1)]);
        assert!(rows.iter().all(|r| r.event_time == rows[0].event_time && r.user_id.as_deref() == Some("alice")));
        let calls = scalar(app.store(), "SELECT count(*) FROM calls WHERE call_id = 'inv-1'").await;
        assert_eq!(calls, 1, "the calls view still counts the call once");
    }
}

/// Account ids of 18 to 25 digits, all beyond 2^53.
const BIG_ACCOUNTS: [&str; 4] = [
    "144115188075855873",
    "9007199254740993123",
    "18446744073709551617",
    "1234567890123456789012345",
];

both_backends! {
    /// Numeric `User_Account`s larger than a double can hold keep every digit, in the
    /// payload and in `user_id`, for all three v4 commands.
    async fn v4_big_numeric_accounts_keep_every_digit(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let [a, b, c, d] = BIG_ACCOUNTS;
        let start = format!(
            r#"{{"CallbackCommand":"Call.CallbackAfterStartCall","CallInfo":{{"CallId":"big-1","CallMediaType":"Audio","ChatGroupId":"","RoomId":"1","RoomIdType":1}},"UserList":[{{"User_Account":{a},"Status":"Calling"}},{{"User_Account":{b},"Status":"Waiting"}}],"EventTime":1704896000000}}"#
        );
        let end = format!(
            r#"{{"CallbackCommand":"Call.CallbackAfterEndCall","CallRecord":{{"CallId":"big-1","Caller_Account":{c},"MediaType":"Audio","CallType":"SingleCall","StartTime":1704896000,"EndTime":1704896030,"AcceptTime":1704896002,"CallResult":"NormalEnd","CalleeList_Account":[{c},{d}],"RoomId":"1","RoomIdType":1}},"EventTime":1704896030000}}"#
        );
        let member = format!(
            r#"{{"CallbackCommand":"Call.CallbackAfterMemberChanged","CallId":"big-1","UserList":[{{"User_Account":{a},"Status":"Calling"}}],"ChangedUserList":[{{"User_Account":{d},"ActionType":"Join"}}],"EventTime":1704896010000}}"#
        );
        let sends = [
            ("Call.CallbackAfterStartCall", &start, a, b),
            ("Call.CallbackAfterEndCall", &end, c, d),
            ("Call.CallbackAfterMemberChanged", &member, d, a),
        ];
        for (command, body, user, other) in sends {
            let (status, answer) = post_raw(&app, &v4_query(APP, command), body.clone().into_bytes()).await;
            assert_eq!((status, answer.as_str()), (200, V4_OK), "{command}");
            let rows = app.events().await;
            let r = rows.last().unwrap_or_else(|| panic!("no row"));
            assert_eq!(r.command, command);
            assert_eq!(r.user_id.as_deref(), Some(user), "{command}: user_id keeps every digit");
            let text = r.payload_text.clone().unwrap_or_default();
            for digits in [user, other] {
                assert!(text.contains(digits), "{command}: payload keeps {digits}: {text}");
                assert!(!text.contains(&format!("\"{digits}\"")), "{command}: still a JSON number");
            }
            assert!(
                r.members.as_ref().is_some_and(|m| m.as_array().is_some_and(|a| a.contains(&json!(other)))),
                "{command}: members keep every digit: {:?}", r.members
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands callhook does not know.
// ---------------------------------------------------------------------------------------

both_backends! {
    /// A command the app's list allows but callhook does not know is stored generically
    /// (family `other`): the payload and whatever common fields it has; an identical
    /// redelivery is a duplicate. A command not in the app's list is refused with 70001
    /// and kept.
    async fn unknown_but_allowed_commands_are_stored_generically(backend: Backend) {
        // The app as a configuration file declares it, resolved the way `serve` does.
        let mut commands: Vec<String> = callhook::protocol::known_commands().map(|c| format!("{c:?}")).collect();
        commands.extend(["\"caller_new_thing\"".to_owned(), "\"Call.CallbackAfterSomethingNew\"".to_owned()]);
        let toml = format!("[[apps]]\nsdkappid = {APP}\ncommands = [{}]\n", commands.join(", "));
        let file = callhook::config::FileConfig::parse(&toml).unwrap_or_else(|e| panic!("{e}"));
        let resolved = callhook::config::Settings::resolve(&callhook::cli::ServeArgs::default(), file, None, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let configured = resolved.apps.get(&APP).cloned().unwrap_or_else(|| panic!("no app"));
        assert_eq!(configured.commands.as_ref().map(|c| c.len()), Some(31));
        let app = TestApp::spawn_with(backend, |s| {
            s.apps.insert(APP, configured);
        }).await;

        let v1 = json!({
            "UserId": "alice", "CallId": "new-1", "Role": "Caller", "Event": "NewThing",
            "MediaType": "Video", "EventTime": 1_704_897_000, "Sparkle": {"level": 3}
        }).to_string();
        let q1 = status_query(APP, "caller_new_thing");
        let (status, answer) = post_raw(&app, &q1, v1.clone().into_bytes()).await;
        assert_eq!((status, answer.as_str()), (200, PLAIN_OK));

        let v4 = json!({
            "CallbackCommand": "Call.CallbackAfterSomethingNew", "CallId": "new-2",
            "EventTime": 1_704_897_001_234_i64, "Gizmo": [1, 2, 3]
        }).to_string();
        let q4 = v4_query(APP, "Call.CallbackAfterSomethingNew");
        let (status, answer) = post_raw(&app, &q4, v4.clone().into_bytes()).await;
        assert_eq!((status, answer.as_str()), (200, V4_OK));

        // Fields of the wrong type do not refuse an unknown command: they are just not typed.
        let odd = json!({"UserId": {"nested": true}, "CallId": ["x"], "Whatever": null}).to_string();
        let (status, _) = post_raw(&app, &q1, odd.clone().into_bytes()).await;
        assert_eq!(status, 200);

        let rows = app.events().await;
        assert_eq!(rows.len(), 3);
        let r = &rows[0];
        assert_eq!((r.family.as_str(), r.command.as_str()), ("other", "caller_new_thing"));
        assert_eq!((r.call_id.as_deref(), r.user_id.as_deref()), (Some("new-1"), Some("alice")));
        assert_eq!((r.role.as_deref(), r.event.as_deref()), (Some("caller"), Some("new_thing")));
        assert_eq!(r.media_type.as_deref(), Some("video"));
        assert_eq!(r.event_time, Some(1_704_897_000_000));
        assert_eq!(r.payload["Sparkle"], json!({"level": 3}));
        let r = &rows[1];
        assert_eq!((r.family.as_str(), r.command.as_str()), ("other", "Call.CallbackAfterSomethingNew"));
        assert_eq!(r.call_id.as_deref(), Some("new-2"));
        assert_eq!(r.event_time, Some(1_704_897_001_234));
        assert_eq!(r.payload["Gizmo"], json!([1, 2, 3]));
        assert_eq!(r.opt_platform.as_deref(), Some("iOS"));
        let r = &rows[2];
        assert_eq!((r.call_id.as_deref(), r.user_id.as_deref()), (None, None));
        assert_eq!(r.payload, serde_json::from_str::<Value>(&odd).unwrap_or_default());
        assert_eq!(
            r.notes.as_deref(),
            Some("command: \"caller_new_thing\" is not one callhook knows (family other); UserId: expected a string or a number, found an object; CallId: expected a string or a number, found an array")
        );

        // Identical redeliveries are duplicates; any change in the body is another event.
        for (q, body) in [(&q1, &v1), (&q4, &v4), (&q1, &odd)] {
            let (status, answer) = app.post(q, body.clone()).await;
            assert_eq!((status, answer["ErrorMessage"].as_str()), (200, Some(DUPLICATE)));
        }
        let changed = v1.replace("\"level\":3", "\"level\":4");
        let (_, answer) = app.post(&q1, changed).await;
        assert_eq!(answer["ErrorMessage"], "Success");
        let rows = app.events().await;
        let deliveries: Vec<i64> = rows.iter().map(|r| r.deliveries).collect();
        assert_eq!(deliveries, vec![2, 2, 2, 1]);

        // Neither known nor allowed.
        let (status, answer) = app.post(&status_query(APP, "caller_other_thing"), v1.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (400, Some(70001)));
        let (status, answer) = app.post(&v4_query(APP, "Call.CallbackAfterSomethingElse"), v4.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (400, Some(70001)));
        assert_eq!(answer["ActionStatus"], "FAIL");
        assert_eq!(app.events().await.len(), 4);
        let kept = app.rejected().await;
        let kept: Vec<(Option<&str>, i64, &str)> = kept.iter().map(|r| (r.command.as_deref(), r.error_code, r.body.as_str())).collect();
        assert_eq!(kept, vec![
            (Some("caller_other_thing"), 70001, v1.as_str()),
            (Some("Call.CallbackAfterSomethingElse"), 70001, v4.as_str()),
        ]);
    }
}

both_backends! {
    /// Without a command list, every command is taken: one callhook does not know yet is
    /// stored with family `other` and its common fields, not refused (when Tencent adds a
    /// command, its calls are not lost until a release knows it).
    async fn unknown_commands_are_stored_by_default(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let body = event_body("x", "alice", Some("caller"), Some("new_thing")).to_string();
        let (status, answer) = app.post(&status_query(APP, "caller_new_thing"), body.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)));
        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.family.as_str(), r.command.as_str()), ("other", "caller_new_thing"));
        assert_eq!((r.call_id.as_deref(), r.user_id.as_deref()), (Some("x"), Some("alice")));
        assert_eq!((r.role.as_deref(), r.event.as_deref()), (Some("caller"), Some("new_thing")));
        assert_eq!(r.payload_text.as_deref(), Some(body.as_str()));
        assert_eq!(r.notes.as_deref(), Some("command: \"caller_new_thing\" is not one callhook knows (family other)"));
        assert!(app.rejected().await.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Authentication over HTTP.
// ---------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    callhook::now_millis() / 1000
}

fn signed(query: &str, token: &str, request_time: i64) -> String {
    let rt = request_time.to_string();
    format!(
        "{query}&Sign={}&RequestTime={rt}",
        callhook::auth::sign(token, &rt)
    )
}

both_backends! {
    /// With a token: `token=` right or a fresh valid signature is stored; a wrong, missing
    /// or stale credential is 403 (71102) and stores nothing at all, in either table.
    async fn authentication_over_http(backend: Backend) {
        let app = TestApp::spawn_with(backend, |s| s.sign_window = Duration::from_secs(60)).await;
        let q = status_query(TOKEN_APP, "call_end");
        let q4 = v4_query(TOKEN_APP, "Call.CallbackAfterStartCall");
        let body = |call: &str| status_body(call, "alice", "caller", "normal_end").to_string();
        let start = r#"{"CallInfo":{"CallId":"auth-v4"},"UserList":[{"User_Account":"alice","Status":"Calling"}],"EventTime":1704898000000}"#;
        let now = now_secs();

        let refused = [
            ("missing", q.clone()),
            ("wrong token", format!("{q}&token=nope")),
            ("token prefix", format!("{q}&token={}", &TOKEN[..TOKEN.len() - 1])),
            ("token with suffix", format!("{q}&token={TOKEN}x")),
            ("empty token", format!("{q}&token=")),
            ("wrong Sign", signed(&q, "not-the-token", now)),
            ("stale RequestTime", signed(&q, TOKEN, now - 90)),
            ("future RequestTime", signed(&q, TOKEN, now + 90)),
            ("Sign without RequestTime", format!("{q}&Sign={}", callhook::auth::sign(TOKEN, &now.to_string()))),
            ("RequestTime not a number", format!("{q}&Sign={}&RequestTime=soon", callhook::auth::sign(TOKEN, "soon"))),
            ("Sign for another time", format!("{q}&Sign={}&RequestTime={now}", callhook::auth::sign(TOKEN, &(now - 1).to_string()))),
        ];
        for (name, query) in &refused {
            let (status, answer) = app.post(query, body(name)).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (403, Some(71102)), "{name}: {answer}");
            assert!(answer.get("ActionStatus").is_none(), "{name}");
        }
        let (status, answer) = post_raw(&app, &signed(&q4, TOKEN, now - 90), start.as_bytes().to_vec()).await;
        assert_eq!(status, 403);
        let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
        assert_eq!((answer["ActionStatus"].as_str(), answer["ErrorCode"].as_i64()), (Some("FAIL"), Some(71102)));
        // A token is not a key for another app.
        let (status, _) = app.post(&format!("{}&token={TOKEN}", status_query(1_400_000_003, "call_end")), body("other")).await;
        assert_eq!(status, 403);
        assert!(app.events().await.is_empty(), "nothing unauthenticated is stored");
        assert!(app.rejected().await.is_empty(), "nor kept as a rejected delivery");

        let accepted = [
            ("token", format!("{q}&token={TOKEN}")),
            ("token first", format!("token={TOKEN}&{q}")),
            ("Sign", signed(&q, TOKEN, now)),
            ("Sign near the window's edge", signed(&q, TOKEN, now - 50)),
            ("upper-case Sign", {
                let rt = now.to_string();
                format!("{q}&SIGN={}&requesttime={rt}", callhook::auth::sign(TOKEN, &rt).to_uppercase())
            }),
        ];
        for (name, query) in &accepted {
            let (status, answer) = app.post(query, body(name)).await;
            assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{name}: {answer}");
        }
        let (status, answer) = post_raw(&app, &signed(&q4, TOKEN, now), start.as_bytes().to_vec()).await;
        assert_eq!((status, answer.as_str()), (200, V4_OK));
        let rows = app.events().await;
        let calls: Vec<&str> = rows.iter().filter_map(|r| r.call_id.as_deref()).collect();
        assert_eq!(calls, vec!["token", "token first", "Sign", "Sign near the window's edge", "upper-case Sign", "auth-v4"]);
        assert!(rows.iter().all(|r| r.sdkappid == TOKEN_APP));

        // An app without a token ignores credentials.
        let (status, _) = app.post(&format!("{}&token=anything", status_query(APP, "call_end")), body("open")).await;
        assert_eq!(status, 200);

        // Authenticated but malformed: kept, with the secrets redacted.
        let with_token = format!("{q}&token={TOKEN}");
        let with_sign = signed(&q, TOKEN, now);
        app.post(&with_token, "{not json".to_owned()).await;
        app.post(&with_sign, "[]".to_owned()).await;
        let kept = app.rejected().await;
        assert_eq!(kept.len(), 2);
        let sign = callhook::auth::sign(TOKEN, &now.to_string());
        for row in &kept {
            assert_eq!(row.sdkappid, TOKEN_APP);
            assert!(!row.query.contains(TOKEN), "token redacted: {}", row.query);
            assert!(!row.query.contains(&sign), "Sign redacted: {}", row.query);
            assert!(row.query.contains("REDACTED"));
            assert!(row.query.contains("command=call_end"));
        }
        assert!(kept[1].query.contains(&format!("RequestTime={now}")));
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The token never shows in the logs, at any level, whether the delivery is accepted or
/// refused. The runtime has one thread, so a thread-local subscriber sees every log line of
/// the request path.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_appear_in_logs() {
    // `tracing` caches, per callsite, whether anyone listens. With a single registered
    // dispatcher it asks only the registering thread's default, so a callsite first hit by
    // another test's thread would be cached as "never" and our lines lost. A second
    // registered dispatcher makes it ask every dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn(Backend::Sqlite).await;
    let q = status_query(TOKEN_APP, "call_end");
    let body = status_body("log-1", "alice", "caller", "normal_end").to_string();
    let now = now_secs();
    let sign = callhook::auth::sign(TOKEN, &now.to_string());
    for query in [
        format!("{q}&token={TOKEN}"),
        format!("{q}&token={TOKEN}-wrong"),
        format!("{q}&Sign={sign}&RequestTime={now}"),
        format!("{q}&Sign={sign}&RequestTime={}", now - 1000),
    ] {
        app.post(&query, body.clone()).await;
        app.post(&query, "{broken".to_owned()).await;
    }
    app.stop().await;
    let text = String::from_utf8_lossy(
        &logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        text.contains("callback refused"),
        "the capture works: {text}"
    );
    assert!(!text.contains(TOKEN), "the token is not logged:\n{text}");
    assert!(
        !text.contains(&sign),
        "the signature is not logged:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile input.
// ---------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so every run sends the same mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes and snippets that tend to matter to a JSON parser.
const INTERESTING_BYTES: &[u8] = b"\"{}[]\\,:0-9eE.+ \t\n\0\x7f\xc3\xef\xff";
const INTERESTING_SNIPPETS: &[&str] = &[
    "\\u0000",
    "\\ud800",
    "\\udc00\\ud800",
    "1e999999",
    "-1e-999999",
    "18446744073709551616",
    "9223372036854775808",
    "[[[[[[[[",
    "]]]]",
    "null",
    "\"\"",
    ",",
    "\u{feff}",
    "\\",
    "\"CallId\":\"dup\",",
    "\"UserId\":1e400,",
];

/// Mutations of one fixture: byte flips, interesting bytes, truncations, deleted and
/// duplicated spans, inserted snippets.
fn mutations(body: &[u8], rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let len = body.len();
    for _ in 0..6 {
        let (i, x) = (rng.below(len), (rng.below(255) + 1) as u8);
        let mut b = body.to_vec();
        b[i] ^= x;
        out.push((format!("flip byte {i} ^ {x:#04x}"), b));
    }
    for _ in 0..3 {
        let (i, x) = (rng.below(len), *rng.pick(INTERESTING_BYTES));
        let mut b = body.to_vec();
        b[i] = x;
        out.push((format!("byte {i} = {x:#04x}"), b));
    }
    for cut in [len / 2, rng.below(len), rng.below(len), len - 1] {
        out.push((format!("truncated at {cut}"), body[..cut].to_vec()));
    }
    let (a, b) = (rng.below(len), rng.below(len));
    let (a, b) = (a.min(b), a.max(b));
    out.push((
        format!("bytes {a}..{b} deleted"),
        [&body[..a], &body[b..]].concat(),
    ));
    out.push((
        format!("bytes {a}..{b} doubled"),
        [&body[..b], &body[a..]].concat(),
    ));
    for _ in 0..2 {
        let (i, s) = (rng.below(len), *rng.pick(INTERESTING_SNIPPETS));
        out.push((
            format!("{s:?} inserted at {i}"),
            [&body[..i], s.as_bytes(), &body[i..]].concat(),
        ));
    }
    out
}

/// Hand-made hostile bodies with the error code each must get (0: stored), for a status
/// or event query (v4 ones for `Call.CallbackAfterStartCall`).
///
/// The classes: not JSON at all, or not a JSON object: 71001; nested deeper than 512
/// levels: 71003; over the limit: 71203. Everything else is stored (0), with notes on what
/// could not be read: `\u0000` and lone surrogates, absurd numbers, a known field
/// ill-typed or given twice.
fn hostile_bodies(limit: usize) -> Vec<(String, u32, Vec<u8>)> {
    let ok = |extra: &str| {
        format!(r#"{{"CallId":"h","UserId":"u","Role":"caller",{extra}"EventTime":1704899000}}"#)
    };
    let deep_array = format!(
        r#"{{"CallId":"h","UserId":"u","X":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_object = format!(
        r#"{{"CallId":"h","UserId":"u","X":{}1{}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let deep_typed = format!(
        r#"{{"CallId":"h","UserId":{}"u"{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let fill = |unit: &str, room: usize| {
        let head = r#"{"CallId":"h","UserId":"big","X":["#;
        let n = room.saturating_sub(head.len() + 2) / (unit.len() + 1);
        let items = vec![unit; n.max(1)].join(",");
        format!("{head}{items}]}}")
    };
    let mut v: Vec<(String, u32, Vec<u8>)> = vec![
        ("empty".into(), 71001, vec![]),
        ("whitespace".into(), 71001, b" \r\n\t ".to_vec()),
        ("null".into(), 71001, b"null".to_vec()),
        ("array".into(), 71001, b"[]".to_vec()),
        ("string".into(), 71001, b"\"{}\"".to_vec()),
        ("number".into(), 71001, b"12".to_vec()),
        ("empty object".into(), 0, b"{}".to_vec()),
        (
            "10k nested arrays, ignored field".into(),
            71003,
            deep_array.into_bytes(),
        ),
        (
            "10k nested objects, ignored field".into(),
            71003,
            deep_object.into_bytes(),
        ),
        (
            "10k nested arrays, typed field".into(),
            71003,
            deep_typed.into_bytes(),
        ),
        (
            "10k open brackets".into(),
            71001,
            "[".repeat(10_000).into_bytes(),
        ),
        (
            "10k open objects".into(),
            71001,
            "{\"a\":".repeat(10_000).into_bytes(),
        ),
        (
            "65 levels".into(),
            0,
            ok(&format!(r#""X":{}{},"#, "[".repeat(65), "]".repeat(65))).into_bytes(),
        ),
        (
            "64 levels".into(),
            0,
            ok(&format!(r#""X":{}{},"#, "[".repeat(63), "]".repeat(63))).into_bytes(),
        ),
        (
            "array of numbers up to the limit".into(),
            0,
            fill("1", limit).into_bytes(),
        ),
        (
            "array of objects up to the limit".into(),
            0,
            fill("{}", limit).into_bytes(),
        ),
        (
            "array of strings up to the limit".into(),
            0,
            fill("\"\\u00e9\"", limit).into_bytes(),
        ),
        (
            "array one byte over the limit".into(),
            71203,
            fill("1", limit + 64).into_bytes(),
        ),
        (
            "invalid UTF-8".into(),
            71001,
            [&b"{\"CallId\":\"h\",\"UserId\":\""[..], b"\xff\xfe", b"\"}"].concat(),
        ),
        (
            "overlong UTF-8".into(),
            71001,
            [&b"{\"CallId\":\"h\",\"UserId\":\""[..], b"\xc0\xaf", b"\"}"].concat(),
        ),
        (
            "UTF-8 encoded surrogate".into(),
            71001,
            [
                &b"{\"CallId\":\"h\",\"UserId\":\""[..],
                b"\xed\xa0\x80",
                b"\"}",
            ]
            .concat(),
        ),
        (
            "truncated UTF-8".into(),
            71001,
            [&b"{\"CallId\":\"h\",\"UserId\":\"\xe2\x82"[..], b"\"}"].concat(),
        ),
        (
            "lone high surrogate, typed".into(),
            0,
            br#"{"CallId":"h","UserId":"\ud800"}"#.to_vec(),
        ),
        (
            "lone low surrogate, typed".into(),
            0,
            br#"{"CallId":"h","UserId":"\udc00x"}"#.to_vec(),
        ),
        (
            "lone surrogate, ignored".into(),
            0,
            ok(r#""X":"\ud83d","#).into_bytes(),
        ),
        (
            "reversed surrogates, ignored".into(),
            0,
            ok(r#""X":"\ude00\ud83d","#).into_bytes(),
        ),
        (
            "surrogate in a key".into(),
            0,
            ok(r#""\ud800":1,"#).into_bytes(),
        ),
        (
            "valid surrogate pair".into(),
            0,
            ok(r#""X":"\ud83d\ude00","#).into_bytes(),
        ),
        (
            "duplicate typed key".into(),
            0,
            ok(r#""CallId":"h2","#).into_bytes(),
        ),
        (
            "duplicate ignored key".into(),
            0,
            ok(r#""X":1,"X":2,"#).into_bytes(),
        ),
        (
            "i64 overflow".into(),
            0,
            ok(r#""TotalNum":9223372036854775808,"#).into_bytes(),
        ),
        (
            "i64 min".into(),
            0,
            ok(r#""TotalNum":-9223372036854775808,"#).into_bytes(),
        ),
        (
            "u64 overflow".into(),
            0,
            ok(r#""TotalNum":18446744073709551616,"#).into_bytes(),
        ),
        (
            "f64 overflow, typed".into(),
            0,
            ok(r#""EndTs":1e309,"#).into_bytes(),
        ),
        (
            "1e999999, typed".into(),
            0,
            ok(r#""EndTs":1e999999,"#).into_bytes(),
        ),
        (
            "1e999999, ignored".into(),
            0,
            ok(r#""X":1e999999,"#).into_bytes(),
        ),
        (
            "-1e-999999, ignored".into(),
            0,
            ok(r#""X":-1e-999999,"#).into_bytes(),
        ),
        ("1e400, ignored".into(), 0, ok(r#""X":1e400,"#).into_bytes()),
        (
            "1000-digit id".into(),
            0,
            ok(&format!(r#""X":{},"#, "7".repeat(1000))).into_bytes(),
        ),
        (
            "1001-digit number".into(),
            0,
            ok(&format!(r#""X":{},"#, "7".repeat(1001))).into_bytes(),
        ),
        (
            "huge numeric UserId".into(),
            0,
            format!(r#"{{"CallId":"h","UserId":{}}}"#, "9".repeat(400)).into_bytes(),
        ),
        (
            "fractional timestamp".into(),
            0,
            ok(r#""StartCallTs":1704899000.75,"#).into_bytes(),
        ),
        (
            "negative timestamp".into(),
            0,
            ok(r#""StartCallTs":-1704899000,"#).into_bytes(),
        ),
        (
            "timestamp after 9999".into(),
            0,
            ok(r#""StartCallTs":9999999999999999,"#).into_bytes(),
        ),
        (
            "raw NUL in a string".into(),
            71001,
            ok("\"X\":\"a\0b\",").into_bytes(),
        ),
        (
            "raw NUL between tokens".into(),
            71001,
            ok("\"X\":1,\0").into_bytes(),
        ),
        (
            "escaped NUL, typed".into(),
            0,
            ok(r#""RoomId":"a\u0000b","#).into_bytes(),
        ),
        (
            "escaped NUL, ignored".into(),
            0,
            ok(r#""X":"\u0000","#).into_bytes(),
        ),
        (
            "escaped NUL in a key".into(),
            0,
            ok(r#""\u0000":1,"#).into_bytes(),
        ),
        (
            "BOM".into(),
            0,
            [&b"\xef\xbb\xbf"[..], ok("").as_bytes()].concat(),
        ),
        (
            "two BOMs".into(),
            71001,
            [&b"\xef\xbb\xbf\xef\xbb\xbf"[..], ok("").as_bytes()].concat(),
        ),
        ("BOM inside".into(), 71001, ok("\u{feff}").into_bytes()),
        (
            "UTF-16 body".into(),
            71001,
            ok("").encode_utf16().flat_map(u16::to_le_bytes).collect(),
        ),
        (
            "trailing garbage".into(),
            71001,
            format!("{}x", ok("")).into_bytes(),
        ),
        (
            "two objects".into(),
            71001,
            format!("{}{}", ok(""), ok("")).into_bytes(),
        ),
        (
            "trailing comma".into(),
            71001,
            br#"{"CallId":"h","UserId":"u",}"#.to_vec(),
        ),
        (
            "comments".into(),
            71001,
            b"{\"CallId\":\"h\", // the call\n\"UserId\":\"u\"}".to_vec(),
        ),
        (
            "single quotes".into(),
            71001,
            b"{'CallId':'h','UserId':'u'}".to_vec(),
        ),
        (
            "bad escape".into(),
            71001,
            br#"{"CallId":"h","UserId":"\x41"}"#.to_vec(),
        ),
        (
            "bad unicode escape".into(),
            71001,
            br#"{"CallId":"h","UserId":"\uZZZZ"}"#.to_vec(),
        ),
        (
            "control character".into(),
            71001,
            ok("\"X\":\"\x01\",").into_bytes(),
        ),
        ("NaN".into(), 71001, ok(r#""TotalNum":NaN,"#).into_bytes()),
        (
            "Infinity".into(),
            71001,
            ok(r#""TotalNum":Infinity,"#).into_bytes(),
        ),
        (
            "leading zeros".into(),
            71001,
            ok(r#""TotalNum":007,"#).into_bytes(),
        ),
        (
            "bool as id".into(),
            0,
            br#"{"CallId":true,"UserId":"u"}"#.to_vec(),
        ),
        (
            "number as CallResult".into(),
            0,
            ok(r#""CallResult":5,"#).into_bytes(),
        ),
        (
            "object as CallResult".into(),
            0,
            ok(r#""CallResult":{},"#).into_bytes(),
        ),
        (
            "long key".into(),
            0,
            ok(&format!(r#""{}":1,"#, "k".repeat(30_000))).into_bytes(),
        ),
        (
            "long string".into(),
            0,
            ok(&format!(r#""X":"{}","#, "\\n".repeat(20_000))).into_bytes(),
        ),
        (
            "many keys".into(),
            0,
            ok(&(0..3000)
                .map(|i| format!("\"k{i}\":{i},"))
                .collect::<String>())
            .into_bytes(),
        ),
    ];
    let v4_start = |user_list: &str| {
        format!(
            r#"{{"CallInfo":{{"CallId":"h4"}},"UserList":{user_list},"EventTime":1704899000000}}"#
        )
        .into_bytes()
    };
    let users = (0..2500)
        .map(|i| format!(r#"{{"User_Account":{i}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    v.push((
        "v4 huge UserList".into(),
        0,
        v4_start(&format!("[{users}]")),
    ));
    v.push(("v4 UserList not a list".into(), 0, v4_start("5")));
    v.push(("v4 UserList of nulls".into(), 0, v4_start("[null,null]")));
    v.push(("v4 UserList of numbers".into(), 0, v4_start("[1,2]")));
    v
}

/// Each hand-made hostile body gets its documented class from the protocol module, for
/// the status, event and v4 families alike.
#[test]
fn hostile_bodies_are_classified() {
    let limit = 65_536;
    let mut wrong = Vec::new();
    for (name, want, body) in hostile_bodies(limit) {
        let queries = if name.starts_with("v4") {
            vec![v4_query(APP, "Call.CallbackAfterStartCall")]
        } else {
            vec![
                status_query(APP, "call_end"),
                status_query(APP, "caller_start_call"),
            ]
        };
        for q in queries {
            let got = if body.len() > limit {
                71203
            } else {
                match parse_like_endpoint(&q, &body) {
                    Ok(_) => 0,
                    Err(r) => r.code.code(),
                }
            };
            if got != want {
                wrong.push(format!("{name} ({q}): got {got}, want {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

both_backends! {
    /// Hundreds of hostile and mutated bodies: every answer is a JSON envelope, 200 or 4xx,
    /// over a connection that stays usable; the answer agrees with what the protocol module
    /// says about the same bytes; valid ones are stored (once per distinct event) and
    /// refused ones kept in rejected_deliveries. The service still answers afterwards.
    async fn hostile_and_mutated_bodies_never_fail_the_service(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let limit = app.state.settings.body_limit;
        let fixtures = fixtures();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut cases: Vec<(String, String, Vec<u8>)> = Vec::new();
        for f in &fixtures {
            for (name, body) in mutations(&f.body, &mut rng) {
                cases.push((format!("{}: {name}", f.command), f.query(), body));
            }
        }
        let status_q = status_query(APP, "call_end");
        let event_q = status_query(APP, "caller_start_call");
        let v4_q = v4_query(APP, "Call.CallbackAfterStartCall");
        for (name, _, body) in hostile_bodies(limit) {
            let q = if name.starts_with("v4") { &v4_q } else if body.len() % 2 == 0 { &status_q } else { &event_q };
            cases.push((name, q.clone(), body));
        }
        assert!(cases.len() >= 500, "{} cases", cases.len());

        let mut keys = HashSet::new();
        let mut refused = Vec::new();
        let mut stored = 0;
        for (name, query, body) in &cases {
            let expected = if body.len() > limit {
                Err((413, 71203))
            } else {
                parse_like_endpoint(query, body).map_err(|r| (r.code.http_status(), i64::from(r.code.code())))
            };
            let (status, answer) = app.post(query, body.clone()).await;
            assert!(status < 500, "{name}: {status} {answer}");
            let code = answer["ErrorCode"].as_i64();
            assert!(answer["ErrorMessage"].is_string(), "{name}: {answer}");
            match &expected {
                Ok(rows) => {
                    assert_eq!((status, code), (200, Some(0)), "{name}: valid, must be stored: {answer}");
                    keys.extend(rows.iter().map(|r| r.dedupe_key));
                    stored += 1;
                }
                Err((want_status, want_code)) => {
                    assert_eq!((status, code), (*want_status, Some(*want_code)), "{name}: {answer}");
                    refused.push((*want_code, if *want_code == 71203 { Vec::new() } else { body.clone() }));
                }
            }
        }
        let codes: BTreeSet<i64> = refused.iter().map(|(code, _)| *code).collect();
        eprintln!("hostile: {} cases, {stored} stored, {} refused, codes {codes:?}", cases.len(), refused.len());
        assert!(stored > 100 && refused.len() > 100, "both kinds are exercised: {stored} stored, {} refused", refused.len());
        assert_eq!(codes, BTreeSet::from([71001, 71003, 71203]), "every body refusal class is exercised");
        // Counted in SQL: some stored payloads hold numbers beyond f64, which the test
        // helper's serde_json::Value cannot represent.
        let rows = scalar(app.store(), "SELECT count(*) FROM call_events").await;
        assert_eq!(rows, keys.len() as i64, "one row per distinct valid event");
        // Every refusal is kept, once per distinct delivery (identical mutations are one
        // delivery, retried), with its count.
        let kept = app.rejected().await;
        let distinct: BTreeSet<&(i64, Vec<u8>)> = refused.iter().collect();
        assert_eq!(kept.len(), distinct.len(), "one row per distinct refused delivery");
        assert_eq!(kept.iter().map(|r| r.deliveries).sum::<i64>(), refused.len() as i64);

        let (status, _) = app.get("/healthz").await;
        assert_eq!(status, 200, "the service still answers");
        let (status, answer) = app.post_status("call_end", &status_body("after", "u", "caller", "cancel")).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)));
    }
}

/// The columns of `call_events` that read the same on both backends whatever the payload
/// holds: payload, deliveries, notes, family, call_id and user_id, as text, by id.
const RAW_COLUMNS: &str = "SELECT CAST(payload AS TEXT), CAST(deliveries AS TEXT), notes, \
    family, call_id, user_id FROM call_events ORDER BY id";

both_backends! {
    /// Issue 23, item 11: a JSON object whose member names serde cannot decode (an unpaired
    /// surrogate escape in a name) is stored with none of its fields read, and keyed by its
    /// bytes: two different such bodies are two rows (they used to share one key per app and
    /// family, so the second merged into the first), a retry of one adds to its deliveries.
    async fn bodies_whose_names_cannot_be_decoded_are_keyed_by_their_bytes(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let status = status_query(APP, "call_end");
        let v4 = v4_query(APP, "Call.CallbackAfterMemberChanged");
        let a = r#"{"\ud800":1,"CallId":"unkeyable-a","UserId":"u"}"#;
        let b = r#"{"\ud800":1,"CallId":"unkeyable-b","UserId":"u"}"#;
        let c = r#"{"\udc00":"v4","CallInfo":{"CallId":"unkeyable-c"}}"#;
        let d = r#"{"\udc00":"v4","CallInfo":{"CallId":"unkeyable-d"}}"#;
        for (query, body) in [(&status, a), (&status, b), (&status, a), (&v4, c), (&v4, d), (&v4, d)] {
            let (code, answer) = app.post(query, body).await;
            assert_eq!((code, answer["ErrorCode"].as_i64()), (200, Some(0)), "{body}: {answer}");
        }
        let rows = text_rows(app.store(), RAW_COLUMNS).await;
        let got: Vec<(Option<&str>, Option<&str>)> =
            rows.iter().map(|r| (r[0].as_deref(), r[1].as_deref())).collect();
        assert_eq!(
            got,
            vec![(Some(a), Some("2")), (Some(b), Some("1")), (Some(c), Some("1")), (Some(d), Some("2"))],
            "one row per distinct body, byte for byte; the retries merged"
        );
        for r in &rows {
            let notes = r[2].as_deref().unwrap_or_default();
            assert!(notes.contains("none of its fields could be read"), "{notes}");
        }
        assert!(app.rejected().await.is_empty());
    }
}

both_backends! {
    /// Issue 23, item 12: a `CallId` and `UserId` (and a `MediaType`, an included column of
    /// the analytics index) longer than a PostgreSQL B-tree entry holds (~2.7 kB that does
    /// not compress; these are 4 kB) are stored on both backends (PostgreSQL refused them,
    /// 400/71003): each such column holds a bounded form (its beginning, `…`, a hash of the
    /// whole), the row a note naming the column and its length, the payload the full value.
    /// A retry merges; the same long id in the status, event and v4 families is one call.
    async fn very_long_ids_are_stored_bounded(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let call = incompressible("call", 4096);
        let caller = incompressible("caller", 4096);
        let callee = incompressible("callee", 4000);
        let media = incompressible("media", 3000);
        let status = json!({"CallId": call, "UserId": caller, "Role": "caller",
            "CallResult": "normal_end", "MediaType": media, "CallType": "single",
            "StartCallTs": 1_704_880_000, "AcceptTs": 1_704_880_005, "EndTs": 1_704_880_060});
        let event = event_body(&call, &callee, Some("callee"), Some("accept_call"));
        let member = json!({"CallbackCommand": "Call.CallbackAfterMemberChanged", "CallId": call,
            "UserList": [{"User_Account": caller}, {"User_Account": callee}],
            "ChangedUserList": [{"User_Account": callee, "ActionType": "Accept"},
                                {"User_Account": "short", "ActionType": "Invited"}],
            "EventTime": 1_704_880_004_000_i64});
        let member_q = v4_query(APP, "Call.CallbackAfterMemberChanged");
        let deliveries = [
            (status_query(APP, "call_end"), status.to_string()),
            (status_query(APP, "callee_accept_call"), event.to_string()),
            (member_q, member.to_string()),
        ];
        for _retry in 0..2 {
            for (query, body) in &deliveries {
                let (code, answer) = app.post(query, body.clone()).await;
                assert_eq!((code, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
            }
        }
        assert!(app.rejected().await.is_empty(), "nothing refused");
        let rows = app.events().await;
        assert_eq!(rows.len(), 4, "a row per status and event delivery, two member rows");
        assert!(rows.iter().all(|r| r.deliveries == 2), "the retries merged");
        assert!(rows.iter().all(|r| r.call_id.as_deref() == Some(bounded(&call).as_str())));
        let noted = |r: &StoredEvent, column: &str, len: usize| {
            let notes = r.notes.as_deref().unwrap_or_default();
            assert!(notes.contains(&format!("{column}: {len} bytes")), "{column}: {notes}");
        };

        let s = &rows[0];
        assert_eq!(s.user_id.as_deref(), Some(bounded(&caller).as_str()));
        let media_column = bounded(&callhook::protocol::values::normalize(&media));
        assert_eq!(s.media_type.as_deref(), Some(media_column.as_str()));
        assert_eq!((s.payload["CallId"].as_str(), s.payload["UserId"].as_str()), (Some(call.as_str()), Some(caller.as_str())));
        noted(s, "call_id", 4096);
        noted(s, "user_id", 4096);
        let e = &rows[1];
        assert_eq!(e.user_id.as_deref(), Some(bounded(&callee).as_str()));
        assert_eq!(e.payload["UserId"].as_str(), Some(callee.as_str()));
        noted(e, "user_id", 4000);
        let accepted = rows.iter().find(|r| r.event.as_deref() == Some("accept") && r.family == "v4");
        let accepted = accepted.unwrap_or_else(|| panic!("the member row: {rows:?}"));
        assert_eq!(accepted.user_id.as_deref(), Some(bounded(&callee).as_str()));
        assert_eq!(accepted.members, Some(json!([bounded(&caller), bounded(&callee)])), "members as the user ids");
        noted(accepted, "user_id", 4000);

        // One call, its caller and callee as the user ids.
        let key = bounded(&call);
        let calls = scalar(app.store(), &format!("SELECT count(*) FROM calls WHERE call_id = '{key}'")).await;
        assert_eq!(calls, 1, "one call");
        let events = scalar(app.store(), &format!("SELECT CAST(events AS BIGINT) FROM calls WHERE call_id = '{key}'")).await;
        assert_eq!(events, 4);
        let callers = scalar(app.store(), &format!("SELECT count(*) FROM calls WHERE call_id = '{key}' AND caller = '{}'", bounded(&caller))).await;
        assert_eq!(callers, 1, "the caller");
    }
}

both_backends! {
    /// Hostile queries: every answer is a non-5xx envelope.
    async fn hostile_queries_are_answered(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let body = status_body("q", "u", "caller", "cancel").to_string();
        let long = "c".repeat(6000);
        let queries = [
            format!("sdkappid={APP}&command=%00"),
            format!("sdkappid={APP}&command=%FF%FE"),
            format!("sdkappid={APP}&command=%"),
            format!("sdkappid={APP}&command={long}"),
            format!("sdkappid={APP}&command=call_end&contenttype=%00"),
            format!("sdkappid={APP}%00&command=call_end"),
            format!("sdkappid=+{APP}&command=call_end"),
            "sdkappid=99999999999999999999999&command=call_end".to_owned(),
            "sdkappid=-1&command=call_end".to_owned(),
            format!("SDKAPPID={APP}&COMMAND=CALL_END&CONTENTTYPE=JSON"),
            format!("sdkappid={APP}&command=call_end&sdkappid=1"),
            format!("sdkappid={APP}&CallbackCommand="),
            "&&&==&=".to_owned(),
            String::new(),
        ];
        for q in &queries {
            let (status, answer) = app.post(q, body.clone()).await;
            assert!(status < 500 && answer["ErrorCode"].is_i64(), "{q}: {status} {answer}");
        }
        let (status, _) = app.get("/healthz").await;
        assert_eq!(status, 200);
    }
}

both_backends! {
    /// A NUL in a query value (found by fuzzing: it reached `command`, `event`,
    /// `client_ip` and `opt_platform`, which PostgreSQL text cannot hold) is decoded like
    /// invalid UTF-8, as U+FFFD: the delivery or its refusal is stored the same way on
    /// both backends.
    async fn nul_in_query_values_is_stored_as_replacement_character(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let body = event_body("nul-q", "alice", Some("caller"), None).to_string();
        let q = format!("sdkappid={APP}&command=caller_start_call&contenttype=json&clientip=10.0.0.1%00&optplatform=i%00OS");
        let (status, answer) = app.post(&q, body.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
        let rows = app.events().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].client_ip.as_deref(), Some("10.0.0.1\u{FFFD}"));
        assert_eq!(rows[0].opt_platform.as_deref(), Some("i\u{FFFD}OS"));

        // An unknown command with a NUL is stored (family other), the NUL as U+FFFD.
        let q = status_query(APP, "caller_start_call%00");
        let (status, answer) = app.post(&q, body.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
        let rows = app.events().await;
        assert_eq!(rows.len(), 2, "stored on {backend:?}");
        assert_eq!((rows[1].family.as_str(), rows[1].command.as_str()), ("other", "caller_start_call\u{FFFD}"));
        // Refused by an app that lists its commands, the refusal is kept the same way.
        drop(app);
        let app = TestApp::spawn_with(backend, |s| {
            if let Some(a) = s.apps.get_mut(&APP) {
                a.commands = Some(HashSet::from(["caller_start_call".to_owned()]));
            }
        })
        .await;
        let (status, answer) = app.post(&q, body.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (400, Some(70001)), "{answer}");
        let kept = app.rejected().await;
        assert_eq!(kept.len(), 1, "the refusal is kept on {backend:?}");
        assert_eq!(kept[0].command.as_deref(), Some("caller_start_call\u{FFFD}"));
        assert_eq!(kept[0].query, q);

        // Allowed as it arrives (the allow-list is compared after decoding), it is stored.
        drop(app);
        let app = TestApp::spawn_with(backend, |s| {
            if let Some(a) = s.apps.get_mut(&APP) {
                a.commands = Some(HashSet::from(["caller_start_call\u{FFFD}".to_owned()]));
            }
        }).await;
        let (status, answer) = app.post(&q, body.clone()).await;
        assert_eq!((status, answer["ErrorCode"].as_i64()), (200, Some(0)), "{answer}");
        let rows = app.events().await;
        assert_eq!(rows[0].command, "caller_start_call\u{FFFD}");
    }
}

/// A batch of one row is written with its own statement (one value per column instead of
/// one array per column, src/store/postgres.rs): every fixture, call and TRTC, written one
/// row per batch, is stored exactly as the same rows written as one batch, every column,
/// the `json` columns as text (to_jsonb would normalise them). Both shapes share the binds;
/// that each column gets the right value is what `every_fixture_is_stored_field_by_field`
/// asserts, through HTTP, in one-row batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_batches_store_what_array_batches_store() {
    let mut rows: Vec<EventRow> = Vec::new();
    for f in fixtures() {
        rows.extend(
            parse_like_endpoint(&f.query(), &f.body)
                .unwrap_or_else(|e| panic!("{}: {e:?}", f.command)),
        );
    }
    let trtc_dir = fixtures_dir().join("trtc");
    let mut trtc_files: Vec<PathBuf> = std::fs::read_dir(&trtc_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", trtc_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    trtc_files.sort();
    assert!(
        trtc_files.len() >= 5,
        "TRTC fixtures in {}",
        trtc_dir.display()
    );
    for path in &trtc_files {
        let parsed = callhook::protocol::parse_trtc_delivery(&ctx("trtc"), &read(path))
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        rows.extend(parsed);
    }
    assert!(
        rows.iter().any(|r| r.trtc != Default::default()),
        "TRTC columns are covered"
    );
    let batch: Vec<callhook::store::BatchRow<'_>> = rows
        .iter()
        .map(|row| callhook::store::BatchRow { row, deliveries: 1 })
        .collect();

    let mut stored = Vec::new();
    for one_by_one in [true, false] {
        let db = TestDb::new(Backend::Postgres).await;
        let store = Store::connect(&callhook::config::DatabaseSettings::new(db.url.clone()))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        store
            .migrate(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
        let written = if one_by_one {
            let mut flags = Vec::new();
            for row in &batch {
                let one = store
                    .write_batch(std::slice::from_ref(row), &[])
                    .await
                    .unwrap_or_else(|e| panic!("write one: {e}"));
                flags.extend(one);
            }
            flags
        } else {
            store
                .write_batch(&batch, &[])
                .await
                .unwrap_or_else(|e| panic!("write all: {e}"))
        };
        assert_eq!(written, vec![true; batch.len()], "every row is new");
        let Store::Postgres(pg) = &store else {
            panic!("a PostgreSQL store");
        };
        let table: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' | ', (to_jsonb(e) - 'id')::text, e.payload::text, \
             e.members::text, e.files::text) \
             FROM call_events e ORDER BY sdkappid, dedupe_key",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(table.len(), batch.len());
        stored.push(table);
        store.close().await;
    }
    assert_eq!(
        stored[0], stored[1],
        "one row per batch and one batch store the same"
    );
}
