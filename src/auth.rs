//! Per-app authentication. None of Tencent's call callbacks is signed, so an app may set a
//! token and require either `token=<token>` in the query (a secret in the registered URL)
//! or Chat-style signing: `Sign` = lower-case hex SHA-256 of the token immediately followed
//! by the decimal `RequestTime`, with `RequestTime` (Unix seconds) within a window of now.
//! Comparisons are constant-time.

pub mod trtc;

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AppSettings;
use crate::protocol::{CallbackQuery, ErrorCode, Rejection};

/// `hex(sha256(token + request_time))`.
pub fn sign(token: &str, request_time: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.as_bytes());
    hex::encode(h.finalize())
}

/// Checks a delivery's credentials against its app. `now` is Unix seconds.
pub fn authenticate(
    app: &AppSettings,
    q: &CallbackQuery,
    now: i64,
    window: Duration,
) -> Result<(), Rejection> {
    let Some(token) = &app.token else {
        return Ok(());
    };
    let fail = |why: &str| Err(Rejection::new(ErrorCode::AuthFailed, why));
    if let Some(given) = &q.token {
        return if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            Ok(())
        } else {
            fail("token does not match")
        };
    }
    match (&q.sign, &q.requesttime) {
        (Some(given), Some(rt)) => {
            let Ok(t) = rt.trim().parse::<i64>() else {
                return fail("RequestTime is not a Unix timestamp");
            };
            if t.abs_diff(now) > window.as_secs() {
                return fail(
                    "RequestTime is outside the allowed window (check the sender's clock)",
                );
            }
            let expected = sign(token.expose(), rt);
            if bool::from(
                given
                    .to_ascii_lowercase()
                    .as_bytes()
                    .ct_eq(expected.as_bytes()),
            ) {
                Ok(())
            } else {
                fail("Sign does not match")
            }
        }
        _ => fail("this app requires token=… or Sign and RequestTime in the query"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn app(token: Option<&str>) -> AppSettings {
        AppSettings {
            token: token.map(Secret::new),
            ..AppSettings::new(1)
        }
    }

    fn q(s: &str) -> CallbackQuery {
        CallbackQuery::parse(s)
    }

    const W: Duration = Duration::from_secs(300);

    #[test]
    fn tencent_test_vector() {
        assert_eq!(
            sign("xxxxyyyy", "1669872112"),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
    }

    #[test]
    fn no_token_means_no_check() {
        assert!(authenticate(&app(None), &q(""), 0, W).is_ok());
    }

    #[test]
    fn token_in_query() {
        let a = app(Some("s3cret"));
        assert!(authenticate(&a, &q("token=s3cret"), 0, W).is_ok());
        assert!(authenticate(&a, &q("token=s3cre"), 0, W).is_err());
        assert!(authenticate(&a, &q("token="), 0, W).is_err());
        assert!(authenticate(&a, &q(""), 0, W).is_err());
    }

    #[test]
    fn signature_and_window() {
        let a = app(Some("xxxxyyyy"));
        let good = "Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061&RequestTime=1669872112";
        assert!(authenticate(&a, &q(good), 1_669_872_112, W).is_ok());
        assert!(
            authenticate(
                &a,
                &q(&good
                    .to_uppercase()
                    .replace("SIGN", "Sign")
                    .replace("REQUESTTIME", "RequestTime")),
                1_669_872_112,
                W
            )
            .is_ok()
        );
        assert!(
            authenticate(&a, &q(good), 1_669_872_112 + 301, W).is_err(),
            "stale"
        );
        assert!(
            authenticate(&a, &q(good), 1_669_872_112 - 301, W).is_err(),
            "from the future"
        );
        let wrong = good.replace("17773", "17774");
        assert!(authenticate(&a, &q(&wrong), 1_669_872_112, W).is_err());
        assert!(authenticate(&a, &q("Sign=abc"), 1_669_872_112, W).is_err());
    }
}
