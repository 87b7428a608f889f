//! Property tests of the record mapping over hostile stream records: partition keys of every kind
//! and type, missing keys and images, deep maps, odd event names, tables and sequence numbers.
//! Records are generated as the Lambda JSON they arrive as: the mapping is checked on those
//! Lambda's type reads, and the whole relay ([`Relay::handle_lenient`]) on any batch of them,
//! the refused ones included.
//!
//! The invariant: any record maps to a key the record names, a heartbeat, a flush of its source
//! (of every source when it names no table) when it names no key, or a counted skip of an
//! unrelated key space (another table, another prefix), a no-op write or a heartbeat read in
//! part. A record of a watched table is never dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::EventRecord;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_dynamo::{AttributeValue, Item};
use serde_json::{Value, json};
use staleless_protocol::keys::{
    HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_PK_PREFIX, HEARTBEAT_WRITTEN_AT_ATTRIBUTE, PARTITION_KEY, ROLE_PK_PREFIX,
    SORT_KEY, USER_ID_ATTRIBUTE, USER_PK_PREFIX,
};
use staleless_protocol::{Source, compare_sequence_numbers};

use super::tests::mapper;
use super::*;
use crate::{LenientEvent, MemoryPublisher, Relay};

/// The stream ARNs of the tables [`mapper`] serves, and of one it does not.
const USERS_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/staleless-users/stream/2024-11-25T00:00:00.000";
const ROLES_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/staleless-app-roles/stream/2024-11-25T00:00:00.000";
const OTHER_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/someone-elses/stream/2024-11-25T00:00:00.000";

/// The attribute [`mapper`] ignores.
const IGNORED: &str = "lastLoginAt";

/// When the batch arrives, ms since the epoch: stands in for a missing creation time.
const RECEIVED_AT_MS: i64 = 1_732_500_000_000;

/// Attribute names the mapping reads, drawn often, and any other.
fn attribute_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            PARTITION_KEY,
            SORT_KEY,
            USER_ID_ATTRIBUTE,
            IGNORED,
            HEARTBEAT_WRITTEN_AT_ATTRIBUTE,
            HEARTBEAT_INTERVAL_ATTRIBUTE,
            "status"
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// Text from empty to a few KiB (DynamoDB's key limit is 2 KiB), any characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => any::<String>(),
        1 => (any::<char>(), 1_000usize..4_000).prop_map(|(c, len)| c.to_string().repeat(len)),
    ]
}

/// A DynamoDB number as text, or text that is not one.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof!["-?[0-9]{1,25}", "-?[0-9]{1,5}\\.[0-9]{1,5}", any::<String>()]
}

/// A few ids, so that records of one batch share keys.
const POOLED_IDS: [&str; 4] = ["u-1", "u-2", "staff", "staleless"];

/// An id: often one of [`POOLED_IDS`], else any text.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![select(POOLED_IDS.as_slice()).prop_map(str::to_owned), text()]
}

/// A partition key string: each prefix with an id, bare, or anything.
fn pk_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (select(vec![USER_PK_PREFIX, ROLE_PK_PREFIX, HEARTBEAT_PK_PREFIX]), id())
            .prop_map(|(prefix, id)| format!("{prefix}{id}")),
        1 => select(vec![USER_PK_PREFIX, ROLE_PK_PREFIX, HEARTBEAT_PK_PREFIX, "", "user#u-1", "TOOL#search"])
            .prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Any well-formed attribute value in DynamoDB JSON, nested a few levels.
fn attribute() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => text().prop_map(|s| json!({ "S": s })),
        2 => number_text().prop_map(|n| json!({ "N": n })),
        1 => "([A-Za-z0-9+/]{4}){0,4}".prop_map(|b| json!({ "B": b })),
        1 => any::<bool>().prop_map(|b| json!({ "BOOL": b })),
        1 => Just(json!({ "NULL": true })),
        1 => vec(any::<String>(), 0..4).prop_map(|ss| json!({ "SS": ss })),
        1 => vec(number_text(), 0..4).prop_map(|ns| json!({ "NS": ns })),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            btree_map(attribute_name(), inner.clone(), 0..4).prop_map(|m| json!({ "M": m })),
            vec(inner, 0..4).prop_map(|l| json!({ "L": l })),
        ]
    })
}

/// An attribute value Lambda's type refuses: a wrong shape or bad base64.
fn malformed_attribute() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec![
            json!({}),
            json!("plain"),
            json!(5),
            json!({ "S": 5 }),
            json!({ "S": "a", "N": "1" }),
            json!({ "X": "1" })
        ]),
        "[^A-Za-z0-9+/]{1,8}".prop_map(|b| json!({ "B": b })),
    ]
}

/// A map nested `depth` times: deeper than any item should be, within what the Lambda runtime's
/// JSON reader lets through (128 levels in all).
fn deep_map() -> impl Strategy<Value = Value> {
    (1usize..55, attribute())
        .prop_map(|(depth, innermost)| (0..depth).fold(innermost, |inner, _| json!({ "M": { "a": inner } })))
}

/// A partition key of any type: a string of any form most often.
fn pk_attribute() -> impl Strategy<Value = Value> {
    prop_oneof![24 => pk_text().prop_map(|pk| json!({ "S": pk })), 6 => attribute(), 1 => malformed_attribute()]
}

/// An image or `Keys` map: some attributes, maybe a `PK`, a `userId`, a deep map, rarely a
/// malformed attribute.
fn item() -> impl Strategy<Value = Value> {
    (
        btree_map(attribute_name(), attribute(), 0..5),
        option::weighted(0.8, pk_attribute()),
        option::of(id().prop_map(|id| json!({ "S": id }))),
        option::weighted(0.1, deep_map()),
        option::weighted(0.02, malformed_attribute()),
    )
        .prop_map(|(mut attributes, pk, user_id, deep, malformed)| {
            let named = [
                (PARTITION_KEY, pk),
                (USER_ID_ATTRIBUTE, user_id),
                ("deep", deep),
                ("malformed", malformed),
            ];
            for (name, value) in named {
                if let Some(value) = value {
                    attributes.insert(name.to_owned(), value);
                }
            }
            json!(attributes)
        })
}

/// Any value where a record has a string or a number, for the rare structurally wrong record.
fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(5)),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true))
    ]
}

/// A stream record as Lambda delivers it, hostile in any field.
fn record() -> impl Strategy<Value = Value> {
    let event_name = prop_oneof![
        32 => select(vec!["INSERT", "MODIFY", "REMOVE"]).prop_map(Value::from),
        4 => any::<String>().prop_map(Value::from),
        1 => wrong_type(),
    ];
    let arn = option::weighted(
        0.95,
        prop_oneof![
            12 => select(vec![USERS_ARN, ROLES_ARN]).prop_map(Value::from),
            1 => select(vec![OTHER_ARN, "arn:aws:dynamodb:us-east-1:1:table/", "not an arn"]).prop_map(Value::from),
            1 => any::<String>().prop_map(Value::from),
        ],
    );
    let sequence_number = option::weighted(
        0.95,
        prop_oneof![
            32 => "[0-9]{1,40}".prop_map(Value::from),
            4 => Just(json!("")),
            4 => any::<String>().prop_map(Value::from),
            1 => wrong_type(),
        ],
    );
    let created = option::weighted(
        0.9,
        prop_oneof![
            32 => (0i64..4_000_000_000).prop_map(Value::from),
            4 => select(vec![-1, 0, 1]).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            1 => wrong_type(),
        ],
    );
    let user_identity = option::of(prop_oneof![
        8 => Just(json!({ "type": "Service", "principalId": TTL_PRINCIPAL })),
        8 => (any::<String>(), any::<String>())
            .prop_map(|(kind, principal)| json!({ "type": kind, "principalId": principal })),
        1 => wrong_type(),
    ]);
    let images = (
        option::weighted(0.8, item()),
        option::weighted(0.7, item()),
        option::weighted(0.7, item()),
    );
    (
        event_name,
        arn,
        sequence_number,
        created,
        user_identity,
        images,
        any::<u8>(),
    )
        .prop_map(
            |(event_name, arn, sequence_number, created, user_identity, (keys, new_image, old_image), shape)| {
                let mut change = BTreeMap::new();
                // One record in 32 lacks a field Lambda's type requires.
                if shape % 32 != 0 {
                    change.insert("SizeBytes", json!(100));
                }
                let optional = [
                    ("Keys", keys),
                    ("NewImage", new_image),
                    ("OldImage", old_image),
                    ("SequenceNumber", sequence_number),
                    ("ApproximateCreationDateTime", created),
                ];
                change.extend(optional.into_iter().filter_map(|(name, value)| Some((name, value?))));
                let mut record = record_json(event_name, json!(change));
                for (name, value) in [("eventSourceARN", arn), ("userIdentity", user_identity)] {
                    if let Some(value) = value {
                        record[name] = value;
                    }
                }
                record
            },
        )
}

/// A well-formed record of one of [`POOLED_IDS`] under any prefix (heartbeats included), so that
/// a batch often holds several records of one key in any order of sequence numbers.
fn pooled_record() -> impl Strategy<Value = Value> {
    (
        select(vec!["INSERT", "MODIFY", "REMOVE"]),
        select(vec![USERS_ARN, ROLES_ARN]),
        select(vec![USER_PK_PREFIX, ROLE_PK_PREFIX, HEARTBEAT_PK_PREFIX]),
        select(POOLED_IDS.as_slice()),
        "[0-9]{1,3}",
    )
        .prop_map(|(event_name, arn, prefix, id, seq)| {
            let change = json!({
                "Keys": { PARTITION_KEY: { "S": format!("{prefix}{id}") } },
                "SequenceNumber": seq,
                "SizeBytes": 100,
            });
            let mut record = record_json(event_name.into(), change);
            record["eventSourceARN"] = arn.into();
            record
        })
}

/// The JSON of a stream record with this event name and `dynamodb` object.
fn record_json(event_name: Value, change: Value) -> Value {
    let mut record = json!({
        "eventID": "e-1",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
    });
    record["eventName"] = event_name;
    record["dynamodb"] = change;
    record
}

/// A batch of hostile records and well-formed records of a few shared keys.
fn batch() -> impl Strategy<Value = Vec<Value>> {
    vec(prop_oneof![2 => record(), 1 => pooled_record()], 1..12)
}

/// Reads a generated record the way the relay does; `None` where Lambda's type refuses it.
fn parse(record: &Value) -> Option<EventRecord> {
    serde_json::from_value(record.clone()).ok()
}

/// What the record itself says, to hold each mapping against.
fn string_attribute<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

/// Checks one record's mapping against the record: a change names an id the record spells, at its
/// sequence number, for the table it came from; a flush is of the record's table (of every table
/// when it names none) and only for a record that names no key; a skip is of an unrelated key
/// space, a no-op write or a heartbeat read in part.
fn check_mapping(record: &EventRecord, mapped: Mapped<'_>) -> Result<(), TestCaseError> {
    let change = &record.change;
    let seq = change.sequence_number.as_deref().filter(|seq| !seq.is_empty());
    let known_operation = matches!(record.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE");
    let table = record
        .event_source_arn
        .as_deref()
        .and_then(table_of_stream_arn)
        .or(record.table_name.as_deref())
        .filter(|table| !table.is_empty());
    let source = match table {
        Some("staleless-users") => Some(&Source::USERS),
        Some("staleless-app-roles") => Some(&Source::ROLES),
        _ => None,
    };
    let pk = [&change.keys, &change.new_image, &change.old_image]
        .into_iter()
        .find_map(|item| item.get(PARTITION_KEY));
    let pk = match pk {
        Some(AttributeValue::S(pk)) => Some(pk.as_str()),
        _ => None,
    };
    let after = |prefix: &str| pk.and_then(|pk| pk.strip_prefix(prefix));
    let heartbeat_writer = after(HEARTBEAT_PK_PREFIX).filter(|writer| !writer.is_empty());
    let user_id_attribute = |id: Option<&str>| {
        [&change.new_image, &change.old_image].into_iter().any(|image| {
            string_attribute(image, USER_ID_ATTRIBUTE)
                .is_some_and(|value| !value.is_empty() && id.is_none_or(|id| id == value))
        })
    };
    match mapped {
        Mapped::Invalidate(published) => {
            prop_assert_eq!(
                Some(published.source),
                source,
                "published a change of table {:?}",
                table
            );
            prop_assert_eq!(published.seq, seq.unwrap_or(MISSING_SEQUENCE_NUMBER));
            prop_assert!(!published.id.is_empty());
            prop_assert!(published.at_ms > 0, "at_ms {}", published.at_ms);
            match (published.kind, published.source) {
                (ChangeKind::Heartbeat, _) => {
                    prop_assert_eq!(heartbeat_writer, Some(published.id));
                    prop_assert!(
                        known_operation && seq.is_some(),
                        "a tick on a record read in part: {record:?}"
                    );
                    prop_assert_ne!(record.event_name.as_str(), "REMOVE");
                    prop_assert_eq!(published.defect, None);
                }
                (ChangeKind::Key, source) => {
                    prop_assert_eq!(published.defect.is_some(), seq.is_none() || !known_operation);
                    if source == &Source::ROLES {
                        prop_assert_eq!(after(ROLE_PK_PREFIX), Some(published.id));
                    } else {
                        prop_assert!(
                            after(USER_PK_PREFIX) == Some(published.id)
                                || (matches!(pk, None | Some(USER_PK_PREFIX)) && user_id_attribute(Some(published.id))),
                            "user {:?} from PK {pk:?}",
                            published.id
                        );
                    }
                }
            }
        }
        Mapped::Flush(flush) => {
            prop_assert_eq!(flush.table, table);
            prop_assert_eq!(flush.seq, seq.unwrap_or(MISSING_SEQUENCE_NUMBER));
            match (table, flush.source.map(Source::as_str)) {
                // No table named: the record is ours (the function reads our streams only).
                (None, None) => {}
                (Some(_), Some("users")) => {
                    prop_assert_eq!(source, Some(&Source::USERS));
                    prop_assert!(matches!(pk, None | Some(USER_PK_PREFIX)), "flushed on PK {pk:?}");
                    prop_assert!(!user_id_attribute(None), "flushed although a userId names the user");
                }
                (Some(_), Some("roles")) => {
                    prop_assert_eq!(source, Some(&Source::ROLES));
                    prop_assert!(matches!(pk, None | Some(ROLE_PK_PREFIX)), "flushed on PK {pk:?}");
                }
                other => return Err(TestCaseError::fail(format!("flush {other:?} of {record:?}"))),
            }
        }
        Mapped::Skip(SkipReason::Ignored(_)) => {
            let other_prefix = match source.map(Source::as_str) {
                Some("users") => pk.is_some_and(|pk| !pk.starts_with(USER_PK_PREFIX)),
                Some("roles") => pk.is_some_and(|pk| !pk.starts_with(ROLE_PK_PREFIX)),
                _ => false,
            };
            let removed_heartbeat = heartbeat_writer.is_some() && record.event_name == "REMOVE";
            prop_assert!(
                (table.is_some() && source.is_none()) || other_prefix || removed_heartbeat,
                "ignored a record of a watched key space: {record:?}"
            );
        }
        Mapped::Skip(SkipReason::Malformed(_)) => {
            prop_assert!(source.is_some() && heartbeat_writer.is_some(), "{record:?}");
            prop_assert!(seq.is_none() || !known_operation, "{record:?}");
        }
        Mapped::Skip(SkipReason::NoOp) => {
            prop_assert!(source.is_some() && record.event_name == "MODIFY", "{record:?}");
        }
    }
    Ok(())
}

/// A users-table record for `USER#<id>` with these images (`Keys` only when `with_keys`).
fn user_record(id: &str, event_name: &str, old: Option<Value>, new: Option<Value>, with_keys: bool) -> Value {
    let pk = json!({ "S": format!("{USER_PK_PREFIX}{id}") });
    let mut change = json!({ "SequenceNumber": "4100000000000000000001", "SizeBytes": 100 });
    if with_keys {
        change["Keys"] = json!({ PARTITION_KEY: pk, SORT_KEY: { "S": "PROFILE" } });
    }
    for (name, image) in [("OldImage", old), ("NewImage", new)] {
        if let Some(mut image) = image {
            image[PARTITION_KEY] = pk.clone();
            change[name] = image;
        }
    }
    let mut record = record_json(event_name.into(), change);
    record["eventSourceARN"] = USERS_ARN.into();
    record
}

/// An image of well-formed attributes (no `PK`: the record builders set it).
fn valid_image() -> impl Strategy<Value = BTreeMap<String, Value>> {
    btree_map(
        attribute_name().prop_filter("the key is set apart", |name| name != PARTITION_KEY),
        attribute(),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_record_maps_to_a_key_a_heartbeat_a_flush_of_its_source_or_a_counted_skip(batch in batch()) {
        let records: Vec<EventRecord> = batch.iter().filter_map(parse).collect();
        let mut inspected = 0usize;
        let MappedBatch { keys, flushes, counts } =
            map_batch(mapper(), &records, RECEIVED_AT_MS, |_, _, _| inspected += 1);

        let mapped: Vec<Mapped<'_>> = records.iter().map(|record| mapper().map(record, RECEIVED_AT_MS)).collect();
        let mut expected = MappingCounts::default();
        // Per (source, kind, id): the latest sequence number, and the record a failed publish must
        // report (a key's first record; a heartbeat's latest, so its tick follows the changes before it).
        let mut latest: HashMap<(Source, ChangeKind, &str), (&str, usize)> = HashMap::new();
        // Per flushed source (`None`: every source): the latest sequence number and the first record.
        let mut flushed: HashMap<Option<Source>, (&str, usize)> = HashMap::new();
        for (position, (record, mapped)) in records.iter().zip(&mapped).enumerate() {
            check_mapping(record, *mapped)?;
            expected.read_in_part += usize::from(mapped.malformed().is_some());
            match mapped {
                Mapped::Invalidate(change) => {
                    match change.kind {
                        ChangeKind::Key => expected.invalidating += 1,
                        ChangeKind::Heartbeat => expected.heartbeats += 1,
                    }
                    expected.ttl_expiries += usize::from(change.ttl_expiry);
                    let (seq, first_record) =
                        latest.entry((change.source.clone(), change.kind, change.id)).or_insert((change.seq, position));
                    if compare_sequence_numbers(change.seq, seq).is_gt() {
                        *seq = change.seq;
                        if change.kind == ChangeKind::Heartbeat {
                            *first_record = position;
                        }
                    }
                }
                Mapped::Flush(flush) => {
                    expected.flushing += 1;
                    let (seq, _) = flushed.entry(flush.source.cloned()).or_insert((flush.seq, position));
                    if compare_sequence_numbers(flush.seq, seq).is_gt() {
                        *seq = flush.seq;
                    }
                }
                Mapped::Skip(SkipReason::NoOp) => expected.no_op += 1,
                Mapped::Skip(SkipReason::Ignored(_)) => expected.ignored += 1,
                Mapped::Skip(SkipReason::Malformed(_)) => expected.malformed += 1,
            }
        }
        prop_assert_eq!(counts, expected);
        prop_assert_eq!(inspected, records.len());
        prop_assert_eq!(
            counts.invalidating + counts.heartbeats + counts.flushing + counts.no_op + counts.ignored + counts.malformed,
            records.len()
        );

        // One pending key per (source, kind, id), at its latest sequence number, in batch order.
        prop_assert_eq!(keys.len(), latest.len());
        for key in &keys {
            prop_assert_eq!(latest.get(&(key.source.clone(), key.kind, key.id)), Some(&(key.seq, key.first_record)));
        }
        prop_assert!(keys.windows(2).all(|pair| pair[0].first_record <= pair[1].first_record));
        // One pending flush per source, likewise.
        prop_assert_eq!(flushes.len(), flushed.len());
        for flush in &flushes {
            prop_assert_eq!(flushed.get(&flush.source.cloned()), Some(&(flush.seq, flush.first_record)));
        }
        prop_assert!(flushes.windows(2).all(|pair| pair[0].first_record < pair[1].first_record));
    }

    #[test]
    fn any_batch_is_relayed_whole_with_every_record_counted(batch in batch()) {
        let publisher = Arc::new(MemoryPublisher::new());
        let relay = Relay::new(mapper().clone(), publisher.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let outcome = runtime.block_on(relay.handle_lenient(LenientEvent { records: batch.clone() }));

        let summary = &outcome.summary;
        prop_assert!(outcome.response.batch_item_failures.is_empty(), "{:?}", outcome.response);
        prop_assert_eq!(summary.records_in, batch.len());
        let counted = summary.records_invalidating
            + summary.heartbeats
            + summary.records_flushing
            + summary.skipped_no_op
            + summary.skipped_ignored
            + summary.skipped_malformed;
        prop_assert_eq!(counted, batch.len());
        // Every record of ours Lambda's type refuses is malformed, and relayed for what can be read
        // of it (another table's is ignored whatever its shape).
        let refused_of_ours = batch
            .iter()
            .filter(|record| parse(record).is_none())
            .filter(|record| {
                let table = record.get("eventSourceARN").and_then(Value::as_str).and_then(table_of_stream_arn);
                table.is_none_or(|table| ["staleless-users", "staleless-app-roles"].contains(&table))
            })
            .count();
        prop_assert!(summary.records_malformed >= refused_of_ours);
        // Each pending key goes out once: in an invalidation, or as its table's tick.
        prop_assert_eq!(summary.keys_published + summary.ticks_published.values().sum::<usize>(), summary.keys);
        let messages = publisher.accepted_messages();
        let mut published = 0;
        let mut flushes = Vec::new();
        for (attribute, message) in &messages {
            prop_assert_eq!(attribute.as_ref(), message.source(), "the source attribute matches the body");
            match message {
                staleless_protocol::Invalidation::Invalidate { keys, .. } => published += keys.len(),
                staleless_protocol::Invalidation::Tick { writer, .. } => {
                    prop_assert!(writer.is_some(), "a tick names its writer");
                    published += 1;
                }
                staleless_protocol::Invalidation::FlushAll { source, .. } => flushes.push(source.clone()),
            }
        }
        prop_assert_eq!(published, summary.keys);
        // A flush per flushed source at most, and one whenever a record named no key.
        prop_assert_eq!(flushes.len(), summary.flushes_published);
        prop_assert_eq!(flushes.is_empty(), summary.records_flushing == 0);
        let distinct: std::collections::BTreeSet<_> = flushes.iter().collect();
        prop_assert_eq!(distinct.len(), flushes.len(), "{:?}", flushes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn a_changed_user_invalidates_exactly_that_user(
        id in text().prop_filter("a user id", |id| !id.is_empty()),
        old in valid_image(),
        changed in attribute_name().prop_filter("not ignored", |name| name != IGNORED && name != PARTITION_KEY),
        value in option::of(attribute()),
        event_name in select(vec!["INSERT", "MODIFY", "REMOVE"]),
        with_keys in any::<bool>(),
    ) {
        let mut new = old.clone();
        match value {
            Some(value) => new.insert(changed.clone(), value),
            None => new.remove(&changed),
        };
        prop_assume!(new != old, "the attribute must change");
        let json = user_record(&id, event_name, Some(json!(old)), Some(json!(new)), with_keys);
        let record = parse(&json).expect("a well-formed record");
        let Mapped::Invalidate(change) = mapper().map(&record, RECEIVED_AT_MS) else {
            return Err(TestCaseError::fail(format!("{json} did not invalidate")));
        };
        prop_assert_eq!((change.kind, change.source, change.id), (ChangeKind::Key, &Source::USERS, id.as_str()));
    }

    #[test]
    fn a_modify_of_ignored_attributes_only_is_a_no_op(
        id in text().prop_filter("a user id", |id| !id.is_empty()),
        old in valid_image(),
        last_login in option::of(text().prop_map(|at| json!({ "S": at }))),
        with_keys in any::<bool>(),
    ) {
        let mut new = old.clone();
        match last_login {
            Some(value) => new.insert(IGNORED.to_owned(), value),
            None => new.remove(IGNORED),
        };
        let json = user_record(&id, "MODIFY", Some(json!(old)), Some(json!(new)), with_keys);
        let record = parse(&json).expect("a well-formed record");
        prop_assert_eq!(mapper().map(&record, RECEIVED_AT_MS), Mapped::Skip(SkipReason::NoOp));
    }

    #[test]
    fn differs_beyond_is_inequality_outside_the_ignored_attributes(
        shared in valid_image(),
        old_only in valid_image(),
        new_only in valid_image(),
        ignored in vec(attribute_name(), 0..4),
    ) {
        let image = |only: &BTreeMap<String, Value>| -> Item {
            let mut attributes = shared.clone();
            attributes.extend(only.clone());
            serde_json::from_value(json!(attributes)).expect("well-formed attributes")
        };
        let (old, new) = (image(&old_only), image(&new_only));
        let relevant = |item: &Item| -> HashMap<String, AttributeValue> {
            item.iter()
                .filter(|(name, _)| !ignored.contains(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        };
        let expected = relevant(&old) != relevant(&new);
        prop_assert_eq!(differs_beyond(&old, &new, &ignored), expected);
        prop_assert_eq!(differs_beyond(&new, &old, &ignored), expected);
    }
}
