//! The stores on DynamoDB (`aws-sdk-dynamodb` + `serde_dynamo`).
//!
//! Every read here may fill a cache, so every read of an item is strongly consistent and on the
//! base table: a GSI read is eventually consistent and could re-cache the old value right after
//! an invalidation (DESIGN.md §1). The one index read lists role ids (never role data), and the
//! roles changed moments ago are read even when that listing does not show them yet.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem};

use staleless_protocol::keys::{
    DEFINITION_SK, PARTITION_KEY, PROFILE_SK, PartitionKey, ROLE_DEFINITION_INDEX, SORT_KEY, jwt_mapping_sk,
    jwt_role_gsi_pk, parse_pk, role_pk, user_pk,
};

use super::{ProfileStore, ProfileSync, RoleStore, StoreError};
use crate::model::{Profile, RoleDefinition};

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

fn key(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), string(pk)),
        (SORT_KEY.to_owned(), string(sk)),
    ])
}

fn unavailable<E: std::error::Error + 'static>(operation: &str, err: &E) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {}", DisplayErrorContext(err)))
}

fn corrupt(pk: &str, err: &serde_dynamo::Error) -> StoreError {
    StoreError::Corrupt {
        key: pk.to_owned(),
        detail: err.to_string(),
    }
}

/// Reads one item from the base table with `ConsistentRead`: a cache fill must see every write
/// acknowledged before it, or it could re-cache the value an invalidation just evicted.
async fn get_consistent<T: serde::de::DeserializeOwned>(
    client: &Client,
    table: &str,
    pk: String,
    sk: &str,
) -> Result<Option<T>, StoreError> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk.clone(), sk)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| unavailable("GetItem", &err))?;
    output
        .item
        .map(|item| serde_dynamo::from_item(item).map_err(|err| corrupt(&pk, &err)))
        .transpose()
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

#[async_trait]
impl ProfileStore for DynamoProfiles {
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
        get_consistent(&self.client, &self.table, user_pk(user_id), PROFILE_SK).await
    }

    async fn sync_profile(&self, sync: &ProfileSync) -> Result<Profile, StoreError> {
        let pk = user_pk(&sync.user_id);
        // Only what a sync owns is set; `status` and `createdAt` are set only when absent, so a
        // concurrent administrator's change of status is never undone by a user's login.
        let mut assignments = vec![
            "userId = :userId",
            "#roles = :roles",
            "lastLoginAt = :now",
            "createdAt = if_not_exists(createdAt, :now)",
            "#status = if_not_exists(#status, :active)",
        ];
        let mut values = HashMap::from([
            (":userId".to_owned(), string(&sync.user_id)),
            (
                ":roles".to_owned(),
                AttributeValue::L(sync.roles.iter().map(string).collect()),
            ),
            (":now".to_owned(), string(&sync.now)),
            (":active".to_owned(), string("active")),
        ]);
        let mut names = HashMap::from([
            ("#roles".to_owned(), "roles".to_owned()),
            ("#status".to_owned(), "status".to_owned()),
        ]);
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
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|err| unavailable("UpdateItem", &err))?;
        let item = output.attributes.unwrap_or_default();
        serde_dynamo::from_item(item).map_err(|err| corrupt(&pk, &err))
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
        let pk = role_pk(&role.role_id);
        let mut item: Item = serde_dynamo::to_item(role).map_err(|err| corrupt(&pk, &err))?;
        item.extend(key(pk, DEFINITION_SK));
        Ok(item)
    }

    /// The mapping item of `jwt_role`: lets the production system find roles by IdP role
    /// through `GSI1` (this service resolves from the definitions it caches).
    fn mapping_item(role_id: &str, jwt_role: &str) -> Item {
        let mut item = key(role_pk(role_id), jwt_mapping_sk(jwt_role));
        item.insert("GSI1PK".to_owned(), string(jwt_role_gsi_pk(jwt_role)));
        item.insert("GSI1SK".to_owned(), string(role_pk(role_id)));
        item.insert("roleId".to_owned(), string(role_id));
        item.insert("jwtRole".to_owned(), string(jwt_role));
        item
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

/// Whether a failed transaction was cancelled by a condition (rather than by an outage).
fn condition_failed<E: ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("TransactionCanceledException")
        && err
            .message()
            .is_some_and(|message| message.contains("ConditionalCheckFailed"))
}

#[async_trait]
impl RoleStore for DynamoRoles {
    async fn list_roles(&self, recently_changed: &[String]) -> Result<Vec<RoleDefinition>, StoreError> {
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
                roles.push(serde_dynamo::from_item(item).map_err(|err| corrupt(&pk, &err))?);
            }
        }
        roles.sort_by(|a: &RoleDefinition, b| a.role_id.cmp(&b.role_id));
        Ok(roles)
    }

    async fn get_role(&self, role_id: &str) -> Result<Option<RoleDefinition>, StoreError> {
        get_consistent(&self.client, &self.table, role_pk(role_id), DEFINITION_SK).await
    }

    async fn put_role(&self, role: &RoleDefinition, previous: Option<&RoleDefinition>) -> Result<(), StoreError> {
        let mut definition = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::definition_item(role)?));
        definition = match previous {
            None => definition.condition_expression("attribute_not_exists(PK)"),
            Some(previous) => definition
                .condition_expression("updatedAt = :previous")
                .expression_attribute_values(":previous", string(&previous.updated_at)),
        };
        let mut actions = vec![
            TransactWriteItem::builder()
                .put(definition.build().map_err(|err| Self::build_error(&err))?)
                .build(),
        ];
        let wanted: BTreeSet<&String> = role.jwt_role_mappings.iter().collect();
        for jwt_role in &wanted {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(Self::mapping_item(&role.role_id, jwt_role)))
                .build()
                .map_err(|err| Self::build_error(&err))?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        let stale: BTreeSet<&String> = previous
            .map(|previous| {
                previous
                    .jwt_role_mappings
                    .iter()
                    .filter(|m| !wanted.contains(m))
                    .collect()
            })
            .unwrap_or_default();
        for jwt_role in stale {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(role_pk(&role.role_id), jwt_mapping_sk(jwt_role))))
                .build()
                .map_err(|err| Self::build_error(&err))?;
            actions.push(TransactWriteItem::builder().delete(delete).build());
        }
        if actions.len() > MAX_TRANSACTION_ACTIONS {
            return Err(StoreError::Conflict(format!(
                "role {} would need more than {MAX_TRANSACTION_ACTIONS} writes",
                role.role_id
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
            Err(err) if err.as_service_error().is_some_and(condition_failed) => {
                Err(StoreError::Conflict(match previous {
                    None => format!("role {} already exists", role.role_id),
                    Some(_) => format!("role {} changed meanwhile; retry", role.role_id),
                }))
            }
            Err(err) => Err(unavailable("TransactWriteItems", &err)),
        }
    }

    async fn delete_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        let pk = role_pk(&role.role_id);
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
        let mapping_keys: Vec<Item> = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter(|item| !matches!(item.get("SK"), Some(AttributeValue::S(sk)) if sk == DEFINITION_SK))
            .collect();
        let definition = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, DEFINITION_SK)))
            .condition_expression("attribute_exists(PK)")
            .build()
            .map_err(|err| Self::build_error(&err))?;
        let mut actions = vec![TransactWriteItem::builder().delete(definition).build()];
        for item_key in mapping_keys.into_iter().take(MAX_TRANSACTION_ACTIONS - 1) {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(item_key))
                .build()
                .map_err(|err| Self::build_error(&err))?;
            actions.push(TransactWriteItem::builder().delete(delete).build());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => {
                Err(StoreError::NotFound(format!("role {} does not exist", role.role_id)))
            }
            Err(err) => Err(unavailable("TransactWriteItems", &err)),
        }
    }
}
