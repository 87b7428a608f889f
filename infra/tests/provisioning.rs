//! Provisioning from `template.yaml` into a real moto server, checked with the real SDK clients.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use aws_sdk_sns::types::MessageAttributeValue;
use chrono::Utc;
use infra::LocalAws;
use infra::event_source::failure::{Condition, DiscardContext, DiscardedBatch, on_failure_message};
use infra::event_source::{FailureDestination, SnsDestination};
use serde_json::Value;

#[tokio::test]
async fn template_tables_stream_a_put_item_as_insert() {
    let aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");

    let description = aws
        .dynamodb()
        .describe_table()
        .table_name(&stack.users_table)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let indexes: Vec<String> = description
        .global_secondary_indexes()
        .iter()
        .filter_map(|index| index.index_name().map(str::to_owned))
        .collect();
    assert!(
        indexes.contains(&"UserIdIndex".to_owned()) && indexes.contains(&"EmailIndex".to_owned()),
        "{indexes:?}"
    );

    for (table, stream_arn, pk, sk) in [
        (&stack.users_table, &stack.users_stream_arn, "USER#u-1", "PROFILE"),
        (&stack.roles_table, &stack.roles_stream_arn, "ROLE#staff", "DEFINITION"),
    ] {
        aws.dynamodb()
            .put_item()
            .table_name(table)
            .item("PK", AttributeValue::S(pk.into()))
            .item("SK", AttributeValue::S(sk.into()))
            .item("name", AttributeValue::S("Ada".into()))
            .send()
            .await
            .expect("put");

        let streams = aws.streams();
        let shard_id = streams
            .describe_stream()
            .stream_arn(stream_arn)
            .send()
            .await
            .expect("describe stream")
            .stream_description
            .and_then(|description| description.shards.unwrap_or_default().into_iter().next())
            .and_then(|shard| shard.shard_id)
            .expect("one shard");
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator;

        let mut seen = Vec::new();
        for _ in 0..20 {
            let Some(current) = iterator.take() else { break };
            let page = streams
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .expect("records");
            seen.extend(page.records.unwrap_or_default());
            if !seen.is_empty() {
                break;
            }
            iterator = page.next_shard_iterator;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let record = seen.first().expect("a stream record");
        assert_eq!(record.event_name(), Some(&OperationType::Insert));
        let keys = record.dynamodb().and_then(|change| change.keys()).expect("keys");
        assert_eq!(
            keys.get("PK"),
            Some(&aws_sdk_dynamodbstreams::types::AttributeValue::S(pk.into()))
        );
    }

    let topics = aws.sns().list_topics().send().await.expect("topics");
    assert!(
        topics
            .topics()
            .iter()
            .any(|topic| topic.topic_arn() == Some(stack.topic_arn.as_str()))
    );
}

#[tokio::test]
async fn provisioning_twice_reuses_what_exists() {
    let aws = LocalAws::start().expect("emulator");
    let first = aws.provision("again").await.expect("first");
    let second = aws.provision("again").await.expect("second");
    assert_eq!(first, second);
    let subscriptions = aws
        .sns()
        .list_subscriptions_by_topic()
        .topic_arn(&first.topic_arn)
        .send()
        .await
        .expect("subscriptions");
    assert_eq!(
        subscriptions.subscriptions().len(),
        1,
        "the dead-letter queue's, once: {subscriptions:?}"
    );
}

/// Every message on the queue at `url` until one receive comes back empty, as JSON.
async fn drain(aws: &LocalAws, url: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let received = aws
            .sqs()
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if received.messages().is_empty() {
            return messages;
        }
        for message in received.messages() {
            let body = message.body().unwrap_or_default();
            messages.push(serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())));
        }
    }
}

/// A give-up is a flush: the event source mappings publish their on-failure message to the
/// invalidation topic, where every task hears it, and the dead-letter queue keeps a copy through
/// its body-filtered subscription: raw and unchanged, and nothing of the protocol's traffic.
#[tokio::test]
async fn the_dead_letter_queue_copies_the_on_failure_messages_of_the_topic_and_nothing_else() {
    let aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");
    // What every task's queue receives: an unfiltered, raw subscription.
    let task = aws
        .create_subscribed_queue(&stack.topic_arn, &format!("{}-watcher", stack.task_queue_prefix))
        .await
        .expect("task queue");

    let tick = r#"{"v":1,"kind":"tick","source":"users","written_at_ms":1}"#;
    aws.sns()
        .publish()
        .topic_arn(&stack.topic_arn)
        .message(tick)
        .message_attributes(
            staleless_protocol::SOURCE_ATTRIBUTE,
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("users")
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("publish the tick");
    let now = Utc::now();
    let given_up = on_failure_message(
        &DiscardedBatch {
            shard_id: "shardId-00000001732500000000-0000000a".into(),
            stream_arn: stack.users_stream_arn.clone(),
            start_sequence_number: "000000000000000000101".into(),
            end_sequence_number: "000000000000000000102".into(),
            first_arrival: now,
            last_arrival: now,
            batch_size: 2,
        },
        &DiscardContext {
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:stream-relay".into(),
            condition: Condition::RetryAttemptsExhausted,
            invoke_count: 11,
            function_error: Some("Unhandled".into()),
            request_id: "r-1".into(),
        },
        now,
    );
    // Through the local mapping's own destination for `Type: SNS`.
    SnsDestination {
        client: aws.sns(),
        topic_arn: stack.topic_arn.clone(),
    }
    .send(given_up.to_string())
    .await
    .expect("publish the give-up");

    let heard = drain(&aws, &task.url).await;
    let tick: Value = serde_json::from_str(tick).expect("json");
    assert!(
        heard.len() == 2 && heard.contains(&tick) && heard.contains(&given_up),
        "both reached the topic, and a task hears both: {heard:?}"
    );
    let parked = drain(&aws, &stack.dead_letter_queue_url).await;
    assert_eq!(parked, [given_up], "the give-up alone, as published");
    aws.teardown(&stack).await;
}
