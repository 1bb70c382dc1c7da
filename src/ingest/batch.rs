//! A batch as a writer holds it: the jobs it took from the queue (`queue.rs`) sorted into
//! the deliveries to store ([`Deliveries`]) and the refusals to keep ([`Rejections`]),
//! each with the requests waiting for the outcome; and the [`Plan`] of the deliveries:
//! which distinct rows they write, and which outcome each delivery gets back.
//!
//! The writer (`writer.rs`) writes the plan; what the database cannot take goes on to
//! `handoff.rs`.

use std::time::Instant;

use tokio::sync::oneshot;

use super::outcome::Outcome;
use super::queue::{Job, Reply};
use crate::metrics as m;
use crate::protocol::EventRow;
use crate::store::{BatchRow, RejectedRow, merge};

/// A batch's deliveries: their rows, and the requests waiting for the outcome.
#[derive(Default)]
pub(super) struct Deliveries {
    pub(super) rows: Vec<Vec<EventRow>>,
    pub(super) replies: Vec<Reply>,
}

impl Deliveries {
    pub(super) fn len(&self) -> usize {
        self.replies.len()
    }
}

/// A batch's rejected deliveries, to be kept in `rejected_deliveries`.
#[derive(Default)]
pub(super) struct Rejections {
    pub(super) rows: Vec<RejectedRow>,
    pub(super) replies: Vec<oneshot::Sender<bool>>,
}

impl Rejections {
    pub(super) fn len(&self) -> usize {
        self.replies.len()
    }

    pub(super) fn answer(self, recorded: bool) {
        for reply in self.replies {
            let _ = reply.send(recorded);
        }
    }
}

/// Sorts the jobs a writer took (leaving `jobs` empty) into the batch's deliveries and
/// rejections, recording how long each waited in the queue.
pub(super) fn sort(jobs: &mut Vec<Job>) -> (Deliveries, Rejections) {
    let now = Instant::now();
    let mut events = Deliveries::default();
    let mut rejected = Rejections::default();
    for job in jobs.drain(..) {
        metrics::histogram!(m::QUEUE_WAIT).record(now.duration_since(job.enqueued()).as_secs_f64());
        match job {
            Job::Events { rows, reply, .. } => {
                events.rows.push(rows);
                events.replies.push(reply);
            }
            Job::Rejected { row, reply, .. } => {
                rejected.rows.push(row);
                rejected.replies.push(reply);
            }
        }
    }
    (events, rejected)
}

/// How a batch's deliveries map onto distinct rows: the same event twice in one batch is
/// written once, with its count, and only the first delivery carrying it can be
/// `Inserted`.
pub(super) struct Plan<'a> {
    /// The distinct rows, with how many deliveries of each the batch holds.
    pub(super) rows: Vec<BatchRow<'a>>,
    /// Per input row (all deliveries' rows, in order): its distinct row, and whether it
    /// was the first to carry it.
    carriers: Vec<(usize, bool)>,
    /// Where each delivery's rows end in `carriers`.
    ends: Vec<usize>,
}

impl<'a> Plan<'a> {
    pub(super) fn new(deliveries: &'a [Vec<EventRow>]) -> Self {
        let (rows, carriers) = merge(deliveries.iter().flatten());
        let ends = deliveries
            .iter()
            .scan(0, |end, rows| {
                *end += rows.len();
                Some(*end)
            })
            .collect();
        Self {
            rows,
            carriers,
            ends,
        }
    }

    /// Per delivery: `Inserted` when any row it first carried was new to the database.
    pub(super) fn outcomes(&self, inserted: &[bool]) -> Vec<Outcome> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let mine = &self.carriers[start..end];
                start = end;
                if mine.iter().any(|&(d, first)| first && inserted[d]) {
                    Outcome::Inserted
                } else {
                    Outcome::Duplicate
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::delivery;

    #[test]
    fn repeats_inside_a_batch_are_written_once_and_counted() {
        let batch = vec![delivery("a"), delivery("b"), delivery("a"), delivery("a")];
        let plan = Plan::new(&batch);
        let counts: Vec<(Option<&str>, i32)> = plan
            .rows
            .iter()
            .map(|r| (r.row.call_id.as_deref(), r.deliveries))
            .collect();
        assert_eq!(counts, vec![(Some("a"), 3), (Some("b"), 1)]);
        use Outcome::{Duplicate, Inserted};
        // "a" was new to the database, "b" was already stored.
        assert_eq!(
            plan.outcomes(&[true, false]),
            vec![Inserted, Duplicate, Duplicate, Duplicate]
        );
        // Both already stored.
        assert_eq!(plan.outcomes(&[false, false]), vec![Duplicate; 4]);
    }
}
