//! Test tooling: a fresh database per test on either backend, the real application on a
//! real socket (port 0), typed request helpers, and backend-neutral views of stored rows so
//! one assertion checks both backends.

use std::sync::Arc;
use std::time::Duration;

use callhook::app::Application;
use callhook::config::{AppSettings, Secret, Settings};
use callhook::http::SharedState;
use callhook::store::Store;
use serde_json::Value;
use sqlx::Row;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The SDKAppID every test app accepts.
pub const APP: i64 = 1_400_000_001;
/// An app that requires a token.
pub const TOKEN_APP: i64 = 1_400_000_002;
pub const TOKEN: &str = "test-token-4f9a";

pub fn unique_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database for one test: a fresh PostgreSQL database on the shared cluster, or a fresh
/// SQLite file in a temporary directory.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self {
                backend,
                url: crate::pg::shared().create_database().await,
                _dir: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                let url = format!("sqlite://{}", dir.path().join("callhook.db").display());
                Self {
                    backend,
                    url,
                    _dir: Some(Arc::new(dir)),
                }
            }
        }
    }

    /// A database at a given PostgreSQL URL (e.g. on a dedicated cluster).
    pub fn postgres_at(url: String) -> Self {
        Self {
            backend: Backend::Postgres,
            url,
            _dir: None,
        }
    }

    /// A second handle on the same database.
    pub fn share(&self) -> Self {
        Self {
            backend: self.backend,
            url: self.url.clone(),
            _dir: self._dir.clone(),
        }
    }

    /// Default settings for this database: the two test apps, port 0, no spool.
    pub fn settings(&self) -> Settings {
        let token_app = AppSettings {
            token: Some(Secret::new(TOKEN)),
            ..AppSettings::new(TOKEN_APP)
        };
        let mut s = Settings::new(&self.url, [AppSettings::new(APP), token_app]);
        s.listen = "127.0.0.1:0".parse().unwrap_or(s.listen);
        if self.backend == Backend::Sqlite {
            s.ingest.writers = 1;
        }
        s
    }
}

/// The real application, serving on a real socket.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub db: TestDb,
    pub state: SharedState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_on(TestDb::new(backend).await, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_on(TestDb::new(backend).await, configure).await
    }

    pub async fn spawn_on(db: TestDb, configure: impl FnOnce(&mut Settings)) -> Self {
        init_tracing();
        let mut settings = db.settings();
        configure(&mut settings);
        let app = Application::build(settings)
            .await
            .unwrap_or_else(|e| panic!("building the application: {e:#}"));
        let addr = app
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let state = Arc::clone(app.state());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        callhook::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        Self {
            addr,
            db,
            state,
            client,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// POSTs `body` to `/?{query}` and returns the status and the parsed JSON answer.
    pub async fn post(&self, query: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/?{query}")))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /?{query}: {e}"));
        parse(resp).await
    }

    /// POSTs a status callback for [`APP`].
    pub async fn post_status(&self, command: &str, body: &Value) -> (u16, Value) {
        self.post(&status_query(APP, command), body.to_string())
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Stops gracefully and waits until the application has exited.
    pub async fn stop(mut self) -> TestDb {
        self.shutdown_and_wait().await;
        self.db.share()
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            match tokio::time::timeout(Duration::from_secs(30), h).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("the application did not stop cleanly: {other:?}"),
            }
        }
    }

    pub async fn events(&self) -> Vec<StoredEvent> {
        read_events(self.store()).await
    }

    pub async fn rejected(&self) -> Vec<StoredRejection> {
        read_rejected(self.store()).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn parse(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(
        ct, "application/json",
        "every answer is JSON (status {status}, body {text})"
    );
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
    (status, json)
}

pub fn status_query(sdkappid: i64, command: &str) -> String {
    format!(
        "sdkappid={sdkappid}&command={command}&contenttype=json&clientip=10.0.0.7&optplatform=Android"
    )
}

pub fn v4_query(sdkappid: i64, command: &str) -> String {
    format!(
        "SdkAppid={sdkappid}&CallbackCommand={command}&contenttype=json&ClientIP=10.0.0.8&OptPlatform=iOS"
    )
}

/// A status-callback body.
pub fn status_body(call_id: &str, user: &str, role: &str, result: &str) -> Value {
    serde_json::json!({
        "UserId": user,
        "RoomId": format!("room-{call_id}"),
        "TotalNum": 2,
        "MediaType": "video",
        "CallType": "single",
        "CallId": call_id,
        "Role": role,
        "CallResult": result,
        "EventTime": 1_704_856_890,
        "StartCallTs": 1_704_856_873,
        "AcceptTs": if result == "normal_end" { 1_704_856_876 } else { 0 },
        "EndTs": 1_704_856_885,
    })
}

/// A status callback's row for `call_id` as the parser makes it (for the journal and the
/// store, which take rows), received at `received_at`.
pub fn status_row(call_id: &str, received_at: i64) -> callhook::protocol::EventRow {
    use callhook::protocol::{Context, Kind, parse_delivery};
    let ctx = Context {
        sdkappid: APP,
        command: "call_end",
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at,
    };
    let body = status_body(call_id, "u", "caller", "cancel").to_string();
    parse_delivery(Kind::Status, false, &ctx, body.as_bytes())
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .unwrap_or_else(|| panic!("the test body parses"))
}

/// Tencent's documented example body (TRTC doc 60130), values as published, including its
/// 9-digit EventTime. Kept here, independent of the copy `callhook send` uses.
pub const DOC_BODY: &str = r#"{"UserId": "Alice","RoomId": "Alice's Room","TotalNum": 2,"MediaType": "audio","CallType": "single","CallId": "aheahfo-eqwnknoihfsd-qweqf","Role": "caller","CallResult": "normal_end","EventTime": 170485688,"StartCallTs": 1704856873,"AcceptTs": 1704856876,"EndTs": 1704856885}"#;

/// The documented example request (for [`APP`]) as it must be stored, field by field.
pub fn assert_documented_example(r: &StoredEvent) {
    assert_eq!(r.sdkappid, APP);
    assert_eq!(r.family, "status");
    assert_eq!(r.command, "call_end");
    assert_eq!(r.call_id.as_deref(), Some("aheahfo-eqwnknoihfsd-qweqf"));
    assert_eq!(r.user_id.as_deref(), Some("Alice"));
    assert_eq!(r.role.as_deref(), Some("caller"));
    assert_eq!(r.event, None);
    assert_eq!(r.call_result.as_deref(), Some("normal_end"));
    assert_eq!(r.media_type.as_deref(), Some("audio"));
    assert_eq!(r.call_type.as_deref(), Some("single"));
    assert_eq!(r.room_id.as_deref(), Some("Alice's Room"));
    assert_eq!(r.total_num, Some(2));
    assert_eq!(
        r.event_time, None,
        "the 9-digit EventTime (1975) is not a plausible time: kept in the payload, noted"
    );
    assert_eq!(
        r.notes.as_deref(),
        Some("EventTime: 170485688 (1975-05-28) is not a plausible time, not used")
    );
    assert_eq!(r.start_call_ts, Some(1_704_856_873_000));
    assert_eq!(r.accept_ts, Some(1_704_856_876_000));
    assert_eq!(r.end_ts, Some(1_704_856_885_000));
    assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.opt_platform.as_deref(), Some("iOS"));
    assert_eq!(r.remote_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.payload_text.as_deref(),
        Some(DOC_BODY),
        "the body exactly as received"
    );
}

/// A row of `call_events`, read the same way from both backends: timestamps as Unix
/// milliseconds, the payload as parsed JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub sdkappid: i64,
    pub family: String,
    pub command: String,
    pub call_id: Option<String>,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub event: Option<String>,
    pub call_result: Option<String>,
    pub media_type: Option<String>,
    pub call_type: Option<String>,
    pub room_id: Option<String>,
    pub total_num: Option<i64>,
    pub event_time: Option<i64>,
    pub start_call_ts: Option<i64>,
    pub accept_ts: Option<i64>,
    pub end_ts: Option<i64>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub remote_addr: Option<String>,
    pub members: Option<Value>,
    /// The payload, parsed (`Null` when the row has none: it is on its delivery's first row).
    pub payload: Value,
    /// The payload's text exactly as the database returns it.
    pub payload_text: Option<String>,
    pub notes: Option<String>,
    pub deliveries: i64,
    pub received_at: i64,
    pub last_delivery_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRejection {
    pub sdkappid: i64,
    pub command: Option<String>,
    pub query: String,
    pub body: String,
    pub error_code: i64,
    pub reason: String,
    pub remote_addr: Option<String>,
    pub received_at: i64,
    pub deliveries: i64,
    pub last_delivery_at: i64,
}

const PG_EVENTS: &str = "SELECT sdkappid, family, command, call_id, user_id, role, event, call_result, media_type, call_type, room_id, total_num,
  (extract(epoch FROM event_time) * 1000)::bigint AS event_time,
  (extract(epoch FROM start_call_ts) * 1000)::bigint AS start_call_ts,
  (extract(epoch FROM accept_ts) * 1000)::bigint AS accept_ts,
  (extract(epoch FROM end_ts) * 1000)::bigint AS end_ts,
  client_ip, opt_platform, remote_addr, members::text AS members, payload::text AS payload, notes, deliveries::bigint AS deliveries,
  (extract(epoch FROM received_at) * 1000)::bigint AS received_at,
  (extract(epoch FROM last_delivery_at) * 1000)::bigint AS last_delivery_at
  FROM call_events ORDER BY id";

const SQLITE_EVENTS: &str = "SELECT sdkappid, family, command, call_id, user_id, role, event, call_result, media_type, call_type, room_id, total_num,
  CAST(round(unixepoch(event_time, 'subsec') * 1000) AS INTEGER) AS event_time,
  CAST(round(unixepoch(start_call_ts, 'subsec') * 1000) AS INTEGER) AS start_call_ts,
  CAST(round(unixepoch(accept_ts, 'subsec') * 1000) AS INTEGER) AS accept_ts,
  CAST(round(unixepoch(end_ts, 'subsec') * 1000) AS INTEGER) AS end_ts,
  client_ip, opt_platform, remote_addr, members, payload, notes, deliveries,
  CAST(round(unixepoch(received_at, 'subsec') * 1000) AS INTEGER) AS received_at,
  CAST(round(unixepoch(last_delivery_at, 'subsec') * 1000) AS INTEGER) AS last_delivery_at
  FROM call_events ORDER BY id";

fn event_from<R: Row>(r: &R) -> StoredEvent
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let s =
        |c: &str| -> Option<String> { r.try_get(c).unwrap_or_else(|e| panic!("column {c}: {e}")) };
    let i = |c: &str| -> Option<i64> { r.try_get(c).unwrap_or_else(|e| panic!("column {c}: {e}")) };
    let payload = s("payload");
    let json = |text: &Option<String>, what: &str| -> Value {
        text.as_deref().map_or(Value::Null, |t| {
            serde_json::from_str(t)
                .unwrap_or_else(|e| panic!("stored {what} is not JSON ({e}): {t}"))
        })
    };
    StoredEvent {
        sdkappid: i("sdkappid").unwrap_or_default(),
        family: s("family").unwrap_or_default(),
        command: s("command").unwrap_or_default(),
        call_id: s("call_id"),
        user_id: s("user_id"),
        role: s("role"),
        event: s("event"),
        call_result: s("call_result"),
        media_type: s("media_type"),
        call_type: s("call_type"),
        room_id: s("room_id"),
        total_num: i("total_num"),
        event_time: i("event_time"),
        start_call_ts: i("start_call_ts"),
        accept_ts: i("accept_ts"),
        end_ts: i("end_ts"),
        client_ip: s("client_ip"),
        opt_platform: s("opt_platform"),
        remote_addr: s("remote_addr"),
        members: s("members").map(|m| json(&Some(m), "members")),
        payload: json(&payload, "payload"),
        payload_text: payload,
        notes: s("notes"),
        deliveries: i("deliveries").unwrap_or_default(),
        received_at: i("received_at").unwrap_or_default(),
        last_delivery_at: i("last_delivery_at").unwrap_or_default(),
    }
}

pub async fn read_events(store: &Store) -> Vec<StoredEvent> {
    match store {
        Store::Postgres(s) => sqlx::query(PG_EVENTS)
            .fetch_all(s.pool())
            .await
            .unwrap_or_else(|e| panic!("reading call_events: {e}"))
            .iter()
            .map(event_from)
            .collect(),
        Store::Sqlite(s) => sqlx::query(SQLITE_EVENTS)
            .fetch_all(s.pool())
            .await
            .unwrap_or_else(|e| panic!("reading call_events: {e}"))
            .iter()
            .map(event_from)
            .collect(),
    }
}

const PG_REJECTED: &str = "SELECT sdkappid, command, query, body, error_code::bigint AS error_code, reason, remote_addr,
  (extract(epoch FROM received_at) * 1000)::bigint AS received_at, deliveries::bigint AS deliveries,
  (extract(epoch FROM last_delivery_at) * 1000)::bigint AS last_delivery_at FROM rejected_deliveries ORDER BY id";
const SQLITE_REJECTED: &str = "SELECT sdkappid, command, query, body, error_code, reason, remote_addr,
  CAST(round(unixepoch(received_at, 'subsec') * 1000) AS INTEGER) AS received_at, deliveries,
  CAST(round(unixepoch(last_delivery_at, 'subsec') * 1000) AS INTEGER) AS last_delivery_at FROM rejected_deliveries ORDER BY id";

fn rejected_from<R: Row>(r: &R) -> StoredRejection
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let get_s = |c: &str| -> String { r.try_get(c).unwrap_or_else(|e| panic!("column {c}: {e}")) };
    let get_o =
        |c: &str| -> Option<String> { r.try_get(c).unwrap_or_else(|e| panic!("column {c}: {e}")) };
    let get_i = |c: &str| -> i64 { r.try_get(c).unwrap_or_else(|e| panic!("column {c}: {e}")) };
    StoredRejection {
        sdkappid: get_i("sdkappid"),
        command: get_o("command"),
        query: get_s("query"),
        body: get_s("body"),
        error_code: get_i("error_code"),
        reason: get_s("reason"),
        remote_addr: get_o("remote_addr"),
        received_at: get_i("received_at"),
        deliveries: get_i("deliveries"),
        last_delivery_at: get_i("last_delivery_at"),
    }
}

pub async fn read_rejected(store: &Store) -> Vec<StoredRejection> {
    match store {
        Store::Postgres(s) => sqlx::query(PG_REJECTED)
            .fetch_all(s.pool())
            .await
            .unwrap_or_else(|e| panic!("reading rejected_deliveries: {e}"))
            .iter()
            .map(rejected_from)
            .collect(),
        Store::Sqlite(s) => sqlx::query(SQLITE_REJECTED)
            .fetch_all(s.pool())
            .await
            .unwrap_or_else(|e| panic!("reading rejected_deliveries: {e}"))
            .iter()
            .map(rejected_from)
            .collect(),
    }
}

/// Runs one SQL query that returns a single integer, on either backend.
pub async fn scalar(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(s) => sqlx::query_scalar::<_, i64>(sql).fetch_one(s.pool()).await,
        Store::Sqlite(s) => sqlx::query_scalar::<_, i64>(sql).fetch_one(s.pool()).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `sql`, every column of which is text (`CAST(x AS TEXT)` reads the same on both
/// backends), and returns its rows: for what [`StoredEvent`] cannot read, such as a payload
/// that `serde_json` cannot parse.
pub async fn text_rows(store: &Store, sql: &str) -> Vec<Vec<Option<String>>> {
    fn texts<R: Row>(r: &R) -> Vec<Option<String>>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        (0..r.len())
            .map(|i| r.try_get(i).unwrap_or_else(|e| panic!("column {i}: {e}")))
            .collect()
    }
    match store {
        Store::Postgres(s) => sqlx::query(sql)
            .fetch_all(s.pool())
            .await
            .map(|rows| rows.iter().map(texts).collect()),
        Store::Sqlite(s) => sqlx::query(sql)
            .fetch_all(s.pool())
            .await
            .map(|rows| rows.iter().map(texts).collect()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `len` bytes of text that does not compress (base64 of a SHA-256 chain from `seed`): an
/// id that PostgreSQL's B-tree entries cannot hold once it is over about 2.7 kB.
pub fn incompressible(seed: &str, len: usize) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let mut block: Vec<u8> = Sha256::digest(seed.as_bytes()).to_vec();
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() * 4 < len * 3 + 4 {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    let mut text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    text.truncate(len);
    text
}

/// What an indexed text column holds for a value over 256 bytes, spelled out here apart from
/// the code: the value's first 221 bytes (at a character boundary; `value` is ASCII in the
/// tests), `…`, and the first 16 bytes of the SHA-256 of the whole value in hex.
pub fn bounded(value: &str) -> String {
    use sha2::{Digest, Sha256};
    assert!(value.is_ascii() && value.len() > 256);
    let hash = Sha256::digest(value.as_bytes());
    format!("{}…{}", &value[..221], hex::encode(&hash[..16]))
}

/// Logs from the application, when `CALLHOOK_TEST_LOG` is set (e.g. to `debug`).
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("CALLHOOK_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(level))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Generates `<name>_postgres` and `<name>_sqlite` tests from one async body that takes a
/// [`Backend`], so every behaviour is checked on both backends.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($backend: $crate::helpers::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::helpers::Backend::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::helpers::Backend::Sqlite).await
            }
        }
    };
}
