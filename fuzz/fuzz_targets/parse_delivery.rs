//! Drives the whole pure request path on arbitrary bytes: the query string (parsing,
//! sdkappid, redaction, authentication, classification) and the body (every parser, the
//! storability scan), and checks what must hold for anything the parser accepts.
//!
//! Input layout: the query string, a `\n`, then the body. Without a `\n` the whole input
//! is the body and the query is empty.

#![no_main]

use std::time::Duration;

use callhook::auth::authenticate;
use callhook::config::{AppSettings, Secret};
use callhook::protocol::query::redact;
use callhook::protocol::scan::check_storable;
use callhook::protocol::{CallbackQuery, Context, ErrorCode, Kind, classify, parse_delivery};
use libfuzzer_sys::fuzz_target;

/// The latest instant a timestamp column may hold (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: i64 = 253_402_300_799_999;

const KINDS: [Kind; 6] = [
    Kind::Status,
    Kind::Event,
    Kind::V4StartCall,
    Kind::V4EndCall,
    Kind::V4MemberChanged,
    Kind::Unknown,
];

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let query = String::from_utf8_lossy(query);

    let q = CallbackQuery::parse(&query);
    let sdkappid = q.sdkappid().unwrap_or(1);
    let redacted = redact(&query);
    for (name, value) in form_urlencoded::parse(redacted.as_bytes()) {
        let name = name.to_ascii_lowercase();
        if name == "token" || name == "sign" {
            assert_eq!(value, "REDACTED", "a secret survived redaction: {redacted}");
        }
    }
    let app = AppSettings {
        token: Some(Secret::new("xxxxyyyy")),
        ..AppSettings::new(sdkappid)
    };
    let _ = authenticate(&app, &q, 1_669_872_112, Duration::from_secs(300));

    let command = q.command.as_deref().map(str::trim).unwrap_or_default();
    let ctx = Context {
        sdkappid,
        command,
        client_ip: q.clientip.as_deref(),
        opt_platform: q.optplatform.as_deref(),
        remote_addr: None,
        received_at: 1_704_900_000_000,
    };
    // The kind the endpoint would use, then every parser on the same body.
    check(classify(command), q.v4_style, &ctx, body);
    for kind in KINDS {
        check(kind, false, &ctx, body);
    }
    check(Kind::Unknown, true, &ctx, body);

    if let Ok(text) = std::str::from_utf8(body) {
        let _ = check_storable(text);
    }
});

fn check(kind: Kind, v4_style: bool, ctx: &Context<'_>, body: &[u8]) {
    let rows = match parse_delivery(kind, v4_style, ctx, body) {
        Ok(rows) => rows,
        Err(r) => {
            assert!(
                matches!(
                    r.code,
                    ErrorCode::InvalidJson | ErrorCode::InvalidField | ErrorCode::Unstorable
                ),
                "unexpected code for a body: {r:?}"
            );
            assert!(!r.reason.is_empty());
            return;
        }
    };
    assert!(
        !rows.is_empty(),
        "an accepted delivery stores at least one row"
    );
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(text)
        .unwrap_or_else(|e| panic!("accepted a body that is not UTF-8: {e}"));
    assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        "accepted a body that is not JSON"
    );
    assert_eq!(
        check_storable(text),
        Ok(()),
        "accepted a body that cannot be stored"
    );
    let again = parse_delivery(kind, v4_style, ctx, body)
        .unwrap_or_else(|r| panic!("second parse refused: {r:?}"));
    assert_eq!(rows.len(), again.len());
    for (row, twin) in rows.iter().zip(&again) {
        assert_eq!(&*row.payload, text, "the payload is the body as received");
        assert_eq!(
            row.dedupe_key, twin.dedupe_key,
            "dedupe keys are deterministic"
        );
        assert_eq!(row.sdkappid, ctx.sdkappid);
        for t in [row.event_time, row.start_call_ts, row.accept_ts, row.end_ts]
            .into_iter()
            .flatten()
        {
            assert!((1..=MAX_MILLIS).contains(&t), "unstorable timestamp {t}");
        }
        // Text columns: PostgreSQL cannot hold a NUL in any of them.
        let columns = [
            &row.call_id,
            &row.user_id,
            &row.room_id,
            &row.event,
            &row.client_ip,
            &row.opt_platform,
        ];
        for s in columns.into_iter().flatten().chain([&row.command]) {
            assert!(!s.contains('\0'), "a NUL in a text column: {s:?}");
        }
        for v in [
            row.role.as_ref().map(|v| v.as_str()),
            row.call_result.as_ref().map(|v| v.as_str()),
        ]
        .into_iter()
        .chain([
            row.media_type.as_ref().map(|v| v.as_str()),
            row.call_type.as_ref().map(|v| v.as_str()),
        ])
        .flatten()
        {
            assert!(!v.is_empty() && !v.contains('\0'), "vocabulary value {v:?}");
        }
    }
}
