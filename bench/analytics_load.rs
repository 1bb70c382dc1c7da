//! Analytics benchmark tool: loads a realistic, repeatable mix of call events into a
//! callhook database, and times the analytics queries. Driven by `bench/analytics.sh`;
//! runnable on its own:
//!
//! ```sh
//! cargo run --release --example analytics_load -- load --database-url sqlite:///tmp/a.db --events 1000000
//! cargo run --release --example analytics_load -- time --database-url sqlite:///tmp/a.db
//! ```
//!
//! `load` simulates calls (1-to-1 and group; every outcome; status, event and v4
//! families; some deliveries retried) over `--days` UTC days ending with `--end`, turns
//! each simulated callback into rows with callhook's own parser, and writes them in the
//! order they would arrive, with the same batched insert the receiver uses — no HTTP, so a
//! million events load in a minute or two. The same `--seed` gives the same events on
//! every backend. `indexes drop|create` removes or restores migration 0002's indexes (as
//! written in the migration files), to time the views without them.

use std::time::Instant;

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use sqlx::{ConnectOptions as _, Connection as _};

use callhook::config::DatabaseSettings;
use callhook::protocol::{self, Context, EventRow};
use callhook::store::{BatchRow, Store};

#[derive(Parser)]
#[command(about = "Load call events for the analytics benchmark, and time the queries")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply the migrations and insert generated events.
    Load {
        #[arg(long)]
        database_url: String,
        /// How many events (rows of call_events) to write, about.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// How many UTC days the calls spread over.
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// The last day (UTC, YYYY-MM-DD). Default: today.
        #[arg(long)]
        end: Option<NaiveDate>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rows per transaction.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Time the analytics queries; prints one line per query with the median.
    Time {
        #[arg(long)]
        database_url: String,
        /// How often each query runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The callhook binary, to time `callhook report` as a user runs it.
        #[arg(long)]
        callhook: Option<std::path::PathBuf>,
    },
    /// Multiply the events loaded: `--times - 1` copies of them, made in SQL, each shifted
    /// `--shift-days` later than the one before, with its own call ids, room ids and dedupe
    /// keys; then the copied calls are folded into the rollups, as ingest would have.
    Multiply {
        #[arg(long)]
        database_url: String,
        /// How many times the events end up in the table (the loaded ones count once).
        #[arg(long)]
        times: i64,
        /// How many days each copy lies after the one before (the days loaded).
        #[arg(long)]
        shift_days: i64,
    },
    /// Drop or (re)create the indexes migration 0002 adds (to time the views without them).
    Indexes {
        #[arg(long)]
        database_url: String,
        #[arg(value_parser = ["drop", "create"])]
        action: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Load {
                database_url,
                events,
                days,
                end,
                seed,
                batch,
            } => {
                let end = end.unwrap_or_else(|| Utc::now().date_naive());
                load(&database_url, events, days, end, seed, batch).await
            }
            Cmd::Time {
                database_url,
                runs,
                callhook,
            } => time(&database_url, runs, callhook.as_deref()).await,
            Cmd::Multiply {
                database_url,
                times,
                shift_days,
            } => multiply(&database_url, times, shift_days).await,
            Cmd::Indexes {
                database_url,
                action,
            } => indexes(&database_url, action == "create").await,
        }
    })
}

async fn connect(url: &str) -> anyhow::Result<Store> {
    let mut settings = DatabaseSettings::new(url);
    settings.acquire_timeout = std::time::Duration::from_secs(30);
    Store::connect(&settings).await
}

// ---------------------------------------------------------------------------------------
// Loading

const APPS: [i64; 2] = [1_400_000_001, 1_400_000_002];

/// splitmix64: small, fast, repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Picks an index by weight.
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// How calls end, with their share (1-to-1 calls; group calls end `normal_end`).
const OUTCOMES: [(&str, f64); 7] = [
    ("normal_end", 0.62),
    ("not_answer", 0.13),
    ("reject", 0.08),
    ("cancel", 0.08),
    ("call_busy", 0.04),
    ("interrupt", 0.04),
    ("offline", 0.01),
];

/// Calls per hour of the (UTC) day, relative.
const HOURS: [f64; 24] = [
    1.0, 0.6, 0.4, 0.4, 0.5, 1.0, 2.5, 4.5, 6.5, 7.5, 8.0, 8.0, 7.0, 7.5, 8.0, 8.0, 8.5, 9.0, 9.0,
    8.5, 7.0, 5.0, 3.0, 1.8,
];

/// One callback to deliver: the query's command, the body, the platform, its time (ms) and
/// how many times Tencent delivered it.
struct Delivery {
    sdkappid: i64,
    command: &'static str,
    v4: bool,
    body: Value,
    platform: &'static str,
    at_ms: i64,
    deliveries: i32,
}

struct Sim {
    rng: Rng,
    call_no: u64,
}

impl Sim {
    /// Generates one call's deliveries, starting at `start` (Unix seconds).
    fn call(&mut self, start: i64, out: &mut Vec<Delivery>) {
        self.call_no += 1;
        let rng = &mut self.rng;
        let sdkappid = if rng.chance(0.8) { APPS[0] } else { APPS[1] };
        let call_id = format!(
            "c{:08x}-{:06}",
            self.call_no.wrapping_mul(2_654_435_761),
            self.call_no
        );
        let group = rng.chance(0.1);
        let n_callees = if group { rng.range(2, 5) } else { 1 };
        let user = |rng: &mut Rng| format!("u{:05}", rng.range(1, 20_000));
        let caller = user(rng);
        let mut callees: Vec<String> = Vec::new();
        while (callees.len() as i64) < n_callees {
            let u = user(rng);
            if u != caller && !callees.contains(&u) {
                callees.push(u);
            }
        }
        let media = if rng.chance(0.7) { "audio" } else { "video" };
        let weights: Vec<f64> = OUTCOMES.iter().map(|(_, w)| *w).collect();
        let mut outcome = if group {
            "normal_end"
        } else {
            OUTCOMES[rng.weighted(&weights)].0
        };
        // family: 0 status only, 1 status + event, 2 v4
        let family = rng.weighted(&[0.45, 0.25, 0.30]);
        if outcome == "offline" && family != 2 {
            outcome = "interrupt";
        }
        let ring = match outcome {
            "not_answer" => 30,
            "call_busy" => 1,
            _ => rng.range(2, 25),
        };
        let answered = outcome == "normal_end" || (outcome == "interrupt" && rng.chance(0.5));
        // Talk time: exponential, mean 150 s, at most 2 h.
        let talk = if answered {
            ((-rng.unit().max(1e-9).ln()) * 150.0).clamp(3.0, 7200.0) as i64
        } else {
            0
        };
        let accept = answered.then_some(start + ring);
        let end = start + ring + talk;
        let platform =
            ["iOS", "Android", "Web", "miniProgram"][rng.weighted(&[0.35, 0.45, 0.15, 0.05])];
        let room = format!("room-{}", self.call_no);
        let call_type = if group { "group" } else { "single" };
        let total = 1 + callees.len() as i64;
        let mut push = |rng: &mut Rng, command: &'static str, v4: bool, body: Value, at: i64| {
            let deliveries = if rng.chance(0.03) {
                rng.range(2, 4) as i32
            } else {
                1
            };
            out.push(Delivery {
                sdkappid,
                command,
                v4,
                body,
                platform,
                at_ms: at * 1000 + rng.range(150, 1500),
                deliveries,
            });
        };

        if family == 2 {
            let mut users = vec![json!({"User_Account": caller, "Status": "Calling"})];
            users.extend(
                callees
                    .iter()
                    .map(|c| json!({"User_Account": c, "Status": "Waiting"})),
            );
            push(
                rng,
                "Call.CallbackAfterStartCall",
                true,
                json!({
                    "CallbackCommand": "Call.CallbackAfterStartCall",
                    "CallInfo": {"CallId": call_id, "CallMediaType": cap(media), "ChatGroupId": if group { format!("grp-{}", self.call_no) } else { String::new() }, "RoomId": room, "RoomIdType": 2},
                    "UserList": users, "EventTime": start * 1000,
                }),
                start,
            );
            let mut member = |rng: &mut Rng, who: &str, action: &str, at: i64| {
                push(
                    rng,
                    "Call.CallbackAfterMemberChanged",
                    true,
                    json!({
                        "CallbackCommand": "Call.CallbackAfterMemberChanged", "CallId": call_id,
                        "UserList": [{"User_Account": caller, "Status": "Calling"}],
                        "ChangedUserList": [{"User_Account": who, "ActionType": action}],
                        "EventTime": at * 1000 + 7,
                    }),
                    at,
                );
            };
            match (outcome, accept) {
                (_, Some(a)) => {
                    for c in &callees {
                        member(rng, c, "Accept", a);
                    }
                    member(rng, &callees[0], "Hangup", end);
                }
                ("reject", None) => member(rng, &callees[0], "Reject", start + ring),
                ("not_answer", None) => member(rng, &callees[0], "NotAnswer", start + ring),
                _ => {}
            }
            let v4_result = match outcome {
                "normal_end" => "NormalEnd",
                "not_answer" => "NotAnswer",
                "reject" => "Reject",
                "cancel" => "Cancel",
                "call_busy" => "CallBusy",
                "interrupt" => "Interrupt",
                _ => "Offline",
            };
            let mut list = vec![caller.clone()];
            list.extend(callees.iter().cloned());
            push(
                rng,
                "Call.CallbackAfterEndCall",
                true,
                json!({
                    "CallbackCommand": "Call.CallbackAfterEndCall",
                    "CallRecord": {
                        "CallId": call_id, "Caller_Account": caller, "MediaType": cap(media),
                        "CallType": if group { "MultiCall" } else { "SingleCall" },
                        "StartTime": start, "EndTime": end, "AcceptTime": accept.unwrap_or(0),
                        "CallResult": v4_result, "CalleeList_Account": list, "RoomId": room, "RoomIdType": 2,
                    },
                    "EventTime": (end + 1) * 1000,
                }),
                end + 1,
            );
            return;
        }

        // Status family: one callback per participant after the call.
        let status_body = |user: &str, role: &str, result: &str, at: i64| {
            let normal = result == "normal_end";
            json!({
                "UserId": user, "RoomId": room, "TotalNum": total, "MediaType": media,
                "CallType": call_type, "CallId": call_id, "Role": role, "CallResult": result,
                "EventTime": at,
                "StartCallTs": if normal { start } else { 0 },
                "AcceptTs": if normal { accept.unwrap_or(0) } else { 0 },
                "EndTs": if normal { end } else { 0 },
            })
        };
        push(
            rng,
            "call_end",
            false,
            status_body(&caller, "caller", outcome, end + 1),
            end + 1,
        );
        for c in &callees {
            let at = end + rng.range(1, 3);
            push(
                rng,
                "call_end",
                false,
                status_body(c, "callee", outcome, at),
                at,
            );
        }
        if family == 0 {
            return;
        }
        // Event family: one callback per user action.
        let mut event = |rng: &mut Rng, command: &'static str, user: &str, role: &str, at: i64| {
            let action = command.split_once('_').map_or(command, |(_, a)| a);
            push(
                rng,
                command,
                false,
                json!({
                    "UserId": user, "RoomId": room, "TotalNum": total, "MediaType": media,
                    "CallType": call_type, "CallId": call_id, "Role": role, "CallResult": "",
                    "Event": action, "EventTime": at,
                    "StartCallTs": start, "AcceptTs": accept.unwrap_or(0), "EndTs": 0,
                }),
                at,
            );
        };
        event(rng, "caller_start_call", &caller, "caller", start);
        for c in &callees {
            event(rng, "callee_receive_call", c, "callee", start + 1);
        }
        let first = callees[0].clone();
        match outcome {
            _ if accept.is_some() => {
                let a = start + ring;
                event(rng, "callee_accept_call", &first, "callee", a);
                event(rng, "caller_call_accepted", &caller, "caller", a);
                if outcome == "interrupt" {
                    event(rng, "caller_call_interrupted", &caller, "caller", end);
                } else {
                    event(rng, "caller_call_end", &caller, "caller", end);
                    event(rng, "callee_call_end", &first, "callee", end);
                }
            }
            "reject" => {
                event(rng, "callee_reject_call", &first, "callee", start + ring);
                event(rng, "caller_call_rejected", &caller, "caller", start + ring);
            }
            "not_answer" => {
                event(
                    rng,
                    "callee_not_answer_call",
                    &first,
                    "callee",
                    start + ring,
                );
                event(rng, "caller_call_missed", &caller, "caller", start + ring);
            }
            "call_busy" => event(rng, "caller_call_busy", &caller, "caller", start + 1),
            "cancel" => {
                event(rng, "caller_cancel_call", &caller, "caller", start + ring);
                event(rng, "callee_call_canceled", &first, "callee", start + ring);
            }
            _ => event(rng, "caller_call_failed", &caller, "caller", start + 1),
        }
    }
}

/// `audio` → `Audio` (the v4 spelling).
fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn load(
    url: &str,
    events: u64,
    days: i64,
    end: NaiveDate,
    seed: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let store = connect(url).await?;
    store.migrate(std::time::Duration::from_secs(3600)).await?;
    let first_day = end - chrono::Duration::days(days - 1);
    // The weeks' partitions (PostgreSQL), as a service that ran through those weeks made
    // them ahead of time: the history lands in them, not in the default partition.
    let mut week = first_day;
    while week <= end + chrono::Duration::days(7) {
        store.make_partitions(week).await?;
        week += chrono::Duration::days(7);
    }
    let day0 = first_day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .context("first day")?;
    let mut sim = Sim {
        rng: Rng(seed),
        call_no: 0,
    };
    // Day weights: weekends are quieter, and every day a little different.
    let day_weights: Vec<f64> = (0..days)
        .map(|d| {
            let weekday = (first_day + chrono::Duration::days(d))
                .format("%u")
                .to_string();
            let base = if weekday == "6" || weekday == "7" {
                0.7
            } else {
                1.0
            };
            base * (0.85 + 0.3 * sim.rng.unit())
        })
        .collect();
    // How many calls make about `events` events: measured on a pilot run.
    let mut pilot = Sim {
        rng: Rng(seed ^ 0x5EED),
        call_no: 0,
    };
    let mut sample = Vec::new();
    for _ in 0..20_000 {
        pilot.call(0, &mut sample);
    }
    let per_call = sample.len() as f64 / 20_000.0;
    let calls = (events as f64 / per_call).round() as usize;
    // The calls' start times, in order: a receiver stores events in the order they arrive,
    // so a day's events sit together in the table, as they would in production.
    let mut starts: Vec<i64> = (0..calls)
        .map(|_| {
            let day = sim.rng.weighted(&day_weights) as i64;
            let hour = sim.rng.weighted(&HOURS) as i64;
            day0 + day * 86_400 + hour * 3600 + sim.rng.range(0, 3599)
        })
        .collect();
    starts.sort_unstable();

    let started = Instant::now();
    let mut written: u64 = 0;
    let mut pending: Vec<(EventRow, i32)> = Vec::with_capacity(batch + 16);
    // Deliveries generated but not yet due: every delivery happens at or after its call's
    // start, so those due before the next call's start can be written in time order.
    let mut waiting: Vec<Delivery> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        sim.call(start, &mut waiting);
        let last = i + 1 == starts.len();
        if waiting.len() < 20_000 && !last {
            continue;
        }
        waiting.sort_by_key(|d| d.at_ms);
        let due = if last {
            waiting.len()
        } else {
            waiting.partition_point(|d| d.at_ms < start * 1000)
        };
        for d in waiting.drain(..due) {
            parse_into(&d, &mut pending)?;
            if pending.len() >= batch {
                written += flush(&store, &mut pending).await?;
                if written % 100_000 < batch as u64 {
                    eprintln!("{written} events written");
                }
            }
        }
    }
    written += flush(&store, &mut pending).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    // The writes queued every call they touched: fold them into the daily rollups, as the
    // running service's task does (and as it does after an upgrade to migration 0010).
    let (queued, _) = store.rollup_backlog().await?;
    let folding = Instant::now();
    let taken = store.rollup_catch_up().await?;
    eprintln!(
        "rollups: {taken} queue entries ({queued} queued) folded in {:.1} s",
        folding.elapsed().as_secs_f64()
    );
    refresh_statistics(&store).await?;
    eprintln!(
        "{written} events ({} calls, days {first_day} to {end}) written in {load_seconds:.1} s",
        sim.call_no,
    );
    store.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Multiplying: many events fast

/// The time columns of `call_events` on SQLite (text), shifted with the copies.
const SQLITE_TIMES: [&str; 6] = [
    "event_time",
    "start_call_ts",
    "accept_ts",
    "end_ts",
    "received_at",
    "last_delivery_at",
];

/// The expression copy `k` stores in `column`: times and days shifted by `k * shift_days`,
/// call and room ids and dedupe keys made the copy's own; the rest as loaded.
fn copy_expr(column: &str, pg_type: Option<&str>, k: i64, shift_days: i64) -> String {
    let days = k * shift_days;
    match (column, pg_type) {
        ("call_id" | "room_id", _) => format!("{column} || '~{k}'"),
        ("dedupe_key", Some(_)) => format!("{column} || int4send({k})"),
        ("dedupe_key", None) => format!("CAST({column} || '~{k}' AS BLOB)"),
        // Hours, not days: a day of an interval would follow the session's time zone.
        (_, Some("timestamp with time zone")) => {
            format!("{column} + interval '{} hours'", days * 24)
        }
        (_, Some("date")) => format!("{column} + {days}"),
        (_, None) if SQLITE_TIMES.contains(&column) => {
            format!("strftime('%Y-%m-%dT%H:%M:%fZ', {column}, '+{days} days')")
        }
        _ => column.to_owned(),
    }
}

/// Copies the loaded events `times - 1` times in SQL, each copy `shift_days` after the one
/// before, and folds the copied calls into the rollups. Every copy is a call-for-call
/// replica of the load moved by whole days, so the rollups of its days are those ingest
/// would give: the fold computes them from the copied events.
async fn multiply(url: &str, times: i64, shift_days: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        times >= 1 && shift_days >= 1,
        "--times and --shift-days: 1 or more"
    );
    let store = connect(url).await?;
    let started = Instant::now();
    match &store {
        Store::Postgres(s) => {
            let pool = s.pool();
            let (base_max, first, last): (i64, String, String) = sqlx::query_as(
                "SELECT max(id), min(event_day)::text, max(event_day)::text FROM call_events",
            )
            .fetch_one(pool)
            .await?;
            let first = NaiveDate::parse_from_str(&first, "%Y-%m-%d")?;
            let last = NaiveDate::parse_from_str(&last, "%Y-%m-%d")?
                + chrono::Duration::days((times - 1) * shift_days);
            // The copies' weeks get their partitions first, as a service running through
            // those weeks would have made them: no copy lands in the default partition.
            let mut week = first;
            while week <= last + chrono::Duration::days(7) {
                store.make_partitions(week).await?;
                week += chrono::Duration::days(7);
            }
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'call_events' \
                   AND column_name <> 'id' ORDER BY ordinal_position",
            )
            .fetch_all(pool)
            .await?;
            let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
            for k in 1..times {
                let t = Instant::now();
                let exprs: Vec<String> = columns
                    .iter()
                    .map(|(c, ty)| copy_expr(c, Some(ty), k, shift_days))
                    .collect();
                // One statement per copy: its trigger queues each copied call once.
                let sql = format!(
                    "INSERT INTO call_events ({}) SELECT {} FROM call_events WHERE id <= {base_max} ORDER BY id",
                    names.join(", "),
                    exprs.join(", ")
                );
                let n = sqlx::query(&sql).execute(pool).await?.rows_affected();
                eprintln!(
                    "copy {k}: {n} events, {} days later, in {:.1} s",
                    k * shift_days,
                    t.elapsed().as_secs_f64()
                );
            }
            let default: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events_default")
                .fetch_one(pool)
                .await?;
            eprintln!("call_events_default holds {default} events");
        }
        Store::Sqlite(s) => {
            let pool = s.pool();
            let base_max: i64 = sqlx::query_scalar("SELECT max(id) FROM call_events")
                .fetch_one(pool)
                .await?;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM pragma_table_info('call_events') WHERE name <> 'id' ORDER BY cid",
            )
            .fetch_all(pool)
            .await?;
            // SQLite's trigger queues every event (one per row): the copies are queued once
            // per call instead, and the trigger is made again exactly as it was.
            let trigger: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'call_events_rollup'",
            )
            .fetch_one(pool)
            .await?;
            for k in 1..times {
                let t = Instant::now();
                let exprs: Vec<String> = names
                    .iter()
                    .map(|c| copy_expr(c, None, k, shift_days))
                    .collect();
                let mut tx = pool.begin().await?;
                sqlx::query("DROP TRIGGER call_events_rollup")
                    .execute(&mut *tx)
                    .await?;
                let from: i64 = sqlx::query_scalar("SELECT max(id) FROM call_events")
                    .fetch_one(&mut *tx)
                    .await?;
                let sql = format!(
                    "INSERT INTO call_events ({}) SELECT {} FROM call_events WHERE id <= {base_max} ORDER BY id",
                    names.join(", "),
                    exprs.join(", ")
                );
                let n = sqlx::query(&sql).execute(&mut *tx).await?.rows_affected();
                sqlx::query(
                    "INSERT INTO rollup_queue (sdkappid, call_id) SELECT sdkappid, call_id \
                     FROM call_events WHERE id > ?1 AND call_id IS NOT NULL \
                     GROUP BY sdkappid, call_id ORDER BY min(id)",
                )
                .bind(from)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&trigger).execute(&mut *tx).await?;
                tx.commit().await?;
                eprintln!(
                    "copy {k}: {n} events, {} days later, in {:.1} s",
                    k * shift_days,
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    let copying = started.elapsed().as_secs_f64();
    // Fold the queued calls, pass after pass, with no rest (nothing else writes here).
    let (queued, _) = store.rollup_backlog().await?;
    let folding = Instant::now();
    let mut taken = 0usize;
    loop {
        let n = store.rollup_pass(1000).await?;
        if n == 0 {
            break;
        }
        taken += n;
        if taken % 100_000 < n {
            eprintln!("rollups: {taken} of {queued} queue entries folded");
        }
    }
    let fold_seconds = folding.elapsed().as_secs_f64();
    refresh_statistics(&store).await?;
    // What the table and the rollups hold now: each copy adds the load's calls again.
    let (events, calls, days): (i64, i64, i64) =
        match &store {
            Store::Postgres(s) => sqlx::query_as(
                "SELECT (SELECT count(*) FROM call_events), (SELECT count(*) FROM rollup_calls), \
                    (SELECT sum(calls)::bigint FROM rollup_days)",
            )
            .fetch_one(s.pool())
            .await?,
            Store::Sqlite(s) => sqlx::query_as(
                "SELECT (SELECT count(*) FROM call_events), (SELECT count(*) FROM rollup_calls), \
                    (SELECT sum(calls) FROM rollup_days)",
            )
            .fetch_one(s.pool())
            .await?,
        };
    if let Store::Postgres(s) = &store {
        let (db, events_size): (String, String) = sqlx::query_as(
            "SELECT pg_size_pretty(pg_database_size(current_database())), \
                    pg_size_pretty(sum(pg_total_relation_size(inhrelid))) \
             FROM pg_inherits WHERE inhparent = 'call_events'::regclass",
        )
        .fetch_one(s.pool())
        .await?;
        eprintln!("database {db}; call_events with its indexes {events_size}");
    }
    eprintln!(
        "multiplied by {times}: {events} events, {calls} calls in rollup_calls, {days} calls in rollup_days; \
         copied in {copying:.1} s, {taken} queue entries ({queued} queued) folded in {fold_seconds:.1} s, \
         {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}

/// Turns a delivery into rows with callhook's own parser.
fn parse_into(d: &Delivery, pending: &mut Vec<(EventRow, i32)>) -> anyhow::Result<()> {
    let body = d.body.to_string();
    let ctx = Context {
        sdkappid: d.sdkappid,
        command: d.command,
        client_ip: Some("203.0.113.7"),
        opt_platform: Some(d.platform),
        remote_addr: Some("127.0.0.1"),
        received_at: d.at_ms,
    };
    let rows = protocol::parse_delivery(protocol::classify(d.command), d.v4, &ctx, body.as_bytes())
        .map_err(|r| anyhow::anyhow!("generated a delivery callhook rejects: {r}: {body}"))?;
    pending.extend(rows.into_iter().map(|r| (r, d.deliveries)));
    Ok(())
}

async fn flush(store: &Store, pending: &mut Vec<(EventRow, i32)>) -> anyhow::Result<u64> {
    if pending.is_empty() {
        return Ok(0);
    }
    let rows: Vec<BatchRow<'_>> = pending
        .iter()
        .map(|(row, deliveries)| BatchRow {
            row,
            deliveries: *deliveries,
        })
        .collect();
    store.write_batch(&rows, &[]).await?;
    let n = pending.len() as u64;
    pending.clear();
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Timing

async fn time(url: &str, runs: usize, callhook: Option<&std::path::Path>) -> anyhow::Result<()> {
    let store = connect(url).await?;
    let runs = runs.max(1);
    // The report's default window: the 7 days up to the newest event.
    let (last, lookup): (String, (i64, String)) = match &store {
        Store::Postgres(s) => (
            sqlx::query_scalar("SELECT (max(received_at) AT TIME ZONE 'UTC')::date::text FROM call_events")
                .fetch_one(s.pool())
                .await?,
            sqlx::query_as("SELECT sdkappid, call_id FROM call_events WHERE id >= (SELECT max(id) / 2 FROM call_events) ORDER BY id LIMIT 1")
                .fetch_one(s.pool())
                .await?,
        ),
        Store::Sqlite(s) => (
            sqlx::query_scalar("SELECT date(max(received_at)) FROM call_events")
                .fetch_one(s.pool())
                .await?,
            sqlx::query_as("SELECT sdkappid, call_id FROM call_events WHERE id >= (SELECT max(id) / 2 FROM call_events) ORDER BY id LIMIT 1")
                .fetch_one(s.pool())
                .await?,
        ),
    };
    let until = NaiveDate::parse_from_str(&last, "%Y-%m-%d")? + chrono::Duration::days(1);
    let since = until - chrono::Duration::days(7);
    let (since, until) = (since.to_string(), until.to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "backend {}; window {since} .. {until} (until exclusive); lookup {} {}; load average {}",
        store.backend(),
        lookup.0,
        lookup.1,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let stats_sql = match &store {
        Store::Postgres(_) => {
            "SELECT * FROM call_stats_daily WHERE day >= $1::date AND day < $2::date"
        }
        Store::Sqlite(_) => "SELECT * FROM call_stats_daily WHERE day >= ?1 AND day < ?2",
    };
    let calls_sql = match &store {
        Store::Postgres(_) => "SELECT * FROM calls WHERE sdkappid = $1 AND call_id = $2",
        Store::Sqlite(_) => "SELECT * FROM calls WHERE sdkappid = ?1 AND call_id = ?2",
    };
    // The 7-day window, one day in its middle, and (PostgreSQL) the 7 days without JIT, as
    // `callhook report` runs them: JIT is on by default and compiles these plans slowly.
    let mid =
        (NaiveDate::parse_from_str(&since, "%Y-%m-%d")? + chrono::Duration::days(3)).to_string();
    let mid_end =
        (NaiveDate::parse_from_str(&mid, "%Y-%m-%d")? + chrono::Duration::days(1)).to_string();
    let mut windows = vec![
        (
            "call_stats_daily, 7 days",
            since.clone(),
            until.clone(),
            false,
        ),
        ("call_stats_daily, 1 day", mid, mid_end, false),
        (
            "call_stats_daily, 90 days",
            (NaiveDate::parse_from_str(&until, "%Y-%m-%d")? - chrono::Duration::days(90))
                .to_string(),
            until.clone(),
            false,
        ),
    ];
    if let Store::Postgres(_) = &store {
        windows.push((
            "call_stats_daily, 7 days, jit off",
            since.clone(),
            until.clone(),
            true,
        ));
    }
    let mut samples = Vec::new();
    for (what, from, to, jit_off) in &windows {
        samples.clear();
        for _ in 0..runs {
            let t = Instant::now();
            let n = match &store {
                Store::Postgres(s) => {
                    let mut tx = s.pool().begin().await?;
                    if *jit_off {
                        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
                    }
                    let n = sqlx::query(stats_sql)
                        .bind(from)
                        .bind(to)
                        .fetch_all(&mut *tx)
                        .await?
                        .len();
                    tx.commit().await?;
                    n
                }
                Store::Sqlite(s) => sqlx::query(stats_sql)
                    .bind(from)
                    .bind(to)
                    .fetch_all(s.pool())
                    .await?
                    .len(),
            };
            samples.push((t.elapsed().as_secs_f64() * 1000.0, n));
        }
        report_line(what, &samples);
    }

    // One call's row, as an application that keeps its connection asks for it: on one
    // connection, after one run that is not timed (the connection's first query of the
    // partitioned table reads the partitions' and their indexes' definitions). The first
    // query on a new connection is timed apart (PostgreSQL).
    samples.clear();
    match &store {
        Store::Postgres(s) => {
            let mut conn = s.pool().acquire().await?;
            for run in 0..=runs {
                let t = Instant::now();
                let n = sqlx::query(calls_sql)
                    .bind(lookup.0)
                    .bind(&lookup.1)
                    .fetch_all(&mut *conn)
                    .await?
                    .len();
                if run > 0 {
                    samples.push((t.elapsed().as_secs_f64() * 1000.0, n));
                }
            }
        }
        Store::Sqlite(s) => {
            for _ in 0..runs {
                let t = Instant::now();
                let n = sqlx::query(calls_sql)
                    .bind(lookup.0)
                    .bind(&lookup.1)
                    .fetch_all(s.pool())
                    .await?
                    .len();
                samples.push((t.elapsed().as_secs_f64() * 1000.0, n));
            }
        }
    }
    report_line("calls, one call", &samples);
    if let Store::Postgres(s) = &store {
        samples.clear();
        for _ in 0..runs {
            let mut conn = s.pool().connect_options().connect().await?;
            let t = Instant::now();
            let n = sqlx::query(calls_sql)
                .bind(lookup.0)
                .bind(&lookup.1)
                .fetch_all(&mut conn)
                .await?
                .len();
            samples.push((t.elapsed().as_secs_f64() * 1000.0, n));
            conn.close().await?;
        }
        report_line("calls, one call, new connection", &samples);
    }

    if let Some(bin) = callhook {
        let since90 = (NaiveDate::parse_from_str(&until, "%Y-%m-%d")? - chrono::Duration::days(90))
            .to_string();
        for (format, since, days) in [
            ("table", &since, 7),
            ("html", &since, 7),
            ("table", &since90, 90),
        ] {
            samples.clear();
            for _ in 0..runs {
                let t = Instant::now();
                let out = std::process::Command::new(bin)
                    .args([
                        "report",
                        "--database-url",
                        url,
                        "--since",
                        since,
                        "--until",
                        &until,
                        "--format",
                        format,
                    ])
                    .output()
                    .with_context(|| format!("running {}", bin.display()))?;
                anyhow::ensure!(
                    out.status.success(),
                    "callhook report failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                samples.push((t.elapsed().as_secs_f64() * 1000.0, out.stdout.len()));
            }
            report_line(
                &format!("callhook report --format {format}, {days} days"),
                &samples,
            );
        }
    }
    store.close().await;
    Ok(())
}

/// Fresh statistics (and, for PostgreSQL, the visibility map), as a running system has.
async fn refresh_statistics(store: &Store) -> anyhow::Result<()> {
    match store {
        Store::Postgres(s) => {
            for table in [
                "call_events",
                "rollup_queue",
                "rollup_days",
                "rollup_talk",
                "rollup_calls",
            ] {
                sqlx::query(&format!("VACUUM ANALYZE {table}"))
                    .execute(s.pool())
                    .await?;
            }
        }
        Store::Sqlite(s) => {
            sqlx::query("ANALYZE").execute(s.pool()).await?;
        }
    }
    Ok(())
}

/// Prints the median and every run, in milliseconds.
fn report_line(what: &str, samples: &[(f64, usize)]) {
    let mut ms: Vec<f64> = samples.iter().map(|s| s.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let all: Vec<String> = samples.iter().map(|s| format!("{:.1}", s.0)).collect();
    println!(
        "{what:<40} median {median:>9.1} ms   runs [{}]   ({} rows/bytes)",
        all.join(", "),
        samples.last().map_or(0, |s| s.1)
    );
}

// ---------------------------------------------------------------------------------------
// The analytics indexes, as migration 0002 writes them

const PG_MIGRATION: &str = include_str!("../migrations/postgres/0002_analytics.sql");
const SQLITE_MIGRATION: &str = include_str!("../migrations/sqlite/0002_analytics.sql");

/// The `CREATE INDEX` statements of a migration, with the index names. Comments go first
/// (they may contain semicolons), then the text is split into statements.
fn index_statements(migration: &str) -> Vec<(String, String)> {
    let code: String = migration
        .lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .filter_map(|stmt| {
            let sql = stmt.trim();
            let rest = sql.strip_prefix("CREATE INDEX ")?;
            let name = rest.split_whitespace().next()?.to_owned();
            Some((name, sql.to_owned()))
        })
        .collect()
}

async fn indexes(url: &str, create: bool) -> anyhow::Result<()> {
    let store = connect(url).await?;
    let migration = match &store {
        Store::Postgres(_) => PG_MIGRATION,
        Store::Sqlite(_) => SQLITE_MIGRATION,
    };
    let statements = index_statements(migration);
    anyhow::ensure!(
        !statements.is_empty(),
        "no CREATE INDEX found in migration 0002"
    );
    for (name, create_sql) in statements {
        let sql = if create {
            create_sql.replacen("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1)
        } else {
            format!("DROP INDEX IF EXISTS {name}")
        };
        match &store {
            Store::Postgres(s) => {
                sqlx::query(&sql).execute(s.pool()).await?;
                sqlx::query("ANALYZE call_events").execute(s.pool()).await?;
            }
            Store::Sqlite(s) => {
                sqlx::query(&sql).execute(s.pool()).await?;
                sqlx::query("ANALYZE").execute(s.pool()).await?;
            }
        }
        println!(
            "{}: {}",
            store.backend(),
            sql.lines().next().unwrap_or_default()
        );
    }
    store.close().await;
    Ok(())
}
