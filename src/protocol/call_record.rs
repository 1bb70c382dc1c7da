//! A record of Tencent's call record API (`get_record_by_filter`, `get_record_by_callid`;
//! docs/src/tencent-rest-api.md), read into the typed columns of `call_records`. The same
//! lenient reading as the callbacks': a field that cannot be read is NULL and noted, and
//! the record is kept as received. Its values use the v4 spellings (`NormalEnd`,
//! `SingleCall`, `Audio`), normalised to the status vocabulary as the callbacks' are, so
//! that the views compare them directly.

use super::bounded::bounded_form;
use super::fields::{Fields, Notes};
use super::values::{CallResult, CallType, MediaType, Millis};

/// One record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecordRow {
    pub sdkappid: i64,
    pub call_id: String,
    pub caller: Option<String>,
    /// `CalleeList_Account`, as listed (Tencent's examples list the caller too).
    pub callees: Vec<String>,
    pub media_type: Option<MediaType>,
    pub call_type: Option<CallType>,
    pub call_result: Option<CallResult>,
    pub started_at: Option<Millis>,
    pub accepted_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub room_id: Option<String>,
    /// 1: a numeric room id, 2: a string room id (as we read the documentation).
    pub room_id_type: Option<i64>,
    /// The record exactly as received.
    pub record: String,
    /// What could not be read, `; `-separated.
    pub notes: Option<String>,
}

/// Why a record could not be stored at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a record is not a JSON object: {0}")]
    NotAnObject(String),
    #[error("a record has no CallId")]
    NoCallId,
}

/// Reads one record of app `sdkappid`, fetched at `fetched_at` (times after it by more
/// than a day, or before 2010, are not plausible and are noted instead).
pub fn parse_call_record(
    sdkappid: i64,
    raw: &str,
    fetched_at: Millis,
) -> Result<CallRecordRow, RecordError> {
    let f = Fields::parse(raw).map_err(|e| RecordError::NotAnObject(e.to_string()))?;
    let mut notes = Notes::default();
    let call_id = f
        .text(&["CallId"], &mut notes)
        .ok_or(RecordError::NoCallId)?;
    let time = |key: &str, notes: &mut Notes| {
        let v = f.int(&[key], notes);
        super::plausible_time(|| key.to_owned(), v, fetched_at, notes)
    };
    let mut row = CallRecordRow {
        sdkappid,
        call_id: bound("CallId", call_id, &mut notes),
        caller: f
            .text(&["Caller_Account"], &mut notes)
            .map(|c| bound("Caller_Account", c, &mut notes)),
        callees: Vec::new(),
        media_type: f.word(&["MediaType"], &mut notes, MediaType::from_wire),
        call_type: f.word(&["CallType"], &mut notes, CallType::from_wire),
        call_result: f.word(&["CallResult"], &mut notes, CallResult::from_wire),
        started_at: time("StartTime", &mut notes),
        accepted_at: time("AcceptTime", &mut notes),
        ended_at: time("EndTime", &mut notes),
        room_id: f
            .text(&["RoomId"], &mut notes)
            .map(|r| bound("RoomId", r, &mut notes)),
        room_id_type: f.int(&["RoomIdType"], &mut notes),
        record: raw.to_owned(),
        notes: None,
    };
    row.callees = f
        .texts(&["CalleeList_Account"], &mut notes)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| bound("CalleeList_Account", c, &mut notes))
        .collect();
    for vocab in [
        row.media_type.as_mut().and_then(|v| v.other_mut()),
        row.call_type.as_mut().and_then(|v| v.other_mut()),
        row.call_result.as_mut().and_then(|v| v.other_mut()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(b) = bounded_form(vocab) {
            *vocab = b.into_boxed_str();
        }
    }
    row.notes = notes.joined();
    Ok(row)
}

/// A value of an indexed (or listed) column, bounded as the callbacks' are (see
/// [`super::bounded`]), with a note when it was cut.
fn bound(field: &str, value: String, notes: &mut Notes) -> String {
    match bounded_form(&value) {
        Some(b) => {
            notes.push(format!(
                "{field}: {} bytes, longer than {} (shortened here, in full in the record)",
                value.len(),
                super::bounded::MAX_INDEXED_BYTES
            ));
            b
        }
        None => value,
    }
}

impl CallRecordRow {
    /// The UTC day the call counts on: that of its start; without one, of its end;
    /// without either, of when it was fetched.
    pub fn day(&self, fetched_at: Millis) -> chrono::NaiveDate {
        let ms = self.started_at.or(self.ended_at).unwrap_or(fetched_at);
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .date_naive()
    }

    /// `callees` as a JSON array of strings.
    pub fn callees_json(&self) -> String {
        serde_json::Value::from(self.callees.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FETCHED: Millis = 1_765_000_000_000;

    /// The shape of a record as Tencent's documentation of get_record_by_filter shows it
    /// (values of our own).
    const RECORD: &str = r#"{"CallId":"1e3f1b9b-3c5e-4d2a-9f0e-6a7b8c9d0e1f","Caller_Account":"alice","MediaType":"Video","CallType":"SingleCall","StartTime":1764990000,"AcceptTime":1764990004,"EndTime":1764990094,"CallResult":"NormalEnd","CalleeList_Account":["alice","bob"],"RoomId":"R-7","RoomIdType":2}"#;

    #[test]
    fn a_documented_record() {
        let r = parse_call_record(1_400_000_001, RECORD, FETCHED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.call_id, "1e3f1b9b-3c5e-4d2a-9f0e-6a7b8c9d0e1f");
        assert_eq!(r.caller.as_deref(), Some("alice"));
        assert_eq!(r.callees, ["alice", "bob"]);
        assert_eq!(r.media_type, Some(MediaType::Video));
        assert_eq!(r.call_type, Some(CallType::Single));
        assert_eq!(r.call_result, Some(CallResult::NormalEnd));
        assert_eq!(r.started_at, Some(1_764_990_000_000));
        assert_eq!(r.accepted_at, Some(1_764_990_004_000));
        assert_eq!(r.ended_at, Some(1_764_990_094_000));
        assert_eq!(r.room_id.as_deref(), Some("R-7"));
        assert_eq!(r.room_id_type, Some(2));
        assert_eq!(r.record, RECORD);
        assert_eq!(r.notes, None);
        assert_eq!(r.day(FETCHED).to_string(), "2025-12-06");
        assert_eq!(r.callees_json(), r#"["alice","bob"]"#);
    }

    #[test]
    fn every_result_spelling_maps_onto_the_callbacks_vocabulary() {
        for (wire, want) in [
            ("NormalEnd", "normal_end"),
            ("NotAnswer", "not_answer"),
            ("CallBusy", "call_busy"),
            ("Cancel", "cancel"),
            ("Reject", "reject"),
            ("Interrupt", "interrupt"),
            ("Offline", "offline"),
            ("SomethingNew", "something_new"),
        ] {
            let raw = format!(r#"{{"CallId":"c","CallResult":"{wire}","CallType":"MultiCall"}}"#);
            let r = parse_call_record(1, &raw, FETCHED).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.call_result.as_ref().map(|v| v.as_str()), Some(want));
            assert_eq!(r.call_type, Some(CallType::Group));
        }
    }

    #[test]
    fn unreadable_fields_are_noted_not_fatal() {
        let raw = r#"{"CallId":123456789012345678901,"StartTime":"soon","AcceptTime":0,"EndTime":99,"CalleeList_Account":"bob","RoomId":987654321}"#;
        let r = parse_call_record(1, raw, FETCHED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.call_id, "123456789012345678901", "never through a float");
        assert_eq!(r.room_id.as_deref(), Some("987654321"));
        assert_eq!(
            (r.started_at, r.accepted_at, r.ended_at),
            (None, None, None)
        );
        assert!(r.callees.is_empty());
        let notes = r.notes.clone().unwrap_or_default();
        for field in ["StartTime", "EndTime", "CalleeList_Account"] {
            assert!(notes.contains(field), "{field} in {notes}");
        }
        assert_eq!(
            r.day(FETCHED).to_string(),
            "2025-12-06",
            "the day it was fetched"
        );
        assert_eq!(
            parse_call_record(1, r#"{"Caller_Account":"a"}"#, FETCHED),
            Err(RecordError::NoCallId)
        );
        assert!(matches!(
            parse_call_record(1, "[1]", FETCHED),
            Err(RecordError::NotAnObject(_))
        ));
        let long = format!(r#"{{"CallId":"{}"}}"#, "x".repeat(400));
        let r = parse_call_record(1, &long, FETCHED).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.call_id.len() <= 256 && r.notes.is_some_and(|n| n.contains("CallId")));
    }
}
