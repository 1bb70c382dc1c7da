//! Standard Webhooks (standardwebhooks.com, spec 1.0.0), the scheme forwarded messages are
//! signed with, as pure functions: the `whsec_` secret, the signature, and its check.
//!
//! A message carries three headers: `webhook-id` (the message's identity, the same on every
//! attempt), `webhook-timestamp` (the attempt's time, Unix seconds) and `webhook-signature`
//! (`v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's
//! decoded bytes; several space-separated during a key rotation). The body is signed
//! exactly as sent, byte for byte.
//!
//! `forward` signs with [`SigningKey::sign`]; `callhook listen` checks with
//! [`SigningKey::verify`]. The tests hold both to the `standardwebhooks` package's own
//! output (the spec's reference implementation), not only to each other.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The spec's bounds on a symmetric secret's decoded bytes: 24 (192 bits) to 64 (512).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// How far a message's timestamp may be from now when it is checked (the reference
/// libraries' tolerance).
pub const TOLERANCE_SECS: i64 = 5 * 60;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Standard base64, padded or not (the reference libraries accept both in a secret).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded `whsec_` secret. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(REDACTED)")
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    #[error("webhook-timestamp is {0} s from now, more than the {TOLERANCE_SECS} s allowed")]
    Stale(i64),
    #[error("no signature in webhook-signature matches (check the secret)")]
    Mismatch,
}

impl SigningKey {
    /// Reads a secret as Standard Webhooks serialises it: `whsec_` and the base64 of 24 to
    /// 64 random bytes. Whitespace around it is dropped. The error never repeats the value.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("a secret must start with {SECRET_PREFIX} (whsec_ followed by base64)")
        })?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
        if !SECRET_BYTES.contains(&bytes.len()) {
            return Err(format!(
                "the secret holds {} bytes; Standard Webhooks wants {} to {} (e.g. whsec_ + base64 of 32 random bytes: `openssl rand -base64 32`)",
                bytes.len(),
                SECRET_BYTES.start(),
                SECRET_BYTES.end()
            ));
        }
        Ok(Self(bytes))
    }

    /// A key from raw bytes (tests, and generated secrets).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The secret as it is written down: `whsec_` + base64.
    pub fn to_secret_string(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: the `webhook-signature`
    /// of one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            BASE64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Checks a message as a receiver must: all three headers present, the timestamp
    /// within [`TOLERANCE_SECS`] of `now` (Unix seconds), and one of the `v1` signatures
    /// in the space-separated list matching the body exactly as received (compared in
    /// constant time).
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let id = id.ok_or(VerifyError::Missing(HEADER_ID))?;
        let raw = timestamp.ok_or(VerifyError::Missing(HEADER_TIMESTAMP))?;
        let signatures = signatures.ok_or(VerifyError::Missing(HEADER_SIGNATURE))?;
        let timestamp: i64 = raw
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp(raw.chars().take(32).collect()))?;
        let skew = now.saturating_sub(timestamp);
        if skew.abs() > TOLERANCE_SECS {
            return Err(VerifyError::Stale(skew));
        }
        let matches = signatures.split(' ').any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b64| BASE64.decode(b64.trim()).ok())
                .is_some_and(|tag| self.mac(id, timestamp, body).verify_slice(&tag).is_ok())
        });
        if matches {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; the fallback keeps the
        // function total without a panic path.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the reference libraries (svix, standardwebhooks) test with; the
    /// expected value was computed with the `standardwebhooks` Python package 1.3.0.
    #[test]
    fn signs_as_the_reference_implementation_does() -> Result<(), String> {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

        // A 32-byte key (0, 1, …, 31) and a message in callhook's shape, signed by the
        // same package.
        let key = SigningKey::from_bytes(&(0u8..32).collect::<Vec<_>>());
        assert_eq!(
            key.to_secret_string(),
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        );
        let body = br#"{"type":"call.status.call_end","timestamp":"2024-01-10T03:01:13.000Z","data":{"id":1}}"#;
        assert_eq!(
            key.sign("msg_00112233445566778899aabbccddeeff", 1_704_856_873, body),
            "v1,ZN5i2DDyxPlLYWDx0z7RJJxuUY8ADPF/zbjfy8YLcOM="
        );
        Ok(())
    }

    #[test]
    fn verifies_what_it_signs_and_nothing_else() -> Result<(), String> {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let other = SigningKey::from_bytes(&[7; 32]);
        let (id, ts, body) = ("msg_1", 1_700_000_000, b"{\"a\":1}".as_slice());
        let sig = key.sign(id, ts, body);
        let check = |sigs: &str, body: &[u8], now: i64| {
            key.verify(Some(id), Some(&ts.to_string()), Some(sigs), body, now)
        };
        assert_eq!(check(&sig, body, ts), Ok(()));
        // Several signatures (a key rotation): any one that matches.
        let rotated = format!("{} {sig}", other.sign(id, ts, body));
        assert_eq!(check(&rotated, body, ts + 299), Ok(()));
        assert_eq!(check(&sig, b"{\"a\": 1}", ts), Err(VerifyError::Mismatch));
        assert_eq!(
            check(&other.sign(id, ts, body), body, ts),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(check(&sig, body, ts + 301), Err(VerifyError::Stale(301)));
        assert_eq!(check(&sig, body, ts - 301), Err(VerifyError::Stale(-301)));
        assert_eq!(
            check(&sig.replace("v1,", "v1a,"), body, ts),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            key.verify(None, Some("1"), Some(&sig), body, ts),
            Err(VerifyError::Missing(HEADER_ID))
        );
        assert!(matches!(
            key.verify(Some(id), Some("soon"), Some(&sig), body, ts),
            Err(VerifyError::BadTimestamp(_))
        ));
        Ok(())
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
            "whsec_",
        ] {
            let e = SigningKey::parse(bad).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad}");
            assert!(
                !e.contains("c2hvcnQ"),
                "the error never repeats the secret: {e}"
            );
        }
        let long = format!("whsec_{}", BASE64.encode([1u8; 65]));
        assert!(SigningKey::parse(&long).is_err());
        let padded = " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n";
        assert!(SigningKey::parse(padded).is_ok(), "whitespace is dropped");
        let shown = format!("{:?}", SigningKey::from_bytes(&[1; 32]));
        assert_eq!(shown, "SigningKey(REDACTED)");
    }
}
