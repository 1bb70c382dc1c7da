//! Configuration: the TOML file, merged under the command line and environment
//! (flag > environment > file > default), validated into [`Settings`].

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::cli::{DatabaseArgs, HealthcheckArgs, LogFormat, ServeArgs};
use crate::protocol::query::parse_sdkappid;

/// The default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://callhook.db";

/// A configuration problem, reported as one line and exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The configuration file, as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub callback_path: Option<String>,
    pub trtc_path: Option<String>,
    pub log_format: Option<LogFormat>,
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub database: FileDatabase,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub ingest: FileIngest,
    #[serde(default)]
    pub spool: FileSpool,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub apps: Vec<FileApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    pub url: Option<String>,
    pub pool_size: Option<u32>,
    pub acquire_timeout_ms: Option<u64>,
    pub migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub body_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIngest {
    pub queue_depth: Option<usize>,
    pub max_batch: Option<usize>,
    pub writers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpool {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub sign_window_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApp {
    pub sdkappid: i64,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub commands: Option<Vec<String>>,
    /// The key set in the TRTC console for the room, media and recording callbacks.
    pub trtc_key: Option<String>,
    pub trtc_key_env: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    ConfigError(format!("line {line}: {msg}"))
                }
                None => ConfigError(msg),
            }
        })
    }
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

/// A database URL whose password never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }
    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.clone();
        };
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                let masked = if userinfo.contains(':') {
                    format!("{user}:REDACTED")
                } else {
                    user.to_owned()
                };
                format!("{}://{}{}", &s[..scheme_end], masked, &rest[at..])
            }
            None => s.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    /// Longest wait for a connection (and for a connection attempt): bounds how long a
    /// callback can hang when the database is gone.
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: DatabaseUrl::new(url),
            pool_size: 4,
            acquire_timeout: Duration::from_millis(1000),
        }
    }

    /// How long a batch write may take before it is abandoned and its deliveries are
    /// journaled (or answered 503): a connection's wait plus half a second, at least 1.5 s.
    /// A database that hangs (a frozen server, a network partition) must not hold the
    /// sender past a second or two.
    pub fn write_timeout(&self) -> Duration {
        (self.acquire_timeout + Duration::from_millis(500)).max(Duration::from_millis(1500))
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
    /// base64(HMAC-SHA256(key, body)); when not, they are stored with a note saying so.
    pub trtc_key: Option<Secret>,
}

impl AppSettings {
    pub fn new(sdkappid: i64) -> Self {
        Self {
            sdkappid,
            token: None,
            commands: None,
            trtc_key: None,
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
    pub log_format: LogFormat,
}

pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
pub const DEFAULT_MAX_BATCH: usize = 512;
pub const DEFAULT_WRITERS: usize = 2;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

impl Settings {
    /// Defaults for a database URL and a set of apps: what `serve` uses when nothing else
    /// is configured. Tests start from here.
    pub fn new(
        database_url: impl Into<String>,
        apps: impl IntoIterator<Item = AppSettings>,
    ) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            database: DatabaseSettings::new(database_url),
            migrate: true,
            apps: apps.into_iter().map(|a| (a.sdkappid, a)).collect(),
            callback_path: "/".to_owned(),
            trtc_path: "/trtc".to_owned(),
            body_limit: 64 * 1024,
            request_timeout: Duration::from_millis(3000),
            header_read_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            ingest: IngestSettings {
                queue_depth: DEFAULT_QUEUE_DEPTH,
                max_batch: DEFAULT_MAX_BATCH,
                writers: DEFAULT_WRITERS,
            },
            trusted_proxies: Vec::new(),
            spool: SpoolSettings {
                dir: None,
                max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            },
            sign_window: Duration::from_secs(300),
            log_format: LogFormat::Pretty,
        }
    }

    /// Merges flags/environment (already merged by clap) over the file over defaults.
    pub fn resolve(
        args: &ServeArgs,
        file: FileConfig,
        log_format: Option<LogFormat>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let url = database_url(&args.db, &file);
        let mut s = Settings::new(url, []);

        if let Some(listen) = args.listen.as_deref().or(file.listen.as_deref()) {
            s.listen = parse_listen(listen)?;
        }
        s.migrate = !args.no_migrate && file.database.migrate.unwrap_or(true);
        s.log_format = log_format.or(file.log_format).unwrap_or(LogFormat::Pretty);

        if let Some(path) = args.callback_path.clone().or(file.callback_path) {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return err(format!(
                    "callback_path {path:?} must start with '/' and have no query"
                ));
            }
            if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                return err(format!(
                    "callback_path {path:?} collides with a built-in route"
                ));
            }
            s.callback_path = path;
        }
        if let Some(path) = args.trtc_path.clone().or(file.trtc_path) {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return err(format!(
                    "trtc_path {path:?} must start with '/' and have no query"
                ));
            }
            if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                return err(format!("trtc_path {path:?} collides with a built-in route"));
            }
            s.trtc_path = path;
        }
        if s.trtc_path == s.callback_path {
            return err(format!(
                "trtc_path and callback_path are both {:?}; TRTC's callbacks need a path of their own",
                s.trtc_path
            ));
        }

        if let Some(v) = args.body_limit.or(file.limits.body_bytes) {
            if !(1024..=16 * 1024 * 1024).contains(&v) {
                return err(format!("body limit {v} is outside 1024..=16777216 bytes"));
            }
            s.body_limit = v;
        }
        let ms = |name: &str,
                  v: Option<u64>,
                  min: u64,
                  max: u64|
         -> Result<Option<Duration>, ConfigError> {
            match v {
                Some(v) if !(min..=max).contains(&v) => {
                    err(format!("{name} {v} ms is outside {min}..={max}"))
                }
                Some(v) => Ok(Some(Duration::from_millis(v))),
                None => Ok(None),
            }
        };
        if let Some(d) = ms(
            "request timeout",
            args.request_timeout_ms.or(file.limits.request_timeout_ms),
            100,
            600_000,
        )? {
            s.request_timeout = d;
        }
        if let Some(d) = ms(
            "header read timeout",
            file.limits.header_read_timeout_ms,
            100,
            600_000,
        )? {
            s.header_read_timeout = d;
        }
        if let Some(d) = ms(
            "shutdown timeout",
            args.shutdown_timeout_ms.or(file.limits.shutdown_timeout_ms),
            0,
            3_600_000,
        )? {
            s.shutdown_timeout = d;
        }
        if let Some(d) = ms(
            "database acquire timeout",
            file.database.acquire_timeout_ms,
            50,
            60_000,
        )? {
            s.database.acquire_timeout = d;
        }

        let positive =
            |name: &str, v: Option<usize>, max: usize| -> Result<Option<usize>, ConfigError> {
                match v {
                    Some(v) if v == 0 || v > max => err(format!("{name} {v} is outside 1..={max}")),
                    other => Ok(other),
                }
            };
        if let Some(v) = positive(
            "queue depth",
            args.queue_depth.or(file.ingest.queue_depth),
            1 << 20,
        )? {
            s.ingest.queue_depth = v;
        }
        if let Some(v) = positive(
            "max batch",
            args.max_batch.or(file.ingest.max_batch),
            10_000,
        )? {
            s.ingest.max_batch = v;
        }
        if let Some(v) = positive("writers", args.writers.or(file.ingest.writers), 64)? {
            s.ingest.writers = v;
        }
        if s.database.url.is_sqlite() {
            s.ingest.writers = 1;
        }
        let pool = args.pool_size.or(file.database.pool_size);
        if pool == Some(0) {
            return err("pool size must be at least 1");
        }
        s.database.pool_size = pool.unwrap_or(s.ingest.writers as u32 + 2);
        if (s.database.pool_size as usize) < s.ingest.writers {
            return err(format!(
                "pool size {} is smaller than the number of writers {}",
                s.database.pool_size, s.ingest.writers
            ));
        }

        let proxies = if args.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        };
        s.trusted_proxies = proxies
            .iter()
            .map(|p| parse_proxy(p))
            .collect::<Result<_, _>>()?;

        let spool_on =
            !args.no_spool && file.spool.enabled.unwrap_or(true) && !s.database.url.is_sqlite();
        s.spool.dir = spool_on.then(|| {
            args.spool_dir
                .clone()
                .or(file.spool.dir)
                .unwrap_or_else(|| PathBuf::from("callhook-spool"))
        });
        if let Some(v) = file.spool.max_bytes {
            if v < 1 << 20 {
                return err(format!("spool max_bytes {v} is below 1 MiB"));
            }
            s.spool.max_bytes = v;
        }
        if let Some(v) = file.auth.sign_window_secs {
            if v == 0 || v > 86_400 {
                return err(format!("auth sign_window_secs {v} is outside 1..=86400"));
            }
            s.sign_window = Duration::from_secs(v);
        }

        s.apps = resolve_apps(&args.sdkappids, file.apps, env)?;
        if s.apps.is_empty() {
            return err(
                "no SDKAppID configured: pass --sdkappid <ID>, set CALLHOOK_SDKAPPIDS, or add [[apps]] to the config file",
            );
        }
        Ok(s)
    }
}

/// The address `serve` listens on when nothing is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A listen address as `serve` takes it: `HOST:PORT` with a literal IP address.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, ConfigError> {
    listen.parse().or_else(|_| {
        err(format!(
            "listen address {listen:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
        ))
    })
}

/// The URL `callhook healthcheck` probes: `--url` (`CALLHOOK_HEALTHCHECK_URL`) when given,
/// else `/healthz` on the address `serve` listens on, from the same settings
/// (`--listen`/`CALLHOOK_LISTEN` > file `listen` > 127.0.0.1:8080), so a container that
/// moves the port with `CALLHOOK_LISTEN` keeps a working health check.
pub fn healthcheck_url(args: &HealthcheckArgs, file: &FileConfig) -> Result<String, ConfigError> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let listen = args
        .listen
        .as_deref()
        .or(file.listen.as_deref())
        .unwrap_or(DEFAULT_LISTEN);
    Ok(format!(
        "http://{}/healthz",
        probe_address(parse_listen(listen)?)
    ))
}

/// Where a local client reaches a server listening on `listen`: a wildcard address
/// (0.0.0.0, ::) is reached on loopback of the same family.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The database URL from flag/environment, else file, else the SQLite default.
pub fn database_url(args: &DatabaseArgs, file: &FileConfig) -> String {
    args.database_url
        .clone()
        .or_else(|| file.database.url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Checks a database URL's scheme.
pub fn validate_database_url(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(())
    } else {
        err(format!(
            "database URL {:?} is neither sqlite://PATH nor postgres://…",
            DatabaseUrl::new(url).redacted()
        ))
    }
}

fn parse_proxy(p: &str) -> Result<IpNet, ConfigError> {
    let p = p.trim();
    p.parse::<IpNet>()
        .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
        .or_else(|_| {
            err(format!(
                "trusted proxy {p:?} is not an IP address or CIDR range"
            ))
        })
}

fn resolve_apps(
    cli: &[String],
    file: Vec<FileApp>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<i64, AppSettings>, ConfigError> {
    let mut apps = BTreeMap::new();
    for a in file {
        if a.sdkappid <= 0 {
            return err(format!(
                "[[apps]] sdkappid {} must be a positive integer",
                a.sdkappid
            ));
        }
        if a.token.is_some() && a.token_env.is_some() {
            return err(format!(
                "[[apps]] {}: set token or token_env, not both",
                a.sdkappid
            ));
        }
        let token = match (&a.token, &a.token_env) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(var)) => Some(env(var).ok_or_else(|| {
                ConfigError(format!(
                    "[[apps]] {}: token_env {var} is not set",
                    a.sdkappid
                ))
            })?),
            (None, None) => None,
        };
        if a.trtc_key.is_some() && a.trtc_key_env.is_some() {
            return err(format!(
                "[[apps]] {}: set trtc_key or trtc_key_env, not both",
                a.sdkappid
            ));
        }
        let trtc_key = match (&a.trtc_key, &a.trtc_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => Some(env(var).ok_or_else(|| {
                ConfigError(format!(
                    "[[apps]] {}: trtc_key_env {var} is not set",
                    a.sdkappid
                ))
            })?),
            (None, None) => None,
        };
        let commands = match a.commands {
            Some(list) if list.is_empty() => {
                return err(format!(
                    "[[apps]] {}: commands is empty; remove it to allow every command",
                    a.sdkappid
                ));
            }
            Some(list) => Some(list.iter().map(|c| c.trim().to_ascii_lowercase()).collect()),
            None => None,
        };
        let app = AppSettings {
            sdkappid: a.sdkappid,
            token: token.map(Secret::new),
            commands,
            trtc_key: trtc_key.map(Secret::new),
        };
        if apps.insert(a.sdkappid, app).is_some() {
            return err(format!("[[apps]] sdkappid {} is listed twice", a.sdkappid));
        }
    }
    for raw in cli.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let id = parse_sdkappid(raw)
            .ok_or_else(|| ConfigError(format!("--sdkappid {raw:?} is not a positive integer")))?;
        apps.entry(id).or_insert_with(|| AppSettings::new(id));
    }
    for app in apps.values_mut() {
        if let Some(t) = env(&format!("CALLHOOK_TOKEN_{}", app.sdkappid)) {
            app.token = Some(Secret::new(t));
        }
        if app.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return err(format!("app {}: the token is empty", app.sdkappid));
        }
        if let Some(k) = env(&format!("CALLHOOK_TRTC_KEY_{}", app.sdkappid)) {
            app.trtc_key = Some(Secret::new(k));
        }
        if app.trtc_key.as_ref().is_some_and(|k| k.expose().is_empty()) {
            return err(format!("app {}: the TRTC key is empty", app.sdkappid));
        }
    }
    Ok(apps)
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
        let text = include_str!("../config.example.toml");
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
        let uncommented: String = text
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
        let env = |k: &str| (k == "CALLHOOK_TOKEN_1400000002").then(|| "from-env".to_owned());
        let s = Settings::resolve(
            &ServeArgs::default(),
            FileConfig::parse(&uncommented)?,
            None,
            &env,
        )?;
        assert_eq!(s.apps.len(), 2);
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.database.pool_size, 4);
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
