//! `POST {trtc path}` (default `/trtc`): TRTC's own room, media and cloud-recording
//! callbacks, configured in the TRTC console (facts: docs/trtc-callbacks.md).
//!
//! TRTC sends no query string: the app is the `SdkAppId` header, the signature the `Sign`
//! header (base64 HMAC-SHA256 of the raw body with the console's key). TRTC looks only at
//! the HTTP status: 200 within 5 s is success, anything else is retried at once, then every
//! 10 s for a minute. The answer is `{"code":0}` (Tencent's recommendation); a refusal
//! carries callhook's envelope as well, `{"code":…,"ErrorCode":…,"ErrorMessage":"…"}`.
//!
//! Order of checks, and whether a refusal is kept in `rejected_deliveries`:
//! 1. `SdkAppId` present and numeric (400, not kept: no app to file it under);
//! 2. configured (403, not kept: anyone can reach the URL);
//! 3. body within the limit (413, kept without the body);
//! 4. with a `trtc_key`: `Sign` present and matching the body (403, kept with the body: a
//!    key typed differently in the console would otherwise lose every event silently);
//!    without one, the rows are stored with the note [`UNVERIFIED_NOTE`];
//! 5. the body is a JSON object (400, kept).
//!
//! Then, like the call callbacks: one row in `call_events` (family `room`, `media`,
//! `recording`, or `trtc` for other groups), deduplicated, journaled during an outage.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::callback::{BodyError, read_limited};
use super::peer::{Peer, client_addr};
use crate::auth::trtc::verify;
use crate::metrics as m;
use crate::protocol::query::truncate;
use crate::protocol::reply::ErrorCode;
use crate::protocol::{Context, Rejection, TRTC_COMMAND, dedupe_key, parse_trtc_delivery};
use crate::store::RejectedRow;

/// The note on rows stored for an app without a TRTC key (their origin is not checked).
pub const UNVERIFIED_NOTE: &str = "unverified: no trtc_key configured for this app";

/// The success answer. TRTC ignores the body; this is what its documentation recommends.
const OK_BODY: &str = r#"{"code":0}"#;

struct Answer {
    code: ErrorCode,
    message: String,
    outcome: &'static str,
    family: &'static str,
}

impl Answer {
    fn refused(r: Rejection, family: &'static str) -> Self {
        Self {
            code: r.code,
            message: r.reason,
            outcome: "rejected",
            family,
        }
    }

    fn failed(code: ErrorCode, message: String, family: &'static str) -> Self {
        Self {
            code,
            message,
            outcome: "failed",
            family,
        }
    }

    fn into_response(self) -> Response {
        if self.code == ErrorCode::Success {
            return super::json_response(200, OK_BODY);
        }
        let n = self.code.code();
        let body = serde_json::json!({
            "code": n,
            "ErrorCode": n,
            "ErrorMessage": self.message,
        });
        super::json_response(
            self.code.http_status(),
            serde_json::to_vec(&body).unwrap_or_else(|_| OK_BODY.as_bytes().to_vec()),
        )
    }
}

pub async fn handle(
    State(st): State<SharedState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let remote = client_addr(
        peer.map(|Extension(Peer(a))| a),
        &headers,
        &st.settings.trusted_proxies,
    );
    let request = Request {
        st: &st,
        remote,
        headers: &headers,
    };
    let answer =
        match tokio::time::timeout(st.settings.request_timeout, request.process(body)).await {
            Ok(answer) => answer,
            Err(_) => Answer::failed(
                ErrorCode::Timeout,
                format!(
                    "the request took longer than {:?}; retry",
                    st.settings.request_timeout
                ),
                "trtc",
            ),
        };
    let elapsed = started.elapsed();
    let family = answer.family;
    metrics::counter!(m::DELIVERIES, "family" => family, "command" => TRTC_COMMAND, "outcome" => answer.outcome, "reason" => answer.code.label()).increment(1);
    metrics::histogram!(m::REQUEST_DURATION).record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let sdkappid = header_text(&headers, "sdkappid").map(|s| truncate(s, 20).to_owned());
    let remote = remote.map(tracing::field::display);
    let request_id = header_text(&headers, "x-request-id").map(|s| truncate(s, 128).to_owned());
    if answer.code == ErrorCode::Success {
        tracing::info!(
            family,
            command = TRTC_COMMAND,
            sdkappid,
            outcome = answer.outcome,
            latency_ms,
            remote,
            request_id,
            "callback"
        );
    } else {
        tracing::info!(family, command = TRTC_COMMAND, sdkappid, outcome = answer.outcome, code = answer.code.code(), reason = %answer.message, latency_ms, remote, request_id, "callback refused");
    }
    answer.into_response()
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

struct Request<'a> {
    st: &'a SharedState,
    remote: Option<IpAddr>,
    headers: &'a HeaderMap,
}

impl Request<'_> {
    async fn process(&self, body: Body) -> Answer {
        let st = self.st;
        let sdkappid = match self.sdkappid() {
            Ok(id) => id,
            Err(r) => return Answer::refused(r, "trtc"),
        };
        let Some(app) = st.settings.apps.get(&sdkappid) else {
            return Answer::refused(
                Rejection::new(
                    ErrorCode::UnknownApp,
                    format!("sdkappid {sdkappid} is not configured on this receiver"),
                ),
                "trtc",
            );
        };
        let body = match read_limited(self.headers, body, st.settings.body_limit).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                let r = Rejection::new(
                    ErrorCode::BodyTooLarge,
                    format!("body is larger than {} bytes", st.settings.body_limit),
                );
                return self.refuse(sdkappid, r, b"").await;
            }
            Err(BodyError::Unreadable(e)) => {
                return Answer::refused(
                    Rejection::new(
                        ErrorCode::InvalidJson,
                        format!("could not read the body: {e}"),
                    ),
                    "trtc",
                );
            }
        };
        if let Some(key) = &app.trtc_key {
            let sign = self.headers.get("sign").map(|v| v.as_bytes());
            if let Err(e) = verify(key.expose().as_bytes(), &body, sign) {
                let r = Rejection::new(ErrorCode::AuthFailed, e.to_string());
                return self.refuse(sdkappid, r, &body).await;
            }
        }
        let remote = self.remote.map(|ip| ip.to_string());
        let ctx = Context {
            sdkappid,
            command: TRTC_COMMAND,
            client_ip: None,
            opt_platform: None,
            remote_addr: remote.as_deref(),
            received_at: crate::now_millis(),
        };
        let mut rows = match parse_trtc_delivery(&ctx, &body) {
            Ok(rows) => rows,
            Err(r) => return self.refuse(sdkappid, r, &body).await,
        };
        if app.trtc_key.is_none() {
            for row in &mut rows {
                row.add_note(UNVERIFIED_NOTE);
            }
        }
        let family = rows.first().map_or("trtc", |r| r.family.as_str());
        // Every row of an app without a key has a note; count only what could not be read.
        if rows
            .iter()
            .any(|r| r.notes.as_deref().is_some_and(|n| n != UNVERIFIED_NOTE))
        {
            metrics::counter!(m::NOTED_DELIVERIES, "family" => family).increment(1);
        }
        match st.ingest.submit(rows).await {
            Ok(outcome) => Answer {
                code: ErrorCode::Success,
                message: String::new(),
                outcome: outcome.label(),
                family,
            },
            Err(e) => {
                let code = e.code();
                if code == ErrorCode::Unstorable {
                    // The writer already kept it in rejected_deliveries.
                    Answer::refused(Rejection::new(code, e.to_string()), family)
                } else {
                    Answer::failed(code, e.to_string(), family)
                }
            }
        }
    }

    /// The `SdkAppId` header, a positive integer.
    fn sdkappid(&self) -> Result<i64, Rejection> {
        let raw = header_text(self.headers, "sdkappid").map(str::trim);
        match raw {
            None | Some("") => Err(Rejection::new(
                ErrorCode::InvalidQuery,
                "the SdkAppId header is missing",
            )),
            Some(v) => v.parse::<i64>().ok().filter(|&id| id > 0).ok_or_else(|| {
                Rejection::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "the SdkAppId header {:?} is not a positive integer",
                        truncate(v, 32)
                    ),
                )
            }),
        }
    }

    /// Answers a refusal for a configured app and keeps it in `rejected_deliveries`, once
    /// per distinct delivery (TRTC's retries, same body and same `Sign`, count in its
    /// `deliveries`).
    async fn refuse(&self, sdkappid: i64, r: Rejection, body: &[u8]) -> Answer {
        let code = (r.code.code() as u64).to_le_bytes();
        let sign = self.headers.get("sign").map_or(&b""[..], |v| v.as_bytes());
        let row = RejectedRow {
            dedupe_key: dedupe_key(&[
                b"rejected",
                &sdkappid.to_le_bytes(),
                &code,
                TRTC_COMMAND.as_bytes(),
                sign,
                body,
            ]),
            received_at: crate::now_millis(),
            sdkappid,
            command: Some(TRTC_COMMAND.to_owned()),
            query: String::new(),
            body: RejectedRow::body_text(body),
            error_code: r.code.code() as i32,
            reason: r.reason.clone(),
            remote_addr: self.remote.map(|ip| ip.to_string()),
        };
        if !self.st.ingest.record_rejected(row).await {
            tracing::warn!(sdkappid, reason = %r.reason, "could not keep a rejected delivery (queue full or database unavailable)");
        }
        Answer::refused(r, "trtc")
    }
}
