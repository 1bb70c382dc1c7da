//! One pass over a body's bytes for what a JSON parser does not say:
//! - how deep it nests: PostgreSQL's `json` input gives up (stack depth) somewhere past ten
//!   thousand levels, so callhook stores no body deeper than [`MAX_DEPTH`], on either
//!   backend, and no real callback comes near it;
//! - what PostgreSQL's JSON functions cannot read: a `\u0000` escape (no PostgreSQL text
//!   can hold NUL) or an unpaired UTF-16 surrogate escape. The `json` column stores such a
//!   body exactly as received, but `->` and `->>` fail on it, so callhook notes it on the
//!   row (and its own views never parse payloads).

/// The deepest nesting of objects and arrays callhook stores. Tencent's bodies nest three.
pub const MAX_DEPTH: usize = 512;

/// The deepest nesting of objects and arrays in `text` (outside strings).
pub fn depth(text: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &c in text.as_bytes() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Why PostgreSQL's JSON functions cannot read `text`, if they cannot.
pub fn postgres_json_trouble(text: &str) -> Option<&'static str> {
    // Both troubles are `\u` escapes; most bodies have none.
    if !text.contains("\\u") {
        return None;
    }
    let b = text.as_bytes();
    let mut i = 0usize;
    let mut in_string = false;
    while i < b.len() {
        match (in_string, b[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') if b.get(i + 1) == Some(&b'u') => {
                let cp = hex4(b, i + 2)?;
                i += 6;
                match cp {
                    0 => return Some("it holds a \\u0000 escape"),
                    0xD800..=0xDBFF => {
                        let low = (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
                            .then(|| hex4(b, i + 2))
                            .flatten();
                        match low {
                            Some(0xDC00..=0xDFFF) => i += 6,
                            _ => return Some("it holds an unpaired UTF-16 surrogate escape"),
                        }
                    }
                    0xDC00..=0xDFFF => {
                        return Some("it holds an unpaired UTF-16 surrogate escape");
                    }
                    _ => {}
                }
                continue;
            }
            (true, b'\\') => i += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::{depth, postgres_json_trouble};

    #[test]
    fn measures_nesting_outside_strings() {
        assert_eq!(depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(depth(r#"{"a":"[[[[\"{{{"}"#), 1);
        assert_eq!(
            depth(&format!("{{\"a\":{}{}}}", "[".repeat(600), "]".repeat(600))),
            601
        );
    }

    #[test]
    fn finds_what_postgres_json_cannot_read() {
        for ok in [
            r#"{"a":"b","c":[1,2.5,-3e10],"d":{"e":null}}"#,
            r#"{"emoji":"\ud83d\ude00","q":"\\u0000 is text here","tab":"\t"}"#,
            r#"{"big":123456789012345678901234567890,"exp":1e99999}"#,
            r#"{"s":"\"{[nested in a string"}"#,
        ] {
            assert_eq!(postgres_json_trouble(ok), None, "{ok}");
        }
        for bad in [
            r#"{"a":"\u0000"}"#,
            r#"{"a":"x\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
        ] {
            assert!(postgres_json_trouble(bad).is_some(), "{bad}");
        }
    }
}
