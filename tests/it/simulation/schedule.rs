//! A schedule, drawn from a seed alone: the writers, the journal, the deliveries of every
//! family and the timeline of faults (mod.rs says what each does).

use std::time::Duration;

use callhook::faults::{Fault, Point};

#[derive(Debug, Clone)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub(super) fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// A status callback: one row.
    Status,
    /// A v4 member change of this many members: one row each.
    Members(usize),
    /// A TRTC room event on `/trtc`: one row.
    Room,
}

#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) id: String,
    pub(super) family: Family,
    /// When its first delivery starts, from the schedule's start.
    pub(super) at: Duration,
    /// Deliveries of the same body after the first was acknowledged.
    pub(super) again: usize,
}

impl Event {
    pub(super) fn rows(&self) -> usize {
        match self.family {
            Family::Members(n) => n,
            Family::Status | Family::Room => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Action {
    /// Every PostgreSQL statement fails for this long.
    Outage(Duration),
    /// A table locked in PostgreSQL for this long; then the connections waiting on it are
    /// killed (`kill`) or let through.
    Lock {
        table: &'static str,
        hold: Duration,
        kill: bool,
    },
    /// The process dies (its runtime dropped) and restarts after this pause.
    Crash(Duration),
    /// Every row written to `call_events` costs this long (a trigger), for this long: a
    /// replay step of many rows passes its deadline where a smaller one would not.
    SlowRows { per_row: Duration, hold: Duration },
}

#[derive(Debug, Clone)]
pub(super) struct Schedule {
    pub(super) max_batch: usize,
    pub(super) writers: usize,
    /// A journal of the smallest size, found full at start (an earlier outage filled it;
    /// its chunks numbered from this): appends are answered 503, the replay works in its
    /// reserve.
    pub(super) small_journal: Option<i64>,
    /// Per thousand statements.
    pub(super) fault_rate: u64,
    pub(super) points: Vec<Point>,
    pub(super) kinds: Vec<Fault>,
    pub(super) events: Vec<Event>,
    pub(super) actions: Vec<(Duration, Action)>,
    pub(super) senders: usize,
    /// callhook runs as a real process, crashes are SIGKILL, and the faults are the
    /// database's own (outages become locks whose waiters are killed).
    pub(super) process: bool,
}

impl Schedule {
    pub(super) fn draw(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let max_batch = rng.pick(&[1, 2, 3, 8, 64, 512]);
        let writers = rng.pick(&[1, 2, 4]);
        let small_journal = rng.chance(10).then(|| rng.pick(&[0, 300, 100_000]));
        let fault_rate = rng.pick(&[0, 20, 50, 100, 200]);
        let points: Vec<Point> = Point::ALL.into_iter().filter(|_| rng.chance(70)).collect();
        let mut kinds: Vec<Fault> = Fault::ALL.into_iter().filter(|_| rng.chance(60)).collect();
        if kinds.is_empty() {
            kinds.push(rng.pick(&Fault::ALL));
        }
        let span = rng.millis(200, 1200);
        let n = 5 + rng.below(35) as usize;
        let events = (0..n)
            .map(|i| {
                let family = match rng.below(10) {
                    0..=4 => Family::Status,
                    5..=7 => Family::Members(1 + rng.below(5) as usize),
                    _ => Family::Room,
                };
                Event {
                    id: format!("s{seed:x}-{i}"),
                    family,
                    at: Duration::from_millis(rng.below(span.as_millis() as u64)),
                    again: if rng.chance(15) {
                        1 + rng.below(2) as usize
                    } else {
                        0
                    },
                }
            })
            .collect();
        let mut actions = Vec::new();
        // Most schedules journal (an outage, a lock): the replay is where the faults bite.
        for _ in 0..1 + rng.below(3) {
            let at = rng.millis(0, span.as_millis() as u64);
            let action = match rng.below(20) {
                0..=7 => Action::Outage(rng.millis(100, 900)),
                8..=9 => Action::SlowRows {
                    per_row: rng.millis(10, 40),
                    hold: rng.millis(500, 3000),
                },
                10..=15 => Action::Lock {
                    table: rng.pick(&["ingest_fences", "call_events", "journal_progress"]),
                    hold: rng.millis(300, 3000),
                    kill: rng.chance(50),
                },
                _ => Action::Crash(rng.millis(0, 300)),
            };
            actions.push((at, action));
        }
        actions.sort_by_key(|(at, _)| *at);
        Self {
            max_batch,
            writers,
            small_journal,
            fault_rate,
            points,
            kinds,
            events,
            actions,
            senders: rng.pick(&[1, 4, 8]),
            process: rng.chance(8),
        }
    }
}
