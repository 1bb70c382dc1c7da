//! TRTC's own server callbacks: room events (group 1), media events (group 2) and cloud
//! recording events (group 3), which TRTC posts to the URL configured in its console, signed
//! with the console's key (see [`crate::auth::trtc`]). Facts and sources: `docs/src/trtc-callbacks.md`.
//!
//! ```text
//! raw body ──► UTF-8 (minus a BOM) ──► JSON object ──► every field read on its own ──► TrtcEvent
//!                                                      (unreadable: None + a note)
//! ```
//!
//! The policy is the receiver's (issue 14): only a body that is not UTF-8 JSON with an object
//! at the top is an error. Every field is read leniently and independently: numbers may
//! arrive as strings and ids as numbers (kept digit for digit, never through a float), a
//! field that cannot be read is `None` with a note (`"EventInfo.Role: expected an integer,
//! found an object"`), and group or type numbers callhook does not know are kept.
//!
//! Member names are matched ignoring ASCII case; a member given twice counts once, the last
//! one (as PostgreSQL's JSON functions read it), with a note.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::values::{Millis, unix_time};

/// The body cannot be a TRTC callback at all (the only refusals of this family besides the
/// signature and the app).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not UTF-8; `valid_up_to` is the offset of the first bad byte.
    NotUtf8 { valid_up_to: usize },
    /// Empty or only whitespace.
    Empty,
    /// Not JSON (the parser's message).
    NotJson(String),
    /// JSON, but not an object at the top (what it is instead).
    NotAnObject(&'static str),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 { valid_up_to } => {
                write!(f, "body is not valid UTF-8 (at byte {valid_up_to})")
            }
            Self::Empty => f.write_str("body is empty; expected a JSON object"),
            Self::NotJson(why) => write!(f, "body is not valid JSON: {why}"),
            Self::NotAnObject(what) => write!(f, "body is {what}, not a JSON object"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The event groups (`EventGroupId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrtcGroup {
    /// 1: room created and dismissed, users entering, leaving, changing role.
    Room,
    /// 2: users starting and stopping video, audio and the substream.
    Media,
    /// 3: cloud recording.
    Recording,
    /// Any other group, kept as sent (documented: 4 relay to CDN, 8 web page recording,
    /// 9 AI services).
    Other(i64),
}

impl TrtcGroup {
    pub fn from_id(id: i64) -> Self {
        match id {
            1 => Self::Room,
            2 => Self::Media,
            3 => Self::Recording,
            n => Self::Other(n),
        }
    }

    pub fn id(self) -> i64 {
        match self {
            Self::Room => 1,
            Self::Media => 2,
            Self::Recording => 3,
            Self::Other(n) => n,
        }
    }

    /// The `call_events.family` proposed for the group: `room`, `media`, `recording`, and
    /// `trtc` for every other group.
    pub fn family(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Media => "media",
            Self::Recording => "recording",
            Self::Other(_) => "trtc",
        }
    }
}

/// Whether `RoomId` arrived as a JSON number or a JSON string (TRTC sends the type the
/// client used; its own examples mix both for one room).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomIdKind {
    Number,
    String,
}

/// The documented `EventType` numbers, named as Tencent names them (without the
/// `EVENT_TYPE_` prefix, as in [`EVENT_NAMES`]): the parser's table and `callhook send`'s
/// renderer both use these.
pub mod event_type {
    pub const CREATE_ROOM: i64 = 101;
    pub const DISMISS_ROOM: i64 = 102;
    pub const ENTER_ROOM: i64 = 103;
    pub const EXIT_ROOM: i64 = 104;
    pub const CHANGE_ROLE: i64 = 105;
    pub const START_VIDEO: i64 = 201;
    pub const STOP_VIDEO: i64 = 202;
    pub const START_AUDIO: i64 = 203;
    pub const STOP_AUDIO: i64 = 204;
    pub const START_SUBSTREAM: i64 = 205;
    pub const STOP_SUBSTREAM: i64 = 206;
    pub const RECORDER_START: i64 = 301;
    pub const RECORDER_STOP: i64 = 302;
    pub const UPLOAD_START: i64 = 303;
    pub const FILE_INFO: i64 = 304;
    pub const UPLOAD_STOP: i64 = 305;
    pub const FAILOVER: i64 = 306;
    pub const FILE_SLICE: i64 = 307;
    pub const DOWNLOAD_IMAGE_ERROR: i64 = 309;
    pub const MP4_STOP: i64 = 310;
    pub const VOD_COMMIT: i64 = 311;
    pub const VOD_STOP: i64 = 312;
    pub const CDN_STATUS: i64 = 401;
    pub const WEB_RECORDER_START: i64 = 801;
    pub const WEB_RECORDER_STOP: i64 = 802;
    pub const WEB_RECORDER_STATUS_UPDATE: i64 = 803;
    pub const WEB_RECORDER_RESOURCE_LIMIT: i64 = 804;
    pub const AI_SERVICE_START: i64 = 901;
    pub const AI_SERVICE_STOP: i64 = 902;
    pub const AI_SERVICE_MSG: i64 = 903;
}

/// Every documented `EventType`, with the name callhook stores in `event`: Tencent's
/// constant without its `EVENT_TYPE_` (and `CLOUD_RECORDING_`) prefix, lower case; the
/// substream events are spelt `ASSIT` by Tencent and `substream` here.
pub const EVENT_NAMES: [(i64, &str); 30] = [
    (event_type::CREATE_ROOM, "create_room"),
    (event_type::DISMISS_ROOM, "dismiss_room"),
    (event_type::ENTER_ROOM, "enter_room"),
    (event_type::EXIT_ROOM, "exit_room"),
    (event_type::CHANGE_ROLE, "change_role"),
    (event_type::START_VIDEO, "start_video"),
    (event_type::STOP_VIDEO, "stop_video"),
    (event_type::START_AUDIO, "start_audio"),
    (event_type::STOP_AUDIO, "stop_audio"),
    (event_type::START_SUBSTREAM, "start_substream"),
    (event_type::STOP_SUBSTREAM, "stop_substream"),
    (event_type::RECORDER_START, "recorder_start"),
    (event_type::RECORDER_STOP, "recorder_stop"),
    (event_type::UPLOAD_START, "upload_start"),
    (event_type::FILE_INFO, "file_info"),
    (event_type::UPLOAD_STOP, "upload_stop"),
    (event_type::FAILOVER, "failover"),
    (event_type::FILE_SLICE, "file_slice"),
    (event_type::DOWNLOAD_IMAGE_ERROR, "download_image_error"),
    (event_type::MP4_STOP, "mp4_stop"),
    (event_type::VOD_COMMIT, "vod_commit"),
    (event_type::VOD_STOP, "vod_stop"),
    (event_type::CDN_STATUS, "cdn_status"),
    (event_type::WEB_RECORDER_START, "web_recorder_start"),
    (event_type::WEB_RECORDER_STOP, "web_recorder_stop"),
    (
        event_type::WEB_RECORDER_STATUS_UPDATE,
        "web_recorder_status_update",
    ),
    (
        event_type::WEB_RECORDER_RESOURCE_LIMIT,
        "web_recorder_resource_limit",
    ),
    (event_type::AI_SERVICE_START, "ai_service_start"),
    (event_type::AI_SERVICE_STOP, "ai_service_stop"),
    (event_type::AI_SERVICE_MSG, "ai_service_msg"),
];

/// The name of a documented event type (`103` → `enter_room`).
pub fn event_name(event_type: i64) -> Option<&'static str> {
    EVENT_NAMES
        .iter()
        .find(|(n, _)| *n == event_type)
        .map(|(_, name)| *name)
}

/// `Role` (enter and exit events): 20 anchor, 21 audience.
pub fn role_name(role: i64) -> Option<&'static str> {
    match role {
        20 => Some("anchor"),
        21 => Some("audience"),
        _ => None,
    }
}

/// `TerminalType` (enter events): the device's operating system.
pub fn terminal_type_name(terminal_type: i64) -> Option<&'static str> {
    match terminal_type {
        1 => Some("windows"),
        2 => Some("android"),
        3 => Some("ios"),
        4 => Some("linux"),
        100 => Some("other"),
        _ => None,
    }
}

/// `UserType` (enter events): which SDK the user runs.
pub fn user_type_name(user_type: i64) -> Option<&'static str> {
    match user_type {
        1 => Some("webrtc"),
        2 => Some("mini_program"),
        3 => Some("native_sdk"),
        _ => None,
    }
}

/// `Reason` of an exit (104): 1 left, 2 timed out, 3 removed, 4 cross-room link ended,
/// 5 process killed (Android reports a kill as a timeout).
pub fn exit_reason_name(reason: i64) -> Option<&'static str> {
    match reason {
        1 => Some("left"),
        2 => Some("timeout"),
        3 => Some("removed"),
        4 => Some("cross_room_ended"),
        5 => Some("process_killed"),
        _ => None,
    }
}

/// `Reason` of an entry (103): 1 entered, 2 network change, 3 timeout and retry,
/// 4 cross-room link.
pub fn enter_reason_name(reason: i64) -> Option<&'static str> {
    match reason {
        1 => Some("entered"),
        2 => Some("network_change"),
        3 => Some("timeout_retry"),
        4 => Some("cross_room"),
        _ => None,
    }
}

/// One TRTC callback, every field as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrtcEvent {
    /// `EventGroupId`; when absent or unreadable, inferred from `EventType` (its hundreds),
    /// with a note.
    pub group: Option<TrtcGroup>,
    /// `EventType`, as sent (unknown numbers kept).
    pub event_type: Option<i64>,
    /// The documented name of `event_type` ([`event_name`]).
    pub event_name: Option<&'static str>,
    /// `CallbackTs`: when TRTC sent this request (possibly per attempt), Unix ms.
    pub callback_ts_ms: Option<Millis>,
    /// `EventInfo.RoomId` as text: a JSON string as is, a JSON number digit for digit.
    pub room_id: Option<String>,
    pub room_id_kind: Option<RoomIdKind>,
    /// When the event happened, Unix ms: `EventMsTs`, else `EventTs` (seconds) × 1000.
    pub event_ts_ms: Option<Millis>,
    /// `EventInfo.UserId` (for recording events: the recording robot's user).
    pub user_id: Option<String>,
    /// `EventInfo.UniqueId` as text (room events of apps configured before 2021-07-30).
    pub unique_id: Option<String>,
    /// `EventInfo.Role` ([`role_name`]).
    pub role: Option<i64>,
    /// `EventInfo.TerminalType` ([`terminal_type_name`]).
    pub terminal_type: Option<i64>,
    /// `EventInfo.UserType` ([`user_type_name`]).
    pub user_type: Option<i64>,
    /// `EventInfo.Reason` ([`enter_reason_name`], [`exit_reason_name`]; media stops send 0).
    pub reason: Option<i64>,
    /// `EventInfo.TaskId`: the recording task (recording and other task-based groups).
    pub task_id: Option<String>,
    /// `EventInfo.Payload.Status` (301, 303, 306, 310, 311, 312, and groups 8 and 9).
    pub status: Option<i64>,
    /// `EventInfo.Payload.LeaveCode` (302: why the recorder left; 305: upload outcome).
    pub leave_code: Option<i64>,
    /// The payload's file information as a JSON object of the members present, each value
    /// exactly as received: `FileList` (304: a string; 310: an array), `FileMessage` (310),
    /// `FileName`, `UserId` (the recorded user), `TrackType`, `BeginTimeStamp` (307),
    /// `TencentVod` (311).
    pub files: Option<String>,
    /// What could not be read: `"path: expected X, found Y"`.
    pub notes: Vec<String>,
}

impl TrtcEvent {
    /// The proposed `call_events.family` ([`TrtcGroup::family`]); `trtc` when the group is
    /// unknown.
    pub fn family(&self) -> &'static str {
        self.group.map_or("trtc", TrtcGroup::family)
    }

    /// 16 bytes identifying the event across TRTC's retries: the app, the group, the type,
    /// the room, the user, the event time, `UniqueId` and `TaskId`, as sent. `CallbackTs` is
    /// left out: it is the time of sending, which a retry may change.
    pub fn identity(&self, sdkappid: i64) -> [u8; 16] {
        let num = |v: Option<i64>| v.map_or_else(Vec::new, |v| v.to_le_bytes().to_vec());
        let text = |v: &Option<String>| v.as_deref().unwrap_or_default().as_bytes().to_vec();
        let parts: [Vec<u8>; 9] = [
            b"trtc".to_vec(),
            sdkappid.to_le_bytes().to_vec(),
            num(self.group.map(TrtcGroup::id)),
            num(self.event_type),
            text(&self.room_id),
            text(&self.user_id),
            num(self.event_ts_ms),
            text(&self.unique_id),
            text(&self.task_id),
        ];
        let mut h = Sha256::new();
        for p in &parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// Parses the raw body of a TRTC room, media or recording callback.
pub fn parse_trtc(body: &[u8]) -> Result<TrtcEvent, BodyError> {
    let text = body_text(body)?;
    let mut notes = Vec::new();
    let top = top_object(text, &mut notes)?;
    let mut event = read_event(&top, "", &mut notes);
    event.notes = notes;
    Ok(event)
}

/// The body as text: UTF-8, minus a leading byte-order mark, not blank (only JSON's
/// whitespace: space, tab, CR, LF).
pub fn body_text(body: &[u8]) -> Result<&str, BodyError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if text.bytes().all(is_json_whitespace) {
        return Err(BodyError::Empty);
    }
    Ok(text)
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The members of the top-level object. A JSON object whose member names serde cannot
/// decode (an unpaired surrogate escape in a name) is still a JSON object, so not an error:
/// it has no member callhook can read (none are returned), and a note says so.
pub(crate) fn top_object<'t>(
    text: &'t str,
    notes: &mut Vec<String>,
) -> Result<Members<'t>, BodyError> {
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    match kind(raw.get()) {
        Kind::Object => Ok(Members::parse(raw).unwrap_or_else(|e| {
            notes.push(format!("body: {e}; none of its fields could be read"));
            Members(Vec::new())
        })),
        other => Err(BodyError::NotAnObject(other.described())),
    }
}

/// Reads a TRTC event from an object (the body, or the `Callback` member of
/// `Call.CallbackAfterRecordChanged`); `prefix` is its path in notes (`""` or `"Callback."`).
pub(crate) fn read_event(obj: &Members<'_>, prefix: &str, notes: &mut Vec<String>) -> TrtcEvent {
    let mut r = Reader { prefix, notes };
    let group_id = r.int(obj, "EventGroupId", &[]);
    let mut ev = TrtcEvent {
        event_type: r.int(obj, "EventType", &[]),
        ..TrtcEvent::default()
    };
    ev.group = match (group_id, ev.event_type) {
        (Some(g), _) => Some(TrtcGroup::from_id(g)),
        (None, Some(t)) if t >= 100 => {
            let g = t / 100;
            r.note(
                "EventGroupId",
                format!("missing or unreadable; group {g} inferred from EventType {t}"),
            );
            Some(TrtcGroup::from_id(g))
        }
        (None, _) => None,
    };
    ev.event_name = ev.event_type.and_then(event_name);
    if let (Some(g), Some(t)) = (group_id, ev.event_type)
        && ev.event_name.is_some()
        && t / 100 != g
    {
        r.note(
            "EventType",
            format!("{t} is documented in group {}, not in group {g}", t / 100),
        );
    }
    ev.callback_ts_ms = r.millis(obj, "CallbackTs", &["CallbackMsTs"]);
    let Some(info) = r.object(obj, "EventInfo") else {
        return ev;
    };
    let mut r = Reader {
        prefix: &format!("{prefix}EventInfo."),
        notes: r.notes,
    };
    if let Some((room, kind)) = r.text_with_kind(&info, "RoomId", &[]) {
        ev.room_id = Some(room);
        ev.room_id_kind = Some(kind);
    }
    let ms = r.millis(&info, "EventMsTs", &["EventTsMs"]);
    let s = r.millis(&info, "EventTs", &[]);
    ev.event_ts_ms = ms.or(s);
    ev.user_id = r.text(&info, "UserId", &[]);
    ev.unique_id = r.text(&info, "UniqueId", &[]);
    ev.role = r.int(&info, "Role", &[]);
    ev.terminal_type = r.int(&info, "TerminalType", &[]);
    ev.user_type = r.int(&info, "UserType", &[]);
    ev.reason = r.int(&info, "Reason", &[]);
    ev.task_id = r.text(&info, "TaskId", &[]);
    let Some(payload) = r.object(&info, "Payload") else {
        return ev;
    };
    let mut r = Reader {
        prefix: &format!("{}Payload.", r.prefix),
        notes: r.notes,
    };
    ev.status = r.int(&payload, "Status", &[]);
    ev.leave_code = r.int(&payload, "LeaveCode", &[]);
    ev.files = files_json(&payload, &mut r);
    ev
}

/// The file members of a recording payload, as one JSON object of raw values.
fn files_json(payload: &Members<'_>, r: &mut Reader<'_, '_>) -> Option<String> {
    const FILE_MEMBERS: [&str; 7] = [
        "FileList",
        "FileMessage",
        "FileName",
        "UserId",
        "TrackType",
        "BeginTimeStamp",
        "TencentVod",
    ];
    let mut out = String::new();
    for name in FILE_MEMBERS {
        let Some(raw) = r.member(payload, name, &[]) else {
            continue;
        };
        if kind(raw.get()) == Kind::Null {
            continue;
        }
        out.push(if out.is_empty() { '{' } else { ',' });
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(raw.get());
    }
    if out.is_empty() {
        None
    } else {
        out.push('}');
        Some(out)
    }
}

/// An object's members in order, their values not parsed yet.
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key.0, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member name, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// What a raw JSON value is, by its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    fn described(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Bool => "a boolean",
            Self::Null => "null",
        }
    }
}

pub(crate) fn kind(raw: &str) -> Kind {
    match raw.as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// Reads members of one object, writing a note for each that cannot be read.
pub(crate) struct Reader<'p, 'n> {
    pub(crate) prefix: &'p str,
    pub(crate) notes: &'n mut Vec<String>,
}

impl Reader<'_, '_> {
    pub(crate) fn note(&mut self, name: &str, what: impl fmt::Display) {
        self.notes.push(format!("{}{name}: {what}", self.prefix));
    }

    /// The raw value of member `name` (or an alias), ignoring ASCII case; the last one when
    /// it is given more than once (noted).
    pub(crate) fn member<'a>(
        &mut self,
        obj: &Members<'a>,
        name: &str,
        aliases: &[&str],
    ) -> Option<&'a RawValue> {
        let mut found = obj.0.iter().filter(|(k, _)| {
            k.eq_ignore_ascii_case(name) || aliases.iter().any(|a| k.eq_ignore_ascii_case(a))
        });
        let first = found.next()?;
        let (count, last) = found.fold((1usize, first), |(n, _), m| (n + 1, m));
        if count > 1 {
            self.note(name, format!("given {count} times; the last one is used"));
        }
        Some(last.1)
    }

    /// An integer: a JSON number (fractions truncated) or a numeric string. `null`, `""`
    /// and absence are `None` without a note.
    pub(crate) fn int(&mut self, obj: &Members<'_>, name: &str, aliases: &[&str]) -> Option<i64> {
        let raw = self.member(obj, name, aliases)?.get();
        match kind(raw) {
            Kind::Null => None,
            Kind::Number => integer(raw).or_else(|| {
                self.note(name, format!("expected an integer, found {}", shown(raw)));
                None
            }),
            Kind::String => {
                let s = self.string(name, raw)?;
                let s = s.trim();
                if s.is_empty() {
                    return None;
                }
                integer(s).or_else(|| {
                    self.note(
                        name,
                        format!("expected an integer, found the string {}", shown_text(s)),
                    );
                    None
                })
            }
            other => {
                self.note(
                    name,
                    format!("expected an integer, found {}", other.described()),
                );
                None
            }
        }
    }

    /// A Unix time in milliseconds ([`unix_time`]: seconds are scaled, 0 is absent); a
    /// value no database can hold is noted.
    pub(crate) fn millis(
        &mut self,
        obj: &Members<'_>,
        name: &str,
        aliases: &[&str],
    ) -> Option<Millis> {
        let v = self.int(obj, name, aliases)?;
        let ms = unix_time(Some(v));
        if ms.is_none() && v != 0 {
            self.note(name, format!("not a storable Unix time: {v}"));
        }
        ms
    }

    /// Text: a JSON string as is, or a JSON number digit for digit. `null` and `""` are
    /// `None`.
    pub(crate) fn text(
        &mut self,
        obj: &Members<'_>,
        name: &str,
        aliases: &[&str],
    ) -> Option<String> {
        self.text_with_kind(obj, name, aliases).map(|(t, _)| t)
    }

    fn text_with_kind(
        &mut self,
        obj: &Members<'_>,
        name: &str,
        aliases: &[&str],
    ) -> Option<(String, RoomIdKind)> {
        let raw = self.member(obj, name, aliases)?.get();
        match kind(raw) {
            Kind::Null => None,
            Kind::Number => Some((raw.to_owned(), RoomIdKind::Number)),
            Kind::String => {
                let s = self.string(name, raw)?;
                (!s.is_empty()).then(|| (s.into_owned(), RoomIdKind::String))
            }
            other => {
                self.note(
                    name,
                    format!("expected a string or a number, found {}", other.described()),
                );
                None
            }
        }
    }

    /// A JSON object member; anything else is noted (absence and `null` are not).
    pub(crate) fn object<'a>(&mut self, obj: &Members<'a>, name: &str) -> Option<Members<'a>> {
        let raw = self.member(obj, name, &[])?;
        match kind(raw.get()) {
            Kind::Null => None,
            Kind::Object => match Members::parse(raw) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.note(name, format!("unreadable object: {e}"));
                    None
                }
            },
            other => {
                self.note(
                    name,
                    format!("expected an object, found {}", other.described()),
                );
                None
            }
        }
    }

    /// Decodes a raw JSON string. A NUL, which no PostgreSQL text column holds, becomes
    /// U+FFFD (noted); a string JSON accepts but Rust cannot hold (a lone surrogate escape)
    /// is noted and `None`.
    fn string<'a>(&mut self, name: &str, raw: &'a str) -> Option<Cow<'a, str>> {
        match serde_json::from_str::<Cow<'a, str>>(raw) {
            Ok(s) if s.contains('\0') => {
                self.note(name, "contains NUL, stored as U+FFFD");
                Some(Cow::Owned(s.replace('\0', "\u{FFFD}")))
            }
            Ok(s) => Some(s),
            Err(e) => {
                self.note(name, format!("unreadable string: {e}"));
                None
            }
        }
    }
}

/// `123`, `-5`, `1.7e9`, `12.0` (fractions truncated toward zero); `None` when out of range
/// or not a number.
fn integer(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    (f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// A raw value for a note, at most 40 characters.
fn shown(raw: &str) -> String {
    let mut s: String = raw.chars().take(40).collect();
    if s.len() < raw.len() {
        s.push('…');
    }
    s
}

fn shown_text(s: &str) -> String {
    format!("{:?}", shown(s))
}

#[cfg(test)]
mod tests;
