//! The senders: each delivery retried as Tencent does until acknowledged, and what they
//! saw of each event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::schedule::{Event, Family};
use crate::helpers::*;

/// An event's time (Unix seconds), the same for every delivery of it: five minutes before
/// the process started, or for a third of the events (by id) two weeks before that. On
/// PostgreSQL the first are in this week's partition, which live writes name; the others'
/// week has no partition, so they go through `call_events` into the default partition; and
/// a batch may hold both.
fn event_time(id: &str) -> i64 {
    static NOW: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            - 300
    });
    let hash = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    if hash % 3 == 0 {
        *NOW - 14 * 86_400
    } else {
        *NOW
    }
}

/// What the senders saw of one event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) sent: i64,
    pub(super) acked: i64,
}

#[derive(Clone)]
pub(super) struct Senders {
    pub(super) client: reqwest::Client,
    pub(super) base: Arc<RwLock<String>>,
    pub(super) tallies: Arc<Mutex<BTreeMap<String, Tally>>>,
}

impl Senders {
    pub(super) fn request(&self, base: &str, ev: &Event) -> reqwest::RequestBuilder {
        match ev.family {
            Family::Status => {
                let t = event_time(&ev.id);
                let mut body = status_body(&ev.id, "u", "caller", "normal_end");
                body["StartCallTs"] = t.into();
                body["AcceptTs"] = (t + 3).into();
                body["EndTs"] = (t + 12).into();
                body["EventTime"] = (t + 17).into();
                self.client
                    .post(format!("{base}/?{}", status_query(APP, "call_end")))
                    .body(body.to_string())
            }
            Family::Members(n) => {
                let members: Vec<Value> = (0..n)
                    .map(|i| json!({"User_Account": format!("m{i}"), "ActionType": 3}))
                    .collect();
                let body = json!({
                    "CallInfo": {"CallId": ev.id, "RoomId": "r", "CallType": 2, "MediaType": 1},
                    "ChangedUserList": members,
                    "EventTime": event_time(&ev.id)
                });
                self.client
                    .post(format!(
                        "{base}/?{}",
                        v4_query(APP, "Call.CallbackAfterMemberChanged")
                    ))
                    .body(body.to_string())
            }
            Family::Room => {
                let t = event_time(&ev.id);
                let body = json!({"EventGroupId": 1, "EventType": 103,
                    "CallbackTs": t * 1000 + 276,
                    "EventInfo": {"RoomId": ev.id, "EventTs": t,
                        "EventMsTs": t * 1000 + 120, "UserId": "u", "Role": 20}});
                self.client
                    .post(format!("{base}/trtc"))
                    .header("SdkAppId", APP.to_string())
                    .body(body.to_string())
            }
        }
    }

    /// One attempt; whether it was acknowledged.
    pub(super) async fn attempt(&self, ev: &Event) -> bool {
        let base = self.base.read().await.clone();
        let acked = match self.request(&base, ev).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap_or_default();
                let code = if ev.family == Family::Room {
                    &v["code"]
                } else {
                    &v["ErrorCode"]
                };
                status == 200 && code == 0
            }
            Err(_) => false,
        };
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        let tally = t.entry(ev.id.clone()).or_default();
        tally.sent += 1;
        tally.acked += i64::from(acked);
        acked
    }

    /// Delivers an event as Tencent does: retried until acknowledged (the schedule's
    /// faults end, so every delivery is acknowledged in the end), then again `again`
    /// times.
    pub(super) async fn deliver(&self, ev: &Event) {
        for _ in 0..=ev.again {
            let mut pause = Duration::from_millis(10);
            while !self.attempt(ev).await {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}
