//! Operator writes (straight to the tables, no API) against a real moto server.

use aws_sdk_dynamodb::types::AttributeValue;
use infra::LocalAws;
use infra::operator::{self, OperatorError, RolePatch, UserChange};

async fn profile(
    aws: &LocalAws,
    table: &str,
    user_id: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    aws.dynamodb()
        .get_item()
        .table_name(table)
        .key("PK", AttributeValue::S(operator::user_pk(user_id)))
        .key("SK", AttributeValue::S("PROFILE".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
}

#[tokio::test]
async fn put_user_creates_then_changes_only_the_named_fields() {
    let aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");
    let client = aws.dynamodb();

    let created = UserChange {
        name: Some("Bob".into()),
        email: Some("Bob@Example.COM".into()),
        ..UserChange::default()
    };
    operator::put_user(&client, &stack.users_table, "bob", &created)
        .await
        .expect("create");
    let first = profile(&aws, &stack.users_table, "bob").await.expect("item");
    assert_eq!(first.get("email"), Some(&AttributeValue::S("bob@example.com".into())));
    assert_eq!(first.get("status"), Some(&AttributeValue::S("active".into())));
    assert_eq!(first.get("userId"), Some(&AttributeValue::S("bob".into())));

    let suspend = UserChange {
        status: Some("suspended".into()),
        ..UserChange::default()
    };
    operator::put_user(&client, &stack.users_table, "bob", &suspend)
        .await
        .expect("update");
    let second = profile(&aws, &stack.users_table, "bob").await.expect("item");
    assert_eq!(second.get("status"), Some(&AttributeValue::S("suspended".into())));
    assert_eq!(second.get("name"), first.get("name"));
    assert_eq!(second.get("lastLoginAt"), first.get("lastLoginAt"));

    let bad = UserChange {
        status: Some("banned".into()),
        ..UserChange::default()
    };
    let err = operator::put_user(&client, &stack.users_table, "bob", &bad)
        .await
        .expect_err("bad status");
    assert!(matches!(err, OperatorError::Invalid(_)), "{err}");

    operator::delete_user(&client, &stack.users_table, "bob")
        .await
        .expect("delete");
    assert!(profile(&aws, &stack.users_table, "bob").await.is_none());
}

#[tokio::test]
async fn demo_seed_writes_definitions_and_mapping_items() {
    let aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");
    let client = aws.dynamodb();
    operator::seed_demo(&client, &stack.users_table, &stack.roles_table)
        .await
        .expect("seed");

    let items = operator::role_items(&client, &stack.roles_table, "system_admin")
        .await
        .expect("query");
    let sort_keys: Vec<&str> = items
        .iter()
        .filter_map(|item| item.get("SK").and_then(|sk| sk.as_s().ok()).map(String::as_str))
        .collect();
    assert_eq!(sort_keys, ["DEFINITION", "JWT_MAPPING#Admin"]);

    let change = RolePatch {
        granted_tools: Some(vec!["search".into(), "code".into()]),
        ..RolePatch::default()
    };
    operator::update_role(&client, &stack.roles_table, "staff", &change)
        .await
        .expect("update");
    let err = operator::update_role(&client, &stack.roles_table, "nobody", &change)
        .await
        .expect_err("missing role");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(profile(&aws, &stack.users_table, "alice").await.is_some());
}
