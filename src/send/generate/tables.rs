//! The proportions and timings of generated calls (see the module doc of
//! [`super`]): weighted tables that [`super::Rng::weighted`] draws from.

use super::model::{CallOutcome, Platform};

/// Results of 1-to-1 calls, in parts per thousand.
pub const SINGLE_OUTCOMES: [(CallOutcome, u32); 6] = [
    (CallOutcome::NormalEnd, 620),
    (CallOutcome::NotAnswer, 140),
    (CallOutcome::Reject, 90),
    (CallOutcome::Cancel, 80),
    (CallOutcome::CallBusy, 50),
    (CallOutcome::Interrupt, 20),
];
/// Share of group calls, in %.
pub const GROUP_PERCENT: u64 = 15;
/// Share of video calls, in %.
pub const VIDEO_PERCENT: u64 = 35;
/// Callees of a group call.
pub(super) const GROUP_SIZES: [(usize, u32); 5] = [(2, 50), (3, 30), (4, 14), (5, 4), (6, 2)];
/// What each callee of a group call does.
pub(super) const GROUP_ANSWERS: [(Reaction, u32); 4] = [
    (Reaction::Accept, 70),
    (Reaction::LetRing, 15),
    (Reaction::Reject, 10),
    (Reaction::Busy, 5),
];
/// Talk time buckets (ms, ms, weight): seconds to an hour, most calls a few minutes.
pub(super) const TALK: [((i64, i64), u32); 5] = [
    ((1_000, 10_000), 8),
    ((10_000, 60_000), 30),
    ((60_000, 300_000), 40),
    ((300_000, 1_200_000), 18),
    ((1_200_000, 3_600_000), 4),
];
/// TUICallKit's default ringing timeout.
pub(super) const RING_TIMEOUT_MS: i64 = 30_000;
/// Calls take place in the day before the end time, and start at least two hours before it,
/// so that every call is over by then.
pub(super) const WINDOW_MS: i64 = 24 * 3_600_000;
pub(super) const LAST_START_BEFORE_END_MS: i64 = 2 * 3_600_000;

/// How a group call's callee reacts to the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reaction {
    Accept,
    LetRing,
    Reject,
    Busy,
}

pub(super) const PLATFORMS: [(Platform, u32); 4] = [
    (Platform::Ios, 40),
    (Platform::Android, 45),
    (Platform::Web, 10),
    (Platform::MiniProgram, 5),
];
