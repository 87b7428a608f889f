//! In-memory stores with the semantics of the DynamoDB ones, for router tests and benchmarks.
//!
//! [`MemoryStore::put_profile_directly`] and [`MemoryStore::put_role_directly`] change data
//! behind the API's back, as an operator's script does, and the read counters show whether a
//! request was answered from a cache or went to the store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{ProfileStore, ProfileSync, RoleStore, StoreError, apply_sync};
use crate::model::{Profile, RoleDefinition, StoredRole, claim_is_current};

/// Profiles and roles in two maps.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Profiles by user id.
    profiles: Mutex<BTreeMap<String, Profile>>,
    /// Role definitions by role id.
    roles: Mutex<BTreeMap<String, RoleDefinition>>,
    /// `get_profile` calls, to tell cache hits from store reads.
    profile_reads: AtomicU64,
    /// `list_roles` calls.
    role_scans: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a profile without going through the API (no local invalidation).
    pub fn put_profile_directly(&self, profile: Profile) {
        lock(&self.profiles).insert(profile.user_id.clone(), profile);
    }

    /// A profile as stored, read without going through the API (not counted as a read).
    #[must_use]
    pub fn profile_directly(&self, user_id: &str) -> Option<Profile> {
        lock(&self.profiles).get(user_id).cloned()
    }

    /// A role as stored, read without going through the API.
    #[must_use]
    pub fn role_directly(&self, role_id: &str) -> Option<RoleDefinition> {
        lock(&self.roles).get(role_id).cloned()
    }

    /// Writes a role without going through the API (no local invalidation).
    pub fn put_role_directly(&self, role: RoleDefinition) {
        lock(&self.roles).insert(role.role_id.clone(), role);
    }

    /// How many times a profile was read from this store.
    #[must_use]
    pub fn profile_reads(&self) -> u64 {
        self.profile_reads.load(Ordering::Relaxed)
    }

    /// How many times the role catalogue was read from this store.
    #[must_use]
    pub fn role_scans(&self) -> u64 {
        self.role_scans.load(Ordering::Relaxed)
    }
}

/// The stored role if it is still at `before`'s version (the DynamoDB store's condition).
fn still_at<'a>(
    roles: &'a mut BTreeMap<String, RoleDefinition>,
    before: &RoleDefinition,
) -> Result<&'a mut RoleDefinition, StoreError> {
    match roles.get_mut(&before.role_id) {
        Some(stored) if stored.version == before.version => Ok(stored),
        _ => Err(StoreError::Conflict(format!(
            "role {} changed meanwhile",
            before.role_id
        ))),
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
        self.profile_reads.fetch_add(1, Ordering::Relaxed);
        Ok(lock(&self.profiles).get(user_id).cloned())
    }

    async fn sync_profile(&self, sync: &ProfileSync) -> Result<Profile, StoreError> {
        let mut profiles = lock(&self.profiles);
        let profile = apply_sync(profiles.get(&sync.user_id).cloned(), sync);
        profiles.insert(sync.user_id.clone(), profile.clone());
        Ok(profile)
    }

    async fn align_roles(&self, user_id: &str, roles: &[String], issued_at: Option<i64>) -> Result<bool, StoreError> {
        let mut profiles = lock(&self.profiles);
        match profiles.get_mut(user_id) {
            Some(profile) if profile.roles != roles && claim_is_current(profile, issued_at) => {
                roles.clone_into(&mut profile.roles);
                profile.roles_issued_at = issued_at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl RoleStore for MemoryStore {
    async fn list_roles(&self, _recently_changed: &[String]) -> Result<Vec<StoredRole>, StoreError> {
        self.role_scans.fetch_add(1, Ordering::Relaxed);
        Ok(lock(&self.roles).values().cloned().map(StoredRole::sound).collect())
    }

    async fn get_role(&self, role_id: &str) -> Result<Option<StoredRole>, StoreError> {
        Ok(lock(&self.roles).get(role_id).cloned().map(StoredRole::sound))
    }

    async fn create_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        let mut roles = lock(&self.roles);
        if roles.contains_key(&role.role_id) {
            return Err(StoreError::Conflict(format!("role {} already exists", role.role_id)));
        }
        roles.insert(role.role_id.clone(), role.clone());
        Ok(())
    }

    async fn update_role(
        &self,
        before: &RoleDefinition,
        after: &RoleDefinition,
        named: &[&str],
    ) -> Result<(), StoreError> {
        let mut roles = lock(&self.roles);
        let stored = still_at(&mut roles, before)?;
        // Field by field, as the DynamoDB store's `SET` does: what the patch does not name stays.
        let mut merged = serde_json::to_value(&*stored).map_err(|err| StoreError::Invalid(err.to_string()))?;
        let source = serde_json::to_value(after).map_err(|err| StoreError::Invalid(err.to_string()))?;
        for attribute in named.iter().chain(&["updatedAt", "version"]) {
            if let Some(value) = source.get(*attribute) {
                merged[*attribute] = value.clone();
            }
        }
        *stored = serde_json::from_value(merged).map_err(|err| StoreError::Invalid(err.to_string()))?;
        Ok(())
    }

    async fn delete_role(&self, before: &RoleDefinition) -> Result<(), StoreError> {
        let mut roles = lock(&self.roles);
        still_at(&mut roles, before)?;
        roles.remove(&before.role_id);
        Ok(())
    }
}
