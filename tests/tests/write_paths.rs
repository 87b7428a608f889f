//! Every write path, end to end: a change made through the API or straight to a table with the
//! SDK (the console and scripts path) reaches **both** API tasks, through the streams, the relay
//! process, SNS and each task's own queue — with no invalidation call at any write site.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, TransactWriteItem, Update, WriteRequest};
use infra::operator::{self, RolePatch, UserChange};
use reqwest::Method;
use serde_json::{Value, json};
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions, eventually};

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn list(values: &[&str]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|value| s(value)).collect())
}

fn user_item(user_id: &str, name: &str, roles: &[&str]) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_owned(), s(&format!("USER#{user_id}"))),
        ("SK".to_owned(), s("PROFILE")),
        ("userId".to_owned(), s(user_id)),
        ("email".to_owned(), s(&format!("{user_id}@example.com"))),
        ("name".to_owned(), s(name)),
        ("roles".to_owned(), list(roles)),
        ("status".to_owned(), s("active")),
        ("createdAt".to_owned(), s("2026-01-01T00:00:00Z")),
        ("lastLoginAt".to_owned(), s("2026-01-01T00:00:00Z")),
    ])
}

fn user_key(user_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_owned(), s(&format!("USER#{user_id}"))),
        ("SK".to_owned(), s("PROFILE")),
    ])
}

fn role_key(role_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_owned(), s(&format!("ROLE#{role_id}"))),
        ("SK".to_owned(), s("DEFINITION")),
    ])
}

/// Writes a profile change straight to the users table: the console and scripts path.
async fn change_user(system: &LocalSystem, user_id: &str, change: UserChange) -> anyhow::Result<()> {
    operator::put_user(&system.aws.dynamodb(), &system.stack.users_table, user_id, &change).await?;
    Ok(())
}

fn with_roles(roles: &[&str]) -> UserChange {
    UserChange {
        roles: Some(roles.iter().map(|role| (*role).to_owned()).collect()),
        ..UserChange::default()
    }
}

fn with_status(status: &str) -> UserChange {
    UserChange {
        status: Some(status.to_owned()),
        ..UserChange::default()
    }
}

fn name_is(expected: &'static str) -> impl Fn(u16, &Value) -> bool {
    move |status, body| status == 200 && body["name"] == expected
}

fn tools_are(expected: &'static [&'static str]) -> impl Fn(u16, &Value) -> bool {
    move |status, body| {
        let mut tools: Vec<&str> = body["permissions"]["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        tools.sort_unstable();
        let mut wanted = expected.to_vec();
        wanted.sort_unstable();
        status == 200 && tools == wanted
    }
}

fn app_roles_are(expected: &'static [&'static str]) -> impl Fn(u16, &Value) -> bool {
    move |status, body| status == 200 && body["appRoles"] == json!(expected)
}

#[tokio::test]
async fn sdk_writes_to_the_users_table_reach_both_tasks() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let dynamodb = system.aws.dynamodb();
    let table = system.stack.users_table.clone();
    let token = system.token("carol", &["Staff"]);

    // PutItem creates; both tasks read (and cache) it.
    dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(user_item("carol", "Carol 1", &["Staff"])))
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 1")).await?;

    dynamodb
        .update_item()
        .table_name(&table)
        .set_key(Some(user_key("carol")))
        .update_expression("SET #n = :n")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":n", s("Carol 2"))
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 2")).await?;

    dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(user_item("carol", "Carol 3", &["Staff"])))
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 3")).await?;

    dynamodb
        .batch_write_item()
        .request_items(
            &table,
            vec![
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(user_item("carol", "Carol 4", &["Staff"])))
                            .build()?,
                    )
                    .build(),
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(user_item("dan", "Dan", &["Staff"])))
                            .build()?,
                    )
                    .build(),
            ],
        )
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 4")).await?;

    dynamodb
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&table)
                        .set_key(Some(user_key("carol")))
                        .update_expression("SET #n = :n")
                        .expression_attribute_names("#n", "name")
                        .expression_attribute_values(":n", s("Carol 5"))
                        .build()?,
                )
                .build(),
        )
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 5")).await?;

    dynamodb
        .execute_statement()
        .statement(format!(
            "UPDATE \"{table}\" SET \"name\" = 'Carol 6' WHERE PK = 'USER#carol' AND SK = 'PROFILE'"
        ))
        .send()
        .await?;
    system.until_all_tasks("/users/me", &token, name_is("Carol 6")).await?;

    dynamodb
        .delete_item()
        .table_name(&table)
        .set_key(Some(user_key("carol")))
        .send()
        .await?;
    system
        .until_all_tasks("/users/me", &token, |status, _| status == 404)
        .await?;

    // The GSI exists for lookups; the batch read proves the items are where the model says.
    let batch = dynamodb
        .batch_get_item()
        .request_items(&table, KeysAndAttributes::builder().keys(user_key("dan")).build()?)
        .send()
        .await?;
    assert_eq!(
        batch
            .responses()
            .and_then(|responses| responses.get(&table))
            .map(Vec::len),
        Some(1)
    );
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn sdk_writes_to_the_roles_table_reach_both_tasks() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let dynamodb = system.aws.dynamodb();
    let table = system.stack.roles_table.clone();
    change_user(&system, "dora", with_roles(&["Staff"])).await?;
    let token = system.token("dora", &["Staff"]);
    system
        .until_all_tasks("/users/me", &token, tools_are(&["calendar", "search"]))
        .await?;

    let set_tools = |tools: &[&str]| {
        dynamodb
            .update_item()
            .table_name(&table)
            .set_key(Some(role_key("staff")))
            .update_expression("SET grantedTools = :t")
            .expression_attribute_values(":t", list(tools))
    };
    set_tools(&["search", "code"]).send().await?;
    system
        .until_all_tasks("/users/me", &token, tools_are(&["code", "search"]))
        .await?;

    let mut definition = dynamodb
        .get_item()
        .table_name(&table)
        .set_key(Some(role_key("staff")))
        .consistent_read(true)
        .send()
        .await?
        .item
        .unwrap_or_default();
    definition.insert("grantedTools".into(), list(&["deploy"]));
    dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(definition.clone()))
        .send()
        .await?;
    system
        .until_all_tasks("/users/me", &token, tools_are(&["deploy"]))
        .await?;

    definition.insert("grantedTools".into(), list(&["batch"]));
    dynamodb
        .batch_write_item()
        .request_items(
            &table,
            vec![
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(definition.clone())).build()?)
                    .build(),
            ],
        )
        .send()
        .await?;
    system
        .until_all_tasks("/users/me", &token, tools_are(&["batch"]))
        .await?;

    dynamodb
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&table)
                        .set_key(Some(role_key("staff")))
                        .update_expression("SET grantedTools = :t")
                        .expression_attribute_values(":t", list(&["transact"]))
                        .build()?,
                )
                .build(),
        )
        .send()
        .await?;
    system
        .until_all_tasks("/users/me", &token, tools_are(&["transact"]))
        .await?;

    // PartiQL (moto's parser takes scalar SETs): the change shows on the admin route.
    let admin = system.admin_token();
    system
        .until_all_tasks("/admin/roles/staff", &admin, |status, _| status == 200)
        .await?;
    dynamodb
        .execute_statement()
        .statement(format!(
            "UPDATE \"{table}\" SET description = 'edited with PartiQL' WHERE PK = 'ROLE#staff' AND SK = 'DEFINITION'"
        ))
        .send()
        .await?;
    system
        .until_all_tasks("/admin/roles/staff", &admin, |status, body| {
            status == 200 && body["description"] == "edited with PartiQL"
        })
        .await?;

    // Without its definition the role grants nothing: the user falls back to `default`.
    dynamodb
        .delete_item()
        .table_name(&table)
        .set_key(Some(role_key("staff")))
        .send()
        .await?;
    system
        .until_all_tasks("/users/me", &token, app_roles_are(&["default"]))
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn api_writes_reach_both_tasks_through_the_stream() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let admin = system.admin_token();

    // Sync through task 0 after task 1 has answered 404 for the same user.
    let erin = system.token("erin", &["Staff"]);
    assert_eq!(system.get(1, "/users/me", &erin).await?.0, 404);
    let (status, body) = system
        .send(0, Method::POST, "/users/me/sync", &erin, Some(&json!({"name": "Erin"})))
        .await?;
    assert_eq!(status, 200, "{body}");
    system.until_all_tasks("/users/me", &erin, name_is("Erin")).await?;

    // A user whose IdP role maps to no AppRole yet gets `default` on both tasks…
    change_user(&system, "fred", with_roles(&["Auditor"])).await?;
    let fred = system.token("fred", &["Auditor"]);
    system
        .until_all_tasks("/users/me", &fred, app_roles_are(&["default"]))
        .await?;

    // …until an admin creates the mapping AppRole on task 0; task 1 learns it from its queue.
    let role = json!({
        "roleId": "auditor",
        "displayName": "Auditor",
        "jwtRoleMappings": ["Auditor"],
        "grantedTools": ["audit"],
        "priority": 50
    });
    let (status, body) = system
        .send(0, Method::POST, "/admin/roles", &admin, Some(&role))
        .await?;
    assert_eq!(status, 201, "{body}");
    system
        .until_all_tasks("/users/me", &fred, tools_are(&["audit"]))
        .await?;

    let patch = json!({"grantedTools": ["audit", "export"]});
    let (status, body) = system
        .send(0, Method::PATCH, "/admin/roles/auditor", &admin, Some(&patch))
        .await?;
    assert_eq!(status, 200, "{body}");
    system
        .until_all_tasks("/users/me", &fred, tools_are(&["audit", "export"]))
        .await?;
    system
        .until_all_tasks("/admin/roles/auditor", &admin, |status, body| {
            status == 200 && body["grantedTools"] == json!(["audit", "export"])
        })
        .await?;

    let (status, body) = system
        .send(0, Method::DELETE, "/admin/roles/auditor", &admin, None)
        .await?;
    assert!(status == 204 || status == 200, "{status} {body}");
    system
        .until_all_tasks("/users/me", &fred, app_roles_are(&["default"]))
        .await?;
    system
        .until_all_tasks("/admin/roles/auditor", &admin, |status, _| status == 404)
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_role_edit_changes_every_holder_and_a_user_edit_changes_that_user() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let dynamodb = system.aws.dynamodb();
    let holders = ["gina", "hank", "ivy"];
    for user in holders {
        change_user(&system, user, with_roles(&["Staff"])).await?;
        system
            .until_all_tasks(
                "/users/me",
                &system.token_without_roles(user),
                tools_are(&["calendar", "search"]),
            )
            .await?;
    }

    let change = RolePatch {
        granted_tools: Some(vec!["search".into(), "wiki".into()]),
        ..RolePatch::default()
    };
    operator::update_role(&dynamodb, &system.stack.roles_table, "staff", &change).await?;
    for user in holders {
        system
            .until_all_tasks(
                "/users/me",
                &system.token_without_roles(user),
                tools_are(&["search", "wiki"]),
            )
            .await?;
    }

    // One user's IdP roles edited in the table: only their permissions change. The tokens carry
    // no roles claim, so the stored roles decide (a claim would be the IdP's word instead).
    change_user(&system, "gina", with_roles(&["Staff", "Admin"])).await?;
    system
        .until_all_tasks("/users/me", &system.token_without_roles("gina"), |status, body| {
            status == 200 && body["permissions"]["tools"] == json!(["*"])
        })
        .await?;
    system
        .until_all_tasks(
            "/users/me",
            &system.token_without_roles("hank"),
            tools_are(&["search", "wiki"]),
        )
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_suspended_user_is_refused_on_both_tasks_but_sees_their_status() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let admin = system.admin_token();
    system
        .until_all_tasks("/admin/roles", &admin, |status, _| status == 200)
        .await?;

    change_user(&system, "admin", with_status("suspended")).await?;
    system
        .until_all_tasks("/admin/roles", &admin, |status, _| status == 403)
        .await?;
    system
        .until_all_tasks("/users/me", &admin, |status, body| {
            status == 200 && body["status"] == "suspended"
        })
        .await?;
    for index in 0..2 {
        let (status, body) = system.send(index, Method::POST, "/users/me/sync", &admin, None).await?;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }

    change_user(&system, "admin", with_status("active")).await?;
    system
        .until_all_tasks("/admin/roles", &admin, |status, _| status == 200)
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn last_login_only_updates_invalidate_nothing_and_the_cache_keeps_hitting() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let dynamodb = system.aws.dynamodb();
    let table = system.stack.users_table.clone();
    let alice = system.token("alice", &["Staff"]);
    system
        .until_all_tasks("/users/me", &alice, |status, _| status == 200)
        .await?;

    let applied = "staleless_invalidations_applied_total";
    let admin = system.admin_token();
    let flushes = |body: &serde_json::Value| body["caches"]["profiles"]["flushes"].as_u64();
    let mut applied_before = Vec::new();
    let mut flushes_before = Vec::new();
    for index in 0..2 {
        applied_before.push(system.metric(index, applied, &[("source", "users")]).await?);
        flushes_before.push(flushes(&system.get(index, "/admin/cache/stats", &admin).await?.1));
    }

    for minute in 10..15 {
        dynamodb
            .update_item()
            .table_name(&table)
            .set_key(Some(user_key("alice")))
            .update_expression("SET lastLoginAt = :t")
            .expression_attribute_values(":t", s(&format!("2026-11-25T06:{minute}:00Z")))
            .send()
            .await?;
    }
    // A marker change to another user, written after the lastLoginAt updates on the same
    // (single-shard, ordered) stream: once both tasks see it, the relay has passed them all.
    let marker = UserChange {
        name: Some("Marker".into()),
        ..UserChange::default()
    };
    system
        .until_all_tasks("/users/me", &admin, |status, _| status == 200)
        .await?;
    operator::put_user(&dynamodb, &table, "admin", &marker).await?;
    system.until_all_tasks("/users/me", &admin, name_is("Marker")).await?;

    let profiles = [("cache", "profiles")];
    for (index, before) in applied_before.into_iter().enumerate() {
        let applied_after = system.metric(index, applied, &[("source", "users")]).await?;
        assert!(
            (applied_after - before - 1.0).abs() < f64::EPSILON,
            "task {index}: only the marker may invalidate, applied went {before} -> {applied_after}"
        );
        // The first read of alice since the updates is no miss — unless the cache was flushed
        // since before them (trust returning after a busy machine's late ticks flushes it),
        // which says nothing of the lastLoginAt updates. A read that found the ticks late and
        // went through to the table counts as neither.
        let misses = system.metric(index, "staleless_cache_misses_total", &profiles).await?;
        let (status, body) = system.get(index, "/users/me", &alice).await?;
        anyhow::ensure!(status == 200, "{body}");
        let missed = system.metric(index, "staleless_cache_misses_total", &profiles).await? > misses;
        if missed {
            let flushed = flushes(&system.get(index, "/admin/cache/stats", &admin).await?.1);
            assert!(
                flushed > flushes_before[index],
                "task {index}: a profile miss after lastLoginAt-only updates, with no flush since before them"
            );
        }
        // And alice is served from the cache again: read until one hits.
        let hit = eventually(PATIENCE, &format!("task {index} to serve alice from cache"), || async {
            let hits = system.metric(index, "staleless_cache_hits_total", &profiles).await?;
            let (status, body) = system.get(index, "/users/me", &alice).await?;
            anyhow::ensure!(status == 200, "{body}");
            Ok(system.metric(index, "staleless_cache_hits_total", &profiles).await? > hits)
        })
        .await;
        assert!(hit.is_ok(), "task {index}: alice must still be served from cache");
    }
    system.stop().await;
    Ok(())
}
