//! Property tests for the protocol module: parsing never panics, whatever arrives, and
//! what it accepts is consistent; normalisation is idempotent and vocabulary parsing
//! stable.

use proptest::prelude::*;

use super::values::{CallResult, CallType, MediaType, MemberAction, Role, normalize, unix_time};
use super::{CallbackQuery, Context, ErrorCode, Family, Kind, classify, parse_delivery, scan};

const KINDS: [Kind; 7] = [
    Kind::Status,
    Kind::Event,
    Kind::V4StartCall,
    Kind::V4EndCall,
    Kind::V4MemberChanged,
    Kind::V4RecordChanged,
    Kind::Unknown,
];

/// The latest instant a timestamp column may hold (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: i64 = 253_402_300_799_999;
/// What a time column may hold for a delivery received at `ctx().received_at`: a
/// plausible time, 2010-01-01 to a day after receipt.
const PLAUSIBLE: std::ops::RangeInclusive<i64> = 1_262_304_000_000..=1_704_986_400_000;

fn ctx(command: &str) -> Context<'_> {
    Context {
        sdkappid: 1_400_000_001,
        command,
        client_ip: Some("10.0.0.1"),
        opt_platform: Some("iOS"),
        remote_addr: None,
        received_at: 1_704_900_000_000,
    }
}

fn command_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Status => "call_end",
        Kind::Event => "caller_call_end",
        Kind::V4StartCall => "Call.CallbackAfterStartCall",
        Kind::V4EndCall => "Call.CallbackAfterEndCall",
        Kind::V4MemberChanged => "Call.CallbackAfterMemberChanged",
        Kind::V4RecordChanged => "Call.CallbackAfterRecordChanged",
        Kind::Unknown => "caller_new_thing",
    }
}

/// Parses `body` as every kind, in both query styles, and checks what holds for any
/// input: it is refused (71001, with a reason) exactly when it is not a JSON object;
/// otherwise it makes rows, the first keeping the body verbatim, deterministically, with
/// only plausible times and no NUL in a text column.
fn check_every_kind(body: &[u8]) -> Result<(), TestCaseError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // Valid JSON (numbers of any size: JSON does not bound them) with an object on top,
    // within the nesting callhook stores.
    let is_object = std::str::from_utf8(text).is_ok_and(|t| {
        t.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
            && scan::depth(t) <= scan::MAX_DEPTH
    });
    for kind in KINDS {
        for v4_style in [false, true] {
            let command = command_for(kind);
            let parsed = parse_delivery(kind, v4_style, &ctx(command), body);
            match parsed {
                Err(r) => {
                    prop_assert!(!is_object, "a JSON object is never refused: {:?}", r);
                    prop_assert!(matches!(
                        r.code,
                        ErrorCode::InvalidJson | ErrorCode::Unstorable
                    ));
                    prop_assert!(!r.reason.is_empty());
                }
                Ok(rows) => {
                    prop_assert!(is_object, "only a JSON object is accepted");
                    prop_assert!(!rows.is_empty() && rows.len() <= super::MAX_ROWS_PER_DELIVERY);
                    let again = parse_delivery(kind, v4_style, &ctx(command), body);
                    let again = again.map_err(|r| TestCaseError::fail(r.to_string()))?;
                    prop_assert_eq!(&rows, &again, "deterministic");
                    prop_assert_eq!(rows[0].payload.as_deref().map(str::as_bytes), Some(text));
                    for (i, row) in rows.iter().enumerate() {
                        prop_assert_eq!(row.payload.is_some(), i == 0, "the body once");
                        prop_assert_eq!(row.command.as_str(), command);
                        prop_assert_eq!(row.sdkappid, 1_400_000_001);
                        let family = match kind {
                            Kind::Status => Family::Status,
                            Kind::Event => Family::Event,
                            Kind::Unknown => Family::Other,
                            _ => Family::V4,
                        };
                        prop_assert_eq!(row.family, family);
                        for t in [row.event_time, row.start_call_ts, row.accept_ts, row.end_ts]
                            .into_iter()
                            .flatten()
                        {
                            prop_assert!(PLAUSIBLE.contains(&t), "timestamp {}", t);
                        }
                        for text in [&row.call_id, &row.user_id, &row.room_id, &row.event]
                            .into_iter()
                            .flatten()
                        {
                            prop_assert!(!text.contains('\0'));
                        }
                        prop_assert!(row.notes.as_ref().is_none_or(|n| !n.is_empty()));
                    }
                    let keys: std::collections::HashSet<_> =
                        rows.iter().map(|r| r.dedupe_key).collect();
                    prop_assert_eq!(keys.len(), rows.len(), "each row its own key");
                }
            }
        }
    }
    Ok(())
}

/// A JSON number literal: ordinary, huge, tiny, negative, fractional, with exponents.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        (1_600_000_000i64..1_800_000_000).prop_map(|n| n.to_string()),
        (1_600_000_000_000i64..1_800_000_000_000).prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{15,40}",
        "-?[0-9]\\.[0-9]{1,5}[eE][+-]?[0-9]{1,7}",
    ]
}

/// A JSON string literal with escapes, including `\u` escapes of any code unit (lone
/// surrogates and `\u0000` too).
fn string_literal() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 _.-]{0,6}",
        Just("\\\"".to_owned()),
        Just("\\\\".to_owned()),
        Just("\\n".to_owned()),
        any::<u16>().prop_map(|u| format!("\\u{u:04x}")),
        Just("\\ud83d\\ude00".to_owned()),
        "\\PC{0,3}".prop_map(|s| s.replace(['"', '\\'], "")),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// Field names the typed parsers know, so generated bodies reach the typed paths.
const KEYS: &[&str] = &[
    "UserId",
    "RoomId",
    "TotalNum",
    "MediaType",
    "CallType",
    "CallId",
    "Role",
    "CallResult",
    "EventTime",
    "StartCallTs",
    "AcceptTs",
    "EndTs",
    "Event",
    "CallbackCommand",
    "CallInfo",
    "CallMediaType",
    "ChatGroupId",
    "RoomIdType",
    "CallRecord",
    "Caller_Account",
    "StartTime",
    "EndTime",
    "AcceptTime",
    "CalleeList_Account",
    "UserList",
    "ChangedUserList",
    "User_Account",
    "Status",
    "ActionType",
    "Other",
];

/// A JSON document as text (so numbers of any size survive), mostly shaped like a
/// callback: an object with known keys and values of every JSON type.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string_literal(),
        proptest::sample::select(
            &[
                "\"\"",
                "\"Audio\"",
                "\"video\"",
                "\"SingleCall\"",
                "\"MultiCall\"",
                "\"group\"",
                "\"NormalEnd\"",
                "\"not_answer\"",
                "\"Offline\"",
                "\"Hang Up\"",
                "\"Canncel_Invite\"",
                "\"Caller\"",
                "\"callee\"",
                "\"Calling\"",
                "\"0\"",
                "0",
                "\"1704856873\"",
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    let value = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }
            ),
        ]
    });
    proptest::collection::vec((proptest::sample::select(KEYS), value), 0..14).prop_map(|fields| {
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

/// Strings over an alphabet chosen to stress normalisation: cases, digits, every
/// separator, Unicode whitespace, letters whose lower case is several characters, upper
/// case letters without a lower case, title case letters.
fn tricky_text() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = "aZbYz09_-. \t\u{a0}\u{3000}\u{2028}İẞßΣσǅǄ𝐀Ⓐ\u{307}é"
        .chars()
        .collect();
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(alphabet), 0..12)
            .prop_map(|v| v.into_iter().collect::<String>()),
        any::<String>(),
        "[A-Za-z_ ]{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_delivery_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_every_kind(&body)?;
        let mut with_brace = b"{".to_vec();
        with_brace.extend_from_slice(&body);
        check_every_kind(&with_brace)?;
    }

    #[test]
    fn parse_delivery_never_panics_on_strings(body in any::<String>()) {
        check_every_kind(body.as_bytes())?;
        check_every_kind(format!("{{{body}").as_bytes())?;
    }

    #[test]
    fn parse_delivery_never_panics_on_json(body in json_text()) {
        check_every_kind(body.as_bytes())?;
    }

    /// A whole-document check that cannot panic either, on anything.
    #[test]
    fn postgres_json_trouble_never_panics(text in any::<String>()) {
        let _ = scan::postgres_json_trouble(&text);
    }

    #[test]
    fn query_parsing_never_panics(raw in any::<String>(), tail in "[a-zA-Z0-9%&=+._-]{0,40}") {
        for q in [raw.clone(), format!("{raw}&{tail}"), tail.clone()] {
            let parsed = CallbackQuery::parse(&q);
            let _ = parsed.sdkappid();
            if let Some(c) = &parsed.command {
                let _ = classify(c);
            }
            let _ = super::query::redact(&q);
        }
    }

    /// A secret in the query never survives redaction, whatever surrounds it and however
    /// its name is spelled.
    #[test]
    fn redaction_removes_secrets(
        before in "[a-z0-9=&%]{0,20}",
        after in "[a-z0-9=&%]{0,20}",
        name in proptest::sample::select(&["token", "TOKEN", "Token", "sign", "Sign", "%74oken", "%53ign"][..]),
        secret in "[A-Z][A-Z0-9]{7,15}",
    ) {
        let q = format!("{before}&{name}={secret}&{after}");
        prop_assert!(!super::query::redact(&q).contains(&secret), "{}", q);
    }

    #[test]
    fn normalize_is_idempotent(raw in tricky_text()) {
        let once = normalize(&raw);
        prop_assert_eq!(normalize(&once), once.clone(), "raw {:?}", raw);
        prop_assert!(!once.starts_with('_') && !once.ends_with('_'));
        prop_assert!(!once.contains("__"));
    }

    #[test]
    fn vocabulary_parsing_is_stable(raw in tricky_text()) {
        fn stable<T: PartialEq + std::fmt::Debug>(
            from_wire: fn(&str) -> Option<T>,
            as_str: fn(&T) -> &str,
            raw: &str,
        ) -> Result<(), TestCaseError> {
            if let Some(v) = from_wire(raw) {
                let text = as_str(&v).to_owned();
                prop_assert!(!text.is_empty());
                prop_assert_eq!(normalize(&text), text.clone());
                prop_assert_eq!(from_wire(&text), Some(v), "raw {:?}", raw);
            }
            Ok(())
        }
        stable(CallResult::from_wire, CallResult::as_str, &raw)?;
        stable(MediaType::from_wire, MediaType::as_str, &raw)?;
        stable(CallType::from_wire, CallType::as_str, &raw)?;
        stable(Role::from_wire, Role::as_str, &raw)?;
        stable(MemberAction::from_wire, MemberAction::as_str, &raw)?;
    }

    #[test]
    fn unix_time_is_storable_or_absent(v in any::<i64>()) {
        if let Some(ms) = unix_time(Some(v)) {
            prop_assert!((1..=MAX_MILLIS).contains(&ms));
        }
    }

    /// Lenient integers agree with the plain integer parser where both apply.
    #[test]
    fn lenient_integers_agree(n in any::<i64>(), quoted in any::<bool>()) {
        let json = if quoted { format!(r#""{n}""#) } else { n.to_string() };
        let raw: &serde_json::value::RawValue = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(super::fields::read_i64(raw), Ok(Some(n)));
}
}
