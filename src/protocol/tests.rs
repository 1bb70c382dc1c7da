//! Tests of `parse_delivery` as a whole: what every family's rows share.

use super::{Context, Kind, parse_delivery};

fn ctx(command: &str) -> Context<'_> {
    Context {
        sdkappid: 1_400_000_001,
        command,
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at: 1_704_900_000_000,
    }
}

/// Every kind, with a command of its own.
const KINDS: [(Kind, &str); 7] = [
    (Kind::Status, "call_end"),
    (Kind::Event, "caller_call_end"),
    (Kind::V4StartCall, "Call.CallbackAfterStartCall"),
    (Kind::V4EndCall, "Call.CallbackAfterEndCall"),
    (Kind::V4MemberChanged, "Call.CallbackAfterMemberChanged"),
    (Kind::V4RecordChanged, "Call.CallbackAfterRecordChanged"),
    (Kind::Unknown, "caller_new_thing"),
];

/// A JSON object whose member names serde cannot decode (an unpaired surrogate escape in a
/// name) is stored with none of its fields read. Such bodies are keyed by their bytes:
/// two different ones are two deliveries, a byte-identical retry is the same one.
#[test]
fn bodies_whose_names_cannot_be_decoded_are_keyed_by_their_bytes() {
    let a = br#"{"\ud800":1,"CallId":"x"}"#;
    let b = br#"{"\ud800":1,"CallId":"y"}"#;
    let c = br#"{"\udc00":1,"CallId":"x"}"#;
    for (kind, command) in KINDS {
        let keys = |body: &[u8]| {
            let rows = parse_delivery(kind, true, &ctx(command), body)
                .unwrap_or_else(|r| panic!("{command}: a JSON object is stored: {r}"));
            assert_eq!(rows.len(), 1, "{command}");
            let notes = rows[0].notes.as_deref().unwrap_or_default();
            assert!(
                notes.contains("none of its fields could be read"),
                "{command}: {notes}"
            );
            assert_eq!(rows[0].payload.as_deref().map(str::as_bytes), Some(body));
            rows[0].dedupe_key
        };
        assert_ne!(
            keys(a),
            keys(b),
            "{command}: different bodies, different keys"
        );
        assert_ne!(
            keys(a),
            keys(c),
            "{command}: different bodies, different keys"
        );
        assert_eq!(keys(a), keys(a), "{command}: a retry is the same delivery");
    }
}

/// Every row of every kind holds its indexed text columns bounded (src/protocol/bounded.rs):
/// a long id is replaced by its bounded form, with a note, the payload keeping it in full;
/// the dedupe key is the content's, so a retry still merges.
#[test]
fn long_ids_are_bounded_in_every_kind() {
    use super::bounded::{MAX_INDEXED_BYTES, bounded_form};
    let long = |c: char| c.to_string().repeat(3000);
    let (call, user) = (long('c'), long('u'));
    let body = serde_json::json!({
        "CallId": call, "UserId": user, "Role": "caller",
        "CallInfo": {"CallId": call},
        "CallRecord": {"CallId": call, "Caller_Account": user},
        "ChangedUserList": [{"User_Account": user, "ActionType": "Accept"}],
        "Callback": {"EventGroupId": 3, "EventType": 301,
                     "EventInfo": {"RoomId": long('r'), "TaskId": long('t')}},
    })
    .to_string();
    for (kind, command) in KINDS {
        let parse = || {
            parse_delivery(kind, true, &ctx(command), body.as_bytes())
                .unwrap_or_else(|r| panic!("{command}: {r}"))
        };
        let rows = parse();
        let r = &rows[0];
        assert_eq!(r.call_id, bounded_form(&call), "{command}");
        let notes = r.notes.as_deref().unwrap_or_default();
        assert!(notes.contains("call_id: 3000 bytes"), "{command}: {notes}");
        assert_eq!(r.payload.as_deref(), Some(body.as_str()), "{command}");
        for row in &rows {
            for text in [&row.call_id, &row.user_id, &row.room_id, &row.trtc.task_id]
                .into_iter()
                .flatten()
            {
                assert!(text.len() <= MAX_INDEXED_BYTES, "{command}: {text}");
            }
        }
        let keys = |rows: &[super::EventRow]| rows.iter().map(|r| r.dedupe_key).collect::<Vec<_>>();
        assert_eq!(keys(&rows), keys(&parse()), "{command}: a retry merges");
    }
}

/// A time a day ahead of one delivery's arrival is not plausible for it and is for a retry
/// ten seconds later: the columns differ, but every kind's rows keep the same own day (the
/// body's), which is PostgreSQL's partition key, so the retry meets the first delivery's row.
#[test]
fn the_own_day_does_not_depend_on_the_arrival() {
    let first = ctx("x").received_at;
    let ahead = first + 86_400_000 + 5_000;
    let body = serde_json::json!({
        "CallId": "c-ahead", "UserId": "u1", "Role": "caller", "CallResult": "normal_end",
        "StartCallTs": ahead, "AcceptTs": ahead, "EndTs": ahead, "EventTime": ahead,
        "CallInfo": {"CallId": "c-ahead"},
        "UserList": [{"User_Account": "u1", "Status": "Calling"}],
        "ChangedUserList": [{"User_Account": "u1", "ActionType": "Accept"}],
        "CallRecord": {"CallId": "c-ahead", "Caller_Account": "u1",
                       "StartTime": ahead, "AcceptTime": ahead, "EndTime": ahead},
    })
    .to_string();
    for (kind, command) in KINDS {
        let rows_at = |received_at| {
            let c = Context {
                received_at,
                ..ctx(command)
            };
            parse_delivery(kind, false, &c, body.as_bytes())
                .unwrap_or_else(|e| panic!("{command}: {e:?}"))
        };
        let (early, late) = (rows_at(first), rows_at(first + 10_000));
        assert_eq!(early.len(), late.len(), "{command}");
        for (a, b) in early.iter().zip(&late) {
            assert_eq!(a.dedupe_key, b.dedupe_key, "{command}");
            assert_eq!(a.own_day, Some(ahead / 86_400_000), "{command}");
            assert_eq!(b.own_day, a.own_day, "{command}");
        }
        if kind == Kind::Status {
            assert_eq!(
                early[0].event_time, None,
                "a day ahead of the first arrival"
            );
            assert_eq!(
                late[0].event_time,
                Some(ahead),
                "within a day of the retry's"
            );
        }
    }
}
