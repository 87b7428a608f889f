//! Property tests of the wire format, the one piece both the relay and every API task depend on:
//! any message round-trips, any packing loses no key, and any body a queue can hand over (random
//! text, random JSON, a valid message with one field made hostile, huge, deep or badly escaped)
//! decodes to exactly the message it spells or to the [`DecodeError`] its shape calls for.

use std::fmt::Write as _;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::*;

/// Every field name of the format, drawn often so that random objects collide with them.
const FIELDS: [&str; 14] = [
    "v",
    "kind",
    "source",
    "keys",
    "reason",
    "written_at_ms",
    "writer",
    "slot",
    "slots",
    "covered",
    "interval_ms",
    "id",
    "seq",
    "at_ms",
];

/// Every word of the format, so that random JSON sometimes spells a valid value.
const WORDS: [&str; 6] = ["invalidate", "flush_all", "tick", "users", "roles", "Users"];

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::USERS),
        Just(Source::ROLES),
        "[A-Za-z0-9_.-]{1,64}".prop_map(|name| Source::new(name).expect("the pattern is the rule")),
    ]
}

fn key_version() -> impl Strategy<Value = KeyVersion> {
    (
        any::<String>(),
        prop_oneof!["[0-9]{21,40}", any::<String>()],
        any::<i64>(),
    )
        .prop_map(|(id, seq, at_ms)| KeyVersion {
            id,
            seq: SequenceNumber(seq),
            at_ms,
        })
}

fn invalidation_with(keys: impl Strategy<Value = Vec<KeyVersion>>) -> impl Strategy<Value = Invalidation> {
    prop_oneof![
        (source(), keys).prop_map(|(source, keys)| Invalidation::Invalidate { source, keys }),
        (proptest::option::of(source()), proptest::option::of(any::<String>()))
            .prop_map(|(source, reason)| Invalidation::FlushAll { source, reason }),
        (
            source(),
            any::<i64>(),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(vec(any::<String>(), 0..4)),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(source, written_at_ms, writer, interval_ms, slot, slots, covered)| {
                Invalidation::Tick {
                    source,
                    written_at_ms,
                    writer,
                    slot,
                    slots,
                    covered,
                    interval_ms,
                }
            }),
    ]
}

/// Any message this crate can write.
fn invalidation() -> impl Strategy<Value = Invalidation> {
    invalidation_with(vec(key_version(), 0..32))
}

/// Integers biased towards the small values a version or a timestamp takes, and every range edge.
fn integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..4).prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![i64::MIN, -1, i64::MAX]).prop_map(Value::from),
        select(vec![u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX]).prop_map(Value::from),
    ]
}

/// Any JSON value up to a few levels deep, with object keys drawn from the format's fields.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        integer(),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        select(WORDS.as_slice()).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(field_name(), inner, 0..8).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![select(FIELDS.as_slice()).prop_map(str::to_owned), any::<String>()]
}

/// The JSON form of a message (its `v` included).
fn to_json(message: &Invalidation) -> Value {
    serde_json::from_str(&message.encode().expect("encode")).expect("an encoded message is JSON")
}

/// The fields a message of this `kind` reads, besides `v` and `kind`.
fn fields_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "invalidate" => &["source", "keys"],
        "flush_all" => &["source", "reason"],
        _ => &[
            "source",
            "written_at_ms",
            "writer",
            "slot",
            "slots",
            "covered",
            "interval_ms",
        ],
    }
}

/// Whether every field of `written` is in `read` with the same value (extra fields in `read`,
/// at any level, are allowed: readers ignore fields they do not know).
fn within(written: &Value, read: &Value) -> bool {
    match (written, read) {
        (Value::Object(written), Value::Object(read)) => written
            .iter()
            .all(|(name, value)| read.get(name).is_some_and(|other| within(value, other))),
        (Value::Array(written), Value::Array(read)) => {
            written.len() == read.len() && written.iter().zip(read).all(|(value, other)| within(value, other))
        }
        _ => written == read,
    }
}

/// Whether `message` is what `input` spells: each field the message's kind reads is in the input
/// with that value, an absent optional field being absent or `null` there.
fn spells(message: &Invalidation, input: &Value) -> bool {
    let written = to_json(message);
    let kind = written["kind"].as_str().unwrap_or_default();
    ["v", "kind"]
        .iter()
        .chain(fields_of(kind))
        .all(|&field| match (written.get(field), input.get(field)) {
            (Some(value), Some(other)) => within(value, other),
            (None, None | Some(Value::Null)) => true,
            _ => false,
        })
}

/// What the `v` of a body says before its shape is looked at.
#[derive(Debug, PartialEq, Eq)]
enum Version {
    /// Not an object with an integer `v` that fits a `u32`.
    Unreadable,
    /// [`PROTOCOL_VERSION`]: the rest of the body decides.
    Current,
    /// Another version.
    Other(u32),
}

fn version_of(input: &Value) -> Version {
    match input.get("v").and_then(Value::as_u64).map(u32::try_from) {
        Some(Ok(PROTOCOL_VERSION)) => Version::Current,
        Some(Ok(found)) => Version::Other(found),
        _ => Version::Unreadable,
    }
}

/// The whole contract of [`decode`] on a JSON value: the error its version calls for, else the
/// message it spells or [`DecodeError::InvalidBody`].
fn check_decodes_as_spelled(input: &Value) -> Result<(), TestCaseError> {
    let text = input.to_string();
    let decoded = decode(&text);
    match (version_of(input), &decoded) {
        (Version::Unreadable, Err(DecodeError::Malformed(_)))
        | (Version::Current, Err(DecodeError::InvalidBody(_))) => {}
        (Version::Other(expected), Err(DecodeError::UnsupportedVersion { found })) => prop_assert_eq!(*found, expected),
        (Version::Current, Ok(message)) => prop_assert!(spells(message, input), "{text} decoded to {message:?}"),
        (version, _) => prop_assert!(false, "{text} ({version:?}) decoded to {decoded:?}"),
    }
    Ok(())
}

/// A valid message made hostile in one place.
#[derive(Debug, Clone)]
enum Hostility {
    /// A top-level field (known or not) set to any value.
    Set(String, Value),
    /// A top-level field removed.
    Remove(String),
    /// A field of one of the keys set to any value.
    SetInKey(usize, String, Value),
    /// A field of one of the keys removed.
    RemoveFromKey(usize, String),
}

fn hostility() -> impl Strategy<Value = Hostility> {
    prop_oneof![
        (field_name(), json()).prop_map(|(name, value)| Hostility::Set(name, value)),
        field_name().prop_map(Hostility::Remove),
        (any::<usize>(), field_name(), json()).prop_map(|(at, name, value)| Hostility::SetInKey(at, name, value)),
        (any::<usize>(), field_name()).prop_map(|(at, name)| Hostility::RemoveFromKey(at, name)),
    ]
}

/// The key at `at` (modulo their number) of a message that has keys.
fn key_mut(input: &mut Value, at: usize) -> Option<&mut serde_json::Map<String, Value>> {
    let keys = input.get_mut("keys")?.as_array_mut()?;
    let len = keys.len();
    keys.get_mut(at.checked_rem(len)?)?.as_object_mut()
}

fn make_hostile(message: &Invalidation, hostility: Hostility) -> Value {
    let mut input = to_json(message);
    match hostility {
        Hostility::Set(name, value) => {
            input[name] = value;
        }
        Hostility::Remove(name) => {
            input.as_object_mut().expect("a message is an object").remove(&name);
        }
        Hostility::SetInKey(at, name, value) => {
            if let Some(key) = key_mut(&mut input, at) {
                key.insert(name, value);
            }
        }
        Hostility::RemoveFromKey(at, name) => {
            if let Some(key) = key_mut(&mut input, at) {
                key.remove(&name);
            }
        }
    }
    input
}

/// JSON tokens and near-tokens, so that random text often gets past the first character.
const TOKENS: [&str; 24] = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\"v\"",
    "1",
    "2",
    "-1",
    "1.0",
    "1e400",
    "\"kind\"",
    "\"invalidate\"",
    "\"flush_all\"",
    "\"tick\"",
    "\"source\"",
    "\"users\"",
    "\"keys\"",
    "null",
    "\"\\ud800\"",
    "\"",
    "\\",
];

/// Text a queue could hand over: anything, token soup, or bytes that were not UTF-8 (SQS bodies
/// are strings, so invalid bytes arrive replaced).
fn body_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(select(TOKENS.as_slice()), 0..40).prop_map(|tokens| tokens.concat()),
        vec(any::<u8>(), 0..256).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        invalidation().prop_map(|message| message.encode().expect("encode")),
    ]
}

/// A JSON number literal: any sign, any length of digits, maybe a fraction or an exponent; or an
/// integer near a range edge.
fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,45})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
        integer().prop_map(|integer| integer.to_string()),
    ]
}

/// A users invalidation of one key whose JSON fields are `key_fields`.
fn key_message(key_fields: &str) -> String {
    format!(r#"{{"v":1,"kind":"invalidate","source":"users","keys":[{{{key_fields}}}]}}"#)
}

/// A roles tick with these JSON fields after its source.
fn tick_message(fields: &str) -> String {
    format!(r#"{{"v":1,"kind":"tick","source":"roles",{fields}}}"#)
}

/// The integer a JSON number literal is, if it is one (`-0`, fractions and exponents are floats
/// to the JSON reader).
fn integer_of(literal: &str) -> Option<i128> {
    (literal != "-0").then(|| literal.parse::<i128>().ok()).flatten()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn any_message_round_trips(message in invalidation()) {
        let text = message.encode().expect("encode");
        prop_assert_eq!(decode(&text).expect("decode"), message);
    }

    #[test]
    fn any_text_decodes_as_spelled_or_is_a_typed_error(text in body_text()) {
        // Never a panic; a message only where the text is JSON that spells it.
        if let Ok(message) = decode(&text) {
            let input: Value = serde_json::from_str(&text).expect("a decoded body is JSON");
            prop_assert!(spells(&message, &input), "{text} decoded to {message:?}");
        }
    }

    #[test]
    fn any_json_decodes_as_spelled_or_is_the_error_its_shape_calls_for(input in prop_oneof![
        json(),
        (json(), integer()).prop_map(|(mut input, v)| {
            if let Value::Object(fields) = &mut input {
                fields.insert("v".to_owned(), v);
            }
            input
        }),
    ]) {
        check_decodes_as_spelled(&input)?;
    }

    #[test]
    fn a_valid_message_with_one_hostile_field_decodes_as_spelled_or_is_refused(
        message in invalidation(),
        hostility in hostility(),
    ) {
        check_decodes_as_spelled(&make_hostile(&message, hostility))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packing_loses_no_key_and_respects_the_limit(
        source in source(),
        keys in vec(key_version(), 0..100),
        limit in 64usize..4_096,
    ) {
        let packed = match pack_invalidation_messages(&source, keys.clone(), limit) {
            Ok(packed) => packed,
            Err(EncodeError::KeyTooLarge { size, limit: reported }) => {
                prop_assert_eq!(reported, limit);
                prop_assert!(size > limit);
                return Ok(());
            }
            Err(err) => return Err(TestCaseError::fail(err.to_string())),
        };
        let mut carried = Vec::new();
        for message in packed {
            prop_assert!(message.body.len() <= limit, "{} bytes over {limit}", message.body.len());
            let Ok(Invalidation::Invalidate { source: read, keys }) = decode(&message.body) else {
                return Err(TestCaseError::fail(format!("not an invalidation: {}", message.body)));
            };
            prop_assert_eq!(&read, &source);
            prop_assert!(!keys.is_empty());
            prop_assert_eq!(keys.len(), message.key_count);
            carried.extend(keys);
        }
        prop_assert_eq!(carried, keys);
    }

    #[test]
    fn nesting_of_any_depth_is_refused_where_the_format_reads_and_never_overflows(
        message in invalidation_with(vec(key_version(), 0..4)),
        field in select(FIELDS.as_slice()),
        depth in prop_oneof![1usize..200, 200usize..50_000],
        as_objects in any::<bool>(),
    ) {
        // Built as text: a `Value` this deep would overflow the stack on drop, in the test.
        let (open, close) = if as_objects { ("{\"a\":", "}") } else { ("[", "]") };
        let nested = format!("{}0{}", open.repeat(depth), close.repeat(depth));
        let mut input = to_json(&message);
        let read = field == "kind" || fields_of(input["kind"].as_str().unwrap_or_default()).contains(&field);
        input.as_object_mut().expect("a message is an object").remove(field);
        let text = input.to_string();
        let text = format!("{{\"{field}\":{nested},{}", &text[1..]);
        match decode(&text) {
            Err(DecodeError::Malformed(_)) => prop_assert_eq!(field, "v"),
            Err(DecodeError::InvalidBody(_)) => {
                prop_assert!(field != "v" && (read || depth > 100), "{field} at depth {depth}");
            }
            Ok(decoded) => {
                prop_assert!(!read && field != "v" && depth < 200, "{field} at depth {depth}");
                prop_assert_eq!(decoded, message);
            }
            Err(err) => prop_assert!(false, "{field} at depth {depth}: {err}"),
        }
    }

    #[test]
    fn numbers_of_any_size_decode_only_where_they_fit(
        literal in number_literal(),
        field in select(vec!["v", "written_at_ms", "interval_ms", "at_ms"]),
    ) {
        let (text, fits): (String, fn(i128) -> bool) = match field {
            "v" => (format!(r#"{{"v":{literal},"kind":"flush_all"}}"#), |n| u32::try_from(n).is_ok()),
            "at_ms" => (key_message(&format!(r#""id":"u","seq":"1","at_ms":{literal}"#)), |n| i64::try_from(n).is_ok()),
            "written_at_ms" => (tick_message(&format!(r#""written_at_ms":{literal}"#)), |n| i64::try_from(n).is_ok()),
            _ => (tick_message(&format!(r#""written_at_ms":1,"interval_ms":{literal}"#)), |n| u64::try_from(n).is_ok()),
        };
        let integer = integer_of(&literal);
        // The number read where the literal stands.
        let read = decode(&text).map(|message| match message {
            Invalidation::FlushAll { .. } => Some(i128::from(PROTOCOL_VERSION)),
            Invalidation::Tick { interval_ms, .. } if field == "interval_ms" => interval_ms.map(i128::from),
            Invalidation::Tick { written_at_ms, .. } => Some(i128::from(written_at_ms)),
            Invalidation::Invalidate { keys, .. } => keys.first().map(|key| i128::from(key.at_ms)),
        });
        match read {
            Ok(read) => prop_assert_eq!(read, integer, "{}", text),
            Err(DecodeError::UnsupportedVersion { found }) => {
                prop_assert_eq!((field, Some(i128::from(found))), ("v", integer));
            }
            Err(DecodeError::Malformed(_)) => prop_assert!(field == "v" && !integer.is_some_and(fits), "{text}"),
            Err(DecodeError::InvalidBody(_)) => prop_assert!(field != "v" && !integer.is_some_and(fits), "{text}"),
        }
    }

    #[test]
    fn escaped_strings_decode_exactly_when_they_are_unicode(
        units in vec(any::<u16>(), 0..8),
        field in select(vec!["reason", "x", "id", "seq"]),
    ) {
        let literal = units.iter().fold(String::new(), |mut literal, unit| {
            let _ = write!(literal, "\\u{unit:04x}");
            literal
        });
        let text = match field {
            "reason" | "x" => format!(r#"{{"v":1,"kind":"flush_all","{field}":"{literal}"}}"#),
            "id" => key_message(&format!(r#""id":"{literal}","seq":"1","at_ms":1"#)),
            _ => key_message(&format!(r#""id":"u","seq":"{literal}","at_ms":1"#)),
        };
        let expected = char::decode_utf16(units.iter().copied()).collect::<Result<String, _>>();
        match (decode(&text), expected) {
            (Ok(Invalidation::FlushAll { reason, .. }), Ok(string)) => {
                prop_assert_eq!(reason, (field == "reason").then_some(string));
            }
            (Ok(Invalidation::Invalidate { keys, .. }), Ok(string)) => {
                let read = if field == "id" { &keys[0].id } else { &keys[0].seq.0 };
                prop_assert_eq!(read, &string);
            }
            (Err(DecodeError::InvalidBody(_)), Err(_)) => {}
            (outcome, expected) => prop_assert!(false, "{text}: {outcome:?}, expected {expected:?}"),
        }
    }
}

/// A plain key, cheap to generate by the thousand (odd ids are [`key_version`]'s job).
fn plain_key_version() -> impl Strategy<Value = KeyVersion> {
    (any::<u32>(), any::<u64>(), any::<i64>()).prop_map(|(id, seq, at_ms)| KeyVersion {
        id: format!("user-{id}"),
        seq: SequenceNumber(seq.to_string()),
        at_ms,
    })
}

proptest! {
    // Up to about four SNS messages' worth of keys per case: a few dozen cases suffice.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn huge_key_lists_round_trip_and_one_bad_key_refuses_the_message(
        source in source(),
        keys in vec(plain_key_version(), 1_000..12_000),
        bad_at in any::<usize>(),
        bad_key in json().prop_filter("not a key", |value| KeyVersion::deserialize(value).is_err()),
    ) {
        let message = Invalidation::Invalidate { source, keys };
        let mut input = to_json(&message);
        prop_assert_eq!(decode(&input.to_string()).expect("decode"), message);
        let keys = input["keys"].as_array_mut().expect("keys");
        let len = keys.len();
        keys[bad_at % len] = bad_key;
        prop_assert!(matches!(decode(&input.to_string()), Err(DecodeError::InvalidBody(_))));
    }
}
