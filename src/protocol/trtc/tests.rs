use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/trtc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(body: &[u8]) -> TrtcEvent {
    parse_trtc(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// A fixture, which must parse without a note.
fn clean(name: &str) -> TrtcEvent {
    let ev = parse(&fixture(name));
    assert_eq!(ev.notes, Vec::<String>::new(), "{name}");
    ev
}

const ROOM: Option<&str> = Some("48213907");
const T0: i64 = 1_764_403_200_120;
const RECORDER: Option<&str> = Some("callkit_1400000001_record_48213907");
const TASK: Option<&str> = Some("Qm9vZ2llLXJlY29yZC10YXNrLTAx.AbCd-ef");

/// A room or media event of user `user` at `T0 + offset` ms, sent 37 ms later.
fn room_event(group: TrtcGroup, t: i64, name: &str, offset: i64, user: &str) -> TrtcEvent {
    TrtcEvent {
        group: Some(group),
        event_type: Some(t),
        event_name: event_name(t),
        callback_ts_ms: Some(T0 + offset + 37),
        room_id: ROOM.map(str::to_owned),
        room_id_kind: Some(RoomIdKind::Number),
        event_ts_ms: Some(T0 + offset),
        user_id: Some(user.to_owned()),
        ..TrtcEvent::default()
    }
    .named(name)
}

impl TrtcEvent {
    /// Checks the documented name along the way.
    fn named(self, name: &str) -> Self {
        assert_eq!(self.event_name, Some(name), "{:?}", self.event_type);
        self
    }
}

#[test]
fn room_events() {
    use TrtcGroup::Room;
    assert_eq!(
        clean("101-create-room.json"),
        room_event(Room, 101, "create_room", 0, "user_0042")
    );
    assert_eq!(
        clean("102-dismiss-room.json"),
        TrtcEvent {
            user_id: None,
            room_id_kind: Some(RoomIdKind::String),
            ..room_event(Room, 102, "dismiss_room", 185_000, "")
        }
    );
    assert_eq!(
        clean("103-enter-room.json"),
        TrtcEvent {
            unique_id: Some("1764403209311".to_owned()),
            role: Some(20),
            terminal_type: Some(2),
            user_type: Some(3),
            reason: Some(1),
            ..room_event(Room, 103, "enter_room", 9_400, "user_0317")
        }
    );
    assert_eq!(
        clean("104-exit-room.json"),
        TrtcEvent {
            unique_id: Some("1764403209311".to_owned()),
            role: Some(20),
            reason: Some(2),
            ..room_event(Room, 104, "exit_room", 183_250, "user_0317")
        }
    );
    assert_eq!(
        clean("105-change-role.json"),
        TrtcEvent {
            role: Some(21),
            ..room_event(Room, 105, "change_role", 60_010, "user_0317")
        }
    );
}

#[test]
fn media_events() {
    use TrtcGroup::Media;
    let stop = |e: TrtcEvent| TrtcEvent {
        reason: Some(0),
        ..e
    };
    for (file, want) in [
        (
            "201-start-video.json",
            room_event(Media, 201, "start_video", 9_900, "user_0317"),
        ),
        (
            "202-stop-video.json",
            stop(room_event(Media, 202, "stop_video", 70_100, "user_0317")),
        ),
        (
            "203-start-audio.json",
            room_event(Media, 203, "start_audio", 9_850, "user_0317"),
        ),
        (
            "204-stop-audio.json",
            stop(room_event(Media, 204, "stop_audio", 95_000, "user_0317")),
        ),
        (
            "205-start-substream.json",
            room_event(Media, 205, "start_substream", 30_000, "user_0042"),
        ),
        (
            "206-stop-substream.json",
            stop(room_event(
                Media,
                206,
                "stop_substream",
                45_000,
                "user_0042",
            )),
        ),
    ] {
        assert_eq!(clean(file), want, "{file}");
    }
}

/// A recording event at `T0 + offset`, sent 156 ms later.
fn recording(t: i64, name: &str, offset: i64) -> TrtcEvent {
    TrtcEvent {
        group: Some(TrtcGroup::Recording),
        event_type: Some(t),
        event_name: event_name(t),
        callback_ts_ms: Some(T0 + offset + 156),
        room_id: ROOM.map(str::to_owned),
        room_id_kind: Some(RoomIdKind::String),
        event_ts_ms: Some(T0 + offset),
        user_id: RECORDER.map(str::to_owned),
        task_id: TASK.map(str::to_owned),
        ..TrtcEvent::default()
    }
    .named(name)
}

fn files(ev: &TrtcEvent) -> serde_json::Value {
    serde_json::from_str(ev.files.as_deref().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("files are JSON: {e}: {:?}", ev.files))
}

#[test]
fn recording_events() {
    let started = 10_500;
    assert_eq!(
        clean("301-recorder-start.json"),
        TrtcEvent {
            status: Some(0),
            ..recording(301, "recorder_start", started)
        },
        "EventTs as a string, as Tencent's 301 example sends it"
    );
    assert_eq!(
        clean("302-recorder-stop.json"),
        TrtcEvent {
            leave_code: Some(99),
            ..recording(302, "recorder_stop", 188_000)
        }
    );
    assert_eq!(
        clean("303-upload-start.json"),
        TrtcEvent {
            status: Some(0),
            ..recording(303, "upload_start", started + 400)
        }
    );
    let info = clean("304-file-info.json");
    assert_eq!(
        files(&info)["FileList"],
        "1400000001_48213907__UserId_s_Y2FsbGtpdA__UserId_e_main.m3u8"
    );
    assert_eq!(
        TrtcEvent {
            files: None,
            ..info
        },
        recording(304, "file_info", started + 12_000)
    );
    assert_eq!(
        clean("305-upload-stop.json"),
        TrtcEvent {
            leave_code: Some(0),
            ..recording(305, "upload_stop", 190_000)
        }
    );
    assert_eq!(
        clean("306-failover.json"),
        TrtcEvent {
            status: Some(0),
            ..recording(306, "failover", 80_000)
        }
    );
    let slice = clean("307-file-slice.json");
    assert_eq!(files(&slice)["UserId"], "user_0317", "the recorded user");
    assert_eq!(files(&slice)["TrackType"], "audio_video");
    assert_eq!(
        files(&slice)["BeginTimeStamp"],
        (T0 + started + 1_900).to_string()
    );
    assert_eq!(
        TrtcEvent {
            files: None,
            ..slice
        },
        recording(307, "file_slice", started + 2_000)
    );
    assert_eq!(
        clean("309-download-image-error.json"),
        recording(309, "download_image_error", started + 600)
    );
    let mp4 = clean("310-mp4-stop.json");
    assert_eq!(mp4.status, Some(0));
    assert_eq!(files(&mp4)["FileList"][0], "1400000001_48213907_mix.mp4");
    assert_eq!(files(&mp4)["FileMessage"][0]["MediaId"], "mix");
    assert_eq!(
        TrtcEvent {
            files: None,
            status: None,
            ..mp4
        },
        recording(310, "mp4_stop", 200_000)
    );
    let vod = clean("311-vod-commit.json");
    assert_eq!(vod.status, Some(0));
    assert_eq!(files(&vod)["TencentVod"]["FileId"], "5285890812345678901");
    assert_eq!(
        files(&vod)["TencentVod"]["EndTimeStamp"],
        T0 + 183_250,
        "numbers inside files are kept as sent"
    );
    assert_eq!(
        clean("312-vod-stop.json"),
        TrtcEvent {
            status: Some(0),
            ..recording(312, "vod_stop", 246_000)
        }
    );
}

#[test]
fn unknown_groups_and_types_are_kept() {
    let ev = clean("unknown-group-7.json");
    assert_eq!(ev.group, Some(TrtcGroup::Other(7)));
    assert_eq!(ev.family(), "trtc");
    assert_eq!(ev.event_type, Some(701));
    assert_eq!(ev.event_name, None);
    assert_eq!(ev.room_id.as_deref(), ROOM);
    assert_eq!(ev.event_ts_ms, Some(T0 + 450));
    let ev = clean("unknown-type-107.json");
    assert_eq!(ev.group, Some(TrtcGroup::Room));
    assert_eq!(ev.family(), "room");
    assert_eq!(ev.event_type, Some(107));
    assert_eq!(ev.event_name, None);
    assert_eq!(ev.role, Some(20));
}

#[test]
fn tencents_signature_example_body() {
    let ev = clean("sign-example-204.json");
    assert_eq!(ev.group, Some(TrtcGroup::Media));
    assert_eq!(ev.event_name, Some("stop_audio"));
    assert_eq!(ev.room_id.as_deref(), Some("8489"));
    assert_eq!(ev.event_ts_ms, Some(1_664_209_748_180));
    assert_eq!(ev.reason, Some(0));
}

#[test]
fn numbers_as_strings_and_ids_as_numbers() {
    let ev = parse(
        br#"{"EventGroupId":"1","EventType":" 104 ","CallbackTs":1.7644032e12,
            "EventInfo":{"RoomId":123456789012345678901234567890,"EventTs":"1764403200",
            "UserId":18446744073709551616123,"UniqueId":"u-1","Role":"20","Reason":2.0}}"#,
    );
    assert_eq!(ev.notes, Vec::<String>::new());
    assert_eq!(ev.group, Some(TrtcGroup::Room));
    assert_eq!(ev.event_type, Some(104));
    assert_eq!(ev.callback_ts_ms, Some(1_764_403_200_000));
    assert_eq!(
        ev.room_id.as_deref(),
        Some("123456789012345678901234567890"),
        "digit for digit"
    );
    assert_eq!(ev.room_id_kind, Some(RoomIdKind::Number));
    assert_eq!(
        ev.event_ts_ms,
        Some(1_764_403_200_000),
        "EventTs in seconds when there is no EventMsTs"
    );
    assert_eq!(ev.user_id.as_deref(), Some("18446744073709551616123"));
    assert_eq!(ev.unique_id.as_deref(), Some("u-1"));
    assert_eq!(ev.role, Some(20));
    assert_eq!(ev.reason, Some(2));
}

#[test]
fn event_ms_ts_wins_over_event_ts_and_aliases_are_read() {
    let ev = parse(br#"{"EventType":103,"EventInfo":{"EventTs":1,"EventMsTs":1764403200999}}"#);
    assert_eq!(ev.event_ts_ms, Some(1_764_403_200_999));
    // Tencent's relay and AI pages spell these two differently in places.
    let ev = parse(br#"{"EventGroupId":4,"EventType":401,"CallbackMsTs":1764403201000,"EventInfo":{"EventTsMs":1764403200999}}"#);
    assert_eq!(ev.event_ts_ms, Some(1_764_403_200_999));
    assert_eq!(ev.callback_ts_ms, Some(1_764_403_201_000));
    assert_eq!(ev.event_name, Some("cdn_status"));
    assert_eq!(ev.group, Some(TrtcGroup::Other(4)));
}

#[test]
fn every_field_is_read_on_its_own() {
    let ev = parse(
        br#"{"EventGroupId":{"a":1},"EventType":103,"CallbackTs":"soon",
            "EventInfo":{"RoomId":[1],"EventMsTs":-5,"EventTs":1764403200,"UserId":true,
            "Role":"anchor","TerminalType":1e400,"UserType":3,"Reason":null,"TaskId":""}}"#,
    );
    assert_eq!(
        ev.notes,
        vec![
            "EventGroupId: expected an integer, found an object",
            "EventGroupId: missing or unreadable; group 1 inferred from EventType 103",
            "CallbackTs: expected an integer, found the string \"soon\"",
            "EventInfo.RoomId: expected a string or a number, found an array",
            "EventInfo.EventMsTs: not a storable Unix time: -5",
            "EventInfo.UserId: expected a string or a number, found a boolean",
            "EventInfo.Role: expected an integer, found the string \"anchor\"",
            "EventInfo.TerminalType: expected an integer, found 1e400",
        ]
    );
    assert_eq!(ev.group, Some(TrtcGroup::Room));
    assert_eq!(ev.event_name, Some("enter_room"));
    assert_eq!(
        ev.event_ts_ms,
        Some(1_764_403_200_000),
        "EventTs still read"
    );
    assert_eq!(
        ev.user_type,
        Some(3),
        "the fields after the bad ones still read"
    );
    assert_eq!((ev.reason, ev.task_id.as_deref()), (None, None));
}

#[test]
fn duplicate_members_case_and_misplaced_types() {
    let ev = parse(
        br#"{"eventgroupid":2,"EVENTTYPE":103,"EventType":203,"EventInfo":{"userid":"a","UserId":"b"}}"#,
    );
    assert_eq!(ev.event_type, Some(203), "the last of a member given twice");
    assert_eq!(ev.user_id.as_deref(), Some("b"));
    assert_eq!(ev.group, Some(TrtcGroup::Media), "names ignore ASCII case");
    assert_eq!(
        ev.notes,
        vec![
            "EventType: given 2 times; the last one is used",
            "EventInfo.UserId: given 2 times; the last one is used",
        ]
    );
    let ev = parse(br#"{"EventGroupId":1,"EventType":203}"#);
    assert_eq!(ev.event_name, Some("start_audio"));
    assert_eq!(
        ev.notes,
        vec!["EventType: 203 is documented in group 2, not in group 1"]
    );
}

#[test]
fn missing_parts_are_absent_without_notes() {
    let ev = parse(b"{}");
    assert_eq!(ev, TrtcEvent::default());
    assert_eq!(ev.family(), "trtc");
    let ev = parse(br#"{"EventGroupId":1,"EventType":102,"EventInfo":null}"#);
    assert_eq!(ev.notes, Vec::<String>::new());
    let ev = parse(br#"{"EventGroupId":1,"EventType":102,"EventInfo":"x"}"#);
    assert_eq!(
        ev.notes,
        vec!["EventInfo: expected an object, found a string"]
    );
}

#[test]
fn text_that_no_column_can_hold() {
    let ev = parse(br#"{"EventInfo":{"UserId":"a\u0000b","TaskId":"\ud800","RoomId":"r"}}"#);
    assert_eq!(ev.user_id.as_deref(), Some("a\u{FFFD}b"));
    assert_eq!(ev.task_id, None);
    assert_eq!(
        ev.room_id.as_deref(),
        Some("r"),
        "the next field still reads"
    );
    assert_eq!(ev.notes.len(), 2, "{:?}", ev.notes);
    assert_eq!(
        ev.notes[0],
        "EventInfo.UserId: contains NUL, stored as U+FFFD"
    );
    assert!(
        ev.notes[1].starts_with("EventInfo.TaskId: unreadable string: "),
        "{:?}",
        ev.notes
    );
}

#[test]
fn only_a_body_that_is_no_json_object_is_refused() {
    assert_eq!(
        parse_trtc(b"\xff{}"),
        Err(BodyError::NotUtf8 { valid_up_to: 0 })
    );
    assert_eq!(parse_trtc(b" \n"), Err(BodyError::Empty));
    assert!(
        matches!(parse_trtc(b"\x0b\n"), Err(BodyError::NotJson(_))),
        "a vertical tab is no JSON whitespace (found by fuzzing)"
    );
    assert_eq!(parse_trtc(b""), Err(BodyError::Empty));
    assert!(matches!(parse_trtc(b"{"), Err(BodyError::NotJson(_))));
    assert!(matches!(parse_trtc(b"{} x"), Err(BodyError::NotJson(_))));
    assert_eq!(
        parse_trtc(b"[1,2]"),
        Err(BodyError::NotAnObject("an array"))
    );
    assert_eq!(parse_trtc(b"42"), Err(BodyError::NotAnObject("a number")));
    assert_eq!(
        parse_trtc(b"\xEF\xBB\xBF{\"EventType\":101}").map(|e| e.event_name),
        Ok(Some("create_room")),
        "a byte-order mark is skipped"
    );
    assert_eq!(
        BodyError::NotAnObject("an array").to_string(),
        "body is an array, not a JSON object"
    );
}

#[test]
fn identity_ignores_the_sending_time() {
    let a = parse(&fixture("103-enter-room.json"));
    let text = String::from_utf8(fixture("103-enter-room.json")).unwrap_or_default();
    let retry = parse(text.replace("1764403209557", "1764403219601").as_bytes());
    assert_ne!(a.callback_ts_ms, retry.callback_ts_ms);
    assert_eq!(a.identity(1), retry.identity(1));
    assert_ne!(a.identity(1), a.identity(2), "per app");
    let other_user = parse(text.replace("user_0317", "user_0318").as_bytes());
    assert_ne!(a.identity(1), other_user.identity(1));
    let exit = parse(&fixture("104-exit-room.json"));
    assert_ne!(a.identity(1), exit.identity(1));
}

#[test]
fn vocabulary_names() {
    assert_eq!(role_name(20), Some("anchor"));
    assert_eq!(role_name(21), Some("audience"));
    assert_eq!(role_name(0), None);
    assert_eq!(terminal_type_name(3), Some("ios"));
    assert_eq!(terminal_type_name(100), Some("other"));
    assert_eq!(user_type_name(2), Some("mini_program"));
    assert_eq!(exit_reason_name(2), Some("timeout"));
    assert_eq!(exit_reason_name(5), Some("process_killed"));
    assert_eq!(enter_reason_name(2), Some("network_change"));
    let mut numbers: Vec<i64> = EVENT_NAMES.iter().map(|(n, _)| *n).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), EVENT_NAMES.len(), "each type named once");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(event_name(308), None, "not documented");
}
