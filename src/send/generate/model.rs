//! The call model: who takes part ([`Person`], [`Platform`]), what they do ([`Act`],
//! [`Step`]), how the call ends ([`CallOutcome`]), and the [`Call`] that holds it all as
//! one timeline. Plain data: the generator makes calls, the renderers read them.

use crate::protocol::command as cmd;

/// How a call (or, in the status family, one participant's part of it) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallOutcome {
    NormalEnd,
    NotAnswer,
    Reject,
    Cancel,
    CallBusy,
    Interrupt,
}

impl CallOutcome {
    /// The status/event family spelling.
    pub fn v1(self) -> &'static str {
        match self {
            Self::NormalEnd => cmd::NORMAL_END,
            Self::NotAnswer => cmd::NOT_ANSWER,
            Self::Reject => cmd::REJECT,
            Self::Cancel => cmd::CANCEL,
            Self::CallBusy => cmd::CALL_BUSY,
            Self::Interrupt => cmd::INTERRUPT,
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

/// The client platform, as the status/event families spell it (`optplatform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Ios,
    Android,
    Web,
    MiniProgram,
}

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
    pub outcome: CallOutcome,
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
