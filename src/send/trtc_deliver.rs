//! Sending TRTC's callbacks the way TRTC does (`callhook send --family trtc`).
//!
//! Room, media and recording callbacks go to the TRTC callback URL (`--trtc-url`), with the
//! headers `Content-Type: application/json`, `SdkAppId` and `Sign` (when `--trtc-key` is
//! given) and no query. An attempt counts as acknowledged on HTTP 200 within the timeout:
//! TRTC ignores the answer's body (it recommends `{"code":0}`; the summary counts which
//! answers had it). A failed attempt is retried at once, then every 10 s until a minute
//! after the first attempt ([`TrtcSchedule::TENCENT`]).
//!
//! `Call.CallbackAfterRecordChanged` is a v4 call callback: it goes to the call-callback URL
//! (`--url`, with `--token`), with the v4 query, and is judged and retried like the other
//! call families (`--retry-schedule`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliver::{Attempt, Target, describe, http_client, judge};
use super::generate::Generator;
use super::summary::{RunInfo, Stats, Summary};
use super::trtc::{CONTENT_TYPE, RECORDING_PERCENT, TrtcDelivery, TrtcRender, render_trtc};
use crate::cli::SendArgs;

/// When a failed TRTC delivery is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrtcSchedule {
    /// Before the first retry (TRTC: at once).
    pub first_retry: Duration,
    /// Between later retries (TRTC: 10 s).
    pub every: Duration,
    /// No attempt starts later than this after the first (TRTC: a minute).
    pub until: Duration,
}

impl TrtcSchedule {
    /// TRTC's documented schedule (trtc.io docs 39558 and 54914).
    pub const TENCENT: Self = Self {
        first_retry: Duration::ZERO,
        every: Duration::from_secs(10),
        until: Duration::from_secs(60),
    };
}

/// The TRTC callback URL when `--trtc-url` is not given: `trtc` resolved against the
/// call-callback URL like a relative link (`http://h:8080/` → `http://h:8080/trtc`,
/// `https://h/hooks/` → `https://h/hooks/trtc`), without the call URL's query.
pub fn default_trtc_url(callback_url: &str) -> anyhow::Result<String> {
    let shown = crate::protocol::query::redact_url(callback_url);
    let base = reqwest::Url::parse(callback_url)
        .with_context(|| format!("--url {shown:?} is not a URL"))?;
    let mut url = base
        .join("trtc")
        .with_context(|| format!("cannot derive the TRTC URL from {shown:?}"))?;
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// Sends TRTC deliveries, retrying each on its family's schedule, and counts what happened.
pub struct TrtcEngine {
    client: reqwest::Client,
    trtc_url: String,
    sdkappid: String,
    call: Target,
    timeout: Duration,
    schedule: TrtcSchedule,
    call_schedule: Vec<Duration>,
    inflight: Semaphore,
    pub stats: Mutex<Stats>,
}

impl TrtcEngine {
    /// `call` and `call_schedule` serve the record-changed callbacks.
    pub fn new(
        trtc_url: &str,
        sdkappid: i64,
        call: Target,
        concurrency: usize,
        timeout: Duration,
        schedule: TrtcSchedule,
        call_schedule: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        let shown = crate::protocol::query::redact_url(trtc_url);
        let parsed = reqwest::Url::parse(trtc_url)
            .with_context(|| format!("--trtc-url {shown:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "--trtc-url must be an http:// or https:// URL, not {shown:?}"
        );
        let client = http_client(concurrency, timeout)?;
        Ok(Self {
            client,
            trtc_url: parsed.to_string(),
            sdkappid: sdkappid.to_string(),
            call,
            timeout,
            schedule,
            call_schedule,
            inflight: Semaphore::new(concurrency.max(1)),
            stats: Mutex::new(Stats::default()),
        })
    }

    pub fn trtc_url(&self) -> &str {
        &self.trtc_url
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers one callback, retrying on its schedule. Returns whether it was acknowledged.
    pub async fn deliver(&self, d: &TrtcDelivery) -> bool {
        let first = Instant::now();
        let mut calls = self.call_schedule.iter();
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            match self.attempt(d).await {
                Attempt::Acknowledged { message, latency } => {
                    let mut s = self.stats();
                    s.acknowledged_attempt(message, latency);
                    s.finished(attempts, true);
                    return true;
                }
                Attempt::Failed(reason) => self.stats().failed_attempt(reason, attempts == 1),
            }
            let delay = if d.query.is_some() {
                calls.next().copied()
            } else {
                let delay = if attempts == 1 {
                    self.schedule.first_retry
                } else {
                    self.schedule.every
                };
                (first.elapsed() + delay <= self.schedule.until).then_some(delay)
            };
            let Some(delay) = delay else {
                self.stats().finished(attempts, false);
                return false;
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, d: &TrtcDelivery) -> Attempt {
        let Ok(_permit) = self.inflight.acquire().await else {
            return Attempt::Failed("the sender was shut down".to_owned());
        };
        let mut request = match &d.query {
            Some(query) => {
                let now = chrono::Utc::now().timestamp();
                self.client.post(self.call.url_for(query, now))
            }
            None => {
                let r = self
                    .client
                    .post(&self.trtc_url)
                    .header("SdkAppId", &self.sdkappid);
                match &d.sign {
                    Some(sign) => r.header("Sign", sign),
                    None => r,
                }
            }
        };
        request = request
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .timeout(self.timeout)
            .body(d.body.clone());
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let latency = started.elapsed();
        let timed_out = || {
            Attempt::Failed(format!(
                "timeout (no answer within {} ms)",
                self.timeout.as_millis()
            ))
        };
        match answer {
            Err(_) => timed_out(),
            Ok(Err(e)) if e.is_timeout() => timed_out(),
            Ok(Err(e)) => Attempt::Failed(describe(&e)),
            Ok(Ok((status, body))) if d.query.is_some() => judge(status.as_u16(), &body, latency),
            Ok(Ok((status, body))) => judge_trtc(status.as_u16(), &body, latency),
        }
    }
}

/// TRTC's rule: HTTP 200 is success, whatever the body. The answer message says whether the
/// body was the recommended `{"code":0}`.
fn judge_trtc(status: u16, body: &[u8], latency: Duration) -> Attempt {
    if status != 200 {
        let text = String::from_utf8_lossy(body);
        let text = crate::protocol::query::truncate(text.trim(), 80);
        return Attempt::Failed(format!("HTTP {status} {text:?}"));
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(serde_json::Value::as_i64));
    let message = match code {
        Some(0) => "HTTP 200 {\"code\":0}".to_owned(),
        Some(n) => format!("HTTP 200 with code {n} (TRTC ignores it)"),
        None => "HTTP 200 without {\"code\":0} (TRTC ignores the body)".to_owned(),
    };
    Attempt::Acknowledged { message, latency }
}

/// `callhook send --family trtc`: renders the TRTC callbacks of `--calls` generated calls
/// and sends them; returns the summary. `stop` cuts the run short.
pub async fn execute(args: &SendArgs, stop: impl Future<Output = ()>) -> anyhow::Result<Summary> {
    let seed = args.seed.unwrap_or_else(super::generate::random_seed);
    let end_time = args
        .end_time
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let started = Instant::now();
    let (mut stats, trtc_url, interrupted) = run(args, seed, end_time, stop).await?;
    let elapsed = started.elapsed();
    let run = RunInfo {
        url: trtc_url,
        sdkappid: args.sdkappid,
        family: "trtc".to_owned(),
        seed: Some(seed),
        end_time: Some(end_time),
        calls: args.calls,
        interrupted,
    };
    Ok(stats.summarize(run, elapsed))
}

/// Sends the TRTC callbacks of the calls that `seed` and `end_time` generate (the same
/// calls as the call families'), and returns what happened, the TRTC URL, and whether
/// `stop` cut the run short. `--family all` runs this after the call families.
pub async fn run(
    args: &SendArgs,
    seed: u64,
    end_time: i64,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<(Stats, String, bool)> {
    let trtc_url = match &args.trtc_url {
        Some(url) => url.clone(),
        None => default_trtc_url(&args.url)?,
    };
    let concurrency = usize::try_from(args.concurrency)
        .unwrap_or(usize::MAX)
        .max(1);
    let engine = Arc::new(TrtcEngine::new(
        &trtc_url,
        args.sdkappid,
        Target::new(&args.url, args.token.as_deref(), args.auth)?,
        concurrency,
        Duration::from_millis(args.timeout_ms),
        TrtcSchedule::TENCENT,
        args.retry_schedule.clone(),
    )?);
    // Trimmed as the receiver trims its key (a newline from a file or the environment).
    let key = args
        .trtc_key
        .as_deref()
        .map(|k| k.trim().as_bytes().to_vec());
    let sdkappid = args.sdkappid;
    let deliveries = Generator::new(seed, args.calls, end_time).flat_map(move |call| {
        let mut out = Vec::new();
        let opts = TrtcRender {
            sdkappid,
            key: key.as_deref(),
            recording_percent: RECORDING_PERCENT,
        };
        render_trtc(&call, &opts, &mut out);
        out
    });
    let interrupted = dispatch(&engine, deliveries, args.rate, concurrency, stop).await;
    let stats = std::mem::take(&mut *engine.stats());
    Ok((stats, engine.trtc_url().to_owned(), interrupted))
}

/// Starts every delivery (at most `rate` per second), keeping a bounded number pending, and
/// waits for them all. Returns whether `stop` cut the run short.
async fn dispatch(
    engine: &Arc<TrtcEngine>,
    deliveries: impl Iterator<Item = TrtcDelivery>,
    rate: f64,
    concurrency: usize,
    stop: impl Future<Output = ()>,
) -> bool {
    let pending = Arc::new(Semaphore::new(concurrency.saturating_mul(64).max(1024)));
    let mut tasks = JoinSet::new();
    let started = tokio::time::Instant::now();
    tokio::pin!(stop);
    for (n, delivery) in deliveries.enumerate() {
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
        engine.stats().dispatched(delivery.family);
        let engine = Arc::clone(engine);
        tasks.spawn(async move {
            engine.deliver(&delivery).await;
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

#[cfg(test)]
mod tests;
