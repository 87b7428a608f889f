//! The stores: where profiles and roles are read and written, behind two narrow traits.
//!
//! - [`dynamo`]: the real ones, on DynamoDB. Reads that may fill a cache use `GetItem` or
//!   `BatchGetItem` with `ConsistentRead`; an index is used only to list role ids.
//! - [`memory`]: in-memory ones with the same semantics, for router tests and benchmarks.
//!
//! Caching is not here but in [`crate::directory`], which wraps these traits.

use async_trait::async_trait;

use crate::model::{Profile, RoleDefinition, StoredRole, UserStatus, claim_is_current};

pub mod dynamo;
pub mod memory;

pub use dynamo::{DynamoProfiles, DynamoRoles};
pub use memory::MemoryStore;

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the call (throttling, network, missing table).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An item exists but does not fit the data model (written by hand or by a script).
    #[error("the stored item {key} does not fit the data model: {detail}")]
    Corrupt {
        /// The item's `PK`.
        key: String,
        /// What did not fit.
        detail: String,
    },
    /// A conditional write failed: the item exists already, or changed since it was read.
    #[error("{0}")]
    Conflict(String),
    /// The item to change does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The requested change does not fit the data model (checked against the stored item, so
    /// it is found here rather than at the edge).
    #[error("{0}")]
    Invalid(String),
}

impl From<staleless_consumer::FillAborted> for StoreError {
    fn from(aborted: staleless_consumer::FillAborted) -> Self {
        Self::Unavailable(aborted.to_string())
    }
}

/// What `POST /users/me/sync` writes: the token's claims and optional body fields.
///
/// Only these attributes are set, so a concurrent change of `status` by an administrator is
/// never overwritten by a user's sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSync {
    /// The token's `sub`.
    pub user_id: String,
    /// Lower-cased e-mail from the token, if it has one (Cognito access tokens do not).
    pub email: Option<String>,
    /// Name from the body, else from the token.
    pub name: Option<String>,
    /// The token's IdP roles; `None` when it has no roles claim (the stored roles stay). They
    /// are stored only when no token issued later set the stored ones ([`claim_is_current`]).
    pub roles: Option<Vec<String>>,
    /// The token's `iat`, stored with `roles` as `rolesIssuedAt`.
    pub roles_issued_at: Option<i64>,
    /// Avatar URL from the body.
    pub picture: Option<String>,
    /// The sync time, ISO-8601: the stored `lastLoginAt`, and `createdAt` of a new profile.
    pub now: String,
}

/// The profile after a sync, given the stored one (pure; the DynamoDB store does the same with
/// an update expression).
#[must_use]
pub fn apply_sync(existing: Option<Profile>, sync: &ProfileSync) -> Profile {
    let mut profile = existing.unwrap_or_else(|| Profile {
        user_id: sync.user_id.clone(),
        email: String::new(),
        name: String::new(),
        roles: Vec::new(),
        picture: None,
        status: UserStatus::Active,
        created_at: sync.now.clone(),
        roles_issued_at: None,
    });
    sync.user_id.clone_into(&mut profile.user_id);
    if let Some(email) = &sync.email {
        email.clone_into(&mut profile.email);
    }
    if let Some(name) = &sync.name {
        name.clone_into(&mut profile.name);
    }
    if let Some(roles) = &sync.roles
        && claim_is_current(&profile, sync.roles_issued_at)
    {
        profile.roles.clone_from(roles);
        profile.roles_issued_at = sync.roles_issued_at;
    }
    if sync.picture.is_some() {
        profile.picture.clone_from(&sync.picture);
    }
    profile
}

/// Profiles by user id.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// The profile, read strongly consistently; `None` when the user has none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError>;

    /// Creates or updates the profile from a sync and returns it as stored.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn sync_profile(&self, sync: &ProfileSync) -> Result<Profile, StoreError>;

    /// Sets the stored `roles` of an existing profile to `roles` (the roles claim of a token
    /// issued at `issued_at`, stored with them as `rolesIssuedAt`), only if they differ and no
    /// token issued later set them ([`claim_is_current`]): `true` when it wrote, `false` when the
    /// profile already said so, a later token's roles stand, or it does not exist. Nothing else
    /// of the profile is touched.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn align_roles(&self, user_id: &str, roles: &[String], issued_at: Option<i64>) -> Result<bool, StoreError>;
}

/// AppRole definitions.
#[async_trait]
pub trait RoleStore: Send + Sync {
    /// Every role definition (`ROLE#…` / `DEFINITION`), read strongly consistently, in
    /// O(number of roles). `recently_changed` names roles changed moments ago: they are read
    /// even if the listing (an index, eventually consistent) does not show them yet. A corrupt
    /// definition is returned with its faults, never an error for the whole listing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn list_roles(&self, recently_changed: &[String]) -> Result<Vec<StoredRole>, StoreError>;

    /// One role definition, read strongly consistently, with its faults if it is corrupt.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn get_role(&self, role_id: &str) -> Result<Option<StoredRole>, StoreError>;

    /// Creates `role` (at version 1) with its mapping items; it must not exist.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when it exists; [`StoreError::Unavailable`].
    async fn create_role(&self, role: &RoleDefinition) -> Result<(), StoreError>;

    /// Sets the `named` attributes (plus `updatedAt` and `version`) of the role to those of
    /// `after`, and its mapping items if `jwtRoleMappings` is named, in one transaction that
    /// applies only while the stored role is still at `before.version`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the role changed or is gone; [`StoreError::Unavailable`].
    async fn update_role(
        &self,
        before: &RoleDefinition,
        after: &RoleDefinition,
        named: &[&str],
    ) -> Result<(), StoreError>;

    /// Deletes the role's definition and mapping items in one transaction that applies only
    /// while the stored role is still at `before.version`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the role changed or is gone; [`StoreError::Unavailable`].
    async fn delete_role(&self, before: &RoleDefinition) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(name: Option<&str>) -> ProfileSync {
        ProfileSync {
            user_id: "u-1".into(),
            email: Some("ada@example.com".into()),
            name: name.map(str::to_owned),
            roles: Some(vec!["Staff".into()]),
            roles_issued_at: Some(1_700_000_000),
            picture: None,
            now: "2026-01-02T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_first_sync_creates_an_active_profile() {
        let profile = apply_sync(None, &sync(Some("Ada")));
        assert_eq!(profile.status, UserStatus::Active);
        assert_eq!(profile.created_at, "2026-01-02T00:00:00.000Z");
    }

    #[test]
    fn a_later_sync_keeps_status_creation_time_and_absent_fields() {
        let mut existing = apply_sync(None, &sync(Some("Ada")));
        existing.status = UserStatus::Suspended;
        existing.created_at = "2020-01-01T00:00:00.000Z".into();
        existing.picture = Some("https://example.com/a.png".into());
        let mut later = sync(None);
        later.roles = Some(vec!["Admin".into()]);
        let profile = apply_sync(Some(existing), &later);
        assert_eq!(profile.status, UserStatus::Suspended);
        assert_eq!(profile.created_at, "2020-01-01T00:00:00.000Z");
        assert_eq!(profile.name, "Ada");
        assert_eq!(profile.roles, ["Admin"]);
        assert!(profile.picture.is_some());
    }

    #[test]
    fn a_sync_without_a_roles_claim_keeps_the_stored_roles() {
        let existing = apply_sync(None, &sync(Some("Ada")));
        let mut without_claim = sync(None);
        without_claim.roles = None;
        assert_eq!(apply_sync(Some(existing), &without_claim).roles, ["Staff"]);
        assert!(apply_sync(None, &without_claim).roles.is_empty());
    }
}
