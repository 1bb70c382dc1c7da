//! The randomized fault test (issue 23): schedules drawn from a seed, run against a real
//! PostgreSQL and a real outage journal, then checked against the one promise that
//! matters: every acknowledged delivery is stored exactly once, with the right
//! `deliveries`, and the journal drains.
//!
//! A schedule draws the writers' batch size and count, a journal that is roomy or nearly
//! full, and a timeline of deliveries of every family (a status callback, a v4 member
//! change that fans out into several rows, a TRTC room event), each retried by its sender
//! until acknowledged (as Tencent does) and some delivered again after that; and faults:
//! - at any statement of the PostgreSQL store or of the journal, with a drawn rate and
//!   mix: fail before it runs, fail after it committed, hang past the deadline (before or
//!   after running), or have the server kill every connection (src/faults.rs);
//! - outages: every PostgreSQL statement fails for a while (writes are journaled, then
//!   replayed while live writes go on);
//! - real locks held in PostgreSQL (on `ingest_fences` or `call_events`) past the write
//!   deadline, then released (the waiting writes commit late, racing the replay's fence
//!   settlement) or with the waiting connections killed;
//! - crashes: the process's runtime is dropped mid-flight, as `kill -9` would stop it,
//!   and callhook restarts on the same spool directory.
//!
//! Then the faults stop, the senders finish, the journal must drain, and the stored rows
//! are checked against what the senders saw, and the forwarding outbox against the stored
//! rows: every event has exactly its entries, one per destination it matches. A failing schedule prints its seed and how to
//! run it alone. `cargo test` runs [`DEFAULT_SCHEDULES`]; `bench/simulate.sh` runs any
//! number (`CALLHOOK_SIM_SCHEDULES`, `CALLHOOK_SIM_SEED`, `CALLHOOK_SIM_PARALLEL`).

mod check;
mod database;
mod host;
mod plan;
mod schedule;
mod senders;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhook::config::Settings;
use callhook::faults::{Fault, Faults, Point};
use tokio::sync::RwLock;

use crate::helpers::*;
use check::check;
use database::{
    database_name, drop_database, fill_journal, fresh_database, hold_lock, slow_rows, wait_drained,
};
use host::{Running, Stop};
use plan::FaultPlan;
use schedule::{Action, Rng, Schedule};
use senders::{Senders, Tally};

/// Schedules `cargo test` runs.
const DEFAULT_SCHEDULES: u64 = 200;
/// The first seed `cargo test` runs (the same schedules every run; the bench draws a new
/// first seed each time unless given one).
const DEFAULT_SEED: u64 = 0x5eed_0023;
/// A live write's deadline in the schedules (1.5 s in production): four times this is a
/// replay step's.
const WRITE_DEADLINE: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------
// One schedule, start to end

/// What one schedule did, for the summary.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) deliveries: i64,
    pub(super) acked: i64,
    pub(super) rows: usize,
    crashes: usize,
    /// Schedules that ran the real binary (their crashes are SIGKILL).
    processes: usize,
    struck: BTreeMap<(Point, Fault), u64>,
}

/// callhook's settings for a schedule: its writers and journal, short deadlines (a write
/// 250 ms, a tick 25 ms) so that many schedules run quickly, and the fault plan.
fn settings(s: &Schedule, url: &str, spool: &std::path::Path, plan: Arc<FaultPlan>) -> Settings {
    let mut settings = TestDb::postgres_at(url.to_owned()).settings();
    settings.spool.dir = Some(spool.to_owned());
    settings.spool.max_bytes = if s.small_journal.is_some() {
        0
    } else {
        1 << 30
    };
    settings.ingest.max_batch = s.max_batch;
    settings.ingest.writers = s.writers;
    settings.database.pool_size = s.writers as u32 + 2;
    settings.database.acquire_timeout = Duration::from_millis(500);
    settings.database.write_deadline = Some(WRITE_DEADLINE);
    settings.database.faults = Faults::new(plan);
    settings.request_timeout = Duration::from_millis(2000);
    settings.shutdown_timeout = Duration::from_secs(5);
    settings.tick = Duration::from_millis(25);
    settings.forward = check::destinations();
    settings
}

/// The path prefix of one schedule's callback routes.
fn route_prefix(seed: u64) -> String {
    format!("/s{seed:x}")
}

/// The base URL a schedule's senders post to: its callhook's address and its routes.
fn senders_base(running: &Running, config: &Settings) -> String {
    format!(
        "{}{}",
        running.base(),
        config.callback_path.trim_end_matches('/')
    )
}

async fn run_schedule(seed: u64) -> Result<Outcome, String> {
    let s = Schedule::draw(seed);
    let url = fresh_database(seed).await;
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let plan = Arc::new(FaultPlan {
        rng: Mutex::new(Rng(seed ^ 0xfa17)),
        rate: s.fault_rate,
        points: s.points.clone(),
        kinds: s.kinds.clone(),
        on: AtomicBool::new(true),
        outage: AtomicBool::new(false),
        database: database_name(&url),
        admin_url: crate::pg::shared().admin_url().to_owned(),
        struck: Mutex::default(),
    });
    let mut config = settings(&s, &url, spool.path(), Arc::clone(&plan));
    // Routes of this schedule's own: schedules run side by side, and a port one of them
    // frees (a crash, a restart) can be taken by another's callhook at once. A sender
    // still posting to the old port then reaches a callhook that refuses the route (404,
    // not acknowledged) instead of one that stores the event in another schedule's
    // database.
    config.callback_path = format!("{}/", route_prefix(seed));
    config.trtc_path = format!("{}/trtc", route_prefix(seed));
    let result = drive(&s, &url, config, &plan, spool.path()).await;
    let outcome = match result {
        Ok(tallies) => check(&s, &url, &tallies).await.map(|mut o| {
            o.struck = plan
                .struck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            o.crashes = s
                .actions
                .iter()
                .filter(|(_, a)| matches!(a, Action::Crash(_)))
                .count();
            o.processes = usize::from(s.process);
            o
        }),
        Err(e) => Err(e),
    };
    drop_database(&url).await;
    outcome.map_err(|e| {
        format!(
            "schedule {seed:#x} broke the promise: {e}\n  schedule: {s:?}\n  faults struck: {:?}\n  \
             run it alone: CALLHOOK_SIM_SEED={seed:#x} CALLHOOK_SIM_SCHEDULES=1 cargo test --test it simulation -- --nocapture",
            plan.struck.lock().unwrap_or_else(|p| p.into_inner())
        )
    })
}

/// Runs the schedule's deliveries and actions, heals, and waits for the journal to
/// drain. Returns what the senders saw.
async fn drive(
    s: &Schedule,
    url: &str,
    config: Settings,
    plan: &Arc<FaultPlan>,
    spool: &std::path::Path,
) -> Result<BTreeMap<String, Tally>, String> {
    let earlier = match s.small_journal {
        Some(last_chunk) => fill_journal(spool, last_chunk).await?,
        None => BTreeMap::new(),
    };
    let running = Running::start(config.clone(), s.process).await?;
    let senders = Senders {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?,
        base: Arc::new(RwLock::new(senders_base(&running, &config))),
        tallies: Arc::new(Mutex::new(earlier)),
    };
    let started = tokio::time::Instant::now();
    let mut sending = tokio::task::JoinSet::new();
    let queue = Arc::new(Mutex::new(s.events.clone()));
    for _ in 0..s.senders {
        let (senders, queue) = (senders.clone(), Arc::clone(&queue));
        sending.spawn(async move {
            loop {
                let next = {
                    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                    let i = q
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.at)
                        .map(|(i, _)| i);
                    i.map(|i| q.swap_remove(i))
                };
                let Some(ev) = next else { break };
                tokio::time::sleep_until(started + ev.at).await;
                senders.deliver(&ev).await;
            }
        });
    }
    let mut running = Some(running);
    let mut locks = Vec::new();
    for (at, action) in &s.actions {
        tokio::time::sleep_until(started + *at).await;
        match action {
            // A process has no fault hooks: its outage is the database's writes hanging,
            // then their connections killed.
            Action::Outage(d) if s.process => {
                let tables = "ingest_fences, call_events";
                locks.push(tokio::spawn(hold_lock(url.to_owned(), tables, *d, true)));
            }
            Action::Outage(d) => {
                plan.outage.store(true, Ordering::Relaxed);
                tokio::time::sleep(*d).await;
                plan.outage.store(false, Ordering::Relaxed);
            }
            Action::Lock { table, hold, kill } => {
                locks.push(tokio::spawn(hold_lock(url.to_owned(), table, *hold, *kill)));
            }
            Action::SlowRows { per_row, hold } => {
                locks.push(tokio::spawn(slow_rows(url.to_owned(), *per_row, *hold)));
            }
            Action::Crash(pause) => {
                if let Some(r) = running.take() {
                    r.stop(Stop::Crash).await;
                }
                tokio::time::sleep(*pause).await;
                let r = Running::start(config.clone(), s.process).await?;
                *senders.base.write().await = senders_base(&r, &config);
                running = Some(r);
            }
        }
    }
    for lock in locks {
        let _ = lock.await;
    }
    // Healing: no more faults; every delivery is acknowledged in the end.
    plan.on.store(false, Ordering::Relaxed);
    let deadline = Duration::from_secs(60);
    if tokio::time::timeout(deadline, async {
        while sending.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        return Err("the senders were not all acknowledged within 60 s of the faults' end".into());
    }
    let running = running.ok_or("callhook is not running")?;
    let drained = wait_drained(&running, spool).await;
    running.stop(Stop::Graceful).await;
    drained?;
    Ok(senders
        .tallies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone())
}

// ---------------------------------------------------------------------------------------
// The test

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_fault_schedules_lose_and_double_nothing() {
    init_tracing();
    callhook::install_tls_provider();
    let count = env_u64("CALLHOOK_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    let first = env_u64("CALLHOOK_SIM_SEED").unwrap_or(DEFAULT_SEED);
    let parallel = env_u64("CALLHOOK_SIM_PARALLEL").unwrap_or(3).max(1) as usize;
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut failures = Vec::new();
    let mut total = Outcome::default();
    let mut done = 0u64;
    while done < count {
        while running.len() < parallel && next < count {
            let seed = first.wrapping_add(next);
            running.spawn(async move { (seed, run_schedule(seed).await) });
            next += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        done += 1;
        match joined {
            Ok((_, Ok(o))) => {
                total.deliveries += o.deliveries;
                total.acked += o.acked;
                total.rows += o.rows;
                total.crashes += o.crashes;
                total.processes += o.processes;
                for (k, n) in o.struck {
                    *total.struck.entry(k).or_default() += n;
                }
            }
            Ok((_, Err(e))) => {
                eprintln!("{e}");
                failures.push(e);
            }
            Err(e) => failures.push(format!("a schedule panicked: {e}")),
        }
        if done.is_multiple_of(100) {
            eprintln!(
                "simulation: {done}/{count} schedules, {} violations, {:.0?}",
                failures.len(),
                started.elapsed()
            );
        }
    }
    let faults: u64 = total.struck.values().sum();
    eprintln!(
        "simulation: {count} schedules from seed {first:#x} in {:.1?}: {} attempts, {} acknowledged, {} rows, {faults} faults struck, {} crashes ({} schedules as a real process, crashed by SIGKILL), {} violations\n  by point and kind: {:?}",
        started.elapsed(),
        total.deliveries,
        total.acked,
        total.rows,
        total.crashes,
        total.processes,
        failures.len(),
        total.struck
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(faults > 0, "faults struck");
}
