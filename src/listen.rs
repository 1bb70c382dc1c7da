//! `callhook listen ADDR --secret whsec_…`: a local receiver of forwarded messages, to watch
//! forwarding work on one machine (as `stripe listen` does). Every `POST`, on any path, is
//! checked as a receiver must check it (the three Standard Webhooks headers, the timestamp
//! within 5 minutes, the signature over the body as received), answered 204 when it passes
//! and 401 otherwise (so callhook retries it), and printed to stdout.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

use crate::cli::{ListenArgs, ListenFormat};
use crate::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningKey};

/// The largest body taken (a message is a few kilobytes).
const BODY_LIMIT: usize = 1 << 20;

struct Listener {
    key: SigningKey,
    format: ListenFormat,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: &ListenArgs) -> anyhow::Result<()> {
    let key = SigningKey::parse(&args.secret).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let addr = crate::config::parse_listen(&args.addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let state = Arc::new(Listener {
        key,
        format: args.format,
    });
    let app = axum::Router::new()
        .fallback(receive)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    eprintln!(
        "callhook listen: verifying and printing forwarded messages posted to http://{}/ (ctrl-c stops)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
        .context("serving")
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<Listener>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if method != axum::http::Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (id, timestamp) = (header(HEADER_ID), header(HEADER_TIMESTAMP));
    let checked = state.key.verify(
        id,
        timestamp,
        header(HEADER_SIGNATURE),
        &body,
        chrono::Utc::now().timestamp(),
    );
    let line = match state.format {
        ListenFormat::Text => text(id, &checked, &body),
        ListenFormat::Json => json(id, timestamp, &checked, &body),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    match checked {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `TIME  ID  TYPE  verified` (or `REFUSED: why`), then the body as it arrived (pipe it
/// through `jq` to read it).
fn text(
    id: Option<&str>,
    checked: &Result<(), crate::webhook::VerifyError>,
    body: &[u8],
) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    let kind = serde_json::from_slice::<Typed>(body)
        .map(|t| t.kind)
        .unwrap_or_else(|_| "(no type)".to_owned());
    let verdict = match checked {
        Ok(()) => "verified".to_owned(),
        Err(e) => format!("REFUSED: {e}"),
    };
    format!(
        "{}  {}  {kind}  {verdict}\n{}\n",
        now(),
        id.unwrap_or("(no webhook-id)"),
        String::from_utf8_lossy(body)
    )
}

/// One JSON object per message.
fn json(
    id: Option<&str>,
    timestamp: Option<&str>,
    checked: &Result<(), crate::webhook::VerifyError>,
    body: &[u8],
) -> String {
    let body = serde_json::from_slice::<serde_json::Value>(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
    let line = serde_json::json!({
        "received_at": now(),
        "webhook_id": id,
        "webhook_timestamp": timestamp,
        "verified": checked.is_ok(),
        "error": checked.as_ref().err().map(ToString::to_string),
        "body": body,
    });
    format!("{line}\n")
}
