//! The built-in defaults: the one table of them. A parsed configuration file takes every
//! key it leaves out from here (the `Default` impls below), [`Settings::new`] is built
//! from here, and tests hold `config.example.toml` and the `--help` texts to it.
//!
//! [`Settings::new`]: super::Settings::new

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use super::file::{
    FileAuth, FileConfig, FileDatabase, FileIngest, FileLimits, FileReconcile, FileRetention,
    FileSpool,
};
use super::forward::{MaxInFlight, RetrySchedule, TimeoutMs};
use crate::cli::LogFormat;

pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub const CALLBACK_PATH: &str = "/";
pub const TRTC_PATH: &str = "/trtc";
pub const LOG_FORMAT: LogFormat = LogFormat::Pretty;
/// The log filter when RUST_LOG is not set.
pub const LOG_FILTER: &str = "info,sqlx=warn";

/// An SQLite file in the working directory.
pub const DATABASE_URL: &str = "sqlite://callhook.db";
pub const ACQUIRE_TIMEOUT_MS: u64 = 1000;
pub const MIGRATE: bool = true;
/// Connections beyond the writers when `pool_size` is not set: readiness probes and the
/// journal's replay. The pool size is derived: writers + this.
pub const POOL_SPARE: u32 = 2;

pub const BODY_BYTES: usize = 64 * 1024;
pub const REQUEST_TIMEOUT_MS: u64 = 3000;
pub const HEADER_READ_TIMEOUT_MS: u64 = 5000;
pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

pub const QUEUE_DEPTH: usize = 4096;
pub const MAX_BATCH: usize = 512;
pub const WRITERS: usize = 2;

pub const SPOOL_ENABLED: bool = true;
pub const SPOOL_DIR: &str = "callhook-spool";
pub const SPOOL_MAX_BYTES: u64 = 1 << 30;

pub const SIGN_WINDOW_SECS: u64 = 300;
/// Refused deliveries that failed authentication (a bad TRTC `Sign`) kept in
/// `rejected_deliveries` per app and minute; the rest are answered the same, not kept.
pub const FAILED_SIGNATURES_KEPT_PER_MINUTE: u32 = 100;

/// The app administrator account that signs REST API requests (`[[apps]] admin_identifier`).
pub const ADMIN_IDENTIFIER: &str = "administrator";
/// The region of an app's REST API when neither `api_region` nor `api_url` is set.
pub const API_REGION: &str = "china";

/// Days of raw history kept (`[retention] days`): 0 keeps everything.
pub const RETENTION_DAYS: u32 = 0;

/// How often `serve` reconciles against Tencent's call records: off.
pub const RECONCILE_INTERVAL: &str = "off";
/// How far back each reconcile of `serve` looks.
pub const RECONCILE_WINDOW: &str = "2h";
/// Requests a second to Tencent's REST APIs, at most (Tencent allows 200).
pub const RECONCILE_RATE: f64 = 20.0;
/// Records asked for per page of the call record API.
pub const RECONCILE_PAGE_SIZE: u32 = 100;

/// How often the prober and the journal's replay look (not a configuration key).
pub const TICK_MS: u64 = 500;

/// `[[forward]]`, per destination: how long an attempt may take, the delay before each
/// attempt (the first is made at once; after the last, the entry is dead), and the most
/// attempts in flight at once.
pub const FORWARD_TIMEOUT_MS: u64 = 5000;
pub const FORWARD_RETRY_SCHEDULE: [&str; 8] = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"];
pub const FORWARD_MAX_IN_FLIGHT: usize = 16;

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: LISTEN.to_string(),
            callback_path: CALLBACK_PATH.to_owned(),
            trtc_path: TRTC_PATH.to_owned(),
            log_format: LOG_FORMAT,
            trusted_proxies: Vec::new(),
            database: FileDatabase::default(),
            limits: FileLimits::default(),
            ingest: FileIngest::default(),
            spool: FileSpool::default(),
            auth: FileAuth::default(),
            reconcile: FileReconcile::default(),
            retention: FileRetention::default(),
            apps: Vec::new(),
            forward: Vec::new(),
        }
    }
}

impl Default for FileDatabase {
    fn default() -> Self {
        Self {
            url: DATABASE_URL.to_owned(),
            pool_size: None,
            acquire_timeout_ms: ACQUIRE_TIMEOUT_MS,
            migrate: MIGRATE,
        }
    }
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            body_bytes: BODY_BYTES,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS,
            shutdown_timeout_ms: SHUTDOWN_TIMEOUT_MS,
        }
    }
}

impl Default for FileIngest {
    fn default() -> Self {
        Self {
            queue_depth: QUEUE_DEPTH,
            max_batch: MAX_BATCH,
            writers: WRITERS,
        }
    }
}

impl Default for FileSpool {
    fn default() -> Self {
        Self {
            enabled: SPOOL_ENABLED,
            dir: PathBuf::from(SPOOL_DIR),
            max_bytes: SPOOL_MAX_BYTES,
        }
    }
}

impl Default for TimeoutMs {
    fn default() -> Self {
        Self(FORWARD_TIMEOUT_MS)
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self(FORWARD_RETRY_SCHEDULE.map(str::to_owned).to_vec())
    }
}

impl Default for MaxInFlight {
    fn default() -> Self {
        Self(FORWARD_MAX_IN_FLIGHT)
    }
}

impl Default for FileAuth {
    fn default() -> Self {
        Self {
            sign_window_secs: SIGN_WINDOW_SECS,
            failed_signatures_kept_per_minute: FAILED_SIGNATURES_KEPT_PER_MINUTE,
        }
    }
}

impl Default for FileRetention {
    fn default() -> Self {
        Self {
            days: RETENTION_DAYS,
        }
    }
}

impl Default for FileReconcile {
    fn default() -> Self {
        Self {
            interval: RECONCILE_INTERVAL.to_owned(),
            window: RECONCILE_WINDOW.to_owned(),
            rate: RECONCILE_RATE,
            page_size: RECONCILE_PAGE_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, ValueEnum as _};

    use super::*;
    use crate::cli::Cli;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// config.example.toml sets every key (but `pool_size`, which is derived and shown
    /// commented out) to its built-in default, and its [[apps]] are examples.
    #[test]
    fn the_example_file_states_every_default() -> TestResult {
        let mut example: toml::Table = toml::from_str(include_str!("../../config.example.toml"))?;
        example.remove("apps");
        let mut defaults = serde_json::to_value(FileConfig::default())?;
        if let Some(map) = defaults.as_object_mut() {
            map.remove("apps");
            // An example, commented out (config::forward's tests hold it to the defaults).
            map.remove("forward");
        }
        assert_eq!(serde_json::to_value(example)?, defaults);
        Ok(())
    }

    /// Every "Default: …" in `--help` names the built-in default, and every flag with a
    /// default says it.
    #[test]
    fn the_help_states_the_defaults() {
        let d = FileConfig::default();
        let log_format = d
            .log_format
            .to_possible_value()
            .map(|v| v.get_name().to_owned());
        let stated: Vec<(&str, String)> = vec![
            ("log_format", log_format.unwrap_or_default()),
            ("database_url", d.database.url),
            ("listen", d.listen),
            ("callback_path", d.callback_path),
            ("trtc_path", d.trtc_path),
            ("body_limit", d.limits.body_bytes.to_string()),
            (
                "request_timeout_ms",
                d.limits.request_timeout_ms.to_string(),
            ),
            ("queue_depth", d.ingest.queue_depth.to_string()),
            ("max_batch", d.ingest.max_batch.to_string()),
            ("writers", d.ingest.writers.to_string()),
            ("pool_size", format!("writers + {POOL_SPARE}")),
            ("spool_dir", d.spool.dir.display().to_string()),
            (
                "shutdown_timeout_ms",
                d.limits.shutdown_timeout_ms.to_string(),
            ),
            (
                "sdkappid",
                "every configured app with a secret key".to_owned(),
            ),
            ("retention_days", d.retention.days.to_string()),
            ("rate", d.reconcile.rate.to_string()),
            ("page_size", d.reconcile.page_size.to_string()),
            (
                "since",
                format!(
                    "{}h",
                    super::super::reconcile::DEFAULT_SINCE.as_secs() / 3600
                ),
            ),
        ];
        let cli = Cli::command();
        let args = cli
            .get_arguments()
            .chain(
                cli.find_subcommand("serve")
                    .into_iter()
                    .flat_map(|c| c.get_arguments()),
            )
            .chain(
                cli.find_subcommand("reconcile")
                    .into_iter()
                    .flat_map(|c| c.get_arguments())
                    .filter(|a| a.get_id() != "database_url"),
            )
            .chain(
                cli.find_subcommand("healthcheck")
                    .into_iter()
                    .flat_map(|c| c.get_arguments())
                    .filter(|a| a.get_id() == "listen"),
            );
        let mut seen = 0;
        for arg in args {
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
            let id = arg.get_id().as_str();
            match stated.iter().find(|(name, _)| *name == id) {
                Some((_, value)) => {
                    seen += 1;
                    let want = format!("Default: {value}");
                    assert!(help.contains(&want), "--{id}: {want:?} not in {help:?}");
                }
                None => assert!(
                    !help.contains("Default:"),
                    "--{id} states a default: {help:?}"
                ),
            }
        }
        // The serve and reconcile flags once, plus the healthcheck's --listen.
        assert_eq!(seen, stated.len() + 1);
    }
}
