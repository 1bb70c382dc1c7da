//! The callback protocol: pure functions from a query string and raw body bytes to
//! normalised events. No I/O happens here, so everything is unit-testable and fuzzable.
//!
//! ```text
//! raw query ──► CallbackQuery ──► classify(command) ──► Kind
//! raw body  ──► UTF-8 JSON object? ──► Fields ──► each field read on its own ──► Vec<EventRow>
//!                      │ no                          (unreadable: NULL + a note)
//!                      └──► Rejection (71001): the only way a body is refused
//! ```
//!
//! A delivery is refused here only when its body is not a JSON object: Tencent drops a
//! refused callback after its retries, so a field of an unexpected type, a missing field,
//! an implausible time or a command callhook does not know all still make a row, with
//! `notes` saying what could not be read.

pub mod bounded;
pub mod call_record;
pub mod canonical;
pub mod command;
pub mod fields;
#[cfg(test)]
mod proptests;
pub mod query;
pub mod reply;
pub mod scan;
#[cfg(test)]
mod tests;
pub mod trtc;
mod trtc_rows;
pub mod v1;
pub mod v4;
pub mod v4_record;
pub mod values;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use command::{EVENT_COMMANDS, STATUS_COMMANDS, V4_COMMANDS};
pub use fields::{Fields, Notes};

pub use query::CallbackQuery;
pub use reply::{ErrorCode, ReplyStyle};
pub use trtc_rows::{TRTC_COMMAND, parse_trtc_delivery, trtc_family};
pub use values::{CallResult, CallType, MediaType, MemberAction, Millis, Role};

/// The callback families (`call_events.family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Call status callback: one per participant's outcome, after the call.
    Status,
    /// Call event callback: one per user action during a call.
    Event,
    /// The v4 client API's `Call.*` callbacks.
    V4,
    /// A command callhook does not know (yet): stored with whatever common fields its body
    /// has.
    Other,
    /// TRTC's own room events (`EventGroupId` 1), posted to the TRTC path.
    Room,
    /// TRTC's media events (group 2).
    Media,
    /// TRTC's cloud-recording events (group 3).
    Recording,
    /// TRTC callbacks of any other group (4 relay to CDN, 8 web page recording, 9 AI
    /// services, or one callhook does not know), and bodies without a readable group.
    Trtc,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Event => "event",
            Self::V4 => "v4",
            Self::Other => "other",
            Self::Room => "room",
            Self::Media => "media",
            Self::Recording => "recording",
            Self::Trtc => "trtc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "status" => Some(Self::Status),
            "event" => Some(Self::Event),
            "v4" => Some(Self::V4),
            "other" => Some(Self::Other),
            "room" => Some(Self::Room),
            "media" => Some(Self::Media),
            "recording" => Some(Self::Recording),
            "trtc" => Some(Self::Trtc),
            _ => None,
        }
    }
}

/// Every command callhook knows, in documented spelling: the default allow-list.
/// (`Call.CallbackAfterRecordChanged`, [`v4_record::RECORD_CHANGED`], is classified too,
/// [`Kind::V4RecordChanged`], but belongs to TRTC's recording integration and is listed
/// apart.)
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
    /// `Call.CallbackAfterRecordChanged` (either spelling): links a call to its
    /// cloud-recording task.
    V4RecordChanged,
    /// A command callhook does not know: stored (family `other`) with whatever common
    /// fields its body has.
    Unknown,
}

/// Classifies a command word, ignoring case.
pub fn classify(command: &str) -> Kind {
    let is = |list: &[&str]| list.iter().any(|c| c.eq_ignore_ascii_case(command));
    if is(&STATUS_COMMANDS) {
        Kind::Status
    } else if is(&EVENT_COMMANDS) {
        Kind::Event
    } else if command.eq_ignore_ascii_case(command::START_CALL) {
        Kind::V4StartCall
    } else if command.eq_ignore_ascii_case(command::END_CALL) {
        Kind::V4EndCall
    } else if command.eq_ignore_ascii_case(command::MEMBER_CHANGED) {
        Kind::V4MemberChanged
    } else if v4_record::is_record_changed(command) {
        Kind::V4RecordChanged
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
    /// The accounts a v4 body names (its `UserList`, and the end record's caller and
    /// `CalleeList_Account`), as a JSON array of strings.
    pub members: Option<String>,
    /// The body exactly as received (minus a UTF-8 byte-order mark). A delivery that makes
    /// several rows stores it on the first only.
    pub payload: Option<Arc<str>>,
    /// The columns only TRTC's own callbacks (and `Call.CallbackAfterRecordChanged`) fill.
    pub trtc: TrtcColumns,
    /// What could not be read, `"; "`-separated; `None` when everything could.
    pub notes: Option<String>,
    pub received_at: Millis,
    /// Identifies the delivery (and the row's place in it) across retries: equal keys are
    /// the same delivery.
    pub dedupe_key: DedupeKey,
    /// The UTC day (days since 1970-01-01) of the event's own time as the body gives it,
    /// plausible or not ([`own_day`]): the row's partition key on PostgreSQL. `None` for a
    /// row journaled by an earlier version (and a v4 recording body that cannot be read at
    /// all), whose day is then its time columns'.
    pub own_day: Option<i64>,
}

/// The `call_events` columns of TRTC's room, media and recording callbacks (NULL on the
/// call-callback rows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrtcColumns {
    /// `EventType` as sent (`event` holds its name).
    pub event_type: Option<i64>,
    /// `EventInfo.UniqueId`, as text.
    pub unique_id: Option<String>,
    /// `EventInfo.TerminalType` (103).
    pub terminal_type: Option<i64>,
    /// `EventInfo.UserType` (103).
    pub user_type: Option<i64>,
    /// `EventInfo.Reason` (103, 104; 0 on media stops).
    pub reason: Option<i64>,
    /// `EventInfo.TaskId`: the recording task.
    pub task_id: Option<String>,
    /// `Payload.Status`, or for 302 and 305 `Payload.LeaveCode`.
    pub status: Option<i64>,
    /// The recording payload's file members, a JSON object of the values as received.
    pub files: Option<String>,
}

/// 16 bytes of SHA-256 over the fields that identify an event.
pub type DedupeKey = [u8; 16];

/// The most rows one delivery makes. A v4 member-change callback makes one row per changed
/// member; one with more changes than this is stored as a single row, with a note, so a
/// body cannot multiply into an unbounded number of rows.
pub const MAX_ROWS_PER_DELIVERY: usize = 64;

/// The earliest time callhook takes as real: 2010-01-01T00:00:00Z. TUICallKit is younger.
const EARLIEST_PLAUSIBLE: Millis = 1_262_304_000_000;
/// How far after its receipt a time may lie and still count: a day.
const LATEST_AHEAD: Millis = 86_400_000;

impl EventRow {
    /// A row with the delivery's common columns set and no typed body fields.
    fn base(ctx: &Context<'_>, family: Family) -> Self {
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
            members: None,
            payload: None,
            trtc: TrtcColumns::default(),
            notes: None,
            received_at: ctx.received_at,
            dedupe_key: [0; 16],
            own_day: None,
        }
    }

    /// Adds a note to the row's `notes`.
    pub fn add_note(&mut self, note: &str) {
        self.notes = Some(match self.notes.take() {
            Some(n) if !n.is_empty() => format!("{n}; {note}"),
            _ => note.to_owned(),
        });
    }
}

/// A Unix time (seconds or milliseconds) that shapes analytics only when it is plausible:
/// not before 2010 and not more than a day after the delivery arrived. Any other value
/// stays in the payload, is noted, and leaves the column NULL, so that the views fall back
/// to `received_at`. `0` means "not applicable" in Tencent's bodies and is absent.
pub(crate) fn plausible_time(
    name: impl FnOnce() -> String,
    value: Option<i64>,
    received_at: Millis,
    notes: &mut Notes,
) -> Option<Millis> {
    let v = value.filter(|&v| v != 0)?;
    let Some(ms) = values::unix_time(Some(v)) else {
        notes.push(format!("{}: {v} is not a time, not used", name()));
        return None;
    };
    if ms < EARLIEST_PLAUSIBLE || ms > received_at + LATEST_AHEAD {
        let name = name();
        let when = chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        notes.push(format!(
            "{name}: {v} ({when}) is not a plausible time, not used"
        ));
        return None;
    }
    Some(ms)
}

/// The UTC day (days since 1970-01-01) of the first of `times` (Unix seconds or
/// milliseconds, as the body gives them, in the order the time columns are preferred) that
/// is a time from 2010 on, plausible or not; 0 (1970-01-01) when none is. It depends on the
/// body alone, never on when the delivery arrived: a time a day ahead of one delivery's
/// arrival is not plausible for it and is for a retry seconds later, and the two must meet
/// the same unique key, whose partition key this is.
pub(crate) fn own_day(times: &[Option<i64>]) -> i64 {
    times
        .iter()
        .filter_map(|v| values::unix_time(*v))
        .find(|&ms| ms >= EARLIEST_PLAUSIBLE)
        .map_or(0, |ms| ms.div_euclid(MS_PER_DAY))
}

/// Milliseconds in a day.
const MS_PER_DAY: Millis = 86_400_000;

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

/// A key derived from another for another table (`rejected_deliveries`), so the same
/// event refused twice is one row.
pub fn derived_key(what: &[u8], key: &DedupeKey) -> DedupeKey {
    dedupe_key(&[what, key])
}

/// What makes two deliveries of a kind the same delivery besides their content: the
/// family, and for the event, v4 and unknown families the command (a status body means the
/// same whichever of the seven status commands carried it).
fn identity(kind: Kind, command: &str) -> (Family, String) {
    let family = match kind {
        Kind::Status => Family::Status,
        Kind::Event => Family::Event,
        Kind::V4StartCall | Kind::V4EndCall | Kind::V4MemberChanged | Kind::V4RecordChanged => {
            Family::V4
        }
        Kind::Unknown => Family::Other,
    };
    let command = match kind {
        Kind::Status => String::new(),
        _ => command.to_ascii_lowercase(),
    };
    (family, command)
}

/// Parses one delivery's body into the rows it stores: one, or one per changed member of
/// a v4 member-change callback (at most [`MAX_ROWS_PER_DELIVERY`]). Refuses a body that is
/// not a JSON object (71001), or that nests deeper than [`scan::MAX_DEPTH`] levels (71003;
/// PostgreSQL cannot take ten thousand, no callback has more than three); whatever else is
/// wrong is noted on the rows.
///
/// Two deliveries get the same dedupe keys exactly when they are the same delivery: the
/// same app, family (and command, but for the status family) and the same content in
/// canonical form (src/protocol/canonical.rs), so a retry merges whatever its whitespace
/// or key order, and two different deliveries never do. A body whose canonical form cannot
/// be made (a member name serde cannot decode) is compared by its bytes instead.
pub fn parse_delivery(
    kind: Kind,
    v4_style: bool,
    ctx: &Context<'_>,
    body: &[u8],
) -> Result<Vec<EventRow>, Rejection> {
    let text = object_text(body)?;
    let mut notes = Notes::default();
    let fields = read_fields(text, &mut notes)?;
    check_depth(text)?;
    let digest = content_digest(fields.as_ref(), text);
    let fields = fields.unwrap_or_default();
    if let Some(why) = scan::postgres_json_trouble(text) {
        notes.push(format!(
            "payload: {why}, which PostgreSQL's JSON functions cannot read (stored as received)"
        ));
    }
    let read = Read {
        ctx,
        fields: &fields,
    };
    let mut rows = family_rows(kind, v4_style, &read, text, &mut notes);
    let (family, command) = identity(kind, ctx.command);
    let joined = notes.joined();
    for (part, row) in rows.iter_mut().enumerate() {
        row.dedupe_key = dedupe_key(&[
            family.as_str().as_bytes(),
            &ctx.sdkappid.to_le_bytes(),
            command.as_bytes(),
            &digest,
            &(part as u64).to_le_bytes(),
        ]);
        if let Some(n) = &joined {
            row.add_note(n);
        }
        bounded::bound_indexed_columns(row);
    }
    if let Some(first) = rows.first_mut() {
        first.payload = Some(Arc::from(text));
    }
    Ok(rows)
}

/// The body as text (minus a UTF-8 byte-order mark), if it is UTF-8 that starts like a
/// JSON object; refused (71001) otherwise.
fn object_text(body: &[u8]) -> Result<&str, Rejection> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            format!("body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        let why = if text.trim().is_empty() {
            "body is empty; expected a JSON object"
        } else {
            "body is not a JSON object"
        };
        return Err(Rejection::new(ErrorCode::InvalidJson, why));
    }
    Ok(text)
}

/// The object's members. Valid JSON whose members serde cannot decode (a key holding an
/// unpaired surrogate escape) is still a JSON object: `None`, stored with none of its fields
/// read, with a note. Anything else that does not parse is refused (71001).
fn read_fields<'t>(text: &'t str, notes: &mut Notes) -> Result<Option<Fields<'t>>, Rejection> {
    match Fields::parse(text) {
        Ok(fields) => Ok(Some(fields)),
        Err(e) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            notes.push(format!("body: {e}; none of its fields could be read"));
            Ok(None)
        }
        Err(e) => Err(Rejection::new(
            ErrorCode::InvalidJson,
            format!("body is not a valid JSON object: {e}"),
        )),
    }
}

/// Refuses (71003) a body nesting deeper than [`scan::MAX_DEPTH`] levels: the call
/// callbacks' parser and TRTC's both use it.
pub(crate) fn check_depth(text: &str) -> Result<(), Rejection> {
    // (No body of up to 1024 bytes can nest deeper than 512 levels: skip the scan.)
    if text.len() <= 2 * scan::MAX_DEPTH {
        return Ok(());
    }
    let depth = scan::depth(text);
    if depth > scan::MAX_DEPTH {
        return Err(Rejection::new(
            ErrorCode::Unstorable,
            format!(
                "body nests {depth} levels deep, more than the {} callhook stores",
                scan::MAX_DEPTH
            ),
        ));
    }
    Ok(())
}

/// The digest of the body's content in canonical form, which decodes like `Fields`. Where
/// it cannot (`fields` is `None`: the body's member names could not be decoded; or a name
/// inside a member's value could not), the body's bytes are the content: two different
/// bodies never share a digest, and a byte-identical retry keeps its own. (The canonical
/// form of an object whose members could not be read would be that of `{}`, the same for
/// every such body.)
fn content_digest(fields: Option<&Fields<'_>>, text: &str) -> [u8; 32] {
    fields
        .and_then(|f| canonical::digest_members(f.members()).ok())
        .unwrap_or_else(|| Sha256::digest(text.as_bytes()).into())
}

/// The rows of the body, read the way its kind is.
fn family_rows(
    kind: Kind,
    v4_style: bool,
    read: &Read<'_, '_>,
    text: &str,
    notes: &mut Notes,
) -> Vec<EventRow> {
    match kind {
        Kind::Status => vec![v1::status_row(read, notes)],
        Kind::Event => vec![v1::event_row(read, notes)],
        Kind::V4StartCall => vec![v4::start_call_row(read, notes)],
        Kind::V4EndCall => vec![v4::end_call_row(read, notes)],
        Kind::V4MemberChanged => v4::member_changed_rows(read, notes),
        Kind::V4RecordChanged => vec![trtc_rows::record_changed_row(read.ctx, text, notes)],
        Kind::Unknown => {
            if !read.ctx.command.is_empty() {
                notes.push(format!(
                    "command: {:?} is not one callhook knows (family other)",
                    query::truncate(read.ctx.command, 64)
                ));
            }
            vec![generic_row(read, v4_style, notes)]
        }
    }
}

/// What a family's parser reads from: the delivery and its body's fields.
pub(crate) struct Read<'r, 'a> {
    pub ctx: &'r Context<'a>,
    pub fields: &'r Fields<'r>,
}

impl Read<'_, '_> {
    /// A time column from `key`, if plausible (see [`plausible_time`]).
    pub fn time(&self, f: &Fields<'_>, key: &str, notes: &mut Notes) -> Option<Millis> {
        let raw = f.int(&[key], notes);
        plausible_time(|| f.name(key), raw, self.ctx.received_at, notes)
    }

    /// The integer at `key` as the body gives it, for [`own_day`] (what cannot be read
    /// there is noted by [`Read::time`]).
    pub fn raw(f: &Fields<'_>, key: &str) -> Option<i64> {
        f.int(&[key], &mut Notes::default())
    }
}

/// A command callhook does not know: stored in family `other` with whatever fields of the
/// status and event bodies it has (`CallId`, `UserId`, `Role`, `Event`, `EventTime`, …);
/// in a v4-style delivery also the call id of a `CallInfo` or `CallRecord`.
fn generic_row(read: &Read<'_, '_>, v4_style: bool, notes: &mut Notes) -> EventRow {
    let f = read.fields;
    let mut row = v1::common_row(read, Family::Other, notes);
    if v4_style && row.call_id.is_none() {
        for nested in ["CallInfo", "CallRecord"] {
            if row.call_id.is_none() {
                row.call_id = f
                    .object(&[nested], notes)
                    .and_then(|o| o.text(&["CallId"], notes));
            }
        }
    }
    row
}
