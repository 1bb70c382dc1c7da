//! TRTC's own callbacks (room, media, cloud recording) and `Call.CallbackAfterRecordChanged`
//! as rows of `call_events`: the parsers of [`super::trtc`] and [`super::v4_record`] read the
//! body; this module maps what they read onto the columns, with the receiver's policy (only a
//! body that is not a JSON object is refused; anything unreadable is noted).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::trtc::{BodyError, TrtcEvent, TrtcGroup, event_type, parse_trtc, role_name};
use super::v4_record::parse_record_changed;
use super::{
    Context, ErrorCode, EventRow, Family, Fields, Notes, Rejection, Role, TrtcColumns, canonical,
    dedupe_key, own_day, plausible_time, scan,
};

/// The `command` stored on TRTC's own callbacks (they carry none: the path says what they are).
pub const TRTC_COMMAND: &str = "trtc";

/// The family of a TRTC group: `room`, `media`, `recording`, else `trtc`.
pub fn trtc_family(group: Option<TrtcGroup>) -> Family {
    match group {
        Some(TrtcGroup::Room) => Family::Room,
        Some(TrtcGroup::Media) => Family::Media,
        Some(TrtcGroup::Recording) => Family::Recording,
        Some(TrtcGroup::Other(_)) | None => Family::Trtc,
    }
}

/// The `event` of a TRTC event type: its documented name, or `unknown_<type>`.
fn event_name(ev: &TrtcEvent) -> Option<String> {
    match (ev.event_name, ev.event_type) {
        (Some(name), _) => Some(name.to_owned()),
        (None, Some(t)) => Some(format!("unknown_{t}")),
        (None, None) => None,
    }
}

/// The TRTC columns of an event. `trtc_status` is `Payload.Status`, or `LeaveCode` for the
/// types that carry one instead (302, 305). The codes are small numbers (32-bit integer
/// columns in PostgreSQL); one out of that range is left out with a note (the payload keeps
/// it), the same on both backends.
fn columns(ev: &TrtcEvent, notes: &mut Notes) -> TrtcColumns {
    let mut small = |name: &str, v: Option<i64>| {
        let v = v?;
        if i32::try_from(v).is_ok() {
            Some(v)
        } else {
            notes.push(format!("{name}: {v} is out of range, not used"));
            None
        }
    };
    let status = match ev.event_type {
        Some(event_type::RECORDER_STOP | event_type::UPLOAD_STOP) => ev.leave_code.or(ev.status),
        _ => ev.status.or(ev.leave_code),
    };
    TrtcColumns {
        event_type: small("EventType", ev.event_type),
        unique_id: ev.unique_id.clone(),
        terminal_type: small("EventInfo.TerminalType", ev.terminal_type),
        user_type: small("EventInfo.UserType", ev.user_type),
        reason: small("EventInfo.Reason", ev.reason),
        task_id: ev.task_id.clone(),
        status: small("EventInfo.Payload.Status", status),
        files: ev.files.clone(),
    }
}

fn refusal(e: BodyError) -> Rejection {
    Rejection::new(ErrorCode::InvalidJson, e.to_string())
}

/// The canonical digest of a TRTC body without its top-level `CallbackTs` (any case): the
/// time of sending, which a retry of the same event may change. Whitespace, key order and
/// escapes do not matter (src/protocol/canonical.rs); anything else does.
fn digest_without_callback_ts(text: &str) -> [u8; 32] {
    match Fields::parse(text) {
        Ok(fields) => {
            let kept: Vec<_> = fields
                .members()
                .iter()
                .filter(|(k, _)| {
                    !k.eq_ignore_ascii_case("CallbackTs") && !k.eq_ignore_ascii_case("CallbackMsTs")
                })
                .cloned()
                .collect();
            canonical::digest_members(&kept)
                .unwrap_or_else(|_| Sha256::digest(text.as_bytes()).into())
        }
        Err(_) => Sha256::digest(text.as_bytes()).into(),
    }
}

/// Parses one TRTC room, media or recording callback (posted to the TRTC path) into its
/// row. `ctx.command` is what `command` stores ([`TRTC_COMMAND`]). Refuses only a body that
/// is not a JSON object (71001) or nests too deep (71003); unknown groups and types are
/// stored (family `trtc`, event `unknown_<type>`), unreadable fields noted.
///
/// The dedupe key covers the event's identity (app, group, type, room, user, event time,
/// `UniqueId`, `TaskId`) and the canonical content without `CallbackTs`, so a retry that
/// TRTC stamps with a new sending time merges with the first delivery.
pub fn parse_trtc_delivery(ctx: &Context<'_>, body: &[u8]) -> Result<Vec<EventRow>, Rejection> {
    let ev = parse_trtc(body).map_err(refusal)?;
    let text = super::trtc::body_text(body).map_err(refusal)?;
    super::check_depth(text)?;
    let family = trtc_family(ev.group);
    let mut notes = Notes::default();
    for n in &ev.notes {
        notes.push(n.clone());
    }
    if ev.group.is_none() {
        notes.push("EventGroupId: missing; stored with family trtc");
    }
    if let Some(why) = scan::postgres_json_trouble(text) {
        notes.push(format!(
            "payload: {why}, which PostgreSQL's JSON functions cannot read (stored as received)"
        ));
    }
    let mut row = EventRow::base(ctx, family);
    row.user_id = ev.user_id.clone();
    row.room_id = ev.room_id.clone();
    row.event = event_name(&ev);
    row.role = ev
        .role
        .and_then(|r| Role::from_wire(&role_name(r).map_or_else(|| r.to_string(), str::to_owned)));
    let event_ms = plausible_time(
        || "EventInfo.EventMsTs".to_owned(),
        ev.event_ts_ms,
        ctx.received_at,
        &mut notes,
    );
    row.event_time = event_ms.or_else(|| {
        plausible_time(
            || "CallbackTs".to_owned(),
            ev.callback_ts_ms,
            ctx.received_at,
            &mut notes,
        )
    });
    // Not CallbackTs: it changes with every retry (the dedupe key leaves it out too).
    row.own_day = Some(own_day(&[ev.event_ts_ms]));
    row.trtc = columns(&ev, &mut notes);
    let digest = digest_without_callback_ts(text);
    row.dedupe_key = dedupe_key(&[
        family.as_str().as_bytes(),
        &ctx.sdkappid.to_le_bytes(),
        &ev.identity(ctx.sdkappid),
        &digest,
    ]);
    row.notes = notes.joined();
    row.payload = Some(Arc::from(text));
    super::bounded::bound_indexed_columns(&mut row);
    Ok(vec![row])
}

/// `Call.CallbackAfterRecordChanged`: one v4 row with the call's `CallId`, the recording
/// event's type (name in `event`), room, task id, status and files, and its time (the
/// recording event's, else the body's `EventTime`). `user_id` stays empty: the event's
/// `UserId` is the recording robot, not a participant of the call (it is in the payload).
pub(crate) fn record_changed_row(ctx: &Context<'_>, text: &str, notes: &mut Notes) -> EventRow {
    let mut row = EventRow::base(ctx, Family::V4);
    let Ok(rc) = parse_record_changed(text.as_bytes()) else {
        // parse_delivery has already checked that the body is a JSON object.
        notes.push("body: not readable as Call.CallbackAfterRecordChanged");
        return row;
    };
    for n in &rc.notes {
        notes.push(n.clone());
    }
    row.call_id = rc.call_id.clone();
    if row.call_id.is_none() && !rc.notes.iter().any(|n| n.starts_with("CallId")) {
        notes.push("CallId: missing");
    }
    let ev = rc.recording.unwrap_or_default();
    row.room_id = ev.room_id.clone();
    row.event = event_name(&ev);
    let event_ms = plausible_time(
        || "Callback.EventInfo.EventMsTs".to_owned(),
        ev.event_ts_ms,
        ctx.received_at,
        notes,
    );
    row.event_time = event_ms.or_else(|| {
        plausible_time(
            || "EventTime".to_owned(),
            rc.event_time_ms,
            ctx.received_at,
            notes,
        )
    });
    row.own_day = Some(own_day(&[ev.event_ts_ms, rc.event_time_ms]));
    row.trtc = columns(&ev, notes);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/trtc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ctx() -> Context<'static> {
        Context {
            sdkappid: 1_400_000_001,
            command: TRTC_COMMAND,
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 1_800_000_000_000,
        }
    }

    fn row(body: &[u8]) -> EventRow {
        let rows = parse_trtc_delivery(&ctx(), body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 1);
        rows.into_iter().next().unwrap_or_else(|| panic!("one row"))
    }

    #[test]
    fn every_fixture_makes_a_row_of_its_family() {
        let dir = format!("{}/tests/fixtures/trtc", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".json") && !n.starts_with("record-changed"))
            .collect();
        names.sort();
        assert!(names.len() >= 20);
        for name in names {
            let r = row(&fixture(&name));
            let ty = r.trtc.event_type.unwrap_or_default();
            let want = match ty / 100 {
                1 => "room",
                2 => "media",
                3 => "recording",
                _ => "trtc",
            };
            assert_eq!(r.family.as_str(), want, "{name}");
            assert!(r.event.is_some(), "{name}");
            assert!(r.event_time.is_some(), "{name}");
            assert_eq!(r.command, "trtc");
        }
    }

    #[test]
    fn an_enter_event_fills_its_columns() {
        let r = row(&fixture("103-enter-room.json"));
        assert_eq!(r.family, Family::Room);
        assert_eq!(r.event.as_deref(), Some("enter_room"));
        assert_eq!(r.role.as_ref().map(Role::as_str), Some("anchor"));
        assert!(r.trtc.terminal_type.is_some());
        assert!(r.trtc.reason.is_some());
        assert!(r.room_id.is_some() && r.user_id.is_some());
    }

    #[test]
    fn unknown_types_and_roles_are_kept() {
        let r = row(br#"{"EventGroupId":1,"EventType":107,"CallbackTs":1764403200000,"EventInfo":{"RoomId":5,"EventMsTs":1764403200000,"UserId":"u","Role":22}}"#);
        assert_eq!(r.family, Family::Room);
        assert_eq!(r.event.as_deref(), Some("unknown_107"));
        assert_eq!(r.role.as_ref().map(Role::as_str), Some("22"));
        let r =
            row(br#"{"EventGroupId":7,"EventType":701,"CallbackTs":1764403200000,"EventInfo":{}}"#);
        assert_eq!(r.family, Family::Trtc);
        assert_eq!(r.event.as_deref(), Some("unknown_701"));
        assert_eq!(
            r.event_time,
            Some(1_764_403_200_000),
            "CallbackTs as the fallback"
        );
    }

    #[test]
    fn a_new_callback_ts_is_the_same_delivery_other_changes_are_not() {
        let a = row(br#"{"EventGroupId":1,"EventType":103,"CallbackTs":1764403200000,"EventInfo":{"RoomId":"r","EventMsTs":1764403199000,"UserId":"u"}}"#);
        let b = row(b"{\n\t\"EventGroupId\":\t1,\n\t\"EventType\":\t103,\n\t\"CallbackTs\":\t1764403210000,\n\t\"EventInfo\":\t{\"UserId\":\"u\",\"RoomId\":\"r\",\"EventMsTs\":1764403199000}}");
        assert_eq!(a.dedupe_key, b.dedupe_key);
        let c = row(br#"{"EventGroupId":1,"EventType":103,"CallbackTs":1764403200000,"EventInfo":{"RoomId":"r","EventMsTs":1764403199000,"UserId":"u","Reason":2}}"#);
        assert_ne!(a.dedupe_key, c.dedupe_key);
    }

    /// A JSON object whose member names serde cannot decode (an unpaired surrogate escape
    /// in a name) can be TRTC's: stored (family `trtc`) with a note, keyed by its bytes.
    #[test]
    fn an_object_whose_names_cannot_be_decoded_is_stored() {
        let a = br#"{"\ud800":1,"EventGroupId":1,"EventType":103}"#;
        let b = br#"{"\ud800":2,"EventGroupId":1,"EventType":103}"#;
        let r = row(a);
        assert_eq!(r.family, Family::Trtc);
        assert_eq!(r.payload.as_deref().map(str::as_bytes), Some(&a[..]));
        let notes = r.notes.as_deref().unwrap_or_default();
        assert!(
            notes.contains("none of its fields could be read"),
            "{notes}"
        );
        assert_eq!(
            r.dedupe_key,
            row(a).dedupe_key,
            "a retry is the same delivery"
        );
        assert_ne!(r.dedupe_key, row(b).dedupe_key, "another body is another");
    }

    /// A room and task id too long for a PostgreSQL index entry are bounded
    /// (src/protocol/bounded.rs), noted, and kept in full in the payload.
    #[test]
    fn long_room_and_task_ids_are_bounded() {
        let (room, task) = ("r".repeat(4000), "t".repeat(4000));
        let body = serde_json::json!({"EventGroupId": 3, "EventType": 301,
            "EventInfo": {"RoomId": room, "TaskId": task, "UserId": "u"}})
        .to_string();
        let r = row(body.as_bytes());
        assert_eq!(r.room_id, super::super::bounded::bounded_form(&room));
        assert_eq!(r.trtc.task_id, super::super::bounded::bounded_form(&task));
        assert_eq!(r.user_id.as_deref(), Some("u"));
        let notes = r.notes.as_deref().unwrap_or_default();
        assert!(notes.contains("room_id: 4000 bytes"), "{notes}");
        assert!(notes.contains("task_id: 4000 bytes"), "{notes}");
        assert_eq!(r.payload.as_deref(), Some(body.as_str()));
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in [&b""[..], b"[]", b"nope", b"\xff"] {
            let e = parse_trtc_delivery(&ctx(), body).err();
            assert_eq!(e.map(|e| e.code), Some(ErrorCode::InvalidJson));
        }
    }

    #[test]
    fn record_changed_links_the_call_to_its_task() {
        let ctx = Context {
            command: "Call.CallbackAfterRecordChanged",
            ..ctx()
        };
        let rows = super::super::parse_delivery(
            super::super::Kind::V4RecordChanged,
            true,
            &ctx,
            &fixture("record-changed-301.json"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &rows[0];
        assert_eq!(r.family, Family::V4);
        assert_eq!(
            r.call_id.as_deref(),
            Some("6c1f0e52-2f4b-4d7e-9a3b-0d6a1c2e7f90")
        );
        assert_eq!(
            r.trtc.task_id.as_deref(),
            Some("Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef")
        );
        assert_eq!(r.trtc.event_type, Some(301));
        assert_eq!(r.event.as_deref(), Some("recorder_start"));
        assert_eq!(r.user_id, None);
        assert!(r.notes.is_none(), "{:?}", r.notes);
    }
}
