//! The signature of TRTC's room, media and recording callbacks: the `Sign` header carries
//! `base64(HMAC-SHA256(key, body))`, where the key is the one set in the TRTC console (up to
//! 32 letters and digits) and the body is the raw request body, exactly as received (TRTC's
//! bodies have tabs and newlines; verifying a re-serialisation would fail). Tencent's example:
//! trtc.io doc 54912, kept in `tests/fixtures/trtc/sign-example-204.json`.
//!
//! Verification decodes the header and compares the MACs in constant time.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Standard base64 (`+` and `/`), with or without its `=` padding.
const SIGN_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a `Sign` was not accepted. Callhook answers all three the same way (403); the
/// distinction is for logs and `rejected_deliveries.reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the Sign header is missing")]
    Missing,
    #[error("the Sign header is not a base64 HMAC-SHA256 ({0})")]
    Malformed(&'static str),
    #[error("the Sign header does not match the body (check the TRTC callback key)")]
    Mismatch,
}

/// `base64(HMAC-SHA256(key, body))`: the `Sign` header TRTC sends with `body`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    SIGN_BASE64.encode(mac(key, body).finalize().into_bytes())
}

/// Checks a delivery's `Sign` header (its raw value, `None` when absent) against the raw
/// body. Whitespace around the value is ignored; the comparison is constant-time.
pub fn verify(key: &[u8], body: &[u8], sign_header: Option<&[u8]>) -> Result<(), SignError> {
    let given = sign_header.ok_or(SignError::Missing)?.trim_ascii();
    if given.is_empty() {
        return Err(SignError::Missing);
    }
    // 32 bytes encode to 44 characters; anything much longer is not worth decoding.
    if given.len() > 64 {
        return Err(SignError::Malformed("too long"));
    }
    let tag = SIGN_BASE64
        .decode(given)
        .map_err(|_| SignError::Malformed("not base64"))?;
    if tag.len() != 32 {
        return Err(SignError::Malformed("not 32 bytes"));
    }
    mac(key, body)
        .verify_slice(&tag)
        .map_err(|_| SignError::Mismatch)
}

fn mac(key: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail; the
    // fallback keeps the function total without a panic path.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/trtc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Tencent's own example (trtc.io doc 54912, also in doc 39558): key `123654`, the body
    /// with its tabs and newlines, byte for byte.
    const TENCENT_KEY: &[u8] = b"123654";
    const TENCENT_SIGN: &str = "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA=";

    #[test]
    fn tencents_example() {
        let body = fixture("sign-example-204.json");
        assert_eq!(body.len(), 207, "the fixture is the example byte for byte");
        assert!(body.contains(&b'\t') && !body.ends_with(b"\n"));
        assert_eq!(sign(TENCENT_KEY, &body), TENCENT_SIGN);
        assert_eq!(
            verify(TENCENT_KEY, &body, Some(TENCENT_SIGN.as_bytes())),
            Ok(())
        );
    }

    /// A second vector, from a third-party walkthrough of Tencent's doc (blog.ytso.com
    /// 212451): a 104 exit with a string `RoomId` and `EventMsTs`, key `testKey`.
    #[test]
    fn third_party_example() {
        let body = "{\n\t\"EventGroupId\":\t1,\n\t\"EventType\":\t104,\n\t\"CallbackTs\":\t1634025594562,\n\t\"EventInfo\":\t{\n\t\t\"RoomId\":\t\"696969\",\n\t\t\"EventTs\":\t1634025594,\n\t\t\"EventMsTs\":\t1634025594520,\n\t\t\"UserId\":\t\"test10\",\n\t\t\"UniqueId\":\t1634025590938,\n\t\t\"Role\":\t20,\n\t\t\"Reason\":\t1\n\t}\n}";
        let given = b"ykT+66vvx+Q9tyAEAJIyp5D/zOyPlaSNlsU2MB7InuU=";
        assert_eq!(verify(b"testKey", body.as_bytes(), Some(given)), Ok(()));
    }

    #[test]
    fn the_raw_bytes_are_signed_not_the_json() {
        let body = fixture("sign-example-204.json");
        let reserialised = serde_json::to_vec(
            &serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_ne!(body, reserialised);
        assert_eq!(
            verify(TENCENT_KEY, &reserialised, Some(TENCENT_SIGN.as_bytes())),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn tampered_body_wrong_key() {
        let body = fixture("sign-example-204.json");
        let mut tampered = body.clone();
        let at = tampered.iter().position(|&b| b == b'8').unwrap_or_default();
        tampered[at] = b'9';
        assert_eq!(
            verify(TENCENT_KEY, &tampered, Some(TENCENT_SIGN.as_bytes())),
            Err(SignError::Mismatch)
        );
        let mut longer = body.clone();
        longer.push(b'\n');
        assert_eq!(
            verify(TENCENT_KEY, &longer, Some(TENCENT_SIGN.as_bytes())),
            Err(SignError::Mismatch),
            "a trailing newline is part of the body"
        );
        assert_eq!(
            verify(b"123655", &body, Some(TENCENT_SIGN.as_bytes())),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            verify(b"", &body, Some(TENCENT_SIGN.as_bytes())),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn missing_or_garbled_sign() {
        let body = fixture("sign-example-204.json");
        let v = |s: Option<&[u8]>| verify(TENCENT_KEY, &body, s);
        assert_eq!(v(None), Err(SignError::Missing));
        assert_eq!(v(Some(b"")), Err(SignError::Missing));
        assert_eq!(v(Some(b"   ")), Err(SignError::Missing));
        assert_eq!(
            v(Some(b"not base64!")),
            Err(SignError::Malformed("not base64"))
        );
        assert_eq!(
            v(Some(b"a2tvRmVPM09oMlpI")),
            Err(SignError::Malformed("not 32 bytes"))
        );
        assert_eq!(v(Some(&[b'A'; 100])), Err(SignError::Malformed("too long")));
        assert_eq!(
            v(Some(b"kkoFeO3Oh2ZHnjtg8tEAQhtXK16_KI05W3BQff8IvGA=")),
            Err(SignError::Malformed("not base64")),
            "URL-safe base64 is not what TRTC sends"
        );
        // Hex instead of base64 decodes to the wrong length.
        let hex = hex::encode([0u8; 32]);
        assert_eq!(
            v(Some(hex.as_bytes())),
            Err(SignError::Malformed("not 32 bytes"))
        );
    }

    #[test]
    fn whitespace_and_padding_are_tolerated() {
        let body = fixture("sign-example-204.json");
        let v = |s: &str| verify(TENCENT_KEY, &body, Some(s.as_bytes()));
        assert_eq!(v(&format!(" {TENCENT_SIGN}\t")), Ok(()));
        assert_eq!(v(TENCENT_SIGN.trim_end_matches('=')), Ok(()));
        // One character changed: still well-formed, but wrong.
        assert_eq!(
            v(&TENCENT_SIGN.replace("kkoF", "kkoG")),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn sign_and_verify_round_trip() {
        for (key, body) in [
            (&b"k"[..], &b"{}"[..]),
            (b"0123456789abcdefghijABCDEFGHIJxy", b"{\"a\":1}"),
            (&[b'k'; 200][..], b""),
        ] {
            let s = sign(key, body);
            assert_eq!(s.len(), 44);
            assert_eq!(verify(key, body, Some(s.as_bytes())), Ok(()));
        }
    }
}
