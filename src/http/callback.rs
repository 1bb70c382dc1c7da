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
//! In the code: steps 1–3 are `CallbackDelivery::admit`, 4–6 the shared `delivery::check`
//! (with this module's `Admitted::parse`), the one place refusals are kept.
//!
//! Everything else is stored and answered 0: a field that cannot be read is NULL and
//! noted on the row, an unknown command is stored with family `other`, a missing command
//! or a `contenttype` other than json is noted. Then: queued, committed, answered 0
//! (stored, duplicate or journaled), or 503 (overloaded, database unavailable: the sender
//! retries).

use std::net::IpAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::delivery::{Admitted, Envelope, Record, Refusal, check};
use super::peer::{Peer, client_addr};
use super::{AppState, SharedState};
use crate::auth::authenticate;
use crate::config::AppSettings;
use crate::ingest::Outcome;
use crate::metrics as m;
use crate::protocol::query::{redact, stable_query, truncate};
use crate::protocol::reply::{Ack, ErrorCode, ReplyStyle};
use crate::protocol::{
    CallbackQuery, Context, EventRow, Kind, Rejection, classify, dedupe_key, known_commands,
    parse_delivery,
};
use crate::quality::Signals;
use crate::store::RejectedRow;

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
    let delivery = CallbackDelivery {
        st: &st,
        query: &query,
        raw_query,
        remote,
        headers: &headers,
    };
    let timeout = st.settings.request_timeout;
    let result = match tokio::time::timeout(timeout, delivery.process(body)).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::failed(
            ErrorCode::Timeout,
            format!("the request took longer than {timeout:?}; retry"),
        )),
    };
    let (family, command_label) = labels(&query);
    let record = Record {
        family,
        command_label,
        command: query.command.as_deref().map(|s| truncate(s, 64)),
        sdkappid: query.sdkappid.as_deref().map(|s| truncate(s, 20)),
        remote,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|s| truncate(s, 128)),
    };
    record.emit(started, &result);
    match result {
        Ok(outcome) => super::json_response(200, ack(outcome).body(style)),
        Err(refusal) => refusal.answered_in(Envelope::Call(style)).into_response(),
    }
}

fn ack(outcome: Outcome) -> Ack {
    match outcome {
        Outcome::Inserted => Ack::Stored,
        Outcome::Duplicate => Ack::Duplicate,
        Outcome::Journaled => Ack::Journaled,
    }
}

/// What the query says that is worth a note on the rows (it does not stop the delivery).
fn query_notes(query: &CallbackQuery, command: Option<&str>) -> Vec<String> {
    let mut notes = Vec::new();
    if command.is_none() {
        notes.push("query: command (or CallbackCommand) is missing".to_owned());
    }
    if let Some(ct) = query.contenttype.as_deref()
        && !ct.trim().eq_ignore_ascii_case("json")
    {
        notes.push(format!(
            "query: contenttype is {:?}, not json",
            truncate(ct, 32)
        ));
    }
    notes
}

/// One delivery to the callback endpoint, taken through the module doc's steps.
struct CallbackDelivery<'a> {
    st: &'a SharedState,
    query: &'a CallbackQuery,
    raw_query: &'a str,
    remote: Option<IpAddr>,
    headers: &'a HeaderMap,
}

impl CallbackDelivery<'_> {
    /// Steps 1–3, 4–6, then the queue. A refusal of steps 1–3 ([`Self::admit`]) is never
    /// kept; one of steps 4–6 ([`check`]) is.
    async fn process(&self, body: Body) -> Result<Outcome, Refusal> {
        let (sdkappid, app) = self.admit().map_err(Refusal::not_kept)?;
        let rows = check(self, sdkappid, app, body).await?;
        let signals = Signals::of(&rows);
        let outcome = self.st.ingest.submit(rows).await?;
        if outcome != Outcome::Duplicate {
            signals.record();
        }
        Ok(outcome)
    }

    /// Steps 1–3: the app is named, configured, and the request authenticated. Refusals
    /// here are not kept: there is no app to file them under, or anyone could have sent
    /// them.
    fn admit(&self) -> Result<(i64, &AppSettings), Rejection> {
        let sdkappid = self.query.sdkappid()?;
        let Some(app) = self.st.settings.apps.get(&sdkappid) else {
            return Err(Rejection::new(
                ErrorCode::UnknownApp,
                format!("sdkappid {sdkappid} is not configured on this receiver"),
            ));
        };
        let now = crate::now_millis() / 1000;
        authenticate(app, self.query, now, self.st.settings.sign_window)?;
        Ok((sdkappid, app))
    }
}

impl Admitted for CallbackDelivery<'_> {
    fn state(&self) -> &AppState {
        self.st
    }

    fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// Steps 5–6, and the notes on what could not be read.
    fn parse(
        &self,
        sdkappid: i64,
        app: &AppSettings,
        body: &[u8],
    ) -> Result<Vec<EventRow>, Rejection> {
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
            return Err(Rejection::new(
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
            ));
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
        let mut rows = parse_delivery(kind, self.query.v4_style, &ctx, body)?;
        for note in query_notes(self.query, command) {
            for row in &mut rows {
                row.add_note(&note);
            }
        }
        if rows.iter().any(|r| r.notes.is_some()) {
            let (family, _) = labels(self.query);
            metrics::counter!(m::NOTED_DELIVERIES, "family" => family).increment(1);
        }
        Ok(rows)
    }

    fn rejected_row(&self, sdkappid: i64, r: &Rejection, body: &[u8]) -> RejectedRow {
        let stable = stable_query(self.raw_query);
        let code = (r.code.code() as u64).to_le_bytes();
        RejectedRow {
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
        }
    }
}
