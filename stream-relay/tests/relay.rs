//! The relay end to end on Lambda-shaped JSON fixtures, publishing to the in-memory publisher:
//! what is published, what is skipped, what is flushed, and which record a failed publish reports.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use serde_dynamo::AttributeValue;
use serde_json::{Value, json};
use staleless_protocol::{Invalidation, KeyVersion, Source, compare_sequence_numbers};
use stream_relay::{LenientEvent, Mapper, MemoryPublisher, PublishError, Relay, RelayOutcome, RetryPolicy};

const USERS_INSERT: &str = include_str!("fixtures/users_insert.json");
const ROLES_EDIT: &str = include_str!("fixtures/roles_edit.json");

fn new_relay() -> (Relay, Arc<MemoryPublisher>) {
    let publisher = Arc::new(MemoryPublisher::new());
    let mapper = Mapper::new("staleless-users", "staleless-app-roles", vec!["lastLoginAt".into()]);
    let relay = Relay::new(mapper, publisher.clone()).with_retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    });
    (relay, publisher)
}

fn event(json: &str) -> Event {
    serde_json::from_str(json).expect("fixture is a Lambda DynamoDB event")
}

/// `count` user INSERT records, the n-th for user `ids(n)` with sequence number `1000 + n`.
fn user_records(count: usize, ids: impl Fn(usize) -> String) -> Vec<EventRecord> {
    let template: Value = serde_json::from_str(USERS_INSERT).expect("fixture");
    (0..count)
        .map(|n| {
            let mut record = template["Records"][0].clone();
            let id = ids(n);
            record["dynamodb"]["Keys"]["PK"] = json!({"S": format!("USER#{id}")});
            record["dynamodb"]["NewImage"]["PK"] = json!({"S": format!("USER#{id}")});
            record["dynamodb"]["NewImage"]["userId"] = json!({"S": id});
            record["dynamodb"]["SequenceNumber"] = json!(format!("{}", 1000 + n));
            serde_json::from_value(record).expect("record")
        })
        .collect()
}

/// Every message accepted, in order, each checked to be tagged with its own source (`None`, a
/// flush of every cache, is tagged with every source).
fn accepted(publisher: &MemoryPublisher) -> Vec<Invalidation> {
    publisher
        .accepted_messages()
        .into_iter()
        .map(|(attribute, message)| {
            assert_eq!(
                attribute.as_ref(),
                message.source(),
                "the source attribute matches the body"
            );
            message
        })
        .collect()
}

fn published_keys(publisher: &MemoryPublisher) -> Vec<(Source, KeyVersion)> {
    accepted(publisher)
        .into_iter()
        .flat_map(|message| match message {
            Invalidation::Invalidate { source, keys } => {
                keys.into_iter().map(move |key| (source.clone(), key)).collect()
            }
            Invalidation::FlushAll { .. } | Invalidation::Tick { .. } => Vec::new(),
        })
        .collect()
}

/// The flushes published, in order: the source flushed (`None`: every one) and the reason.
fn published_flushes(publisher: &MemoryPublisher) -> Vec<(Option<Source>, String)> {
    accepted(publisher)
        .into_iter()
        .filter_map(|message| match message {
            Invalidation::FlushAll { source, reason } => Some((source, reason.expect("the relay says why"))),
            Invalidation::Invalidate { .. } | Invalidation::Tick { .. } => None,
        })
        .collect()
}

/// One published message, in order.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// The ids of an invalidation.
    Keys(Source, Vec<String>),
    /// A tick's `written_at_ms`.
    Tick(Source, i64),
    /// A flush of one source, or of every one.
    Flush(Option<Source>),
}

fn published_in_order(publisher: &MemoryPublisher) -> Vec<Sent> {
    accepted(publisher)
        .into_iter()
        .map(|message| match message {
            Invalidation::Invalidate { source, keys } => {
                Sent::Keys(source, keys.into_iter().map(|key| key.id).collect())
            }
            Invalidation::Tick {
                source,
                written_at_ms,
                writer,
                ..
            } => {
                assert_eq!(writer.as_deref(), Some("staleless"), "a tick names its writer");
                Sent::Tick(source, written_at_ms)
            }
            Invalidation::FlushAll { source, .. } => Sent::Flush(source),
        })
        .collect()
}

/// The `itemIdentifier`s of the batch item failures reported.
fn failures(outcome: &RelayOutcome) -> Vec<Option<String>> {
    outcome
        .response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn heartbeats_are_published_as_ticks_after_the_changes_before_them() {
    let (relay, publisher) = new_relay();
    let outcome = relay
        .handle_event(&event(include_str!("fixtures/heartbeats.json")))
        .await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(outcome.summary.heartbeats, 3);
    assert_eq!(
        outcome.summary.ticks_published,
        [(Source::USERS, 1), (Source::ROLES, 1)].into()
    );
    assert_eq!(
        published_in_order(&publisher),
        [
            Sent::Keys(Source::USERS, vec!["u-1".to_owned()]),
            Sent::Tick(Source::USERS, 1_732_500_005_100),
            Sent::Tick(Source::ROLES, 1_732_500_006_000),
        ]
    );
}

#[tokio::test]
async fn a_role_edit_publishes_one_key() {
    let (relay, publisher) = new_relay();
    let outcome = relay.handle_event(&event(ROLES_EDIT)).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    let keys = published_keys(&publisher);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].0, Source::ROLES);
    assert_eq!(keys[0].1.id, "staff");
    assert_eq!(keys[0].1.seq.as_str(), "4200000000000000000104");
    assert_eq!((outcome.summary.records_in, outcome.summary.keys_published), (4, 1));
    assert_eq!((outcome.summary.sns_calls, outcome.summary.messages_published), (1, 1));
    assert!(
        outcome.summary.max_lag.is_some_and(|lag| lag > Duration::from_secs(60)),
        "fixtures are from 2024"
    );
}

#[tokio::test]
async fn a_last_login_only_modify_publishes_nothing() {
    let (relay, publisher) = new_relay();
    for fixture in [
        include_str!("fixtures/users_modify_last_login_only.json"),
        include_str!("fixtures/users_modify_identical.json"),
    ] {
        let outcome = relay.handle_event(&event(fixture)).await;
        assert!(outcome.response.batch_item_failures.is_empty());
        assert_eq!(outcome.summary.skipped_no_op, 1);
        assert_eq!(outcome.summary.sns_calls, 0);
    }
    assert_eq!(publisher.calls(), 0);
}

#[tokio::test]
async fn every_invalidating_fixture_publishes_its_user() {
    for (fixture, id, ttl) in [
        (USERS_INSERT, "u-1", 0),
        (include_str!("fixtures/users_modify_status.json"), "u-1", 0),
        (include_str!("fixtures/users_remove.json"), "u-1", 0),
        (include_str!("fixtures/users_ttl_remove.json"), "u-2", 1),
        (include_str!("fixtures/users_keys_only.json"), "u-3", 0),
        (include_str!("fixtures/users_user_id_fallback.json"), "u-7", 0),
    ] {
        let (relay, publisher) = new_relay();
        let outcome = relay.handle_event(&event(fixture)).await;
        let ids: Vec<String> = published_keys(&publisher).into_iter().map(|(_, key)| key.id).collect();
        assert_eq!(ids, [id], "{fixture}");
        assert_eq!(outcome.summary.ttl_expiries, ttl, "{fixture}");
    }
}

#[tokio::test]
async fn tool_items_and_preferences_are_ignored() {
    let (relay, publisher) = new_relay();
    let outcome = relay
        .handle_event(&event(include_str!("fixtures/roles_ignored.json")))
        .await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(outcome.summary.skipped_ignored, 2);
    assert_eq!(publisher.calls(), 0);
}

#[tokio::test]
async fn malformed_records_invalidate_their_keys_or_flush_their_source_and_the_batch_succeeds() {
    let (relay, publisher) = new_relay();
    let outcome = relay
        .handle_event(&event(include_str!("fixtures/malformed.json")))
        .await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(
        (outcome.summary.records_malformed, outcome.summary.skipped_malformed),
        (5, 0),
        "read in part, none dropped"
    );
    assert_eq!(
        (outcome.summary.records_flushing, outcome.summary.flushes_published),
        (3, 3)
    );
    let ids: BTreeSet<String> = published_keys(&publisher).into_iter().map(|(_, key)| key.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["u-ok".to_owned(), "u-bad".to_owned(), "u-ok-too".to_owned()])
    );
    let flushed: Vec<Option<Source>> = published_flushes(&publisher)
        .into_iter()
        .map(|(source, _)| source)
        .collect();
    assert_eq!(flushed, [None, Some(Source::ROLES), Some(Source::USERS)]);
}

#[tokio::test]
async fn an_unreadable_users_record_publishes_a_flush_of_the_users_caches() {
    let (relay, publisher) = new_relay();
    let mut raw: Value = serde_json::from_str(USERS_INSERT).expect("fixture");
    let change = &mut raw["Records"][0]["dynamodb"];
    for image in ["Keys", "NewImage"] {
        let item = change[image].as_object_mut().expect("an image");
        item.remove("PK");
        item.remove("userId");
    }
    let outcome = relay.handle_event(&event(&raw.to_string())).await;

    assert!(outcome.response.batch_item_failures.is_empty(), "the batch succeeds");
    assert_eq!(
        published_flushes(&publisher),
        [(
            Some(Source::USERS),
            "unreadable stream record 4100000000000000000001 of staleless-users".to_owned()
        )]
    );
    assert_eq!(
        publisher.accepted()[0][0].source,
        Some(Source::USERS),
        "tagged for users subscribers"
    );
    let summary = &outcome.summary;
    assert_eq!(
        (
            summary.records_flushing,
            summary.flushes_published,
            summary.records_malformed
        ),
        (1, 1, 1)
    );
    assert_eq!((summary.keys, summary.keys_published), (0, 0));
}

#[tokio::test]
async fn a_flush_goes_out_in_batch_order_before_the_ticks_of_later_records() {
    let (relay, publisher) = new_relay();
    let heartbeats = event(include_str!("fixtures/heartbeats.json")).records;
    let unreadable = event(include_str!("fixtures/unreadable.json")).records;
    // Users heartbeats and a change, a roles record naming no role, then a roles heartbeat.
    let mut records = heartbeats.clone();
    records.insert(3, unreadable[2].clone());
    let outcome = relay.handle_records(&records, 0).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(
        published_in_order(&publisher),
        [
            Sent::Keys(Source::USERS, vec!["u-1".to_owned()]),
            Sent::Tick(Source::USERS, 1_732_500_005_100),
            Sent::Flush(Some(Source::ROLES)),
            Sent::Tick(Source::ROLES, 1_732_500_006_000),
        ]
    );
}

/// Ten users, one message each (a 120-byte budget holds one key), so they fill the first
/// `PublishBatch` call and the eleventh record's message goes out in the second.
fn ten_users_then(record: EventRecord) -> Vec<EventRecord> {
    let mut records = user_records(10, |n| format!("u-{n}"));
    records.push(record);
    records
}

#[tokio::test]
async fn a_flush_that_cannot_be_published_fails_the_batch_from_its_record() {
    let (relay, publisher) = new_relay();
    let relay = relay.with_max_message_bytes(120);
    let unreadable = event(include_str!("fixtures/unreadable.json")).records;
    publisher.script([Ok(()), Err(PublishError::Rejected("topic gone".into()))]);
    let outcome = relay.handle_records(&ten_users_then(unreadable[1].clone()), 0).await;
    assert_eq!(failures(&outcome), [Some("4300000000000000000402".to_owned())]);
    assert_eq!(
        (outcome.summary.keys_published, outcome.summary.flushes_published),
        (10, 0)
    );
}

#[tokio::test]
async fn a_failed_record_without_a_sequence_number_reports_the_one_before_it() {
    let (relay, publisher) = new_relay();
    let relay = relay.with_max_message_bytes(120);
    let unreadable = event(include_str!("fixtures/unreadable.json")).records;
    let without_seq = unreadable[7].clone();
    assert_eq!(without_seq.change.sequence_number, None);

    publisher.script([Ok(()), Err(PublishError::Rejected("topic gone".into()))]);
    let after = relay.handle_records(&ten_users_then(without_seq.clone()), 0).await;
    assert_eq!(
        after.summary.failed_from.as_deref(),
        Some("1009"),
        "the record before it"
    );

    // Nothing before it: an empty identifier, which fails the whole batch.
    publisher.script([Err(PublishError::Rejected("topic gone".into()))]);
    let alone = relay.handle_records(&[without_seq], 0).await;
    assert_eq!(failures(&alone), [Some(String::new())]);
}

#[tokio::test]
async fn records_lambda_cannot_parse_flush_the_caches_of_their_table() {
    let (relay, publisher) = new_relay();
    let mut raw: Value = serde_json::from_str(USERS_INSERT).expect("fixture");
    let good = raw["Records"][0].clone();
    let mut roles_unparseable = good.clone();
    roles_unparseable["eventSourceARN"] =
        json!("arn:aws:dynamodb:us-east-1:123456789012:table/staleless-app-roles/stream/2024-11-25T00:00:00.000");
    roles_unparseable["dynamodb"]["SequenceNumber"] = json!("4200000000000000000777");
    roles_unparseable["dynamodb"]["NewImage"]["name"] = json!({"S": 5});
    raw["Records"] = json!([
        {"eventName": "INSERT"},
        "not even an object",
        good,
        {"dynamodb": {"SizeBytes": "many"}},
        roles_unparseable
    ]);
    let lenient: LenientEvent = serde_json::from_value(raw).expect("lenient event");
    let outcome = relay.handle_lenient(lenient).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!((outcome.summary.records_in, outcome.summary.records_malformed), (5, 4));
    assert_eq!(published_keys(&publisher).len(), 1);
    assert_eq!(
        published_flushes(&publisher),
        [
            (None, "unreadable stream record 0 of an unnamed table".to_owned()),
            (
                Some(Source::ROLES),
                "unreadable stream record 4200000000000000000777 of staleless-app-roles".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn many_distinct_keys_pack_into_few_messages_and_calls() {
    let (relay, publisher) = new_relay();
    let records = user_records(2_500, |n| format!("user-{n:05}"));
    let outcome = relay.handle_records(&records, 0).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    let keys = published_keys(&publisher);
    assert_eq!(keys.len(), 2_500);
    let ids: BTreeSet<&str> = keys.iter().map(|(_, key)| key.id.as_str()).collect();
    assert_eq!(ids.len(), 2_500, "every key exactly once");

    let bytes: usize = publisher
        .accepted()
        .iter()
        .flatten()
        .map(|entry| entry.body.len())
        .sum();
    let messages = outcome.summary.messages_published;
    assert!(
        messages <= bytes.div_ceil(staleless_protocol::sns_body_budget()) + 1,
        "{messages} messages"
    );
    assert!(publisher.accepted().iter().all(|call| call.len() <= 10));
    assert_eq!(outcome.summary.sns_calls, publisher.calls());
    println!(
        "2,500 keys: {messages} message(s) of {bytes} bytes in {} PublishBatch call(s)",
        publisher.calls()
    );
}

#[tokio::test]
async fn small_messages_share_calls_of_at_most_ten_entries() {
    let (relay, publisher) = new_relay();
    let relay = relay.with_max_message_bytes(300);
    let outcome = relay.handle_records(&user_records(200, |n| format!("u{n}")), 0).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    let calls = publisher.accepted();
    assert!(calls.len() > 1);
    assert!(calls.iter().all(|call| !call.is_empty() && call.len() <= 10));
    assert!(
        calls[..calls.len() - 1].iter().all(|call| call.len() == 10),
        "calls are filled"
    );
    assert_eq!(published_keys(&publisher).len(), 200);
}

/// The goal is at most 15 `PublishBatch` calls per 1,000 changed keys.
#[tokio::test]
async fn sns_calls_per_thousand_changed_keys() {
    let (relay, publisher) = new_relay();
    let records = user_records(1_000, |n| format!("user-{n:06}"));
    relay.handle_records(&records, 0).await;
    let one_batch = publisher.calls();

    // As Lambda delivers them with the template's BatchSize of 100.
    let (relay, publisher) = new_relay();
    for chunk in records.chunks(100) {
        relay.handle_records(chunk, 0).await;
    }
    let batches_of_100 = publisher.calls();
    println!(
        "SNS PublishBatch calls per 1,000 changed keys: {one_batch} in one batch, {batches_of_100} in batches of 100"
    );
    assert!(
        one_batch <= 15 && batches_of_100 <= 15,
        "{one_batch} / {batches_of_100}"
    );
}

#[tokio::test]
async fn throttling_is_retried_inside_the_invocation() {
    let (relay, publisher) = new_relay();
    publisher.script([
        Err(PublishError::Throttled("slow down".into())),
        Err(PublishError::Transient("reset".into())),
    ]);
    let outcome = relay.handle_event(&event(USERS_INSERT)).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!((outcome.summary.sns_calls, outcome.summary.publish_retries), (3, 2));
    assert_eq!(published_keys(&publisher).len(), 1);
}

#[tokio::test]
async fn throttling_past_the_retry_budget_fails_the_batch() {
    let (relay, publisher) = new_relay();
    publisher.script(std::iter::repeat_with(|| Err(PublishError::Throttled("slow down".into()))).take(3));
    let outcome = relay.handle_event(&event(ROLES_EDIT)).await;
    assert_eq!(
        failures(&outcome),
        [Some("4200000000000000000101".to_owned())],
        "the first record of the batch"
    );
    assert_eq!(outcome.summary.keys_published, 0);
}

#[tokio::test]
async fn a_rejected_call_reports_the_first_record_whose_keys_were_not_sent() {
    let (relay, publisher) = new_relay();
    // Small messages so the batch needs several calls; every user appears twice, far apart, so
    // coalescing matters: a key's first record is what must be retried.
    let relay = relay.with_max_message_bytes(400);
    let records = user_records(300, |n| format!("u{}", n % 150));
    publisher.script([Ok(()), Ok(()), Err(PublishError::Rejected("topic gone".into()))]);
    let outcome = relay.handle_records(&records, 0).await;

    assert_eq!(outcome.response.batch_item_failures.len(), 1);
    let failed_from = outcome.response.batch_item_failures[0]
        .item_identifier
        .clone()
        .expect("a sequence number");
    let published: BTreeSet<String> = published_keys(&publisher).into_iter().map(|(_, key)| key.id).collect();
    assert!(!published.is_empty() && published.len() < 150);
    for record in &records {
        let seq = record.change.sequence_number.as_deref().expect("seq");
        let Some(AttributeValue::S(id)) = record.change.new_image.get("userId") else {
            panic!("every record has a userId");
        };
        let before_failure = compare_sequence_numbers(seq, &failed_from).is_lt();
        let key_published = published.contains(id);
        // Never acknowledge a record whose key was not published.
        assert!(
            !before_failure || key_published,
            "record {seq} ({id}) acknowledged but unpublished"
        );
    }
    assert_eq!(outcome.summary.failed_from.as_deref(), Some(failed_from.as_str()));
    assert_eq!(
        outcome.summary.sns_calls, 3,
        "a rejection is not retried inside the invocation"
    );
}

#[tokio::test]
async fn each_heartbeat_slot_is_a_tick_of_its_own_carrying_the_writers_announcement() {
    let (relay, publisher) = new_relay();
    let mut event: Value = serde_json::from_str(include_str!("fixtures/heartbeats.json")).expect("fixture");
    let records = event["Records"].as_array_mut().expect("records");
    records.truncate(1);
    let mut slot = records[0].clone();
    let announce = |record: &mut Value, pk: &str, seq: &str| {
        record["dynamodb"]["Keys"]["PK"]["S"] = json!(pk);
        record["dynamodb"]["NewImage"]["PK"]["S"] = json!(pk);
        record["dynamodb"]["NewImage"]["slots"] = json!({"L": [{"S": "0"}, {"S": "3"}]});
        record["dynamodb"]["NewImage"]["covered"] = json!({"BOOL": false});
        record["dynamodb"]["SequenceNumber"] = json!(seq);
    };
    announce(&mut records[0], "HEARTBEAT#staleless", "5100000000000000000001");
    announce(&mut slot, "HEARTBEAT#staleless#3", "5100000000000000000002");
    records.push(slot);
    let event: Event = serde_json::from_value(event).expect("event");
    let outcome = relay.handle_event(&event).await;
    assert!(outcome.response.batch_item_failures.is_empty());
    type TickFields = (Option<String>, Option<String>, Option<Vec<String>>, Option<bool>);
    let ticks: Vec<TickFields> = accepted(&publisher)
        .into_iter()
        .filter_map(|message| match message {
            Invalidation::Tick {
                writer,
                slot,
                slots,
                covered,
                ..
            } => Some((writer, slot, slots, covered)),
            _ => None,
        })
        .collect();
    let announced = Some(vec!["0".to_owned(), "3".to_owned()]);
    assert_eq!(
        ticks,
        [
            (Some("staleless".to_owned()), None, announced.clone(), Some(false)),
            (
                Some("staleless".to_owned()),
                Some("3".to_owned()),
                announced,
                Some(false)
            ),
        ],
        "one tick per slot, the writer's name without the slot"
    );
}
