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

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::fields::members;

/// How deep the canonical form reaches into nested objects and arrays.
pub const MAX_DEPTH: usize = 32;

/// The SHA-256 digest of a JSON document's canonical form.
pub fn digest(text: &str) -> Result<[u8; 32], serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(text)?;
    let mut out = Vec::with_capacity(text.len());
    write(&mut out, raw, 0)?;
    Ok(Sha256::digest(&out).into())
}

/// [`digest`] of an object already split into its members (saves parsing it again).
pub fn digest_members(
    members: &[(Cow<'_, str>, &RawValue)],
) -> Result<[u8; 32], serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, members, 0)?;
    Ok(Sha256::digest(&out).into())
}

/// An object's members sorted by key (stably), each in canonical form.
fn write_object(
    h: &mut Vec<u8>,
    members: &[(Cow<'_, str>, &RawValue)],
    depth: usize,
) -> Result<(), serde_json::Error> {
    let mut sorted: Vec<&(Cow<'_, str>, &RawValue)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    h.push(b'{');
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            h.push(b',');
        }
        write_key(h, key);
        h.push(b':');
        write(h, value, depth + 1)?;
    }
    h.push(b'}');
    Ok(())
}

fn write(h: &mut Vec<u8>, raw: &RawValue, depth: usize) -> Result<(), serde_json::Error> {
    let text = raw.get();
    if depth >= MAX_DEPTH {
        h.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    match text.as_bytes().first() {
        Some(b'{') => write_object(h, &members(text)?, depth)?,
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(text)?;
            h.push(b'[');
            for (i, value) in elements.iter().enumerate() {
                if i > 0 {
                    h.push(b',');
                }
                write(h, value, depth + 1)?;
            }
            h.push(b']');
        }
        // Without an escape, a string's canonical form is its text as written (JSON allows
        // no raw quote or control character in it, the only things re-encoding escapes).
        Some(b'"') if !text.contains('\\') => h.extend_from_slice(text.as_bytes()),
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(s) => write_string(h, &s),
            // A string serde cannot decode (an unpaired surrogate escape) counts as written.
            Err(_) => h.extend_from_slice(text.as_bytes()),
        },
        _ => h.extend_from_slice(text.trim().as_bytes()),
    }
    Ok(())
}

/// A key, decoded by serde, in canonical form: quoted as written when it needs no escape.
fn write_key(h: &mut Vec<u8>, key: &str) {
    if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        write_string(h, key);
    } else {
        h.extend_from_slice(b"\"");
        h.extend_from_slice(key.as_bytes());
        h.extend_from_slice(b"\"");
    }
}

fn write_string(h: &mut Vec<u8>, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => h.extend_from_slice(quoted.as_bytes()),
        Err(_) => h.extend_from_slice(s.as_bytes()),
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
