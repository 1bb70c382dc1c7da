//! UserSig: the signature Tencent's REST APIs take in the `usersig` query parameter, as
//! Tencent's `tls-sig-api-v2` libraries make it (PyPI and npm `tls-sig-api-v2`).
//!
//! ```text
//! content = "TLS.identifier:{id}\nTLS.sdkappid:{app}\nTLS.time:{t}\nTLS.expire:{secs}\n"
//! TLS.sig = base64(HMAC-SHA256(secret key, content))
//! UserSig = base64url*(zlib({"TLS.ver": "2.0", "TLS.identifier": …, "TLS.sdkappid": …,
//!                            "TLS.expire": …, "TLS.time": …, "TLS.sig": …}))
//! ```
//!
//! where base64url* is standard base64 with `+` → `*`, `/` → `-`, `=` → `_`. The JSON is
//! written as Python's `json.dumps` writes it (`", "` and `": "` separators), so the
//! decompressed text is byte for byte the reference library's; the compressed bytes may
//! differ (another deflate implementation), which Tencent does not care about: it inflates.
//! The unit tests pin signatures made with the reference library for fixed inputs.

use std::io::{Read as _, Write as _};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac as _};

type HmacSha256 = Hmac<sha2::Sha256>;

/// What a UserSig is made from. The secret key is borrowed and never kept.
#[derive(Clone, Copy)]
pub struct UserSigInput<'a> {
    pub sdkappid: i64,
    pub identifier: &'a str,
    /// When it was issued, Unix seconds.
    pub time: i64,
    /// How long it is valid from `time`, in seconds.
    pub expire: i64,
}

/// The base64 of HMAC-SHA256(key, content): the `TLS.sig` member.
pub fn signature(key: &str, input: &UserSigInput<'_>) -> String {
    let content = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        input.identifier, input.sdkappid, input.time, input.expire
    );
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(content.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The JSON document inside a UserSig, as the reference library writes it.
fn document(input: &UserSigInput<'_>, sig: &str) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    format!(
        "{{\"TLS.ver\": \"2.0\", \"TLS.identifier\": {}, \"TLS.sdkappid\": {}, \"TLS.expire\": {}, \"TLS.time\": {}, \"TLS.sig\": {}}}",
        s(input.identifier),
        input.sdkappid,
        input.expire,
        input.time,
        s(sig)
    )
}

/// A UserSig for the administrator `input.identifier` of app `input.sdkappid`.
pub fn user_sig(key: &str, input: &UserSigInput<'_>) -> String {
    let doc = document(input, &signature(key, input));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let compressed = z
        .write_all(doc.as_bytes())
        .and_then(|()| z.finish())
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .encode(compressed)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// The JSON text inside a UserSig: Tencent's base64 alphabet back to the standard one,
/// then zlib (at most 64 KiB of it).
fn document_text(sig: &str) -> Option<String> {
    let standard: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(standard)
        .ok()?;
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(bytes.as_slice())
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Why a UserSig is not accepted (what `callhook send --record-api` answers, as Tencent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the UserSig cannot be decoded")]
    Undecodable,
    #[error("the UserSig is not this app's and identifier's, or not signed with its key")]
    Mismatch,
    #[error("the UserSig has expired")]
    Expired,
}

/// Checks a UserSig as Tencent does: it decodes, it names `identifier` and `sdkappid`,
/// its `TLS.sig` is HMAC-SHA256(key) over its lines, and it has not expired at `now`.
pub fn verify(
    key: &str,
    sdkappid: i64,
    identifier: &str,
    sig: &str,
    now: i64,
) -> Result<(), SigError> {
    let text = document_text(sig).ok_or(SigError::Undecodable)?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|_| SigError::Undecodable)?;
    let int = |k: &str| doc[k].as_i64().ok_or(SigError::Undecodable);
    let (time, expire) = (int("TLS.time")?, int("TLS.expire")?);
    let input = UserSigInput {
        sdkappid,
        identifier,
        time,
        expire,
    };
    let same = doc["TLS.identifier"].as_str() == Some(identifier)
        && doc["TLS.sdkappid"].as_i64() == Some(sdkappid)
        && doc["TLS.sig"].as_str() == Some(signature(key, &input).as_str());
    if !same {
        return Err(SigError::Mismatch);
    }
    if time.saturating_add(expire) < now {
        return Err(SigError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signatures made with Tencent's reference library, `pip install tls-sig-api-v2`
    /// (version 1.1), with `time.time` fixed:
    ///
    /// ```python
    /// import time, TLSSigAPIv2
    /// time.time = lambda: T
    /// TLSSigAPIv2.TLSSigAPIv2(SDKAPPID, KEY).gen_sig(IDENTIFIER, EXPIRE)
    /// ```
    const VECTORS: [(i64, &str, &str, i64, i64, &str); 4] = [
        (
            1_400_000_000,
            "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e",
            "xiaojun",
            1_700_000_000,
            15_552_000,
            "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__",
        ),
        (
            1_400_000_001,
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "administrator",
            1_765_000_000,
            3600,
            "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-Myi0uKEkvyi2BKilOyEwsKMlOACgxNDCDAECqXWlGQWZQKlDE2MzCAipVk5oJEDM3NTCGKYeZkpoPs0HYPK-JzjQpKrCrOKc-Qjiz0STJ0KkjULgoO83OMCArwq0ityPQsjDINzLZVqgUAIMY1ww__",
        ),
        (
            1_600_012_345,
            "callhook-test-secret-key",
            "admin_01",
            1_765_432_100,
            300,
            "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-PiDQxhssUp2YkFBZkpQDlDMwMDA0MjYxNTqFxqRUFmUSpQxtjAACpUkpkLEjA0NzM1MTYyhIsXZ6aDTNd2TIp0LDYzcsmrMi2x8M4NKM5xLUz1djcrC85yNQ43tnQuCioJCCj3zQ*0VaoFADHdMj0_",
        ),
        (
            20_000_001,
            "k",
            "a",
            0,
            1,
            "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkEmHCxSnZiQUFmSlAQSMDMDCEyqRWFGQWpQLFYQIlmbkgrgFMZ2Y6yKRQY3OjqIgMR4uAkooM-bC0SkcvQ3dXc23tqMSM8KhMA0O-4tSQivxS-ypHW6VaAIdTLOs_",
        ),
    ];

    /// The JSON inside a UserSig.
    fn inflate(sig: &str) -> String {
        document_text(sig).unwrap_or_else(|| panic!("cannot decode {sig}"))
    }

    #[test]
    fn the_reference_library_signs_the_same_document() {
        for (sdkappid, key, identifier, time, expire, reference) in VECTORS {
            let input = UserSigInput {
                sdkappid,
                identifier,
                time,
                expire,
            };
            let ours = user_sig(key, &input);
            // The document inside is the reference's, byte for byte (signature included).
            assert_eq!(inflate(&ours), inflate(reference), "{identifier}");
            // Only the URL-safe alphabet is used, as in the reference.
            assert!(
                ours.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c)),
                "{ours}"
            );
        }
    }

    #[test]
    fn the_signature_member_is_pinned() {
        // The TLS.sig members of the first and last vectors, as the reference printed them.
        let sig = |i: usize| {
            let (sdkappid, key, identifier, time, expire, _) = VECTORS[i];
            signature(
                key,
                &UserSigInput {
                    sdkappid,
                    identifier,
                    time,
                    expire,
                },
            )
        };
        assert_eq!(sig(0), "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=");
        assert_eq!(sig(1), "+GVrNEZRazslwh+YqLb1Bpa+rSVNAXRPNxexiIqZ5Qk=");
        assert_eq!(sig(3), "U372ZXhA8Ptxh/VfyAJ1GE7++ZahWZi01NseTxouOzA=");
    }

    #[test]
    fn the_reference_signatures_verify_until_they_expire() {
        for (sdkappid, key, identifier, time, expire, reference) in VECTORS {
            assert_eq!(
                verify(key, sdkappid, identifier, reference, time + expire),
                Ok(())
            );
            assert_eq!(
                verify(key, sdkappid, identifier, reference, time + expire + 1),
                Err(SigError::Expired)
            );
            assert_eq!(
                verify("another key", sdkappid, identifier, reference, time),
                Err(SigError::Mismatch)
            );
            assert_eq!(
                verify(key, sdkappid + 1, identifier, reference, time),
                Err(SigError::Mismatch)
            );
            assert_eq!(
                verify(key, sdkappid, "someone", reference, time),
                Err(SigError::Mismatch)
            );
        }
        assert_eq!(
            verify("k", 1, "a", "not*a-sig", 0),
            Err(SigError::Undecodable)
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let base = UserSigInput {
            sdkappid: 1_400_000_001,
            identifier: "administrator",
            time: 1_765_000_000,
            expire: 3600,
        };
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let s = signature(key, &base);
        for other in [
            UserSigInput {
                sdkappid: 1_400_000_002,
                ..base
            },
            UserSigInput {
                identifier: "admin",
                ..base
            },
            UserSigInput {
                time: base.time + 1,
                ..base
            },
            UserSigInput {
                expire: 3601,
                ..base
            },
        ] {
            assert_ne!(signature(key, &other), s);
        }
        assert_ne!(signature("another key", &base), s);
    }
}
