//! Log output, shared by the `callhook` binary and the benchmark's HTTP-only ceiling so
//! both pay the same per-request costs.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::defaults::LOG_FILTER;

/// Logs go to stderr through a background writer, so a slow log consumer never blocks a
/// request; under extreme pressure lines are dropped rather than requests delayed. Keep
/// the guard alive for the life of the process (it flushes on drop).
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(LOG_FILTER));
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8 * 1024)
        .lossy(true)
        // Buffered: the worker writes everything queued, then flushes, so a burst of
        // request lines costs one write(2), not one per line.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, stderr));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Pretty => builder.with_ansi(ansi).with_target(false).compact().init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    guard
}

/// Logs a recurring failure (a task retrying against a database or a destination that is
/// down) when it first happens and then at most once a minute.
#[derive(Default)]
pub struct Complaint {
    last: Option<Instant>,
}

impl Complaint {
    pub fn log(&mut self, error: &str, what: &str) {
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.last = Some(Instant::now());
            tracing::error!(error, "{what}");
        }
    }
}
