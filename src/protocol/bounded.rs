//! The text columns that PostgreSQL indexes, bounded in length, the same on both backends.
//!
//! A PostgreSQL B-tree entry holds at most 2,704 bytes (with 8 kB pages), and a value that
//! does not compress, such as a random id, is stored in it as it is: a `CallId`, `UserId`,
//! `RoomId` or `TaskId` of a few kilobytes made PostgreSQL refuse the whole row (SQLSTATE
//! 54000, "index row size exceeds maximum"), live and on journal replay, while SQLite stored
//! it. Every text column that is part of an index therefore holds at most
//! [`MAX_INDEXED_BYTES`]: `call_id` (the analytics indexes' key) with what
//! `call_events_fold_idx` includes (`role`, `user_id`, `event`, `call_result`,
//! `media_type`, `call_type`), `room_id` (the room index) and `task_id` (the task index). A
//! longer value is replaced by its [`bounded_form`], and the row gets a note naming the
//! column and the value's length; the payload keeps the value in full. `members` holds the
//! same accounts as `user_id`, and the `calls` view lists both together, so its accounts
//! are bounded the same way.
//!
//! Why 256 bytes: the fold index's entry carries seven of these columns; at 7 × (256 + 4)
//! bytes plus its seven 8-byte columns and headers it stays under 2,000 bytes, well within
//! the limit, with no column depending on how short another is. Ids that Tencent generates
//! or that apps choose are a few dozen bytes, so only what no real callback sends is cut.

use sha2::{Digest, Sha256};

use super::EventRow;

/// The most bytes an indexed text column holds.
pub const MAX_INDEXED_BYTES: usize = 256;

/// Between a bounded value's beginning and its hash.
const SEPARATOR: &str = "…";

/// How many bytes of the value's SHA-256 a bounded form ends with (in hex, twice as many
/// digits): 128 bits, so that two distinct values never meet in practice.
const HASH_BYTES: usize = 16;

/// The most bytes of a long value's beginning that its bounded form keeps.
const PREFIX_BYTES: usize = MAX_INDEXED_BYTES - SEPARATOR.len() - 2 * HASH_BYTES;

/// What an indexed column holds for `value` when it is longer than [`MAX_INDEXED_BYTES`]
/// (`None` when it fits as it is): its longest beginning of at most 221 bytes that ends at
/// a character boundary, `…`, and the first 16 bytes of the SHA-256 of the whole value in
/// lower-case hex. The same value always gets the same form, two distinct values get two
/// (the hash covers all of each), and the form fits, so bounding it again changes nothing.
pub fn bounded_form(value: &str) -> Option<String> {
    if value.len() <= MAX_INDEXED_BYTES {
        return None;
    }
    let cut = (0..=PREFIX_BYTES)
        .rev()
        .find(|&i| value.is_char_boundary(i))
        .unwrap_or(0);
    let hash = Sha256::digest(value.as_bytes());
    Some(format!(
        "{}{SEPARATOR}{}",
        &value[..cut],
        hex::encode(&hash[..HASH_BYTES])
    ))
}

/// The note on a row whose `column` held a value of `len` bytes.
fn note(column: &str, len: usize) -> String {
    format!(
        "{column}: {len} bytes, more than the {MAX_INDEXED_BYTES} an indexed column holds; \
         stored as its beginning, \"{SEPARATOR}\" and a hash of the whole value (the \
         delivery's payload holds it in full)"
    )
}

/// Replaces a value longer than [`MAX_INDEXED_BYTES`] by its [`bounded_form`], noting it.
fn fit<T: AsRef<str> + From<String>>(column: &str, value: Option<&mut T>, notes: &mut Vec<String>) {
    let Some(value) = value else {
        return;
    };
    let text = value.as_ref();
    if let Some(form) = bounded_form(text) {
        notes.push(note(column, text.len()));
        *value = T::from(form);
    }
}

/// Bounds every indexed text column of `row` (see the module's documentation), and the
/// accounts in `members`, with a note for each value cut. The parsers of both endpoints call
/// it as the last step on every row they make ([`super::parse_delivery`],
/// [`super::parse_trtc_delivery`]), and the journal on every row it reads back (one
/// journaled by an earlier version may hold a long value); a bounded row is left as it is.
pub fn bound_indexed_columns(row: &mut EventRow) {
    let mut notes = Vec::new();
    fit("call_id", row.call_id.as_mut(), &mut notes);
    fit("user_id", row.user_id.as_mut(), &mut notes);
    fit(
        "role",
        row.role.as_mut().and_then(|v| v.other_mut()),
        &mut notes,
    );
    fit("event", row.event.as_mut(), &mut notes);
    fit(
        "call_result",
        row.call_result.as_mut().and_then(|v| v.other_mut()),
        &mut notes,
    );
    fit(
        "media_type",
        row.media_type.as_mut().and_then(|v| v.other_mut()),
        &mut notes,
    );
    fit(
        "call_type",
        row.call_type.as_mut().and_then(|v| v.other_mut()),
        &mut notes,
    );
    fit("room_id", row.room_id.as_mut(), &mut notes);
    fit("task_id", row.trtc.task_id.as_mut(), &mut notes);
    bound_members(row, &mut notes);
    for n in notes {
        row.add_note(&n);
    }
}

/// The accounts of `members` (a JSON array of strings), bounded like `user_id`, so that the
/// `calls` view, which lists both, names a long account once.
fn bound_members(row: &mut EventRow, notes: &mut Vec<String>) {
    let Some(members) = row.members.as_deref() else {
        return;
    };
    if members.len() <= MAX_INDEXED_BYTES {
        return;
    }
    let Ok(mut accounts) = serde_json::from_str::<Vec<String>>(members) else {
        return;
    };
    let before = notes.len();
    for account in &mut accounts {
        fit("members", Some(account), notes);
    }
    if notes.len() > before {
        row.members = serde_json::to_string(&accounts).ok().or(row.members.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CallResult, MediaType, Role, values::normalize};

    #[test]
    fn long_values_get_a_bounded_form_short_ones_stay() {
        let fits = "x".repeat(MAX_INDEXED_BYTES);
        assert_eq!(bounded_form(&fits), None);
        assert_eq!(bounded_form(""), None);

        let long = format!("{fits}y");
        let form = bounded_form(&long).unwrap_or_default();
        assert_eq!(form.len(), MAX_INDEXED_BYTES);
        assert_eq!(&form[..PREFIX_BYTES], &long[..PREFIX_BYTES]);
        let hash = hex::encode(&Sha256::digest(long.as_bytes())[..HASH_BYTES]);
        assert_eq!(form, format!("{}…{hash}", &long[..221]));
        assert_eq!(bounded_form(&form), None, "a bounded form fits");
        assert_eq!(
            bounded_form(&long),
            Some(form.clone()),
            "the same value, the same form"
        );
        let other = format!("{fits}z");
        assert_ne!(
            bounded_form(&other),
            Some(form),
            "the same beginning, another value"
        );
    }

    #[test]
    fn the_cut_falls_on_a_character_boundary() {
        // 'é' is two bytes: 221 bytes of them would split one.
        let long = "é".repeat(200);
        let form = bounded_form(&long).unwrap_or_default();
        assert!(form.starts_with(&"é".repeat(110)), "{form}");
        assert!(form.len() <= MAX_INDEXED_BYTES);
        assert_eq!(form.chars().filter(|&c| c == 'é').count(), 110);
    }

    /// The journal reads vocabulary columns back through `from_wire`, which normalises: a
    /// bounded normalised value must read back as itself.
    #[test]
    fn a_bounded_vocabulary_value_reads_back_as_itself() {
        let raw = "Some-Very_Long.Value Nobody Sends ".repeat(20);
        let form = bounded_form(&normalize(&raw)).unwrap_or_default();
        assert_eq!(normalize(&form), form);
        let role = Role::from_wire(&form);
        assert_eq!(role.as_ref().map(Role::as_str), Some(form.as_str()));
    }

    fn row() -> EventRow {
        let ctx = crate::protocol::Context {
            sdkappid: 1,
            command: "call_end",
            client_ip: None,
            opt_platform: None,
            remote_addr: None,
            received_at: 0,
        };
        EventRow::base(&ctx, crate::protocol::Family::Status)
    }

    #[test]
    fn every_indexed_column_is_bounded_and_noted() {
        let long = "a".repeat(300);
        let form = bounded_form(&long);
        let mut r = row();
        r.call_id = Some(long.clone());
        r.user_id = Some(long.clone());
        r.event = Some(long.clone());
        r.room_id = Some(long.clone());
        r.trtc.task_id = Some(long.clone());
        r.role = Role::from_wire(&long);
        r.call_result = CallResult::from_wire(&long);
        r.media_type = MediaType::from_wire(&long);
        r.call_type = crate::protocol::CallType::from_wire(&long);
        r.members = serde_json::to_string(&[&long, "short"]).ok();
        r.trtc.unique_id = Some(long.clone());
        r.command = long.clone();
        bound_indexed_columns(&mut r);
        for (column, value) in [
            ("call_id", r.call_id.as_deref()),
            ("user_id", r.user_id.as_deref()),
            ("event", r.event.as_deref()),
            ("room_id", r.room_id.as_deref()),
            ("task_id", r.trtc.task_id.as_deref()),
            ("role", r.role.as_ref().map(Role::as_str)),
            (
                "call_result",
                r.call_result.as_ref().map(CallResult::as_str),
            ),
            ("media_type", r.media_type.as_ref().map(MediaType::as_str)),
            ("call_type", r.call_type.as_ref().map(|v| v.as_str())),
        ] {
            assert_eq!(value, form.as_deref(), "{column}");
            let notes = r.notes.as_deref().unwrap_or_default();
            assert!(notes.contains(&format!("{column}: 300 bytes")), "{notes}");
        }
        let members = serde_json::to_string(&[form.as_deref(), Some("short")]).ok();
        assert_eq!(r.members, members);
        assert_eq!(
            r.trtc.unique_id.as_deref(),
            Some(long.as_str()),
            "not indexed"
        );
        assert_eq!(r.command, long, "not indexed");

        let once = r.clone();
        bound_indexed_columns(&mut r);
        assert_eq!(r, once, "a bounded row is left as it is");
        let mut short = row();
        short.call_id = Some("c".into());
        bound_indexed_columns(&mut short);
        assert_eq!(short.notes, None);
    }
}
