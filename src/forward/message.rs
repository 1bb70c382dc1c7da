//! The message a destination receives for a stored event: `{"type", "timestamp",
//! "version", "data"}`, the Standard Webhooks body convention. `data` holds the event's
//! `call_events` columns (every one but `deliveries`, `last_delivery_at` and
//! `dedupe_key`, which change or mean nothing outside) and Tencent's payload as received.
//! The body of an event is the same on every attempt. docs/src/forwarded-messages.md shows one per
//! family; a change that removes or renames a field raises [`VERSION`].

use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::ForwardedEvent;

/// The schema version of the body (its `version`).
pub const VERSION: u32 = 1;

/// `call.<family>.<command>`, the command as received, any character outside
/// `[A-Za-z0-9_.]` replaced by `_` (Standard Webhooks' advice for event types).
pub fn event_type(family: &str, command: &str) -> String {
    let command: String = command
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("call.{family}.{command}")
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: String,
    /// When callhook received the event (Tencent's own time is `data.event_time`).
    timestamp: Option<String>,
    version: u32,
    data: Data<'a>,
}

/// The columns, in the order of the table.
#[derive(Serialize)]
struct Data<'a> {
    id: i64,
    sdkappid: i64,
    family: &'a str,
    command: &'a str,
    call_id: &'a Option<String>,
    user_id: &'a Option<String>,
    role: &'a Option<String>,
    event: &'a Option<String>,
    call_result: &'a Option<String>,
    media_type: &'a Option<String>,
    call_type: &'a Option<String>,
    room_id: &'a Option<String>,
    total_num: Option<i64>,
    event_time: Option<String>,
    start_call_ts: Option<String>,
    accept_ts: Option<String>,
    end_ts: Option<String>,
    client_ip: &'a Option<String>,
    opt_platform: &'a Option<String>,
    remote_addr: &'a Option<String>,
    members: Option<Box<RawValue>>,
    notes: &'a Option<String>,
    received_at: Option<String>,
    trtc_event_type: Option<i64>,
    unique_id: &'a Option<String>,
    terminal_type: Option<i64>,
    user_type: Option<i64>,
    reason: Option<i64>,
    task_id: &'a Option<String>,
    trtc_status: Option<i64>,
    files: Option<Box<RawValue>>,
    /// The body exactly as Tencent sent it (JSON); null on the second and later rows of a
    /// delivery that makes several (a v4 member change), whose first row carries it.
    payload: Option<Box<RawValue>>,
}

/// Milliseconds as ISO-8601 UTC with milliseconds: `2024-01-10T03:01:13.000Z`, as SQLite
/// stores times and PostgreSQL's JSON would show them.
fn iso(ms: Option<i64>) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms?)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Stored JSON text as it is; text that is not JSON (never written by callhook) as a JSON
/// string, so the body is always valid.
fn json(text: &Option<String>) -> Option<Box<RawValue>> {
    let text = text.as_ref()?;
    RawValue::from_string(text.clone())
        .ok()
        .or_else(|| serde_json::value::to_raw_value(text).ok())
}

/// The body of `e`'s message, as sent and signed.
pub fn body(e: &ForwardedEvent) -> Result<Vec<u8>, serde_json::Error> {
    let message = Message {
        kind: event_type(&e.family, &e.command),
        timestamp: iso(Some(e.received_at)),
        version: VERSION,
        data: Data {
            id: e.id,
            sdkappid: e.sdkappid,
            family: &e.family,
            command: &e.command,
            call_id: &e.call_id,
            user_id: &e.user_id,
            role: &e.role,
            event: &e.event,
            call_result: &e.call_result,
            media_type: &e.media_type,
            call_type: &e.call_type,
            room_id: &e.room_id,
            total_num: e.total_num,
            event_time: iso(e.event_time),
            start_call_ts: iso(e.start_call_ts),
            accept_ts: iso(e.accept_ts),
            end_ts: iso(e.end_ts),
            client_ip: &e.client_ip,
            opt_platform: &e.opt_platform,
            remote_addr: &e.remote_addr,
            members: json(&e.members),
            notes: &e.notes,
            received_at: iso(Some(e.received_at)),
            trtc_event_type: e.trtc_event_type,
            unique_id: &e.unique_id,
            terminal_type: e.terminal_type,
            user_type: e.user_type,
            reason: e.reason,
            task_id: &e.task_id,
            trtc_status: e.trtc_status,
            files: json(&e.files),
            payload: json(&e.payload),
        },
    };
    serde_json::to_vec(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_standard_webhooks_advice() {
        assert_eq!(event_type("status", "call_end"), "call.status.call_end");
        assert_eq!(
            event_type("v4", "Call.CallbackAfterEndCall"),
            "call.v4.Call.CallbackAfterEndCall"
        );
        assert_eq!(event_type("other", "new cmd/x"), "call.other.new_cmd_x");
    }

    #[test]
    fn the_payload_is_carried_as_received() -> Result<(), serde_json::Error> {
        let payload = r#"{"CallId": "c1",  "UserId":"u"}"#;
        let e = ForwardedEvent {
            id: 3,
            sdkappid: 1,
            family: "status".into(),
            command: "call_end".into(),
            call_id: Some("c1".into()),
            user_id: None,
            role: None,
            event: None,
            call_result: Some("not_answer".into()),
            media_type: None,
            call_type: None,
            room_id: None,
            total_num: None,
            event_time: Some(1_704_856_890_000),
            start_call_ts: None,
            accept_ts: None,
            end_ts: None,
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            members: None,
            notes: None,
            received_at: 1_704_856_891_234,
            payload: Some(payload.into()),
            trtc_event_type: None,
            unique_id: None,
            terminal_type: None,
            user_type: None,
            reason: None,
            task_id: None,
            trtc_status: None,
            files: Some("not json".into()),
        };
        let text = String::from_utf8(body(&e)?).unwrap_or_default();
        assert!(text.starts_with(
            r#"{"type":"call.status.call_end","timestamp":"2024-01-10T03:21:31.234Z","version":1,"data":{"id":3,"#
        ), "{text}");
        assert!(
            text.contains(&format!(r#""payload":{payload}}}}}"#)),
            "{text}"
        );
        assert!(
            text.contains(r#""event_time":"2024-01-10T03:21:30.000Z""#),
            "{text}"
        );
        assert!(text.contains(r#""files":"not json""#), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(parsed["data"].as_object().map(|o| o.len()), Some(32));
        Ok(())
    }
}
