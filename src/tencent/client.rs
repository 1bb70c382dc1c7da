//! One HTTP client for Tencent's REST APIs: each request signed with a fresh UserSig and a
//! random number, started no faster than a set rate, retried with backoff when the failure
//! is one a later attempt can get past (no answer, HTTP 5xx or 429, Tencent's "too many
//! requests"), and answered as Tencent's envelope or a typed error.
//!
//! No secret leaves this module: the UserSig rides in the query string, so transport errors
//! are stripped of their URL, and [`Credentials`] shows no key in `Debug` output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::usersig::{UserSigInput, user_sig};

/// How long a UserSig callhook makes is valid: long enough for a clock a little behind
/// Tencent's, short enough to be useless soon if it leaked from a proxy's log.
const USERSIG_EXPIRE_SECS: i64 = 3600;
/// Per attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The pauses before the 2nd, 3rd, … attempt of a request that can be retried.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// Tencent's codes that ask to try again later: 70005 (too many requests) and 100001
/// (internal error, "please retry").
const RETRY_CODES: [i64; 2] = [70_005, 100_001];

/// An app's REST API identity: the SDKAppID, the administrator account requests are made
/// as, and the secret key that signs its UserSig.
#[derive(Clone)]
pub struct Credentials {
    pub sdkappid: i64,
    pub identifier: String,
    key: String,
}

impl Credentials {
    pub fn new(sdkappid: i64, identifier: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            sdkappid,
            identifier: identifier.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("sdkappid", &self.sdkappid)
            .field("identifier", &self.identifier)
            .field("key", &"REDACTED")
            .finish()
    }
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Tencent answered with a non-zero `ErrorCode` (after the retries, for one that asks
    /// for them).
    #[error("Tencent answered {api} with ErrorCode {code}: {info:?}{}", hint_suffix(*code))]
    Refused {
        api: String,
        code: i64,
        info: String,
        request_id: Option<String>,
    },
    /// An HTTP status other than 200, after the retries for 5xx and 429.
    #[error("{api}: HTTP {status} ({attempts} attempts)")]
    Status {
        api: String,
        status: u16,
        attempts: usize,
    },
    /// No answer: connection refused, reset, timed out (after the retries).
    #[error("{api}: no answer: {reason} ({attempts} attempts)")]
    Transport {
        api: String,
        reason: String,
        attempts: usize,
    },
    /// An answer that is not Tencent's envelope, or whose `Response` is not as documented.
    #[error("{api}: the answer is not what Tencent documents: {reason}")]
    Answer { api: String, reason: String },
}

impl ApiError {
    /// Tencent's `ErrorCode`, when it answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What to do about one of Tencent's error codes, as far as we know it
/// (docs/src/tencent-rest-api.md).
pub fn hint(code: i64) -> Option<&'static str> {
    Some(match code {
        70_001 => {
            "the UserSig expired or the request is invalid: check this machine's clock, and the sdkappid"
        }
        70_002 | 70_003 => {
            "the UserSig is invalid: the secret key is not this app's (secret_key, secret_key_env or CALLHOOK_SECRET_KEY_<SDKAPPID>; copy it again from the console), or the app is in another region (api_region)"
        }
        70_004 => {
            "the identifier is not an app administrator: set admin_identifier to one (the console's App administrators list; the default is \"administrator\")"
        }
        70_005 => "too many requests: lower reconcile.rate (--rate)",
        50_001 => {
            "the app has no package that includes this API (TUICallKit's Group Call package): buy or enable it in the console"
        }
        999 => "no callback is configured for this app",
        _ => return None,
    })
}

fn hint_suffix(code: i64) -> String {
    hint(code).map(|h| format!(" — {h}")).unwrap_or_default()
}

/// Tencent's answer envelope, the `Response` kept as received.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "ActionStatus")]
    action_status: Option<String>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    #[serde(rename = "ErrorInfo")]
    error_info: Option<String>,
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
    #[serde(rename = "Response")]
    response: Option<Box<RawValue>>,
}

/// A successful answer: its `Response` (`None` when it has none) and `RequestId`.
#[derive(Debug)]
pub struct Answer {
    pub response: Option<Box<RawValue>>,
    pub request_id: Option<String>,
}

/// Starts requests no faster than a rate: each waits for the slot after the last one's.
struct Pace {
    period: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Self {
            period: Duration::from_secs_f64(1.0 / rate),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = tokio::time::Instant::now();
        let slot = (*next).max(now);
        *next = slot + self.period;
        drop(next);
        tokio::time::sleep_until(slot).await;
    }
}

/// A client for one app's REST APIs.
pub struct Client {
    http: reqwest::Client,
    base: String,
    creds: Credentials,
    pace: Pace,
    retry_delays: Vec<Duration>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("creds", &self.creds)
            .finish()
    }
}

impl Client {
    /// A client for `base` (`https://console.tim.qq.com`, or an `api_url`), starting at most
    /// `rate` requests a second.
    pub fn new(base: &str, creds: Credentials, rate: f64) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("callhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            creds,
            pace: Pace::new(rate),
            retry_delays: RETRY_DELAYS.to_vec(),
            requests: AtomicU64::new(0),
        })
    }

    /// The same client with other pauses between attempts (tests use short ones).
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }

    /// HTTP requests sent so far (attempts, retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn sdkappid(&self) -> i64 {
        self.creds.sdkappid
    }

    /// The request URL of `api` (`call_record_http_srv/get_record_by_filter`), with a fresh
    /// UserSig and random number.
    fn url(&self, api: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let sig = user_sig(
            &self.creds.key,
            &UserSigInput {
                sdkappid: self.creds.sdkappid,
                identifier: &self.creds.identifier,
                time: now,
                expire: USERSIG_EXPIRE_SECS,
            },
        );
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("sdkappid", &self.creds.sdkappid.to_string())
            .append_pair("identifier", &self.creds.identifier)
            .append_pair("usersig", &sig)
            .append_pair("random", &random_u32().to_string())
            .append_pair("contenttype", "json")
            .finish();
        format!("{}/v4/{api}?{query}", self.base)
    }

    /// POSTs `body` to `api` and returns Tencent's answer, retrying what can be retried.
    pub async fn call(&self, api: &str, body: &serde_json::Value) -> Result<Answer, ApiError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = self.attempt(api, body, attempts).await;
            let retry = match &outcome {
                Ok(_) => false,
                Err(ApiError::Refused { code, .. }) => RETRY_CODES.contains(code),
                Err(ApiError::Status { status, .. }) => *status >= 500 || *status == 429,
                Err(ApiError::Transport { .. }) => true,
                Err(ApiError::Answer { .. }) => false,
            };
            match self.retry_delays.get(attempts - 1) {
                Some(delay) if retry => {
                    tracing::debug!(api, attempts, error = %outcome.as_ref().err().map(ToString::to_string).unwrap_or_default(), "retrying");
                    tokio::time::sleep(*delay).await;
                }
                _ => return outcome,
            }
        }
    }

    async fn attempt(
        &self,
        api: &str,
        body: &serde_json::Value,
        attempts: usize,
    ) -> Result<Answer, ApiError> {
        self.pace.wait().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| ApiError::Transport {
            api: api.to_owned(),
            // The URL carries the UserSig: never show it.
            reason: e.without_url().to_string(),
            attempts,
        };
        let resp = self
            .http
            .post(self.url(api))
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(transport)?;
        if status != 200 {
            return Err(ApiError::Status {
                api: api.to_owned(),
                status,
                attempts,
            });
        }
        let env: Envelope = serde_json::from_str(&text).map_err(|e| ApiError::Answer {
            api: api.to_owned(),
            reason: format!("{e}: {}", crate::protocol::query::truncate(&text, 200)),
        })?;
        let code = env.error_code.unwrap_or(0);
        let failed = code != 0 || env.action_status.as_deref().is_some_and(|s| s != "OK");
        if failed {
            return Err(ApiError::Refused {
                api: api.to_owned(),
                code,
                info: env.error_info.unwrap_or_default(),
                request_id: env.request_id,
            });
        }
        Ok(Answer {
            response: env.response,
            request_id: env.request_id,
        })
    }
}

/// A random u32 for the `random` parameter (not a secret: it only tells requests apart).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_code_and_what_to_fix_never_the_key() {
        let e = ApiError::Refused {
            api: "call_record_http_srv/get_record_by_filter".into(),
            code: 70_004,
            info: "identifier is not admin".into(),
            request_id: None,
        };
        let text = e.to_string();
        assert!(
            text.contains("70004") && text.contains("admin_identifier"),
            "{text}"
        );
        let creds = Credentials::new(1, "administrator", "SECRET-KEY");
        assert!(!format!("{creds:?}").contains("SECRET"));
        assert_eq!(hint(12345), None);
    }

    #[tokio::test]
    async fn the_pace_spaces_requests() {
        let pace = Pace::new(50.0);
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            pace.wait().await;
        }
        // The first starts at once, each other 20 ms after the one before.
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn random_numbers_differ() {
        let a: std::collections::HashSet<u32> = (0..100).map(|_| random_u32()).collect();
        assert!(a.len() > 95);
    }
}
