//! A destination's delivery worker: claims due outbox entries, sends them, records each
//! outcome, and schedules the next attempt.
//!
//! - **Bounded.** At most `max_in_flight` attempts run at once, and only as many entries
//!   are claimed as there is room for, so memory does not grow with the backlog. As
//!   attempts finish, more are claimed: a slow answer holds its own place, not the batch.
//! - **At least once.** A claim counts the attempt and leases the entry for the timeout
//!   and a margin; an attempt cut short (a crash, kill -9, a shutdown) is made again when
//!   the lease ends. Outcomes are recorded only if the entry is still on that attempt.
//! - **Backing off.** After [`TROUBLE`] failures in a row that say the destination itself
//!   is in trouble (timeouts, connections refused or reset, 5xx, 429), the worker sends one
//!   probe at a time, 1 s, 2 s, 4 s … up to a minute apart, until one gets through: a
//!   destination that is down for an hour costs a query a minute, and the entries that
//!   arrive meanwhile keep their attempts for when it is back.
//! - **Woken at once** when this process commits entries (`Routes::signal`), and every
//!   `poll` otherwise (retries coming due, other replicas' entries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::attempt::{self, Attempt, Outcome};
use super::message;
use crate::config::Destination;
use crate::logging::Complaint;
use crate::metrics as m;
use crate::store::{Claimed, ForwardedEvent, Next, Settled, Store};

/// Failures in a row, each the destination's trouble, before the worker backs off.
pub const TROUBLE: u32 = 5;
/// The longest pause between probes of a destination in trouble.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// What a lease adds to the timeout: an attempt may take the whole timeout, and its
/// outcome a moment more to be recorded.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub(super) struct Worker {
    pub(super) store: Store,
    pub(super) destination: Arc<Destination>,
    pub(super) client: reqwest::Client,
    /// How often to look for due entries when nothing wakes the worker.
    pub(super) poll: Duration,
}

/// An attempt under way: the entry, and what it came to.
type Done = (Claimed, Attempt);

impl Worker {
    /// Runs until aborted at shutdown (attempts in flight then end with it: their leases
    /// bring them back).
    #[tracing::instrument(name = "forward", skip_all, fields(destination = self.destination.name()))]
    pub(super) async fn run(self) {
        let mut inflight: JoinSet<Done> = JoinSet::new();
        let mut backoff = Backoff::default();
        let mut complaint = Complaint::default();
        loop {
            let written = self.store.routes().written();
            tokio::pin!(written);
            written.as_mut().enable();
            let mut more_due = false;
            if let Some(limit) = self.room(&inflight, &backoff) {
                match self.claim(limit).await {
                    Ok(claimed) => {
                        more_due = claimed.len() == limit && !backoff.is_open();
                        for (entry, event) in claimed {
                            inflight.spawn(self.attempt(entry, event));
                        }
                    }
                    Err(e) => complaint.log(&e, "cannot claim outbox entries; retrying"),
                }
            }
            if inflight.is_empty() && more_due {
                continue;
            }
            let pause = backoff.wait().unwrap_or(self.poll);
            let can_take_more = !more_due && !backoff.is_open();
            tokio::select! {
                Some(first) = inflight.join_next(), if !inflight.is_empty() => {
                    let mut done: Vec<Done> = first.into_iter().collect();
                    while let Some(next) = inflight.try_join_next() {
                        done.extend(next);
                    }
                    self.settle(done, &mut backoff, &mut complaint).await;
                }
                () = &mut written, if can_take_more => {}
                () = tokio::time::sleep(pause), if !more_due => {}
            }
        }
    }

    /// How many entries to claim now, if any: the free places (when at least half are
    /// free, or none is taken: claiming for one place at a time under load would cost a
    /// query per answer); while backing off, one probe when its pause is over.
    fn room(&self, inflight: &JoinSet<Done>, backoff: &Backoff) -> Option<usize> {
        let max = self.destination.max_in_flight;
        let free = max.saturating_sub(inflight.len());
        if backoff.is_open() {
            return (inflight.is_empty() && backoff.wait().is_none()).then_some(1);
        }
        (free > 0 && (inflight.is_empty() || free * 2 >= max)).then_some(free)
    }

    /// Claims up to `limit` due entries, with their events (`None`: no longer stored).
    async fn claim(&self, limit: usize) -> Result<Vec<(Claimed, Option<ForwardedEvent>)>, String> {
        let lease = self.destination.timeout + LEASE_MARGIN;
        let claimed = self
            .store
            .claim_due(self.destination.name(), limit, lease)
            .await
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = claimed.iter().map(|c| c.event_id).collect();
        let mut events = self
            .store
            .forwarded_events(&ids)
            .await
            .map_err(|e| e.to_string())?;
        Ok(claimed
            .into_iter()
            .map(|c| {
                let event = events
                    .iter()
                    .position(|e| e.id == c.event_id)
                    .map(|i| events.swap_remove(i));
                (c, event)
            })
            .collect())
    }

    /// One attempt, as a task of its own.
    fn attempt(
        &self,
        entry: Claimed,
        event: Option<ForwardedEvent>,
    ) -> impl std::future::Future<Output = Done> + Send + 'static {
        let (client, destination) = (self.client.clone(), Arc::clone(&self.destination));
        async move {
            let body = match event.as_ref().map(message::body) {
                Some(Ok(body)) => body,
                Some(Err(e)) => {
                    let mut failed = Attempt::missing();
                    failed.error = Some(format!("the message cannot be written: {e}"));
                    return (entry, failed);
                }
                None => return (entry, Attempt::missing()),
            };
            let d = &destination;
            let result = attempt::send(&client, &d.url, &d.key, &entry.message_id, body).await;
            (entry, result)
        }
    }

    /// Records what the attempts came to, in one statement, and counts them.
    async fn settle(&self, done: Vec<Done>, backoff: &mut Backoff, complaint: &mut Complaint) {
        let name = self.destination.name().to_owned();
        let now = crate::now_millis();
        let mut settled = Vec::with_capacity(done.len());
        for (entry, attempt) in done {
            let next = next(&self.destination.retry_schedule, &entry, &attempt);
            metrics::counter!(m::FORWARD_ATTEMPTS, "destination" => name.clone(), "outcome" => attempt.outcome.label())
                .increment(1);
            match next {
                Next::Delivered => {
                    let latency = (now - entry.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!(m::FORWARD_LATENCY, "destination" => name.clone())
                        .record(latency);
                }
                Next::Dead => {
                    metrics::counter!(m::FORWARD_DEAD, "destination" => name.clone()).increment(1);
                    tracing::warn!(
                        message_id = %entry.message_id,
                        attempts = entry.attempt,
                        error = attempt.error.as_deref().unwrap_or_default(),
                        "a forwarded message is dead: no more attempts (callhook forward retry replays it)"
                    );
                }
                Next::Retry(_) => {}
            }
            backoff.record(&attempt);
            settled.push(Settled {
                event_id: entry.event_id,
                attempt: entry.attempt,
                next,
                status: attempt.status,
                error: attempt.error,
            });
        }
        if let Err(e) = self.store.settle(&name, &settled).await {
            // The entries stay leased: their attempts are made again when the leases end.
            complaint.log(
                &e.to_string(),
                "cannot record forwarding outcomes; retrying",
            );
        }
    }
}

/// What becomes of an entry after `attempt`: delivered, dead (410, no event, or the last
/// attempt of the schedule failed), or due again after the schedule's next delay (a tenth
/// more at most, spread by the entry, so a destination that was down is not hit by every
/// retry at once; longer if the answer's `Retry-After` says so).
pub fn next(schedule: &[Duration], entry: &Claimed, attempt: &Attempt) -> Next {
    match attempt.outcome {
        Outcome::Delivered => return Next::Delivered,
        Outcome::Gone | Outcome::Missing => return Next::Dead,
        Outcome::Refused | Outcome::Timeout | Outcome::Unreachable => {}
    }
    let made = usize::try_from(entry.attempt).unwrap_or(0);
    let Some(&delay) = schedule.get(made) else {
        return Next::Dead;
    };
    let spread = (entry.event_id.unsigned_abs() ^ made as u64).wrapping_mul(0x9e37_79b9) % 1000;
    let jittered = delay + delay.mul_f64(spread as f64 / 10_000.0);
    Next::Retry(jittered.max(attempt.retry_after.unwrap_or_default()))
}

/// Whether the destination is in trouble, and how long to wait before the next probe.
#[derive(Debug, Default)]
struct Backoff {
    /// Failures in a row that were the destination's trouble.
    failures: u32,
    pause: Duration,
    until: Option<Instant>,
}

impl Backoff {
    fn is_open(&self) -> bool {
        self.failures >= TROUBLE
    }

    /// How long the next probe must wait; `None` when it may go now (or no probing).
    fn wait(&self) -> Option<Duration> {
        let until = self.until.filter(|_| self.is_open())?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn record(&mut self, attempt: &Attempt) {
        if attempt.outcome == Outcome::Delivered {
            if self.is_open() {
                tracing::info!("the destination answers again; forwarding at full speed");
            }
            *self = Self::default();
        } else if attempt.outcome.is_trouble(attempt.status) {
            self.failures += 1;
            if self.failures == TROUBLE {
                tracing::warn!(
                    error = attempt.error.as_deref().unwrap_or_default(),
                    "the destination fails every attempt; probing it with one message at a time until it answers"
                );
            }
            // The pause doubles with each failed probe; the failures of attempts that
            // were under way when the worker started backing off count once.
            let probing = self.until.is_none_or(|t| t <= Instant::now());
            if self.is_open() && probing {
                self.pause = (self.pause * 2).clamp(Duration::from_secs(1), MAX_PAUSE);
                self.until = Some(Instant::now() + self.pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attempt: i32) -> Claimed {
        Claimed {
            event_id: 42,
            message_id: "msg_x".into(),
            attempt,
            created_at: 0,
        }
    }

    fn failed(outcome: Outcome, retry_after: Option<u64>) -> Attempt {
        Attempt {
            outcome,
            status: None,
            error: Some("x".into()),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_schedule_then_dead() {
        let schedule = [0, 5, 300].map(Duration::from_secs);
        let retry = |n: i32, a: &Attempt| match next(&schedule, &entry(n), a) {
            Next::Retry(d) => Some(d),
            _ => None,
        };
        let timeout = failed(Outcome::Timeout, None);
        let after_first = retry(1, &timeout).unwrap_or_default();
        assert!((Duration::from_secs(5)..=Duration::from_millis(5500)).contains(&after_first));
        let after_second = retry(2, &timeout).unwrap_or_default();
        assert!((Duration::from_secs(300)..=Duration::from_secs(330)).contains(&after_second));
        assert_eq!(
            next(&schedule, &entry(3), &timeout),
            Next::Dead,
            "after the last"
        );
        let slow_down = failed(Outcome::Refused, Some(3600));
        assert_eq!(retry(1, &slow_down), Some(Duration::from_secs(3600)));
        assert_eq!(
            next(&schedule, &entry(1), &failed(Outcome::Gone, None)),
            Next::Dead
        );
        assert_eq!(next(&schedule, &entry(1), &Attempt::missing()), Next::Dead);
        let ok = Attempt {
            outcome: Outcome::Delivered,
            status: Some(204),
            error: None,
            retry_after: None,
        };
        assert_eq!(next(&schedule, &entry(3), &ok), Next::Delivered);
    }

    #[test]
    fn backs_off_after_trouble_in_a_row_and_recovers() {
        let mut b = Backoff::default();
        let refused = Attempt {
            status: Some(400),
            ..failed(Outcome::Refused, None)
        };
        for _ in 0..10 {
            b.record(&refused);
        }
        assert!(
            !b.is_open(),
            "a refused message is not the destination's trouble"
        );
        for _ in 0..TROUBLE {
            b.record(&failed(Outcome::Unreachable, None));
        }
        assert!(b.is_open() && b.wait().is_some());
        b.record(&failed(Outcome::Timeout, None));
        assert_eq!(
            b.pause,
            Duration::from_secs(1),
            "attempts already under way count once"
        );
        b.until = Some(Instant::now());
        b.record(&failed(Outcome::Timeout, None));
        assert_eq!(
            b.pause,
            Duration::from_secs(2),
            "each failed probe doubles the pause"
        );
        b.record(&Attempt {
            outcome: Outcome::Delivered,
            status: Some(200),
            error: None,
            retry_after: None,
        });
        assert!(!b.is_open() && b.wait().is_none());
    }
}
