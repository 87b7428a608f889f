//! The stores on DynamoDB (`aws-sdk-dynamodb` + `serde_dynamo`).
//!
//! Every read here may fill a cache, so every read of an item is strongly consistent and on the
//! base table: a GSI read is eventually consistent and could re-cache the old value right after
//! an invalidation (`docs/design.md`, "Data model"). The one index read lists role ids (never role data), and the
//! roles changed moments ago are read even when that listing does not show them yet.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update};

use staleless_protocol::keys::{
    DEFINITION_SK, PARTITION_KEY, PROFILE_SK, PartitionKey, ROLE_DEFINITION_INDEX, SORT_KEY, jwt_mapping_sk, parse_pk,
    role_pk, user_pk,
};

use super::{ProfileStore, ProfileSync, RoleStore, StoreError};
use crate::model::{Profile, RoleDefinition, StoredRole, read_item};

/// `BatchGetItem` takes at most 100 keys.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html>
const MAX_BATCH_GET_KEYS: usize = 100;
/// Calls per batch before unprocessed (throttled) keys fail the read.
const MAX_BATCH_GET_ATTEMPTS: u32 = 4;
/// `TransactWriteItems` takes at most 100 actions.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>
const MAX_TRANSACTION_ACTIONS: usize = 100;

type Item = HashMap<String, AttributeValue>;

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(string).collect())
}

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), string(pk)),
        (SORT_KEY.to_owned(), string(sk)),
    ])
}

fn unavailable<E: std::error::Error + 'static>(operation: &str, err: &E) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {}", DisplayErrorContext(err)))
}

/// The stored `iat` of the token whose roles claim set a profile's `roles`.
const ROLES_ISSUED_AT: &str = "rolesIssuedAt";

/// `UpdateItem` refused on its condition.
fn is_condition_failure<R>(err: &aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>) -> bool {
    err.as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
}

fn corrupt(pk: &str, err: &impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: pk.to_owned(),
        detail: err.to_string(),
    }
}

/// A profile item read as a [`Profile`], or the attribute at fault.
fn read_profile(pk: &str, item: &serde_json::Value) -> Result<Profile, StoreError> {
    read_item(item).map_err(|fault| corrupt(pk, &fault))
}

/// An item as JSON, for [`read_item`] and [`StoredRole::read`], which name the attribute at
/// fault (every DynamoDB value has a JSON form, so this fails only on a bug).
fn item_json(pk: &str, item: Item) -> Result<serde_json::Value, StoreError> {
    serde_dynamo::from_item(item).map_err(|err| corrupt(pk, &err))
}

/// Reads one item from the base table with `ConsistentRead`: a cache fill must see every write
/// acknowledged before it, or it could re-cache the value an invalidation just evicted.
async fn get_consistent(
    client: &Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk.to_owned(), sk)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| unavailable("GetItem", &err))?;
    output.item.map(|item| item_json(pk, item)).transpose()
}

/// Profiles in the users table.
#[derive(Debug, Clone)]
pub struct DynamoProfiles {
    /// The SDK client.
    client: Client,
    /// `USERS_TABLE`.
    table: String,
}

impl DynamoProfiles {
    /// Profiles in `table`.
    #[must_use]
    pub const fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }
}

impl DynamoProfiles {
    /// The sync's `UpdateItem`, its roles included when `with_roles` (and the token has a roles
    /// claim) on condition that no token issued later set them: `None` when that condition failed.
    async fn write_sync(&self, sync: &ProfileSync, with_roles: bool) -> Result<Option<Profile>, StoreError> {
        let pk = user_pk(&sync.user_id);
        // Only what a sync owns is set; `status` and `createdAt` are set only when absent, so a
        // concurrent administrator's change of status is never undone by a user's login.
        let mut assignments = vec![
            "userId = :userId",
            "lastLoginAt = :now",
            "createdAt = if_not_exists(createdAt, :now)",
            "#status = if_not_exists(#status, :active)",
        ];
        let mut values = HashMap::from([
            (":userId".to_owned(), string(&sync.user_id)),
            (":now".to_owned(), string(&sync.now)),
            (":active".to_owned(), string("active")),
        ]);
        let mut names = HashMap::from([("#status".to_owned(), "status".to_owned())]);
        // A token without a roles claim leaves the stored roles as they are (set by an operator).
        let mut condition = None;
        if let Some(roles) = sync.roles.as_ref().filter(|_| with_roles) {
            assignments.push("#roles = :roles");
            values.insert(":roles".to_owned(), string_list(roles));
            names.insert("#roles".to_owned(), "roles".to_owned());
            names.insert("#issued".to_owned(), ROLES_ISSUED_AT.to_owned());
            condition = Some(match sync.roles_issued_at {
                Some(issued_at) => {
                    assignments.push("#issued = :issued");
                    values.insert(":issued".to_owned(), AttributeValue::N(issued_at.to_string()));
                    "attribute_not_exists(#issued) OR #issued <= :issued"
                }
                None => "attribute_not_exists(#issued)",
            });
        }
        if let Some(email) = &sync.email {
            assignments.push("email = :email");
            values.insert(":email".to_owned(), string(email));
        }
        if let Some(name) = &sync.name {
            assignments.push("#name = :name");
            values.insert(":name".to_owned(), string(name));
            names.insert("#name".to_owned(), "name".to_owned());
        }
        if let Some(picture) = &sync.picture {
            assignments.push("picture = :picture");
            values.insert(":picture".to_owned(), string(picture));
        }
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk.clone(), PROFILE_SK)))
            .update_expression(format!("SET {}", assignments.join(", ")))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(err) if is_condition_failure(&err) => return Ok(None),
            Err(err) => return Err(unavailable("UpdateItem", &err)),
        };
        let item = item_json(&pk, output.attributes.unwrap_or_default())?;
        read_profile(&pk, &item).map(Some)
    }
}

#[async_trait]
impl ProfileStore for DynamoProfiles {
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
        let pk = user_pk(user_id);
        get_consistent(&self.client, &self.table, &pk, PROFILE_SK)
            .await?
            .map(|item| read_profile(&pk, &item))
            .transpose()
    }

    async fn sync_profile(&self, sync: &ProfileSync) -> Result<Profile, StoreError> {
        if let Some(profile) = self.write_sync(sync, true).await? {
            return Ok(profile);
        }
        // A token issued later set the stored roles: the rest of the sync still applies.
        self.write_sync(sync, false)
            .await?
            .ok_or_else(|| StoreError::Unavailable("UpdateItem: an unconditional sync failed its condition".into()))
    }

    async fn align_roles(&self, user_id: &str, roles: &[String], issued_at: Option<i64>) -> Result<bool, StoreError> {
        // Conditional, so tasks racing to align the same user write once, a profile that already
        // says this makes no stream record, a token issued before the one that set the stored
        // roles cannot set them back, and an item that does not exist is not created.
        let (update, recency) = match issued_at {
            Some(_) => (
                "SET #roles = :roles, #issued = :issued",
                "(attribute_not_exists(#issued) OR #issued <= :issued)",
            ),
            None => ("SET #roles = :roles", "attribute_not_exists(#issued)"),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), PROFILE_SK)))
            .update_expression(update)
            .condition_expression(format!(
                "attribute_exists(PK) AND (attribute_not_exists(#roles) OR #roles <> :roles) AND {recency}"
            ))
            .expression_attribute_names("#roles", "roles")
            .expression_attribute_names("#issued", ROLES_ISSUED_AT)
            .set_expression_attribute_values(Some(
                [(":roles".to_owned(), string_list(roles))]
                    .into_iter()
                    .chain(issued_at.map(|at| (":issued".to_owned(), AttributeValue::N(at.to_string()))))
                    .collect(),
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(unavailable("UpdateItem", &err)),
        }
    }
}

/// Role definitions (and their mapping items) in the app-roles table.
#[derive(Debug, Clone)]
pub struct DynamoRoles {
    /// The SDK client.
    client: Client,
    /// `ROLES_TABLE`.
    table: String,
}

impl DynamoRoles {
    /// Roles in `table`.
    #[must_use]
    pub const fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    fn definition_item(role: &RoleDefinition) -> Result<Item, StoreError> {
        serde_dynamo::to_item(role.item()).map_err(|err| corrupt(&role_pk(&role.role_id), &err))
    }

    /// The mapping item of `jwt_role` (the model's, [`crate::model::mapping_item`]).
    fn mapping_item(role_id: &str, jwt_role: &str) -> Result<Item, StoreError> {
        serde_dynamo::to_item(crate::model::mapping_item(role_id, jwt_role))
            .map_err(|err| corrupt(&role_pk(role_id), &err))
    }

    /// Puts of the mapping items of `jwt_roles` (idempotent).
    fn mapping_puts(&self, role_id: &str, jwt_roles: &[String]) -> Result<Vec<TransactWriteItem>, StoreError> {
        let distinct: BTreeSet<&String> = jwt_roles.iter().collect();
        distinct
            .into_iter()
            .map(|jwt_role| {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(Self::mapping_item(role_id, jwt_role)?))
                    .build()
                    .map_err(|err| Self::build_error(&err))?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect()
    }

    /// Deletes of the items `(ROLE#<role_id>, sk)`.
    fn mapping_deletes(
        &self,
        role_id: &str,
        sort_keys: impl Iterator<Item = String>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        sort_keys
            .map(|sk| {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(role_pk(role_id), sk)))
                    .build()
                    .map_err(|err| Self::build_error(&err))?;
                Ok(TransactWriteItem::builder().delete(delete).build())
            })
            .collect()
    }

    /// Runs `actions` as one transaction; a failed condition is a [`StoreError::Conflict`] with
    /// `conflict()`'s message.
    async fn transact(
        &self,
        actions: Vec<TransactWriteItem>,
        conflict: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        if actions.len() > MAX_TRANSACTION_ACTIONS {
            return Err(StoreError::Invalid(format!(
                "this change would need more than {MAX_TRANSACTION_ACTIONS} writes in one transaction"
            )));
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Err(StoreError::Conflict(conflict())),
            Err(err) => Err(unavailable("TransactWriteItems", &err)),
        }
    }

    fn build_error(err: &aws_sdk_dynamodb::error::BuildError) -> StoreError {
        StoreError::Unavailable(format!("cannot build request: {err}"))
    }

    /// `BatchGetItem` of up to [`MAX_BATCH_GET_KEYS`] keys with `ConsistentRead`, following
    /// `UnprocessedKeys` (throttled parts) a bounded number of times.
    async fn batch_get_consistent(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        let mut pending = keys;
        for attempt in 0..MAX_BATCH_GET_ATTEMPTS {
            if pending.is_empty() {
                return Ok(items);
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|err| Self::build_error(&err))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|err| unavailable("BatchGetItem", &err))?;
            items.extend(
                output
                    .responses
                    .and_then(|mut tables| tables.remove(&self.table))
                    .unwrap_or_default(),
            );
            pending = output
                .unprocessed_keys
                .and_then(|mut tables| tables.remove(&self.table))
                .map(|left| left.keys)
                .unwrap_or_default();
        }
        if pending.is_empty() {
            Ok(items)
        } else {
            Err(StoreError::Unavailable(format!(
                "BatchGetItem: {} keys still unprocessed",
                pending.len()
            )))
        }
    }
}

/// The condition of an API write based on version `expected` of a definition: it still exists
/// and is still at that version (an item written without a version, or with one that is not a
/// number, is at version 0: a corrupt version must not make a role impossible to repair).
fn version_condition(expected: u64) -> (String, HashMap<String, String>, Item) {
    let mut values = HashMap::from([(":expected".to_owned(), AttributeValue::N(expected.to_string()))]);
    let condition = if expected == 0 {
        values.insert(":number".to_owned(), string("N"));
        "attribute_exists(PK) AND (attribute_not_exists(#version) OR #version = :expected OR NOT attribute_type(#version, :number))"
    } else {
        "attribute_exists(PK) AND #version = :expected"
    };
    (
        condition.to_owned(),
        HashMap::from([("#version".to_owned(), "version".to_owned())]),
        values,
    )
}

fn changed_meanwhile(role_id: &str) -> String {
    format!("role {role_id} changed meanwhile")
}

/// Whether a failed transaction was cancelled by a condition (rather than by an outage).
fn condition_failed<E: ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("TransactionCanceledException")
        && err
            .message()
            .is_some_and(|message| message.contains("ConditionalCheckFailed"))
}

#[async_trait]
impl RoleStore for DynamoRoles {
    async fn list_roles(&self, recently_changed: &[String]) -> Result<Vec<StoredRole>, StoreError> {
        // Ids from the sparse definitions index (keys only; eventually consistent), plus the
        // roles changed moments ago that the index may not show yet; then the definitions
        // themselves, consistently. O(number of roles) whatever else the table holds.
        let mut ids: BTreeSet<String> = recently_changed.iter().cloned().collect();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .index_name(ROLE_DEFINITION_INDEX)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| unavailable("Scan", &err))?;
            for item in output.items.unwrap_or_default() {
                if let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
                    (item.get(PARTITION_KEY), item.get(SORT_KEY))
                    && sk == DEFINITION_SK
                    && let PartitionKey::Role(id) = parse_pk(pk)
                {
                    ids.insert(id.to_owned());
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let mut roles = Vec::with_capacity(ids.len());
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(MAX_BATCH_GET_KEYS) {
            for item in self
                .batch_get_consistent(chunk.iter().map(|id| key(role_pk(id), DEFINITION_SK)).collect())
                .await?
            {
                let pk = match item.get(PARTITION_KEY) {
                    Some(AttributeValue::S(pk)) => pk.clone(),
                    _ => String::new(),
                };
                let PartitionKey::Role(id) = parse_pk(&pk) else {
                    continue;
                };
                let id = id.to_owned();
                roles.push(StoredRole::read(&id, item_json(&pk, item)?));
            }
        }
        roles.sort_by(|a: &StoredRole, b| a.role.role_id.cmp(&b.role.role_id));
        Ok(roles)
    }

    async fn get_role(&self, role_id: &str) -> Result<Option<StoredRole>, StoreError> {
        Ok(
            get_consistent(&self.client, &self.table, &role_pk(role_id), DEFINITION_SK)
                .await?
                .map(|item| StoredRole::read(role_id, item)),
        )
    }

    async fn create_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        let definition = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::definition_item(role)?))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(|err| Self::build_error(&err))?;
        let mut actions = vec![TransactWriteItem::builder().put(definition).build()];
        actions.extend(self.mapping_puts(&role.role_id, &role.jwt_role_mappings)?);
        self.transact(actions, || format!("role {} already exists", role.role_id))
            .await
    }

    async fn update_role(
        &self,
        before: &RoleDefinition,
        after: &RoleDefinition,
        named: &[&str],
    ) -> Result<(), StoreError> {
        // `SET` of the named attributes (plus `updatedAt`, `version`), never a rewrite of the
        // item: an operator's change to any other attribute survives this write.
        let pk = role_pk(&before.role_id);
        let mut stored = serde_dynamo::to_item::<_, Item>(after).map_err(|err| corrupt(&pk, &err))?;
        let mut assignments = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        for (index, attribute) in named.iter().chain(&["updatedAt", "version"]).enumerate() {
            let value = stored
                .remove(*attribute)
                .ok_or_else(|| StoreError::Invalid(format!("{attribute} cannot be empty")))?;
            assignments.push(format!("#a{index} = :a{index}"));
            names.insert(format!("#a{index}"), (*attribute).to_owned());
            values.insert(format!(":a{index}"), value);
        }
        let (condition, condition_names, condition_values) = version_condition(before.version);
        names.extend(condition_names);
        values.extend(condition_values);
        let definition = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, DEFINITION_SK)))
            .update_expression(format!("SET {}", assignments.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|err| Self::build_error(&err))?;
        let mut actions = vec![TransactWriteItem::builder().update(definition).build()];
        if named.contains(&"jwtRoleMappings") {
            actions.extend(self.mapping_puts(&after.role_id, &after.jwt_role_mappings)?);
            let stale = before
                .jwt_role_mappings
                .iter()
                .filter(|jwt_role| !after.jwt_role_mappings.contains(jwt_role));
            actions.extend(self.mapping_deletes(&after.role_id, stale.map(|jwt_role| jwt_mapping_sk(jwt_role)))?);
        }
        self.transact(actions, || changed_meanwhile(&before.role_id)).await
    }

    async fn delete_role(&self, before: &RoleDefinition) -> Result<(), StoreError> {
        // The mapping items to delete are those of the definition as read plus any found under
        // its key; the definition's version condition makes the whole transaction fail if an
        // API write changed the role (and so possibly its mappings) since it was read.
        let pk = role_pk(&before.role_id);
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", string(pk.clone()))
            .projection_expression("PK, SK")
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| unavailable("Query", &err))?;
        let mut mapping_sks: BTreeSet<String> = before
            .jwt_role_mappings
            .iter()
            .map(|jwt_role| jwt_mapping_sk(jwt_role))
            .collect();
        mapping_sks.extend(output.items.unwrap_or_default().into_iter().filter_map(|mut item| {
            match item.remove(SORT_KEY) {
                Some(AttributeValue::S(sk)) if sk != DEFINITION_SK => Some(sk),
                _ => None,
            }
        }));
        let (condition, names, values) = version_condition(before.version);
        let definition = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, DEFINITION_SK)))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|err| Self::build_error(&err))?;
        let mut actions = vec![TransactWriteItem::builder().delete(definition).build()];
        actions.extend(self.mapping_deletes(&before.role_id, mapping_sks.into_iter())?);
        self.transact(actions, || changed_meanwhile(&before.role_id)).await
    }
}
