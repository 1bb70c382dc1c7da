//! The TRTC callbacks a generated call's room produces (issue 16): room and media events,
//! cloud-recording events for some calls, and the `Call.CallbackAfterRecordChanged` v4
//! callbacks that link those calls to their recording task.
//!
//! From a [`Call`]'s timeline: the caller enters the room when calling, each callee when
//! answering (or joining), everyone leaves when their part of the call ends (an interrupted
//! participant later, by timeout); audio starts on entry, video too in video calls, and some
//! participants mute or turn the camera off for a while. TRTC reports an exit with 104 only
//! (no 202/204). The room is created with the first entry and dismissed after the last exit.
//! A recorded call gets 301 (recorder started) after the answer, 302 (recorder left) after
//! the call, then 311 (file committed to VOD) and 312 (VOD task over).
//!
//! Bodies are laid out as TRTC sends them (cJSON's tabs and newlines), and signed over those
//! exact bytes when a key is given. All randomness comes from the call id, so a call always
//! renders the same way.

use super::generate::{Act, Call, Platform, Rng, v4_query};
use crate::auth::trtc::sign;
use crate::protocol::Family;
use crate::protocol::command::RECORD_CHANGED;
use crate::protocol::trtc::TrtcGroup;
use crate::protocol::trtc::event_type::{
    CREATE_ROOM, DISMISS_ROOM, ENTER_ROOM, EXIT_ROOM, RECORDER_START, RECORDER_STOP, START_AUDIO,
    START_SUBSTREAM, START_VIDEO, STOP_AUDIO, STOP_SUBSTREAM, STOP_VIDEO, VOD_COMMIT, VOD_STOP,
};

/// The `Content-Type` of TRTC's callbacks (and of the v4 family).
pub const CONTENT_TYPE: &str = "application/json";

/// One HTTP request of TRTC's sender, or of TUICallKit's for the record-changed callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrtcDelivery {
    /// `room`, `media`, `recording`, or `v4` (record changed, to the call-callback URL).
    pub family: &'static str,
    /// The `EventType` (of the wrapped event, for `v4`).
    pub event_type: i64,
    /// When it is sent (`CallbackTs`, or the v4 `EventTime`), Unix ms; deliveries are sent in
    /// this order.
    pub at: i64,
    pub body: String,
    /// The `Sign` header: TRTC callbacks, when a key is given.
    pub sign: Option<String>,
    /// Tencent's query (v4 style) for the call-callback URL; `None`: the TRTC URL, no query.
    pub query: Option<String>,
}

/// How to render.
#[derive(Clone, Copy, Debug)]
pub struct TrtcRender<'a> {
    pub sdkappid: i64,
    /// The TRTC console's callback key; without it, nothing is signed.
    pub key: Option<&'a [u8]>,
    /// Share of connected calls that are recorded, in %.
    pub recording_percent: u64,
}

/// Default share of connected calls with a cloud recording.
pub const RECORDING_PERCENT: u64 = 25;

/// Renders the TRTC callbacks of one call, in the order they are sent.
pub fn render_trtc(call: &Call, opts: &TrtcRender<'_>, out: &mut Vec<TrtcDelivery>) {
    let mut rng = Rng::new(seed_of(&call.call_id));
    let stays = stays(call, &mut rng);
    let Some(first) = stays.iter().map(|s| s.entered).min() else {
        return;
    };
    let mut r = Room {
        call,
        opts,
        rng,
        out: Vec::new(),
    };
    r.room(CREATE_ROOM, first - 1, Some(0), &[]);
    for s in &stays {
        let person = &call.people[s.who];
        let (terminal, user_type) = device(person.platform);
        let entered = [
            ("Role", J::Num(20)),
            ("TerminalType", J::Num(terminal)),
            ("UserType", J::Num(user_type)),
            ("Reason", J::Num(1)),
        ];
        r.room(ENTER_ROOM, s.entered, Some(s.who), &entered);
        r.media(s);
        r.room(
            EXIT_ROOM,
            s.left,
            Some(s.who),
            &[("Role", J::Num(20)), ("Reason", J::Num(s.reason))],
        );
    }
    let last_left = stays.iter().map(|s| s.left).max().unwrap_or(first);
    let mut empty_at = last_left;
    if let Some(accepted) = call.accepted()
        && r.rng.percent(opts.recording_percent)
    {
        empty_at = r.recording(accepted, last_left);
    }
    let dismissed = empty_at + r.rng.between(200, 1_500);
    r.room(DISMISS_ROOM, dismissed, None, &[]);
    r.out.sort_by_key(|d| d.at);
    out.append(&mut r.out);
}

/// One participant's time in the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stay {
    who: usize,
    entered: i64,
    left: i64,
    /// The exit `Reason`: 1 left, 2 timed out.
    reason: i64,
}

/// Who was in the room, from when to when: the caller from the call's start, callees from
/// answering or joining; a participant leaves with their last act (a lost connection is
/// noticed 8 to 20 s later), or at the end of the call.
fn stays(call: &Call, rng: &mut Rng) -> Vec<Stay> {
    let n = call.people.len();
    let mut entered: Vec<Option<i64>> = vec![None; n];
    let mut left: Vec<Option<(i64, i64)>> = vec![None; n];
    for s in &call.steps {
        match s.act {
            Act::StartCall | Act::Accept | Act::Join => {
                entered[s.who] = Some(s.at + rng.between(150, 700));
            }
            Act::Hangup | Act::Ended | Act::Cancel if entered[s.who].is_some() => {
                left[s.who].get_or_insert((s.at + rng.between(50, 400), 1));
            }
            Act::Interrupt | Act::Fail if entered[s.who].is_some() => {
                left[s.who].get_or_insert((s.at + rng.between(8_000, 20_000), 2));
            }
            _ => {}
        }
    }
    let end = call.end();
    (0..n)
        .filter_map(|who| {
            let entered = entered[who]?;
            let (at, reason) = left[who].unwrap_or((end + rng.between(50, 400), 1));
            Some(Stay {
                who,
                entered,
                left: at.max(entered + 100),
                reason,
            })
        })
        .collect()
}

/// `TerminalType` and `UserType` of a platform: phones run the native SDK, the web and mini
/// programs their own.
fn device(platform: Platform) -> (i64, i64) {
    match platform {
        Platform::Ios => (3, 3),
        Platform::Android => (2, 3),
        Platform::Web => (1, 1),
        Platform::MiniProgram => (2, 2),
    }
}

/// FNV-1a over the call id: a stable seed per call.
fn seed_of(call_id: &str) -> u64 {
    call_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Room<'c, 'o> {
    call: &'c Call,
    opts: &'o TrtcRender<'o>,
    rng: Rng,
    out: Vec<TrtcDelivery>,
}

impl Room<'_, '_> {
    /// `RoomId` with the type the client uses.
    fn room_id(&self) -> J {
        if self.call.room_id_numeric {
            J::Raw(self.call.room_id.clone())
        } else {
            J::Str(self.call.room_id.clone())
        }
    }

    /// A room (1xx) or media (2xx) event at `at` about `who` (none for 102).
    fn room(&mut self, event_type: i64, at: i64, who: Option<usize>, extra: &[(&'static str, J)]) {
        let mut info = vec![
            ("RoomId", self.room_id()),
            ("EventTs", J::Num(at / 1000)),
            ("EventMsTs", J::Num(at)),
        ];
        if let Some(who) = who {
            info.push(("UserId", J::Str(self.call.people[who].user_id.clone())));
        }
        info.extend(extra.iter().cloned());
        self.trtc(event_type, at, info);
    }

    /// A TRTC callback of `event_type` at `at`; its group (and family) is the type's
    /// hundreds.
    fn trtc(&mut self, event_type: i64, at: i64, info: Vec<(&'static str, J)>) {
        // TRTC sends a moment after the event.
        let sent = at + self.rng.between(20, 300);
        let group = event_type / 100;
        let family = TrtcGroup::from_id(group).family();
        let body = J::Obj(vec![
            ("EventGroupId", J::Num(group)),
            ("EventType", J::Num(event_type)),
            ("CallbackTs", J::Num(sent)),
            ("EventInfo", J::Obj(info)),
        ])
        .to_cjson();
        let sign = self.opts.key.map(|k| sign(k, body.as_bytes()));
        self.out.push(TrtcDelivery {
            family,
            event_type,
            at: sent,
            body,
            sign,
            query: None,
        });
    }

    /// Audio on just after entry (unless the user is gone by then), video on too in video
    /// calls; now and then, in stays over a minute, a mute, the camera off for a while, or a
    /// screen share. An exit sends no stop.
    fn media(&mut self, s: &Stay) {
        let user = Some(s.who);
        let audio_on = s.entered + self.rng.between(100, 600);
        if audio_on < s.left {
            self.room(START_AUDIO, audio_on, user, &[]);
        }
        let video = self.call.video;
        let video_on = s.entered + self.rng.between(200, 900);
        if video && video_on < s.left {
            self.room(START_VIDEO, video_on, user, &[]);
        }
        if s.left - s.entered > 60_000 {
            self.pause(s, STOP_AUDIO, START_AUDIO, 15);
            if video {
                self.pause(s, STOP_VIDEO, START_VIDEO, 15);
                self.share(s);
            }
        }
    }

    /// With `pct` % chance, `off` somewhere in the middle of a stay, `on` again a few
    /// seconds later (unless the stay is over by then).
    fn pause(&mut self, s: &Stay, off: i64, on: i64, pct: u64) {
        if !self.rng.percent(pct) {
            return;
        }
        let at = self.rng.between(s.entered + 20_000, s.left - 30_000);
        self.room(off, at, Some(s.who), &[("Reason", J::Num(0))]);
        let back = at + self.rng.between(3_000, 20_000);
        if back < s.left - 1_000 {
            self.room(on, back, Some(s.who), &[]);
        }
    }

    /// With 3 % chance, a screen share (the substream) in the middle of a stay; it may last
    /// until the exit, which stops it without a 206.
    fn share(&mut self, s: &Stay) {
        if !self.rng.percent(3) {
            return;
        }
        let at = self.rng.between(s.entered + 20_000, s.left - 30_000);
        self.room(START_SUBSTREAM, at, Some(s.who), &[]);
        let done = at + self.rng.between(10_000, 60_000);
        if done < s.left - 1_000 {
            self.room(STOP_SUBSTREAM, done, Some(s.who), &[("Reason", J::Num(0))]);
        }
    }

    /// The cloud recording of a connected call and its record-changed callbacks; returns
    /// when the recorder left the room.
    fn recording(&mut self, accepted: i64, last_left: i64) -> i64 {
        let rng = &mut self.rng;
        const TASK_CHARS: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut task: String = (0..74)
            .map(|_| char::from(TASK_CHARS[rng.below(TASK_CHARS.len() as u64) as usize]))
            .collect();
        task.push('.');
        let recorder = format!(
            "callkit_{}_record_{}",
            self.opts.sdkappid, self.call.room_id
        );
        let started = accepted + rng.between(1_000, 3_000);
        // TUICallKit stops the recording when the call ends (LeaveCode 0: stopped normally).
        let stopped = last_left + rng.between(1_000, 5_000);
        let committed = stopped + rng.between(30_000, 120_000);
        let over = committed + rng.between(500, 3_000);
        let file_id = 5_285_890_000_000_000_000 + rng.below(999_999_999_999_999) as i64;
        let file = format!("{}_{}_mix.mp4", self.opts.sdkappid, self.call.room_id);
        let vod = J::Obj(vec![
            ("UserId", J::Str(String::new())),
            (
                "TrackType",
                J::Str(
                    if self.call.video {
                        "audio_video"
                    } else {
                        "audio"
                    }
                    .to_owned(),
                ),
            ),
            ("MediaId", J::Str("mix".to_owned())),
            ("FileId", J::Str(file_id.to_string())),
            (
                "VideoUrl",
                J::Str(format!(
                    "https://{}.vod2.example.com/{file_id}/f0.mp4",
                    self.opts.sdkappid
                )),
            ),
            ("CacheFile", J::Str(file)),
            ("StartTimeStamp", J::Num(started + rng.between(500, 1_500))),
            ("EndTimeStamp", J::Num(last_left)),
        ]);
        let events = [
            (RECORDER_START, started, vec![("Status", J::Num(0))]),
            (RECORDER_STOP, stopped, vec![("LeaveCode", J::Num(0))]),
            (
                VOD_COMMIT,
                committed,
                vec![("Status", J::Num(0)), ("TencentVod", vod)],
            ),
            (VOD_STOP, over, vec![("Status", J::Num(0))]),
        ];
        for (event_type, at, payload) in events {
            let info = vec![
                ("RoomId", J::Str(self.call.room_id.clone())),
                ("EventTs", J::Num(at / 1000)),
                ("EventMsTs", J::Num(at)),
                ("UserId", J::Str(recorder.clone())),
                ("TaskId", J::Str(task.clone())),
                ("Payload", J::Obj(payload)),
            ];
            if event_type != RECORDER_STOP {
                self.record_changed(event_type, at, &info);
            }
            self.trtc(event_type, at, info);
        }
        stopped
    }

    /// `Call.CallbackAfterRecordChanged` for a recording event, to the call-callback URL.
    fn record_changed(&mut self, event_type: i64, at: i64, info: &[(&'static str, J)]) {
        let callback_ts = at + self.rng.between(20, 150);
        let sent = callback_ts + self.rng.between(20, 120);
        let body = J::Obj(vec![
            ("CallId", J::Str(self.call.call_id.clone())),
            (
                "Callback",
                J::Obj(vec![
                    ("EventGroupId", J::Num(3)),
                    ("EventType", J::Num(event_type)),
                    ("CallbackTs", J::Num(callback_ts)),
                    ("EventInfo", J::Obj(info.to_vec())),
                    ("KitType", J::Num(2)),
                ]),
            ),
            ("CallbackCommand", J::Str(RECORD_CHANGED.to_owned())),
            ("EventTime", J::Num(sent)),
        ])
        .to_compact();
        let caller = &self.call.people[0];
        self.out.push(TrtcDelivery {
            family: Family::V4.as_str(),
            event_type,
            at: sent,
            body,
            sign: None,
            query: Some(v4_query(
                self.opts.sdkappid,
                RECORD_CHANGED,
                &caller.ip,
                caller.platform.v4(),
            )),
        });
    }
}

/// Just enough JSON to write TRTC's bodies in its own layout.
#[derive(Clone, Debug)]
enum J {
    Num(i64),
    /// A number kept as its digits (a numeric `RoomId`).
    Raw(String),
    Str(String),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    /// cJSON's formatted print, as TRTC sends: `{\n\t"Key":\tvalue,\n…\n}`.
    fn to_cjson(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(1));
        out
    }

    /// Without whitespace, as the v4 family sends.
    fn to_compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    fn write(&self, out: &mut String, depth: Option<usize>) {
        match self {
            Self::Num(n) => out.push_str(&n.to_string()),
            Self::Raw(digits) => out.push_str(digits),
            Self::Str(s) => out.push_str(&serde_json::Value::from(s.as_str()).to_string()),
            Self::Obj(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(d) = depth {
                        out.push('\n');
                        out.extend(std::iter::repeat_n('\t', d));
                    }
                    out.push('"');
                    out.push_str(name);
                    out.push_str("\":");
                    if depth.is_some() {
                        out.push('\t');
                    }
                    value.write(out, depth.map(|d| d + 1));
                }
                if let Some(d) = depth {
                    out.push('\n');
                    out.extend(std::iter::repeat_n('\t', d - 1));
                }
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests;
