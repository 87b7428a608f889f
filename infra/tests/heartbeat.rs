//! The heartbeat writer's shard discovery against a real moto server: each table's stream has one
//! shard that never splits, so discovery must find it and give it slot 0, and every item the
//! writer then writes must say so.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use infra::LocalAws;
use staleless_protocol::keys::{
    DEFAULT_HEARTBEAT_WRITER, HEARTBEAT_COVERED_ATTRIBUTE, HEARTBEAT_SK, HEARTBEAT_SLOTS_ATTRIBUTE, PARTITION_KEY,
    SORT_KEY, heartbeat_pk,
};
use stream_relay::heartbeat::SlotPlan;

#[tokio::test]
async fn discovery_on_moto_finds_the_one_shard_and_slot_zero() {
    let aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");
    let writer = infra::heartbeat::writer(aws.sdk_config(), &stack, Duration::from_secs(1));
    let tables = [&stack.users_table, &stack.roles_table];

    let checked = writer.check_shards().await;
    assert_eq!(checked.failed, 0);
    for table in tables {
        assert_eq!(
            writer.plan(table),
            Some(SlotPlan {
                slots: vec![0],
                covered: true
            }),
            "{table}"
        );
    }

    let beat = writer.beat().await;
    assert_eq!((beat.written, beat.failed), (2, 0), "one slot per table");
    for table in tables {
        let item = aws
            .dynamodb()
            .get_item()
            .table_name(table)
            .key(PARTITION_KEY, AttributeValue::S(heartbeat_pk(DEFAULT_HEARTBEAT_WRITER)))
            .key(SORT_KEY, AttributeValue::S(HEARTBEAT_SK.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("get")
            .item
            .expect("the slot 0 item");
        assert_eq!(
            item.get(HEARTBEAT_SLOTS_ATTRIBUTE),
            Some(&AttributeValue::L(vec![AttributeValue::S("0".to_owned())])),
            "{table}"
        );
        assert_eq!(
            item.get(HEARTBEAT_COVERED_ATTRIBUTE),
            Some(&AttributeValue::Bool(true)),
            "{table}"
        );
    }
    aws.teardown(&stack).await;
}
