//! What the two callback endpoints share: the answer to a delivery that is not
//! acknowledged ([`Refusal`], with whether it is kept in `rejected_deliveries`, written in
//! the endpoint's [`Envelope`]: the call callbacks' or TRTC's), the
//! checks after admission with the one place refusals are kept ([`check`]), and the
//! metric and log line per delivery ([`Record`]).

use std::net::IpAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::AppSettings;
use crate::ingest::{IngestError, Outcome};
use crate::metrics as m;
use crate::protocol::reply::{ErrorCode, ReplyStyle};
use crate::protocol::{EventRow, Rejection};
use crate::store::RejectedRow;

/// Whether a refusal is kept in `rejected_deliveries`.
pub(super) enum Keep {
    /// Not kept: there is no app to file it under, anyone could have sent it, nothing was
    /// read, or the writer kept it already.
    No,
    /// Kept once per distinct delivery, with this body (empty when it was too large to
    /// read).
    WithBody(Bytes),
}

/// How the answer is written: the call callbacks' envelope (plain or v4 style), or TRTC's.
#[derive(Clone, Copy)]
pub(super) enum Envelope {
    Call(ReplyStyle),
    Trtc,
}

/// A delivery that is not acknowledged: refused (`rejected`: the sender's fault, never
/// retried successfully) or failed (`failed`: 503, the sender retries).
pub(super) struct Refusal {
    pub rejection: Rejection,
    pub keep: Keep,
    failed: bool,
    envelope: Envelope,
}

impl Refusal {
    /// Refused and not kept.
    pub fn not_kept(rejection: Rejection) -> Self {
        Self {
            rejection,
            keep: Keep::No,
            failed: false,
            envelope: Envelope::Call(ReplyStyle::Plain),
        }
    }

    /// Refused and kept with `body`.
    pub fn kept(rejection: Rejection, body: Bytes) -> Self {
        Self {
            keep: Keep::WithBody(body),
            ..Self::not_kept(rejection)
        }
    }

    /// Not answered in time, or not written: the sender retries.
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            failed: true,
            ..Self::not_kept(Rejection::new(code, message))
        }
    }

    /// The same refusal, answered in `envelope`.
    pub fn answered_in(self, envelope: Envelope) -> Self {
        Self { envelope, ..self }
    }

    pub fn code(&self) -> ErrorCode {
        self.rejection.code
    }

    pub fn reason(&self) -> &str {
        &self.rejection.reason
    }

    /// The metric's and the log line's `outcome`.
    pub fn outcome(&self) -> &'static str {
        if self.failed { "failed" } else { "rejected" }
    }
}

impl From<IngestError> for Refusal {
    fn from(e: IngestError) -> Self {
        let code = e.code();
        if code == ErrorCode::Unstorable {
            // The writer already kept it in rejected_deliveries.
            Self::not_kept(Rejection::new(code, e.to_string()))
        } else {
            Self::failed(code, e.to_string())
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (code, reason) = (self.rejection.code, self.rejection.reason);
        match self.envelope {
            Envelope::Call(style) => super::reply(style, code, &reason),
            Envelope::Trtc => trtc_refusal(code, &reason),
        }
    }
}

/// A refusal as TRTC's endpoint answers it: `{"code":…,"ErrorCode":…,"ErrorMessage":"…"}`
/// (the success answer, `{"code":0}`, is `trtc.rs`'s).
fn trtc_refusal(code: ErrorCode, message: &str) -> Response {
    let n = code.code();
    let body = serde_json::json!({
        "code": n,
        "ErrorCode": n,
        "ErrorMessage": message,
    });
    super::json_response(code.http_status(), body.to_string())
}

/// A delivery on one of the callback endpoints, past its admission (the app is named,
/// configured and, for the call callbacks, authenticated): how its body is checked, and
/// how a refusal of it is filed.
pub(super) trait Admitted {
    fn state(&self) -> &AppState;
    fn headers(&self) -> &HeaderMap;
    /// The checks on the body, and its rows with their notes.
    fn parse(
        &self,
        sdkappid: i64,
        app: &AppSettings,
        body: &[u8],
    ) -> Result<Vec<EventRow>, Rejection>;
    /// A refusal's row in `rejected_deliveries`; its dedupe key makes it one row per
    /// distinct delivery (the sender's retries count in its `deliveries`).
    fn rejected_row(&self, sdkappid: i64, r: &Rejection, body: &[u8]) -> RejectedRow;
    /// Whether the refusal came before the sender was authenticated, so that anyone could
    /// have caused it: such refusals are kept only within the app's cap
    /// (`auth.failed_signatures_kept_per_minute`). A failed authentication, by default.
    fn unauthenticated(&self, _app: &AppSettings, r: &Rejection) -> bool {
        r.code == ErrorCode::AuthFailed
    }
}

/// The checks after admission: the body read within the limit, then
/// [`Admitted::parse`]. The app is ours: refusals here are kept, with the body (a body
/// too large is kept without it; one that could not be read is not). This is the one
/// place refusals are kept.
pub(super) async fn check(
    delivery: &impl Admitted,
    sdkappid: i64,
    app: &AppSettings,
    body: Body,
) -> Result<Vec<EventRow>, Refusal> {
    let st = delivery.state();
    let refusal = match read_body(delivery.headers(), body, st.settings.body_limit).await {
        Ok(body) => match delivery.parse(sdkappid, app, &body) {
            Ok(rows) => return Ok(rows),
            Err(r) => Refusal::kept(r, body),
        },
        Err(refusal) => refusal,
    };
    if let Keep::WithBody(body) = &refusal.keep {
        let row = delivery.rejected_row(sdkappid, &refusal.rejection, body);
        let capped = delivery.unauthenticated(app, &refusal.rejection)
            && !st
                .rejection_cap
                .admit(sdkappid, &row.dedupe_key, refusal.code());
        // Not kept (over the cap, the queue is full, the database is down): the answer
        // stays the same.
        if !capped && !st.ingest.record_rejected(row).await {
            tracing::warn!(sdkappid, reason = %refusal.reason(), "could not keep a rejected delivery (queue full or database unavailable)");
        }
    }
    Err(refusal)
}

/// Reads a request body of at most `limit` bytes (a declared `Content-Length` over it is
/// refused before reading). Too large: 413, kept without the body. Unreadable (the
/// connection failed): not kept, there is nothing to keep.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        let r = Rejection::new(
            ErrorCode::BodyTooLarge,
            format!("body is larger than {limit} bytes"),
        );
        Refusal::kept(r, Bytes::new())
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            Refusal::not_kept(Rejection::new(
                ErrorCode::InvalidJson,
                format!("could not read the body: {e}"),
            ))
        }
    })
}

/// The metric and the log line of one delivery.
pub(super) struct Record<'a> {
    pub family: &'static str,
    /// The command's metric label (bounded).
    pub command_label: &'static str,
    /// The command as sent, for the log line.
    pub command: Option<&'a str>,
    pub sdkappid: Option<&'a str>,
    pub remote: Option<IpAddr>,
    pub request_id: Option<&'a str>,
}

impl Record<'_> {
    /// Counts the delivery, records its latency since `started` and logs it.
    pub fn emit(&self, started: Instant, result: &Result<Outcome, Refusal>) {
        let elapsed = started.elapsed();
        let (outcome, code) = match result {
            Ok(outcome) => (outcome.label(), ErrorCode::Success),
            Err(refusal) => (refusal.outcome(), refusal.code()),
        };
        let family = self.family;
        metrics::counter!(m::DELIVERIES, "family" => family, "command" => self.command_label, "outcome" => outcome, "reason" => code.label()).increment(1);
        metrics::histogram!(m::REQUEST_DURATION).record(elapsed.as_secs_f64());
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let (command, sdkappid, request_id) = (self.command, self.sdkappid, self.request_id);
        let remote = self.remote.map(tracing::field::display);
        match result {
            Ok(_) => tracing::info!(
                family, command, sdkappid, outcome, latency_ms, remote, request_id, "callback"
            ),
            Err(refusal) => tracing::info!(
                family,
                command,
                sdkappid,
                outcome,
                code = code.code(),
                reason = %refusal.reason(),
                latency_ms,
                remote,
                request_id,
                "callback refused"
            ),
        }
    }
}
