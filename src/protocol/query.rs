//! The query string Tencent appends to the registered URL.
//!
//! Names are matched case-insensitively: the status and event families send `sdkappid`,
//! `command`, `contenttype`, `clientip`, `optplatform`; the v4 family sends `SdkAppid`,
//! `CallbackCommand`, `ClientIP`, `OptPlatform`. A secret `token` may be part of the
//! registered URL, and Chat-style signing adds `Sign` and `RequestTime`.

use super::Rejection;
use super::reply::ErrorCode;

/// The parameters callhook reads; everything else in the query is ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQuery {
    pub sdkappid: Option<String>,
    pub command: Option<String>,
    /// The command came as `CallbackCommand` (the v4 family's spelling).
    pub v4_style: bool,
    pub contenttype: Option<String>,
    pub clientip: Option<String>,
    pub optplatform: Option<String>,
    pub token: Option<String>,
    pub sign: Option<String>,
    pub requesttime: Option<String>,
}

impl CallbackQuery {
    /// Parses a raw query string. Never fails: invalid percent-encoding is kept as text
    /// and validated where the value is used. The first occurrence of a name wins.
    ///
    /// Values are decoded leniently and always storable: invalid UTF-8 becomes U+FFFD
    /// (as `form_urlencoded` decodes it), and so does NUL (`%00`), which no PostgreSQL text
    /// column can hold. `command`, `clientip` and `optplatform` reach the database.
    pub fn parse(raw: &str) -> Self {
        let mut q = Self::default();
        let mut callback_command = None;
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            let slot = match name.to_ascii_lowercase().as_str() {
                "sdkappid" => &mut q.sdkappid,
                "command" => &mut q.command,
                "callbackcommand" => &mut callback_command,
                "contenttype" => &mut q.contenttype,
                "clientip" => &mut q.clientip,
                "optplatform" => &mut q.optplatform,
                "token" => &mut q.token,
                "sign" => &mut q.sign,
                "requesttime" => &mut q.requesttime,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(if value.contains('\0') {
                    value.replace('\0', "\u{FFFD}")
                } else {
                    value.into_owned()
                });
            }
        }
        if callback_command.is_some() {
            q.v4_style = true;
            q.command = callback_command;
        }
        q
    }

    /// The SDKAppID as a number.
    pub fn sdkappid(&self) -> Result<i64, Rejection> {
        let raw = self.sdkappid.as_deref().map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Err(Rejection::new(
                ErrorCode::InvalidQuery,
                "sdkappid is missing",
            ));
        }
        parse_sdkappid(raw).ok_or_else(|| {
            Rejection::new(
                ErrorCode::InvalidQuery,
                format!(
                    "sdkappid is not a positive integer: {:?}",
                    truncate(raw, 40)
                ),
            )
        })
    }
}

/// An SDKAppID is a positive integer (Tencent's are ten digits).
pub fn parse_sdkappid(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|v| *v > 0)
}

/// The query string with the values of secret parameters (`token`, `sign`) replaced, for
/// logs and for `rejected_deliveries.query`.
pub fn redact(raw: &str) -> String {
    raw.split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(n, _)| n.to_ascii_lowercase())
                .unwrap_or_default();
            if decoded == "token" || decoded == "sign" {
                format!("{name}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL with its query's secret parameters redacted as [`redact`] does (the URL of
/// `callhook send`, which may carry `?token=…`), for messages and `Debug` output.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redact(query)),
        None => url.to_owned(),
    }
}

/// The query string without the parameters that change from one attempt of a delivery
/// to the next (`Sign`, `RequestTime`) or are secret (`token`): what identifies a refused
/// delivery across the sender's retries.
pub fn stable_query(raw: &str) -> String {
    raw.split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(n, _)| n.to_ascii_lowercase())
                .unwrap_or_default();
            !matches!(decoded.as_str(), "token" | "sign" | "requesttime")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// At most `max` characters of `s`.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        let q = CallbackQuery::parse(
            "SdkAppid=1400000001&CallbackCommand=Call.CallbackAfterEndCall&contenttype=json&ClientIP=1.2.3.4&OptPlatform=Android",
        );
        assert_eq!(q.sdkappid.as_deref(), Some("1400000001"));
        assert_eq!(q.command.as_deref(), Some("Call.CallbackAfterEndCall"));
        assert!(q.v4_style);
        assert_eq!(q.clientip.as_deref(), Some("1.2.3.4"));
        assert_eq!(q.optplatform.as_deref(), Some("Android"));
        assert_eq!(q.sdkappid(), Ok(1_400_000_001));
    }

    #[test]
    fn callback_command_wins_over_command() {
        let q =
            CallbackQuery::parse("command=call_end&CallbackCommand=Call.CallbackAfterStartCall");
        assert_eq!(q.command.as_deref(), Some("Call.CallbackAfterStartCall"));
        assert!(q.v4_style);
        let q = CallbackQuery::parse("command=call_end&command=reject");
        assert_eq!(q.command.as_deref(), Some("call_end"));
        assert!(!q.v4_style);
    }

    #[test]
    fn values_are_storable_text() {
        let q = CallbackQuery::parse("command=call_end%00&clientip=%FF1&OptPlatform=i%00OS");
        assert_eq!(q.command.as_deref(), Some("call_end\u{FFFD}"));
        assert_eq!(q.clientip.as_deref(), Some("\u{FFFD}1"));
        assert_eq!(q.optplatform.as_deref(), Some("i\u{FFFD}OS"));
    }

    #[test]
    fn bad_sdkappids() {
        for raw in [
            "",
            "sdkappid=",
            "sdkappid=abc",
            "sdkappid=-5",
            "sdkappid=0",
            "sdkappid=99999999999999999999",
        ] {
            let err = CallbackQuery::parse(raw).sdkappid().err();
            assert_eq!(err.map(|e| e.code), Some(ErrorCode::InvalidQuery), "{raw}");
        }
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(
            redact("sdkappid=1&token=s3cret&Sign=abc&RequestTime=5"),
            "sdkappid=1&token=REDACTED&Sign=REDACTED&RequestTime=5"
        );
        assert_eq!(redact("TOKEN=x"), "TOKEN=REDACTED");
        assert_eq!(redact(""), "");
    }
}
