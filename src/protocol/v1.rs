//! Bodies of the status family (`command=call_end`, `normal_end`, …) and the event family
//! (`command=caller_start_call`, …). Both share one body shape; the event family adds
//! `Event`. Every field is read on its own (src/protocol/fields.rs): one that cannot be
//! read is NULL and noted, and never costs the row.

use super::values::normalize;
use super::{CallResult, CallType, EventRow, Family, MediaType, Notes, Read, Role, own_day};

/// The fields of a status or event body, as far as they could be read.
#[derive(Debug, Default)]
pub struct V1Fields {
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub total_num: Option<i64>,
    pub media_type: Option<MediaType>,
    pub call_type: Option<CallType>,
    pub call_id: Option<String>,
    pub role: Option<Role>,
    pub call_result: Option<CallResult>,
    /// Event family only: the action, unprefixed (`start_call`, `accept_call`, …).
    pub event: Option<String>,
}

fn read_fields(read: &Read<'_, '_>, notes: &mut Notes) -> V1Fields {
    let f = read.fields;
    V1Fields {
        user_id: f.text(&["UserId"], notes),
        room_id: f.text(&["RoomId"], notes),
        total_num: f.int(&["TotalNum"], notes),
        media_type: f.word(&["MediaType"], notes, MediaType::from_wire),
        call_type: f.word(&["CallType"], notes, CallType::from_wire),
        call_id: f.text(&["CallId"], notes),
        role: f.word(&["Role"], notes, Role::from_wire),
        call_result: f.word(&["CallResult"], notes, CallResult::from_wire),
        event: f
            .text(&["Event"], notes)
            .map(|e| normalize(&e))
            .filter(|e| !e.is_empty()),
    }
}

/// One participant's row of either family: the shared columns and times. `CallId` and
/// `UserId` identify whose event it is; a body without them is still stored, and noted.
fn participant_row(read: &Read<'_, '_>, family: Family, notes: &mut Notes) -> EventRow {
    let row = common_row(read, family, notes);
    for (name, missing) in [
        ("CallId", row.call_id.is_none()),
        ("UserId", row.user_id.is_none()),
    ] {
        if missing {
            notes.missing(read.fields, name);
        }
    }
    row
}

/// A row with every field of the shared body shape that the body has.
pub(crate) fn common_row(read: &Read<'_, '_>, family: Family, notes: &mut Notes) -> EventRow {
    let v = read_fields(read, notes);
    let f = read.fields;
    let mut row = EventRow::base(read.ctx, family);
    row.call_id = v.call_id;
    row.user_id = v.user_id;
    row.role = v.role;
    row.call_result = v.call_result;
    row.media_type = v.media_type;
    row.call_type = v.call_type;
    row.room_id = v.room_id;
    row.total_num = v.total_num;
    row.event = v.event;
    row.event_time = read.time(f, "EventTime", notes);
    row.start_call_ts = read.time(f, "StartCallTs", notes);
    row.accept_ts = read.time(f, "AcceptTs", notes);
    row.end_ts = read.time(f, "EndTs", notes);
    let raw = |key| Read::raw(f, key);
    row.own_day = Some(own_day(&[
        raw("StartCallTs"),
        raw("EventTime"),
        raw("EndTs"),
        raw("AcceptTs"),
    ]));
    row
}

/// A status callback: one participant's outcome. When `CallResult` is empty and the
/// command is itself a result word (`reject`, …), the command is the result.
pub(crate) fn status_row(read: &Read<'_, '_>, notes: &mut Notes) -> EventRow {
    let mut row = participant_row(read, Family::Status, notes);
    if row.call_result.is_none() {
        row.call_result = CallResult::from_status_command(read.ctx.command);
    }
    row
}

/// A call event: one user action. `Role` and `Event` fall back to what the role-prefixed
/// command says.
pub(crate) fn event_row(read: &Read<'_, '_>, notes: &mut Notes) -> EventRow {
    let mut row = participant_row(read, Family::Event, notes);
    let command = read.ctx.command.to_ascii_lowercase();
    let (prefix_role, action) = match command.split_once('_') {
        Some(("caller", rest)) => (Some(Role::Caller), rest),
        Some(("callee", rest)) => (Some(Role::Callee), rest),
        _ => (None, command.as_str()),
    };
    if row.role.is_none() {
        row.role = prefix_role;
    }
    if row.event.is_none() {
        row.event = Some(action.to_owned());
    }
    row
}

#[cfg(test)]
mod tests {
    use crate::protocol::{Context, Kind, parse_delivery};

    /// Dedupe keys are stored: changing how they are derived would make a retry that
    /// arrives after an upgrade a new event. This pins them.
    #[test]
    fn dedupe_keys_are_stable_across_versions() {
        let ctx = Context {
            sdkappid: 8_888_888,
            command: "call_end",
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 0,
        };
        let body = br#"{"UserId":"Alice","CallId":"aheahfo-eqwnknoihfsd-qweqf","Role":"caller","CallResult":"normal_end","EventTime":170485688}"#;
        let key = |kind, command, body: &[u8]| {
            let ctx = Context {
                command,
                ..ctx.clone()
            };
            parse_delivery(kind, false, &ctx, body)
                .ok()
                .and_then(|rows| rows.first().map(|r| hex::encode(r.dedupe_key)))
        };
        assert_eq!(
            key(Kind::Status, "call_end", body),
            key(Kind::Status, "normal_end", body),
            "the command is not part of a status event"
        );
        let pretty = b"{\n  \"CallId\": \"aheahfo-eqwnknoihfsd-qweqf\",\n  \"UserId\": \"Alice\",\n  \"Role\": \"caller\",\n  \"EventTime\": 170485688,\n  \"CallResult\": \"normal_end\"\n}";
        assert_eq!(
            key(Kind::Status, "call_end", body),
            key(Kind::Status, "call_end", pretty),
            "a retry pretty-printed is the same delivery"
        );
        assert_eq!(
            key(Kind::Status, "call_end", body).as_deref(),
            Some(STATUS_KEY)
        );
        assert_eq!(
            key(Kind::Event, "caller_call_end", body).as_deref(),
            Some(EVENT_KEY)
        );
    }

    const STATUS_KEY: &str = "658ae572837acd09ff56fd4285cdd728";
    const EVENT_KEY: &str = "0847269deb37aaf0572b3881ab1b9e1f";
}
