//! The layers of configuration and their one merge: built-in defaults, then the file, then
//! the environment, then the flags.
//!
//! - defaults → file: serde fills every key the file leaves out from
//!   [`defaults`](super::defaults), so a parsed [`FileConfig`] is both layers merged.
//! - environment → flags: clap gives each flag its `CALLHOOK_*` variable, flag first.
//! - those over the file: [`FileConfig::with_serve_flags`] for `serve`, and
//!   [`database_url`] and [`log_format`] for the keys every command shares.
//!
//! The result is still raw (strings, numbers): `validate` turns it into settings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::cli::{DatabaseArgs, LogFormat, ServeArgs};

/// The configuration file over the built-in defaults: every key the file leaves out has
/// its default. `FileConfig::default()` is what no file configures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: String,
    pub callback_path: String,
    pub trtc_path: String,
    pub log_format: LogFormat,
    pub trusted_proxies: Vec<String>,
    pub database: FileDatabase,
    pub limits: FileLimits,
    pub ingest: FileIngest,
    pub spool: FileSpool,
    pub auth: FileAuth,
    pub reconcile: FileReconcile,
    pub retention: FileRetention,
    pub apps: Vec<FileApp>,
    /// `[[forward]]`: where events are forwarded (`forward.rs`).
    pub forward: Vec<super::forward::FileForward>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileDatabase {
    pub url: String,
    /// `None`: derived from the number of writers.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub pool_size: Option<u32>,
    pub acquire_timeout_ms: u64,
    pub migrate: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileLimits {
    pub body_bytes: usize,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileIngest {
    pub queue_depth: usize,
    pub max_batch: usize,
    pub writers: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileSpool {
    pub enabled: bool,
    pub dir: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileAuth {
    pub sign_window_secs: u64,
    pub failed_signatures_kept_per_minute: u32,
}

/// `[reconcile]`: the reconcile task of `serve`, and the pace of every reconcile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileReconcile {
    /// `off`, or a duration (`15m`, `1h`).
    pub interval: String,
    /// A duration of at most 7 days.
    pub window: String,
    pub rate: f64,
    pub page_size: u32,
}

/// `[retention]`: how much raw history `serve` keeps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct FileRetention {
    /// Days of events, rejected deliveries, forwarding history and call records kept; 0:
    /// all of them, for ever.
    pub days: u32,
}

/// One `[[apps]]` entry: an SDKAppID and, optionally, its secrets and command list.
#[derive(Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct FileApp {
    pub sdkappid: i64,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub commands: Option<Vec<String>>,
    /// The key set in the TRTC console for the room, media and recording callbacks.
    pub trtc_key: Option<String>,
    pub trtc_key_env: Option<String>,
    /// Accept TRTC's callbacks unsigned although the app has a token (unsafe).
    #[serde(default)]
    pub trtc_allow_unsigned: bool,
    /// The app's secret key (the console's), for the REST APIs' UserSig.
    pub secret_key: Option<String>,
    pub secret_key_env: Option<String>,
    /// The app administrator account the REST API requests are made as.
    pub admin_identifier: Option<String>,
    /// The region of the app's REST API (`china`, `singapore`, …), or a base URL instead.
    pub api_region: Option<String>,
    pub api_url: Option<String>,
}

/// The URL's password never shows.
impl std::fmt::Debug for FileDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDatabase")
            .field("url", &super::DatabaseUrl::new(self.url.as_str()))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// The token and the keys never show (the names of their variables do).
impl std::fmt::Debug for FileApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "REDACTED");
        f.debug_struct("FileApp")
            .field("sdkappid", &self.sdkappid)
            .field("token", &hidden(&self.token))
            .field("token_env", &self.token_env)
            .field("commands", &self.commands)
            .field("trtc_key", &hidden(&self.trtc_key))
            .field("trtc_key_env", &self.trtc_key_env)
            .field("trtc_allow_unsigned", &self.trtc_allow_unsigned)
            .field("secret_key", &hidden(&self.secret_key))
            .field("secret_key_env", &self.secret_key_env)
            .field("admin_identifier", &self.admin_identifier)
            .field("api_region", &self.api_region)
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
    }

    /// Reads the file's text. An error names the line, the key (`limits.body_bytes`) and
    /// what the key takes, in words rather than Rust types.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let at = |e: &toml::de::Error, key: Option<String>| {
            let msg = plain_types(e.message().trim());
            let key = key.map_or_else(String::new, |k| format!("{k}: "));
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    ConfigError(format!("line {line}: {key}{msg}"))
                }
                None => ConfigError(format!("{key}{msg}")),
            }
        };
        let de = toml::Deserializer::parse(text).map_err(|e| at(&e, None))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != "." && !path.is_empty()).then_some(path);
            at(e.inner(), key)
        })
    }

    /// `serve`'s flags (each already over its environment variable) over this layer: a
    /// flag that is given wins. `--sdkappid` adds apps rather than replacing a key, so
    /// the apps section takes it itself.
    pub fn with_serve_flags(mut self, a: &ServeArgs, log_flag: Option<LogFormat>) -> Self {
        fn over<T: Clone>(key: &mut T, flag: Option<&T>) {
            if let Some(flag) = flag {
                *key = flag.clone();
            }
        }
        self.database.url = database_url(&a.db, &self);
        self.log_format = log_format(log_flag, &self);
        over(&mut self.listen, a.listen.as_ref());
        over(&mut self.callback_path, a.callback_path.as_ref());
        over(&mut self.trtc_path, a.trtc_path.as_ref());
        over(&mut self.limits.body_bytes, a.body_limit.as_ref());
        over(
            &mut self.limits.request_timeout_ms,
            a.request_timeout_ms.as_ref(),
        );
        over(
            &mut self.limits.shutdown_timeout_ms,
            a.shutdown_timeout_ms.as_ref(),
        );
        over(&mut self.ingest.queue_depth, a.queue_depth.as_ref());
        over(&mut self.ingest.max_batch, a.max_batch.as_ref());
        over(&mut self.ingest.writers, a.writers.as_ref());
        over(&mut self.spool.dir, a.spool_dir.as_ref());
        over(&mut self.retention.days, a.retention_days.as_ref());
        self.database.pool_size = a.pool_size.or(self.database.pool_size);
        self.database.migrate &= !a.no_migrate;
        self.spool.enabled &= !a.no_spool;
        if !a.trusted_proxies.is_empty() {
            self.trusted_proxies = a.trusted_proxies.clone();
        }
        self
    }
}

/// The database URL of every command: `--database-url` (or `CALLHOOK_DATABASE_URL`), else
/// the file's, else the default.
pub fn database_url(args: &DatabaseArgs, file: &FileConfig) -> String {
    args.database_url
        .clone()
        .unwrap_or_else(|| file.database.url.clone())
}

/// The log format of every command: `--log-format` (or `CALLHOOK_LOG_FORMAT`), else the
/// file's, else the default.
pub fn log_format(flag: Option<LogFormat>, file: &FileConfig) -> LogFormat {
    flag.unwrap_or(file.log_format)
}

/// serde's names of Rust types, said as a configuration's reader knows them.
fn plain_types(msg: &str) -> String {
    let mut out = msg.to_owned();
    for (rust, words) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, words);
    }
    out
}
