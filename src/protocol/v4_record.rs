//! `Call.CallbackAfterRecordChanged`: the v4 call callback (Chat-style query, posted to the
//! call-callback URL, unsigned) that links a TUICallKit call to its cloud-recording task.
//! Its body wraps a cloud-recording event (see [`super::trtc`]):
//!
//! ```text
//! {"CallId": "…", "Callback": {"EventGroupId": 3, "EventType": 301, "CallbackTs": …,
//!   "EventInfo": {"RoomId": "…", "EventTs": …, "EventMsTs": …, "UserId": "…",
//!                 "TaskId": "…", "Payload": {"Status": 0}}, "KitType": 2},
//!  "CallbackCommand": "Call.CallbackAfterRecordChanged", "EventTime": <ms>}
//! ```
//!
//! A pure function, not wired into the v4 parser yet. Same policy as [`super::trtc`]: only a
//! body that is not a UTF-8 JSON object is an error; every field is read on its own.

use super::trtc::{BodyError, Reader, TrtcEvent, body_text, read_event, top_object};
use super::values::Millis;

/// The command, as the query and the body of trtc.io doc 80345 spell it.
pub const RECORD_CHANGED: &str = "Call.CallbackAfterRecordChanged";

/// The same callback as the body of the Chinese edition's example spells it
/// (cloud.tencent.com doc 647/131580), while its query table says [`RECORD_CHANGED`].
pub const RECORD_CHANGED_ALT: &str = "Call.CallbackAfterCloudRecordingChanged";

/// Whether a command word is this callback (either spelling, any case).
pub fn is_record_changed(command: &str) -> bool {
    command.eq_ignore_ascii_case(RECORD_CHANGED) || command.eq_ignore_ascii_case(RECORD_CHANGED_ALT)
}

/// A `Call.CallbackAfterRecordChanged` body, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordChanged {
    /// `CallId`: the TUICallKit call.
    pub call_id: Option<String>,
    /// `CallbackCommand` as the body states it.
    pub callback_command: Option<String>,
    /// `EventTime`, Unix ms.
    pub event_time_ms: Option<Millis>,
    /// `Callback.KitType` (2 in Tencent's example; its meaning is not documented).
    pub kit_type: Option<i64>,
    /// The recording event in `Callback` (its notes are in [`Self::notes`]).
    pub recording: Option<TrtcEvent>,
    /// What could not be read, with paths from the top (`Callback.EventInfo.TaskId: …`).
    pub notes: Vec<String>,
}

/// Parses the raw body of `Call.CallbackAfterRecordChanged`.
pub fn parse_record_changed(body: &[u8]) -> Result<RecordChanged, BodyError> {
    let text = body_text(body)?;
    let mut notes = Vec::new();
    let top = top_object(text, &mut notes)?;
    let mut r = Reader {
        prefix: "",
        notes: &mut notes,
    };
    let mut out = RecordChanged {
        call_id: r.text(&top, "CallId", &[]),
        callback_command: r.text(&top, "CallbackCommand", &[]),
        event_time_ms: r.millis(&top, "EventTime", &[]),
        ..RecordChanged::default()
    };
    let top_kit_type = r.int(&top, "KitType", &[]);
    match r.object(&top, "Callback") {
        Some(callback) => {
            let mut inner = Reader {
                prefix: "Callback.",
                notes: r.notes,
            };
            out.kit_type = inner.int(&callback, "KitType", &[]).or(top_kit_type);
            out.recording = Some(read_event(&callback, "Callback.", inner.notes));
        }
        None => {
            out.kit_type = top_kit_type;
            if !notes.iter().any(|n| n.starts_with("Callback:")) {
                notes.push("Callback: missing; expected the recording event".to_owned());
            }
        }
    }
    out.notes = notes;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::trtc::TrtcGroup;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/trtc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn parse(body: &[u8]) -> RecordChanged {
        parse_record_changed(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn record_started_links_the_call_to_its_task() {
        let r = parse(&fixture("record-changed-301.json"));
        assert_eq!(r.notes, Vec::<String>::new());
        assert_eq!(
            r.call_id.as_deref(),
            Some("6c1f0e52-2f4b-4d7e-9a3b-0d6a1c2e7f90")
        );
        assert_eq!(r.callback_command.as_deref(), Some(RECORD_CHANGED));
        assert_eq!(r.event_time_ms, Some(1_764_403_210_723));
        assert_eq!(r.kit_type, Some(2));
        let ev = r.recording.unwrap_or_default();
        assert_eq!(ev.group, Some(TrtcGroup::Recording));
        assert_eq!(ev.event_type, Some(301));
        assert_eq!(ev.event_name, Some("recorder_start"));
        assert_eq!(ev.room_id.as_deref(), Some("48213907"));
        assert_eq!(
            ev.user_id.as_deref(),
            Some("callkit_1400000001_record_48213907")
        );
        assert_eq!(
            ev.task_id.as_deref(),
            Some("Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef")
        );
        assert_eq!(ev.status, Some(0));
        assert_eq!(ev.event_ts_ms, Some(1_764_403_210_620));
    }

    #[test]
    fn vod_commit_carries_the_file() {
        let r = parse(&fixture("record-changed-311.json"));
        assert_eq!(r.notes, Vec::<String>::new());
        let ev = r.recording.unwrap_or_default();
        assert_eq!(ev.event_type, Some(311));
        assert_eq!(ev.event_name, Some("vod_commit"));
        let files: serde_json::Value =
            serde_json::from_str(ev.files.as_deref().unwrap_or("null")).unwrap_or_default();
        assert_eq!(files["TencentVod"]["FileId"], "5285890812345678901");
        assert_eq!(files["TencentVod"]["MediaId"], "mix");
    }

    #[test]
    fn both_spellings_of_the_command() {
        assert!(is_record_changed("Call.CallbackAfterRecordChanged"));
        assert!(is_record_changed("call.callbackafterrecordchanged"));
        assert!(is_record_changed("Call.CallbackAfterCloudRecordingChanged"));
        assert!(!is_record_changed("Call.CallbackAfterEndCall"));
        let body = br#"{"CallId":"c","CallbackCommand":"Call.CallbackAfterCloudRecordingChanged","EventTime":1764403201480,"Callback":{"EventGroupId":3,"EventType":312,"EventInfo":{"TaskId":"t","Payload":{"Status":0}}}}"#;
        let r = parse(body);
        assert_eq!(r.callback_command.as_deref(), Some(RECORD_CHANGED_ALT));
        assert_eq!(
            r.recording.and_then(|e| e.event_name),
            Some("vod_stop"),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn lenient_fields_with_paths_in_notes() {
        let body = br#"{"CallId":12345678901234567890123,"EventTime":"1764403201480","KitType":"2","Callback":{"EventGroupId":"3","EventType":311,"EventInfo":{"RoomId":true,"TaskId":{"x":1},"Payload":[]}}}"#;
        let r = parse(body);
        assert_eq!(r.call_id.as_deref(), Some("12345678901234567890123"));
        assert_eq!(r.event_time_ms, Some(1_764_403_201_480));
        assert_eq!(
            r.kit_type,
            Some(2),
            "top-level KitType when Callback has none"
        );
        let ev = r.recording.clone().unwrap_or_default();
        assert_eq!(ev.group, Some(TrtcGroup::Recording));
        assert_eq!(ev.room_id, None);
        assert_eq!(ev.task_id, None);
        assert_eq!(
            r.notes,
            vec![
                "Callback.EventInfo.RoomId: expected a string or a number, found a boolean",
                "Callback.EventInfo.TaskId: expected a string or a number, found an object",
                "Callback.EventInfo.Payload: expected an object, found an array",
            ]
        );
    }

    #[test]
    fn a_missing_or_wrong_callback_is_a_note() {
        let r = parse(br#"{"CallId":"c"}"#);
        assert_eq!(r.recording, None);
        assert_eq!(
            r.notes,
            vec!["Callback: missing; expected the recording event"]
        );
        let r = parse(br#"{"CallId":"c","Callback":"301"}"#);
        assert_eq!(r.recording, None);
        assert_eq!(
            r.notes,
            vec!["Callback: expected an object, found a string"]
        );
        assert!(parse_record_changed(b"[1]").is_err());
        assert!(parse_record_changed(b"").is_err());
    }
}
