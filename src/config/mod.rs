//! Configuration, in three steps:
//!
//! 1. **Layers** (`file`): built-in defaults, then the TOML file, then `CALLHOOK_*`
//!    environment variables, then flags, merged once (flag > environment > file > default).
//! 2. **Sections** (`validate`): each section (database, http, limits, ingest, spool,
//!    auth, apps) checked on its own into typed settings.
//! 3. **Derived rules** (`validate::derived`): what spans sections, such as what the
//!    backend allows ([`BackendKind`](crate::store::BackendKind)) and the pool size the
//!    writers need.
//!
//! The defaults live in one table ([`defaults`]); config.example.toml and `--help` are
//! tested against it. Every command resolves through [`resolve`], which shares the
//! config file, the log format and the database URL among them.

pub mod defaults;
pub(crate) mod file;
pub(crate) mod forward;
mod reconcile;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::cli::{
    Cli, Command, DatabaseArgs, EventsArgs, ForwardCommand, ForwardRetryArgs, ForwardStatusArgs,
    HealthcheckArgs, ListenArgs, LogFormat, ReportArgs, SendArgs, ServeArgs,
};
pub use crate::store::{DatabaseSettings, DatabaseUrl};
pub use reconcile::{ReconcileJob, RegisterJob, Window, parse_time, show as show_time};

pub use defaults::DATABASE_URL as DEFAULT_DATABASE_URL;
pub use file::{
    FileApp, FileAuth, FileConfig, FileDatabase, FileIngest, FileLimits, FileReconcile,
    FileRetention, FileSpool, database_url, log_format,
};
pub use validate::{RECORDS_KEPT, parse_listen, probe_address, validate_database_url};

use crate::tencent::ApiRegion;
pub use forward::{Destination, FileForward, parse_duration, redacted_url};

/// A configuration problem, reported as one line and exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

/// The database settings' defaults come from the one table of defaults.
impl DatabaseSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: DatabaseUrl::new(url),
            pool_size: defaults::WRITERS as u32 + defaults::POOL_SPARE,
            acquire_timeout: Duration::from_millis(defaults::ACQUIRE_TIMEOUT_MS),
            write_deadline: None,
            faults: crate::faults::Faults::none(),
        }
    }
}

/// One SDKAppID this receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    pub sdkappid: i64,
    /// When set, every delivery must carry `token=<token>` or a valid `Sign`.
    pub token: Option<Secret>,
    /// Allowed commands, lower-cased; `None` = every command (those callhook does not know
    /// are stored with family `other`).
    pub commands: Option<HashSet<String>>,
    /// The TRTC console's callback key: when set, TRTC's own callbacks must carry `Sign` =
    /// base64(HMAC-SHA256(key, body)); see [`TrtcCheck`] for what happens without it.
    pub trtc_key: Option<Secret>,
    /// `trtc_allow_unsigned = true`: TRTC's callbacks are stored unverified even though the
    /// app has a token. Off by default; unsafe (anyone who knows the URL can write rows).
    pub trtc_allow_unsigned: bool,
    /// How callhook calls Tencent's REST APIs for this app (`reconcile`, `register`).
    pub api: ApiSettings,
}

/// Where an app's REST API requests go: its region's domain, or a base URL that replaces
/// it (a proxy, or a test's fake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEndpoint {
    Region(ApiRegion),
    Url(String),
}

impl ApiEndpoint {
    /// The base URL the API paths (`/v4/…`) are appended to, without a trailing `/`.
    pub fn base_url(&self) -> String {
        match self {
            Self::Region(r) => r.base_url(),
            Self::Url(u) => u.trim_end_matches('/').to_owned(),
        }
    }
}

/// An app's credentials for Tencent's REST APIs: the secret key signs a UserSig for the
/// administrator account; requests go to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// `secret_key`, `secret_key_env` or `CALLHOOK_SECRET_KEY_<SDKAPPID>`; without it the
    /// app cannot be reconciled or registered.
    pub secret_key: Option<Secret>,
    pub admin_identifier: String,
    pub endpoint: ApiEndpoint,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            secret_key: None,
            admin_identifier: defaults::ADMIN_IDENTIFIER.to_owned(),
            endpoint: ApiEndpoint::Region(ApiRegion::China),
        }
    }
}

/// `[reconcile]`: the task of `serve` (off without an interval) and the pace of every
/// reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileSettings {
    /// How often `serve` reconciles; `None`: never.
    pub interval: Option<Duration>,
    /// How far back each of its runs looks (at most 7 days).
    pub window: Duration,
    /// Requests a second to Tencent, at most.
    pub rate: f64,
    /// Records asked for per page.
    pub page_size: u32,
}

/// How TRTC's own callbacks (on `trtc_path`) are checked for an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrtcCheck {
    /// With a key: every delivery must carry a valid `Sign` (else 403, kept within the cap).
    Signed,
    /// No key, no token: stored with the unverified note. Anyone can write this app's call
    /// callbacks too (its SDKAppID is its only check), so refusing would protect nothing.
    Unverified,
    /// No key, `trtc_allow_unsigned = true`: stored with the unverified note.
    UnsignedAllowed,
    /// No key while the app has a token: refused (403), not kept, since anyone could send
    /// them to an app that protects its call callbacks.
    Refused,
}

impl TrtcCheck {
    /// For the start-up log.
    pub fn label(self) -> &'static str {
        match self {
            Self::Signed => "signed (trtc_key)",
            Self::Unverified => "unverified (no trtc_key, no token)",
            Self::UnsignedAllowed => "unsigned allowed (trtc_allow_unsigned)",
            Self::Refused => "refused (token but no trtc_key)",
        }
    }
}

impl AppSettings {
    pub fn new(sdkappid: i64) -> Self {
        Self {
            sdkappid,
            token: None,
            commands: None,
            trtc_key: None,
            trtc_allow_unsigned: false,
            api: ApiSettings::default(),
        }
    }

    /// How TRTC's callbacks are checked: the key decides; without one, an app with a token
    /// refuses them unless it opted in to unsigned ones.
    pub fn trtc_check(&self) -> TrtcCheck {
        match (&self.trtc_key, self.trtc_allow_unsigned, &self.token) {
            (Some(_), _, _) => TrtcCheck::Signed,
            (None, true, _) => TrtcCheck::UnsignedAllowed,
            (None, false, Some(_)) => TrtcCheck::Refused,
            (None, false, None) => TrtcCheck::Unverified,
        }
    }

    /// Whether a command (any case; `None`: the query names none) may be delivered for
    /// this app: any, unless the app lists its commands.
    pub fn allows(&self, command: Option<&str>) -> bool {
        match (&self.commands, command) {
            (None, _) => true,
            (Some(set), Some(c)) => set.contains(&c.to_ascii_lowercase()),
            (Some(_), None) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub queue_depth: usize,
    pub max_batch: usize,
    pub writers: usize,
}

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// `None`: spooling is off.
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub migrate: bool,
    pub apps: BTreeMap<i64, AppSettings>,
    pub callback_path: String,
    /// Where TRTC's own callbacks are posted.
    pub trtc_path: String,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub ingest: IngestSettings,
    pub trusted_proxies: Vec<IpNet>,
    pub spool: SpoolSettings,
    pub sign_window: Duration,
    /// Refused deliveries that failed authentication kept per app and minute.
    pub failed_signatures_kept_per_minute: u32,
    pub reconcile: ReconcileSettings,
    pub log_format: LogFormat,
    /// How often the prober probes a database that is down, and the replay looks at the
    /// journal: 500 ms. Not a configuration key (the randomized fault test shortens it).
    pub tick: Duration,
    /// `[[forward]]`: where stored events are forwarded (none by default).
    pub forward: Vec<Destination>,
    /// `[retention] days`: days of raw history kept; `None`: all of it.
    pub retention_days: Option<u32>,
}

impl Settings {
    /// The built-in defaults for a database URL and a set of apps, as they are, without
    /// the rules [`Settings::resolve`] derives (an SQLite URL keeps two writers here).
    /// Tests start from here.
    pub fn new(
        database_url: impl Into<String>,
        apps: impl IntoIterator<Item = AppSettings>,
    ) -> Self {
        use defaults as d;
        Self {
            listen: d::LISTEN,
            database: DatabaseSettings::new(database_url),
            migrate: d::MIGRATE,
            apps: apps.into_iter().map(|a| (a.sdkappid, a)).collect(),
            callback_path: d::CALLBACK_PATH.to_owned(),
            trtc_path: d::TRTC_PATH.to_owned(),
            body_limit: d::BODY_BYTES,
            request_timeout: Duration::from_millis(d::REQUEST_TIMEOUT_MS),
            header_read_timeout: Duration::from_millis(d::HEADER_READ_TIMEOUT_MS),
            shutdown_timeout: Duration::from_millis(d::SHUTDOWN_TIMEOUT_MS),
            ingest: IngestSettings {
                queue_depth: d::QUEUE_DEPTH,
                max_batch: d::MAX_BATCH,
                writers: d::WRITERS,
            },
            trusted_proxies: Vec::new(),
            spool: SpoolSettings {
                dir: None,
                max_bytes: d::SPOOL_MAX_BYTES,
            },
            sign_window: Duration::from_secs(d::SIGN_WINDOW_SECS),
            failed_signatures_kept_per_minute: d::FAILED_SIGNATURES_KEPT_PER_MINUTE,
            reconcile: ReconcileSettings {
                interval: None,
                window: Duration::from_secs(2 * 3600),
                rate: d::RECONCILE_RATE,
                page_size: d::RECONCILE_PAGE_SIZE,
            },
            retention_days: None,
            log_format: d::LOG_FORMAT,
            tick: Duration::from_millis(d::TICK_MS),
            forward: Vec::new(),
        }
    }

    /// `serve`'s settings: the flags (with their environment variables) and `log_format`
    /// (`--log-format`) over the file over the defaults, validated section by section,
    /// then the derived rules. `env` reads the per-app secrets' variables.
    pub fn resolve(
        args: &ServeArgs,
        file: FileConfig,
        log_format: Option<LogFormat>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let c = file.with_serve_flags(args, log_format);
        let limits = &c.limits;
        let configured_pool_size = c.database.pool_size;
        let settings = Settings {
            database: validate::database(&c.database)?,
            migrate: c.database.migrate,
            listen: parse_listen(&c.listen)?,
            callback_path: validate::route("callback_path", &c.callback_path)?,
            trtc_path: validate::route("trtc_path", &c.trtc_path)?,
            trusted_proxies: validate::trusted_proxies(&c.trusted_proxies)?,
            body_limit: validate::body_limit(limits.body_bytes)?,
            request_timeout: validate::millis(
                "limits.request_timeout_ms (--request-timeout-ms, CALLHOOK_REQUEST_TIMEOUT_MS)",
                limits.request_timeout_ms,
                100,
                600_000,
            )?,
            header_read_timeout: validate::millis(
                "limits.header_read_timeout_ms",
                limits.header_read_timeout_ms,
                100,
                600_000,
            )?,
            shutdown_timeout: validate::millis(
                "limits.shutdown_timeout_ms (--shutdown-timeout-ms, CALLHOOK_SHUTDOWN_TIMEOUT_MS)",
                limits.shutdown_timeout_ms,
                0,
                3_600_000,
            )?,
            ingest: validate::ingest(&c.ingest)?,
            spool: validate::spool(&c.spool)?,
            sign_window: validate::sign_window(c.auth.sign_window_secs)?,
            failed_signatures_kept_per_minute: validate::kept_per_minute(
                c.auth.failed_signatures_kept_per_minute,
            )?,
            reconcile: validate::reconcile(&c.reconcile)?,
            retention_days: validate::retention_days(c.retention.days)?,
            forward: forward::destinations(&c.forward, env)?,
            apps: validate::apps(c.apps, &args.sdkappids, env)?,
            log_format: c.log_format,
            tick: Duration::from_millis(defaults::TICK_MS),
        };
        validate::derived(settings, configured_pool_size)
    }
}

/// The URL `callhook healthcheck` probes: `--url` (`CALLHOOK_HEALTHCHECK_URL`) when given,
/// else `/healthz` on the address `serve` listens on, from the same layers
/// (`--listen`/`CALLHOOK_LISTEN` > file `listen` > 127.0.0.1:8080), so a container that
/// moves the port with `CALLHOOK_LISTEN` keeps a working health check.
pub fn healthcheck_url(args: &HealthcheckArgs, file: &FileConfig) -> Result<String, ConfigError> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let listen = parse_listen(args.listen.as_deref().unwrap_or(&file.listen))?;
    Ok(format!("http://{}/healthz", probe_address(listen)))
}

/// The database URL of a command that reads or migrates the database, checked.
pub fn database(args: &DatabaseArgs, file: &FileConfig) -> Result<DatabaseUrl, ConfigError> {
    let url = database_url(args, file);
    validate_database_url(&url)?;
    Ok(DatabaseUrl::new(url))
}

// ---------------------------------------------------------------------------------------
// Every command's settings

/// A command with its settings resolved: what `main` runs.
#[derive(Debug)]
pub enum Job {
    Serve(Box<Settings>),
    Migrate(DatabaseSettings),
    /// The arguments and the merged, checked database URL.
    Report(ReportArgs, DatabaseUrl),
    Events(EventsArgs, DatabaseUrl),
    Send(SendArgs),
    Healthcheck {
        url: String,
        timeout: Duration,
    },
    Reconcile(Box<ReconcileJob>),
    Register(Box<RegisterJob>),
    /// With the destinations the configuration names.
    ForwardStatus(ForwardStatusArgs, DatabaseUrl, Vec<String>),
    ForwardRetry(ForwardRetryArgs, DatabaseUrl),
    Listen(ListenArgs),
}

/// A command line, resolved: the log format and the job.
#[derive(Debug)]
pub struct Invocation {
    pub log_format: LogFormat,
    pub job: Job,
}

/// How long `migrate` waits for a connection: a database that is starting is waited for.
const MIGRATE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the configuration file and resolves the command's settings through the same
/// layers: the file (`--config`), the log format and the database URL are shared by
/// every command. `env` reads the per-app secrets' variables.
pub fn resolve(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Invocation, ConfigError> {
    let file = match cli.config.as_deref() {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let shared_log_format = log_format(cli.log_format, &file);
    let (log_format, job) = match cli.command {
        Command::Serve(args) => {
            let settings = Settings::resolve(&args, file, cli.log_format, env)?;
            (settings.log_format, Job::Serve(Box::new(settings)))
        }
        Command::Migrate(args) => {
            let url = database(&args, &file)?;
            let db = DatabaseSettings {
                acquire_timeout: MIGRATE_ACQUIRE_TIMEOUT,
                ..DatabaseSettings::new(url.expose())
            };
            (shared_log_format, Job::Migrate(db))
        }
        Command::Report(args) => {
            let url = database(&args.db, &file)?;
            (shared_log_format, Job::Report(args, url))
        }
        Command::Events(args) => {
            let url = database(&args.db, &file)?;
            (shared_log_format, Job::Events(args, url))
        }
        Command::Send(args) => (shared_log_format, Job::Send(args)),
        Command::Healthcheck(args) => {
            let url = healthcheck_url(&args, &file)?;
            let timeout = Duration::from_millis(args.timeout_ms);
            (shared_log_format, Job::Healthcheck { url, timeout })
        }
        Command::Reconcile(args) => {
            let job = reconcile::reconcile_job(args, &file, env, crate::now_millis())?;
            (shared_log_format, Job::Reconcile(Box::new(job)))
        }
        Command::Register(args) => {
            let job = reconcile::register_job(args, &file, env)?;
            (shared_log_format, Job::Register(Box::new(job)))
        }
        Command::Forward(args) => (shared_log_format, forward_job(args.command, &file)?),
        Command::Listen(args) => (shared_log_format, Job::Listen(args)),
    };
    Ok(Invocation { log_format, job })
}

/// `callhook forward status` or `retry`, with the database URL the other commands use.
fn forward_job(command: ForwardCommand, file: &FileConfig) -> Result<Job, ConfigError> {
    Ok(match command {
        ForwardCommand::Status(args) => {
            let url = database(&args.db, file)?;
            let names = file.forward.iter().map(|f| f.name.clone()).collect();
            Job::ForwardStatus(args, url, names)
        }
        ForwardCommand::Retry(args) => {
            let url = database(&args.db, file)?;
            Job::ForwardRetry(args, url)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve(args: ServeArgs, file: &str) -> Result<Settings, ConfigError> {
        Settings::resolve(&args, FileConfig::parse(file)?, None, &no_env)
    }

    #[test]
    fn the_example_config_parses_and_resolves() -> Result<(), ConfigError> {
        // As it is, with nothing in the environment, the example configures exactly what
        // the built-in defaults do (it says so), for its one app.
        let text = include_str!("../../config.example.toml");
        let none = |_: &str| None;
        let example =
            Settings::resolve(&ServeArgs::default(), FileConfig::parse(text)?, None, &none)?;
        let defaults = Settings::resolve(
            &ServeArgs::default(),
            FileConfig::parse("[[apps]]\nsdkappid = 1400000001\n")?,
            None,
            &none,
        )?;
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
        // Its commented-out examples are valid too.
        // (Up to the [[forward]] examples, which config::forward's tests read.)
        let apps_part = text.split("\n# [[forward]]").next().unwrap_or(text);
        let uncommented: String = apps_part
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if [
                        "trusted_proxies =",
                        "pool_size =",
                        "commands =",
                        "[[apps]]",
                        "sdkappid =",
                        "token_env =",
                        "trtc_allow_unsigned =",
                        "secret_key_env =",
                        "admin_identifier =",
                        "api_region =",
                    ]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
                {
                    format!("{rest}\n")
                }
                // The example replaces the default it follows.
                _ if l == "trusted_proxies = []" => String::new(),
                _ => format!("{l}\n"),
            })
            .collect();
        let env = |k: &str| {
            [
                "CALLHOOK_TOKEN_1400000002",
                "CALLHOOK_SECRET_KEY_1400000001",
            ]
            .contains(&k)
            .then(|| "from-env".to_owned())
        };
        let s = Settings::resolve(
            &ServeArgs::default(),
            FileConfig::parse(&uncommented)?,
            None,
            &env,
        )?;
        assert_eq!(s.apps.len(), 2);
        let api = &s.apps[&1_400_000_001].api;
        assert_eq!(
            api.secret_key.as_ref().map(Secret::expose),
            Some("from-env")
        );
        assert_eq!(
            api.endpoint,
            ApiEndpoint::Region(crate::tencent::ApiRegion::Singapore)
        );
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.database.pool_size, 4);
        Ok(())
    }

    #[test]
    fn settings_new_is_the_resolved_defaults() -> Result<(), ConfigError> {
        // Settings::new applies no derived rule, so compare on PostgreSQL, spool off.
        let url = "postgres://app@db.internal/calls";
        let args = ServeArgs {
            db: DatabaseArgs {
                database_url: Some(url.to_owned()),
            },
            sdkappids: vec!["1".into()],
            no_spool: true,
            ..Default::default()
        };
        let resolved = resolve(args, "")?;
        let new = Settings::new(url, [AppSettings::new(1)]);
        assert_eq!(format!("{resolved:?}"), format!("{new:?}"));
        Ok(())
    }

    #[test]
    fn no_app_is_an_error() {
        let e = resolve(ServeArgs::default(), "").err().map(|e| e.0);
        assert!(e.is_some_and(|m| m.contains("no SDKAppID")));
    }

    #[test]
    fn precedence_flag_over_file() -> Result<(), ConfigError> {
        let args = ServeArgs {
            sdkappids: vec!["1400000009".into()],
            listen: Some("0.0.0.0:9000".into()),
            ..Default::default()
        };
        let s = resolve(
            args,
            "listen = \"127.0.0.1:7000\"\n[ingest]\nmax_batch = 7\n",
        )?;
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.ingest.max_batch, 7);
        assert!(s.apps.contains_key(&1_400_000_009));
        assert_eq!(s.database.url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.ingest.writers, 1, "SQLite has one writer");
        assert!(s.spool.dir.is_none(), "no spool on SQLite");
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = resolve(ServeArgs::default(), "[limits]\nbody_bytez = 5\n")
            .err()
            .map(|e| e.0);
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("body_bytez") && m.contains("line 2")),
            "{e:?}"
        );
        let args = ServeArgs {
            sdkappids: vec!["abc".into()],
            ..Default::default()
        };
        assert!(resolve(args, "").is_err());
    }

    /// Every configuration error names the key it is about and what the key takes, in
    /// words: a value of the wrong type (with its line and the key's full path), a value
    /// out of range (with the flag and variable that set the same key).
    #[test]
    fn errors_name_the_key_and_its_form() {
        let message = |file: &str| {
            resolve(ServeArgs::default(), file)
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
        };
        let m = message("listen = \"127.0.0.1:8080\"\n[limits]\nbody_bytes = \"64k\"\n");
        assert!(m.contains("line 3: limits.body_bytes:"), "{m}");
        assert!(
            m.contains("expected a whole number") && !m.contains("usize"),
            "{m}"
        );
        let m = message("[[apps]]\nsdkappid = \"x\"\n");
        assert!(m.contains("line 2: apps[0].sdkappid:"), "{m}");
        let m = message("[limits]\nrequest_timeout_ms = 0\n");
        assert!(
            m.contains("limits.request_timeout_ms")
                && m.contains("CALLHOOK_REQUEST_TIMEOUT_MS")
                && m.contains("from 100 to 600000"),
            "{m}"
        );
        let m = message("[limits]\nbody_bytes = 10\n");
        assert!(
            m.contains("limits.body_bytes") && m.contains("from 1024"),
            "{m}"
        );
        let m = message("[ingest]\nwriters = 0\n");
        assert!(
            m.contains("ingest.writers") && m.contains("from 1 to 64"),
            "{m}"
        );
    }

    #[test]
    fn tokens_from_environment() -> Result<(), ConfigError> {
        let env = |k: &str| match k {
            "MY_TOKEN" => Some("t1".to_owned()),
            "CALLHOOK_TOKEN_2" => Some("t2".to_owned()),
            _ => None,
        };
        let file = FileConfig::parse("[[apps]]\nsdkappid = 1\ntoken_env = \"MY_TOKEN\"\n")?;
        let args = ServeArgs {
            sdkappids: vec!["2".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&args, file, None, &env)?;
        assert_eq!(s.apps[&1].token.as_ref().map(Secret::expose), Some("t1"));
        assert_eq!(s.apps[&2].token.as_ref().map(Secret::expose), Some("t2"));
        assert!(
            !format!("{s:?}").contains("t1"),
            "secrets never show in Debug"
        );
        Ok(())
    }

    #[test]
    fn trtc_keys_and_path() -> Result<(), ConfigError> {
        let env = |k: &str| match k {
            "MY_TRTC_KEY" => Some("k1".to_owned()),
            "CALLHOOK_TRTC_KEY_2" => Some("k2".to_owned()),
            _ => None,
        };
        let file = FileConfig::parse(
            "trtc_path = \"/rooms\"\n[[apps]]\nsdkappid = 1\ntrtc_key_env = \"MY_TRTC_KEY\"\n[[apps]]\nsdkappid = 3\ntrtc_key = \"k3\"\n",
        )?;
        let args = ServeArgs {
            sdkappids: vec!["2".into(), "4".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&args, file, None, &env)?;
        assert_eq!(s.trtc_path, "/rooms");
        let key = |id: i64| s.apps[&id].trtc_key.as_ref().map(Secret::expose);
        assert_eq!(
            (key(1), key(2), key(3), key(4)),
            (Some("k1"), Some("k2"), Some("k3"), None)
        );
        assert!(!format!("{s:?}").contains("k3"), "keys never show in Debug");
        let one = || ServeArgs {
            sdkappids: vec!["1".into()],
            ..Default::default()
        };
        assert_eq!(resolve(one(), "")?.trtc_path, "/trtc");
        for bad in [
            "trtc_path = \"trtc\"",
            "trtc_path = \"/\"",
            "trtc_path = \"/metrics\"",
            "[[apps]]\nsdkappid = 1\ntrtc_key = \"a\"\ntrtc_key_env = \"B\"",
            "[[apps]]\nsdkappid = 1\ntrtc_key_env = \"UNSET\"",
        ] {
            assert!(resolve(one(), bad).is_err(), "{bad}");
        }
        Ok(())
    }

    /// A token or key from a file or a mounted Kubernetes secret ends in a newline: the
    /// whitespace around every secret is dropped, wherever it comes from.
    #[test]
    fn secrets_are_trimmed() -> Result<(), ConfigError> {
        let env = |k: &str| {
            let v = match k {
                "MY_TOKEN" => " t1\n",
                "MY_TRTC_KEY" => "k1\n",
                "CALLHOOK_TOKEN_2" => "t2\r\n",
                "CALLHOOK_TRTC_KEY_2" => "\tk2 \n",
                _ => return None,
            };
            Some(v.to_owned())
        };
        let file = FileConfig::parse(
            "[[apps]]\nsdkappid = 1\ntoken_env = \"MY_TOKEN\"\ntrtc_key_env = \"MY_TRTC_KEY\"\n\
             [[apps]]\nsdkappid = 3\ntoken = \"t3\\n\"\ntrtc_key = \" k3 \"\n",
        )?;
        let args = ServeArgs {
            sdkappids: vec!["2".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&args, file, None, &env)?;
        let token = |id: i64| s.apps[&id].token.as_ref().map(Secret::expose);
        let key = |id: i64| s.apps[&id].trtc_key.as_ref().map(Secret::expose);
        assert_eq!(
            [token(1), token(2), token(3)],
            [Some("t1"), Some("t2"), Some("t3")]
        );
        assert_eq!(
            [key(1), key(2), key(3)],
            [Some("k1"), Some("k2"), Some("k3")]
        );

        // A secret that is nothing but whitespace is an error, as an empty one is.
        let one = || ServeArgs {
            sdkappids: vec!["1".into()],
            ..Default::default()
        };
        for bad in ["token = \" \\n\"", "trtc_key = \"\\t\""] {
            let e = resolve(one(), &format!("[[apps]]\nsdkappid = 1\n{bad}\n"))
                .err()
                .map(|e| e.0);
            assert!(
                e.as_deref().is_some_and(|m| m.contains("empty")),
                "{bad}: {e:?}"
            );
        }
        let blank = |k: &str| (k == "CALLHOOK_TOKEN_1").then(|| "\n".to_owned());
        let e = Settings::resolve(&one(), FileConfig::default(), None, &blank)
            .err()
            .map(|e| e.0);
        assert!(
            e.as_deref().is_some_and(|m| m.contains("token is empty")),
            "{e:?}"
        );
        Ok(())
    }

    /// What a command is resolved into, and the command line itself, print no password,
    /// token or key in their `Debug` output.
    #[test]
    fn debug_output_shows_no_secret() -> Result<(), Box<dyn std::error::Error>> {
        use clap::Parser as _;
        let url = "postgres://app:SECRET-1@db/calls?password=SECRET-2&sslpassword=SECRET-3";
        let commands: [&[&str]; 5] = [
            &["migrate", "--database-url", url],
            &["report", "--database-url", url],
            &["events", "--database-url", url],
            &["serve", "--database-url", url, "--sdkappid", "1"],
            &[
                "send",
                "--url",
                "http://h/?token=SECRET-4",
                "--sdkappid",
                "1",
                "--token",
                "SECRET-5",
                "--trtc-key",
                "SECRET-6",
                "--record-api",
                "127.0.0.1:1",
                "--record-api-key",
                "SECRET-9",
            ],
        ];
        for args in commands {
            let cli = Cli::try_parse_from(std::iter::once("callhook").chain(args.iter().copied()))?;
            let mut shown = format!("{cli:?}");
            shown.push_str(&format!("{:?}", super::resolve(cli, &no_env)?));
            assert!(!shown.contains("SECRET"), "{args:?}: {shown}");
        }
        let file = FileConfig::parse(&format!(
            "[database]\nurl = \"{url}\"\n[[apps]]\nsdkappid = 1\ntoken = \"SECRET-7\"\ntrtc_key = \"SECRET-8\"\n"
        ))?;
        let shown = format!("{file:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        Ok(())
    }

    /// An app with a token and no TRTC key refuses TRTC's callbacks unless it opts in;
    /// one with neither stores them unverified, as before.
    #[test]
    fn how_trtc_callbacks_are_checked() -> Result<(), ConfigError> {
        let env = |k: &str| (k == "CALLHOOK_TRTC_KEY_5").then(|| "k5".to_owned());
        let file = FileConfig::parse(
            "[[apps]]\nsdkappid = 1\n\
             [[apps]]\nsdkappid = 2\ntoken = \"t\"\n\
             [[apps]]\nsdkappid = 3\ntoken = \"t\"\ntrtc_allow_unsigned = true\n\
             [[apps]]\nsdkappid = 4\ntoken = \"t\"\ntrtc_key = \"k\"\n\
             [[apps]]\nsdkappid = 5\ntoken = \"t\"\n",
        )?;
        let s = Settings::resolve(&ServeArgs::default(), file, None, &env)?;
        let check = |id: i64| s.apps[&id].trtc_check();
        assert_eq!(
            [check(1), check(2), check(3), check(4), check(5)],
            [
                TrtcCheck::Unverified,
                TrtcCheck::Refused,
                TrtcCheck::UnsignedAllowed,
                TrtcCheck::Signed,
                TrtcCheck::Signed,
            ]
        );
        assert!(s.apps[&3].trtc_allow_unsigned && !s.apps[&2].trtc_allow_unsigned);
        assert_eq!(s.failed_signatures_kept_per_minute, 100);

        // A key and the opt-in contradict each other, wherever the key comes from.
        let both = "[[apps]]\nsdkappid = 5\ntrtc_allow_unsigned = true\n";
        for (file, env) in [
            (format!("{both}trtc_key = \"k\"\n"), None),
            (both.to_owned(), Some("k5")),
        ] {
            let env = |k: &str| {
                env.filter(|_| k == "CALLHOOK_TRTC_KEY_5")
                    .map(str::to_owned)
            };
            let e = Settings::resolve(&ServeArgs::default(), FileConfig::parse(&file)?, None, &env)
                .err()
                .map(|e| e.0);
            assert!(
                e.as_deref().is_some_and(|m| m.contains("both set")),
                "{e:?}"
            );
        }
        // A typo is named with its line, as every unknown key is.
        let e = FileConfig::parse("[[apps]]\nsdkappid = 1\ntrtc_allow_unsigend = true\n")
            .err()
            .map(|e| e.0);
        assert!(
            e.as_deref().is_some_and(|m| m.starts_with("line 3:")
                && m.contains("trtc_allow_unsigend")
                && m.contains("trtc_allow_unsigned")),
            "{e:?}"
        );
        let one = || ServeArgs {
            sdkappids: vec!["1".into()],
            ..Default::default()
        };
        let kept = |n: &str| {
            resolve(
                one(),
                &format!("[auth]\nfailed_signatures_kept_per_minute = {n}\n"),
            )
            .map(|s| s.failed_signatures_kept_per_minute)
        };
        assert_eq!(kept("0")?, 0);
        assert_eq!(kept("5000")?, 5000);
        assert!(kept("100001").is_err());
        assert!(kept("-1").is_err());
        Ok(())
    }

    /// The REST API credentials of an app: the secret key from the file, its variable or
    /// CALLHOOK_SECRET_KEY_<ID> (which wins), trimmed, never shown; the administrator
    /// account and the endpoint, checked.
    #[test]
    fn rest_api_credentials() -> Result<(), ConfigError> {
        let env = |k: &str| match k {
            "MY_SECRET" => Some("s1\n".to_owned()),
            "CALLHOOK_SECRET_KEY_2" => Some(" s2 ".to_owned()),
            "CALLHOOK_SECRET_KEY_3" => Some("s3-from-env".to_owned()),
            _ => None,
        };
        let file = FileConfig::parse(
            "[[apps]]\nsdkappid = 1\nsecret_key_env = \"MY_SECRET\"\napi_region = \"Frankfurt\"\n\
             [[apps]]\nsdkappid = 3\nsecret_key = \"SECRET-in-file\"\nadmin_identifier = \" ops \"\napi_url = \"http://127.0.0.1:9/base/\"\n",
        )?;
        let args = ServeArgs {
            sdkappids: vec!["2".into(), "4".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&args, file, None, &env)?;
        let key = |id: i64| s.apps[&id].api.secret_key.as_ref().map(Secret::expose);
        assert_eq!(
            [key(1), key(2), key(3), key(4)],
            [Some("s1"), Some("s2"), Some("s3-from-env"), None]
        );
        let api = |id: i64| s.apps[&id].api.clone();
        assert_eq!(
            api(1).endpoint.base_url(),
            "https://adminapiger.im.qcloud.com"
        );
        assert_eq!(api(2).endpoint.base_url(), "https://console.tim.qq.com");
        assert_eq!(api(3).endpoint.base_url(), "http://127.0.0.1:9/base");
        assert_eq!(api(1).admin_identifier, "administrator");
        assert_eq!(api(3).admin_identifier, "ops");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s1") && !shown.contains("s3-from-env"),
            "{shown}"
        );
        let file = FileConfig::parse("[[apps]]\nsdkappid = 3\nsecret_key = \"SECRET-in-file\"\n")?;
        assert!(!format!("{file:?}").contains("SECRET"), "{file:?}");

        let one = || ServeArgs {
            sdkappids: vec!["1".into()],
            ..Default::default()
        };
        for (bad, says) in [
            ("api_region = \"mars\"", "silicon-valley"),
            (
                "api_region = \"china\"\napi_url = \"https://x\"",
                "not both",
            ),
            ("api_url = \"ftp://x\"", "base URL"),
            ("api_url = \"https://x/?a=1\"", "base URL"),
            ("secret_key = \" \"", "secret key is empty"),
            ("secret_key = \"a\"\nsecret_key_env = \"B\"", "not both"),
            ("secret_key_env = \"UNSET_VARIABLE\"", "is not set"),
            ("admin_identifier = \"\"", "admin_identifier is empty"),
        ] {
            let e = resolve(one(), &format!("[[apps]]\nsdkappid = 1\n{bad}\n"))
                .err()
                .map(|e| e.0);
            assert!(
                e.as_deref().is_some_and(|m| m.contains(says)),
                "{bad}: {e:?}"
            );
        }
        let e = FileConfig::parse("[[apps]]\nsdkappid = 1\nsecret_kye = \"x\"\n")
            .err()
            .map(|e| e.0);
        assert!(
            e.as_deref()
                .is_some_and(|m| m.starts_with("line 3:") && m.contains("secret_kye")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn the_reconcile_section() -> Result<(), ConfigError> {
        let one = || ServeArgs {
            sdkappids: vec!["1".into()],
            ..Default::default()
        };
        let d = resolve(one(), "")?.reconcile;
        assert_eq!(d.interval, None);
        assert_eq!(d.window, Duration::from_secs(7200));
        assert_eq!((d.rate, d.page_size), (20.0, 100));
        let env = |k: &str| (k == "CALLHOOK_SECRET_KEY_1").then(|| "k".to_owned());
        let file = FileConfig::parse(
            "[reconcile]\ninterval = \"15m\"\nwindow = \"7d\"\nrate = 5\npage_size = 50\n",
        )?;
        let r = Settings::resolve(&one(), file, None, &env)?.reconcile;
        assert_eq!(r.interval, Some(Duration::from_secs(900)));
        assert_eq!(r.window, Duration::from_secs(7 * 86_400));
        assert_eq!((r.rate, r.page_size), (5.0, 50));
        for (bad, says) in [
            ("interval = \"15m\"", "no app has a secret key"),
            ("interval = \"soon\"", "not a duration"),
            ("interval = \"10s\"", "at least 1m"),
            ("window = \"8d\"", "7 days"),
            ("window = \"2 hours\"", "not a duration"),
            ("rate = 0", "outside"),
            ("rate = 201", "outside"),
            ("page_size = 0", "outside"),
        ] {
            let e = resolve(one(), &format!("[reconcile]\n{bad}\n"))
                .err()
                .map(|e| e.0);
            assert!(
                e.as_deref().is_some_and(|m| m.contains(says)),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration(" 24h").ok(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration("h").ok(), None);
        assert_eq!(parse_duration("-1h").ok(), None);
        Ok(())
    }

    #[test]
    fn healthcheck_follows_the_listen_setting() -> Result<(), ConfigError> {
        let url = |url: Option<&str>, listen: Option<&str>, file: &str| {
            let args = HealthcheckArgs {
                url: url.map(str::to_owned),
                listen: listen.map(str::to_owned),
                timeout_ms: 2000,
            };
            healthcheck_url(&args, &FileConfig::parse(file)?)
        };
        // Nothing configured: serve's default address.
        assert_eq!(url(None, None, "")?, "http://127.0.0.1:8080/healthz");
        // The file's listen, as serve reads it; a wildcard is probed on loopback.
        assert_eq!(
            url(None, None, "listen = \"0.0.0.0:9090\"")?,
            "http://127.0.0.1:9090/healthz"
        );
        // --listen / CALLHOOK_LISTEN over the file, as for serve.
        assert_eq!(
            url(None, Some("0.0.0.0:7000"), "listen = \"0.0.0.0:9090\"")?,
            "http://127.0.0.1:7000/healthz"
        );
        assert_eq!(
            url(None, Some("[::]:8443"), "")?,
            "http://[::1]:8443/healthz"
        );
        assert_eq!(
            url(None, Some("10.1.2.3:8080"), "")?,
            "http://10.1.2.3:8080/healthz"
        );
        assert_eq!(
            url(None, Some("[fd00::5]:80"), "")?,
            "http://[fd00::5]:80/healthz"
        );
        // An explicit URL wins over everything.
        assert_eq!(
            url(Some("http://10.0.0.9:1/readyz"), Some("0.0.0.0:7000"), "")?,
            "http://10.0.0.9:1/readyz"
        );
        // A listen address serve would refuse is a configuration error here too.
        let bad = url(None, Some("localhost:8080"), "").err().map(|e| e.0);
        assert!(bad.is_some_and(|m| m.contains("listen address")));
        Ok(())
    }

    #[test]
    fn redacts_database_passwords() {
        let u = DatabaseUrl::new("postgres://app:hunter2@db.internal:5432/calls?sslmode=require");
        assert_eq!(
            u.redacted(),
            "postgres://app:REDACTED@db.internal:5432/calls?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(
            DatabaseUrl::new("sqlite://callhook.db").redacted(),
            "sqlite://callhook.db"
        );
    }
}
