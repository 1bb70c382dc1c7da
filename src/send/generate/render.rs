//! The renderer: replays one [`Call`]'s timeline and writes the deliveries each callback
//! family makes for it, in the order Tencent's sender sends them.

use super::model::{Act, Call, CallOutcome, Step};
use super::wire::{
    Delivery, V1Wire, V4CallInfo, V4CallRecord, V4Change, V4User, V4Wire, to_json, v1_query,
    v4_query,
};
use crate::protocol::Family;
use crate::protocol::command as cmd;

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
    fn result(&self) -> CallOutcome {
        if self.call.is_group() {
            CallOutcome::NormalEnd
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

    /// Replays one step: the deliveries it makes, and where it leaves the participants.
    fn step(&mut self, s: Step) {
        let (t, w) = (s.at, s.who);
        match s.act {
            Act::StartCall => {
                self.ev(t, 0, cmd::CALLER_START_CALL, false);
                self.start_call(t);
            }
            Act::Ring => {
                self.state[w] = State::Ringing;
                self.ev(t, w, cmd::CALLEE_RECEIVE_CALL, false);
            }
            Act::Accept => self.accept(t, w),
            Act::NotAnswer { ignored } => {
                let command = if ignored {
                    cmd::CALLEE_IGNORE_CALL
                } else {
                    cmd::CALLEE_NOT_ANSWER_CALL
                };
                self.refuse(t, w, command, "NotAnswer", cmd::CALLER_CALL_MISSED);
            }
            Act::Reject => self.refuse(
                t,
                w,
                cmd::CALLEE_REJECT_CALL,
                "Reject",
                cmd::CALLER_CALL_REJECTED,
            ),
            Act::Busy => {
                self.gone(t, w);
                if !self.call.is_group() {
                    self.leave(t, 0, cmd::CALLER_CALL_BUSY);
                }
            }
            Act::Cancel => self.cancel(t),
            Act::Fail => self.fail(t),
            Act::Hangup | Act::Ended | Act::Interrupt => self.end(t, w, s.act),
            Act::Invite { invitee } => {
                self.ev(t, 0, cmd::INVITE_USER, false);
                self.state[invitee] = State::Ringing;
                self.member(t, &[invitee], self.spell("Invite", "Invited"));
            }
            Act::Join => {
                self.state[w] = State::InCall;
                self.accepted[w] = Some(t);
                self.ev(t, w, cmd::JOIN_IN_GROUP_CALL, false);
                self.member(t, &[w], "Join");
            }
        }
    }

    /// A callee answers; the first answer is the caller's `call_accepted` too.
    fn accept(&mut self, t: i64, w: usize) {
        self.state[w] = State::InCall;
        self.accepted[w] = Some(t);
        self.ev(t, w, cmd::CALLEE_ACCEPT_CALL, false);
        if self.first_accept.is_none() {
            self.first_accept = Some(t);
            self.ev(t, 0, cmd::CALLER_CALL_ACCEPTED, false);
        }
        self.member(t, &[w], self.spell("Accept", "Answer"));
    }

    /// A callee does not take the call (`command`, member action `action`); in a 1-to-1
    /// call that ends the caller's part too (`caller`).
    fn refuse(
        &mut self,
        t: i64,
        w: usize,
        command: &'static str,
        action: &'static str,
        caller: &'static str,
    ) {
        self.leave(t, w, command);
        self.member(t, &[w], action);
        if !self.call.is_group() {
            self.leave(t, 0, caller);
        }
    }

    /// The caller hangs up before anyone answered: every ringing callee is canceled.
    fn cancel(&mut self, t: i64) {
        let ringing = self.ringing();
        self.ev(t, 0, cmd::CALLER_CANCEL_CALL, true);
        for &i in &ringing {
            self.leave(t, i, cmd::CALLEE_CALL_CANCELED);
        }
        let action = self.spell("Cancel_Invite", "Canncel_Invite");
        self.member(t, &ringing, action);
        self.gone(t, 0);
    }

    /// The caller's call fails before anyone answered: every ringing callee is cut off.
    fn fail(&mut self, t: i64) {
        let ringing = self.ringing();
        self.leave(t, 0, cmd::CALLER_CALL_FAILED);
        self.member(t, &[0], "Offline");
        for &i in &ringing {
            self.leave(t, i, cmd::CALLEE_CALL_INTERRUPTED);
        }
    }

    /// `w` leaves a connected call: hangs up, is left alone, or loses the connection.
    fn end(&mut self, t: i64, w: usize, act: Act) {
        let (caller, callee) = if act == Act::Interrupt {
            (cmd::CALLER_CALL_INTERRUPTED, cmd::CALLEE_CALL_INTERRUPTED)
        } else {
            (cmd::CALLER_CALL_END, cmd::CALLEE_CALL_END)
        };
        self.leave(t, w, if w == 0 { caller } else { callee });
        match act {
            Act::Hangup => self.member(t, &[w], self.spell("Hangup", "Hang Up")),
            Act::Interrupt => self.member(t, &[w], "Offline"),
            _ => {}
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

    /// The status/event body about `who`, with what both families fill alike; the
    /// timestamps and the event are left to the caller.
    fn v1_wire(&self, who: usize, call_result: &'static str, event_time: i64) -> V1Wire<'a> {
        let call = self.call;
        V1Wire {
            user_id: &call.people[who].user_id,
            room_id: &call.room_id,
            total_num: call.people.len(),
            media_type: self.media(),
            call_type: self.call_type(),
            call_id: &call.call_id,
            role: Self::role(who),
            call_result,
            event_time,
            start_call_ts: None,
            accept_ts: None,
            end_ts: None,
            event: None,
        }
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
        let result = if last { self.result().v1() } else { "" };
        let body = V1Wire {
            start_call_ts: Some(call.start() / 1000),
            accept_ts: Some(self.accept_of(who).map_or(0, |a| a / 1000)),
            end_ts: Some(if last { t / 1000 } else { 0 }),
            event: Some(event),
            ..self.v1_wire(who, result, t / 1000)
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
        let body = V4Wire {
            callback_command: cmd::START_CALL,
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
        self.push_v4(t, 0, cmd::START_CALL, &body);
    }

    fn member(&mut self, t: i64, changed: &[usize], action: &'static str) {
        let Some(&first) = changed.first() else {
            return;
        };
        let call = self.call;
        let body = V4Wire {
            callback_command: cmd::MEMBER_CHANGED,
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
        self.push_v4(t, first, cmd::MEMBER_CHANGED, &body);
    }

    fn end_call(&self) -> Delivery {
        let call = self.call;
        let end = call.end();
        let body = V4Wire {
            callback_command: cmd::END_CALL,
            call_info: None,
            call_record: Some(call_record(call, self.first_accept)),
            call_id: None,
            user_list: None,
            changed_user_list: None,
            event_time: end,
        };
        let caller = &call.people[0];
        Delivery {
            family: Family::V4,
            command: cmd::END_CALL,
            at: end,
            query: v4_query(
                self.sdkappid,
                cmd::END_CALL,
                &caller.ip,
                caller.platform.v4(),
            ),
            body: to_json(&body),
            content_type: Some("application/json"),
        }
    }

    fn push_v4(&mut self, t: i64, who: usize, command: &'static str, body: &V4Wire<'_>) {
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
                let normal = result == CallOutcome::NormalEnd;
                let body = V1Wire {
                    start_call_ts: normal.then_some(call.start() / 1000),
                    accept_ts: normal.then(|| self.accept_of(who).map_or(0, |a| a / 1000)),
                    end_ts: normal.then_some(left / 1000),
                    ..self.v1_wire(who, result.v1(), left / 1000)
                };
                Delivery {
                    family: Family::Status,
                    command: cmd::CALL_END,
                    at: end + 1,
                    query: v1_query(
                        self.sdkappid,
                        cmd::CALL_END,
                        &person.ip,
                        person.platform.v1(),
                    ),
                    body: to_json(&body),
                    content_type: None,
                }
            })
            .collect()
    }
}

/// Tencent's record of a call, as `Call.CallbackAfterEndCall` carries it and the call record
/// API serves it (`accepted`: when the first callee answered).
fn call_record(call: &Call, accepted: Option<i64>) -> V4CallRecord<'_> {
    V4CallRecord {
        call_id: &call.call_id,
        caller_account: &call.people[0].user_id,
        media_type: if call.video { "Video" } else { "Audio" },
        call_type: if call.is_group() {
            "MultiCall"
        } else {
            "SingleCall"
        },
        start_time: call.start() / 1000,
        end_time: call.end() / 1000,
        accept_time: accepted.map_or(0, |a| a / 1000),
        call_result: call.outcome.v4(),
        callee_list_account: call.people.iter().map(|p| p.user_id.as_str()).collect(),
        room_id: &call.room_id,
        room_id_type: if call.room_id_numeric { 1 } else { 2 },
    }
}

/// The call record API's record of a call, as JSON text.
pub fn record_json(call: &Call) -> String {
    to_json(&call_record(call, call.accepted()))
}
