//! Validation, one section at a time: each function takes a section of the merged
//! configuration (see `file`) and returns its settings or the one-line error that names
//! the key and the allowed range. Rules that span sections come last, in [`derived`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{FileApp, FileDatabase, FileIngest, FileReconcile, FileSpool};
use super::{ApiEndpoint, ApiSettings, AppSettings, ConfigError, DatabaseSettings, DatabaseUrl};
use super::{IngestSettings, ReconcileSettings, Secret, Settings, SpoolSettings, defaults, err};
use crate::protocol::query::parse_sdkappid;
use crate::store::BackendKind;
use crate::tencent::ApiRegion;

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
        acquire_timeout: millis(
            "database.acquire_timeout_ms",
            c.acquire_timeout_ms,
            50,
            60_000,
        )?,
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
        return err(format!(
            "limits.body_bytes (--body-limit, CALLHOOK_BODY_LIMIT) is {v}: it takes a whole number of bytes from 1024 to 16777216"
        ));
    }
    Ok(v)
}

/// A duration in milliseconds, within `min..=max`.
pub(super) fn millis(name: &str, v: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if !(min..=max).contains(&v) {
        return err(format!(
            "{name} is {v}: it takes a whole number of milliseconds from {min} to {max}"
        ));
    }
    Ok(Duration::from_millis(v))
}

/// A count within `1..=max`.
fn positive(name: &str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if v == 0 || v > max {
        return err(format!(
            "{name} is {v}: it takes a whole number from 1 to {max}"
        ));
    }
    Ok(v)
}

/// `[ingest]`. The writers are as configured; [`derived`] caps them for the backend.
pub(super) fn ingest(c: &FileIngest) -> Result<IngestSettings, ConfigError> {
    Ok(IngestSettings {
        queue_depth: positive(
            "ingest.queue_depth (--queue-depth, CALLHOOK_QUEUE_DEPTH)",
            c.queue_depth,
            1 << 20,
        )?,
        max_batch: positive(
            "ingest.max_batch (--max-batch, CALLHOOK_MAX_BATCH)",
            c.max_batch,
            10_000,
        )?,
        writers: positive(
            "ingest.writers (--writers, CALLHOOK_WRITERS)",
            c.writers,
            64,
        )?,
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
// reconcile

/// The most Tencent keeps call records for, and so the widest reconcile window.
pub const RECORDS_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// The fewest days `[retention] days` may keep: Tencent keeps its call records for 7 days,
/// so a reconcile can bring back a call of the last 7; a shorter retention would remove
/// what the next reconcile stores again (and count its call twice in the rollups).
pub const RETENTION_MIN_DAYS: u32 = 8;

/// `[retention] days`: 0 is off.
pub(super) fn retention_days(days: u32) -> Result<Option<u32>, ConfigError> {
    match days {
        0 => Ok(None),
        d if d < RETENTION_MIN_DAYS => err(format!(
            "retention.days = {d} is below {RETENTION_MIN_DAYS}: Tencent's call records go back 7 days, and a reconcile would store again what retention removed (use 0 to keep everything)"
        )),
        d if d > 36_500 => err(format!(
            "retention.days = {d} is more than 100 years (use 0 to keep everything)"
        )),
        d => Ok(Some(d)),
    }
}

/// `[reconcile]`.
pub(super) fn reconcile(c: &FileReconcile) -> Result<ReconcileSettings, ConfigError> {
    let duration = |key: &str, text: &str| {
        super::forward::parse_duration(text).ok().ok_or_else(|| {
            ConfigError(format!(
                "reconcile.{key} {text:?} is not a duration such as 90s, 15m, 2h or 7d"
            ))
        })
    };
    let interval = match c.interval.trim() {
        "off" | "" => None,
        text => Some(duration("interval", text)?),
    };
    if interval.is_some_and(|i| i < Duration::from_secs(60)) {
        return err("reconcile.interval must be at least 1m (or \"off\")");
    }
    let window = duration("window", &c.window)?;
    if window < Duration::from_secs(60) || window > RECORDS_KEPT {
        return err(format!(
            "reconcile.window {:?} is outside 1m..=7d: Tencent keeps call records for 7 days",
            c.window
        ));
    }
    if !(c.rate.is_finite() && c.rate > 0.0 && c.rate <= 200.0) {
        return err(format!(
            "reconcile.rate {} is outside (0, 200] requests a second (Tencent allows 200)",
            c.rate
        ));
    }
    if !(1..=1000).contains(&c.page_size) {
        return err(format!(
            "reconcile.page_size {} is outside 1..=1000",
            c.page_size
        ));
    }
    Ok(ReconcileSettings {
        interval,
        window,
        rate: c.rate,
        page_size: c.page_size,
    })
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
        env_secret(
            &mut app.api.secret_key,
            env(&format!("CALLHOOK_SECRET_KEY_{id}")),
        );
        if app
            .api
            .secret_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            return err(format!(
                "app {id}: the secret key is empty (or only whitespace)"
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
    let secret_key = file_secret(id, "secret_key", a.secret_key, a.secret_key_env, env)?;
    Ok(AppSettings {
        sdkappid: id,
        token,
        commands,
        trtc_key,
        trtc_allow_unsigned: a.trtc_allow_unsigned,
        api: ApiSettings {
            secret_key,
            admin_identifier: admin_identifier(id, a.admin_identifier)?,
            endpoint: endpoint(id, a.api_region, a.api_url)?,
        },
    })
}

/// `admin_identifier`: an account name, trimmed; the default when not set.
fn admin_identifier(id: i64, v: Option<String>) -> Result<String, ConfigError> {
    match v.as_deref().map(str::trim) {
        None => Ok(defaults::ADMIN_IDENTIFIER.to_owned()),
        Some("") => err(format!("[[apps]] {id}: admin_identifier is empty")),
        Some(name) => Ok(name.to_owned()),
    }
}

/// `api_region` or `api_url` (not both); the default region when neither is set.
fn endpoint(
    id: i64,
    region: Option<String>,
    url: Option<String>,
) -> Result<ApiEndpoint, ConfigError> {
    let names = || {
        ApiRegion::ALL
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (region, url) {
        (Some(_), Some(_)) => err(format!(
            "[[apps]] {id}: set api_region or api_url, not both"
        )),
        (Some(name), None) => ApiRegion::parse(&name)
            .map(ApiEndpoint::Region)
            .ok_or_else(|| {
                ConfigError(format!(
                    "[[apps]] {id}: api_region {name:?} is not one of {}",
                    names()
                ))
            }),
        (None, Some(url)) => {
            let u = url.trim();
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && !u.contains(['?', '#'])
                && reqwest::Url::parse(u).is_ok();
            if !ok {
                return err(format!(
                    "[[apps]] {id}: api_url {u:?} is not an http(s) base URL without a query"
                ));
            }
            Ok(ApiEndpoint::Url(u.trim_end_matches('/').to_owned()))
        }
        (None, None) => Ok(ApiEndpoint::Region(
            ApiRegion::parse(defaults::API_REGION).unwrap_or(ApiRegion::China),
        )),
    }
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

/// `CALLHOOK_TOKEN_<ID>`, `CALLHOOK_TRTC_KEY_<ID>` and `CALLHOOK_SECRET_KEY_<ID>` override
/// what the file says.
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
    if s.reconcile.interval.is_some() && !s.apps.values().any(|a| a.api.secret_key.is_some()) {
        return err(
            "reconcile.interval is set but no app has a secret key: set [[apps]] secret_key_env (or secret_key), or CALLHOOK_SECRET_KEY_<SDKAPPID>",
        );
    }
    if s.apps.is_empty() {
        return err(
            "no SDKAppID configured: pass --sdkappid <ID>, set CALLHOOK_SDKAPPIDS, or add [[apps]] to the config file",
        );
    }
    Ok(s)
}
