//! Changes made the way operators make them: straight to the tables with the plain AWS SDK, never
//! through the API. This is the path stale caches come from (console edits, scripts, imports), so
//! the local stack, the demo and the end-to-end tests use it to prove the API still sees every
//! change.
//!
//! Items follow the data model of the production tables: users `PK = USER#<id>`, `SK = PROFILE`;
//! role definitions `PK = ROLE#<id>`, `SK = DEFINITION`, with one `JWT_MAPPING#<idp role>` item per
//! mapping under the same `PK`.

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

use staleless_protocol::keys::{DEFINITION_SK, PARTITION_KEY, PROFILE_SK, SORT_KEY, jwt_mapping_sk, jwt_role_gsi_pk};
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
    /// `active`, `inactive` or `suspended`.
    pub status: Option<String>,
}

/// The statuses the data model allows.
pub const USER_STATUSES: [&str; 3] = ["active", "inactive", "suspended"];

/// Creates the user or updates the given fields, as an operator script would.
///
/// An existing profile is changed with one `UpdateItem` (so only the named attributes change);
/// a new one is written whole with `PutItem`.
///
/// # Errors
/// [`OperatorError::Invalid`] for a status outside [`USER_STATUSES`]; otherwise the SDK's error.
pub async fn put_user(client: &Client, table: &str, user_id: &str, change: &UserChange) -> Result<(), OperatorError> {
    if let Some(status) = &change.status
        && !USER_STATUSES.contains(&status.as_str())
    {
        return Err(OperatorError::Invalid(format!(
            "status must be one of {USER_STATUSES:?}, not {status:?}"
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
    let mut item = json!({
        PARTITION_KEY: user_pk(user_id),
        SORT_KEY: PROFILE_SK,
        "userId": user_id,
        "email": format!("{user_id}@example.com"),
        "name": user_id,
        "roles": ["Staff"],
        "status": "active",
        "createdAt": created,
        "lastLoginAt": created,
    });
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

/// A whole AppRole definition as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDefinition {
    /// `^[a-z][a-z0-9_]{2,49}$`.
    pub role_id: String,
    /// Human name.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// IdP role names that grant this AppRole.
    pub jwt_role_mappings: Vec<String>,
    /// Tools granted (`*` = all).
    pub granted_tools: Vec<String>,
    /// Models granted (`*` = all).
    pub granted_models: Vec<String>,
    /// Skills granted (`*` = all).
    pub granted_skills: Vec<String>,
    /// 0–999; the highest-priority role decides the quota tier.
    pub priority: u16,
    /// Disabled roles grant nothing.
    pub enabled: bool,
    /// System roles are seeded, not user-made.
    pub is_system_role: bool,
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
    if role.priority > 999 {
        return Err(OperatorError::Invalid(format!(
            "priority {} is over 999",
            role.priority
        )));
    }
    let timestamp = now();
    let definition = json!({
        PARTITION_KEY: role_pk(&role.role_id),
        SORT_KEY: DEFINITION_SK,
        "roleId": role.role_id,
        "displayName": role.display_name,
        "description": role.description,
        "jwtRoleMappings": role.jwt_role_mappings,
        "grantedTools": role.granted_tools,
        "grantedModels": role.granted_models,
        "grantedSkills": role.granted_skills,
        "priority": role.priority,
        "enabled": role.enabled,
        "isSystemRole": role.is_system_role,
        "createdAt": timestamp,
        "updatedAt": timestamp,
    });
    let mut items = vec![definition];
    for mapping in &role.jwt_role_mappings {
        items.push(json!({
            PARTITION_KEY: role_pk(&role.role_id),
            SORT_KEY: jwt_mapping_sk(mapping),
            "GSI1PK": jwt_role_gsi_pk(mapping),
            "GSI1SK": role_pk(&role.role_id),
            "roleId": role.role_id,
            "jwtRole": mapping,
        }));
    }
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

/// Fields of a role definition an operator may change in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleChange {
    /// New granted tools.
    pub granted_tools: Option<Vec<String>>,
    /// New granted models.
    pub granted_models: Option<Vec<String>>,
    /// New granted skills.
    pub granted_skills: Option<Vec<String>>,
    /// New priority.
    pub priority: Option<u16>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New description.
    pub description: Option<String>,
}

/// Changes fields of an existing role definition with one `UpdateItem`.
///
/// # Errors
/// [`OperatorError::Invalid`] when nothing is to change or the role does not exist; otherwise
/// the SDK's error.
pub async fn update_role(
    client: &Client,
    table: &str,
    role_id: &str,
    change: &RoleChange,
) -> Result<(), OperatorError> {
    let mut fields: Vec<(&str, Value)> = Vec::new();
    if let Some(tools) = &change.granted_tools {
        fields.push(("grantedTools", json!(tools)));
    }
    if let Some(models) = &change.granted_models {
        fields.push(("grantedModels", json!(models)));
    }
    if let Some(skills) = &change.granted_skills {
        fields.push(("grantedSkills", json!(skills)));
    }
    if let Some(priority) = change.priority {
        fields.push(("priority", json!(priority)));
    }
    if let Some(enabled) = change.enabled {
        fields.push(("enabled", json!(enabled)));
    }
    if let Some(description) = &change.description {
        fields.push(("description", json!(description)));
    }
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
                .all(|role| is_valid_role_id(&role.role_id) && role.priority <= 999)
        );
    }
}
