//! Lenient value handling shared by every callback family.
//!
//! Tencent's documentation disagrees with itself about spelling (`Audio` vs `audio`,
//! `NormalEnd` vs `normal_end`) and about types (numbers that arrive as strings, user ids
//! that arrive as 18-digit JSON numbers). The rule is: accept every spelling, keep unknown
//! values, never pass an id through a float.

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The latest instant any backend stores: 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: Millis = 253_402_300_799_999;

/// Values at or above this are taken as milliseconds, below as seconds. 10^11 seconds is
/// the year 5138; 10^11 milliseconds is March 1973, so no real timestamp is ambiguous.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Turns a Unix timestamp in seconds or milliseconds into milliseconds.
///
/// `0` means "not applicable" in Tencent's bodies and becomes `None`, as does a value that
/// no backend can store (negative, or after the year 9999): such a value is kept in the
/// payload, not in the typed column.
pub fn unix_time(value: Option<i64>) -> Option<Millis> {
    let v = value?;
    let ms = if v.unsigned_abs() >= MILLIS_THRESHOLD as u64 {
        v
    } else {
        v.checked_mul(1000)?
    };
    (1..=MAX_MILLIS).contains(&ms).then_some(ms)
}

/// Lower snake case: `NormalEnd` → `normal_end`, `Not_answer` → `not_answer`,
/// `Hang Up` → `hang_up`. Idempotent: normalising a normalised value changes nothing.
///
/// Any whitespace, `-`, `_` and `.` separate words; a word starts at a letter with a lower
/// case (upper or title case) that follows a lower-case letter or a digit, or that ends a
/// run of them before a lower-case letter (`HTTPServer` → `http_server`). Letters are
/// lowered; everything else is kept.
pub fn normalize(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if is_separator(c) {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            continue;
        }
        if has_lower_case(c) {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if has_lower_case(p) => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '_' | '.')
}

/// Whether lowering changes `c` (upper and title case letters). Deciding word boundaries
/// by this, rather than by `char::is_uppercase`, keeps `normalize` idempotent: its output
/// has no such letter left, so a second pass finds no boundary the first did not.
fn has_lower_case(c: char) -> bool {
    let mut lower = c.to_lowercase();
    !(lower.next() == Some(c) && lower.next().is_none())
}

/// Defines a vocabulary enum: known values as variants, anything else kept as
/// `Other(normalised text)`. Matching is on the normalised spelling plus aliases.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value callhook does not know, normalised to lower snake case and kept.
            Other(Box<str>),
        }

        impl $name {
            /// Parses any spelling; `None` for an empty value.
            pub fn from_wire(raw: &str) -> Option<Self> {
                // Fast path: the lower-case wire spelling needs no allocation.
                match raw {
                    "" => return None,
                    $($text => return Some(Self::$variant),)+
                    _ => {}
                }
                let norm = normalize(raw);
                Some(match norm.as_str() {
                    "" => return None,
                    $($text $(| $alias)* => Self::$variant,)+
                    _ => Self::Other(norm.into_boxed_str()),
                })
            }

            /// The normalised spelling stored in SQL.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// The text of a value callhook does not know, to bound its length
            /// ([`crate::protocol::bounded`]); `None` for a known value.
            pub fn other_mut(&mut self) -> Option<&mut Box<str>> {
                match self {
                    Self::Other(s) => Some(s),
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// How a participant's call ended (status family `CallResult`, v4 `CallRecord.CallResult`).
    pub enum CallResult {
        NotAnswer => "not_answer",
        Reject => "reject" | "rejected",
        CallBusy => "call_busy" | "busy",
        Cancel => "cancel" | "canceled" | "cancelled",
        NormalEnd => "normal_end",
        Interrupt => "interrupt" | "interrupted",
        Offline => "offline",
    }
}

vocabulary! {
    /// `audio` or `video`.
    pub enum MediaType {
        Audio => "audio",
        Video => "video",
    }
}

vocabulary! {
    /// `single` (1-to-1) or `group`; v4's `SingleCall`/`MultiCall` map onto these.
    pub enum CallType {
        Single => "single" | "single_call",
        Group => "group" | "multi_call" | "group_call",
    }
}

vocabulary! {
    /// The participant's side of the call.
    pub enum Role {
        Caller => "caller",
        Callee => "callee",
    }
}

vocabulary! {
    /// v4 member change `ActionType`, with both documented spellings of each action.
    pub enum MemberAction {
        Accept => "accept" | "answer",
        Hangup => "hangup" | "hang_up",
        Invite => "invite" | "invited",
        CancelInvite => "cancel_invite" | "canncel_invite",
        Reject => "reject",
        NotAnswer => "not_answer",
        Join => "join",
        Offline => "offline",
    }
}

impl CallResult {
    /// The six call results that are also status-family command words.
    pub fn from_status_command(command: &str) -> Option<Self> {
        match Self::from_wire(command)? {
            Self::Other(_) | Self::Offline => None,
            known => Some(known),
        }
    }
}

/// Accepts `123`, `-5`, `1.7e9`, `12.0`; fractions are truncated toward zero.
pub(crate) fn parse_integer(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    (f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

pub(crate) fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_spellings() {
        for (raw, want) in [
            ("NormalEnd", "normal_end"),
            ("normal_end", "normal_end"),
            ("Not_answer", "not_answer"),
            ("NotAnswer", "not_answer"),
            ("CallBusy", "call_busy"),
            ("Hang Up", "hang_up"),
            ("Canncel_Invite", "canncel_invite"),
            ("SingleCall", "single_call"),
            ("  Video ", "video"),
            ("HTTPServer", "http_server"),
            ("iOS", "i_os"),
            ("", ""),
            ("__", ""),
            // Not idempotent before: Unicode whitespace was kept inside, then trimmed by a
            // second pass (found by the property tests); an upper-case letter without a
            // lower case started a word only on the second pass.
            ("_\ta", "a"),
            ("a\u{3000}-", "a"),
            ("a\u{3000}b", "a_b"),
            ("A\u{1D400}", "a\u{1D400}"),
            // Title case letters are lowered too.
            ("\u{1C5}ungla", "\u{1C6}ungla"),
        ] {
            assert_eq!(normalize(raw), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn vocabulary_aliases_and_unknowns() {
        assert_eq!(
            CallResult::from_wire("NormalEnd"),
            Some(CallResult::NormalEnd)
        );
        assert_eq!(
            CallResult::from_wire("Not_answer"),
            Some(CallResult::NotAnswer)
        );
        assert_eq!(CallResult::from_wire(""), None);
        assert_eq!(
            CallResult::from_wire("SomethingNew").map(|r| r.as_str().to_owned()),
            Some("something_new".to_owned())
        );
        assert_eq!(CallType::from_wire("MultiCall"), Some(CallType::Group));
        assert_eq!(CallType::from_wire("Single"), Some(CallType::Single));
        assert_eq!(MediaType::from_wire("Audio"), Some(MediaType::Audio));
        assert_eq!(
            MemberAction::from_wire("Hang Up"),
            Some(MemberAction::Hangup)
        );
        assert_eq!(
            MemberAction::from_wire("Answer"),
            Some(MemberAction::Accept)
        );
        assert_eq!(
            MemberAction::from_wire("Canncel_Invite"),
            Some(MemberAction::CancelInvite)
        );
        assert_eq!(Role::from_wire("Caller"), Some(Role::Caller));
        assert_eq!(CallResult::from_status_command("call_end"), None);
        assert_eq!(
            CallResult::from_status_command("call_busy"),
            Some(CallResult::CallBusy)
        );
    }

    #[test]
    fn unix_time_units() {
        assert_eq!(unix_time(None), None);
        assert_eq!(unix_time(Some(0)), None);
        assert_eq!(unix_time(Some(1_704_856_873)), Some(1_704_856_873_000));
        assert_eq!(unix_time(Some(1_704_856_873_123)), Some(1_704_856_873_123));
        assert_eq!(unix_time(Some(170_485_688)), Some(170_485_688_000));
        assert_eq!(unix_time(Some(-5)), None);
        assert_eq!(unix_time(Some(i64::MAX)), None);
        assert_eq!(
            unix_time(Some(99_999_999_999)),
            Some(99_999_999_999_000),
            "year 5138, in seconds"
        );
        assert_eq!(
            unix_time(Some(100_000_000_000)),
            Some(100_000_000_000),
            "1973, in milliseconds"
        );
        assert_eq!(unix_time(Some(253_402_300_800_000)), None, "after 9999");
    }

    fn int(json: &str) -> Result<Option<i64>, String> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        crate::protocol::fields::read_i64(raw)
    }

    fn text(json: &str) -> Result<Option<String>, String> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        crate::protocol::fields::read_text(raw)
    }

    #[test]
    fn lenient_numbers_and_text() {
        assert_eq!(int("5"), Ok(Some(5)));
        assert_eq!(int(r#""17""#), Ok(Some(17)));
        assert_eq!(int(r#"" 17 ""#), Ok(Some(17)));
        assert_eq!(int(r#""""#), Ok(None));
        assert_eq!(int("null"), Ok(None));
        assert_eq!(int("1.7e9"), Ok(Some(1_700_000_000)));
        assert!(int(r#""abc""#).is_err());
        assert!(int("true").is_err());
        assert!(int("1e300").is_err());
        assert!(int("[1]").is_err());
        assert_eq!(
            text("123456789012345678901234").ok().flatten().as_deref(),
            Some("123456789012345678901234")
        );
        assert_eq!(text(r#""a\"b""#).ok().flatten().as_deref(), Some("a\"b"));
        assert_eq!(text(r#""""#), Ok(None));
        assert_eq!(
            text(r#""a\u0000b""#).ok().flatten().as_deref(),
            Some("a\u{FFFD}b")
        );
        assert!(text("{}").is_err());
    }
}
