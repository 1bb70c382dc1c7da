//! The callback protocol: pure functions from a query string and raw body bytes to
//! normalised events. No I/O happens here, so everything is unit-testable and fuzzable.
//!
//! ```text
//! raw query ──► CallbackQuery ──► classify(command) ──► Kind
//! raw body  ──► UTF-8 ──► typed body (v1 / v4) ──► storable? ──► Vec<EventRow>
//! ```

#[cfg(test)]
mod proptests;
pub mod query;
pub mod reply;
pub mod scan;
pub mod trtc;
pub mod v1;
pub mod v4;
pub mod v4_record;
pub mod values;

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use query::CallbackQuery;
pub use reply::{ErrorCode, ReplyStyle};
pub use values::{CallResult, CallType, MediaType, MemberAction, Millis, Role};

/// The three callback families (`call_events.family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Call status callback: one per participant's outcome, after the call.
    Status,
    /// Call event callback: one per user action during a call.
    Event,
    /// The v4 client API's `Call.*` callbacks.
    V4,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Event => "event",
            Self::V4 => "v4",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "status" => Some(Self::Status),
            "event" => Some(Self::Event),
            "v4" => Some(Self::V4),
            _ => None,
        }
    }
}

/// The status-family commands: the wire example's `call_end` and the six results that
/// the callback-configuration API names as commands.
pub const STATUS_COMMANDS: [&str; 7] = [
    "call_end",
    "not_answer",
    "reject",
    "call_busy",
    "cancel",
    "normal_end",
    "interrupt",
];

/// The event-family commands, role-prefixed.
pub const EVENT_COMMANDS: [&str; 19] = [
    "caller_start_call",
    "caller_call_accepted",
    "caller_call_missed",
    "caller_call_rejected",
    "caller_call_busy",
    "caller_cancel_call",
    "caller_call_failed",
    "caller_call_end",
    "caller_call_interrupted",
    "callee_receive_call",
    "callee_accept_call",
    "callee_not_answer_call",
    "callee_reject_call",
    "callee_ignore_call",
    "callee_call_canceled",
    "callee_call_end",
    "callee_call_interrupted",
    "invite_user",
    "join_in_group_call",
];

/// The v4 commands, in their documented spelling.
pub const V4_COMMANDS: [&str; 3] = [
    "Call.CallbackAfterStartCall",
    "Call.CallbackAfterEndCall",
    "Call.CallbackAfterMemberChanged",
];

/// Every command callhook knows, in documented spelling: the default allow-list.
pub fn known_commands() -> impl Iterator<Item = &'static str> {
    STATUS_COMMANDS
        .into_iter()
        .chain(EVENT_COMMANDS)
        .chain(V4_COMMANDS)
}

/// What a command is, which decides how its body is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Status,
    Event,
    V4StartCall,
    V4EndCall,
    V4MemberChanged,
    /// A command callhook does not know (allowed explicitly by configuration): stored
    /// with whatever common fields its body has.
    Unknown,
}

/// Classifies a command word, ignoring case.
pub fn classify(command: &str) -> Kind {
    let is = |list: &[&str]| list.iter().any(|c| c.eq_ignore_ascii_case(command));
    if is(&STATUS_COMMANDS) {
        Kind::Status
    } else if is(&EVENT_COMMANDS) {
        Kind::Event
    } else if command.eq_ignore_ascii_case(V4_COMMANDS[0]) {
        Kind::V4StartCall
    } else if command.eq_ignore_ascii_case(V4_COMMANDS[1]) {
        Kind::V4EndCall
    } else if command.eq_ignore_ascii_case(V4_COMMANDS[2]) {
        Kind::V4MemberChanged
    } else {
        Kind::Unknown
    }
}

/// Why a delivery was refused: an error code and a message for the sender (and for
/// `rejected_deliveries.reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(
            ErrorCode::InvalidField,
            format!("{field} is missing or empty"),
        )
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code.code())
    }
}

/// What the HTTP layer knows about a delivery besides its body.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub sdkappid: i64,
    /// The command as received.
    pub command: &'a str,
    pub client_ip: Option<&'a str>,
    pub opt_platform: Option<&'a str>,
    /// The peer we saw (through trusted proxies).
    pub remote_addr: Option<&'a str>,
    pub received_at: Millis,
}

/// One row of `call_events`: a normalised event plus the payload as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub sdkappid: i64,
    pub family: Family,
    pub command: String,
    pub call_id: Option<String>,
    pub user_id: Option<String>,
    pub role: Option<Role>,
    /// v1 `Event`, or v4 member `ActionType`, normalised.
    pub event: Option<String>,
    pub call_result: Option<CallResult>,
    pub media_type: Option<MediaType>,
    pub call_type: Option<CallType>,
    pub room_id: Option<String>,
    pub total_num: Option<i64>,
    pub event_time: Option<Millis>,
    pub start_call_ts: Option<Millis>,
    pub accept_ts: Option<Millis>,
    pub end_ts: Option<Millis>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub remote_addr: Option<String>,
    /// The body exactly as received (minus a UTF-8 byte-order mark).
    pub payload: Arc<str>,
    pub received_at: Millis,
    /// Identifies the event across retries: equal keys are the same event.
    pub dedupe_key: DedupeKey,
}

/// 16 bytes of SHA-256 over the fields that identify an event.
pub type DedupeKey = [u8; 16];

impl EventRow {
    /// A row with the delivery's common columns set and no typed body fields.
    fn base(ctx: &Context<'_>, family: Family, payload: &Arc<str>) -> Self {
        Self {
            sdkappid: ctx.sdkappid,
            family,
            command: ctx.command.to_owned(),
            call_id: None,
            user_id: None,
            role: None,
            event: None,
            call_result: None,
            media_type: None,
            call_type: None,
            room_id: None,
            total_num: None,
            event_time: None,
            start_call_ts: None,
            accept_ts: None,
            end_ts: None,
            client_ip: ctx.client_ip.map(str::to_owned),
            opt_platform: ctx.opt_platform.map(str::to_owned),
            remote_addr: ctx.remote_addr.map(str::to_owned),
            payload: Arc::clone(payload),
            received_at: ctx.received_at,
            dedupe_key: [0; 16],
        }
    }
}

/// Builds a dedupe key from length-prefixed parts, so that `("ab","c")` and `("a","bc")`
/// differ.
pub(crate) fn dedupe_key(parts: &[&[u8]]) -> DedupeKey {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Parses one delivery's body into the rows it stores (one, or one per changed member of
/// a v4 member-change callback).
pub fn parse_delivery(
    kind: Kind,
    v4_style: bool,
    ctx: &Context<'_>,
    body: &[u8],
) -> Result<Vec<EventRow>, Rejection> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            format!("body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        let what = if text.trim().is_empty() {
            "body is empty; expected a JSON object"
        } else {
            "body is not a JSON object"
        };
        return Err(Rejection::new(ErrorCode::InvalidJson, what));
    }
    let payload: Arc<str> = Arc::from(text);
    let rows = match kind {
        Kind::Status => vec![v1::status_row(typed(text)?, ctx, &payload)?],
        Kind::Event => vec![v1::event_row(typed(text)?, ctx, &payload)?],
        Kind::V4StartCall => vec![v4::start_call_row(typed(text)?, ctx, &payload)?],
        Kind::V4EndCall => vec![v4::end_call_row(typed(text)?, ctx, &payload)?],
        Kind::V4MemberChanged => v4::member_changed_rows(typed(text)?, ctx, &payload)?,
        Kind::Unknown if v4_style => vec![v4::generic_row(lenient(text)?, ctx, &payload)],
        Kind::Unknown => vec![v1::generic_row(lenient(text)?, ctx, &payload)],
    };
    Ok(rows)
}

/// A typed body from JSON that can be stored unchanged.
fn typed<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    let value = parse_json(text)?;
    storable(text)?;
    Ok(value)
}

/// For commands callhook does not know: typed fields when they parse, otherwise none
/// (the body must still be valid JSON that can be stored unchanged).
fn lenient<'a, T: Deserialize<'a> + Default>(text: &'a str) -> Result<T, Rejection> {
    match parse_json(text) {
        Ok(v) => {
            storable(text)?;
            Ok(v)
        }
        // `parse_json` only says "field" once the body is known to be valid and storable.
        Err(r) if r.code == ErrorCode::InvalidField => Ok(T::default()),
        Err(r) => Err(r),
    }
}

fn storable(text: &str) -> Result<(), Rejection> {
    scan::check_storable(text)
        .map_err(|why| Rejection::new(ErrorCode::Unstorable, format!("body {why}")))
}

/// Parses a typed body.
///
/// A failure is classified by what is wrong with the body as a whole, not by the field the
/// typed parser happened to meet it in, so the same hostile content gets the same answer
/// wherever it sits: not JSON at all (71001); JSON that cannot be stored unchanged, such
/// as a lone surrogate or an absurd number (71003); otherwise a field that is ill-typed or
/// given twice (71002, naming the field's path).
fn parse_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    // The common case, a valid body, takes the plain parser; only a failure is parsed again
    // with path tracking, to name the offending field.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let (path, err) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => match de.end() {
            Ok(()) => return Ok(value),
            Err(e) => (String::new(), e),
        },
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(Rejection::new(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        ));
    }
    storable(text)?;
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    Err(Rejection::new(
        ErrorCode::InvalidField,
        format!("{at}{err}"),
    ))
}
