use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::auth::trtc::verify;
use crate::protocol::CallbackQuery;
use crate::protocol::trtc::{RoomIdKind, TrtcEvent, TrtcGroup, parse_trtc};
use crate::protocol::v4_record::parse_record_changed;
use crate::send::generate::{CallOutcome, Generator};

const END: i64 = 1_764_460_800;
const KEY: &[u8] = b"0123456789abcdefghijABCDEFGHIJxy";

fn opts() -> TrtcRender<'static> {
    TrtcRender {
        sdkappid: 1_400_000_001,
        key: Some(KEY),
        recording_percent: RECORDING_PERCENT,
    }
}

fn rendered(call: &Call) -> Vec<TrtcDelivery> {
    let mut out = Vec::new();
    render_trtc(call, &opts(), &mut out);
    out
}

/// The TRTC deliveries of a call, parsed (every one without a note), in the order the events
/// happened (TRTC's sending delays may swap close events).
fn events(deliveries: &[TrtcDelivery]) -> Vec<TrtcEvent> {
    let mut evs: Vec<TrtcEvent> = deliveries
        .iter()
        .filter(|d| d.query.is_none())
        .map(|d| {
            let ev = parse_trtc(d.body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", d.body));
            assert_eq!(ev.notes, Vec::<String>::new(), "{}", d.body);
            assert_eq!(ev.family(), d.family);
            assert_eq!(ev.event_type, Some(d.event_type));
            assert_eq!(ev.callback_ts_ms, Some(d.at));
            ev
        })
        .collect();
    evs.sort_by_key(|e| e.event_ts_ms);
    evs
}

#[test]
fn every_trtc_callback_is_signed_over_its_bytes_and_parses() {
    let mut types = HashSet::new();
    let mut families = BTreeMap::new();
    for call in Generator::new(5, 1_500, END) {
        let out = rendered(&call);
        assert!(out.windows(2).all(|w| w[0].at <= w[1].at), "sent in order");
        for d in &out {
            *families.entry(d.family).or_insert(0) += 1;
            if d.query.is_some() {
                assert_eq!(d.sign, None, "the v4 family is not signed");
                continue;
            }
            assert!(d.body.starts_with("{\n\t\"EventGroupId\":\t"), "{}", d.body);
            let sign = d.sign.as_deref().unwrap_or_default();
            assert_eq!(
                verify(KEY, d.body.as_bytes(), Some(sign.as_bytes())),
                Ok(())
            );
            assert!(verify(b"other", d.body.as_bytes(), Some(sign.as_bytes())).is_err());
        }
        for ev in events(&out) {
            types.insert(ev.event_type.unwrap_or_default());
            assert!(ev.event_name.is_some());
            assert_eq!(ev.room_id.as_deref(), Some(call.room_id.as_str()));
            let at = ev.event_ts_ms.unwrap_or_default();
            assert!(call.start() <= at, "{ev:?}\n{call:?}");
            assert!(at <= call.end() + 300_000, "{ev:?}\n{call:?}");
            assert!(ev.callback_ts_ms.unwrap_or_default() > at);
            let kind = if call.room_id_numeric {
                RoomIdKind::Number
            } else {
                RoomIdKind::String
            };
            if ev.group != Some(TrtcGroup::Recording) {
                assert_eq!(ev.room_id_kind, Some(kind), "the client's type");
            }
        }
    }
    let mut types: Vec<i64> = types.into_iter().collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            101, 102, 103, 104, 201, 202, 203, 204, 205, 206, 301, 302, 311, 312
        ],
        "every event a call's room makes (105 needs a live-streaming role change)"
    );
    assert_eq!(
        families.keys().copied().collect::<Vec<_>>(),
        ["media", "recording", "room", "v4"]
    );
}

#[test]
fn without_a_key_nothing_is_signed() {
    for call in Generator::new(6, 50, END) {
        let mut out = Vec::new();
        render_trtc(
            &call,
            &TrtcRender {
                key: None,
                ..opts()
            },
            &mut out,
        );
        assert!(!out.is_empty());
        assert!(out.iter().all(|d| d.sign.is_none()));
        let signed: Vec<String> = rendered(&call).into_iter().map(|d| d.body).collect();
        let unsigned: Vec<String> = out.into_iter().map(|d| d.body).collect();
        assert_eq!(signed, unsigned, "the same bodies");
    }
}

#[test]
fn rendering_is_deterministic() {
    let calls: Vec<Call> = Generator::new(7, 100, END).collect();
    for c in &calls {
        assert_eq!(rendered(c), rendered(c));
    }
}

/// Who was in the room, from the events: user → (entered, left, exit reason).
fn presence(evs: &[TrtcEvent]) -> BTreeMap<String, (i64, i64, i64)> {
    let mut out = BTreeMap::new();
    for ev in evs {
        let user = ev.user_id.clone().unwrap_or_default();
        let at = ev.event_ts_ms.unwrap_or_default();
        match ev.event_type {
            Some(103) => {
                assert!(out.insert(user, (at, 0, 0)).is_none(), "one entry each");
            }
            Some(104) => {
                let stay = out
                    .get_mut(&user)
                    .unwrap_or_else(|| panic!("{user} left unseen"));
                assert_eq!(stay.1, 0, "one exit each");
                *stay = (stay.0, at, ev.reason.unwrap_or_default());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn presence_follows_the_call() {
    for call in Generator::new(9, 2_000, END) {
        let evs = events(&rendered(&call));
        let room: Vec<&TrtcEvent> = evs
            .iter()
            .filter(|e| e.group == Some(TrtcGroup::Room))
            .collect();
        let (first, last) = (room[0], room[room.len() - 1]);
        assert_eq!(first.event_type, Some(101), "{call:?}");
        assert_eq!(last.event_type, Some(102), "{call:?}");
        let stays = presence(&evs);
        let created = first.event_ts_ms.unwrap_or_default();
        let dismissed = last.event_ts_ms.unwrap_or_default();
        // Exactly the caller and everyone who answered or joined were in the room.
        let mut expected: Vec<&str> = vec![call.people[0].user_id.as_str()];
        for s in &call.steps {
            if matches!(s.act, Act::Accept | Act::Join) {
                expected.push(&call.people[s.who].user_id);
            }
        }
        expected.sort_unstable();
        assert_eq!(
            stays.keys().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
        for (user, &(entered, left, reason)) in &stays {
            assert!(
                created <= entered && entered < left && left < dismissed,
                "{user}"
            );
            assert!(reason == 1 || reason == 2);
            // Entered within a second of answering (or calling), left within a second of
            // the call ending for them — or 8 to 20 s later, timed out.
            let who = call
                .people
                .iter()
                .position(|p| &p.user_id == user)
                .unwrap_or_default();
            let began = call
                .steps
                .iter()
                .find(|s| s.who == who && matches!(s.act, Act::StartCall | Act::Accept | Act::Join))
                .map_or(0, |s| s.at);
            assert!((began..began + 1_000).contains(&entered), "{user} {call:?}");
            let ended = call
                .steps
                .iter()
                .filter(|s| {
                    s.who == who
                        && matches!(
                            s.act,
                            Act::Hangup | Act::Ended | Act::Cancel | Act::Interrupt | Act::Fail
                        )
                })
                .map(|s| (s.at, s.act))
                .next_back()
                .unwrap_or((call.end(), Act::Ended));
            let lost = matches!(ended.1, Act::Interrupt | Act::Fail);
            assert_eq!(reason, if lost { 2 } else { 1 }, "{user} {call:?}");
            let window = if lost { 8_000..20_001 } else { 0..1_000 };
            assert!(window.contains(&(left - ended.0)), "{user} {call:?}");
        }
        // Media: per user, on and off alternate, starting on, all inside the stay; an exit
        // sends no stop.
        let mut media: BTreeMap<(String, i64), Vec<(i64, bool)>> = BTreeMap::new();
        for ev in evs.iter().filter(|e| e.group == Some(TrtcGroup::Media)) {
            let t = ev.event_type.unwrap_or_default();
            let kind = t - (t + 1) % 2; // 201/202 → 201, 203/204 → 203, …
            let on = t % 2 == 1;
            media
                .entry((ev.user_id.clone().unwrap_or_default(), kind))
                .or_default()
                .push((ev.event_ts_ms.unwrap_or_default(), on));
        }
        for ((user, kind), switches) in &media {
            let (entered, left, _) = stays[user];
            assert!(switches.iter().all(|&(at, _)| entered < at && at < left));
            assert!(switches.windows(2).all(|w| w[0].0 < w[1].0));
            let ons: Vec<bool> = switches.iter().map(|s| s.1).collect();
            let alternating: Vec<bool> = (0..ons.len()).map(|i| i % 2 == 0).collect();
            assert_eq!(ons, alternating, "{user} {kind}");
        }
        for (user, &(entered, left, _)) in &stays {
            if left - entered > 1_000 {
                assert!(media.contains_key(&(user.clone(), 203)), "everyone speaks");
                assert_eq!(media.contains_key(&(user.clone(), 201)), call.video);
            }
        }
    }
}

#[test]
fn unanswered_calls_only_have_the_caller() {
    let mut seen = 0;
    for call in Generator::new(10, 1_000, END) {
        if call.accepted().is_some() {
            continue;
        }
        seen += 1;
        let out = rendered(&call);
        let stays = presence(&events(&out));
        assert_eq!(
            stays.keys().collect::<Vec<_>>(),
            [&call.people[0].user_id],
            "{:?}",
            call.outcome
        );
        assert!(
            out.iter()
                .all(|d| d.family == "room" || d.family == "media"),
            "no recording without an answer"
        );
    }
    assert!(seen > 100, "{seen}");
}

#[test]
fn recordings_are_linked_to_their_call() {
    let (mut connected, mut recorded) = (0, 0);
    for call in Generator::new(11, 3_000, END) {
        let out = rendered(&call);
        let evs = events(&out);
        let recording: Vec<&TrtcEvent> = evs
            .iter()
            .filter(|e| e.group == Some(TrtcGroup::Recording))
            .collect();
        let Some(accepted) = call.accepted() else {
            assert!(recording.is_empty());
            continue;
        };
        connected += 1;
        if recording.is_empty() {
            continue;
        }
        recorded += 1;
        let types: Vec<i64> = recording.iter().filter_map(|e| e.event_type).collect();
        assert_eq!(types, [301, 302, 311, 312]);
        let task = recording[0].task_id.clone();
        assert!(
            task.as_deref()
                .is_some_and(|t| t.len() == 75 && t.ends_with('.'))
        );
        assert!(recording.iter().all(|e| e.task_id == task));
        let started = recording[0].event_ts_ms.unwrap_or_default();
        assert!((accepted + 1_000..=accepted + 3_000).contains(&started));
        assert_eq!(recording[1].leave_code, Some(0));
        let stays = presence(&evs);
        let last_left = stays.values().map(|s| s.1).max().unwrap_or_default();
        let stopped = recording[1].event_ts_ms.unwrap_or_default();
        assert!(stopped > last_left, "the recorder leaves last");
        let dismissed = evs
            .iter()
            .find(|e| e.event_type == Some(102))
            .and_then(|e| e.event_ts_ms)
            .unwrap_or_default();
        assert!(
            dismissed > stopped,
            "the room empties when the recorder leaves"
        );
        let files: serde_json::Value =
            serde_json::from_str(recording[2].files.as_deref().unwrap_or("null"))
                .unwrap_or_default();
        assert_eq!(files["TencentVod"]["EndTimeStamp"], last_left);
        // The record-changed callbacks: v4 style, to the call URL, for 301, 311 and 312.
        let linked: Vec<&TrtcDelivery> = out.iter().filter(|d| d.family == "v4").collect();
        assert_eq!(
            linked.iter().map(|d| d.event_type).collect::<Vec<_>>(),
            [301, 311, 312]
        );
        for d in linked {
            let q = CallbackQuery::parse(d.query.as_deref().unwrap_or_default());
            assert!(q.v4_style);
            assert_eq!(q.command.as_deref(), Some(RECORD_CHANGED));
            assert_eq!(q.sdkappid().ok(), Some(1_400_000_001));
            let r = parse_record_changed(d.body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.notes, Vec::<String>::new());
            assert_eq!(r.call_id.as_deref(), Some(call.call_id.as_str()));
            assert_eq!(r.kit_type, Some(2));
            assert_eq!(r.event_time_ms, Some(d.at));
            let inner = r.recording.unwrap_or_default();
            assert_eq!(inner.task_id, task);
            assert_eq!(inner.event_type, Some(d.event_type));
            assert!(inner.callback_ts_ms < r.event_time_ms);
        }
    }
    let share = recorded * 100 / connected;
    assert!((20..=30).contains(&share), "{share} % of {connected}");
    let none = TrtcRender {
        recording_percent: 0,
        ..opts()
    };
    for call in Generator::new(12, 200, END) {
        let mut out = Vec::new();
        render_trtc(&call, &none, &mut out);
        assert!(out.iter().all(|d| d.family != "recording"));
    }
}

#[test]
fn interrupted_calls_time_out() {
    let mut seen = 0;
    for call in Generator::new(13, 5_000, END) {
        let Some(lost) = call.steps.iter().find(|s| s.act == Act::Interrupt) else {
            continue;
        };
        assert_eq!(call.outcome, CallOutcome::Interrupt);
        seen += 1;
        let stays = presence(&events(&rendered(&call)));
        assert_eq!(stays[&call.people[lost.who].user_id].2, 2);
        assert_eq!(stays[&call.people[1 - lost.who].user_id].2, 1);
    }
    assert!(seen > 20, "{seen}");
}

#[test]
fn cjson_layout() {
    let j = J::Obj(vec![
        ("A", J::Num(1)),
        (
            "B",
            J::Obj(vec![
                ("C", J::Raw("12".into())),
                ("D", J::Str("x\"y".into())),
            ]),
        ),
    ]);
    assert_eq!(
        j.to_cjson(),
        "{\n\t\"A\":\t1,\n\t\"B\":\t{\n\t\t\"C\":\t12,\n\t\t\"D\":\t\"x\\\"y\"\n\t}\n}"
    );
    assert_eq!(
        j.to_compact(),
        "{\"A\":1,\"B\":{\"C\":12,\"D\":\"x\\\"y\"}}"
    );
}
