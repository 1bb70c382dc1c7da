//! `callhook send`: plays Tencent's sender against a callback URL — to verify a
//! deployment (through its proxy, with its token), to demo, to load-test.
//!
//! ```text
//! --example ──► the documented example request ─┐
//! Generator ──► Call ──► render(families) ──────┴─► dispatch (rate, pending bound)
//!     ──► Engine::deliver (concurrency, timeout, retry schedule) ──► Stats ──► Summary
//! ```
//! Calls are generated lazily, so memory stays flat however many are asked for.

pub mod deliver;
pub mod generate;
pub mod record_api;
pub mod summary;
pub mod trtc;
pub mod trtc_deliver;

use std::future::Future;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{SendArgs, SendFamily};
use crate::protocol::{Family, command};
use deliver::{Engine, Target};
use generate::{Delivery, Families, Generator};
pub use summary::Summary;

/// Some deliveries were dropped after the retry schedule.
#[derive(Debug, thiserror::Error)]
#[error("{0} deliveries were dropped after the retry schedule")]
pub struct Dropped(pub u64);

/// Tencent's documented example body (TRTC doc 60130), byte for byte, including its
/// 9-digit `EventTime`.
pub const EXAMPLE_BODY: &str = r#"{"UserId": "Alice","RoomId": "Alice's Room","TotalNum": 2,"MediaType": "audio","CallType": "single","CallId": "aheahfo-eqwnknoihfsd-qweqf","Role": "caller","CallResult": "normal_end","EventTime": 170485688,"StartCallTs": 1704856873,"AcceptTs": 1704856876,"EndTs": 1704856885}"#;

/// The documented example request for `sdkappid`: `command=call_end`, client
/// `127.0.0.1` on iOS, no `Content-Type` header.
pub fn example_delivery(sdkappid: i64) -> Delivery {
    Delivery {
        family: Family::Status,
        command: command::CALL_END,
        at: 0,
        query: generate::v1_query(sdkappid, command::CALL_END, "127.0.0.1", "iOS"),
        body: EXAMPLE_BODY.to_owned(),
        content_type: None,
    }
}

/// The command: sends, prints the summary, and fails with [`Dropped`] when anything was
/// dropped. Ctrl-C (or SIGTERM) stops it early, still with a summary.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    run_until(args, crate::shutdown_signal()).await
}

/// The record API's side of a run (`--record-api`): where the records go, and which calls'
/// callbacks are withheld.
pub struct Withholding {
    pub api: Option<record_api::RecordApi>,
    /// Calls whose callbacks are not sent, in percent.
    pub percent: u8,
    /// How many calls' callbacks were withheld.
    pub withheld: AtomicUsize,
}

impl Withholding {
    /// No record API, every callback sent.
    pub fn none() -> Self {
        Self {
            api: None,
            percent: 0,
            withheld: AtomicUsize::new(0),
        }
    }

    /// Whether a call's callbacks are withheld: a fixed share of calls, chosen by call id.
    fn withholds(&self, call_id: &str) -> bool {
        self.percent > 0 && crc32fast::hash(call_id.as_bytes()) % 100 < u32::from(self.percent)
    }
}

/// [`run`], stopping when `stop` resolves.
pub async fn run_until(args: SendArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let api = match (&args.record_api, &args.record_api_key) {
        (Some(addr), Some(key)) => {
            Some(record_api::RecordApi::start(addr, args.sdkappid, key).await?)
        }
        _ => None,
    };
    let default_drop = if api.is_some() { 10 } else { 0 };
    let withholding = Withholding {
        percent: args.drop_percent.unwrap_or(default_drop),
        api,
        withheld: AtomicUsize::new(0),
    };
    let summary = execute_withholding(&args, stop, &withholding).await?;
    let json_to_stdout = args.summary_json.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = &args.summary_json {
        let mut json = serde_json::to_string_pretty(&summary)?;
        json.push('\n');
        if json_to_stdout {
            std::io::stdout().write_all(json.as_bytes())?;
        } else {
            std::fs::write(path, json)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if !args.quiet && !json_to_stdout {
        std::io::stdout().write_all(summary.to_text().as_bytes())?;
    }
    if summary.run.interrupted {
        anyhow::bail!(
            "interrupted: {} deliveries were not finished",
            summary.unfinished
        );
    }
    if let Some(api) = &withholding.api {
        serve_records(api, &withholding).await;
    }
    if summary.dropped > 0 {
        return Err(Dropped(summary.dropped).into());
    }
    Ok(())
}

/// After the calls are sent: says where the record API is, and serves it until Ctrl-C.
async fn serve_records(api: &record_api::RecordApi, w: &Withholding) {
    println!(
        "record API    http://{} (sdkappid's api_url): {} calls' records, {} of them calls whose callbacks were withheld; Ctrl-C stops it",
        api.addr,
        api.len(),
        w.withheld.load(Ordering::Relaxed)
    );
    let _ = std::io::stdout().flush();
    crate::shutdown_signal().await;
}

/// Whether `--family all` sends TRTC's own callbacks too: when the TRTC side is configured
/// (`--trtc-key`, or `--trtc-url`). Without either, `all` is the three call families, as
/// before TRTC's callbacks were received.
fn with_trtc(args: &SendArgs) -> bool {
    args.family == SendFamily::All
        && !args.example
        && (args.trtc_key.is_some() || args.trtc_url.is_some())
}

/// Sends what `args` asks for and returns the summary (without printing it). A progress
/// bar is drawn on stderr when it is a terminal and `--quiet` is not given.
pub async fn execute(args: &SendArgs, stop: impl Future<Output = ()>) -> anyhow::Result<Summary> {
    execute_withholding(args, stop, &Withholding::none()).await
}

/// [`execute`], with the record API's side of the run.
pub async fn execute_withholding(
    args: &SendArgs,
    stop: impl Future<Output = ()>,
    withholding: &Withholding,
) -> anyhow::Result<Summary> {
    if args.family == SendFamily::Trtc && !args.example {
        return trtc_deliver::execute(args, stop).await;
    }
    let concurrency = usize::try_from(args.concurrency)
        .unwrap_or(usize::MAX)
        .max(1);
    let engine = Arc::new(engine(args, concurrency)?);
    let seed = args.seed.unwrap_or_else(generate::random_seed);
    let end_time = args
        .end_time
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let (family, calls) = what_runs(args);
    let progress = progress_bar(
        !args.quiet && !args.example && std::io::stderr().is_terminal(),
        calls,
    );
    let deliveries = deliveries(args, seed, calls, end_time, withholding, &progress);
    let started = Instant::now();
    let ticker = tokio::spawn(tick(Arc::clone(&engine), progress.clone()));
    tokio::pin!(stop);
    let mut interrupted = dispatch(
        &engine,
        deliveries,
        args.rate,
        concurrency,
        &progress,
        &mut stop,
    )
    .await;
    ticker.abort();
    progress.finish_and_clear();
    // `--family all` with a TRTC side configured: then TRTC's own callbacks of the same
    // calls, to the TRTC URL (signed with --trtc-key), counted in the same summary.
    let mut trtc_stats = None;
    if with_trtc(args) && !interrupted {
        let (stats, _, stopped) = trtc_deliver::run(args, seed, end_time, &mut stop).await?;
        interrupted = stopped;
        trtc_stats = Some(stats);
    }
    let elapsed = started.elapsed();
    let run = summary::RunInfo {
        url: engine.target().redacted(),
        sdkappid: args.sdkappid,
        family: family.to_owned(),
        seed: (!args.example).then_some(seed),
        end_time: (!args.example).then_some(end_time),
        calls,
        interrupted,
    };
    let mut stats = engine
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = trtc_stats {
        stats.absorb(t);
    }
    Ok(stats.summarize(run, elapsed))
}

/// The delivery engine for the call-callback URL.
fn engine(args: &SendArgs, concurrency: usize) -> anyhow::Result<Engine> {
    let target = Target::new(&args.url, args.token.as_deref(), args.auth)?;
    Engine::new(
        target,
        concurrency,
        Duration::from_millis(args.timeout_ms),
        args.retry_schedule.clone(),
    )
}

/// The run's family, as the summary names it, and how many calls it makes.
fn what_runs(args: &SendArgs) -> (&'static str, u64) {
    if args.example {
        return ("example", 1);
    }
    let name = match args.family {
        SendFamily::Status => "status",
        SendFamily::Event => "event",
        SendFamily::V4 => "v4",
        SendFamily::All => "all",
        SendFamily::Trtc => "trtc",
    };
    (name, args.calls)
}

/// What is sent to the call-callback URL, lazily: the example request, or the deliveries
/// of `calls` generated calls, each with the count of its call's deliveries still to go
/// (shared by them, for the progress bar).
fn deliveries<'a>(
    args: &SendArgs,
    seed: u64,
    calls: u64,
    end_time: i64,
    withholding: &'a Withholding,
    progress: &ProgressBar,
) -> Box<dyn Iterator<Item = (Delivery, Arc<AtomicUsize>)> + Send + 'a> {
    if args.example {
        let one = Arc::new(AtomicUsize::new(1));
        return Box::new(std::iter::once((example_delivery(args.sdkappid), one)));
    }
    let families = match args.family {
        SendFamily::Status => Families::only(Family::Status),
        SendFamily::Event => Families::only(Family::Event),
        SendFamily::V4 => Families::only(Family::V4),
        SendFamily::All => Families::ALL,
        // Sent by trtc_deliver::execute (see `execute`).
        SendFamily::Trtc => Families::NONE,
    };
    let sdkappid = args.sdkappid;
    let progress = progress.clone();
    Box::new(Generator::new(seed, calls, end_time).flat_map(move |call| {
        let mut out = Vec::new();
        if let Some(api) = &withholding.api {
            api.add(
                &call.call_id,
                call.start() / 1000,
                generate::record_json(&call),
            );
        }
        if withholding.withholds(&call.call_id) {
            withholding.withheld.fetch_add(1, Ordering::Relaxed);
            progress.inc(1);
        } else {
            generate::render(&call, families, sdkappid, &mut out);
        }
        let left = Arc::new(AtomicUsize::new(out.len()));
        out.into_iter().map(move |d| (d, Arc::clone(&left)))
    }))
}

/// Starts every delivery (at most `rate` per second), keeping a bounded number pending
/// (in flight or waiting for a retry), and waits for them all. Returns whether `stop`
/// cut the run short.
async fn dispatch(
    engine: &Arc<Engine>,
    deliveries: impl Iterator<Item = (Delivery, Arc<AtomicUsize>)>,
    rate: f64,
    concurrency: usize,
    progress: &ProgressBar,
    stop: impl Future<Output = ()>,
) -> bool {
    let pending = Arc::new(Semaphore::new(concurrency.saturating_mul(64).max(1024)));
    let mut tasks = JoinSet::new();
    let started = tokio::time::Instant::now();
    tokio::pin!(stop);
    for (n, (delivery, call_left)) in deliveries.enumerate() {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::select! {
                biased;
                () = &mut stop => return abort(tasks).await,
                () = tokio::time::sleep_until(due) => {}
            }
        }
        let permit = tokio::select! {
            biased;
            () = &mut stop => return abort(tasks).await,
            permit = Arc::clone(&pending).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        engine
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dispatched(delivery.family.as_str());
        let engine = Arc::clone(engine);
        let progress = progress.clone();
        tasks.spawn(async move {
            engine.deliver(&delivery).await;
            if call_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                progress.inc(1);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return abort(tasks).await,
            next = tasks.join_next() => if next.is_none() { return false },
        }
    }
}

async fn abort(mut tasks: JoinSet<()>) -> bool {
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    true
}

/// Keeps the progress bar's message current.
async fn tick(engine: Arc<Engine>, progress: ProgressBar) {
    if progress.is_hidden() {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        let message = {
            let s = engine
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            format!(
                "ok {} retrying {} dropped {}",
                s.acknowledged, s.retrying, s.dropped
            )
        };
        progress.set_message(message);
    }
}

fn progress_bar(visible: bool, calls: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(calls), ProgressDrawTarget::stderr_with_hz(10));
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} calls, eta {eta}  {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
