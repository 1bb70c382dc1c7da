//! Bodies of the v4 client API's call callbacks (`CallbackCommand=Call.…`). Their values
//! are mapped onto the status family's vocabulary (`NormalEnd` → `normal_end`,
//! `MultiCall` → `group`, …) so SQL can compare families. `EventTime` is in milliseconds,
//! the call record's times in seconds.

use std::sync::Arc;

use serde::Deserialize;

use super::values::{lenient_i64, lenient_text, unix_time};
use super::{
    CallResult, CallType, Context, EventRow, Family, MediaType, MemberAction, Rejection, Role,
    dedupe_key,
};

/// An account id: a JSON string, or a number kept digit for digit.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Account(#[serde(deserialize_with = "lenient_text")] pub Option<String>);

/// Any v4 call callback body. Which parts must be present depends on the command.
#[derive(Debug, Default, Deserialize)]
pub struct V4Body {
    #[serde(rename = "CallbackCommand", default, deserialize_with = "lenient_text")]
    pub callback_command: Option<String>,
    /// Unix milliseconds.
    #[serde(rename = "EventTime", default, deserialize_with = "lenient_i64")]
    pub event_time: Option<i64>,
    /// `Call.CallbackAfterStartCall`.
    #[serde(rename = "CallInfo", default)]
    pub call_info: Option<CallInfo>,
    /// `Call.CallbackAfterEndCall`.
    #[serde(rename = "CallRecord", default)]
    pub call_record: Option<CallRecord>,
    /// `Call.CallbackAfterMemberChanged`.
    #[serde(rename = "CallId", default, deserialize_with = "lenient_text")]
    pub call_id: Option<String>,
    #[serde(rename = "UserList", default)]
    pub user_list: Option<Vec<UserStatus>>,
    #[serde(rename = "ChangedUserList", default)]
    pub changed_user_list: Option<Vec<MemberChange>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CallInfo {
    #[serde(rename = "CallId", default, deserialize_with = "lenient_text")]
    pub call_id: Option<String>,
    /// Documented as `CallMediaType` in the sample and `MediaType` in the field table.
    #[serde(
        rename = "CallMediaType",
        alias = "MediaType",
        default,
        deserialize_with = "MediaType::deserialize_opt"
    )]
    pub media_type: Option<MediaType>,
    /// Empty for 1-to-1 calls.
    #[serde(rename = "ChatGroupId", default, deserialize_with = "lenient_text")]
    pub chat_group_id: Option<String>,
    #[serde(rename = "RoomId", default, deserialize_with = "lenient_text")]
    pub room_id: Option<String>,
    /// 1 numeric, 2 string.
    #[serde(rename = "RoomIdType", default, deserialize_with = "lenient_i64")]
    pub room_id_type: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CallRecord {
    #[serde(rename = "CallId", default, deserialize_with = "lenient_text")]
    pub call_id: Option<String>,
    #[serde(rename = "Caller_Account", default, deserialize_with = "lenient_text")]
    pub caller_account: Option<String>,
    #[serde(
        rename = "MediaType",
        default,
        deserialize_with = "MediaType::deserialize_opt"
    )]
    pub media_type: Option<MediaType>,
    #[serde(
        rename = "CallType",
        default,
        deserialize_with = "CallType::deserialize_opt"
    )]
    pub call_type: Option<CallType>,
    /// Unix seconds.
    #[serde(rename = "StartTime", default, deserialize_with = "lenient_i64")]
    pub start_time: Option<i64>,
    #[serde(rename = "EndTime", default, deserialize_with = "lenient_i64")]
    pub end_time: Option<i64>,
    /// 0 when the call was never answered.
    #[serde(rename = "AcceptTime", default, deserialize_with = "lenient_i64")]
    pub accept_time: Option<i64>,
    #[serde(
        rename = "CallResult",
        default,
        deserialize_with = "CallResult::deserialize_opt"
    )]
    pub call_result: Option<CallResult>,
    /// The examples include the caller in this list.
    #[serde(rename = "CalleeList_Account", default)]
    pub callee_list_account: Option<Vec<Account>>,
    #[serde(rename = "RoomId", default, deserialize_with = "lenient_text")]
    pub room_id: Option<String>,
    #[serde(rename = "RoomIdType", default, deserialize_with = "lenient_i64")]
    pub room_id_type: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserStatus {
    #[serde(rename = "User_Account", default, deserialize_with = "lenient_text")]
    pub user_account: Option<String>,
    /// `Calling` (the caller) or `Waiting`.
    #[serde(rename = "Status", default, deserialize_with = "lenient_text")]
    pub status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MemberChange {
    #[serde(rename = "User_Account", default, deserialize_with = "lenient_text")]
    pub user_account: Option<String>,
    #[serde(
        rename = "ActionType",
        default,
        deserialize_with = "MemberAction::deserialize_opt"
    )]
    pub action_type: Option<MemberAction>,
}

/// `Call.CallbackAfterStartCall`: one row for the caller (the user whose status is
/// `Calling`). `call_type` is `group` when the call has a chat group or more than two
/// users; `start_call_ts` is the event time.
pub fn start_call_row(
    body: V4Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
) -> Result<EventRow, Rejection> {
    let info = body.call_info.unwrap_or_default();
    let call_id = info
        .call_id
        .or(body.call_id)
        .ok_or_else(|| Rejection::missing("CallInfo.CallId"))?;
    let users = body.user_list.unwrap_or_default();
    let caller = users
        .iter()
        .find(|u| {
            u.status
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("calling"))
        })
        .or(users.first())
        .and_then(|u| u.user_account.clone());
    let has_group = info.chat_group_id.as_deref().is_some_and(|g| !g.is_empty());
    let mut row = EventRow::base(ctx, Family::V4, payload);
    row.user_id = caller;
    row.role = row.user_id.as_ref().map(|_| Role::Caller);
    row.media_type = info.media_type;
    row.room_id = info.room_id;
    row.call_type = if has_group || users.len() > 2 {
        Some(CallType::Group)
    } else if users.is_empty() {
        None
    } else {
        Some(CallType::Single)
    };
    row.total_num = (!users.is_empty()).then_some(users.len() as i64);
    row.event_time = unix_time(body.event_time);
    row.start_call_ts = row.event_time;
    row.dedupe_key = v4_key(ctx, b"start", &call_id, body.event_time, &[]);
    row.call_id = Some(call_id);
    Ok(row)
}

/// `Call.CallbackAfterEndCall`: one row for the call, under the caller's account, with the
/// call's result and its start, accept and end times.
pub fn end_call_row(
    body: V4Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
) -> Result<EventRow, Rejection> {
    let rec = body
        .call_record
        .ok_or_else(|| Rejection::missing("CallRecord"))?;
    let call_id = rec
        .call_id
        .or(body.call_id)
        .ok_or_else(|| Rejection::missing("CallRecord.CallId"))?;
    let mut accounts: Vec<&str> = rec.caller_account.iter().map(String::as_str).collect();
    for a in rec.callee_list_account.iter().flatten() {
        if let Some(a) = a.0.as_deref() {
            if !accounts.contains(&a) {
                accounts.push(a);
            }
        }
    }
    let mut row = EventRow::base(ctx, Family::V4, payload);
    row.total_num = (!accounts.is_empty()).then_some(accounts.len() as i64);
    row.role = rec.caller_account.as_ref().map(|_| Role::Caller);
    row.user_id = rec.caller_account;
    row.media_type = rec.media_type;
    row.call_type = rec.call_type;
    row.call_result = rec.call_result;
    row.room_id = rec.room_id;
    row.event_time = unix_time(body.event_time);
    row.start_call_ts = unix_time(rec.start_time);
    row.accept_ts = unix_time(rec.accept_time);
    row.end_ts = unix_time(rec.end_time);
    row.dedupe_key = v4_key(ctx, b"end", &call_id, body.event_time, &[]);
    row.call_id = Some(call_id);
    Ok(row)
}

/// `Call.CallbackAfterMemberChanged`: one row per changed member, with its normalised
/// `ActionType` in `event` (`accept`, `hangup`, `invite`, …); a change list that is empty
/// still stores one row.
pub fn member_changed_rows(
    body: V4Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
) -> Result<Vec<EventRow>, Rejection> {
    let call_id = body
        .call_id
        .or_else(|| body.call_info.and_then(|i| i.call_id))
        .ok_or_else(|| Rejection::missing("CallId"))?;
    let total = body
        .user_list
        .as_ref()
        .filter(|u| !u.is_empty())
        .map(|u| u.len() as i64);
    let event_time = unix_time(body.event_time);
    let base = |user: Option<String>, action: Option<MemberAction>| {
        let mut row = EventRow::base(ctx, Family::V4, payload);
        let user_bytes = user.as_deref().unwrap_or_default().as_bytes();
        let action_bytes = action.as_ref().map_or("", |a| a.as_str()).as_bytes();
        row.dedupe_key = v4_key(
            ctx,
            b"member",
            &call_id,
            body.event_time,
            &[user_bytes, action_bytes],
        );
        row.call_id = Some(call_id.clone());
        row.user_id = user;
        row.event = action.map(|a| a.as_str().to_owned());
        row.total_num = total;
        row.event_time = event_time;
        row
    };
    let changes = body.changed_user_list.unwrap_or_default();
    if changes.is_empty() {
        return Ok(vec![base(None, None)]);
    }
    Ok(changes
        .into_iter()
        .map(|c| base(c.user_account, c.action_type))
        .collect())
}

/// A `CallbackCommand` callhook does not know: stored with the call id and event time when
/// the body has them. Identical bodies of the same command are the same event.
pub fn generic_row(body: V4Body, ctx: &Context<'_>, payload: &Arc<str>) -> EventRow {
    let mut row = EventRow::base(ctx, Family::V4, payload);
    row.call_id = body
        .call_id
        .or_else(|| body.call_info.and_then(|i| i.call_id))
        .or_else(|| body.call_record.and_then(|r| r.call_id));
    row.event_time = unix_time(body.event_time);
    row.dedupe_key = super::v1::generic_key(ctx, payload);
    row
}

fn v4_key(
    ctx: &Context<'_>,
    what: &[u8],
    call_id: &str,
    event_time: Option<i64>,
    extra: &[&[u8]],
) -> super::DedupeKey {
    let sdkappid = ctx.sdkappid.to_le_bytes();
    let time = event_time.unwrap_or(0).to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![b"v4", &sdkappid, what, call_id.as_bytes(), &time];
    parts.extend_from_slice(extra);
    dedupe_key(&parts)
}
