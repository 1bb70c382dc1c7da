//! Bodies of the v4 client API's call callbacks (`CallbackCommand=Call.…`). Their values
//! are mapped onto the status family's vocabulary (`NormalEnd` → `normal_end`,
//! `MultiCall` → `group`, …) so SQL can compare families. `EventTime` is in milliseconds,
//! the call record's times in seconds. Every field is read on its own
//! (src/protocol/fields.rs).

use super::{
    CallResult, CallType, EventRow, Family, Fields, MAX_ROWS_PER_DELIVERY, MediaType, MemberAction,
    Notes, Read, Role, own_day,
};

/// The accounts of a `UserList` (`[{User_Account, Status}]`), with the index of the one
/// whose status is `Calling` (the caller).
fn user_list(f: &Fields<'_>, notes: &mut Notes) -> (Vec<String>, Option<usize>) {
    let mut accounts = Vec::new();
    let mut calling = None;
    for user in f.objects(&["UserList"], notes).unwrap_or_default() {
        let Some(account) = user.text(&["User_Account"], notes) else {
            continue;
        };
        let status = user.text(&["Status"], notes);
        if calling.is_none() && status.is_some_and(|s| s.eq_ignore_ascii_case("calling")) {
            calling = Some(accounts.len());
        }
        accounts.push(account);
    }
    (accounts, calling)
}

/// The accounts as the `members` column: a JSON array of strings, each once.
fn members(accounts: impl IntoIterator<Item = String>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for a in accounts {
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    (!seen.is_empty())
        .then(|| serde_json::to_string(&seen).ok())
        .flatten()
}

/// The call id: top-level `CallId`, else inside `CallInfo` or `CallRecord`.
fn call_id(f: &Fields<'_>, nested: Option<&Fields<'_>>, notes: &mut Notes) -> Option<String> {
    nested
        .and_then(|n| n.text(&["CallId"], notes))
        .or_else(|| f.text(&["CallId"], notes))
}

/// `Call.CallbackAfterStartCall`: one row for the caller (the user whose status is
/// `Calling`). `call_type` is `group` when the call has a chat group or more than two
/// users; `start_call_ts` is the event time.
pub(crate) fn start_call_row(read: &Read<'_, '_>, notes: &mut Notes) -> EventRow {
    let f = read.fields;
    let info = f.object(&["CallInfo"], notes);
    let mut row = EventRow::base(read.ctx, Family::V4);
    row.call_id = call_id(f, info.as_ref(), notes);
    if row.call_id.is_none() {
        notes.missing(info.as_ref().unwrap_or(f), "CallId");
    }
    let (users, calling) = user_list(f, notes);
    row.user_id = calling
        .or((!users.is_empty()).then_some(0))
        .map(|i| users[i].clone());
    row.role = row.user_id.as_ref().map(|_| Role::Caller);
    let has_group = info
        .as_ref()
        .and_then(|i| i.text(&["ChatGroupId"], notes))
        .is_some();
    if let Some(info) = &info {
        // Documented as `CallMediaType` in the sample and `MediaType` in the field table.
        row.media_type = info.word(&["CallMediaType", "MediaType"], notes, MediaType::from_wire);
        row.room_id = info.text(&["RoomId"], notes);
    }
    row.call_type = if has_group || users.len() > 2 {
        Some(CallType::Group)
    } else if users.is_empty() {
        None
    } else {
        Some(CallType::Single)
    };
    row.total_num = (!users.is_empty()).then_some(users.len() as i64);
    row.event_time = read.time(f, "EventTime", notes);
    row.start_call_ts = row.event_time;
    row.own_day = Some(own_day(&[Read::raw(f, "EventTime")]));
    row.members = members(users);
    row
}

/// `Call.CallbackAfterEndCall`: one row for the call, under the caller's account, with the
/// call's result and its start, accept and end times.
pub(crate) fn end_call_row(read: &Read<'_, '_>, notes: &mut Notes) -> EventRow {
    let f = read.fields;
    let rec = f.object(&["CallRecord"], notes);
    let mut row = EventRow::base(read.ctx, Family::V4);
    row.call_id = call_id(f, rec.as_ref(), notes);
    row.event_time = read.time(f, "EventTime", notes);
    row.own_day = Some(own_day(&[Read::raw(f, "EventTime")]));
    let Some(rec) = rec else {
        notes.missing(f, "CallRecord");
        return row;
    };
    if row.call_id.is_none() {
        notes.missing(&rec, "CallId");
    }
    let caller = rec.text(&["Caller_Account"], notes);
    let callees = rec
        .texts(&["CalleeList_Account"], notes)
        .unwrap_or_default();
    let accounts: Vec<String> = caller.iter().cloned().chain(callees).collect();
    row.members = members(accounts);
    row.total_num = row
        .members
        .as_deref()
        .and_then(|m| serde_json::from_str::<Vec<String>>(m).ok())
        .map(|m| m.len() as i64);
    row.role = caller.as_ref().map(|_| Role::Caller);
    row.user_id = caller;
    row.media_type = rec.word(&["MediaType"], notes, MediaType::from_wire);
    row.call_type = rec.word(&["CallType"], notes, CallType::from_wire);
    row.call_result = rec.word(&["CallResult"], notes, CallResult::from_wire);
    row.room_id = rec.text(&["RoomId"], notes);
    row.start_call_ts = read.time(&rec, "StartTime", notes);
    row.accept_ts = read.time(&rec, "AcceptTime", notes);
    row.end_ts = read.time(&rec, "EndTime", notes);
    row.own_day = Some(own_day(&[
        Read::raw(&rec, "StartTime"),
        Read::raw(f, "EventTime"),
        Read::raw(&rec, "EndTime"),
        Read::raw(&rec, "AcceptTime"),
    ]));
    row
}

/// `Call.CallbackAfterMemberChanged`: one row per changed member, with its normalised
/// `ActionType` in `event` (`accept`, `hangup`, `invite`, …). A change list that is empty,
/// or longer than [`MAX_ROWS_PER_DELIVERY`], makes one row.
pub(crate) fn member_changed_rows(read: &Read<'_, '_>, notes: &mut Notes) -> Vec<EventRow> {
    let f = read.fields;
    let info = f.object(&["CallInfo"], notes);
    let call_id = call_id(f, info.as_ref(), notes);
    if call_id.is_none() {
        notes.missing(f, "CallId");
    }
    let (users, _) = user_list(f, notes);
    let total = (!users.is_empty()).then_some(users.len() as i64);
    let event_time = read.time(f, "EventTime", notes);
    let day = own_day(&[Read::raw(f, "EventTime")]);
    let members = members(users);
    let base = |user: Option<String>, action: Option<MemberAction>| {
        let mut row = EventRow::base(read.ctx, Family::V4);
        row.call_id = call_id.clone();
        row.user_id = user;
        row.event = action.map(|a| a.as_str().to_owned());
        row.total_num = total;
        row.event_time = event_time;
        row.own_day = Some(day);
        row.members = members.clone();
        row
    };
    let changes = f.objects(&["ChangedUserList"], notes).unwrap_or_default();
    if changes.len() > MAX_ROWS_PER_DELIVERY {
        notes.push(format!(
            "ChangedUserList: {} changes, more than the {MAX_ROWS_PER_DELIVERY} a delivery is \
             stored as rows; stored as one row (the changes are in the payload)",
            changes.len()
        ));
        return vec![base(None, None)];
    }
    if changes.is_empty() {
        return vec![base(None, None)];
    }
    changes
        .iter()
        .map(|c| {
            base(
                c.text(&["User_Account"], notes),
                c.word(&["ActionType"], notes, MemberAction::from_wire),
            )
        })
        .collect()
}
