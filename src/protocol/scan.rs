//! Checks that a syntactically valid JSON document can be stored unchanged by both
//! backends: PostgreSQL's `jsonb` refuses `\u0000` and unpaired surrogate escapes, limits
//! nesting, and overflows on absurd number literals. Refusing these up front, with a clear
//! reason, keeps one hostile delivery from failing a whole batch and keeps both backends
//! behaving the same.

/// Deepest object/array nesting accepted. Real callbacks nest three levels.
pub const MAX_DEPTH: usize = 64;

/// Longest number literal and largest exponent accepted.
const MAX_NUMBER_LEN: usize = 1000;
const MAX_EXPONENT: u32 = 1000;

/// Walks a document that `serde_json` already accepted. Returns why it cannot be stored.
pub fn check_storable(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => i = scan_string(b, i + 1)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => i = scan_number(b, i)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Scans from just after an opening quote; returns the index after the closing quote.
fn scan_string(b: &[u8], mut i: usize) -> Result<usize, String> {
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' if b.get(i + 1) == Some(&b'u') => {
                let cp = hex4(b, i + 2)?;
                i += 6;
                match cp {
                    0 => return Err("contains \\u0000, which PostgreSQL cannot store".into()),
                    0xD800..=0xDBFF => {
                        let low = (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
                            .then(|| hex4(b, i + 2))
                            .transpose()?;
                        match low {
                            Some(0xDC00..=0xDFFF) => i += 6,
                            _ => return Err("contains an unpaired UTF-16 surrogate escape".into()),
                        }
                    }
                    0xDC00..=0xDFFF => {
                        return Err("contains an unpaired UTF-16 surrogate escape".into());
                    }
                    _ => {}
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

fn hex4(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| "invalid \\u escape".to_owned())
}

fn scan_number(b: &[u8], start: usize) -> Result<usize, String> {
    let mut i = start;
    let mut exp_start = None;
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' | b'-' | b'+' | b'.' => {}
            b'e' | b'E' => exp_start = Some(i + 1),
            _ => break,
        }
        i += 1;
    }
    if i - start > MAX_NUMBER_LEN {
        return Err(format!(
            "has a number longer than {MAX_NUMBER_LEN} characters"
        ));
    }
    if let Some(e) = exp_start {
        let digits = b[e..i].iter().filter(|c| c.is_ascii_digit());
        let mut exp: u32 = 0;
        for d in digits {
            exp = exp.saturating_mul(10).saturating_add(u32::from(d - b'0'));
        }
        if exp > MAX_EXPONENT {
            return Err(format!(
                "has a number with an exponent beyond ±{MAX_EXPONENT}"
            ));
        }
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::check_storable;

    #[test]
    fn accepts_ordinary_documents() {
        for ok in [
            r#"{"a":"b","c":[1,2.5,-3e10],"d":{"e":null}}"#,
            r#"{"emoji":"\ud83d\ude00","q":"\\u0000 is text here","tab":"\t"}"#,
            r#"{"big":123456789012345678901234567890}"#,
            r#"{"s":"\"{[nested in a string"}"#,
        ] {
            assert_eq!(check_storable(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_postgres_cannot_store() {
        for bad in [
            r#"{"a":"\u0000"}"#,
            r#"{"a":"x\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":1e99999}"#,
            r#"{"a":1E-1001}"#,
        ] {
            assert!(check_storable(bad).is_err(), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_storable(&deep).is_err());
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(check_storable(&fine), Ok(()));
        let long = format!("{{\"a\":{}}}", "9".repeat(1001));
        assert!(check_storable(&long).is_err());
    }
}
