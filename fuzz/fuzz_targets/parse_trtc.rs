//! Drives the TRTC callback parsers and the signature check on arbitrary bytes: the body
//! of a room/media/recording callback (`parse_trtc`), of `Call.CallbackAfterRecordChanged`
//! (`parse_record_changed`), and `Sign` verification over the raw bytes.
//!
//! Input layout: one byte `n`, then `n` bytes of `Sign` header value (`n` = 0: no header),
//! then the body, raw (TRTC's bodies contain newlines, so no separator is used).

#![no_main]

use callhook::auth::trtc::{SignError, sign, verify};
use callhook::protocol::trtc::{BodyError, TrtcEvent, parse_trtc};
use callhook::protocol::v4_record::parse_record_changed;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// The latest instant a timestamp column may hold (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: i64 = 253_402_300_799_999;
const KEY: &[u8] = b"123654";

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (sign_header, body) = match n {
        0 => (None, rest),
        n => (Some(&rest[..n]), &rest[n..]),
    };

    // The signature: never a panic; the right one always verifies, over these exact bytes.
    match verify(KEY, body, sign_header) {
        Ok(()) => {
            let given = sign_header.map(|s| s.trim_ascii().len());
            assert!(
                matches!(given, Some(43 | 44)),
                "only a 32-byte base64 MAC verifies"
            );
        }
        Err(SignError::Missing) => assert!(
            sign_header.is_none_or(|s| s.trim_ascii().is_empty()),
            "a Sign header was given"
        ),
        Err(_) => {}
    }
    let good = sign(KEY, body);
    assert_eq!(verify(KEY, body, Some(good.as_bytes())), Ok(()));
    assert_eq!(
        verify(b"another key", body, Some(good.as_bytes())),
        Err(SignError::Mismatch)
    );

    // The rows the endpoint stores: exactly one for a body the parser takes (or a refusal
    // for one nested too deep), with the body kept verbatim and only plausible times.
    let ctx = callhook::protocol::Context {
        sdkappid: 1_400_000_001,
        command: callhook::protocol::TRTC_COMMAND,
        client_ip: None,
        opt_platform: None,
        remote_addr: None,
        received_at: 1_764_403_200_000,
    };
    match callhook::protocol::parse_trtc_delivery(&ctx, body) {
        Ok(rows) => {
            assert!(parse_trtc(body).is_ok(), "stored what the parser refuses");
            assert_eq!(rows.len(), 1);
            assert!(rows[0].payload.is_some());
            assert!(rows[0]
                .event_time
                .is_none_or(|t| (1_262_304_000_000..=1_764_489_600_000).contains(&t)));
        }
        Err(r) => assert!(!r.reason.is_empty()),
    }

    // The TRTC body.
    match parse_trtc(body) {
        Ok(ev) => {
            accepted(body);
            check_event(&ev);
            let again = parse_trtc(body).unwrap_or_else(|e| panic!("second parse failed: {e}"));
            assert_eq!(ev, again, "parsing is deterministic");
            assert_eq!(ev.identity(1), again.identity(1));
        }
        Err(e) => refused(body, &e),
    }

    // The same body as Call.CallbackAfterRecordChanged.
    match parse_record_changed(body) {
        Ok(r) => {
            accepted(body);
            for t in [r.call_id.as_deref(), r.callback_command.as_deref()]
                .into_iter()
                .flatten()
            {
                assert!(!t.contains('\0'), "a NUL in a text column: {t:?}");
            }
            if let Some(t) = r.event_time_ms {
                assert!((1..=MAX_MILLIS).contains(&t), "unstorable time {t}");
            }
            if let Some(ev) = &r.recording {
                assert!(ev.notes.is_empty(), "inner notes are moved to the top");
                check_event(ev);
            }
            for n in &r.notes {
                assert!(!n.is_empty());
            }
        }
        Err(e) => refused(body, &e),
    }
});

/// An accepted body is UTF-8 JSON with an object at the top (after an optional BOM).
fn accepted(body: &[u8]) {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(text).unwrap_or_else(|e| panic!("accepted non-UTF-8: {e}"));
    let raw: Box<RawValue> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("accepted non-JSON: {e}"));
    assert!(raw.get().starts_with('{'), "accepted a JSON {}", raw.get());
}

/// A refusal is one of the four reasons, and true.
fn refused(body: &[u8], e: &BodyError) {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match e {
        BodyError::NotUtf8 { .. } => assert!(std::str::from_utf8(text).is_err()),
        BodyError::Empty => assert!(
            text.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')),
            "only JSON whitespace is empty"
        ),
        BodyError::NotJson(why) => assert!(!why.is_empty()),
        BodyError::NotAnObject(_) => {
            let raw: Box<RawValue> = serde_json::from_slice(text)
                .unwrap_or_else(|e| panic!("NotAnObject for non-JSON: {e}"));
            assert!(!raw.get().starts_with('{'));
        }
    }
    assert!(!e.to_string().is_empty());
}

fn check_event(ev: &TrtcEvent) {
    for t in [ev.callback_ts_ms, ev.event_ts_ms].into_iter().flatten() {
        assert!((1..=MAX_MILLIS).contains(&t), "unstorable time {t}");
    }
    let texts = [&ev.room_id, &ev.user_id, &ev.unique_id, &ev.task_id];
    for t in texts.into_iter().flatten() {
        assert!(!t.is_empty(), "an empty text is absent");
        assert!(!t.contains('\0'), "a NUL in a text column: {t:?}");
    }
    if let Some(files) = &ev.files {
        // JSON syntax, numbers as received: `1e400` is valid JSON that no f64 holds (the
        // body's storability is checked where bodies are stored, scan::check_storable).
        let raw: Box<RawValue> = serde_json::from_str(files)
            .unwrap_or_else(|e| panic!("files are not JSON: {e}: {files}"));
        assert!(raw.get().starts_with('{'), "files are an object: {files}");
    }
    if let (Some(name), Some(t)) = (ev.event_name, ev.event_type) {
        assert_eq!(callhook::protocol::trtc::event_name(t), Some(name));
    }
    assert_eq!(ev.room_id.is_some(), ev.room_id_kind.is_some());
    assert!(["room", "media", "recording", "trtc"].contains(&ev.family()));
    for n in &ev.notes {
        assert!(n.contains(": "), "a note names its field: {n}");
    }
}
