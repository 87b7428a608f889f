//! Hostile data for the fault matrix: what anyone with write access to a table can put there — a
//! console typo in a role or a profile, heartbeat items from the future, the past or under a
//! forged writer name, a writer whose clock jumps, an item the relay cannot map — written with the
//! SDK straight into the tables, as a script would.
//!
//! [`crate::faults`] runs each as a row, measured during the fault like the others; this module
//! holds the writes and the short outage some rows hide inside.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use staleless_protocol::keys::{
    DEFAULT_HEARTBEAT_WRITER, HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_SK, HEARTBEAT_WRITTEN_AT_ATTRIBUTE,
    PARTITION_KEY, PROFILE_SK, SORT_KEY, heartbeat_pk, role_pk,
};

use crate::LocalSystem;

/// The role written with `enabled` as a string: a typo an operator can make in the console.
pub const CORRUPT_ROLE: &str = "hostile_typo";
/// A heartbeat writer name no task is configured to trust.
pub const FORGED_WRITER: &str = "forged";
/// One hour, the clock error of the hostile heartbeat rows.
pub const AN_HOUR_MS: i64 = 3_600_000;

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    staleless_consumer::unix_now_ms()
}

/// Puts `item` into `table` as is.
async fn put(system: &LocalSystem, table: &str, item: HashMap<String, AttributeValue>) -> anyhow::Result<()> {
    system
        .aws
        .dynamodb()
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .with_context(|| format!("PutItem into {table}"))?;
    Ok(())
}

/// Writes the definition of [`CORRUPT_ROLE`], mapped to the IdP role `Staff` and granting every
/// tool, with `enabled` written as the string `"yes"`: were it granted, every Staff user would
/// gain every tool.
///
/// # Errors
/// When the write fails.
pub async fn put_corrupt_role(system: &LocalSystem) -> anyhow::Result<()> {
    let item = HashMap::from([
        (PARTITION_KEY.to_owned(), s(&role_pk(CORRUPT_ROLE))),
        (SORT_KEY.to_owned(), s("DEFINITION")),
        ("roleId".to_owned(), s(CORRUPT_ROLE)),
        ("displayName".to_owned(), s("Typo")),
        ("jwtRoleMappings".to_owned(), AttributeValue::L(vec![s("Staff")])),
        ("grantedTools".to_owned(), AttributeValue::L(vec![s("*")])),
        ("enabled".to_owned(), s("yes")),
    ]);
    put(system, &system.stack.roles_table, item).await
}

/// Deletes [`CORRUPT_ROLE`], as an operator repairing it from the console would.
///
/// # Errors
/// When the delete fails.
pub async fn delete_corrupt_role(system: &LocalSystem) -> anyhow::Result<()> {
    system
        .aws
        .dynamodb()
        .delete_item()
        .table_name(&system.stack.roles_table)
        .key(PARTITION_KEY, s(&role_pk(CORRUPT_ROLE)))
        .key(SORT_KEY, s("DEFINITION"))
        .send()
        .await?;
    Ok(())
}

/// Rewrites the profile of `user` with its `roles` as the string `"Staff"` instead of a list.
///
/// # Errors
/// When the write fails.
pub async fn put_corrupt_profile(system: &LocalSystem, user: &str) -> anyhow::Result<()> {
    let item = HashMap::from([
        (PARTITION_KEY.to_owned(), s(&staleless_protocol::keys::user_pk(user))),
        (SORT_KEY.to_owned(), s(PROFILE_SK)),
        ("userId".to_owned(), s(user)),
        ("name".to_owned(), s(user)),
        ("email".to_owned(), s(&format!("{user}@example.com"))),
        ("roles".to_owned(), s("Staff")),
        ("status".to_owned(), s("active")),
    ]);
    put(system, &system.stack.users_table, item).await
}

/// Writes the heartbeat item of `writer` into both tables, stamped `written_at_ms`.
///
/// # Errors
/// When a write fails.
pub async fn put_heartbeats(system: &LocalSystem, writer: &str, written_at_ms: i64) -> anyhow::Result<()> {
    let interval_ms = system.heartbeat_interval.as_millis().to_string();
    for table in [&system.stack.users_table, &system.stack.roles_table] {
        let item = HashMap::from([
            (PARTITION_KEY.to_owned(), s(&heartbeat_pk(writer))),
            (SORT_KEY.to_owned(), s(HEARTBEAT_SK)),
            (
                HEARTBEAT_WRITTEN_AT_ATTRIBUTE.to_owned(),
                AttributeValue::N(written_at_ms.to_string()),
            ),
            (
                HEARTBEAT_INTERVAL_ATTRIBUTE.to_owned(),
                AttributeValue::N(interval_ms.clone()),
            ),
        ]);
        put(system, table, item).await?;
    }
    Ok(())
}

/// Beats as the configured writer whose clock is `offset_ms` off, every heartbeat interval,
/// until the returned handle is aborted (the real writer is paused meanwhile).
#[must_use]
pub fn skewed_writer(system: &LocalSystem, offset_ms: i64) -> tokio::task::JoinHandle<()> {
    let aws = system.aws.dynamodb();
    let tables = [system.stack.users_table.clone(), system.stack.roles_table.clone()];
    let interval = system.heartbeat_interval;
    tokio::spawn(async move {
        loop {
            let written = now_ms().saturating_add(offset_ms);
            for table in &tables {
                let _ = aws
                    .put_item()
                    .table_name(table)
                    .item(PARTITION_KEY, s(&heartbeat_pk(DEFAULT_HEARTBEAT_WRITER)))
                    .item(SORT_KEY, s(HEARTBEAT_SK))
                    .item(HEARTBEAT_WRITTEN_AT_ATTRIBUTE, AttributeValue::N(written.to_string()))
                    .item(
                        HEARTBEAT_INTERVAL_ATTRIBUTE,
                        AttributeValue::N(interval.as_millis().to_string()),
                    )
                    .send()
                    .await;
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Writes a users-table item whose key names no user (`PK = USER#`, no `userId`): a stream
/// record the relay cannot map to a key, so it flushes the users caches of every task.
///
/// # Errors
/// When the write fails.
pub async fn put_unreadable_user_item(system: &LocalSystem) -> anyhow::Result<()> {
    let item = HashMap::from([
        (PARTITION_KEY.to_owned(), s(staleless_protocol::keys::USER_PK_PREFIX)),
        (SORT_KEY.to_owned(), s(PROFILE_SK)),
        ("name".to_owned(), s("nobody")),
    ]);
    put(system, &system.stack.users_table, item).await
}

/// Gives every task's subscription of the topic a filter policy matching nothing, and removes it again
/// after `outage`: a silent outage shorter than half the bound, so no task's subscription check
/// sees it and only the gap in its heartbeats can.
///
/// # Errors
/// When the subscriptions cannot be listed or filtered.
pub async fn filter_every_subscription_for(
    system: &LocalSystem,
    outage: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let sns = system.aws.sns();
    let subscriptions: Vec<String> = sns
        .list_subscriptions_by_topic()
        .topic_arn(&system.stack.topic_arn)
        .send()
        .await?
        .subscriptions
        .unwrap_or_default()
        .into_iter()
        .filter(|subscription| {
            subscription
                .endpoint
                .as_deref()
                .is_some_and(|endpoint| system.stack.is_task_queue(endpoint))
        })
        .filter_map(|subscription| subscription.subscription_arn)
        .collect();
    anyhow::ensure!(!subscriptions.is_empty(), "no subscription to filter");
    set_filter_policy(&sns, &subscriptions, r#"{"source":["nothing-matches-this"]}"#).await?;
    Ok(tokio::spawn(async move {
        tokio::time::sleep(outage).await;
        set_filter_policy(&sns, &subscriptions, "{}").await
    }))
}

async fn set_filter_policy(sns: &aws_sdk_sns::Client, subscriptions: &[String], policy: &str) -> anyhow::Result<()> {
    for arn in subscriptions {
        let set = sns
            .set_subscription_attributes()
            .subscription_arn(arn)
            .attribute_name("FilterPolicy")
            .attribute_value(policy)
            .send()
            .await;
        match set {
            Ok(_) => {}
            // The task found its subscription altered and re-created it (a slow machine can
            // stretch the outage past half the bound): the new one has no filter to remove.
            Err(err) if err.as_service_error().is_some_and(|err| err.is_not_found_exception()) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// The sum of `name{labels}` over every task.
///
/// # Errors
/// When a task's `/metrics` cannot be read.
pub async fn metric_on_every_task(system: &LocalSystem, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for index in 0..system.task_urls.len() {
        total += system.metric(index, name, labels).await?;
    }
    Ok(total)
}
