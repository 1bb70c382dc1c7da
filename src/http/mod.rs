//! The HTTP layer: routes, the shared state, and the envelope on every answer (404, 405,
//! 413, timeouts and panics included).

pub mod callback;
mod delivery;
pub mod peer;
mod rejection_cap;
pub mod server;
pub mod trtc;

use std::any::Any;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::PropagateRequestIdLayer;

use crate::config::Settings;
use crate::health::DbHealth;
use crate::ingest::Ingest;
use crate::journal::{Journal, JournalStats};
use crate::metrics as m;
use crate::protocol::reply::{ErrorCode, ReplyStyle, envelope};
use crate::store::Store;
use crate::supervisor::{Tasks, panic_text};

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub ingest: Ingest,
    pub store: Store,
    pub health: Arc<DbHealth>,
    pub journal: Option<Arc<Journal>>,
    pub metrics: Option<PrometheusHandle>,
    pub shutting_down: AtomicBool,
    /// Which long-lived tasks are not running (readiness fails while any is down).
    pub tasks: Arc<Tasks>,
    /// When the database last answered a readiness ping.
    ready_cache: Mutex<Option<Instant>>,
    /// The per-app cap on unauthenticated refusals kept in `rejected_deliveries`.
    rejection_cap: rejection_cap::RejectionCap,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(
        settings: Settings,
        ingest: Ingest,
        store: Store,
        health: Arc<DbHealth>,
        journal: Option<Arc<Journal>>,
        metrics: Option<PrometheusHandle>,
        tasks: Arc<Tasks>,
    ) -> Self {
        let rejection_cap =
            rejection_cap::RejectionCap::new(settings.failed_signatures_kept_per_minute);
        Self {
            settings,
            ingest,
            store,
            health,
            journal,
            metrics,
            shutting_down: AtomicBool::new(false),
            tasks,
            ready_cache: Mutex::new(None),
            rejection_cap,
        }
    }
}

/// A JSON envelope response.
pub fn reply(style: ReplyStyle, code: ErrorCode, message: &str) -> Response {
    json_response(code.http_status(), envelope(style, code, message))
}

fn json_response(status: u16, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The application's routes with the envelope on every failure path.
pub fn router(state: SharedState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus extra routes (tests add a panicking one).
pub fn router_with(state: SharedState, extra: Router<SharedState>) -> Router {
    let path = state.settings.callback_path.clone();
    let trtc_path = state.settings.trtc_path.clone();
    Router::new()
        .route(&path, post(callback::handle))
        .route(&trtc_path, post(trtc::handle))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panicked))
        // A proxy's (or a load generator's) `X-Request-Id` comes back on every answer, and
        // the callback log line carries it, so one delivery can be followed end to end.
        .layer(PropagateRequestIdLayer::x_request_id())
        .with_state(state)
}

async fn not_found() -> Response {
    reply(
        ReplyStyle::Plain,
        ErrorCode::NotFound,
        ErrorCode::NotFound.default_message(),
    )
}

async fn method_not_allowed() -> Response {
    reply(
        ReplyStyle::Plain,
        ErrorCode::MethodNotAllowed,
        "method not allowed: callbacks are POSTed",
    )
}

fn panicked(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic_text(&*err);
    tracing::error!(panic = detail, "a request handler panicked");
    metrics::counter!(m::DELIVERIES, "family" => "none", "command" => "none", "outcome" => "failed", "reason" => ErrorCode::Internal.label()).increment(1);
    reply(
        ReplyStyle::Plain,
        ErrorCode::Internal,
        ErrorCode::Internal.default_message(),
    )
}

async fn healthz() -> Response {
    reply(ReplyStyle::Plain, ErrorCode::Success, "ok")
}

/// 200 when the database answers, or when it does not but the outage journal takes the
/// events for it, and every long-lived task runs; 503 otherwise (and while shutting down).
/// The database check is cached for a second, so probing every second costs one query.
async fn readyz(State(st): State<SharedState>) -> Response {
    if st.shutting_down.load(Ordering::Relaxed) {
        return reply(ReplyStyle::Plain, ErrorCode::ShuttingDown, "shutting down");
    }
    let tasks_down = st.tasks.down();
    let db = check_database(&st).await;
    let journal = st.journal.as_ref().map(|j| (j.stats(), j.is_full()));
    let (queue_depth, _) = st.ingest.depth();
    let (code, message) = verdict(&db, journal.as_ref(), &tasks_down);
    let mut body = serde_json::json!({
        "ErrorCode": code.code(),
        "ErrorMessage": message,
        "database": if db.is_ok() { "up" } else { "down" },
        "backend": st.store.backend(),
        "queue_depth": queue_depth,
        "tasks_down": tasks_down,
    });
    if let Some((s, full)) = journal {
        body["journal_events"] = s.events.into();
        body["journal_bytes"] = s.bytes.into();
        body["journal_full"] = full.into();
    }
    json_response(
        code.http_status(),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Readiness from what `/readyz` found: the database, the journal (its contents, and
/// whether it is full) and the tasks not running.
fn verdict(
    db: &Result<(), String>,
    journal: Option<&(JournalStats, bool)>,
    tasks_down: &[&str],
) -> (ErrorCode, Cow<'static, str>) {
    let (code, message): (ErrorCode, Cow<'static, str>) = match (db, journal) {
        (Ok(()), Some((s, _))) if s.events > 0 => (
            ErrorCode::Success,
            "ready; replaying the outage journal".into(),
        ),
        (Ok(()), _) => (ErrorCode::Success, "ready".into()),
        (Err(e), Some((_, true))) => (
            ErrorCode::DatabaseUnavailable,
            format!("database unavailable ({e}) and the outage journal is full").into(),
        ),
        (Err(_), Some(_)) => (
            ErrorCode::Success,
            "ready; the database is unavailable, events are journaled".into(),
        ),
        (Err(e), None) => (
            ErrorCode::DatabaseUnavailable,
            format!("database unavailable: {e}").into(),
        ),
    };
    if code == ErrorCode::Success && !tasks_down.is_empty() {
        // A task that ended early is being restarted: not ready until it runs again.
        let message = format!("not running, restarting: {}", tasks_down.join(", "));
        return (ErrorCode::Overloaded, message.into());
    }
    (code, message)
}

/// Pings the database; a success is reused for a second, so probing every second costs at
/// most one query, while a failure is rechecked at once (recovery shows immediately).
async fn check_database(st: &AppState) -> Result<(), String> {
    const FRESH: Duration = Duration::from_secs(1);
    let last_ok = *st
        .ready_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if last_ok.is_some_and(|at| at.elapsed() < FRESH) && st.health.is_up() {
        return Ok(());
    }
    let result = st
        .store
        .ping(Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string());
    let mut cache = st
        .ready_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match &result {
        Ok(()) => {
            st.health.mark_up();
            *cache = Some(Instant::now());
        }
        Err(e) => {
            st.health.mark_down(e);
            *cache = None;
        }
    }
    result
}

async fn metrics(State(st): State<SharedState>) -> Response {
    let (depth, age) = st.ingest.depth();
    metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
    metrics::gauge!(m::QUEUE_OLDEST_AGE).set(age.as_secs_f64());
    if let Some(journal) = &st.journal {
        let s = journal.stats();
        let age = s
            .oldest_received_at
            .map_or(0.0, |t| ((crate::now_millis() - t).max(0)) as f64 / 1000.0);
        metrics::gauge!(m::JOURNAL_OLDEST_AGE).set(age);
        metrics::gauge!(m::JOURNAL_EVENTS).set(s.events as f64);
        metrics::gauge!(m::JOURNAL_BYTES).set(s.bytes as f64);
    }
    let text = st.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
