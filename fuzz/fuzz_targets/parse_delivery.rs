//! Drives the whole pure request path on arbitrary bytes: the query string (parsing,
//! sdkappid, redaction, authentication, classification) and the body (every parser, the
//! scans), and checks the refusal policy: a body is refused only when it is not a JSON
//! object (or nests deeper than callhook stores), and what is accepted holds.
//!
//! Input layout: the query string, a `\n`, then the body. Without a `\n` the whole input
//! is the body and the query is empty.

#![no_main]

use std::time::Duration;

use callhook::auth::authenticate;
use callhook::config::{AppSettings, Secret};
use callhook::protocol::query::redact;
use callhook::protocol::scan::{MAX_DEPTH, depth, postgres_json_trouble};
use callhook::protocol::{
    CallbackQuery, Context, ErrorCode, Kind, MAX_ROWS_PER_DELIVERY, classify, parse_delivery,
};
use libfuzzer_sys::fuzz_target;

/// Plausible times for a delivery received at 1_704_900_000_000: 2010-01-01 to a day later.
const PLAUSIBLE: std::ops::RangeInclusive<i64> = 1_262_304_000_000..=1_704_986_400_000;

const KINDS: [Kind; 7] = [
    Kind::Status,
    Kind::Event,
    Kind::V4StartCall,
    Kind::V4EndCall,
    Kind::V4MemberChanged,
    Kind::V4RecordChanged,
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
        let _ = postgres_json_trouble(text);
    }
});

fn check(kind: Kind, v4_style: bool, ctx: &Context<'_>, body: &[u8]) {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let object = std::str::from_utf8(text).ok().filter(|t| {
        t.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
    });
    let rows = match parse_delivery(kind, v4_style, ctx, body) {
        Ok(rows) => rows,
        Err(r) => {
            match r.code {
                ErrorCode::InvalidJson => assert!(object.is_none(), "refused a JSON object: {r:?}"),
                ErrorCode::Unstorable => assert!(
                    object.is_some_and(|t| depth(t) > MAX_DEPTH),
                    "refused as unstorable: {r:?}"
                ),
                _ => panic!("unexpected code for a body: {r:?}"),
            }
            assert!(!r.reason.is_empty());
            return;
        }
    };
    let Some(text) = object else {
        panic!("accepted a body that is not a JSON object");
    };
    assert!(
        !rows.is_empty() && rows.len() <= MAX_ROWS_PER_DELIVERY,
        "an accepted delivery stores between one row and the cap"
    );
    let again = parse_delivery(kind, v4_style, ctx, body)
        .unwrap_or_else(|r| panic!("second parse refused: {r:?}"));
    assert_eq!(rows, again, "parsing is deterministic");
    for (i, row) in rows.iter().enumerate() {
        let payload = row.payload.as_deref();
        assert_eq!(
            payload,
            (i == 0).then_some(text),
            "the payload is the body as received, on the first row only"
        );
        assert_eq!(row.sdkappid, ctx.sdkappid);
        for t in [row.event_time, row.start_call_ts, row.accept_ts, row.end_ts]
            .into_iter()
            .flatten()
        {
            assert!(PLAUSIBLE.contains(&t), "an implausible time shapes analytics: {t}");
        }
        // Text columns: PostgreSQL cannot hold a NUL in any of them.
        let columns = [
            &row.call_id,
            &row.user_id,
            &row.room_id,
            &row.event,
            &row.client_ip,
            &row.opt_platform,
            &row.members,
            &row.notes,
        ];
        for s in columns.into_iter().flatten().chain([&row.command]) {
            assert!(!s.contains('\0'), "a NUL in a text column: {s:?}");
        }
        if let Some(m) = &row.members {
            assert!(
                serde_json::from_str::<Vec<String>>(m).is_ok(),
                "members is a JSON array of strings: {m}"
            );
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
    let keys: std::collections::HashSet<_> = rows.iter().map(|r| r.dedupe_key).collect();
    assert_eq!(keys.len(), rows.len(), "each row of a delivery has its own key");
}
