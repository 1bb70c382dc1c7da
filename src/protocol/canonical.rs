//! A delivery's content in canonical form, for deciding whether two deliveries are the
//! same delivery (a retry) or two different ones. Whitespace, the order of an object's
//! members and the spelling of string escapes do not matter; everything else does.
//!
//! The canonical form: objects with their members sorted by key (stably, so a key given
//! twice keeps both values, in order), arrays in order, strings re-encoded from their
//! decoded value, numbers and literals as written, no whitespace. Below
//! [`MAX_DEPTH`] levels of nesting a value counts as written (no real callback nests that
//! deep, and the walk stays bounded). Only its SHA-256 digest is kept.

use std::borrow::Cow;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// How deep the canonical form reaches into nested objects and arrays.
pub const MAX_DEPTH: usize = 32;

/// The SHA-256 digest of a JSON document's canonical form.
pub fn digest(text: &str) -> Result<[u8; 32], serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(text)?;
    let mut h = Sha256::new();
    write(&mut h, raw, 0)?;
    Ok(h.finalize().into())
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            out.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

fn write(h: &mut Sha256, raw: &RawValue, depth: usize) -> Result<(), serde_json::Error> {
    let text = raw.get();
    if depth >= MAX_DEPTH {
        h.update(text.as_bytes());
        return Ok(());
    }
    match text.as_bytes().first() {
        Some(b'{') => {
            let mut de = serde_json::Deserializer::from_str(text);
            let mut members = (&mut de).deserialize_map(Members)?;
            members.sort_by(|a, b| a.0.cmp(&b.0));
            h.update(b"{");
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_string(h, key);
                h.update(b":");
                write(h, value, depth + 1)?;
            }
            h.update(b"}");
        }
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(text)?;
            h.update(b"[");
            for (i, value) in elements.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write(h, value, depth + 1)?;
            }
            h.update(b"]");
        }
        Some(b'"') => match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) => write_string(h, &s),
            // A string serde cannot decode (an unpaired surrogate escape) counts as written.
            Err(_) => h.update(text.as_bytes()),
        },
        _ => h.update(text.trim().as_bytes()),
    }
    Ok(())
}

fn write_string(h: &mut Sha256, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => h.update(quoted.as_bytes()),
        Err(_) => h.update(s.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::digest;

    fn same(a: &str, b: &str) -> bool {
        digest(a).ok() == digest(b).ok()
    }

    #[test]
    fn layout_does_not_matter_content_does() {
        let compact = r#"{"CallId":"c1","UserId":"alice","Role":"caller","EventTime":1704856890,"List":[1,{"b":2,"a":"\u00e9"}]}"#;
        let pretty = "{\n  \"UserId\": \"alice\",\n  \"CallId\": \"c1\",\n  \"List\": [ 1, { \"a\": \"é\", \"b\": 2 } ],\n  \"EventTime\": 1704856890,\n  \"Role\": \"caller\"\n}";
        assert!(same(compact, pretty));
        assert!(!same(compact, &compact.replace("alice", "bob")));
        assert!(
            !same(r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            "array order matters"
        );
        assert!(!same(r#"{"a":1}"#, r#"{"a":1.0}"#), "numbers as written");
        assert!(
            !same(r#"{"a":1,"a":2}"#, r#"{"a":2,"a":1}"#),
            "repeated keys in order"
        );
        assert!(same(r#"{"a":"\ud800"}"#, r#"{ "a" : "\ud800" }"#));
        assert!(digest("{").is_err());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            digest(&deep).is_ok(),
            "deep nesting is walked within bounds"
        );
    }
}
