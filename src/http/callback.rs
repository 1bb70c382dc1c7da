//! `POST {callback path}`: the callback endpoint.
//!
//! A refused callback is lost for good once Tencent's retries end, so only what can never
//! be one of its callbacks for this app is refused. Order of checks, and whether a refusal
//! is kept in `rejected_deliveries` (once per distinct delivery):
//! 1. `sdkappid` present and numeric (400, not kept: no app to file it under);
//! 2. configured (403, not kept: anyone can reach the URL);
//! 3. token or signature, when the app has a token (403, not kept);
//! 4. body within the limit (413, kept without the body);
//! 5. `command` in the app's explicit `commands` list, when it has one (400, kept);
//! 6. the body is a JSON object (400, kept).
//!
//! Everything else is stored and answered 0: a field that cannot be read is NULL and
//! noted on the row, an unknown command is stored with family `other`, a missing command
//! or a `contenttype` other than json is noted. Then: queued, committed, answered 0
//! (stored, duplicate or journaled), or 503 (overloaded, database unavailable: the sender
//! retries).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;

use super::peer::{Peer, client_addr};
use super::{SharedState, reply};
use crate::auth::authenticate;
use crate::ingest::Outcome;
use crate::metrics as m;
use crate::protocol::query::{redact, stable_query, truncate};
use crate::protocol::reply::{Ack, ErrorCode, ReplyStyle};
use crate::protocol::{
    CallbackQuery, Context, Kind, Rejection, classify, dedupe_key, known_commands, parse_delivery,
};
use crate::store::RejectedRow;

/// What the request came to, for the answer, the metric and the log line.
struct Answer {
    code: ErrorCode,
    message: Cow<'static, str>,
    outcome: &'static str,
    ack: Option<Ack>,
}

impl Answer {
    fn ok(outcome: Outcome) -> Self {
        let ack = match outcome {
            Outcome::Inserted => Ack::Stored,
            Outcome::Duplicate => Ack::Duplicate,
            Outcome::Journaled => Ack::Journaled,
        };
        Self {
            code: ErrorCode::Success,
            message: Cow::Borrowed(ack.message()),
            outcome: outcome.label(),
            ack: Some(ack),
        }
    }

    fn refused(r: Rejection) -> Self {
        Self {
            code: r.code,
            message: Cow::Owned(r.reason),
            outcome: "rejected",
            ack: None,
        }
    }

    fn failed(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            outcome: "failed",
            ack: None,
        }
    }

    fn into_response(self, style: ReplyStyle) -> Response {
        match self.ack {
            Some(ack) => super::json_response(200, ack.body(style)),
            None => reply(style, self.code, &self.message),
        }
    }
}

/// Labels with bounded cardinality: a known command's own spelling, else `other`.
fn labels(query: &CallbackQuery) -> (&'static str, &'static str) {
    let Some(cmd) = query
        .command
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return ("none", "none");
    };
    let family = match classify(cmd) {
        Kind::Status => "status",
        Kind::Event => "event",
        Kind::V4StartCall | Kind::V4EndCall | Kind::V4MemberChanged | Kind::V4RecordChanged => "v4",
        Kind::Unknown => "unknown",
    };
    let command = known_commands()
        .find(|k| k.eq_ignore_ascii_case(cmd))
        .unwrap_or(if family == "v4" {
            // Call.CallbackAfterRecordChanged, in either spelling.
            crate::protocol::v4_record::RECORD_CHANGED
        } else {
            "other"
        });
    (family, command)
}

pub async fn handle(
    State(st): State<SharedState>,
    peer: Option<Extension<Peer>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let raw_query = uri.query().unwrap_or_default();
    let query = CallbackQuery::parse(raw_query);
    let style = if query.v4_style {
        ReplyStyle::V4
    } else {
        ReplyStyle::Plain
    };
    let remote = client_addr(
        peer.map(|Extension(Peer(a))| a),
        &headers,
        &st.settings.trusted_proxies,
    );
    let request = Request {
        st: &st,
        query: &query,
        raw_query,
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
            ),
        };

    let elapsed = started.elapsed();
    let (family, command) = labels(&query);
    metrics::counter!(m::DELIVERIES, "family" => family, "command" => command, "outcome" => answer.outcome, "reason" => answer.code.label()).increment(1);
    metrics::histogram!(m::REQUEST_DURATION).record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let sdkappid = query.sdkappid.as_deref().map(|s| truncate(s, 20));
    let cmd = query.command.as_deref().map(|s| truncate(s, 64));
    let remote = remote.map(tracing::field::display);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| truncate(s, 128));
    if answer.code == ErrorCode::Success {
        tracing::info!(
            family,
            command = cmd,
            sdkappid,
            outcome = answer.outcome,
            latency_ms,
            remote,
            request_id,
            "callback"
        );
    } else {
        tracing::info!(
            family,
            command = cmd,
            sdkappid,
            outcome = answer.outcome,
            code = answer.code.code(),
            reason = %answer.message,
            latency_ms,
            remote,
            request_id,
            "callback refused"
        );
    }
    answer.into_response(style)
}

/// What the query says that is worth a note on the rows (it does not stop the delivery).
fn query_notes(query: &CallbackQuery, command: Option<&str>) -> Vec<String> {
    let mut notes = Vec::new();
    if command.is_none() {
        notes.push("query: command (or CallbackCommand) is missing".to_owned());
    }
    if let Some(ct) = query.contenttype.as_deref() {
        if !ct.trim().eq_ignore_ascii_case("json") {
            notes.push(format!(
                "query: contenttype is {:?}, not json",
                truncate(ct, 32)
            ));
        }
    }
    notes
}

struct Request<'a> {
    st: &'a SharedState,
    query: &'a CallbackQuery,
    raw_query: &'a str,
    remote: Option<IpAddr>,
    headers: &'a HeaderMap,
}

pub(super) enum BodyError {
    TooLarge,
    Unreadable(String),
}

/// Reads a request body of at most `limit` bytes (a declared `Content-Length` over it is
/// refused before reading).
pub(super) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(e.to_string())
        }
    })
}

impl Request<'_> {
    async fn process(&self, body: Body) -> Answer {
        let st = self.st;
        let sdkappid = match self.query.sdkappid() {
            Ok(id) => id,
            Err(r) => return Answer::refused(r),
        };
        let Some(app) = st.settings.apps.get(&sdkappid) else {
            return Answer::refused(Rejection::new(
                ErrorCode::UnknownApp,
                format!("sdkappid {sdkappid} is not configured on this receiver"),
            ));
        };
        if let Err(r) = authenticate(
            app,
            self.query,
            crate::now_millis() / 1000,
            st.settings.sign_window,
        ) {
            return Answer::refused(r);
        }

        // The app is ours and authenticated: from here on, refusals are kept, body included.
        let body = match self.read_body(body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                let r = Rejection::new(
                    ErrorCode::BodyTooLarge,
                    format!("body is larger than {} bytes", st.settings.body_limit),
                );
                return self.refuse(sdkappid, r, b"").await;
            }
            Err(BodyError::Unreadable(e)) => {
                return Answer::refused(Rejection::new(
                    ErrorCode::InvalidJson,
                    format!("could not read the body: {e}"),
                ));
            }
        };
        // Tencent drops a refused callback for good, so from here on only what can never
        // be one of its callbacks for this app is refused: a command outside the app's
        // explicit list, or a body that is not a JSON object. Anything else is stored, with
        // a note on what could not be read.
        let command = self
            .query
            .command
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if !app.allows(command) {
            let r = Rejection::new(
                ErrorCode::InvalidQuery,
                match command {
                    Some(c) => format!(
                        "command {:?} is not in the commands allowed for sdkappid {sdkappid}",
                        truncate(c, 64)
                    ),
                    None => format!(
                        "command (or CallbackCommand) is missing, and sdkappid {sdkappid} allows only listed commands"
                    ),
                },
            );
            return self.refuse(sdkappid, r, &body).await;
        }
        let remote = self.remote.map(|ip| ip.to_string());
        let ctx = Context {
            sdkappid,
            command: command.unwrap_or_default(),
            client_ip: self.query.clientip.as_deref(),
            opt_platform: self.query.optplatform.as_deref(),
            remote_addr: remote.as_deref(),
            received_at: crate::now_millis(),
        };
        let kind = command.map_or(Kind::Unknown, classify);
        let mut rows = match parse_delivery(kind, self.query.v4_style, &ctx, &body) {
            Ok(rows) => rows,
            Err(r) => return self.refuse(sdkappid, r, &body).await,
        };
        for note in query_notes(self.query, command) {
            for row in &mut rows {
                row.add_note(&note);
            }
        }
        if rows.iter().any(|r| r.notes.is_some()) {
            let (family, _) = labels(self.query);
            metrics::counter!(m::NOTED_DELIVERIES, "family" => family).increment(1);
        }
        match st.ingest.submit(rows).await {
            Ok(outcome) => Answer::ok(outcome),
            Err(e) => {
                let code = e.code();
                if code == ErrorCode::Unstorable {
                    // The writer already kept it in rejected_deliveries.
                    Answer::refused(Rejection::new(code, e.to_string()))
                } else {
                    Answer::failed(code, e.to_string())
                }
            }
        }
    }

    async fn read_body(&self, body: Body) -> Result<Bytes, BodyError> {
        read_limited(self.headers, body, self.st.settings.body_limit).await
    }

    /// Answers a refusal for a configured app and keeps it in `rejected_deliveries`, once
    /// per distinct delivery (the sender's retries count in its `deliveries`).
    async fn refuse(&self, sdkappid: i64, r: Rejection, body: &[u8]) -> Answer {
        let stable = stable_query(self.raw_query);
        let code = (r.code.code() as u64).to_le_bytes();
        let row = RejectedRow {
            dedupe_key: dedupe_key(&[
                b"rejected",
                &sdkappid.to_le_bytes(),
                &code,
                stable.as_bytes(),
                body,
            ]),
            received_at: crate::now_millis(),
            sdkappid,
            command: self.query.command.clone(),
            query: redact(self.raw_query),
            body: RejectedRow::body_text(body),
            error_code: r.code.code() as i32,
            reason: r.reason.clone(),
            remote_addr: self.remote.map(|ip| ip.to_string()),
        };
        if !self.st.ingest.record_rejected(row).await {
            tracing::warn!(sdkappid, reason = %r.reason, "could not keep a rejected delivery (queue full or database unavailable)");
        }
        Answer::refused(r)
    }
}
