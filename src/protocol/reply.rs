//! The reply envelope and callhook's error-code table.
//!
//! Every answer callhook gives is `{"ErrorCode": <int>, "ErrorMessage": "<text>"}`; v4
//! deliveries additionally get `ActionStatus` and `ErrorInfo`. The numbers are documented
//! in docs/src/error-codes.md; 70001 and 70005 reuse Tencent's own meanings ("invalid parameters",
//! "slow down"), the 71xxx range is callhook's.

use serde::Serialize;

/// What happened to a request, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Stored, or a repeat of something already stored.
    Success,
    /// Missing or invalid query parameter (sdkappid, command, contenttype).
    InvalidQuery,
    /// Overloaded: the ingest queue is full. The sender retries.
    Overloaded,
    /// The body is not a JSON object (syntax, encoding).
    InvalidJson,
    /// A JSON object nested deeper than callhook stores, or one the database refused.
    Unstorable,
    /// The sdkappid is not one this receiver is configured for.
    UnknownApp,
    /// The app requires a token or a signature and the request's was missing or wrong.
    AuthFailed,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    /// The database could not take the event; nothing was acknowledged.
    DatabaseUnavailable,
    /// The request took longer than the configured request timeout.
    Timeout,
    /// The service is shutting down and no longer takes new events.
    ShuttingDown,
    /// A bug: a handler panicked.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        Self::Success,
        Self::InvalidQuery,
        Self::Overloaded,
        Self::InvalidJson,
        Self::Unstorable,
        Self::UnknownApp,
        Self::AuthFailed,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::BodyTooLarge,
        Self::DatabaseUnavailable,
        Self::Timeout,
        Self::ShuttingDown,
        Self::Internal,
    ];

    /// The number in `ErrorCode`.
    pub fn code(self) -> u32 {
        match self {
            Self::Success => 0,
            Self::InvalidQuery => 70001,
            Self::Overloaded => 70005,
            Self::InvalidJson => 71001,
            Self::Unstorable => 71003,
            Self::UnknownApp => 71101,
            Self::AuthFailed => 71102,
            Self::NotFound => 71201,
            Self::MethodNotAllowed => 71202,
            Self::BodyTooLarge => 71203,
            Self::DatabaseUnavailable => 71301,
            Self::Timeout => 71302,
            Self::ShuttingDown => 71303,
            Self::Internal => 71500,
        }
    }

    /// The HTTP status that goes with it.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Success => 200,
            Self::InvalidQuery | Self::InvalidJson | Self::Unstorable => 400,
            Self::UnknownApp | Self::AuthFailed => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTooLarge => 413,
            Self::Overloaded | Self::DatabaseUnavailable | Self::Timeout | Self::ShuttingDown => {
                503
            }
            Self::Internal => 500,
        }
    }

    /// A short label for metrics and logs (low cardinality).
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::InvalidQuery => "invalid_query",
            Self::Overloaded => "overloaded",
            Self::InvalidJson => "invalid_json",
            Self::Unstorable => "unstorable",
            Self::UnknownApp => "unknown_app",
            Self::AuthFailed => "auth_failed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }

    /// The default message, when there is nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::InvalidQuery => "invalid query parameters",
            Self::Overloaded => "overloaded, retry later",
            Self::InvalidJson => "body is not a valid JSON object",
            Self::Unstorable => "body cannot be stored unchanged",
            Self::UnknownApp => "unknown sdkappid",
            Self::AuthFailed => "authentication failed",
            Self::NotFound => "no such route",
            Self::MethodNotAllowed => "method not allowed",
            Self::BodyTooLarge => "body too large",
            Self::DatabaseUnavailable => "database unavailable, retry later",
            Self::Timeout => "request timed out, retry later",
            Self::ShuttingDown => "shutting down, retry later",
            Self::Internal => "internal error",
        }
    }

    /// Whether the HTTP request was refused in a way that the sender should retry.
    pub fn is_retryable(self) -> bool {
        self.http_status() == 503
    }
}

/// Which reply shape the sender expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplyStyle {
    /// `{"ErrorCode", "ErrorMessage"}` (status and event families, and every non-callback route).
    #[default]
    Plain,
    /// The v4 shape: `ActionStatus` and `ErrorInfo` as well.
    V4,
}

#[derive(Serialize)]
struct Plain<'a> {
    #[serde(rename = "ErrorCode")]
    code: u32,
    #[serde(rename = "ErrorMessage")]
    message: &'a str,
}

#[derive(Serialize)]
struct V4<'a> {
    #[serde(rename = "ActionStatus")]
    action_status: &'static str,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "ErrorCode")]
    code: u32,
    #[serde(rename = "ErrorMessage")]
    message: &'a str,
}

/// The three acknowledgements, as ready-made bodies (the success path allocates nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    Stored,
    Duplicate,
    Journaled,
}

impl Ack {
    pub const ALL: [Ack; 3] = [Ack::Stored, Ack::Duplicate, Ack::Journaled];

    pub fn message(self) -> &'static str {
        match self {
            Self::Stored => "Success",
            Self::Duplicate => "Success (duplicate delivery, already stored)",
            Self::Journaled => {
                "Success (journaled: the database is unavailable; the event is kept and will be stored when it returns)"
            }
        }
    }

    /// `envelope(style, ErrorCode::Success, self.message())`, precomputed.
    pub fn body(self, style: ReplyStyle) -> &'static [u8] {
        match (style, self) {
            (ReplyStyle::Plain, Self::Stored) => br#"{"ErrorCode":0,"ErrorMessage":"Success"}"#,
            (ReplyStyle::Plain, Self::Duplicate) => {
                br#"{"ErrorCode":0,"ErrorMessage":"Success (duplicate delivery, already stored)"}"#
            }
            (ReplyStyle::Plain, Self::Journaled) => {
                br#"{"ErrorCode":0,"ErrorMessage":"Success (journaled: the database is unavailable; the event is kept and will be stored when it returns)"}"#
            }
            (ReplyStyle::V4, Self::Stored) => {
                br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success"}"#
            }
            (ReplyStyle::V4, Self::Duplicate) => {
                br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success (duplicate delivery, already stored)"}"#
            }
            (ReplyStyle::V4, Self::Journaled) => {
                br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success (journaled: the database is unavailable; the event is kept and will be stored when it returns)"}"#
            }
        }
    }
}

/// Serialises the envelope.
pub fn envelope(style: ReplyStyle, code: ErrorCode, message: &str) -> Vec<u8> {
    let n = code.code();
    let result = match style {
        ReplyStyle::Plain => serde_json::to_vec(&Plain { code: n, message }),
        ReplyStyle::V4 => serde_json::to_vec(&V4 {
            action_status: if n == 0 { "OK" } else { "FAIL" },
            error_info: if n == 0 { "" } else { message },
            code: n,
            message,
        }),
    };
    // Serialising two integers and two strings cannot fail; keep a valid answer anyway.
    result.unwrap_or_else(|_| br#"{"ErrorCode":71500,"ErrorMessage":"internal error"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_match() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(c == ErrorCode::Success, c.code() == 0);
            assert_eq!(c == ErrorCode::Success, c.http_status() == 200);
        }
    }

    #[test]
    fn precomputed_acknowledgements_match_the_envelope() {
        for ack in Ack::ALL {
            for style in [ReplyStyle::Plain, ReplyStyle::V4] {
                assert_eq!(
                    ack.body(style),
                    envelope(style, ErrorCode::Success, ack.message())
                );
            }
        }
    }

    #[test]
    fn envelopes() {
        assert_eq!(
            envelope(ReplyStyle::Plain, ErrorCode::Success, "Success"),
            br#"{"ErrorCode":0,"ErrorMessage":"Success"}"#
        );
        assert_eq!(
            envelope(ReplyStyle::V4, ErrorCode::Success, "Success"),
            br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ErrorMessage":"Success"}"#
        );
        let v4_fail = envelope(
            ReplyStyle::V4,
            ErrorCode::InvalidJson,
            "CallId: missing \"x\"",
        );
        let v: serde_json::Value = serde_json::from_slice(&v4_fail).unwrap_or_default();
        assert_eq!(v["ActionStatus"], "FAIL");
        assert_eq!(v["ErrorCode"], 71001);
        assert_eq!(v["ErrorInfo"], "CallId: missing \"x\"");
    }
}
