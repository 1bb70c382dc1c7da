//! The command words of the call callbacks, each named once. The classifier
//! ([`super::classify`]) reads the lists below, and `callhook send`'s renderer writes the
//! same constants, so renaming a command is one edit and a compile error wherever it is
//! used.
//!
//! Spelling is the documented one; the classifier ignores case.

/// The status-family command of Tencent's wire example.
pub const CALL_END: &str = "call_end";
/// The six call results that the callback-configuration API names as status commands.
/// They are also the status and event families' `CallResult` spellings.
pub const NOT_ANSWER: &str = "not_answer";
pub const REJECT: &str = "reject";
pub const CALL_BUSY: &str = "call_busy";
pub const CANCEL: &str = "cancel";
pub const NORMAL_END: &str = "normal_end";
pub const INTERRUPT: &str = "interrupt";

/// The status-family commands: the wire example's `call_end` and the six results.
pub const STATUS_COMMANDS: [&str; 7] = [
    CALL_END, NOT_ANSWER, REJECT, CALL_BUSY, CANCEL, NORMAL_END, INTERRUPT,
];

// The event family: one command per user action, prefixed with the user's role (the
// event's `Event` is the command without `caller_`/`callee_`).
pub const CALLER_START_CALL: &str = "caller_start_call";
pub const CALLER_CALL_ACCEPTED: &str = "caller_call_accepted";
pub const CALLER_CALL_MISSED: &str = "caller_call_missed";
pub const CALLER_CALL_REJECTED: &str = "caller_call_rejected";
pub const CALLER_CALL_BUSY: &str = "caller_call_busy";
pub const CALLER_CANCEL_CALL: &str = "caller_cancel_call";
pub const CALLER_CALL_FAILED: &str = "caller_call_failed";
pub const CALLER_CALL_END: &str = "caller_call_end";
pub const CALLER_CALL_INTERRUPTED: &str = "caller_call_interrupted";
pub const CALLEE_RECEIVE_CALL: &str = "callee_receive_call";
pub const CALLEE_ACCEPT_CALL: &str = "callee_accept_call";
pub const CALLEE_NOT_ANSWER_CALL: &str = "callee_not_answer_call";
pub const CALLEE_REJECT_CALL: &str = "callee_reject_call";
pub const CALLEE_IGNORE_CALL: &str = "callee_ignore_call";
pub const CALLEE_CALL_CANCELED: &str = "callee_call_canceled";
pub const CALLEE_CALL_END: &str = "callee_call_end";
pub const CALLEE_CALL_INTERRUPTED: &str = "callee_call_interrupted";
pub const INVITE_USER: &str = "invite_user";
pub const JOIN_IN_GROUP_CALL: &str = "join_in_group_call";

/// The event-family commands, role-prefixed.
pub const EVENT_COMMANDS: [&str; 19] = [
    CALLER_START_CALL,
    CALLER_CALL_ACCEPTED,
    CALLER_CALL_MISSED,
    CALLER_CALL_REJECTED,
    CALLER_CALL_BUSY,
    CALLER_CANCEL_CALL,
    CALLER_CALL_FAILED,
    CALLER_CALL_END,
    CALLER_CALL_INTERRUPTED,
    CALLEE_RECEIVE_CALL,
    CALLEE_ACCEPT_CALL,
    CALLEE_NOT_ANSWER_CALL,
    CALLEE_REJECT_CALL,
    CALLEE_IGNORE_CALL,
    CALLEE_CALL_CANCELED,
    CALLEE_CALL_END,
    CALLEE_CALL_INTERRUPTED,
    INVITE_USER,
    JOIN_IN_GROUP_CALL,
];

// The v4 family (`CallbackCommand`).
pub const START_CALL: &str = "Call.CallbackAfterStartCall";
pub const END_CALL: &str = "Call.CallbackAfterEndCall";
pub const MEMBER_CHANGED: &str = "Call.CallbackAfterMemberChanged";
/// Links a call to its cloud-recording task (TRTC's recording integration, in two
/// spellings); classified, but not in the default allow-list.
pub use super::v4_record::{RECORD_CHANGED, RECORD_CHANGED_ALT};

/// The v4 commands, in their documented spelling.
pub const V4_COMMANDS: [&str; 3] = [START_CALL, END_CALL, MEMBER_CHANGED];

/// What TRTC's own callbacks (room, media, recording) store as their command: they have
/// none on the wire.
pub use super::trtc_rows::TRTC_COMMAND;
