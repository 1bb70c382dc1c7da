//! Bodies of the status family (`command=call_end`, `normal_end`, …) and the event family
//! (`command=caller_start_call`, …). Both share one body shape; the event family adds
//! `Event`.

use std::sync::Arc;

use serde::Deserialize;

use super::values::{lenient_i64, lenient_text, normalize, unix_time};
use super::{
    CallResult, CallType, Context, EventRow, Family, MediaType, Rejection, Role, dedupe_key,
};

/// The JSON body of a status or event callback. Every field is optional at this level;
/// which ones are required is decided per family. Unknown fields are ignored here and kept
/// in the stored payload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct V1Body {
    #[serde(default, deserialize_with = "lenient_text")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub room_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub total_num: Option<i64>,
    #[serde(default, deserialize_with = "MediaType::deserialize_opt")]
    pub media_type: Option<MediaType>,
    #[serde(default, deserialize_with = "CallType::deserialize_opt")]
    pub call_type: Option<CallType>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub call_id: Option<String>,
    #[serde(default, deserialize_with = "Role::deserialize_opt")]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "CallResult::deserialize_opt")]
    pub call_result: Option<CallResult>,
    /// Unix seconds (callhook also accepts milliseconds, see [`unix_time`]).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub event_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub start_call_ts: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub accept_ts: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub end_ts: Option<i64>,
    /// Event family only: the action, unprefixed (`start_call`, `accept_call`, …).
    #[serde(default, deserialize_with = "lenient_text")]
    pub event: Option<String>,
}

impl V1Body {
    fn fill(self, row: &mut EventRow) {
        row.call_id = self.call_id;
        row.user_id = self.user_id;
        row.role = self.role;
        row.call_result = self.call_result;
        row.media_type = self.media_type;
        row.call_type = self.call_type;
        row.room_id = self.room_id;
        row.total_num = self.total_num;
        row.event_time = unix_time(self.event_time);
        row.start_call_ts = unix_time(self.start_call_ts);
        row.accept_ts = unix_time(self.accept_ts);
        row.end_ts = unix_time(self.end_ts);
        row.event = self
            .event
            .as_deref()
            .map(normalize)
            .filter(|e| !e.is_empty());
    }
}

/// A status callback: one participant's outcome. `CallId` and `UserId` are required.
/// When `CallResult` is empty and the command is itself a result word (`reject`, …),
/// the command is the result.
pub fn status_row(
    body: V1Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
) -> Result<EventRow, Rejection> {
    participant_row(body, ctx, payload, Family::Status, |row| {
        if row.call_result.is_none() {
            row.call_result = CallResult::from_status_command(ctx.command);
        }
        // A participant's outcome: who, on which side, with which result.
        row.call_result
            .as_ref()
            .map_or_else(Vec::new, |r| r.as_str().as_bytes().to_vec())
    })
}

/// A call event: one user action. `CallId` and `UserId` are required; `Role` and `Event`
/// fall back to what the role-prefixed command says.
pub fn event_row(
    body: V1Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
) -> Result<EventRow, Rejection> {
    participant_row(body, ctx, payload, Family::Event, |row| {
        let command = ctx.command.to_ascii_lowercase();
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
        // A participant's action: who, on which side, which command.
        command.into_bytes()
    })
}

/// The shared shape of both families: one participant's row, completed by `finish`, which
/// returns what (besides call, user, role and event time) identifies the event.
fn participant_row(
    body: V1Body,
    ctx: &Context<'_>,
    payload: &Arc<str>,
    family: Family,
    finish: impl FnOnce(&mut EventRow) -> Vec<u8>,
) -> Result<EventRow, Rejection> {
    require(&body)?;
    let raw_time = body.event_time.unwrap_or(0);
    let mut row = EventRow::base(ctx, family, payload);
    body.fill(&mut row);
    let what = finish(&mut row);
    row.dedupe_key = dedupe_key(&[
        family.as_str().as_bytes(),
        &row.sdkappid.to_le_bytes(),
        opt(&row.call_id),
        opt(&row.user_id),
        row.role
            .as_ref()
            .map_or(&b""[..], |r| r.as_str().as_bytes()),
        &what,
        &raw_time.to_le_bytes(),
    ]);
    Ok(row)
}

/// A command callhook does not know, sent with `command=`: stored with whatever common
/// fields the body has; it is an `event` when the body names an `Event`, else `status`.
/// Identical bodies of the same command are the same event.
pub fn generic_row(body: V1Body, ctx: &Context<'_>, payload: &Arc<str>) -> EventRow {
    let family = if body.event.as_deref().is_some_and(|e| !e.trim().is_empty()) {
        Family::Event
    } else {
        Family::Status
    };
    let mut row = EventRow::base(ctx, family, payload);
    body.fill(&mut row);
    row.dedupe_key = generic_key(ctx, payload);
    row
}

pub(super) fn generic_key(ctx: &Context<'_>, payload: &str) -> super::DedupeKey {
    let body_hash = dedupe_key(&[payload.as_bytes()]);
    dedupe_key(&[
        b"generic",
        &ctx.sdkappid.to_le_bytes(),
        ctx.command.to_ascii_lowercase().as_bytes(),
        &body_hash,
    ])
}

fn require(body: &V1Body) -> Result<(), Rejection> {
    if body.call_id.is_none() {
        return Err(Rejection::missing("CallId"));
    }
    if body.user_id.is_none() {
        return Err(Rejection::missing("UserId"));
    }
    Ok(())
}

fn opt(v: &Option<String>) -> &[u8] {
    v.as_deref().unwrap_or_default().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Kind, parse_delivery};

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
        let key = |kind, command| {
            let ctx = Context {
                command,
                ..ctx.clone()
            };
            parse_delivery(kind, false, &ctx, body)
                .ok()
                .and_then(|rows| rows.first().map(|r| hex::encode(r.dedupe_key)))
        };
        assert_eq!(
            key(Kind::Status, "call_end"),
            key(Kind::Status, "normal_end"),
            "the command is not part of a status event"
        );
        assert_eq!(key(Kind::Status, "call_end").as_deref(), Some(STATUS_KEY));
        assert_eq!(
            key(Kind::Event, "caller_call_end").as_deref(),
            Some(EVENT_KEY)
        );
    }

    const STATUS_KEY: &str = "9cc0262c0c7bf3b0e456e10f2e99a55a";
    const EVENT_KEY: &str = "c478fcd478d9308f39c0c12c516f2856";
}
