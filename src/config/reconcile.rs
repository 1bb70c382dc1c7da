//! The settings of the commands that call Tencent's REST APIs, `callhook reconcile` and
//! `callhook register`: the apps that have credentials, the window of calls, the pace. The
//! same layers as `serve` (file, `CALLHOOK_*` variables, flags).

use std::time::Duration;

use super::file::FileConfig;
use super::validate::{self, RECORDS_KEPT};
use super::{AppSettings, ConfigError, DatabaseUrl, err};
use crate::cli::{ReconcileArgs, ReconcileFormat, RegisterArgs};
use crate::protocol::Millis;

/// The default window of `callhook reconcile`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(86_400);

/// How far inside Tencent's 7 days a window must start: the time a run may take to page
/// through before its start passes the limit (the run stops, named, if it does).
pub const RUN_MARGIN: Duration = Duration::from_secs(600);

/// A window of call start times: `from` included, `to` excluded, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Millis,
    pub to: Millis,
}

impl Window {
    /// The last `since` until `now`.
    pub fn since(since: Duration, now: Millis) -> Self {
        Self {
            from: now - since.as_millis() as Millis,
            to: now,
        }
    }

    /// Refuses a window Tencent cannot answer whole: one that starts more than 7 days
    /// before `now`, less [`RUN_MARGIN`] (Tencent would quietly answer from 7 days ago
    /// instead, and a run takes time: the start must still be inside the 7 days at its
    /// last page, which the run checks too), or that ends before it starts.
    pub fn check(&self, now: Millis) -> Result<(), ConfigError> {
        let oldest = now - (RECORDS_KEPT - RUN_MARGIN).as_millis() as Millis;
        if self.to <= self.from {
            return err(format!(
                "the window ends ({}) before it starts ({})",
                show(self.to),
                show(self.from)
            ));
        }
        if self.from < oldest {
            return err(format!(
                "the window starts at {}, more than 7 days ago or within 10 minutes of it: Tencent keeps call records for 7 days (and answers from its limit instead, silently), and a run needs time to page through. Start at {} or later (--since 167h at most)",
                show(self.from),
                show(oldest)
            ));
        }
        Ok(())
    }
}

/// A time as it is shown: RFC 3339, UTC, seconds.
pub fn show(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A time on the command line: RFC 3339 (`2026-12-01T08:00:00Z`), a UTC day
/// (`2026-12-01`), or Unix seconds.
pub fn parse_time(text: &str) -> Option<Millis> {
    let t = text.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return day
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc().timestamp_millis());
    }
    t.parse::<i64>().ok().and_then(|s| s.checked_mul(1000))
}

/// Everything `callhook reconcile` needs, checked.
#[derive(Debug)]
pub struct ReconcileJob {
    pub db: DatabaseUrl,
    /// The apps to reconcile, each with a secret key.
    pub apps: Vec<AppSettings>,
    pub window: Window,
    pub rate: f64,
    pub page_size: u32,
    pub format: ReconcileFormat,
}

/// Everything `callhook register` needs, checked.
#[derive(Debug)]
pub struct RegisterJob {
    /// The app, with a secret key.
    pub app: AppSettings,
    pub url: Option<String>,
    pub check: bool,
    pub rate: f64,
}

/// The configured apps with their credentials: the file's, and `--sdkappid` (which may
/// name an app the file does not have, its key from `CALLHOOK_SECRET_KEY_<ID>`). Only apps
/// with a secret key; `--sdkappid` of one without is an error that says how to give it one.
fn api_apps(
    file: &FileConfig,
    sdkappid: Option<i64>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AppSettings>, ConfigError> {
    let extra: Vec<String> = sdkappid.iter().map(ToString::to_string).collect();
    let apps = validate::apps(file.apps.clone(), &extra, env)?;
    if let Some(id) = sdkappid {
        return match apps.get(&id) {
            Some(app) if app.api.secret_key.is_some() => Ok(vec![app.clone()]),
            _ => err(format!(
                "app {id} has no secret key: set CALLHOOK_SECRET_KEY_{id}, or secret_key_env in its [[apps]] entry (the key is in the console, under the app's basic information)"
            )),
        };
    }
    let with_keys: Vec<AppSettings> = apps
        .into_values()
        .filter(|a| a.api.secret_key.is_some())
        .collect();
    if with_keys.is_empty() {
        return err(
            "no app has a secret key: pass --sdkappid ID with CALLHOOK_SECRET_KEY_<ID> set, or give an [[apps]] entry secret_key_env",
        );
    }
    Ok(with_keys)
}

pub(super) fn reconcile_job(
    args: ReconcileArgs,
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    now: Millis,
) -> Result<ReconcileJob, ConfigError> {
    let db = super::database(&args.db, file)?;
    let mut pace = file.reconcile.clone();
    pace.rate = args.rate.unwrap_or(pace.rate);
    pace.page_size = args.page_size.unwrap_or(pace.page_size);
    let pace = validate::reconcile(&pace)?;
    let window = match (&args.since, &args.from, &args.to) {
        (_, Some(from), Some(to)) => Window {
            from: time_arg("--from", from)?,
            to: time_arg("--to", to)?,
        },
        (Some(since), _, _) => {
            let d = super::forward::parse_duration(since).ok().ok_or_else(|| {
                ConfigError(format!(
                    "--since {since:?} is not a duration such as 90m, 24h or 7d"
                ))
            })?;
            Window::since(d, now)
        }
        _ => Window::since(DEFAULT_SINCE, now),
    };
    window.check(now)?;
    Ok(ReconcileJob {
        db,
        apps: api_apps(file, args.sdkappid, env)?,
        window,
        rate: pace.rate,
        page_size: pace.page_size,
        format: args.format,
    })
}

fn time_arg(flag: &str, text: &str) -> Result<Millis, ConfigError> {
    parse_time(text).ok_or_else(|| {
        ConfigError(format!(
            "{flag} {text:?} is not a time: use RFC 3339 (2026-12-01T08:00:00Z), a UTC day (2026-12-01) or Unix seconds"
        ))
    })
}

pub(super) fn register_job(
    args: RegisterArgs,
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RegisterJob, ConfigError> {
    let mut apps = api_apps(file, args.sdkappid, env)?;
    if apps.len() > 1 {
        let ids: Vec<String> = apps.iter().map(|a| a.sdkappid.to_string()).collect();
        return err(format!(
            "several apps have a secret key ({}): say which with --sdkappid",
            ids.join(", ")
        ));
    }
    if let Some(url) = &args.url {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && reqwest::Url::parse(url).is_ok();
        if !ok {
            return err(format!(
                "--url {:?} is not an http(s) URL",
                crate::protocol::query::redact_url(url)
            ));
        }
    }
    let rate = validate::reconcile(&file.reconcile)?.rate;
    match apps.pop() {
        Some(app) => Ok(RegisterJob {
            app,
            url: args.url,
            check: args.check,
            rate,
        }),
        None => err("no app to register"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_765_000_000_000;
    const DAY: Millis = 86_400_000;

    #[test]
    fn times_in_three_spellings() {
        assert_eq!(parse_time("2025-12-06T05:46:40Z"), Some(NOW));
        assert_eq!(parse_time("2025-12-06T13:46:40+08:00"), Some(NOW));
        assert_eq!(parse_time("1765000000"), Some(NOW));
        assert_eq!(parse_time("2025-12-06"), Some(1_764_979_200_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    fn args(extra: &[&str]) -> ReconcileArgs {
        use clap::Parser as _;
        let mut all = vec!["callhook", "reconcile"];
        all.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(all).map(|c| c.command) {
            Ok(crate::cli::Command::Reconcile(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_apps_reconciled_are_those_with_a_secret_key() -> Result<(), ConfigError> {
        let file = FileConfig::parse(
            "[[apps]]\nsdkappid = 1\nsecret_key = \"k1\"\n[[apps]]\nsdkappid = 2\n",
        )?;
        let env = |k: &str| (k == "CALLHOOK_SECRET_KEY_3").then(|| "k3".to_owned());
        let ids = |a: &[&str]| {
            reconcile_job(args(a), &file, &env, NOW)
                .map(|j| j.apps.iter().map(|a| a.sdkappid).collect::<Vec<_>>())
        };
        assert_eq!(ids(&[])?, [1], "every app with a key");
        assert_eq!(
            ids(&["--sdkappid", "3"])?,
            [3],
            "a key from the environment alone"
        );
        let e = ids(&["--sdkappid", "2"])
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(
            e.contains("app 2 has no secret key") && e.contains("CALLHOOK_SECRET_KEY_2"),
            "{e}"
        );
        let none = FileConfig::parse("[[apps]]\nsdkappid = 2\n")?;
        let e = reconcile_job(args(&[]), &none, &env, NOW)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(e.contains("no app has a secret key"), "{e}");
        let j = reconcile_job(
            args(&["--since", "90m", "--rate", "5", "--page-size", "50"]),
            &file,
            &env,
            NOW,
        )?;
        assert_eq!(
            j.window,
            Window {
                from: NOW - 90 * 60_000,
                to: NOW
            }
        );
        assert_eq!((j.rate, j.page_size), (5.0, 50));
        let j = reconcile_job(
            args(&["--from", "2025-12-05", "--to", "1765000000"]),
            &file,
            &env,
            NOW,
        )?;
        assert_eq!(
            j.window,
            Window {
                from: 1_764_892_800_000,
                to: NOW
            }
        );
        assert_eq!(
            reconcile_job(args(&[]), &file, &env, NOW)?.window.from,
            NOW - DAY,
            "24h by default"
        );
        assert!(reconcile_job(args(&["--rate", "0"]), &file, &env, NOW).is_err());
        assert!(reconcile_job(args(&["--since", "soon"]), &file, &env, NOW).is_err());
        Ok(())
    }

    #[test]
    fn a_window_past_seven_days_is_refused_never_clamped() {
        assert!(
            Window::since(Duration::from_secs(167 * 3600), NOW)
                .check(NOW)
                .is_ok()
        );
        // Exactly 7 days would pass Tencent's limit a moment into the run.
        assert!(
            Window::since(Duration::from_secs(7 * 86_400), NOW)
                .check(NOW)
                .is_err()
        );
        let old = Window {
            from: NOW - 7 * DAY - 1000,
            to: NOW,
        };
        let e = old.check(NOW).err().map(|e| e.0).unwrap_or_default();
        assert!(
            e.contains("more than 7 days ago") && e.contains("2025-11-29T05:56:40Z"),
            "{e}"
        );
        let backwards = Window {
            from: NOW,
            to: NOW - 1,
        };
        assert!(backwards.check(NOW).is_err());
    }
}
