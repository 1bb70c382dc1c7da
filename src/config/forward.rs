//! `[[forward]]`: the destinations callhook forwards events to (Standard Webhooks), from
//! the file layer to validated [`Destination`]s.
//!
//! Each value is checked as it is read, so a bad URL, secret, family, delay or timeout is
//! reported with its line (`line N: …`), as unknown keys are. What spans keys (a secret
//! given twice or not at all, a variable that is not set, two destinations of one name)
//! is checked after, in [`destinations`].

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

use super::{ConfigError, err};
use crate::protocol::{CallResult, Family};
use crate::store::Route;
use crate::webhook::SigningKey;

/// One `[[forward]]` entry as the file gives it (defaults filled in).
#[derive(Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct FileForward {
    #[serde(deserialize_with = "name")]
    pub name: String,
    #[serde(deserialize_with = "url")]
    pub url: String,
    #[serde(default, deserialize_with = "secret")]
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub sdkappids: Option<Vec<i64>>,
    #[serde(default, deserialize_with = "families")]
    pub families: Option<Vec<String>>,
    pub commands: Option<Vec<String>>,
    pub results: Option<Vec<String>>,
    #[serde(default)]
    pub timeout_ms: TimeoutMs,
    #[serde(default)]
    pub retry_schedule: RetrySchedule,
    #[serde(default)]
    pub max_in_flight: MaxInFlight,
}

// The keys with a default: each a type whose `Deserialize` checks it as it is read, and
// whose `Default` is in defaults.rs, the one table of defaults.

/// `timeout_ms`, 100 to 120000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize), serde(transparent))]
pub struct TimeoutMs(pub u64);

/// `retry_schedule`: 1 to 100 delays, the first `0s`, none over 7 days.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize), serde(transparent))]
pub struct RetrySchedule(pub Vec<String>);

/// `max_in_flight`, 1 to 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize), serde(transparent))]
pub struct MaxInFlight(pub usize);

impl<'de> Deserialize<'de> for TimeoutMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        timeout_ms(d).map(Self)
    }
}

impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        retry_schedule(d).map(Self)
    }
}

impl<'de> Deserialize<'de> for MaxInFlight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        max_in_flight(d).map(Self)
    }
}

/// The secret never shows (the name of its variable does).
impl std::fmt::Debug for FileForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileForward")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "REDACTED"))
            .field("secret_env", &self.secret_env)
            .field("sdkappids", &self.sdkappids)
            .field("families", &self.families)
            .field("commands", &self.commands)
            .field("results", &self.results)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_schedule", &self.retry_schedule)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A destination, validated: where its messages go, how they are signed, which events it
/// takes (its [`Route`], which the store consults on every write) and its retry policy.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    pub route: Route,
    pub url: String,
    pub key: SigningKey,
    pub timeout: Duration,
    /// The delay before each attempt after a failed one (the first, `0s`, is the first
    /// attempt's); after the last attempt fails, the entry is dead.
    pub retry_schedule: Vec<Duration>,
    pub max_in_flight: usize,
}

impl Destination {
    pub fn name(&self) -> &str {
        &self.route.destination
    }
}

/// The URL without what may be secret in it (a password, the query).
impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("route", &self.route)
            .field("url", &redacted_url(&self.url))
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A URL for logs and `Debug`: scheme, host, port and path; a password and the query are
/// left out.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let query = if u.query().is_some() { "?…" } else { "" };
            format!(
                "{}://{}{port}{}{query}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.path()
            )
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// A duration as the configuration writes it: a whole number and a unit, `ms`, `s`, `m`,
/// `h` or `d` (`0s`, `5s`, `30m`, `10h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 0s, 500ms, 5m, 2h or 1d"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} has no unit: write ms, s, m, h or d (e.g. 5s)"
            ));
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

// ---------------------------------------------------------------------------------------
// Values, checked as they are read (a failure carries the value's line)

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(D::Error::custom(format!(
            "{name:?} must be 1 to 64 of a-z, 0-9 and -"
        )));
    }
    Ok(name)
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let parsed = reqwest::Url::parse(text.trim())
        .map_err(|e| D::Error::custom(format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(D::Error::custom(format!(
            "{} must be http:// or https:// with a host",
            redacted_url(&text)
        )));
    }
    Ok(text.trim().to_owned())
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    SigningKey::parse(&text).map_err(D::Error::custom)?;
    Ok(Some(text))
}

fn families<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for f in &list {
        if Family::parse(f).is_none() {
            return Err(D::Error::custom(format!(
                "{f:?} is none of status, event, v4, other, room, media, recording, trtc"
            )));
        }
    }
    Ok(Some(list))
}

fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let ms = u64::deserialize(d)?;
    if !(100..=120_000).contains(&ms) {
        return Err(D::Error::custom(format!("{ms} is outside 100..=120000")));
    }
    Ok(ms)
}

fn max_in_flight<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if !(1..=256).contains(&n) {
        return Err(D::Error::custom(format!("{n} is outside 1..=256")));
    }
    Ok(n)
}

fn retry_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    schedule(&list).map_err(|e| {
        D::Error::custom(
            e.trim_start_matches("forward retry_schedule")
                .trim_start_matches(": ")
                .trim_start(),
        )
    })?;
    Ok(list)
}

/// The longest delay between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(7 * 86_400);

fn schedule(list: &[String]) -> Result<Vec<Duration>, String> {
    if list.is_empty() || list.len() > 100 {
        return Err("forward retry_schedule must list 1 to 100 delays".into());
    }
    let delays = list
        .iter()
        .map(|t| parse_duration(t).map_err(|e| format!("forward retry_schedule: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if delays[0] != Duration::ZERO {
        return Err(format!(
            "forward retry_schedule starts with {:?}: its first delay is the first attempt's, made as soon as the event is stored, so it must be \"0s\"",
            list[0]
        ));
    }
    if let Some(long) = delays.iter().position(|d| *d > MAX_DELAY) {
        return Err(format!(
            "forward retry_schedule: {:?} is longer than 7 days",
            list[long]
        ));
    }
    Ok(delays)
}

// ---------------------------------------------------------------------------------------
// Across keys

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Every `[[forward]]` entry, validated.
pub(super) fn destinations(
    file: &[FileForward],
    env: Env<'_>,
) -> Result<Vec<Destination>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(file.len());
    for f in file {
        if !names.insert(f.name.as_str()) {
            return err(format!("[[forward]] name {:?} is listed twice", f.name));
        }
        out.push(destination(f, env)?);
    }
    Ok(out)
}

fn destination(f: &FileForward, env: Env<'_>) -> Result<Destination, ConfigError> {
    let name = &f.name;
    let secret = match (&f.secret, &f.secret_env) {
        (Some(_), Some(_)) => {
            return err(format!(
                "[[forward]] {name}: set secret or secret_env, not both"
            ));
        }
        (Some(s), None) => s.clone(),
        (None, Some(var)) => env(var).ok_or_else(|| {
            ConfigError(format!("[[forward]] {name}: secret_env {var} is not set"))
        })?,
        (None, None) => {
            return err(format!(
                "[[forward]] {name}: no secret; set secret_env = \"VARIABLE\" (or secret = \"whsec_…\")"
            ));
        }
    };
    let key =
        SigningKey::parse(&secret).map_err(|e| ConfigError(format!("[[forward]] {name}: {e}")))?;
    let list = |key: &str, l: &Option<Vec<String>>, norm: fn(&str) -> String| match l {
        Some(v) if v.is_empty() => err(format!(
            "[[forward]] {name}: {key} is empty; remove it to take every event"
        )),
        Some(v) => Ok(Some(v.iter().map(|s| norm(s.trim())).collect())),
        None => Ok(None),
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    let result = |s: &str| {
        CallResult::from_wire(s)
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default()
    };
    if f.sdkappids.as_ref().is_some_and(Vec::is_empty) {
        return err(format!(
            "[[forward]] {name}: sdkappids is empty; remove it to take every app"
        ));
    }
    Ok(Destination {
        route: Route {
            destination: name.clone(),
            sdkappids: f.sdkappids.clone(),
            families: list("families", &f.families, str::to_owned)?,
            commands: list("commands", &f.commands, lower)?,
            results: list("results", &f.results, result)?,
        },
        url: f.url.clone(),
        key,
        timeout: Duration::from_millis(f.timeout_ms.0),
        retry_schedule: schedule(&f.retry_schedule.0).map_err(ConfigError)?,
        max_in_flight: f.max_in_flight.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(extra: &str) -> Result<Vec<Destination>, ConfigError> {
        let text = format!(
            "[[forward]]\nname = \"push\"\nurl = \"https://push.internal/hooks\"\n{extra}\n"
        );
        let file = FileConfig::parse(&text)?;
        let env = |k: &str| (k == "PUSH_SECRET").then(|| format!("{SECRET}\n"));
        destinations(&file.forward, &env)
    }

    #[test]
    fn a_destination_with_its_defaults() -> Result<(), ConfigError> {
        let d = parse("secret_env = \"PUSH_SECRET\"")?;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name(), "push");
        assert_eq!(d[0].timeout, Duration::from_millis(5000));
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(
            d[0].retry_schedule,
            vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
                hours(2),
                hours(5),
                hours(10),
                hours(10)
            ]
        );
        assert_eq!(d[0].max_in_flight, 16);
        assert_eq!(d[0].route.families, None);
        assert!(!format!("{d:?}").contains("MfKQ"), "the key never shows");
        Ok(())
    }

    #[test]
    fn filters_are_normalised() -> Result<(), ConfigError> {
        let d = parse(&format!(
            "secret = \"{SECRET}\"\nsdkappids = [1400000001]\nfamilies = [\"status\", \"v4\"]\n\
             commands = [\"Call.CallbackAfterEndCall\", \"call_end\"]\nresults = [\"NotAnswer\", \"reject\"]\n\
             timeout_ms = 250\nretry_schedule = [\"0s\", \"200ms\", \"1m\"]\nmax_in_flight = 2"
        ))?;
        let r = &d[0].route;
        assert_eq!(r.sdkappids, Some(vec![1_400_000_001]));
        assert_eq!(
            r.commands,
            Some(vec!["call.callbackafterendcall".into(), "call_end".into()])
        );
        assert_eq!(r.results, Some(vec!["not_answer".into(), "reject".into()]));
        assert_eq!(d[0].retry_schedule.len(), 3);
        assert_eq!(d[0].max_in_flight, 2);
        Ok(())
    }

    /// A value that is wrong is named with its line, like an unknown key.
    #[test]
    fn bad_values_are_named_with_their_line() {
        for (extra, line, words) in [
            ("secret_env = \"PUSH_SECRET\"\nurll = \"x\"", 5, "urll"),
            ("secret = \"not-a-secret\"", 4, "whsec_"),
            ("secret = \"whsec_c2hvcnQ=\"", 4, "bytes"),
            (
                "secret_env = \"PUSH_SECRET\"\nfamilies = [\"calls\"]",
                5,
                "calls",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\ntimeout_ms = 5",
                5,
                "timeout_ms",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\nretry_schedule = [\"5s\"]",
                5,
                "0s",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\nretry_schedule = [\"0s\", \"5\"]",
                5,
                "unit",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\nretry_schedule = [\"0s\", \"8d\"]",
                5,
                "7 days",
            ),
        ] {
            let e = parse(extra).err().map(|e| e.0).unwrap_or_default();
            assert!(
                e.starts_with(&format!("line {line}:")) && e.contains(words),
                "{extra}: {e}"
            );
            assert!(!e.contains("c2hvcnQ"), "{e}");
        }
        let e = FileConfig::parse("[[forward]]\nname = \"Push\"\nurl = \"ftp://x/\"\n")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(e.starts_with("line 2:") && e.contains("a-z"), "{e}");
        let e = FileConfig::parse("[[forward]]\nname = \"p\"\nurl = \"ftp://x/\"\n")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(e.starts_with("line 3:") && e.contains("http"), "{e}");
    }

    #[test]
    fn secrets_and_names_across_keys() {
        for (extra, words) in [
            ("", "no secret"),
            ("secret_env = \"UNSET\"", "UNSET is not set"),
            (
                &format!("secret_env = \"PUSH_SECRET\"\nsecret = \"{SECRET}\""),
                "not both",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\nresults = []",
                "results is empty",
            ),
            (
                "secret_env = \"PUSH_SECRET\"\n[[forward]]\nname = \"push\"\nurl = \"http://b/\"\nsecret_env = \"PUSH_SECRET\"",
                "listed twice",
            ),
        ] {
            let e = parse(extra).err().map(|e| e.0).unwrap_or_default();
            assert!(e.contains(words), "{extra}: {e}");
        }
    }

    /// config.example.toml's `[[forward]]`, uncommented, is valid, and the keys with a
    /// default state it.
    #[test]
    fn the_example_states_the_defaults() -> Result<(), ConfigError> {
        let text = include_str!("../../config.example.toml");
        let block = text
            .split("\n# [[forward]]\n")
            .nth(1)
            .ok_or_else(|| ConfigError("no [[forward]] example".into()))?;
        let mut uncommented = "[[forward]]\n".to_owned();
        for line in block.lines().filter_map(|l| l.strip_prefix("# ")) {
            if line
                .split_once(" = ")
                .is_some_and(|(k, _)| !k.contains(' '))
            {
                uncommented.push_str(line);
                uncommented.push('\n');
            }
        }
        let file = FileConfig::parse(&uncommented)?;
        let [f] = file.forward.as_slice() else {
            return err(format!("one destination expected: {uncommented}"));
        };
        assert_eq!(f.timeout_ms, TimeoutMs::default());
        assert_eq!(f.retry_schedule, RetrySchedule::default());
        assert_eq!(f.max_in_flight, MaxInFlight::default());
        let keys = [
            "name",
            "url",
            "secret_env",
            "sdkappids",
            "families",
            "commands",
            "results",
        ];
        for key in keys {
            assert!(uncommented.contains(&format!("\n{key} = ")), "{key}");
        }
        let env = |k: &str| (k == "CALLHOOK_FORWARD_SECRET_PUSH").then(|| SECRET.to_owned());
        let d = destinations(&file.forward, &env)?;
        assert_eq!(d[0].route.results.as_ref().map(Vec::len), Some(3));
        Ok(())
    }

    #[test]
    fn durations() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("0s"), Ok(0));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms(" 5m "), Ok(300_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        for bad in ["", "5", "s", "1.5s", "-1s", "5 s", "1w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            redacted_url("https://u:pw@push.internal:8443/hooks?key=abc"),
            "https://push.internal:8443/hooks?…"
        );
        assert_eq!(redacted_url("http://h/x"), "http://h/x");
    }
}
