//! Generated traffic: realistic calls, deterministic for a seed, and the deliveries
//! Tencent's sender makes for them in each callback family.
//!
//! A [`Call`] is a timeline of [`Step`]s (who did what, when). [`render`] turns one
//! timeline into the deliveries of each family. All randomness comes from [`Rng`] and only
//! integer arithmetic is used, so a seed gives the same calls on every machine.
//!
//! Proportions (see the tables below): 85 % of calls are 1-to-1, 15 % group calls with
//! 2 to 6 callees; 1-to-1 calls end `normal_end` 62 %, `not_answer` 14 %, `reject` 9 %,
//! `cancel` 8 %, `call_busy` 5 %, `interrupt` 2 %; group calls always end `normal_end`
//! (the only result Tencent reports for them), their callees answering, not answering,
//! rejecting or being busy individually. 35 % of calls are video. Calls ring for a few
//! seconds (30 s until `not_answer`) and talk for seconds to an hour.

use serde::Serialize;

use crate::protocol::Family;

/// SplitMix64: tiny, fast, plenty for test traffic, and — unlike a library generator
/// whose algorithm may change between versions — stable forever, so a seed keeps meaning
/// the same calls.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = hi.saturating_sub(lo).max(0) as u64 + 1;
        lo + self.below(span) as i64
    }

    /// True with probability `pct` %.
    pub fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// One value of a weighted table.
    pub fn weighted<T: Copy, const N: usize>(&mut self, table: &[(T, u32); N]) -> T {
        let total: u64 = table.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = self.below(total);
        for (value, weight) in table {
            let w = u64::from(*weight);
            if r < w {
                return *value;
            }
            r -= w;
        }
        table[N - 1].0
    }
}

/// How a call (or, in the status family, one participant's part of it) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    NormalEnd,
    NotAnswer,
    Reject,
    Cancel,
    CallBusy,
    Interrupt,
}

impl Outcome {
    /// The status/event family spelling.
    pub fn v1(self) -> &'static str {
        match self {
            Self::NormalEnd => "normal_end",
            Self::NotAnswer => "not_answer",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
            Self::CallBusy => "call_busy",
            Self::Interrupt => "interrupt",
        }
    }

    /// The v4 `CallRecord.CallResult` spelling.
    pub fn v4(self) -> &'static str {
        match self {
            Self::NormalEnd => "NormalEnd",
            Self::NotAnswer => "NotAnswer",
            Self::Reject => "Reject",
            Self::Cancel => "Cancel",
            Self::CallBusy => "CallBusy",
            Self::Interrupt => "Interrupt",
        }
    }
}

/// Results of 1-to-1 calls, in parts per thousand.
pub const SINGLE_OUTCOMES: [(Outcome, u32); 6] = [
    (Outcome::NormalEnd, 620),
    (Outcome::NotAnswer, 140),
    (Outcome::Reject, 90),
    (Outcome::Cancel, 80),
    (Outcome::CallBusy, 50),
    (Outcome::Interrupt, 20),
];
/// Share of group calls, in %.
pub const GROUP_PERCENT: u64 = 15;
/// Share of video calls, in %.
pub const VIDEO_PERCENT: u64 = 35;
/// Callees of a group call.
const GROUP_SIZES: [(usize, u32); 5] = [(2, 50), (3, 30), (4, 14), (5, 4), (6, 2)];
/// What each callee of a group call does.
const GROUP_ANSWERS: [(Reaction, u32); 4] = [
    (Reaction::Accept, 70),
    (Reaction::LetRing, 15),
    (Reaction::Reject, 10),
    (Reaction::Busy, 5),
];
/// Talk time buckets (ms, ms, weight): seconds to an hour, most calls a few minutes.
const TALK: [((i64, i64), u32); 5] = [
    ((1_000, 10_000), 8),
    ((10_000, 60_000), 30),
    ((60_000, 300_000), 40),
    ((300_000, 1_200_000), 18),
    ((1_200_000, 3_600_000), 4),
];
/// TUICallKit's default ringing timeout.
const RING_TIMEOUT_MS: i64 = 30_000;
/// Calls take place in the day before the end time, and start at least two hours before it,
/// so that every call is over by then.
const WINDOW_MS: i64 = 24 * 3_600_000;
const LAST_START_BEFORE_END_MS: i64 = 2 * 3_600_000;

/// How a group call's callee reacts to the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reaction {
    Accept,
    LetRing,
    Reject,
    Busy,
}

/// The client platform, as the status/event families spell it (`optplatform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Ios,
    Android,
    Web,
    MiniProgram,
}

const PLATFORMS: [(Platform, u32); 4] = [
    (Platform::Ios, 40),
    (Platform::Android, 45),
    (Platform::Web, 10),
    (Platform::MiniProgram, 5),
];

impl Platform {
    pub fn v1(self) -> &'static str {
        match self {
            Self::Ios => "iOS",
            Self::Android => "Android",
            Self::Web => "Web",
            Self::MiniProgram => "miniProgram",
        }
    }

    /// Chat-style platform names (`OptPlatform`) have no mini program: it runs the Web SDK.
    pub fn v4(self) -> &'static str {
        match self {
            Self::Ios => "iOS",
            Self::Android => "Android",
            Self::Web | Self::MiniProgram => "Web",
        }
    }
}

/// A participant: an account with its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub user_id: String,
    pub platform: Platform,
    /// The client's IP as Tencent saw it (from the documentation ranges: clearly fake).
    pub ip: String,
}

/// What a participant did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// The caller starts the call.
    StartCall,
    /// A callee's device rings.
    Ring,
    Accept,
    /// The callee let it ring until the timeout (`ignored`: declined to react at all).
    NotAnswer {
        ignored: bool,
    },
    Reject,
    /// The callee is on another call.
    Busy,
    /// The caller hangs up before anyone answered.
    Cancel,
    /// The caller's call failed before anyone answered (network).
    Fail,
    /// Leaves a connected call.
    Hangup,
    /// The call ended around them (the other side left).
    Ended,
    /// The connection was lost during the call.
    Interrupt,
    /// The caller invites one more user into a running group call.
    Invite {
        invitee: usize,
    },
    /// Joins a running group call by itself.
    Join,
}

/// `who` did `act` at `at` (Unix ms). `who` indexes [`Call::people`]; 0 is the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: i64,
    pub who: usize,
    pub act: Act,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub call_id: String,
    pub room_id: String,
    /// `RoomIdType` 1 (numeric) or 2 (string).
    pub room_id_numeric: bool,
    /// The chat group of a group call.
    pub group_id: Option<String>,
    pub video: bool,
    /// The caller first, then the callees called at the start, then anyone invited or
    /// joining later.
    pub people: Vec<Person>,
    /// `people[1..=invited]` were called at the start.
    pub invited: usize,
    pub outcome: Outcome,
    pub steps: Vec<Step>,
    /// Spell v4 member actions the docs' other way (`Answer`, `Hang Up`, …).
    pub alt_spelling: bool,
}

impl Call {
    pub fn is_group(&self) -> bool {
        self.group_id.is_some()
    }

    pub fn start(&self) -> i64 {
        self.steps.first().map_or(0, |s| s.at)
    }

    pub fn end(&self) -> i64 {
        self.steps.last().map_or(0, |s| s.at)
    }

    /// When the first callee answered.
    pub fn accepted(&self) -> Option<i64> {
        self.steps
            .iter()
            .find(|s| s.act == Act::Accept)
            .map(|s| s.at)
    }
}

/// An endless, deterministic stream of calls.
pub struct Generator {
    seed: u64,
    rng: Rng,
    ids: Rng,
    users: u64,
    window_start: i64,
    slot: i64,
    index: u64,
    total: u64,
}

impl Generator {
    /// `calls` calls spread over the day before `end_time` (Unix seconds). The calls'
    /// shape (participants, outcomes, durations) depends on the seed only; their ids and
    /// times on the seed and the end time.
    pub fn new(seed: u64, calls: u64, end_time: i64) -> Self {
        let end = end_time.saturating_mul(1000);
        let span = WINDOW_MS - LAST_START_BEFORE_END_MS;
        let n = i64::try_from(calls.max(1)).unwrap_or(i64::MAX);
        Self {
            seed,
            rng: Rng::new(seed),
            ids: Rng::new(seed ^ Rng::new(end_time as u64).next_u64()),
            users: (calls.saturating_mul(3) / 2).clamp(20, 1_000_000),
            window_start: end - WINDOW_MS,
            slot: (span / n).max(1),
            index: 0,
            total: calls,
        }
    }

    /// A user of the pool, with the same device in every call.
    fn person(&self, n: u64) -> Person {
        let mut r = Rng::new(self.seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        let platform = r.weighted(&PLATFORMS);
        let net = ["192.0.2", "198.51.100", "203.0.113"][r.below(3) as usize];
        Person {
            user_id: format!("user_{n:04}"),
            platform,
            ip: format!("{net}.{}", r.between(1, 254)),
        }
    }

    /// `count` users, all different from each other and from `taken`.
    fn pick_people(&mut self, count: usize, taken: &[Person]) -> Vec<Person> {
        let mut out: Vec<Person> = Vec::with_capacity(count);
        while out.len() < count {
            let n = self.rng.below(self.users);
            let p = self.person(n);
            if !taken.contains(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    fn uuid(&mut self) -> String {
        let a = self.ids.next_u64();
        let b = self.ids.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn talk(&mut self) -> i64 {
        let (lo, hi) = self.rng.weighted(&TALK);
        self.rng.between(lo, hi)
    }

    fn one(&mut self) -> Call {
        let t0 = self.window_start
            + self.slot.saturating_mul(self.index as i64)
            + self.rng.between(0, self.slot - 1);
        let group = self.rng.percent(GROUP_PERCENT);
        let video = self.rng.percent(VIDEO_PERCENT);
        let alt_spelling = self.rng.percent(20);
        let room_id_numeric = self.rng.percent(50);
        let caller = self.pick_people(1, &[]);
        let (people, invited, outcome, steps) = if group {
            self.group(t0, caller)
        } else {
            self.single(t0, caller)
        };
        let call_id = self.uuid();
        let room = self.ids.next_u64();
        let room_id = if room_id_numeric {
            (10_000_000 + room % 90_000_000).to_string()
        } else {
            format!("room-{:08x}", room >> 32)
        };
        let group_id = group.then(|| {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            let tail: String = (0..10)
                .map(|_| char::from(ALPHABET[self.ids.below(ALPHABET.len() as u64) as usize]))
                .collect();
            format!("@TGS#{tail}")
        });
        Call {
            call_id,
            room_id,
            room_id_numeric,
            group_id,
            video,
            people,
            invited,
            outcome,
            steps,
            alt_spelling,
        }
    }

    fn single(
        &mut self,
        t0: i64,
        mut people: Vec<Person>,
    ) -> (Vec<Person>, usize, Outcome, Vec<Step>) {
        people.extend(self.pick_people(1, &people));
        let outcome = self.rng.weighted(&SINGLE_OUTCOMES);
        let step = |at, who, act| Step { at, who, act };
        let mut steps = vec![step(t0, 0, Act::StartCall)];
        let ring = t0 + self.rng.between(200, 1_500);
        if outcome != Outcome::CallBusy {
            steps.push(step(ring, 1, Act::Ring));
        }
        match outcome {
            Outcome::NormalEnd => {
                let accepted = t0 + self.rng.between(2_000, 25_000);
                let end = accepted + self.talk();
                let who = self.rng.below(2) as usize;
                steps.push(step(accepted, 1, Act::Accept));
                steps.push(step(end, who, Act::Hangup));
                steps.push(step(end, 1 - who, Act::Ended));
            }
            Outcome::NotAnswer => {
                let ignored = self.rng.percent(15);
                let at = t0 + RING_TIMEOUT_MS + self.rng.between(0, 999);
                steps.push(step(at, 1, Act::NotAnswer { ignored }));
            }
            Outcome::Reject => {
                steps.push(step(t0 + self.rng.between(2_000, 12_000), 1, Act::Reject));
            }
            Outcome::CallBusy => {
                steps.push(step(t0 + self.rng.between(200, 900), 1, Act::Busy));
            }
            Outcome::Cancel => {
                steps.push(step(t0 + self.rng.between(2_000, 20_000), 0, Act::Cancel));
            }
            Outcome::Interrupt => {
                if self.rng.percent(75) {
                    let accepted = t0 + self.rng.between(2_000, 25_000);
                    let lost = accepted + self.rng.between(5_000, 300_000);
                    let who = self.rng.below(2) as usize;
                    steps.push(step(accepted, 1, Act::Accept));
                    steps.push(step(lost, who, Act::Interrupt));
                    steps.push(step(lost, 1 - who, Act::Ended));
                } else {
                    steps.push(step(t0 + self.rng.between(1_000, 10_000), 0, Act::Fail));
                }
            }
        }
        (people, 1, outcome, steps)
    }

    /// A group call: every callee answers (or not) on its own; it ends when at most one
    /// participant is left. Everyone stays at least 40 s, so every late join and every
    /// ringing timeout happens before the end.
    fn group(
        &mut self,
        t0: i64,
        mut people: Vec<Person>,
    ) -> (Vec<Person>, usize, Outcome, Vec<Step>) {
        let invited = self.rng.weighted(&GROUP_SIZES);
        people.extend(self.pick_people(invited, &people));
        let step = |at, who, act| Step { at, who, act };
        let mut steps = vec![step(t0, 0, Act::StartCall)];
        let mut answers: Vec<Reaction> = (0..invited)
            .map(|_| self.rng.weighted(&GROUP_ANSWERS))
            .collect();
        if !answers.contains(&Reaction::Accept) {
            answers[0] = Reaction::Accept;
        }
        // (who, joined at) of everyone who is in the call at some point.
        let mut present: Vec<(usize, i64)> = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            let who = i + 1;
            if *answer != Reaction::Busy {
                steps.push(step(t0 + self.rng.between(200, 1_500), who, Act::Ring));
            }
            match answer {
                Reaction::Accept => {
                    let at = t0 + self.rng.between(2_000, 20_000);
                    steps.push(step(at, who, Act::Accept));
                    present.push((who, at));
                }
                Reaction::LetRing => {
                    let at = t0 + RING_TIMEOUT_MS + self.rng.between(0, 999);
                    let ignored = self.rng.percent(15);
                    steps.push(step(at, who, Act::NotAnswer { ignored }));
                }
                Reaction::Reject => {
                    steps.push(step(t0 + self.rng.between(2_000, 15_000), who, Act::Reject));
                }
                Reaction::Busy => {
                    steps.push(step(t0 + self.rng.between(200, 900), who, Act::Busy));
                }
            }
        }
        let first_accept = present.iter().map(|p| p.1).min().unwrap_or(t0);
        present.push((0, first_accept));
        if self.rng.percent(10) {
            let extra = self.pick_people(1, &people);
            people.extend(extra);
            let who = people.len() - 1;
            let at = first_accept + self.rng.between(1_000, 10_000);
            steps.push(step(at, who, Act::Join));
            present.push((who, at));
        }
        if self.rng.percent(10) {
            let extra = self.pick_people(1, &people);
            people.extend(extra);
            let who = people.len() - 1;
            let invite = first_accept + self.rng.between(1_000, 5_000);
            let ring = invite + self.rng.between(200, 1_000);
            steps.push(step(invite, 0, Act::Invite { invitee: who }));
            steps.push(step(ring, who, Act::Ring));
            if self.rng.percent(80) {
                let at = ring + self.rng.between(1_000, 3_000);
                steps.push(step(at, who, Act::Accept));
                present.push((who, at));
            } else {
                let ignored = self.rng.percent(15);
                steps.push(step(
                    invite + RING_TIMEOUT_MS,
                    who,
                    Act::NotAnswer { ignored },
                ));
            }
        }
        let mut leaves: Vec<(i64, usize)> = Vec::with_capacity(present.len());
        for &(who, joined) in &present {
            leaves.push((joined + 40_000 + self.talk(), who));
        }
        leaves.sort_unstable();
        // The call ends when the second-to-last participant hangs up.
        let end = leaves.iter().rev().nth(1).map_or(first_accept, |l| l.0);
        let last = leaves.last().map_or(0, |l| l.1);
        for &(at, who) in &leaves {
            if who == last {
                steps.push(step(end, who, Act::Ended));
            } else {
                steps.push(step(at.min(end), who, Act::Hangup));
            }
        }
        (people, invited, Outcome::NormalEnd, steps)
    }
}

impl Iterator for Generator {
    type Item = Call;

    fn next(&mut self) -> Option<Call> {
        if self.index >= self.total {
            return None;
        }
        let mut call = self.one();
        // Stable: equal times keep the order they were generated in (e.g. the hang-up
        // before the other side's end).
        call.steps.sort_by_key(|s| s.at);
        self.index += 1;
        Some(call)
    }
}

/// Which families to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub status: bool,
    pub event: bool,
    pub v4: bool,
}

impl Families {
    pub const ALL: Self = Self {
        status: true,
        event: true,
        v4: true,
    };

    pub const NONE: Self = Self {
        status: false,
        event: false,
        v4: false,
    };

    pub fn only(family: Family) -> Self {
        Self {
            status: family == Family::Status,
            event: family == Family::Event,
            v4: family == Family::V4,
        }
    }
}

/// One HTTP request Tencent's sender would make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub family: Family,
    /// The command (`call_end`, `caller_start_call`, `Call.CallbackAfterEndCall`, …).
    pub command: &'static str,
    /// When the sender would send it (Unix ms); deliveries are sent in this order.
    pub at: i64,
    /// Tencent's query parameters, encoded, without `?`.
    pub query: String,
    pub body: String,
    /// The `Content-Type` header, if any: none for the status and event families
    /// (Tencent's example request has none), JSON for v4.
    pub content_type: Option<&'static str>,
}

/// The query string of the status and event families.
pub fn v1_query(sdkappid: i64, command: &str, ip: &str, platform: &str) -> String {
    format!(
        "sdkappid={sdkappid}&command={command}&contenttype=json&clientip={ip}&optplatform={platform}"
    )
}

/// The query string of the v4 family.
pub fn v4_query(sdkappid: i64, command: &str, ip: &str, platform: &str) -> String {
    format!(
        "SdkAppid={sdkappid}&CallbackCommand={command}&contenttype=json&ClientIP={ip}&OptPlatform={platform}"
    )
}

/// The status/event body, fields in the documented order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct V1Body<'a> {
    user_id: &'a str,
    room_id: &'a str,
    total_num: usize,
    media_type: &'static str,
    call_type: &'static str,
    call_id: &'a str,
    role: &'static str,
    call_result: &'static str,
    event_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_call_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accept_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
}

#[derive(Serialize)]
struct V4User<'a> {
    #[serde(rename = "User_Account")]
    user_account: &'a str,
    #[serde(rename = "Status")]
    status: &'static str,
}

#[derive(Serialize)]
struct V4Change<'a> {
    #[serde(rename = "User_Account")]
    user_account: &'a str,
    #[serde(rename = "ActionType")]
    action_type: &'static str,
}

#[derive(Serialize)]
struct V4CallInfo<'a> {
    #[serde(rename = "CallId")]
    call_id: &'a str,
    #[serde(rename = "CallMediaType")]
    media_type: &'static str,
    #[serde(rename = "ChatGroupId")]
    chat_group_id: &'a str,
    #[serde(rename = "RoomId")]
    room_id: &'a str,
    #[serde(rename = "RoomIdType")]
    room_id_type: u8,
}

#[derive(Serialize)]
struct V4CallRecord<'a> {
    #[serde(rename = "CallId")]
    call_id: &'a str,
    #[serde(rename = "Caller_Account")]
    caller_account: &'a str,
    #[serde(rename = "MediaType")]
    media_type: &'static str,
    #[serde(rename = "CallType")]
    call_type: &'static str,
    #[serde(rename = "StartTime")]
    start_time: i64,
    #[serde(rename = "EndTime")]
    end_time: i64,
    #[serde(rename = "AcceptTime")]
    accept_time: i64,
    #[serde(rename = "CallResult")]
    call_result: &'static str,
    #[serde(rename = "CalleeList_Account")]
    callee_list_account: Vec<&'a str>,
    #[serde(rename = "RoomId")]
    room_id: &'a str,
    #[serde(rename = "RoomIdType")]
    room_id_type: u8,
}

#[derive(Serialize)]
struct V4Body<'a> {
    #[serde(rename = "CallbackCommand")]
    callback_command: &'static str,
    #[serde(rename = "CallInfo", skip_serializing_if = "Option::is_none")]
    call_info: Option<V4CallInfo<'a>>,
    #[serde(rename = "CallRecord", skip_serializing_if = "Option::is_none")]
    call_record: Option<V4CallRecord<'a>>,
    #[serde(rename = "CallId", skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    #[serde(rename = "UserList", skip_serializing_if = "Option::is_none")]
    user_list: Option<Vec<V4User<'a>>>,
    #[serde(rename = "ChangedUserList", skip_serializing_if = "Option::is_none")]
    changed_user_list: Option<Vec<V4Change<'a>>>,
    #[serde(rename = "EventTime")]
    event_time: i64,
}

const START_CALL: &str = "Call.CallbackAfterStartCall";
const MEMBER_CHANGED: &str = "Call.CallbackAfterMemberChanged";
const END_CALL: &str = "Call.CallbackAfterEndCall";

/// Where a participant is, while the timeline is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not called (yet).
    Idle,
    Ringing,
    InCall,
    Gone,
}

/// Renders one call as the deliveries of the chosen families, in the order the sender
/// would send them.
pub fn render(call: &Call, families: Families, sdkappid: i64, out: &mut Vec<Delivery>) {
    let mut r = Renderer::new(call, sdkappid);
    for step in &call.steps {
        r.step(*step);
    }
    let mut deliveries = Vec::with_capacity(r.status.len() + r.event.len() + r.v4.len() + 2);
    if families.event {
        deliveries.append(&mut r.event);
    }
    if families.v4 {
        deliveries.append(&mut r.v4);
        deliveries.push(r.end_call());
    }
    if families.status {
        deliveries.extend(r.status_deliveries());
    }
    deliveries.sort_by_key(|d| d.at);
    out.append(&mut deliveries);
}

struct Renderer<'a> {
    call: &'a Call,
    sdkappid: i64,
    state: Vec<State>,
    accepted: Vec<Option<i64>>,
    left: Vec<Option<i64>>,
    first_accept: Option<i64>,
    status: Vec<Delivery>,
    event: Vec<Delivery>,
    v4: Vec<Delivery>,
}

impl<'a> Renderer<'a> {
    fn new(call: &'a Call, sdkappid: i64) -> Self {
        let n = call.people.len();
        let mut state = vec![State::Idle; n];
        state[0] = State::InCall;
        Self {
            call,
            sdkappid,
            state,
            accepted: vec![None; n],
            left: vec![None; n],
            first_accept: None,
            status: Vec::new(),
            event: Vec::new(),
            v4: Vec::new(),
        }
    }

    fn media(&self) -> &'static str {
        if self.call.video { "video" } else { "audio" }
    }

    fn call_type(&self) -> &'static str {
        if self.call.is_group() {
            "group"
        } else {
            "single"
        }
    }

    /// The result a participant's final delivery reports: group calls only ever report
    /// `normal_end`.
    fn result(&self) -> Outcome {
        if self.call.is_group() {
            Outcome::NormalEnd
        } else {
            self.call.outcome
        }
    }

    fn role(who: usize) -> &'static str {
        if who == 0 { "caller" } else { "callee" }
    }

    fn accept_of(&self, who: usize) -> Option<i64> {
        if who == 0 {
            self.first_accept
        } else {
            self.accepted[who]
        }
    }

    fn step(&mut self, s: Step) {
        let group = self.call.is_group();
        let (t, w) = (s.at, s.who);
        match s.act {
            Act::StartCall => {
                self.ev(t, 0, "caller_start_call", false);
                self.start_call(t);
            }
            Act::Ring => {
                self.state[w] = State::Ringing;
                self.ev(t, w, "callee_receive_call", false);
            }
            Act::Accept => {
                self.state[w] = State::InCall;
                self.accepted[w] = Some(t);
                self.ev(t, w, "callee_accept_call", false);
                if self.first_accept.is_none() {
                    self.first_accept = Some(t);
                    self.ev(t, 0, "caller_call_accepted", false);
                }
                self.member(t, &[w], self.spell("Accept", "Answer"));
            }
            Act::NotAnswer { ignored } => {
                let command = if ignored {
                    "callee_ignore_call"
                } else {
                    "callee_not_answer_call"
                };
                self.leave(t, w, command);
                self.member(t, &[w], "NotAnswer");
                if !group {
                    self.leave(t, 0, "caller_call_missed");
                }
            }
            Act::Reject => {
                self.leave(t, w, "callee_reject_call");
                self.member(t, &[w], "Reject");
                if !group {
                    self.leave(t, 0, "caller_call_rejected");
                }
            }
            Act::Busy => {
                self.gone(t, w);
                if !group {
                    self.leave(t, 0, "caller_call_busy");
                }
            }
            Act::Cancel => {
                let ringing = self.ringing();
                self.ev(t, 0, "caller_cancel_call", true);
                for &i in &ringing {
                    self.leave(t, i, "callee_call_canceled");
                }
                let action = self.spell("Cancel_Invite", "Canncel_Invite");
                self.member(t, &ringing, action);
                self.gone(t, 0);
            }
            Act::Fail => {
                let ringing = self.ringing();
                self.leave(t, 0, "caller_call_failed");
                self.member(t, &[0], "Offline");
                for &i in &ringing {
                    self.leave(t, i, "callee_call_interrupted");
                }
            }
            Act::Hangup | Act::Ended | Act::Interrupt => {
                let (caller, callee) = if s.act == Act::Interrupt {
                    ("caller_call_interrupted", "callee_call_interrupted")
                } else {
                    ("caller_call_end", "callee_call_end")
                };
                self.leave(t, w, if w == 0 { caller } else { callee });
                match s.act {
                    Act::Hangup => self.member(t, &[w], self.spell("Hangup", "Hang Up")),
                    Act::Interrupt => self.member(t, &[w], "Offline"),
                    _ => {}
                }
            }
            Act::Invite { invitee } => {
                self.ev(t, 0, "invite_user", false);
                self.state[invitee] = State::Ringing;
                self.member(t, &[invitee], self.spell("Invite", "Invited"));
            }
            Act::Join => {
                self.state[w] = State::InCall;
                self.accepted[w] = Some(t);
                self.ev(t, w, "join_in_group_call", false);
                self.member(t, &[w], "Join");
            }
        }
    }

    fn ringing(&self) -> Vec<usize> {
        (1..self.state.len())
            .filter(|&i| self.state[i] == State::Ringing)
            .collect()
    }

    fn spell(&self, usual: &'static str, other: &'static str) -> &'static str {
        if self.call.alt_spelling { other } else { usual }
    }

    fn gone(&mut self, t: i64, who: usize) {
        self.state[who] = State::Gone;
        self.left[who] = Some(t);
    }

    /// A participant's final event.
    fn leave(&mut self, t: i64, who: usize, command: &'static str) {
        self.gone(t, who);
        self.ev(t, who, command, true);
    }

    /// An event-family delivery about `who`. Final events carry the result and `EndTs`;
    /// the others leave `CallResult` empty, as Tencent's do.
    fn ev(&mut self, t: i64, who: usize, command: &'static str, last: bool) {
        let call = self.call;
        let person = &call.people[who];
        let event = command
            .strip_prefix("caller_")
            .or_else(|| command.strip_prefix("callee_"))
            .unwrap_or(command);
        let body = V1Body {
            user_id: &person.user_id,
            room_id: &call.room_id,
            total_num: call.people.len(),
            media_type: self.media(),
            call_type: self.call_type(),
            call_id: &call.call_id,
            role: Self::role(who),
            call_result: if last { self.result().v1() } else { "" },
            event_time: t / 1000,
            start_call_ts: Some(call.start() / 1000),
            accept_ts: Some(self.accept_of(who).map_or(0, |a| a / 1000)),
            end_ts: Some(if last { t / 1000 } else { 0 }),
            event: Some(event),
        };
        self.event.push(Delivery {
            family: Family::Event,
            command,
            at: t,
            query: v1_query(self.sdkappid, command, &person.ip, person.platform.v1()),
            body: to_json(&body),
            content_type: None,
        });
    }

    /// Everyone still called or in the call, as v4 `UserList`.
    fn user_list(&self) -> Vec<V4User<'a>> {
        let call = self.call;
        (0..call.people.len())
            .filter_map(|i| {
                let status = match self.state[i] {
                    State::InCall => "Calling",
                    State::Ringing => "Waiting",
                    State::Idle if i <= call.invited => "Waiting",
                    _ => return None,
                };
                Some(V4User {
                    user_account: &call.people[i].user_id,
                    status,
                })
            })
            .collect()
    }

    fn start_call(&mut self, t: i64) {
        let call = self.call;
        let body = V4Body {
            callback_command: START_CALL,
            call_info: Some(V4CallInfo {
                call_id: &call.call_id,
                media_type: if call.video { "Video" } else { "Audio" },
                chat_group_id: call.group_id.as_deref().unwrap_or(""),
                room_id: &call.room_id,
                room_id_type: if call.room_id_numeric { 1 } else { 2 },
            }),
            call_record: None,
            call_id: None,
            user_list: Some(self.user_list()),
            changed_user_list: None,
            event_time: t,
        };
        self.push_v4(t, 0, START_CALL, &body);
    }

    fn member(&mut self, t: i64, changed: &[usize], action: &'static str) {
        let Some(&first) = changed.first() else {
            return;
        };
        let call = self.call;
        let body = V4Body {
            callback_command: MEMBER_CHANGED,
            call_info: None,
            call_record: None,
            call_id: Some(&call.call_id),
            user_list: Some(self.user_list()),
            changed_user_list: Some(
                changed
                    .iter()
                    .map(|&i| V4Change {
                        user_account: &call.people[i].user_id,
                        action_type: action,
                    })
                    .collect(),
            ),
            event_time: t,
        };
        self.push_v4(t, first, MEMBER_CHANGED, &body);
    }

    fn end_call(&self) -> Delivery {
        let call = self.call;
        let end = call.end();
        let body = V4Body {
            callback_command: END_CALL,
            call_info: None,
            call_record: Some(V4CallRecord {
                call_id: &call.call_id,
                caller_account: &call.people[0].user_id,
                media_type: if call.video { "Video" } else { "Audio" },
                call_type: if call.is_group() {
                    "MultiCall"
                } else {
                    "SingleCall"
                },
                start_time: call.start() / 1000,
                end_time: end / 1000,
                accept_time: self.first_accept.map_or(0, |a| a / 1000),
                call_result: call.outcome.v4(),
                callee_list_account: call.people.iter().map(|p| p.user_id.as_str()).collect(),
                room_id: &call.room_id,
                room_id_type: if call.room_id_numeric { 1 } else { 2 },
            }),
            call_id: None,
            user_list: None,
            changed_user_list: None,
            event_time: end,
        };
        let caller = &call.people[0];
        Delivery {
            family: Family::V4,
            command: END_CALL,
            at: end,
            query: v4_query(self.sdkappid, END_CALL, &caller.ip, caller.platform.v4()),
            body: to_json(&body),
            content_type: Some("application/json"),
        }
    }

    fn push_v4(&mut self, t: i64, who: usize, command: &'static str, body: &V4Body<'_>) {
        let person = &self.call.people[who];
        self.v4.push(Delivery {
            family: Family::V4,
            command,
            at: t,
            query: v4_query(self.sdkappid, command, &person.ip, person.platform.v4()),
            body: to_json(body),
            content_type: Some("application/json"),
        });
    }

    /// One status delivery per participant, after the call. The three timestamps are
    /// documented as present only on `normal_end`.
    fn status_deliveries(&self) -> Vec<Delivery> {
        let call = self.call;
        let end = call.end();
        let result = self.result();
        (0..call.people.len())
            .map(|who| {
                let person = &call.people[who];
                let left = self.left[who].unwrap_or(end);
                let normal = result == Outcome::NormalEnd;
                let body = V1Body {
                    user_id: &person.user_id,
                    room_id: &call.room_id,
                    total_num: call.people.len(),
                    media_type: self.media(),
                    call_type: self.call_type(),
                    call_id: &call.call_id,
                    role: Self::role(who),
                    call_result: result.v1(),
                    event_time: left / 1000,
                    start_call_ts: normal.then_some(call.start() / 1000),
                    accept_ts: normal.then(|| self.accept_of(who).map_or(0, |a| a / 1000)),
                    end_ts: normal.then_some(left / 1000),
                    event: None,
                };
                Delivery {
                    family: Family::Status,
                    command: "call_end",
                    at: end + 1,
                    query: v1_query(self.sdkappid, "call_end", &person.ip, person.platform.v1()),
                    body: to_json(&body),
                    content_type: None,
                }
            })
            .collect()
    }
}

/// Serialising these plain structs cannot fail.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Context, Kind};
    use std::collections::{HashMap, HashSet};

    const END: i64 = 1_704_900_000;

    fn calls(seed: u64, n: u64) -> Vec<Call> {
        Generator::new(seed, n, END).collect()
    }

    fn deliveries(seed: u64, n: u64, families: Families) -> Vec<Delivery> {
        let mut out = Vec::new();
        for c in Generator::new(seed, n, END) {
            render(&c, families, 1_400_000_001, &mut out);
        }
        out
    }

    #[test]
    fn same_seed_same_calls_other_seed_other_calls() {
        assert_eq!(
            deliveries(7, 200, Families::ALL),
            deliveries(7, 200, Families::ALL)
        );
        assert_ne!(calls(7, 20), calls(8, 20));
        // The shape depends on the seed only; ids and times also on the end time.
        let a = Generator::new(7, 20, END).collect::<Vec<_>>();
        let b = Generator::new(7, 20, END + 86_400).collect::<Vec<_>>();
        for (x, y) in a.iter().zip(&b) {
            assert_ne!(x.call_id, y.call_id);
            assert_eq!(x.people, y.people);
            assert_eq!(x.outcome, y.outcome);
        }
    }

    #[test]
    fn timelines_are_consistent() {
        for c in calls(11, 5_000) {
            let (start, end) = (c.start(), c.end());
            assert!(start >= (END - 86_400) * 1000, "{c:?}");
            assert!(
                end <= END * 1000,
                "every call is over by the end time: {c:?}"
            );
            assert!(c.steps.windows(2).all(|w| w[0].at <= w[1].at));
            assert_eq!(c.steps[0].act, Act::StartCall);
            if let Some(accepted) = c.accepted() {
                assert!(start < accepted && accepted < end, "{c:?}");
            }
            let ids: HashSet<&str> = c.people.iter().map(|p| p.user_id.as_str()).collect();
            assert_eq!(ids.len(), c.people.len(), "participants are distinct");
            // Everyone's part of the call ends exactly once.
            let mut finals = vec![0; c.people.len()];
            for s in &c.steps {
                if matches!(
                    s.act,
                    Act::Hangup
                        | Act::Ended
                        | Act::Interrupt
                        | Act::NotAnswer { .. }
                        | Act::Reject
                        | Act::Busy
                ) {
                    finals[s.who] += 1;
                }
            }
            assert!(finals.iter().all(|&f| f <= 1), "{c:?}");
            if c.is_group() {
                assert_eq!(c.outcome, Outcome::NormalEnd);
                assert!(c.accepted().is_some());
            }
        }
    }

    #[test]
    fn proportions_are_plausible() {
        let all = calls(3, 20_000);
        let singles: Vec<&Call> = all.iter().filter(|c| !c.is_group()).collect();
        let group_share = (all.len() - singles.len()) * 100 / all.len();
        assert!((12..=18).contains(&group_share), "{group_share}");
        let mut by: HashMap<Outcome, usize> = HashMap::new();
        for c in &singles {
            *by.entry(c.outcome).or_default() += 1;
        }
        for (outcome, per_mille) in SINGLE_OUTCOMES {
            let got = by.get(&outcome).copied().unwrap_or(0) * 1000 / singles.len();
            let want = per_mille as usize;
            assert!(
                got + 15 >= want && got <= want + 15,
                "{outcome:?}: {got}‰, want {want}‰"
            );
        }
        let video = all.iter().filter(|c| c.video).count() * 100 / all.len();
        assert!((31..=39).contains(&video), "{video}");
    }

    /// Every generated delivery is one the receiver accepts, in the family it was made
    /// for, with the values the timeline says.
    #[test]
    fn every_delivery_parses_as_its_family() {
        let mut commands = HashSet::new();
        for d in deliveries(5, 3_000, Families::ALL) {
            let q = protocol::CallbackQuery::parse(&d.query);
            let command = q.command.clone().unwrap_or_default();
            assert_eq!(command, d.command);
            commands.insert(command.clone());
            let kind = protocol::classify(&command);
            let family = match kind {
                Kind::Status => Family::Status,
                Kind::Event => Family::Event,
                Kind::Unknown => panic!("unknown command {command}"),
                _ => Family::V4,
            };
            assert_eq!(family, d.family);
            assert_eq!(q.v4_style, family == Family::V4, "{}", d.query);
            assert_eq!(q.contenttype.as_deref(), Some("json"));
            let ctx = Context {
                sdkappid: 1_400_000_001,
                command: &command,
                client_ip: q.clientip.as_deref(),
                opt_platform: q.optplatform.as_deref(),
                remote_addr: None,
                received_at: crate::now_millis(),
            };
            let rows = protocol::parse_delivery(kind, q.v4_style, &ctx, d.body.as_bytes())
                .unwrap_or_else(|e| panic!("{e}: {} {}", d.query, d.body));
            for r in rows {
                assert!(r.call_id.is_some());
                assert!(r.event_time.is_some(), "{}", d.body);
            }
        }
        // Every event command and every v4 command is produced by some call.
        for c in protocol::EVENT_COMMANDS
            .iter()
            .chain(&protocol::V4_COMMANDS)
        {
            assert!(commands.contains(*c), "{c} is never sent");
        }
        assert!(commands.contains("call_end"));
    }

    #[test]
    fn one_status_delivery_per_participant() {
        for c in calls(9, 500) {
            let mut out = Vec::new();
            render(&c, Families::only(Family::Status), 1, &mut out);
            assert_eq!(out.len(), c.people.len());
            let roles: Vec<serde_json::Value> = out
                .iter()
                .map(|d| serde_json::from_str::<serde_json::Value>(&d.body).unwrap_or_default())
                .collect();
            assert_eq!(roles[0]["Role"], "caller");
            assert!(roles[1..].iter().all(|r| r["Role"] == "callee"));
            for r in &roles {
                assert_eq!(r["CallResult"], c.outcome.v1());
                if c.outcome == Outcome::NormalEnd {
                    let (s, a, e) = (
                        r["StartCallTs"].as_i64().unwrap_or(-1),
                        r["AcceptTs"].as_i64().unwrap_or(-1),
                        r["EndTs"].as_i64().unwrap_or(-1),
                    );
                    assert!(s > 0 && e >= s, "{r}");
                    assert!(a == 0 || (s <= a && a <= e), "{r}");
                } else {
                    assert!(r.get("AcceptTs").is_none(), "{r}");
                }
            }
        }
    }

    #[test]
    fn v4_end_call_record() {
        for c in calls(13, 300) {
            let mut out = Vec::new();
            render(&c, Families::only(Family::V4), 1, &mut out);
            let first: serde_json::Value = serde_json::from_str(&out[0].body).unwrap_or_default();
            assert_eq!(first["CallbackCommand"], START_CALL);
            let last = out.last().map(|d| d.body.clone()).unwrap_or_default();
            let last: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            assert_eq!(last["CallbackCommand"], END_CALL);
            let rec = &last["CallRecord"];
            assert_eq!(rec["CallResult"], c.outcome.v4());
            assert_eq!(
                rec["CallType"],
                if c.is_group() {
                    "MultiCall"
                } else {
                    "SingleCall"
                }
            );
            assert_eq!(last["EventTime"], c.end(), "milliseconds");
            assert_eq!(rec["EndTime"], c.end() / 1000, "seconds");
            assert_eq!(
                rec["AcceptTime"],
                c.accepted().map_or(0, |a| a / 1000),
                "{rec}"
            );
        }
    }

    #[test]
    fn rng_ranges() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let v = r.between(-3, 3);
            assert!((-3..=3).contains(&v));
        }
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.below(0), 0);
    }
}
