//! Reading a callback body one field at a time.
//!
//! Tencent may change a field's type at any time, and a refused callback is a call lost for
//! good, so no field can spoil the others: a body is split into its top-level members, and
//! each field callhook reads is read on its own. A field that cannot be read is `None`, and
//! why is written down as a [`Notes`] entry (which field, what was expected, what came),
//! stored with the row. Only a body that is not a JSON object at all is an error.

use std::borrow::Cow;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::values::{json_kind, parse_integer};

/// Problems met while reading a delivery, in the order they were met.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notes(Vec<String>);

impl Notes {
    pub fn push(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }

    /// Notes that a field the row is identified by has no value: it is absent, empty or
    /// null (a field present with a value of the wrong type is noted already).
    pub fn missing(&mut self, fields: &Fields<'_>, key: &str) {
        let name = fields.name(key);
        let prefix = format!("{name}:");
        if self.0.iter().any(|n| n.starts_with(&prefix)) {
            return;
        }
        self.push(if fields.has(key) {
            format!("{name}: empty")
        } else {
            format!("{name}: missing")
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The notes as one text (`"; "` between them), `None` when there are none.
    pub fn joined(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join("; "))
    }
}

/// The members of one JSON object, in order, keys decoded.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    members: MemberList<'a>,
    /// Where the object sits in the body (`CallRecord.`), for notes.
    path: String,
}

/// serde's view of an object as (key, raw value) pairs, duplicates kept.
struct Members;

/// A key, borrowed from the body when it has no escape (the common case), else decoded.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The members of an object, as (key, raw value) pairs in order.
pub(crate) type MemberList<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

impl<'de> Visitor<'de> for Members {
    type Value = MemberList<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            out.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

/// The members of the JSON object `text` (whitespace around it allowed).
pub(crate) fn members(text: &str) -> Result<MemberList<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let members = (&mut de).deserialize_map(Members)?;
    de.end()?;
    Ok(members)
}

impl<'a> Fields<'a> {
    /// The members of the JSON object `text` (whitespace around it allowed), or why it is
    /// not one.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        Self::parse_at(text, String::new())
    }

    fn parse_at(text: &'a str, path: String) -> Result<Self, serde_json::Error> {
        Ok(Self {
            members: members(text)?,
            path,
        })
    }

    /// The object's members, in order.
    pub fn members(&self) -> &[(Cow<'a, str>, &'a RawValue)] {
        &self.members
    }

    /// `key`'s name in notes: its path from the top of the body.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    /// The raw value of `key` (of the first of `keys` present). A key given more than once
    /// counts by its last value, as in JavaScript and PostgreSQL, and is noted.
    pub fn raw(&self, keys: &[&str], notes: &mut Notes) -> Option<&'a RawValue> {
        for key in keys {
            let mut found = self.members.iter().rev().filter(|(k, _)| k == key);
            let Some(last) = found.next() else { continue };
            if found.next().is_some() {
                notes.push(format!(
                    "{}: given more than once, the last is used",
                    self.name(key)
                ));
            }
            return Some(last.1);
        }
        None
    }

    /// Whether the object has `key` at all.
    pub fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// Text: a JSON string, or a number kept digit for digit (an 18-digit account never
    /// passes through a float). `null` and `""` are absent.
    pub fn text(&self, keys: &[&str], notes: &mut Notes) -> Option<String> {
        let raw = self.raw(keys, notes)?;
        self.noted(keys, read_text(raw), notes)
    }

    /// An integer: a JSON number (integral or not: fractions are truncated) or a numeric
    /// string. `null` and `""` are absent.
    pub fn int(&self, keys: &[&str], notes: &mut Notes) -> Option<i64> {
        let raw = self.raw(keys, notes)?;
        self.noted(keys, read_i64(raw), notes)
    }

    /// A vocabulary value (`MediaType`, `CallResult`, …) through its `from_wire`.
    pub fn word<T>(
        &self,
        keys: &[&str],
        notes: &mut Notes,
        from_wire: fn(&str) -> Option<T>,
    ) -> Option<T> {
        self.text(keys, notes).as_deref().and_then(from_wire)
    }

    /// A nested object.
    pub fn object(&self, keys: &[&str], notes: &mut Notes) -> Option<Fields<'a>> {
        let raw = self.raw(keys, notes)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => None,
            Some(b'{') => {
                let path = format!("{}.", self.name(keys[0]));
                self.noted(
                    keys,
                    Fields::parse_at(text, path)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    notes,
                )
            }
            _ => self.noted(
                keys,
                Err(format!("expected an object, found {}", describe(text))),
                notes,
            ),
        }
    }

    /// An array's elements.
    pub fn array(&self, keys: &[&str], notes: &mut Notes) -> Option<Vec<&'a RawValue>> {
        let raw = self.raw(keys, notes)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => None,
            Some(b'[') => self.noted(
                keys,
                serde_json::from_str::<Vec<&RawValue>>(text)
                    .map(Some)
                    .map_err(|e| e.to_string()),
                notes,
            ),
            _ => self.noted(
                keys,
                Err(format!("expected an array, found {}", describe(text))),
                notes,
            ),
        }
    }

    /// An array of objects; elements that are not objects are noted and skipped.
    pub fn objects(&self, keys: &[&str], notes: &mut Notes) -> Option<Vec<Fields<'a>>> {
        let elements = self.array(keys, notes)?;
        let mut out = Vec::with_capacity(elements.len());
        for (i, raw) in elements.into_iter().enumerate() {
            let path = format!("{}[{i}].", self.name(keys[0]));
            match raw.get().as_bytes().first() {
                Some(b'{') => match Fields::parse_at(raw.get(), path) {
                    Ok(f) => out.push(f),
                    Err(e) => notes.push(format!("{}[{i}]: {e}", self.name(keys[0]))),
                },
                _ => notes.push(format!(
                    "{}[{i}]: expected an object, found {}",
                    self.name(keys[0]),
                    describe(raw.get())
                )),
            }
        }
        Some(out)
    }

    /// An array of texts (strings, or numbers kept digit for digit); elements that are
    /// neither are noted and skipped.
    pub fn texts(&self, keys: &[&str], notes: &mut Notes) -> Option<Vec<String>> {
        let elements = self.array(keys, notes)?;
        let mut out = Vec::with_capacity(elements.len());
        for (i, raw) in elements.into_iter().enumerate() {
            match read_text(raw) {
                Ok(Some(t)) => out.push(t),
                Ok(None) => {}
                Err(why) => notes.push(format!("{}[{i}]: {why}", self.name(keys[0]))),
            }
        }
        Some(out)
    }

    fn noted<T>(
        &self,
        keys: &[&str],
        read: Result<Option<T>, String>,
        notes: &mut Notes,
    ) -> Option<T> {
        match read {
            Ok(v) => v,
            Err(why) => {
                notes.push(format!("{}: {why}", self.name(keys[0])));
                None
            }
        }
    }
}

/// What a value is, for a note: its kind and (for scalars) a short sample.
fn describe(text: &str) -> String {
    let sample: String = text.chars().take(40).collect();
    let cut = if sample.len() < text.len() { "…" } else { "" };
    match text.as_bytes().first() {
        Some(b'"') => format!("the string {sample}{cut}"),
        Some(b'-' | b'0'..=b'9') => format!("the number {sample}{cut}"),
        Some(b't' | b'f') => format!("the boolean {text}"),
        _ => json_kind(text).to_owned(),
    }
}

/// Text from a raw JSON value: a string (NUL characters become U+FFFD, which no
/// PostgreSQL text column can hold), or a number's digits.
pub fn read_text(raw: &RawValue) -> Result<Option<String>, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        // Without an escape, the text between the quotes is the string.
        Some(b'"') if !text.contains('\\') => {
            let s = &text[1..text.len() - 1];
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(text)
                .map_err(|e| format!("cannot decode the string {}: {e}", describe(text)))?;
            if s.is_empty() {
                Ok(None)
            } else if s.contains('\0') {
                Ok(Some(s.replace('\0', "\u{FFFD}")))
            } else {
                Ok(Some(s))
            }
        }
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        Some(b'n') => Ok(None),
        _ => Err(format!(
            "expected a string or a number, found {}",
            describe(text)
        )),
    }
}

/// An integer from a raw JSON value: a number, or a numeric string.
pub fn read_i64(raw: &RawValue) -> Result<Option<i64>, String> {
    let text = raw.get();
    let digits: Cow<'_, str> = match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Cow::Borrowed(text[1..text.len() - 1].trim()),
        Some(b'"') => {
            let s: String = serde_json::from_str(text)
                .map_err(|e| format!("cannot decode the string {}: {e}", describe(text)))?;
            Cow::Owned(s.trim().to_owned())
        }
        Some(b'n') => return Ok(None),
        Some(b'-' | b'0'..=b'9') => Cow::Borrowed(text),
        _ => return Err(format!("expected an integer, found {}", describe(text))),
    };
    if digits.is_empty() {
        return Ok(None);
    }
    parse_integer(&digits)
        .map(Some)
        .ok_or_else(|| format!("expected an integer, found {}", describe(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_read_on_its_own() {
        let body = r#"{"UserId":"alice","TotalNum":"two","RoomId":true,"CallId":{"a":1},
            "EventTime":"1704856890","Big":123456789012345678901,"Twice":1,"Twice":2}"#;
        let f = Fields::parse(body).unwrap_or_else(|e| panic!("{e}"));
        let mut notes = Notes::default();
        assert_eq!(f.text(&["UserId"], &mut notes).as_deref(), Some("alice"));
        assert_eq!(f.int(&["TotalNum"], &mut notes), None);
        assert_eq!(f.text(&["RoomId"], &mut notes), None);
        assert_eq!(f.text(&["CallId"], &mut notes), None);
        assert_eq!(f.int(&["EventTime"], &mut notes), Some(1_704_856_890));
        assert_eq!(
            f.text(&["Big"], &mut notes).as_deref(),
            Some("123456789012345678901")
        );
        assert_eq!(f.int(&["Twice"], &mut notes), Some(2));
        assert_eq!(f.text(&["Missing"], &mut notes), None);
        assert_eq!(
            notes.joined().as_deref(),
            Some(
                "TotalNum: expected an integer, found the string \"two\"; \
                 RoomId: expected a string or a number, found the boolean true; \
                 CallId: expected a string or a number, found an object; \
                 Twice: given more than once, the last is used"
            )
        );
    }

    #[test]
    fn nested_objects_and_arrays_name_their_path() {
        let body = r#"{"CallRecord":{"CallId":"c","StartTime":[1]},"UserList":[{"User_Account":"a"},7,{"User_Account":{"x":1}}],"Accounts":["a",5,null,{}]}"#;
        let f = Fields::parse(body).unwrap_or_else(|e| panic!("{e}"));
        let mut notes = Notes::default();
        let rec = f.object(&["CallRecord"], &mut notes);
        assert_eq!(
            rec.as_ref()
                .and_then(|r| r.text(&["CallId"], &mut notes))
                .as_deref(),
            Some("c")
        );
        assert_eq!(rec.and_then(|r| r.int(&["StartTime"], &mut notes)), None);
        let users = f.objects(&["UserList"], &mut notes).unwrap_or_default();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].text(&["User_Account"], &mut notes), None);
        assert_eq!(
            f.texts(&["Accounts"], &mut notes),
            Some(vec!["a".to_owned(), "5".to_owned()])
        );
        assert_eq!(
            notes.joined().as_deref(),
            Some(
                "CallRecord.StartTime: expected an integer, found an array; \
                 UserList[1]: expected an object, found the number 7; \
                 UserList[2].User_Account: expected a string or a number, found an object; \
                 Accounts[3]: expected a string or a number, found an object"
            )
        );
    }

    #[test]
    fn only_objects_are_bodies() {
        for bad in ["", "[]", "\"x\"", "{", "{} {}", "{\"a\":}", "null"] {
            assert!(Fields::parse(bad).is_err(), "{bad}");
        }
        assert!(Fields::parse(" {} ").is_ok());
    }
}
