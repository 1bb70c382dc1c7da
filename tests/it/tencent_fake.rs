//! A fake of Tencent's REST APIs (the call record API and the callback configuration API),
//! in Rust, over a real socket: the one fake the test suite has. It checks every request
//! as Tencent would — the app, an administrator identifier, the UserSig (decoded here with
//! its own code: base64 with Tencent's alphabet, zlib, JSON, HMAC-SHA256 over the four
//! lines, expiry), `random` and `contenttype` — and answers in Tencent's envelope. It pages
//! (`NumberPerPage` default 10, an optional cap), moves a `StartTime` older than 7 days up to
//! 7 days ago without a word (as Tencent documents), rate-limits (70005), and fails on
//! demand (an HTTP status, an error code, or a body that is not JSON).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// One app of the fake: its secret key, its administrators and its records.
#[derive(Clone, Debug)]
pub struct FakeApp {
    pub key: String,
    pub admins: Vec<String>,
    /// Records as Tencent returns them (objects with at least `CallId` and `StartTime`).
    pub records: Vec<Value>,
    pub callback: Option<Value>,
}

impl FakeApp {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            admins: vec!["administrator".to_owned()],
            records: Vec::new(),
            callback: None,
        }
    }
}

/// A failure the fake answers with instead of the real answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    Http(u16),
    Code(i64),
    NotJson,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub api: String,
    pub body: Value,
    pub at: Instant,
    /// The error code it was answered with (0: success; -1: a failure by HTTP status or body).
    pub code: i64,
}

#[derive(Default)]
struct Fake {
    apps: HashMap<i64, FakeApp>,
    seen: Vec<Seen>,
    /// Failures for the next requests, in order.
    next_failures: Vec<Failure>,
    /// A failure for every request of this page of the record list, until cleared.
    page_failure: Option<(u64, Failure)>,
    /// Most records a page holds, whatever is asked.
    page_cap: Option<u64>,
    /// Most requests in any second (then 70005).
    per_second: Option<usize>,
    /// Added to the fake's clock (seconds), to make a UserSig expired or from the future.
    clock_offset: i64,
}

/// The fake, serving on 127.0.0.1 until dropped.
pub struct FakeTencent {
    pub addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
    _stop: oneshot::Sender<()>,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeTencent {
    pub async fn start(apps: impl IntoIterator<Item = (i64, FakeApp)>) -> Self {
        let state: Shared = Arc::new(Mutex::new(Fake {
            apps: apps.into_iter().collect(),
            ..Fake::default()
        }));
        let router = axum::Router::new()
            .route("/v4/{service}/{api}", axum::routing::post(handle))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the fake: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            _stop: tx,
        }
    }

    /// The base URL to give callhook as `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    pub fn requests(&self) -> usize {
        lock(&self.state).seen.len()
    }

    pub fn forget_requests(&self) {
        lock(&self.state).seen.clear();
    }

    pub fn fail_next(&self, failures: Vec<Failure>) {
        lock(&self.state).next_failures = failures;
    }

    pub fn fail_page(&self, page: Option<(u64, Failure)>) {
        lock(&self.state).page_failure = page;
    }

    pub fn cap_pages(&self, cap: Option<u64>) {
        lock(&self.state).page_cap = cap;
    }

    pub fn limit_per_second(&self, n: Option<usize>) {
        lock(&self.state).per_second = n;
    }

    pub fn shift_clock(&self, secs: i64) {
        lock(&self.state).clock_offset = secs;
    }

    pub fn set_records(&self, app: i64, records: Vec<Value>) {
        if let Some(a) = lock(&self.state).apps.get_mut(&app) {
            a.records = records;
        }
    }

    pub fn callback(&self, app: i64) -> Option<Value> {
        lock(&self.state)
            .apps
            .get(&app)
            .and_then(|a| a.callback.clone())
    }

    pub fn set_callback(&self, app: i64, config: Option<Value>) {
        if let Some(a) = lock(&self.state).apps.get_mut(&app) {
            a.callback = config;
        }
    }
}

fn envelope(code: i64, info: &str, response: Option<Value>) -> Response {
    let mut body = json!({
        "ActionStatus": if code == 0 { "OK" } else { "FAIL" },
        "ErrorCode": code,
        "ErrorInfo": info,
        "RequestId": format!("fake-{}", callhook::now_millis()),
    });
    if let Some(r) = response {
        body["Response"] = r;
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn handle(
    State(state): State<Shared>,
    Path((service, api)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    body: String,
) -> Response {
    let api = format!("{service}/{api}");
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut fake = lock(&state);
    let now = Instant::now();
    let recent = fake
        .seen
        .iter()
        .filter(|s| now.duration_since(s.at) < Duration::from_secs(1))
        .count();
    let (code, response) = answer(&mut fake, &api, &query, &body, recent);
    let code_seen = match &response {
        Err(_) => -1,
        Ok(_) => code.0,
    };
    fake.seen.push(Seen {
        api,
        body,
        at: now,
        code: code_seen,
    });
    match response {
        Err(Failure::Http(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "failing on demand").into_response()
        }
        Err(Failure::NotJson) => (StatusCode::OK, "<html>gateway</html>").into_response(),
        Err(Failure::Code(c)) => envelope(c, "failing on demand", None),
        Ok(r) => envelope(code.0, code.1, r),
    }
}

type Code = (i64, &'static str);
const OK: Code = (0, "");

/// The answer to one request: Tencent's checks in order, then the API itself.
fn answer(
    fake: &mut Fake,
    api: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
    recent: usize,
) -> (Code, Result<Option<Value>, Failure>) {
    if !fake.next_failures.is_empty() {
        let f = fake.next_failures.remove(0);
        return (OK, Err(f));
    }
    if fake.per_second.is_some_and(|max| recent >= max) {
        return ((70_005, "request frequency limit"), Ok(None));
    }
    let now = chrono::Utc::now().timestamp() + fake.clock_offset;
    let app_id = match check_query(fake, query, now) {
        Ok(id) => id,
        Err(code) => return (code, Ok(None)),
    };
    match api {
        "call_record_http_srv/get_record_by_filter" => {
            if let Some((page, f)) = &fake.page_failure
                && body["Page"].as_u64().unwrap_or(1) == *page
            {
                return (OK, Err(f.clone()));
            }
            let app = &fake.apps[&app_id];
            (OK, Ok(Some(filter(app, body, now, fake.page_cap))))
        }
        "call_record_http_srv/get_record_by_callid" => {
            let id = body["CallId"].as_str().unwrap_or_default();
            let app = &fake.apps[&app_id];
            match app.records.iter().find(|r| r["CallId"] == id) {
                Some(r) => (OK, Ok(Some(json!({ "CallRecord": r })))),
                None => (OK, Ok(Some(json!({})))),
            }
        }
        "call_config/set_callback" => {
            let ok = body["Url"].as_str().is_some_and(|u| u.starts_with("http"))
                && body["CallbackCommandList"].is_array();
            if !ok {
                return ((70_001, "invalid parameters"), Ok(None));
            }
            if let Some(app) = fake.apps.get_mut(&app_id) {
                app.callback = Some(body.clone());
            }
            (OK, Ok(None))
        }
        "call_config/get_callback" => match &fake.apps[&app_id].callback {
            Some(c) => (OK, Ok(Some(c.clone()))),
            None => ((999, "no callback configured"), Ok(None)),
        },
        "call_config/delete_callback" => {
            if let Some(app) = fake.apps.get_mut(&app_id) {
                app.callback = None;
            }
            (OK, Ok(None))
        }
        _ => ((70_001, "no such API"), Ok(None)),
    }
}

/// The query string's checks: the app, the administrator, the UserSig, `random`,
/// `contenttype`. Returns the app.
fn check_query(fake: &Fake, q: &BTreeMap<String, String>, now: i64) -> Result<i64, Code> {
    let app_id: i64 = q
        .get("sdkappid")
        .and_then(|s| s.parse().ok())
        .ok_or((70_001, "sdkappid missing"))?;
    let app = fake.apps.get(&app_id).ok_or((70_001, "no such sdkappid"))?;
    if q.get("contenttype").map(String::as_str) != Some("json") {
        return Err((70_001, "contenttype must be json"));
    }
    if q.get("random")
        .and_then(|r| r.parse::<u32>().ok())
        .is_none()
    {
        return Err((70_001, "random must be a 32-bit unsigned integer"));
    }
    let identifier = q.get("identifier").ok_or((70_001, "identifier missing"))?;
    let sig = q.get("usersig").ok_or((70_001, "usersig missing"))?;
    let doc = decode_user_sig(sig).ok_or((70_003, "UserSig invalid: cannot decode"))?;
    let n = |k: &str| doc[k].as_i64().unwrap_or(i64::MIN);
    let s = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
    if s("TLS.identifier") != *identifier || n("TLS.sdkappid") != app_id {
        return Err((70_003, "UserSig invalid: identifier or sdkappid mismatch"));
    }
    let content = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        identifier,
        app_id,
        n("TLS.time"),
        n("TLS.expire")
    );
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(app.key.as_bytes())
        .unwrap_or_else(|_| panic!("HMAC key"));
    mac.update(content.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if s("TLS.sig") != want {
        return Err((70_003, "UserSig invalid: signature mismatch"));
    }
    if n("TLS.time").saturating_add(n("TLS.expire")) < now {
        return Err((70_001, "UserSig expired"));
    }
    if !app.admins.contains(identifier) {
        return Err((70_004, "identifier is not an App administrator"));
    }
    Ok(app_id)
}

/// The JSON inside a UserSig: base64 with `*-_` for `+/=`, then zlib.
pub fn decode_user_sig(sig: &str) -> Option<Value> {
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// get_record_by_filter: records whose StartTime is in [StartTime, EndTime] (StartTime no
/// earlier than 7 days ago: an older one is moved up, silently), ordered by start time and
/// call id, one page of them.
fn filter(app: &FakeApp, body: &Value, now: i64, cap: Option<u64>) -> Value {
    let week_ago = now - 7 * 86_400;
    let start = body["StartTime"].as_i64().unwrap_or(week_ago).max(week_ago);
    let end = body["EndTime"].as_i64().unwrap_or(now);
    let per_page = body["NumberPerPage"].as_u64().unwrap_or(10).max(1);
    let per_page = cap.map_or(per_page, |c| per_page.min(c));
    let page = body["Page"].as_u64().unwrap_or(1).max(1);
    let mut hits: Vec<&Value> = app
        .records
        .iter()
        .filter(|r| {
            let t = r["StartTime"].as_i64().unwrap_or(0);
            t >= start && t <= end
        })
        .collect();
    hits.sort_by(|a, b| {
        (a["StartTime"].as_i64(), a["CallId"].as_str())
            .cmp(&(b["StartTime"].as_i64(), b["CallId"].as_str()))
    });
    let list: Vec<&Value> = hits
        .iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .copied()
        .collect();
    json!({ "TotalNum": hits.len(), "Page": page, "CallRecordList": list })
}

/// A record as Tencent's API returns it.
#[allow(clippy::too_many_arguments)]
pub fn record(
    call_id: &str,
    caller: &str,
    callees: &[&str],
    result: &str,
    start: i64,
    accept: i64,
    end: i64,
) -> Value {
    json!({
        "CallId": call_id,
        "Caller_Account": caller,
        "CalleeList_Account": callees,
        "MediaType": "Audio",
        "CallType": if callees.len() > 2 { "MultiCall" } else { "SingleCall" },
        "StartTime": start,
        "AcceptTime": accept,
        "EndTime": end,
        "CallResult": result,
        "RoomId": format!("room-{call_id}"),
        "RoomIdType": 2,
    })
}
