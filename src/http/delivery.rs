//! What the two callback endpoints share: the answer to a delivery that is not
//! acknowledged ([`Refusal`], with whether it is kept in `rejected_deliveries`), reading a
//! bounded body, the one place refusals are kept, and the metric and log line per delivery.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::ingest::{Ingest, IngestError, Outcome};
use crate::metrics as m;
use crate::protocol::Rejection;
use crate::protocol::reply::{ErrorCode, ReplyStyle};
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
            Envelope::Trtc => super::trtc::refusal_response(code, &reason),
        }
    }
}

/// Keeps `refusal` in `rejected_deliveries` when it says so, as the row `row` makes of its
/// rejection and body; the one place refusals are kept. A row that cannot be written (the
/// queue is full, the database is down) is logged and counted, and the answer stays the
/// same: the sender was told the delivery is refused either way.
pub(super) async fn keep(
    ingest: &Ingest,
    refusal: Refusal,
    row: impl FnOnce(&Rejection, &[u8]) -> RejectedRow,
) -> Refusal {
    if let Keep::WithBody(body) = &refusal.keep {
        let row = row(&refusal.rejection, body);
        let sdkappid = row.sdkappid;
        if !ingest.record_rejected(row).await {
            tracing::warn!(sdkappid, reason = %refusal.reason(), "could not keep a rejected delivery (queue full or database unavailable)");
        }
    }
    refusal
}

/// Reads a request body of at most `limit` bytes (a declared `Content-Length` over it is
/// refused before reading). Too large: 413, kept without the body. Unreadable (the
/// connection failed): not kept, there is nothing to keep.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Refusal> {
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
