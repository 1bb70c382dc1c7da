//! The generator: an endless, deterministic stream of [`Call`]s, their participants,
//! outcomes and timelines drawn from the tables in [`super::tables`].

use super::model::{Act, Call, CallOutcome, Person, Step};
use super::rng::Rng;
use super::tables::{
    GROUP_ANSWERS, GROUP_PERCENT, GROUP_SIZES, LAST_START_BEFORE_END_MS, PLATFORMS,
    RING_TIMEOUT_MS, Reaction, SINGLE_OUTCOMES, TALK, VIDEO_PERCENT, WINDOW_MS,
};

/// An endless, deterministic stream of calls.
pub struct Generator {
    seed: u64,
    rng: Rng,
    ids: Rng,
    users: u64,
    window_start: i64,
    slot: i64,
    index: u64,
    total: u64,
}

impl Generator {
    /// `calls` calls spread over the day before `end_time` (Unix seconds). The calls'
    /// shape (participants, outcomes, durations) depends on the seed only; their ids and
    /// times on the seed and the end time.
    pub fn new(seed: u64, calls: u64, end_time: i64) -> Self {
        let end = end_time.saturating_mul(1000);
        let span = WINDOW_MS - LAST_START_BEFORE_END_MS;
        let n = i64::try_from(calls.max(1)).unwrap_or(i64::MAX);
        Self {
            seed,
            rng: Rng::new(seed),
            ids: Rng::new(seed ^ Rng::new(end_time as u64).next_u64()),
            users: (calls.saturating_mul(3) / 2).clamp(20, 1_000_000),
            window_start: end - WINDOW_MS,
            slot: (span / n).max(1),
            index: 0,
            total: calls,
        }
    }

    /// A user of the pool, with the same device in every call.
    fn person(&self, n: u64) -> Person {
        let mut r = Rng::new(self.seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        let platform = r.weighted(&PLATFORMS);
        let net = ["192.0.2", "198.51.100", "203.0.113"][r.below(3) as usize];
        Person {
            user_id: format!("user_{n:04}"),
            platform,
            ip: format!("{net}.{}", r.between(1, 254)),
        }
    }

    /// `count` users, all different from each other and from `taken`.
    fn pick_people(&mut self, count: usize, taken: &[Person]) -> Vec<Person> {
        let mut out: Vec<Person> = Vec::with_capacity(count);
        while out.len() < count {
            let n = self.rng.below(self.users);
            let p = self.person(n);
            if !taken.contains(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    fn uuid(&mut self) -> String {
        let a = self.ids.next_u64();
        let b = self.ids.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn talk(&mut self) -> i64 {
        let (lo, hi) = self.rng.weighted(&TALK);
        self.rng.between(lo, hi)
    }

    fn one(&mut self) -> Call {
        let t0 = self.window_start
            + self.slot.saturating_mul(self.index as i64)
            + self.rng.between(0, self.slot - 1);
        let group = self.rng.percent(GROUP_PERCENT);
        let video = self.rng.percent(VIDEO_PERCENT);
        let alt_spelling = self.rng.percent(20);
        let room_id_numeric = self.rng.percent(50);
        let caller = self.pick_people(1, &[]);
        let (people, invited, outcome, steps) = if group {
            self.group(t0, caller)
        } else {
            self.single(t0, caller)
        };
        let call_id = self.uuid();
        let room = self.ids.next_u64();
        let room_id = if room_id_numeric {
            (10_000_000 + room % 90_000_000).to_string()
        } else {
            format!("room-{:08x}", room >> 32)
        };
        let group_id = group.then(|| {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            let tail: String = (0..10)
                .map(|_| char::from(ALPHABET[self.ids.below(ALPHABET.len() as u64) as usize]))
                .collect();
            format!("@TGS#{tail}")
        });
        Call {
            call_id,
            room_id,
            room_id_numeric,
            group_id,
            video,
            people,
            invited,
            outcome,
            steps,
            alt_spelling,
        }
    }

    fn single(
        &mut self,
        t0: i64,
        mut people: Vec<Person>,
    ) -> (Vec<Person>, usize, CallOutcome, Vec<Step>) {
        people.extend(self.pick_people(1, &people));
        let outcome = self.rng.weighted(&SINGLE_OUTCOMES);
        let step = |at, who, act| Step { at, who, act };
        let mut steps = vec![step(t0, 0, Act::StartCall)];
        let ring = t0 + self.rng.between(200, 1_500);
        if outcome != CallOutcome::CallBusy {
            steps.push(step(ring, 1, Act::Ring));
        }
        match outcome {
            CallOutcome::NormalEnd => {
                let accepted = t0 + self.rng.between(2_000, 25_000);
                let end = accepted + self.talk();
                let who = self.rng.below(2) as usize;
                steps.push(step(accepted, 1, Act::Accept));
                steps.push(step(end, who, Act::Hangup));
                steps.push(step(end, 1 - who, Act::Ended));
            }
            CallOutcome::NotAnswer => {
                let ignored = self.rng.percent(15);
                let at = t0 + RING_TIMEOUT_MS + self.rng.between(0, 999);
                steps.push(step(at, 1, Act::NotAnswer { ignored }));
            }
            CallOutcome::Reject => {
                steps.push(step(t0 + self.rng.between(2_000, 12_000), 1, Act::Reject));
            }
            CallOutcome::CallBusy => {
                steps.push(step(t0 + self.rng.between(200, 900), 1, Act::Busy));
            }
            CallOutcome::Cancel => {
                steps.push(step(t0 + self.rng.between(2_000, 20_000), 0, Act::Cancel));
            }
            CallOutcome::Interrupt => {
                if self.rng.percent(75) {
                    let accepted = t0 + self.rng.between(2_000, 25_000);
                    let lost = accepted + self.rng.between(5_000, 300_000);
                    let who = self.rng.below(2) as usize;
                    steps.push(step(accepted, 1, Act::Accept));
                    steps.push(step(lost, who, Act::Interrupt));
                    steps.push(step(lost, 1 - who, Act::Ended));
                } else {
                    steps.push(step(t0 + self.rng.between(1_000, 10_000), 0, Act::Fail));
                }
            }
        }
        (people, 1, outcome, steps)
    }

    /// A group call: every callee answers (or not) on its own; it ends when at most one
    /// participant is left. Everyone stays at least 40 s, so every late join and every
    /// ringing timeout happens before the end.
    fn group(
        &mut self,
        t0: i64,
        people: Vec<Person>,
    ) -> (Vec<Person>, usize, CallOutcome, Vec<Step>) {
        let invited = self.rng.weighted(&GROUP_SIZES);
        let mut g = GroupCall {
            people,
            steps: vec![Step {
                at: t0,
                who: 0,
                act: Act::StartCall,
            }],
            present: Vec::new(),
        };
        let callees = self.pick_people(invited, &g.people);
        g.people.extend(callees);
        self.group_answers(t0, invited, &mut g);
        let first_accept = g.present.iter().map(|p| p.1).min().unwrap_or(t0);
        g.present.push((0, first_accept));
        if self.rng.percent(10) {
            self.late_join(first_accept, &mut g);
        }
        if self.rng.percent(10) {
            self.late_invite(first_accept, &mut g);
        }
        self.group_leaves(first_accept, &mut g);
        (g.people, invited, CallOutcome::NormalEnd, g.steps)
    }

    /// How each of the `invited` callees reacts to the ring (at least one answers).
    fn group_answers(&mut self, t0: i64, invited: usize, g: &mut GroupCall) {
        let mut answers: Vec<Reaction> = (0..invited)
            .map(|_| self.rng.weighted(&GROUP_ANSWERS))
            .collect();
        if !answers.contains(&Reaction::Accept) {
            answers[0] = Reaction::Accept;
        }
        for (i, answer) in answers.iter().enumerate() {
            let who = i + 1;
            if *answer != Reaction::Busy {
                g.push(t0 + self.rng.between(200, 1_500), who, Act::Ring);
            }
            match answer {
                Reaction::Accept => {
                    let at = t0 + self.rng.between(2_000, 20_000);
                    g.push(at, who, Act::Accept);
                    g.present.push((who, at));
                }
                Reaction::LetRing => {
                    let at = t0 + RING_TIMEOUT_MS + self.rng.between(0, 999);
                    let ignored = self.rng.percent(15);
                    g.push(at, who, Act::NotAnswer { ignored });
                }
                Reaction::Reject => {
                    g.push(t0 + self.rng.between(2_000, 15_000), who, Act::Reject);
                }
                Reaction::Busy => {
                    g.push(t0 + self.rng.between(200, 900), who, Act::Busy);
                }
            }
        }
    }

    /// One more user joins the running call by itself.
    fn late_join(&mut self, first_accept: i64, g: &mut GroupCall) {
        let who = self.add_person(g);
        let at = first_accept + self.rng.between(1_000, 10_000);
        g.push(at, who, Act::Join);
        g.present.push((who, at));
    }

    /// The caller invites one more user, who answers or lets it ring.
    fn late_invite(&mut self, first_accept: i64, g: &mut GroupCall) {
        let who = self.add_person(g);
        let invite = first_accept + self.rng.between(1_000, 5_000);
        let ring = invite + self.rng.between(200, 1_000);
        g.push(invite, 0, Act::Invite { invitee: who });
        g.push(ring, who, Act::Ring);
        if self.rng.percent(80) {
            let at = ring + self.rng.between(1_000, 3_000);
            g.push(at, who, Act::Accept);
            g.present.push((who, at));
        } else {
            let ignored = self.rng.percent(15);
            g.push(invite + RING_TIMEOUT_MS, who, Act::NotAnswer { ignored });
        }
    }

    /// A user not yet in the call, added to it; returns its index.
    fn add_person(&mut self, g: &mut GroupCall) -> usize {
        let extra = self.pick_people(1, &g.people);
        g.people.extend(extra);
        g.people.len() - 1
    }

    /// Everyone present talks for a while and hangs up; the call ends when the
    /// second-to-last participant hangs up, around the last one.
    fn group_leaves(&mut self, first_accept: i64, g: &mut GroupCall) {
        let mut leaves: Vec<(i64, usize)> = Vec::with_capacity(g.present.len());
        for &(who, joined) in &g.present {
            leaves.push((joined + 40_000 + self.talk(), who));
        }
        leaves.sort_unstable();
        let end = leaves.iter().rev().nth(1).map_or(first_accept, |l| l.0);
        let last = leaves.last().map_or(0, |l| l.1);
        for &(at, who) in &leaves {
            if who == last {
                g.push(end, who, Act::Ended);
            } else {
                g.push(at.min(end), who, Act::Hangup);
            }
        }
    }
}

/// A group call being drawn.
struct GroupCall {
    people: Vec<Person>,
    steps: Vec<Step>,
    /// (who, joined at) of everyone who is in the call at some point.
    present: Vec<(usize, i64)>,
}

impl GroupCall {
    fn push(&mut self, at: i64, who: usize, act: Act) {
        self.steps.push(Step { at, who, act });
    }
}

impl Iterator for Generator {
    type Item = Call;

    fn next(&mut self) -> Option<Call> {
        if self.index >= self.total {
            return None;
        }
        let mut call = self.one();
        // Stable: equal times keep the order they were generated in (e.g. the hang-up
        // before the other side's end).
        call.steps.sort_by_key(|s| s.at);
        self.index += 1;
        Some(call)
    }
}
