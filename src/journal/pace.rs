//! How many rows a replay step takes, so that a slow database drains the journal in steps
//! that fit its deadline, without failing the same large step again and again.
//!
//! A step that passes its deadline is retried with half the rows, and half of it becomes
//! the *threshold*: steps double back up to it, then grow by an eighth per step. So a
//! database that stays slow is probed for a larger step only now and then, instead of
//! after every step that fit (each step that passes its deadline costs the deadline, and
//! the abandoned step still runs on the server for a while, holding the progress lock the
//! next step waits for). A database that is fast again is back at whole chunks after a few
//! dozen steps. The threshold is forgotten when the journal drains: the next outage starts
//! with whole chunks.

/// The size of the next replay step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Eighths of the rows the next step takes (0: a whole chunk), so that growing by an
    /// eighth grows a step of one row too, over eight steps.
    eighths: usize,
    /// Half the size of the last step that passed its deadline (0: none since the journal
    /// last drained): steps double up to it, and grow by an eighth past it.
    threshold: usize,
}

impl Pace {
    /// Rows for the next step of a chunk of at most `chunk` rows.
    pub(crate) fn next(&self, chunk: usize) -> usize {
        let chunk = chunk.max(1);
        match self.eighths / 8 {
            0 => chunk,
            n => n.min(chunk),
        }
    }

    /// A step of `step` rows passed its deadline. Returns the rows to retry with, or `None`
    /// when the step was a single row (nothing smaller can be tried).
    pub(crate) fn timed_out(&mut self, step: usize) -> Option<usize> {
        let half = step / 2;
        self.threshold = half.max(1);
        self.eighths = self.threshold * 8;
        (half >= 1).then_some(half)
    }

    /// A step of `step` rows finished in time: the next may take more.
    pub(crate) fn finished(&mut self, step: usize, chunk: usize) {
        let chunk = chunk.max(1);
        let now = self.eighths.max(step.min(chunk) * 8);
        let grown = if self.threshold == 0 {
            now.saturating_mul(2)
        } else if now < self.threshold * 8 {
            now.saturating_mul(2).min(self.threshold * 8)
        } else {
            now + (now / 8).max(1)
        };
        self.eighths = grown.min(chunk * 8);
    }

    /// The journal drained: the next outage's replay starts with whole chunks.
    pub(crate) fn drained(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drains `rows` rows, in chunks of `chunk`, into a database that finishes a step in
    /// time when it has at most `fits` rows. Returns (steps that finished, timeouts).
    fn drain(pace: &mut Pace, rows: usize, chunk: usize, fits: usize) -> (usize, usize) {
        let (mut left, mut done, mut timeouts) = (rows, 0, 0);
        while left > 0 {
            let step = pace.next(chunk);
            let part = step.min(left);
            if part > fits {
                timeouts += 1;
                assert!(pace.timed_out(step).is_some() || fits == 0, "{pace:?}");
                continue;
            }
            pace.finished(step, chunk);
            left -= part;
            done += 1;
        }
        (done, timeouts)
    }

    #[test]
    fn a_database_that_stays_slow_is_probed_now_and_then() {
        for chunk in [64, 256, 512] {
            for fits in [1, 3, 10, 30, 50, chunk - 1] {
                let rows = 20_000;
                let (steps, timeouts) = drain(&mut Pace::default(), rows, chunk, fits);
                // At most one step in five passes its deadline (about one in seven: an
                // eighth more per step doubles the size in six steps). When the step
                // doubled after every step that fit, one in two did.
                assert!(
                    timeouts * 5 <= steps + 5,
                    "chunk {chunk}, {fits} rows fit: {timeouts} timeouts in {steps} steps"
                );
            }
        }
    }

    #[test]
    fn the_rows_per_step_stay_within_the_chunk_and_above_zero() {
        let mut pace = Pace::default();
        for (fits, chunk) in [(5, 64), (300, 64), (0, 8), (7, 1), (1000, 512)] {
            for _ in 0..200 {
                let step = pace.next(chunk);
                assert!((1..=chunk).contains(&step), "{step} of {chunk}: {pace:?}");
                if step > fits {
                    if pace.timed_out(step).is_none() {
                        assert_eq!(step, 1);
                    }
                } else {
                    pace.finished(step, chunk);
                }
            }
        }
    }

    #[test]
    fn a_database_fast_again_is_back_at_whole_chunks_soon() {
        for chunk in [64, 512, 4096] {
            let mut pace = Pace::default();
            drain(&mut pace, 5_000, chunk, 3);
            let mut steps = 0;
            while pace.next(chunk) < chunk {
                let step = pace.next(chunk);
                pace.finished(step, chunk);
                steps += 1;
            }
            // Six steps for each doubling at most, from a step of one or two rows.
            let bound = 6 * chunk.ilog2() as usize;
            assert!(steps <= bound, "chunk {chunk}: {steps} steps to grow back");
            pace.drained();
            assert_eq!(pace.next(chunk), chunk);
        }
    }
}
