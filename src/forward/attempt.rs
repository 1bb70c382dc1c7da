//! One attempt: the signed `POST` of a message to its destination, and what came of it.
//!
//! Success is a 2xx answer within the destination's timeout, and nothing else: a redirect
//! is not followed (Standard Webhooks: update the URL instead), so it fails like any other
//! status. `410 Gone` means the receiver will never take the message: the entry is dead
//! at once. A `Retry-After` of a few seconds to a day, on a failed answer, postpones the
//! next attempt beyond the schedule's.

use std::time::Duration;

use crate::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningKey};

/// How an attempt ended (`callhook_forward_attempts_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Another status.
    Refused,
    /// `410 Gone`: never again.
    Gone,
    /// No complete answer within the timeout.
    Timeout,
    /// No connection, or it broke (refused, reset, DNS, TLS).
    Unreachable,
    /// The entry's event is no longer stored: nothing to send.
    Missing,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Refused => "refused",
            Self::Gone => "gone",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Missing => "missing",
        }
    }

    /// Whether it says the destination itself is in trouble (down, overloaded, slow)
    /// rather than that one message was refused: what makes a worker back off.
    pub fn is_trouble(self, status: Option<u16>) -> bool {
        match self {
            Self::Timeout | Self::Unreachable => true,
            Self::Refused => status.is_none_or(|s| s >= 500 || s == 429),
            Self::Delivered | Self::Gone | Self::Missing => false,
        }
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// Why it failed (capped), for `last_error`.
    pub error: Option<String>,
    /// A failed answer's `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    pub fn missing() -> Self {
        Self {
            outcome: Outcome::Missing,
            status: None,
            error: Some("the event is no longer stored".into()),
            retry_after: None,
        }
    }
}

/// The most of an answer's body (or of an error) kept in `last_error`.
const ERROR_CAP: usize = 300;
/// The most of an answer's body read: a receiver that streams a large body costs no
/// more than this per attempt in flight.
const READ_CAP: usize = 4096;

/// The first `cap` bytes of an answer's body (or fewer: what arrived before an error).
async fn head(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Posts `body` as message `id`, signed with `key` at the attempt's time. The client
/// carries the destination's timeout.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &SigningKey,
    id: &str,
    body: Vec<u8>,
) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = key.sign(id, timestamp, &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ID, id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_SIGNATURE, signature)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let status = response.status();
    if status.is_success() {
        // Read a short answer, so the connection is reused; a long one is dropped with
        // its connection rather than held in memory.
        let _ = head(response, READ_CAP).await;
        return Attempt {
            outcome: Outcome::Delivered,
            status: Some(status.as_u16()),
            error: None,
            retry_after: None,
        };
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .map(Duration::from_secs);
    let text = String::from_utf8_lossy(&head(response, READ_CAP).await).into_owned();
    let mut error = format!("HTTP {status}");
    if !text.trim().is_empty() {
        error.push_str(": ");
        error.push_str(crate::protocol::query::truncate(text.trim(), ERROR_CAP));
    }
    Attempt {
        outcome: if status == reqwest::StatusCode::GONE {
            Outcome::Gone
        } else {
            Outcome::Refused
        },
        status: Some(status.as_u16()),
        error: Some(error),
        retry_after,
    }
}

fn failed(e: &reqwest::Error) -> Attempt {
    // The innermost cause says most ("connection refused", "connection reset by peer").
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let (outcome, what) = if e.is_timeout() {
        (Outcome::Timeout, "timed out".to_owned())
    } else {
        (Outcome::Unreachable, format!("{cause}"))
    };
    Attempt {
        outcome,
        status: None,
        error: Some(crate::protocol::query::truncate(&what, ERROR_CAP).to_owned()),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_are_the_destinations_trouble() {
        use Outcome::*;
        assert!(Timeout.is_trouble(None) && Unreachable.is_trouble(None));
        assert!(Refused.is_trouble(Some(503)) && Refused.is_trouble(Some(429)));
        assert!(!Refused.is_trouble(Some(400)) && !Refused.is_trouble(Some(302)));
        assert!(!Gone.is_trouble(Some(410)) && !Delivered.is_trouble(Some(200)));
    }
}
