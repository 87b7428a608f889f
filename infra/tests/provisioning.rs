//! Provisioning from `template.yaml` into a real moto server, checked with the real SDK clients.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use infra::LocalAws;

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
}
