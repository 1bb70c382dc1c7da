//! `POST {trtc path}` (default `/trtc`): TRTC's own room, media and cloud-recording
//! callbacks, configured in the TRTC console (facts: docs/src/trtc-callbacks.md).
//!
//! TRTC sends no query string: the app is the `SdkAppId` header, the signature the `Sign`
//! header (base64 HMAC-SHA256 of the raw body with the console's key). TRTC looks only at
//! the HTTP status: 200 within 5 s is success, anything else is retried at once, then every
//! 10 s for a minute. The answer is `{"code":0}` (Tencent's recommendation); a refusal
//! carries callhook's envelope as well, `{"code":…,"ErrorCode":…,"ErrorMessage":"…"}`
//! (`Envelope::Trtc` in `delivery.rs` writes it, beside the call callbacks' envelope).
//!
//! Order of checks, and whether a refusal is kept in `rejected_deliveries` (steps 1–2 are
//! `TrtcDelivery::admit`, 3–5 the shared `delivery::check`, the one place refusals are kept):
//! 1. `SdkAppId` present and numeric (400, not kept: no app to file it under);
//! 2. configured, and, for an app with a token but no `trtc_key`, opted in to unsigned
//!    callbacks with `trtc_allow_unsigned` (403, not kept: anyone can reach the URL);
//! 3. body within the limit (413, kept without the body);
//! 4. with a `trtc_key`: `Sign` present and matching the body (403, kept with the body: a
//!    key typed differently in the console would otherwise lose every event silently);
//!    without one, the rows are stored with the note [`UNVERIFIED_NOTE`];
//! 5. the body is a JSON object (400, kept).
//!
//! With a key, the refusals of steps 3–4 come before the sender is authenticated: they are
//! kept only within the app's cap (`auth.failed_signatures_kept_per_minute`).
//!
//! Then, like the call callbacks: one row in `call_events` (family `room`, `media`,
//! `recording`, or `trtc` for other groups), deduplicated, journaled during an outage.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::delivery::{Admitted, Envelope, Record, Refusal, check};
use super::peer::{Peer, client_addr};
use super::{AppState, SharedState};
use crate::auth::trtc::verify;
use crate::config::{AppSettings, TrtcCheck};
use crate::ingest::Outcome;
use crate::metrics as m;
use crate::protocol::query::truncate;
use crate::protocol::reply::ErrorCode;
use crate::protocol::{
    Context, EventRow, Rejection, TRTC_COMMAND, dedupe_key, parse_trtc_delivery,
};
use crate::quality::Signals;
use crate::store::RejectedRow;

/// The note on rows stored for an app without a TRTC key (their origin is not checked).
pub const UNVERIFIED_NOTE: &str = "unverified: no trtc_key configured for this app";

/// The success answer. TRTC ignores the body; this is what its documentation recommends.
const OK_BODY: &str = r#"{"code":0}"#;

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
    let delivery = TrtcDelivery {
        st: &st,
        remote,
        headers: &headers,
    };
    let timeout = st.settings.request_timeout;
    let (family, result) = match tokio::time::timeout(timeout, delivery.process(body)).await {
        Ok(answer) => answer,
        Err(_) => (
            "trtc",
            Err(Refusal::failed(
                ErrorCode::Timeout,
                format!("the request took longer than {timeout:?}; retry"),
            )),
        ),
    };
    let record = Record {
        family,
        command_label: TRTC_COMMAND,
        command: Some(TRTC_COMMAND),
        sdkappid: header_text(&headers, "sdkappid").map(|s| truncate(s, 20)),
        remote,
        request_id: header_text(&headers, "x-request-id").map(|s| truncate(s, 128)),
    };
    record.emit(started, &result);
    match result {
        Ok(_) => super::json_response(200, OK_BODY),
        Err(refusal) => refusal.answered_in(Envelope::Trtc).into_response(),
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The family of a delivery's rows (`trtc` for a group callhook does not name).
fn family(rows: &[EventRow]) -> &'static str {
    rows.first().map_or("trtc", |r| r.family.as_str())
}

/// One delivery to the TRTC endpoint, taken through the module doc's steps.
struct TrtcDelivery<'a> {
    st: &'a SharedState,
    remote: Option<IpAddr>,
    headers: &'a HeaderMap,
}

impl TrtcDelivery<'_> {
    /// Steps 1–5, then the queue; with the family for the metric and the log line (`trtc`
    /// until the body is parsed).
    async fn process(&self, body: Body) -> (&'static str, Result<Outcome, Refusal>) {
        let rows = match self.accept(body).await {
            Ok(rows) => rows,
            Err(refusal) => return ("trtc", Err(refusal)),
        };
        let family = family(&rows);
        let signals = Signals::of(&rows);
        let result = self.st.ingest.submit(rows).await.map_err(Refusal::from);
        if result.as_ref().is_ok_and(|o| *o != Outcome::Duplicate) {
            signals.record();
        }
        (family, result)
    }

    /// Steps 1–5. A refusal of steps 1–2 ([`Self::admit`]) is never kept; one of steps
    /// 3–5 ([`check`]) is.
    async fn accept(&self, body: Body) -> Result<Vec<EventRow>, Refusal> {
        let (sdkappid, app) = self.admit().map_err(Refusal::not_kept)?;
        check(self, sdkappid, app, body).await
    }

    /// Steps 1–2: the app is named and configured, and takes TRTC callbacks it cannot
    /// verify only if it has no token or opted in. Refusals here are not kept: there is no
    /// app to file them under, or anyone could have sent them.
    fn admit(&self) -> Result<(i64, &AppSettings), Rejection> {
        let sdkappid = self.sdkappid()?;
        let Some(app) = self.st.settings.apps.get(&sdkappid) else {
            return Err(Rejection::new(
                ErrorCode::UnknownApp,
                format!("sdkappid {sdkappid} is not configured on this receiver"),
            ));
        };
        if app.trtc_check() == TrtcCheck::Refused {
            return Err(Rejection::new(
                ErrorCode::AuthFailed,
                format!(
                    "sdkappid {sdkappid} requires a token on its call callbacks but has no TRTC key to verify this one: set trtc_key, trtc_key_env or CALLHOOK_TRTC_KEY_{sdkappid} to the TRTC console's callback key (or, unsafe, trtc_allow_unsigned = true)"
                ),
            ));
        }
        Ok((sdkappid, app))
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
}

impl Admitted for TrtcDelivery<'_> {
    fn state(&self) -> &AppState {
        self.st
    }

    fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// Steps 4–5, and the notes.
    fn parse(
        &self,
        sdkappid: i64,
        app: &AppSettings,
        body: &[u8],
    ) -> Result<Vec<EventRow>, Rejection> {
        if let Some(key) = &app.trtc_key {
            let sign = self.headers.get("sign").map(|v| v.as_bytes());
            verify(key.expose().as_bytes(), body, sign)
                .map_err(|e| Rejection::new(ErrorCode::AuthFailed, e.to_string()))?;
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
        let mut rows = parse_trtc_delivery(&ctx, body)?;
        if app.trtc_key.is_none() {
            for row in &mut rows {
                row.add_note(UNVERIFIED_NOTE);
            }
        }
        // Every row of an app without a key has a note; count only what could not be read.
        if rows
            .iter()
            .any(|r| r.notes.as_deref().is_some_and(|n| n != UNVERIFIED_NOTE))
        {
            metrics::counter!(m::NOTED_DELIVERIES, "family" => family(&rows)).increment(1);
        }
        Ok(rows)
    }

    /// With a key, nothing is authenticated before the `Sign` matches: a body too large to
    /// check it is as unauthenticated as a failed one.
    fn unauthenticated(&self, app: &AppSettings, r: &Rejection) -> bool {
        app.trtc_key.is_some() && matches!(r.code, ErrorCode::AuthFailed | ErrorCode::BodyTooLarge)
    }

    /// TRTC's retries carry the same body and the same `Sign`.
    fn rejected_row(&self, sdkappid: i64, r: &Rejection, body: &[u8]) -> RejectedRow {
        let code = (r.code.code() as u64).to_le_bytes();
        let sign = self.headers.get("sign").map_or(&b""[..], |v| v.as_bytes());
        RejectedRow {
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
        }
    }
}
