//! Validation, one section at a time: each function takes a section of the merged
//! configuration (see `file`) and returns its settings or the one-line error that names
//! the key and the allowed range. Rules that span sections come last, in [`derived`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{FileApp, FileDatabase, FileIngest, FileSpool};
use super::{AppSettings, ConfigError, DatabaseSettings, DatabaseUrl, IngestSettings};
use super::{Secret, Settings, SpoolSettings, defaults, err};
use crate::protocol::query::parse_sdkappid;
use crate::store::BackendKind;

// ---------------------------------------------------------------------------------------
// database

/// Checks a database URL's scheme, and names the backend it selects.
pub fn validate_database_url(url: &str) -> Result<BackendKind, ConfigError> {
    BackendKind::parse(url).ok_or_else(|| {
        ConfigError(format!(
            "database URL {:?} is neither sqlite://PATH nor postgres://…",
            DatabaseUrl::new(url).redacted()
        ))
    })
}

/// `[database]`. The pool size is provisional when not configured: [`derived`] sets it
/// from the writers.
pub(super) fn database(c: &FileDatabase) -> Result<DatabaseSettings, ConfigError> {
    validate_database_url(&c.url)?;
    if c.pool_size == Some(0) {
        return err("pool size must be at least 1");
    }
    let default = DatabaseSettings::new(c.url.clone());
    Ok(DatabaseSettings {
        pool_size: c.pool_size.unwrap_or(default.pool_size),
        acquire_timeout: millis("database acquire timeout", c.acquire_timeout_ms, 50, 60_000)?,
        ..default
    })
}

// ---------------------------------------------------------------------------------------
// http: the listen address, the routes and the proxies

/// A listen address as `serve` takes it: `HOST:PORT` with a literal IP address.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, ConfigError> {
    listen.parse().or_else(|_| {
        err(format!(
            "listen address {listen:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
        ))
    })
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

/// A path callbacks are posted to (`callback_path`, `trtc_path`): absolute, with no query,
/// and none of the built-in routes.
pub(super) fn route(key: &str, path: &str) -> Result<String, ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return err(format!(
            "{key} {path:?} must start with '/' and have no query"
        ));
    }
    if ["/healthz", "/readyz", "/metrics"].contains(&path) {
        return err(format!("{key} {path:?} collides with a built-in route"));
    }
    Ok(path.to_owned())
}

pub(super) fn trusted_proxies(list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter().map(|p| parse_proxy(p)).collect()
}

fn parse_proxy(p: &str) -> Result<IpNet, ConfigError> {
    let p = p.trim();
    p.parse::<IpNet>()
        .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
        .or_else(|_| {
            err(format!(
                "trusted proxy {p:?} is not an IP address or CIDR range"
            ))
        })
}

// ---------------------------------------------------------------------------------------
// limits, ingest, spool, auth

pub(super) fn body_limit(v: usize) -> Result<usize, ConfigError> {
    if !(1024..=16 * 1024 * 1024).contains(&v) {
        return err(format!("body limit {v} is outside 1024..=16777216 bytes"));
    }
    Ok(v)
}

/// A duration in milliseconds, within `min..=max`.
pub(super) fn millis(name: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if !(min..=max).contains(&v) {
        return err(format!("{name} {v} ms is outside {min}..={max}"));
    }
    Ok(Duration::from_millis(v))
}

/// A count within `1..=max`.
fn positive(name: &str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if v == 0 || v > max {
        return err(format!("{name} {v} is outside 1..={max}"));
    }
    Ok(v)
}

/// `[ingest]`. The writers are as configured; [`derived`] caps them for the backend.
pub(super) fn ingest(c: &FileIngest) -> Result<IngestSettings, ConfigError> {
    Ok(IngestSettings {
        queue_depth: positive("queue depth", c.queue_depth, 1 << 20)?,
        max_batch: positive("max batch", c.max_batch, 10_000)?,
        writers: positive("writers", c.writers, 64)?,
    })
}

/// `[spool]`. On when enabled; [`derived`] turns it off where the backend needs none.
pub(super) fn spool(c: &FileSpool) -> Result<SpoolSettings, ConfigError> {
    if c.max_bytes < 1 << 20 {
        return err(format!("spool max_bytes {} is below 1 MiB", c.max_bytes));
    }
    Ok(SpoolSettings {
        dir: c.enabled.then(|| c.dir.clone()),
        max_bytes: c.max_bytes,
    })
}

/// `[auth] sign_window_secs`.
pub(super) fn sign_window(secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 || secs > 86_400 {
        return err(format!("auth sign_window_secs {secs} is outside 1..=86400"));
    }
    Ok(Duration::from_secs(secs))
}

/// `[auth] failed_signatures_kept_per_minute` (0: none is kept).
pub(super) fn kept_per_minute(n: u32) -> Result<u32, ConfigError> {
    if n > 100_000 {
        return err(format!(
            "auth failed_signatures_kept_per_minute {n} is outside 0..=100000"
        ));
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// apps: the file's [[apps]], then --sdkappid, then the per-app environment variables

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn apps(
    file: Vec<FileApp>,
    cli: &[String],
    env: Env<'_>,
) -> Result<BTreeMap<i64, AppSettings>, ConfigError> {
    let mut apps = BTreeMap::new();
    for a in file {
        let app = file_app(a, env)?;
        let id = app.sdkappid;
        if apps.insert(id, app).is_some() {
            return err(format!("[[apps]] sdkappid {id} is listed twice"));
        }
    }
    for raw in cli.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let id = parse_sdkappid(raw)
            .ok_or_else(|| ConfigError(format!("--sdkappid {raw:?} is not a positive integer")))?;
        apps.entry(id).or_insert_with(|| AppSettings::new(id));
    }
    for app in apps.values_mut() {
        let id = app.sdkappid;
        env_secret(&mut app.token, env(&format!("CALLHOOK_TOKEN_{id}")));
        if app.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            return err(format!("app {id}: the token is empty (or only whitespace)"));
        }
        env_secret(&mut app.trtc_key, env(&format!("CALLHOOK_TRTC_KEY_{id}")));
        if app.trtc_key.as_ref().is_some_and(|k| k.expose().is_empty()) {
            return err(format!(
                "app {id}: the TRTC key is empty (or only whitespace)"
            ));
        }
        if app.trtc_key.is_some() && app.trtc_allow_unsigned {
            return err(format!(
                "app {id}: trtc_allow_unsigned = true and a TRTC key (trtc_key, trtc_key_env or CALLHOOK_TRTC_KEY_{id}) are both set; with a key every TRTC callback must be signed, so remove one"
            ));
        }
    }
    Ok(apps)
}

/// One `[[apps]]` entry.
fn file_app(a: FileApp, env: Env<'_>) -> Result<AppSettings, ConfigError> {
    let id = a.sdkappid;
    if id <= 0 {
        return err(format!("[[apps]] sdkappid {id} must be a positive integer"));
    }
    let token = file_secret(id, "token", a.token, a.token_env, env)?;
    let trtc_key = file_secret(id, "trtc_key", a.trtc_key, a.trtc_key_env, env)?;
    let commands = match a.commands {
        Some(list) if list.is_empty() => {
            return err(format!(
                "[[apps]] {id}: commands is empty; remove it to allow every command"
            ));
        }
        Some(list) => Some(list.iter().map(|c| c.trim().to_ascii_lowercase()).collect()),
        None => None,
    };
    Ok(AppSettings {
        sdkappid: id,
        token,
        commands,
        trtc_key,
        trtc_allow_unsigned: a.trtc_allow_unsigned,
    })
}

/// A secret as configured, without the whitespace around it: a token or key read from a
/// file or a mounted Kubernetes secret usually ends in a newline, which no sender sends.
fn trimmed(value: &str) -> Secret {
    Secret::new(value.trim())
}

/// A secret an app entry gives as `key = "…"` or names as `key_env = "VARIABLE"`.
fn file_secret(
    id: i64,
    key: &str,
    value: Option<String>,
    var: Option<String>,
    env: Env<'_>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, var) {
        (Some(_), Some(_)) => err(format!("[[apps]] {id}: set {key} or {key}_env, not both")),
        (Some(v), None) => Ok(Some(trimmed(&v))),
        (None, Some(var)) => match env(&var) {
            Some(v) => Ok(Some(trimmed(&v))),
            None => err(format!("[[apps]] {id}: {key}_env {var} is not set")),
        },
        (None, None) => Ok(None),
    }
}

/// `CALLHOOK_TOKEN_<ID>` / `CALLHOOK_TRTC_KEY_<ID>` override what the file says.
fn env_secret(slot: &mut Option<Secret>, from_env: Option<String>) {
    if let Some(v) = from_env {
        *slot = Some(trimmed(&v));
    }
}

// ---------------------------------------------------------------------------------------
// derived rules, across sections

/// The rules that need more than one section, applied once each section is valid: what
/// the backend allows (writers, the outage journal), the pool size the writers need when
/// `pool_size` is not configured,
/// routes that must differ, and at least one app.
pub(super) fn derived(mut s: Settings, pool_size: Option<u32>) -> Result<Settings, ConfigError> {
    let backend = s.database.url.backend();
    if let Some(max) = backend.max_writers() {
        s.ingest.writers = s.ingest.writers.min(max);
    }
    if pool_size.is_none() {
        s.database.pool_size = s.ingest.writers as u32 + defaults::POOL_SPARE;
    }
    if (s.database.pool_size as usize) < s.ingest.writers {
        return err(format!(
            "pool size {} is smaller than the number of writers {}",
            s.database.pool_size, s.ingest.writers
        ));
    }
    if !backend.needs_outage_journal() {
        s.spool.dir = None;
    }
    if s.trtc_path == s.callback_path {
        return err(format!(
            "trtc_path and callback_path are both {:?}; TRTC's callbacks need a path of their own",
            s.trtc_path
        ));
    }
    if s.apps.is_empty() {
        return err(
            "no SDKAppID configured: pass --sdkappid <ID>, set CALLHOOK_SDKAPPIDS, or add [[apps]] to the config file",
        );
    }
    Ok(s)
}
