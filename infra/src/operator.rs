//! Changes made the way operators make them: straight to the tables with the plain AWS SDK, never
//! through the API. This is the path stale caches come from (console edits, scripts, imports), so
//! the local stack, the demo and the end-to-end tests use it to prove the API still sees every
//! change.
//!
//! Items are the data model's (`staleless-model`, the API's own types and item builders): users
//! `PK = USER#<id>`, `SK = PROFILE`; role definitions `PK = ROLE#<id>`, `SK = DEFINITION`, with one
//! `JWT_MAPPING#<idp role>` item per mapping under the same `PK`.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

/// Why an operator write failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The table call failed.
    #[error("{operation} on {table} failed: {detail}")]
    Dynamo {
        /// The API call.
        operation: &'static str,
        /// The table.
        table: String,
        /// The SDK's message.
        detail: String,
    },
    /// The item could not be converted to DynamoDB attributes.
    #[error("cannot encode item: {0}")]
    Encode(#[from] serde_dynamo::Error),
    /// The input does not fit the data model.
    #[error("{0}")]
    Invalid(String),
}

fn dynamo_error<E: std::error::Error + 'static>(operation: &'static str, table: &str, err: &E) -> OperatorError {
    OperatorError::Dynamo {
        operation,
        table: table.to_owned(),
        detail: DisplayErrorContext(err).to_string(),
    }
}

/// An `UpdateItem` `SET` of some attributes, with placeholders for every name (so reserved words
/// like `name` and `status` need no special care).
struct SetExpression {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl SetExpression {
    fn of(fields: Vec<(&str, Value)>) -> Result<Self, OperatorError> {
        let mut assignments = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        for (index, (field, value)) in fields.into_iter().enumerate() {
            assignments.push(format!("#f{index} = :v{index}"));
            names.insert(format!("#f{index}"), field.to_owned());
            values.insert(format!(":v{index}"), serde_dynamo::to_attribute_value(value)?);
        }
        Ok(Self {
            expression: format!("SET {}", assignments.join(", ")),
            names,
            values,
        })
    }
}

use staleless_model::Profile;
pub use staleless_model::{MAX_PRIORITY, RoleDefinition, RolePatch, UserStatus};
use staleless_protocol::keys::{DEFINITION_SK, PARTITION_KEY, PROFILE_SK, SORT_KEY};
pub use staleless_protocol::keys::{role_pk, user_pk};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Fields of a profile an operator may set; `None` leaves the stored value alone (or uses a
/// default when the user does not exist yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// Display name.
    pub name: Option<String>,
    /// E-mail address, stored lower-case.
    pub email: Option<String>,
    /// Identity-provider role names (`Staff`, `Admin`).
    pub roles: Option<Vec<String>>,
    /// `active`, `inactive` or `suspended` ([`UserStatus`]).
    pub status: Option<String>,
}

/// Creates the user or updates the given fields, as an operator script would.
///
/// An existing profile is changed with one `UpdateItem` (so only the named attributes change);
/// a new one is written whole with `PutItem`.
///
/// # Errors
/// [`OperatorError::Invalid`] for a status outside [`UserStatus`]; otherwise the SDK's error.
pub async fn put_user(client: &Client, table: &str, user_id: &str, change: &UserChange) -> Result<(), OperatorError> {
    if let Some(status) = &change.status
        && UserStatus::parse(status).is_none()
    {
        let allowed: Vec<&str> = UserStatus::ALL.iter().map(|status| status.as_str()).collect();
        return Err(OperatorError::Invalid(format!(
            "status must be one of {allowed:?}, not {status:?}"
        )));
    }
    let mut fields: Vec<(&str, Value)> = Vec::new();
    if let Some(name) = &change.name {
        fields.push(("name", json!(name)));
    }
    if let Some(email) = &change.email {
        fields.push(("email", json!(email.to_lowercase())));
    }
    if let Some(roles) = &change.roles {
        fields.push(("roles", json!(roles)));
    }
    if let Some(status) = &change.status {
        fields.push(("status", json!(status)));
    }

    let key = HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(user_pk(user_id))),
        (SORT_KEY.to_owned(), AttributeValue::S(PROFILE_SK.to_owned())),
    ]);
    let existing = client
        .get_item()
        .table_name(table)
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| dynamo_error("GetItem", table, &err))?;

    if existing.item.is_some() {
        if fields.is_empty() {
            return Ok(());
        }
        let update = SetExpression::of(fields)?;
        client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(update.expression)
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .send()
            .await
            .map_err(|err| dynamo_error("UpdateItem", table, &err))?;
        return Ok(());
    }

    let created = now();
    let mut item = Profile {
        user_id: user_id.to_owned(),
        email: format!("{user_id}@example.com"),
        name: user_id.to_owned(),
        roles: vec!["Staff".to_owned()],
        picture: None,
        status: UserStatus::Active,
        created_at: created.clone(),
        roles_issued_at: None,
    }
    .item();
    item["lastLoginAt"] = json!(created);
    for (field, value) in fields {
        item[field] = value;
    }
    client
        .put_item()
        .table_name(table)
        .set_item(Some(serde_dynamo::to_item(item)?))
        .send()
        .await
        .map_err(|err| dynamo_error("PutItem", table, &err))?;
    Ok(())
}

/// Deletes a user's profile item.
///
/// # Errors
/// The SDK's error.
pub async fn delete_user(client: &Client, table: &str, user_id: &str) -> Result<(), OperatorError> {
    client
        .delete_item()
        .table_name(table)
        .key(PARTITION_KEY, AttributeValue::S(user_pk(user_id)))
        .key(SORT_KEY, AttributeValue::S(PROFILE_SK.to_owned()))
        .send()
        .await
        .map_err(|err| dynamo_error("DeleteItem", table, &err))?;
    Ok(())
}

/// Every item stored under a role's key — its definition and its `JWT_MAPPING#…` items — read
/// consistently: what an operator checks after an edit.
///
/// # Errors
/// The SDK's error.
pub async fn role_items(
    client: &Client,
    table: &str,
    role_id: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, OperatorError> {
    let output = client
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", PARTITION_KEY)
        .expression_attribute_values(":pk", AttributeValue::S(role_pk(role_id)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| dynamo_error("Query", table, &err))?;
    Ok(output.items.unwrap_or_default())
}

/// Whether `role_id` matches `^[a-z][a-z0-9_]{2,49}$`: the one rule, shared with the API.
pub use staleless_protocol::keys::is_valid_role_id;

/// Writes a role definition and its mapping items in one transaction, as the admin tooling of
/// the production system does — several stream records for one role, which the relay coalesces.
///
/// # Errors
/// [`OperatorError::Invalid`] for a role id or priority outside the data model; otherwise the
/// SDK's error.
pub async fn put_role(client: &Client, table: &str, role: &RoleDefinition) -> Result<(), OperatorError> {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

    if !is_valid_role_id(&role.role_id) {
        return Err(OperatorError::Invalid(format!(
            "role id {:?} must match ^[a-z][a-z0-9_]{{2,49}}$",
            role.role_id
        )));
    }
    if role.priority > MAX_PRIORITY {
        return Err(OperatorError::Invalid(format!(
            "priority {} is over {MAX_PRIORITY}",
            role.priority
        )));
    }
    let timestamp = now();
    let stamped = RoleDefinition {
        created_at: timestamp.clone(),
        updated_at: timestamp,
        ..role.clone()
    };
    let mut items = vec![stamped.item()];
    items.extend(stamped.mapping_items());
    let mut request = client.transact_write_items();
    for item in items {
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(serde_dynamo::to_item(item)?))
            .build()
            .map_err(|err| OperatorError::Invalid(err.to_string()))?;
        request = request.transact_items(TransactWriteItem::builder().put(put).build());
    }
    request
        .send()
        .await
        .map_err(|err| dynamo_error("TransactWriteItems", table, &err))?;
    Ok(())
}

/// Changes the attributes `patch` names of an existing role definition with one `UpdateItem`,
/// as a script does: no version bump, no validation beyond the model's types.
///
/// # Errors
/// [`OperatorError::Invalid`] when nothing is to change or the role does not exist; otherwise
/// the SDK's error.
pub async fn update_role(client: &Client, table: &str, role_id: &str, patch: &RolePatch) -> Result<(), OperatorError> {
    let mut fields = patch.attributes();
    if fields.is_empty() {
        return Err(OperatorError::Invalid("nothing to change".to_owned()));
    }
    fields.push(("updatedAt", json!(now())));

    let update = SetExpression::of(fields)?;
    let result = client
        .update_item()
        .table_name(table)
        .key(PARTITION_KEY, AttributeValue::S(role_pk(role_id)))
        .key(SORT_KEY, AttributeValue::S(DEFINITION_SK.to_owned()))
        .update_expression(update.expression)
        .condition_expression("attribute_exists(PK)")
        .set_expression_attribute_names(Some(update.names))
        .set_expression_attribute_values(Some(update.values))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(err)
            if err.as_service_error().is_some_and(
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::is_conditional_check_failed_exception,
            ) =>
        {
            Err(OperatorError::Invalid(format!("role {role_id} does not exist")))
        }
        Err(err) => Err(dynamo_error("UpdateItem", table, &err)),
    }
}

/// The demo AppRoles of the local stack: `system_admin` (IdP `Admin`, everything), `staff`
/// (IdP `Staff`) and `default` (anyone else).
#[must_use]
pub fn demo_roles() -> Vec<RoleDefinition> {
    let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect::<Vec<_>>();
    vec![
        RoleDefinition {
            role_id: "system_admin".into(),
            display_name: "System administrator".into(),
            description: "Full access, including the admin routes".into(),
            jwt_role_mappings: strings(&["Admin"]),
            granted_tools: strings(&["*"]),
            granted_models: strings(&["*"]),
            granted_skills: strings(&["*"]),
            priority: 900,
            enabled: true,
            is_system_role: true,
            ..RoleDefinition::default()
        },
        RoleDefinition {
            role_id: "staff".into(),
            display_name: "Staff".into(),
            description: "Everyday tools for employees".into(),
            jwt_role_mappings: strings(&["Staff"]),
            granted_tools: strings(&["search", "calendar"]),
            granted_models: strings(&["standard"]),
            granted_skills: strings(&["summarize"]),
            priority: 100,
            enabled: true,
            is_system_role: true,
            ..RoleDefinition::default()
        },
        RoleDefinition {
            role_id: "default".into(),
            display_name: "Default".into(),
            description: "What a user with no mapped role gets".into(),
            jwt_role_mappings: Vec::new(),
            granted_tools: strings(&["search"]),
            granted_models: strings(&["basic"]),
            granted_skills: Vec::new(),
            priority: 0,
            enabled: true,
            is_system_role: true,
            ..RoleDefinition::default()
        },
    ]
}

/// Seeds the demo roles and two demo users (`alice`, Staff; `admin`, Admin).
///
/// # Errors
/// The first failing write.
pub async fn seed_demo(client: &Client, users_table: &str, roles_table: &str) -> Result<(), OperatorError> {
    for role in demo_roles() {
        put_role(client, roles_table, &role).await?;
    }
    let user = |name: &str, roles: &[&str]| UserChange {
        name: Some(name.to_owned()),
        email: None,
        roles: Some(roles.iter().map(|role| (*role).to_owned()).collect()),
        status: Some("active".to_owned()),
    };
    put_user(client, users_table, "alice", &user("Alice", &["Staff"])).await?;
    put_user(client, users_table, "admin", &user("Admin", &["Admin"])).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_follow_the_data_model() {
        for valid in ["staff", "system_admin", "abc", "a12_3"] {
            assert!(is_valid_role_id(valid), "{valid}");
        }
        let too_long = "a".repeat(51);
        for invalid in ["ab", "Staff", "1abc", "a-b", "", too_long.as_str(), "rôle"] {
            assert!(!is_valid_role_id(invalid), "{invalid}");
        }
    }

    #[test]
    fn demo_roles_are_valid_and_include_the_contract_ones() {
        let roles = demo_roles();
        let ids: Vec<&str> = roles.iter().map(|role| role.role_id.as_str()).collect();
        assert_eq!(ids, ["system_admin", "staff", "default"]);
        assert!(
            roles
                .iter()
                .all(|role| is_valid_role_id(&role.role_id) && role.priority <= MAX_PRIORITY)
        );
    }
}
