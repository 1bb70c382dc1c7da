//! Metrics of the calls themselves, beside the receiver's own: how calls end, completed
//! calls with no talk time, and how late Tencent's callbacks arrive. Every label is
//! bounded: `sdkappid` takes the configured apps only (others are refused before this),
//! `family` and `result` a fixed set.
//!
//! A call is counted once, from the callback that closes it for the caller: the status
//! family's `call_end` of the caller (`Role` caller), or the v4 family's
//! `Call.CallbackAfterEndCall`. An app that receives both families counts each call under
//! both `family` labels; read one. A delivery is counted when it is acknowledged as new:
//! stored, or journaled during an outage. A retry answered as a duplicate is not counted;
//! one that arrives while the database is away is journaled like any delivery (whether
//! it repeats a stored event is known only at replay) and is counted again, as is, rarely,
//! a batch whose first commit was of unknown outcome. The counts are for alerting and
//! dashboards; `report` and the views count from the stored rows.

use crate::metrics as m;
use crate::protocol::{CallResult, EventRow, Family, Role, command};

/// What one delivery says about its call, taken from its rows before they are written.
#[derive(Debug, Default, PartialEq)]
pub struct Signals {
    /// The call ended: its app, the family that said so, and how it ended.
    ended: Option<Ended>,
    /// Seconds from Tencent's event time to callhook's receipt, per row that has one.
    lags: Vec<(&'static str, f64)>,
}

#[derive(Debug, PartialEq)]
struct Ended {
    sdkappid: String,
    family: &'static str,
    result: &'static str,
    /// Answered and ended normally with under a second between answer and hang-up.
    zero_talk: bool,
}

/// The `result` label: the known results, `offline`, and `other` for anything else.
fn result_label(r: &CallResult) -> &'static str {
    match r {
        CallResult::NotAnswer => "not_answer",
        CallResult::Reject => "reject",
        CallResult::CallBusy => "call_busy",
        CallResult::Cancel => "cancel",
        CallResult::NormalEnd => "normal_end",
        CallResult::Interrupt => "interrupt",
        CallResult::Offline => "offline",
        CallResult::Other(_) => "other",
    }
}

impl Signals {
    /// Reads a delivery's rows.
    pub fn of(rows: &[EventRow]) -> Self {
        let mut signals = Self::default();
        for row in rows {
            if let Some(t) = row.event_time {
                let lag = (row.received_at - t).max(0) as f64 / 1000.0;
                signals.lags.push((row.family.as_str(), lag));
            }
            if signals.ended.is_none() {
                signals.ended = ended(row);
            }
        }
        signals
    }

    /// Counts them (the delivery was acknowledged as new).
    pub fn record(self) {
        for (family, lag) in self.lags {
            metrics::histogram!(m::CALLBACK_LAG, "family" => family).record(lag);
        }
        if let Some(e) = self.ended {
            metrics::counter!(m::CALLS_ENDED, "sdkappid" => e.sdkappid.clone(), "family" => e.family, "result" => e.result).increment(1);
            if e.zero_talk {
                metrics::counter!(m::CALLS_ZERO_TALK, "sdkappid" => e.sdkappid, "family" => e.family).increment(1);
            }
        }
    }
}

/// The end of a call, if `row` is the callback that closes it for the caller.
fn ended(row: &EventRow) -> Option<Ended> {
    let family = match row.family {
        Family::Status if row.role == Some(Role::Caller) => "status",
        Family::V4 if row.command.eq_ignore_ascii_case(command::END_CALL) => "v4",
        _ => return None,
    };
    let result = row.call_result.as_ref()?;
    let zero_talk = *result == CallResult::NormalEnd
        && matches!((row.accept_ts, row.end_ts), (Some(a), Some(e)) if a > 0 && e - a < 1000);
    Some(Ended {
        sdkappid: row.sdkappid.to_string(),
        family,
        result: result_label(result),
        zero_talk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Context, classify, parse_delivery};

    fn rows(command: &str, body: &str) -> Vec<EventRow> {
        let ctx = Context {
            sdkappid: 1400000001,
            command,
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 1_704_856_890_000,
        };
        parse_delivery(classify(command), false, &ctx, body.as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn status(role: &str, result: &str, accept: i64, end: i64) -> String {
        format!(
            r#"{{"UserId":"a","CallId":"c","Role":"{role}","CallResult":"{result}","EventTime":1704856885000,"StartCallTs":1704856873,"AcceptTs":{accept},"EndTs":{end}}}"#
        )
    }

    #[test]
    fn the_callers_status_callback_ends_the_call() {
        let s = Signals::of(&rows(
            "call_end",
            &status("caller", "normal_end", 1704856876, 1704856885),
        ));
        let e = s.ended.unwrap_or_else(|| panic!("ended"));
        assert_eq!(
            (e.family, e.result, e.zero_talk),
            ("status", "normal_end", false)
        );
        assert_eq!(e.sdkappid, "1400000001");
        // 1704856890000 - 1704856885000 ms
        assert_eq!(s.lags, vec![("status", 5.0)]);
    }

    #[test]
    fn a_callees_status_callback_does_not_count_the_call_again() {
        let s = Signals::of(&rows(
            "call_end",
            &status("callee", "reject", 0, 1704856885),
        ));
        assert_eq!(s.ended, None);
    }

    #[test]
    fn a_completed_call_without_talk_time_is_noticed() {
        let s = Signals::of(&rows(
            "call_end",
            &status("caller", "normal_end", 1704856880, 1704856880),
        ));
        assert!(s.ended.is_some_and(|e| e.zero_talk));
        let s = Signals::of(&rows(
            "call_end",
            &status("caller", "interrupt", 1704856880, 1704856880),
        ));
        assert!(
            s.ended
                .is_some_and(|e| !e.zero_talk && e.result == "interrupt")
        );
    }

    #[test]
    fn unknown_results_share_one_label() {
        let s = Signals::of(&rows("call_end", &status("caller", "teleported", 0, 0)));
        assert_eq!(s.ended.map(|e| e.result), Some("other"));
    }
}
