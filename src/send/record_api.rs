//! `callhook send --record-api ADDR`: callhook's sender plays Tencent's call record API too,
//! serving the records of the calls it generated — including those whose callbacks it
//! withheld on purpose (`--drop-percent`) — so that `callhook reconcile` can be tried end to
//! end on one machine. It checks each request as Tencent does (the app, `contenttype`,
//! `random`, the UserSig against `--record-api-key`), pages (`NumberPerPage`, default 10;
//! `Page` from 1) and moves a `StartTime` older than 7 days up to 7 days ago, as Tencent
//! documents. Records are kept in memory, sorted by start time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::tencent::usersig::{SigError, verify};

/// The records served, in start-time order once [`Records::seal`] has run.
#[derive(Default)]
struct Records {
    /// (start time in seconds, call id, the record as JSON text).
    list: Vec<(i64, String, Box<RawValue>)>,
    sorted: bool,
}

impl Records {
    fn seal(&mut self) {
        if !self.sorted {
            self.list.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            self.sorted = true;
        }
    }
}

struct Api {
    sdkappid: i64,
    key: String,
    records: Mutex<Records>,
}

/// The record API, serving until the process ends.
#[derive(Clone)]
pub struct RecordApi {
    pub addr: SocketAddr,
    api: Arc<Api>,
}

impl RecordApi {
    /// Binds `addr` and serves app `sdkappid`'s records, checking UserSigs against `key`.
    pub async fn start(addr: &str, sdkappid: i64, key: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--record-api: cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let api = Arc::new(Api {
            sdkappid,
            key: key.trim().to_owned(),
            records: Mutex::new(Records::default()),
        });
        let router = axum::Router::new()
            .route(
                "/v4/call_record_http_srv/{api}",
                axum::routing::post(handle),
            )
            .with_state(Arc::clone(&api));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the record API stopped");
            }
        });
        Ok(Self { addr, api })
    }

    /// Adds a call's record (`record`: JSON text, `start`: its start time in seconds).
    pub fn add(&self, call_id: &str, start: i64, record: String) {
        if let Ok(raw) = RawValue::from_string(record) {
            let mut r = self.lock();
            r.list.push((start, call_id.to_owned(), raw));
            r.sorted = false;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.api
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tencent's envelope.
fn envelope(code: i64, info: &str, response: Option<Value>) -> axum::Json<Value> {
    let mut body = json!({
        "ActionStatus": if code == 0 { "OK" } else { "FAIL" },
        "ErrorCode": code,
        "ErrorInfo": info,
        "RequestId": format!("callhook-send-{}", crate::now_millis()),
    });
    if let Some(r) = response {
        body["Response"] = r;
    }
    axum::Json(body)
}

async fn handle(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    body: String,
) -> axum::Json<Value> {
    let now = chrono::Utc::now().timestamp();
    if let Err((code, info)) = check(&api, &q, now) {
        return envelope(code, info, None);
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut records = api.records.lock().unwrap_or_else(PoisonError::into_inner);
    records.seal();
    match name.as_str() {
        "get_record_by_filter" => envelope(0, "", Some(page(&records, &body, now))),
        "get_record_by_callid" => {
            let id = body["CallId"].as_str().unwrap_or_default();
            let found = records.list.iter().find(|r| r.1 == id);
            let response = match found {
                Some(r) => json!({ "CallRecord": r.2 }),
                None => json!({}),
            };
            envelope(0, "", Some(response))
        }
        _ => envelope(70_001, "no such API", None),
    }
}

/// The query string as Tencent checks it.
fn check(api: &Api, q: &BTreeMap<String, String>, now: i64) -> Result<(), (i64, &'static str)> {
    let app = q.get("sdkappid").and_then(|s| s.parse::<i64>().ok());
    if app != Some(api.sdkappid) {
        return Err((70_001, "sdkappid is not this app's"));
    }
    if q.get("contenttype").map(String::as_str) != Some("json")
        || q.get("random")
            .and_then(|r| r.parse::<u32>().ok())
            .is_none()
    {
        return Err((70_001, "contenttype=json and a random u32 are required"));
    }
    let identifier = q.get("identifier").map(String::as_str).unwrap_or_default();
    let sig = q.get("usersig").map(String::as_str).unwrap_or_default();
    match verify(&api.key, api.sdkappid, identifier, sig, now) {
        Ok(()) => Ok(()),
        Err(SigError::Expired) => Err((70_001, "UserSig expired")),
        Err(_) => Err((
            70_003,
            "UserSig invalid (is the secret key the --record-api-key?)",
        )),
    }
}

/// One page of the records that started in [StartTime, EndTime].
fn page(records: &Records, body: &Value, now: i64) -> Value {
    let week_ago = now - 7 * 86_400;
    let start = body["StartTime"].as_i64().unwrap_or(week_ago).max(week_ago);
    let end = body["EndTime"].as_i64().unwrap_or(now);
    let per_page = body["NumberPerPage"].as_u64().unwrap_or(10).clamp(1, 1000) as usize;
    let page = body["Page"].as_u64().unwrap_or(1).max(1) as usize;
    let first = records.list.partition_point(|r| r.0 < start);
    let last = records.list.partition_point(|r| r.0 <= end);
    let hits = &records.list[first..last.max(first)];
    let list: Vec<&RawValue> = hits
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|r| r.2.as_ref())
        .collect();
    json!({ "TotalNum": hits.len(), "Page": page, "CallRecordList": list })
}
