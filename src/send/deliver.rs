//! Delivery the way Tencent's sender does it: POST, and count the attempt as acknowledged
//! only on HTTP 2xx with a JSON body whose `ErrorCode` is 0. Anything else — a non-zero
//! code, another HTTP status, a timeout, a connection error — is retried after the
//! schedule's delays (0, 1, 1, 2, 3, 5 s, each counted from the failure), then the
//! delivery is dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::generate::Delivery;
use super::summary::Stats;
use crate::cli::SendAuth;

/// Where deliveries go: the URL as registered (its own query, e.g. `?token=…`, is kept
/// and Tencent's parameters are appended), plus the credentials callhook adds.
#[derive(Clone)]
pub struct Target {
    /// Scheme, host and path.
    base: String,
    /// The registered URL's own query, if any.
    own_query: Option<String>,
    /// `token=…`, encoded, when it is to be appended.
    token_param: Option<String>,
    /// The token to sign with, when signing.
    sign_with: Option<String>,
}

/// The token never shows.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.redacted())
            .field("token", &self.token_param.as_ref().map(|_| "REDACTED"))
            .field("signs", &self.sign_with.is_some())
            .finish()
    }
}

impl Target {
    /// `token` is trimmed of surrounding whitespace (a secret read from a file or the
    /// environment often ends in a newline), as the receiver trims its own.
    pub fn new(url: &str, token: Option<&str>, auth: SendAuth) -> anyhow::Result<Self> {
        let token = token.map(str::trim);
        let shown = crate::protocol::query::redact_url(url);
        let mut parsed =
            reqwest::Url::parse(url).with_context(|| format!("--url {shown:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "--url must be an http:// or https:// URL, not {shown:?}"
        );
        parsed.set_fragment(None);
        let own_query = parsed.query().filter(|q| !q.is_empty()).map(str::to_owned);
        parsed.set_query(None);
        let url_has_token = own_query.as_deref().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("token"))
        });
        let (token_param, sign_with) = match token {
            None => (None, None),
            Some(t) => {
                let add_token = matches!(auth, SendAuth::Both | SendAuth::Token) && !url_has_token;
                let sign = matches!(auth, SendAuth::Both | SendAuth::Sign);
                let encoded: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
                (
                    add_token.then(|| format!("token={encoded}")),
                    sign.then(|| t.to_owned()),
                )
            }
        };
        Ok(Self {
            base: parsed.to_string(),
            own_query,
            token_param,
            sign_with,
        })
    }

    /// The URL of one attempt: the registered URL's query, Tencent's parameters, then
    /// `token` and `RequestTime`/`Sign` (fresh for each attempt; `now` is Unix seconds).
    pub fn url_for(&self, tencent_query: &str, now: i64) -> String {
        let mut url = String::with_capacity(self.base.len() + tencent_query.len() + 128);
        url.push_str(&self.base);
        url.push('?');
        if let Some(q) = &self.own_query {
            url.push_str(q);
            url.push('&');
        }
        url.push_str(tencent_query);
        if let Some(t) = &self.token_param {
            url.push('&');
            url.push_str(t);
        }
        if let Some(token) = &self.sign_with {
            let rt = now.to_string();
            url.push_str("&RequestTime=");
            url.push_str(&rt);
            url.push_str("&Sign=");
            url.push_str(&crate::auth::sign(token, &rt));
        }
        url
    }

    /// The registered URL for display, secrets redacted.
    pub fn redacted(&self) -> String {
        match &self.own_query {
            Some(q) => format!("{}?{}", self.base, crate::protocol::query::redact(q)),
            None => self.base.clone(),
        }
    }
}

/// Sends deliveries, retrying on the schedule, and counts what happened.
pub struct Engine {
    client: reqwest::Client,
    target: Target,
    timeout: Duration,
    schedule: Vec<Duration>,
    /// Requests in flight (`--concurrency`); a delivery waiting for its retry holds none.
    inflight: Semaphore,
    pub stats: Mutex<Stats>,
}

/// How one attempt went.
pub(super) enum Attempt {
    Acknowledged { message: String, latency: Duration },
    Failed(String),
}

/// The reply envelope; everything is optional, since any answer may come back.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "ErrorCode")]
    code: Option<serde_json::Value>,
    #[serde(rename = "ErrorMessage")]
    message: Option<String>,
    #[serde(rename = "ErrorInfo")]
    info: Option<String>,
}

/// The sender's HTTP client: keep-alive connections up to `concurrency`, connecting
/// within `timeout`. Shared by the call-callback and the TRTC senders.
pub(super) fn http_client(
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    crate::install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("callhook-send/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(concurrency)
        .connect_timeout(timeout)
        .build()
        .context("cannot build the HTTP client")
}

impl Engine {
    pub fn new(
        target: Target,
        concurrency: usize,
        timeout: Duration,
        schedule: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        let client = http_client(concurrency, timeout)?;
        Ok(Self {
            client,
            target,
            timeout,
            schedule,
            inflight: Semaphore::new(concurrency.max(1)),
            stats: Mutex::new(Stats::default()),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers one callback: the first attempt now, then one after each delay of the
    /// schedule. Returns whether it was acknowledged.
    pub async fn deliver(&self, d: &Delivery) -> bool {
        let mut attempts = 0u64;
        let delays = std::iter::once(None).chain(self.schedule.iter().map(Some));
        for delay in delays {
            if let Some(delay) = delay {
                tokio::time::sleep(*delay).await;
            }
            attempts += 1;
            match self.attempt(d).await {
                Attempt::Acknowledged { message, latency } => {
                    let mut s = self.stats();
                    s.acknowledged_attempt(message, latency);
                    s.finished(attempts, true);
                    return true;
                }
                Attempt::Failed(reason) => self.stats().failed_attempt(reason, attempts == 1),
            }
        }
        self.stats().finished(attempts, false);
        false
    }

    async fn attempt(&self, d: &Delivery) -> Attempt {
        let Ok(_permit) = self.inflight.acquire().await else {
            return Attempt::Failed("the sender was shut down".to_owned());
        };
        let now = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.target.url_for(&d.query, now))
            .timeout(self.timeout)
            .body(d.body.clone());
        if let Some(ct) = d.content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let latency = started.elapsed();
        let timed_out = || {
            Attempt::Failed(format!(
                "timeout (no answer within {} ms)",
                self.timeout.as_millis()
            ))
        };
        match answer {
            Err(_) => timed_out(),
            Ok(Err(e)) if e.is_timeout() => timed_out(),
            Ok(Err(e)) => Attempt::Failed(describe(&e)),
            Ok(Ok((status, body))) => judge(status.as_u16(), &body, latency),
        }
    }
}

/// Acknowledged only with HTTP 2xx and `ErrorCode` 0 (a JSON number).
pub(super) fn judge(status: u16, body: &[u8], latency: Duration) -> Attempt {
    let envelope = serde_json::from_slice::<Envelope>(body).ok();
    let code = envelope
        .as_ref()
        .and_then(|e| e.code.as_ref())
        .and_then(serde_json::Value::as_i64);
    let message = envelope
        .as_ref()
        .and_then(|e| e.message.clone().or_else(|| e.info.clone()))
        .unwrap_or_default();
    let message = crate::protocol::query::truncate(&message, 120).to_owned();
    match code {
        Some(0) if (200..300).contains(&status) => Attempt::Acknowledged { message, latency },
        Some(code) => Attempt::Failed(format!("HTTP {status}, ErrorCode {code} {message:?}")),
        None => Attempt::Failed(format!("HTTP {status}, no numeric ErrorCode in the answer")),
    }
}

/// A transport error, by its innermost cause (e.g. "Connection refused (os error 111)").
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let what = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{what}: {root}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_appended_to_the_registered_url() {
        let t = Target::new("https://hooks.example.com/cb", None, SendAuth::Both)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.url_for("sdkappid=1&command=call_end", 0),
            "https://hooks.example.com/cb?sdkappid=1&command=call_end"
        );
        let t =
            Target::new("http://h:8080", None, SendAuth::Both).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.url_for("a=1", 0), "http://h:8080/?a=1");
    }

    #[test]
    fn token_and_signature() {
        let t = Target::new("https://h/?x=1", Some("xxxxyyyy"), SendAuth::Both)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.url_for("sdkappid=1", 1_669_872_112),
            "https://h/?x=1&sdkappid=1&token=xxxxyyyy&RequestTime=1669872112&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
        // A token already in the registered URL is not added twice, and is redacted.
        let t = Target::new("https://h/?TOKEN=s3cret", Some("s3cret"), SendAuth::Both)
            .unwrap_or_else(|e| panic!("{e}"));
        let url = t.url_for("sdkappid=1", 5);
        assert_eq!(url.matches("s3cret").count(), 1, "{url}");
        assert!(url.contains("&Sign="));
        assert_eq!(t.redacted(), "https://h/?TOKEN=REDACTED");
        let t = Target::new("https://h/", Some("a b&c"), SendAuth::Token)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.url_for("q=1", 5), "https://h/?q=1&token=a+b%26c");
        let t =
            Target::new("https://h/", Some("k"), SendAuth::Sign).unwrap_or_else(|e| panic!("{e}"));
        let url = t.url_for("q=1", 5);
        assert!(!url.contains("token="), "{url}");
        assert!(url.contains("&RequestTime=5&Sign="), "{url}");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(Target::new("hooks.example.com", None, SendAuth::Both).is_err());
        assert!(Target::new("ftp://h/", None, SendAuth::Both).is_err());
        // Without showing the token the URL carries.
        for url in ["hooks.example.com/?token=s3cret", "ftp://h/?token=s3cret"] {
            let e = Target::new(url, None, SendAuth::Both)
                .err()
                .map(|e| format!("{e:#}"));
            assert!(e.as_deref().is_some_and(|e| !e.contains("s3cret")), "{e:?}");
        }
    }

    /// The token as the receiver trims it (one read from a file or the environment ends in
    /// a newline), and never in `Debug` output.
    #[test]
    fn the_token_is_trimmed_and_never_shown() {
        let t = Target::new(
            "https://h/?token=s3cret-1",
            Some("s3cret-2\n"),
            SendAuth::Sign,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let url = t.url_for("q=1", 1_669_872_112);
        assert!(
            url.ends_with(&crate::auth::sign("s3cret-2", "1669872112")),
            "{url}"
        );
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn only_2xx_with_code_0_is_acknowledged() {
        let ok = |status, body: &str| {
            matches!(
                judge(status, body.as_bytes(), Duration::ZERO),
                Attempt::Acknowledged { .. }
            )
        };
        let reason = |status, body: &str| match judge(status, body.as_bytes(), Duration::ZERO) {
            Attempt::Failed(r) => r,
            Attempt::Acknowledged { .. } => String::new(),
        };
        assert!(ok(200, r#"{"ErrorCode":0,"ErrorMessage":"Success"}"#));
        assert!(ok(
            204,
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
        ));
        assert!(!ok(503, r#"{"ErrorCode":0}"#));
        assert!(!ok(200, r#"{"ErrorCode":"0"}"#));
        assert!(!ok(200, ""));
        assert!(!ok(200, "<html>ok</html>"));
        assert_eq!(
            reason(
                503,
                r#"{"ErrorCode":70005,"ErrorMessage":"overloaded, retry later"}"#
            ),
            r#"HTTP 503, ErrorCode 70005 "overloaded, retry later""#
        );
        assert_eq!(
            reason(502, "<html>Bad Gateway</html>"),
            "HTTP 502, no numeric ErrorCode in the answer"
        );
    }
}
