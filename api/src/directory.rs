//! The store layer the routes use: profiles and roles, cached or not as the mode says, with
//! read-your-writes done once, here.
//!
//! Route handlers call [`Directory`] and nothing else for data; they never touch a cache or an
//! invalidation. A write through the API evicts what it changed on this task as soon as the
//! store has accepted it (the stream will evict it on every other task); the invalidation
//! subscriber evicts from the caches it registers ([`Directory::profile_cache`],
//! [`Directory::catalogue_cache`]) for changes made anywhere.
//!
//! Modes: `event` serves each cache while its source's ticks are within the bound and reads
//! through otherwise (concurrent reads of one key sharing one store read); `ttl` always serves
//! from cache (freshness = TTL); `off` always reads through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staleless_consumer::{CacheStats, ChannelHealth, Evict, ReadPath, SourceSpec, TrustedCache, VerificationStats};
use staleless_protocol::{KeyVersion, Source};

use crate::config::CacheMode;
use crate::metrics as names;
use crate::model::{NewRole, Profile, RoleDefinition, RolePatch, StoredRole};
use crate::permissions::{self, Access};
use crate::store::{ProfileStore, ProfileSync, RoleStore, StoreError};

/// Most distinct IdP-role combinations whose resolution is memoized per catalogue snapshot.
const MAX_MEMOIZED_ROLE_SETS: u64 = 10_000;
/// How long a changed role is read by id on top of the catalogue listing: far longer than the
/// definitions index takes to show a new role (typically well under a second).
const RECENT_ROLE_CHANGE_WINDOW: Duration = Duration::from_secs(60);

/// Reads and conditional writes of one role change before a lost race is reported as 409.
const MAX_ROLE_WRITE_ATTEMPTS: usize = 3;

/// What an admin does to a role.
#[derive(Debug, Clone, Copy)]
enum RoleEdit<'a> {
    /// `PATCH`: set the fields it names.
    Patch(&'a RolePatch),
    /// `DELETE`.
    Delete,
}

/// Who changes a role, and on what terms.
#[derive(Debug, Clone, Copy)]
pub struct RoleChange<'a> {
    /// The time of the change, ISO-8601.
    pub now: &'a str,
    /// The version the client based its change on (`If-Match`), if it named one.
    pub expected_version: Option<u64>,
    /// The IdP roles of the admin making the change: they must keep `system_admin`.
    pub caller_roles: &'a [String],
}

/// 409 when the change would make the `system_admin` role unreachable.
fn refuse_lockout(role_id: &str, after: Option<&RoleDefinition>, change: &RoleChange<'_>) -> Result<(), StoreError> {
    permissions::admin_lockout(role_id, after, change.caller_roles).map_or(Ok(()), |why| Err(StoreError::Conflict(why)))
}

/// Roles changed (by an invalidation or a write here) within [`RECENT_ROLE_CHANGE_WINDOW`].
#[derive(Debug, Default)]
struct RecentRoleChanges {
    /// Role id → when the change was seen.
    seen: Mutex<HashMap<String, Instant>>,
}

impl RecentRoleChanges {
    fn record<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            seen.insert(id.to_owned(), now);
        }
    }

    fn current(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| at.elapsed() <= RECENT_ROLE_CHANGE_WINDOW);
        seen.keys().cloned().collect()
    }
}

/// Items read from a table that did not fit the data model, each logged and counted once per
/// change: a corrupt item read on every request must not flood the logs, and one repaired and
/// broken again must be reported again.
#[derive(Debug, Default)]
pub struct CorruptItems {
    /// Item key → what was wrong with it when last reported.
    reported: Mutex<HashMap<String, String>>,
}

impl CorruptItems {
    fn reported(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The item `key` of `table` was read and found corrupt: logs and counts it unless this very
    /// fault was reported already.
    pub fn report(&self, table: Source, key: &str, fault: &str) {
        let mut reported = self.reported();
        if reported.get(key).is_some_and(|known| known == fault) {
            return;
        }
        reported.insert(key.to_owned(), fault.to_owned());
        metrics::counter!(names::CORRUPT_ITEMS, "table" => table.to_string()).increment(1);
        tracing::warn!(table = %table, key, fault, "a stored item does not fit the data model; it is contained to itself (roles: grants nothing; profiles: that user's requests fail) until it is repaired");
    }

    /// The item `key` was read and fits the data model (again).
    pub fn sound(&self, key: &str) {
        let mut reported = self.reported();
        if !reported.is_empty() {
            reported.remove(key);
        }
    }

    /// Reports the corrupt roles of a fresh catalogue and forgets the roles no longer corrupt.
    fn catalogue_read(&self, corrupt: &[StoredRole]) {
        let keys: Vec<String> = corrupt
            .iter()
            .map(|stored| staleless_protocol::keys::role_pk(&stored.role.role_id))
            .collect();
        self.reported()
            .retain(|key, _| !key.starts_with(staleless_protocol::keys::ROLE_PK_PREFIX) || keys.contains(key));
        for (key, stored) in keys.iter().zip(corrupt) {
            let faults: Vec<String> = stored.faults.iter().map(ToString::to_string).collect();
            self.report(Source::ROLES, key, &faults.join("; "));
        }
    }
}

/// One snapshot of the role catalogue, with permission resolutions memoized for its lifetime:
/// when the catalogue is invalidated the memo goes with it, so it needs no invalidation of its
/// own.
pub struct Catalogue {
    /// Every sound role definition, by role id: the only ones permission resolution sees.
    roles: Vec<RoleDefinition>,
    /// Definitions that do not fit the data model: they grant nothing (fail closed), and are
    /// listed for admins to repair or delete.
    corrupt: Vec<StoredRole>,
    /// Resolutions by the user's IdP roles, as listed on the profile.
    memo: moka::sync::Cache<Vec<String>, Arc<Access>>,
}

impl Catalogue {
    /// A snapshot of `stored`: the sound roles resolve, the corrupt ones are set apart.
    #[must_use]
    pub fn new(stored: Vec<StoredRole>) -> Self {
        let (corrupt, sound): (Vec<StoredRole>, Vec<StoredRole>) = stored.into_iter().partition(StoredRole::is_corrupt);
        let mut roles: Vec<RoleDefinition> = sound.into_iter().map(|stored| stored.role).collect();
        roles.sort_by(|a, b| a.role_id.cmp(&b.role_id));
        Self {
            roles,
            corrupt,
            memo: moka::sync::Cache::new(MAX_MEMOIZED_ROLE_SETS),
        }
    }

    /// The sound roles, sorted by id.
    #[must_use]
    pub fn roles(&self) -> &[RoleDefinition] {
        &self.roles
    }

    /// The corrupt roles, with their faults.
    #[must_use]
    pub fn corrupt(&self) -> &[StoredRole] {
        &self.corrupt
    }

    /// One sound role.
    #[must_use]
    pub fn role(&self, role_id: &str) -> Option<&RoleDefinition> {
        self.roles.iter().find(|role| role.role_id == role_id)
    }

    /// One corrupt role.
    #[must_use]
    pub fn corrupt_role(&self, role_id: &str) -> Option<&StoredRole> {
        self.corrupt.iter().find(|stored| stored.role.role_id == role_id)
    }

    /// What a user with these IdP roles may do (memoized).
    #[must_use]
    pub fn access(&self, idp_roles: &[String]) -> Arc<Access> {
        if let Some(access) = self.memo.get(idp_roles) {
            return access;
        }
        let access = Arc::new(permissions::resolve(idp_roles, &self.roles));
        self.memo.insert(idp_roles.to_vec(), Arc::clone(&access));
        access
    }
}

/// The directory's sources and the caches they vouch for, in the order of every report.
#[must_use]
pub fn sources() -> [SourceSpec; 2] {
    [
        SourceSpec::new(Source::USERS.as_str(), PROFILES),
        SourceSpec::new(Source::ROLES.as_str(), ROLES),
    ]
}

/// The profile cache's name in metrics and stats.
const PROFILES: &str = "profiles";
/// The role catalogue's name in metrics and stats.
const ROLES: &str = "roles";

/// Stats of the data caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryStats {
    /// Profiles by user id.
    pub profiles: CacheStats,
    /// The role catalogue (one entry).
    pub roles: CacheStats,
}

/// Profiles and roles, through the caches.
pub struct Directory {
    /// Where profiles live.
    profiles: Arc<dyn ProfileStore>,
    /// Where roles live.
    roles: Arc<dyn RoleStore>,
    /// What the caches do.
    mode: CacheMode,
    /// `None` (no profile item) is cached too: a missing user is as cacheable as a present one,
    /// since creating the item invalidates it like any other write.
    profile_cache: TrustedCache<String, Option<Arc<Profile>>, StoreError>,
    /// The whole catalogue under the unit key: resolution needs every role at once.
    catalogue_cache: TrustedCache<(), Arc<Catalogue>, StoreError>,
    /// Roles changed moments ago, read by id until the definitions index surely shows them.
    recent_role_changes: RecentRoleChanges,
    /// Corrupt items seen, reported once per change.
    corrupt_items: Arc<CorruptItems>,
}

impl Directory {
    /// A directory over these stores, re-reading one profile-cache hit in `verify_one_in` to
    /// compare it with DynamoDB (`0`: never). The role catalogue is not verified: it is listed through an index,
    /// which DynamoDB cannot read consistently, so a re-read would count index lag as staleness.
    #[must_use]
    pub fn new(
        profiles: Arc<dyn ProfileStore>,
        roles: Arc<dyn RoleStore>,
        mode: CacheMode,
        ttl: std::time::Duration,
        max_profiles: u64,
        channel: Arc<ChannelHealth>,
        verify_one_in: u64,
    ) -> Self {
        Self {
            profiles,
            roles,
            mode,
            profile_cache: TrustedCache::new(Arc::clone(&channel), Source::USERS.as_str(), mode, max_profiles, ttl)
                .verified(verify_one_in, |served, stored| served == stored),
            catalogue_cache: TrustedCache::new(channel, Source::ROLES.as_str(), mode, 1, ttl),
            recent_role_changes: RecentRoleChanges::default(),
            corrupt_items: Arc::default(),
        }
    }

    /// The cache mode.
    #[must_use]
    pub const fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The path reads of each cache take now (`cache` or `bypass`), by cache name.
    #[must_use]
    pub fn read_paths(&self) -> [(&'static str, ReadPath); 2] {
        [
            (PROFILES, self.profile_cache.read_path()),
            (ROLES, self.catalogue_cache.read_path()),
        ]
    }

    /// A user's profile; `None` when the user has none.
    ///
    /// # Errors
    /// The store's error when the profile had to be read.
    pub async fn profile(&self, user_id: &str) -> Result<Option<Arc<Profile>>, StoreError> {
        // Built only on a miss: the hit path allocates nothing.
        let read = || {
            let store = Arc::clone(&self.profiles);
            let corrupt_items = Arc::clone(&self.corrupt_items);
            let user_id = user_id.to_owned();
            async move {
                match store.get_profile(&user_id).await {
                    Ok(profile) => {
                        corrupt_items.sound(&staleless_protocol::keys::user_pk(&user_id));
                        Ok(profile.map(Arc::new))
                    }
                    Err(StoreError::Corrupt { key, detail }) => {
                        corrupt_items.report(Source::USERS, &key, &detail);
                        Err(StoreError::Corrupt { key, detail })
                    }
                    Err(err) => Err(err),
                }
            }
        };
        self.profile_cache.get(user_id, read).await
    }

    /// The role catalogue.
    ///
    /// # Errors
    /// The store's error when the catalogue had to be read.
    pub async fn catalogue(&self) -> Result<Arc<Catalogue>, StoreError> {
        let read = || {
            let store = Arc::clone(&self.roles);
            let corrupt_items = Arc::clone(&self.corrupt_items);
            let recently_changed = self.recent_role_changes.current();
            async move {
                let catalogue = Catalogue::new(store.list_roles(&recently_changed).await?);
                corrupt_items.catalogue_read(catalogue.corrupt());
                Ok(Arc::new(catalogue))
            }
        };
        self.catalogue_cache.get(&(), read).await
    }

    /// What `profile` may do.
    ///
    /// # Errors
    /// The store's error when the catalogue had to be read.
    pub async fn access(&self, profile: &Profile) -> Result<Arc<Access>, StoreError> {
        Ok(self.catalogue().await?.access(&profile.roles))
    }

    /// Creates or updates a profile from a sync; this task reads its own write afterwards.
    ///
    /// # Errors
    /// The store's error.
    pub async fn sync_profile(&self, sync: &ProfileSync) -> Result<Arc<Profile>, StoreError> {
        let stored = self.profiles.sync_profile(sync).await;
        // Evict even on error: the write may have been applied before the response was lost.
        self.profile_cache.invalidate(sync.user_id.as_str());
        Ok(Arc::new(stored?))
    }

    /// Validates and creates a role from an admin's body.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for input outside the data model, [`StoreError::Conflict`] if it
    /// exists; the store's error.
    pub async fn create_role(&self, new: NewRole, now: &str) -> Result<RoleDefinition, StoreError> {
        let role = new.validate(now).map_err(StoreError::Invalid)?;
        let result = self.roles.create_role(&role).await;
        self.role_changed(&role.role_id);
        result.map(|()| role)
    }

    /// Applies `patch` to the stored role: only the fields it names, in a write conditional on
    /// the version read. `change.expected_version` (the client's `If-Match`) pins that version;
    /// without it a write that lost a race is re-read and re-applied, since a patch names
    /// absolute values and means the same on top of the newer version.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Invalid`] when the result is outside the data
    /// model, [`StoreError::Conflict`] when the role is not at the expected version, keeps
    /// changing, or the change would lock administrators out; the store's error.
    pub async fn update_role(
        &self,
        role_id: &str,
        patch: &RolePatch,
        change: &RoleChange<'_>,
    ) -> Result<RoleDefinition, StoreError> {
        self.write_role(role_id, RoleEdit::Patch(patch), change).await
    }

    /// Deletes a role that is not a system role, with its mapping items, conditional on the
    /// version read (retried like [`Self::update_role`] when no version is pinned).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] for a system role, a version
    /// mismatch or a role that keeps changing; the store's error.
    pub async fn delete_role(&self, role_id: &str, change: &RoleChange<'_>) -> Result<RoleDefinition, StoreError> {
        self.write_role(role_id, RoleEdit::Delete, change).await
    }

    /// Reads the role, checks the edit against it, and writes it conditional on the version
    /// read; retries lost races unless the client pinned a version.
    async fn write_role(
        &self,
        role_id: &str,
        edit: RoleEdit<'_>,
        change: &RoleChange<'_>,
    ) -> Result<RoleDefinition, StoreError> {
        for _ in 0..MAX_ROLE_WRITE_ATTEMPTS {
            let stored = self
                .roles
                .get_role(role_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("role {role_id} does not exist")))?;
            let current = &stored.role;
            if let Some(expected) = change.expected_version
                && expected != current.version
            {
                return Err(StoreError::Conflict(format!(
                    "role {role_id} is at version {}, not {expected}: GET it, re-apply your change and send If-Match: {}",
                    current.version, current.version
                )));
            }
            let written = match edit {
                RoleEdit::Patch(patch) => {
                    let unrepaired = stored.faults_left_by(patch);
                    if !unrepaired.is_empty() {
                        return Err(StoreError::Conflict(format!(
                            "role {role_id} is corrupt: a patch must set {} (see the faults of GET /admin/roles/{role_id}), or DELETE it",
                            unrepaired.join(", ")
                        )));
                    }
                    let updated = patch.clone().apply(current, change.now).map_err(StoreError::Invalid)?;
                    refuse_lockout(role_id, Some(&updated), change)?;
                    let mut named = patch.named_attributes();
                    if stored.faults.iter().any(|fault| fault.attribute == "roleId") {
                        // The id is taken from the key; a repair writes it back.
                        named.push("roleId");
                    }
                    self.roles
                        .update_role(current, &updated, &named)
                        .await
                        .map(|()| updated)
                }
                RoleEdit::Delete => {
                    refuse_lockout(role_id, None, change)?;
                    if current.is_system_role {
                        return Err(StoreError::Conflict(format!(
                            "role {role_id} is a system role and cannot be deleted; PATCH isSystemRole to false first"
                        )));
                    }
                    self.roles.delete_role(current).await.map(|()| current.clone())
                }
            };
            self.role_changed(role_id);
            match written {
                Err(StoreError::Conflict(_)) if change.expected_version.is_none() => {
                    metrics::counter!(names::ROLE_WRITE_RETRIES).increment(1);
                }
                Err(StoreError::Conflict(_)) => {
                    return Err(StoreError::Conflict(format!(
                        "role {role_id} changed meanwhile: GET it, re-apply your change and send If-Match with its version"
                    )));
                }
                written => return written,
            }
        }
        Err(StoreError::Conflict(format!(
            "role {role_id} kept changing while this change was applied; retry"
        )))
    }

    /// Brings the stored roles of `profile` in line with the roles claim of the caller's token
    /// (the IdP's word) and returns the profile as the caller is authorized: with those roles,
    /// whether or not the write succeeded. The write is conditional (only when different), so
    /// tasks that see the same new token at once write it once; every task learns it through
    /// the stream, and this one at once.
    pub async fn align_roles(
        &self,
        profile: &Arc<Profile>,
        token_roles: &[String],
        issued_at: Option<i64>,
    ) -> Arc<Profile> {
        let outcome = match self
            .profiles
            .align_roles(&profile.user_id, token_roles, issued_at)
            .await
        {
            Ok(true) => "written",
            Ok(false) => "already_current",
            Err(err) => {
                tracing::warn!(user_id = %profile.user_id, error = %err, "could not store the roles of the caller's token; authorizing with them anyway");
                "failed"
            }
        };
        metrics::counter!(names::PROFILE_ROLES_ALIGNED, "outcome" => outcome).increment(1);
        self.profile_cache.invalidate(profile.user_id.as_str());
        let mut aligned = Profile::clone(profile);
        token_roles.clone_into(&mut aligned.roles);
        aligned.roles_issued_at = issued_at;
        Arc::new(aligned)
    }

    /// A role was written here: drop the catalogue, and read that role by id for a while.
    fn role_changed(&self, role_id: &str) {
        self.recent_role_changes.record([role_id]);
        self.catalogue_cache.invalidate(&());
    }

    /// The profile cache, for the subscriber: keyed by the user ids messages carry.
    #[must_use]
    pub fn profile_cache(&self) -> Arc<dyn Evict> {
        Arc::new(self.profile_cache.clone())
    }

    /// The role catalogue, for the subscriber: any role change can change anyone's resolution,
    /// so the catalogue goes whole, and the changed roles are read by id for a while.
    #[must_use]
    pub fn catalogue_cache(self: &Arc<Self>) -> Arc<dyn Evict> {
        Arc::new(CatalogueEviction(Arc::clone(self)))
    }

    /// Cache counts.
    #[must_use]
    pub fn stats(&self) -> DirectoryStats {
        DirectoryStats {
            profiles: self.profile_cache.stats(),
            roles: self.catalogue_cache.stats(),
        }
    }

    /// The sampled verification of the profile cache's hits; `None` when it is off.
    #[must_use]
    pub fn profile_verification(&self) -> Option<VerificationStats> {
        self.profile_cache.verification_stats()
    }
}

/// The catalogue as the subscriber sees it (see [`Directory::catalogue_cache`]).
struct CatalogueEviction(Arc<Directory>);

impl Evict for CatalogueEviction {
    fn evict(&self, keys: &[KeyVersion]) -> usize {
        if !keys.is_empty() {
            self.0
                .recent_role_changes
                .record(keys.iter().map(|key| key.id.as_str()));
            self.0.catalogue_cache.invalidate(&());
        }
        keys.len()
    }

    fn flush(&self) {
        self.0.catalogue_cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use staleless_protocol::{Invalidation, KeyVersion};

    use super::*;
    use crate::model::UserStatus;
    use crate::store::MemoryStore;

    fn profile(user_id: &str, name: &str) -> Profile {
        Profile {
            user_id: user_id.to_owned(),
            email: format!("{user_id}@example.com"),
            name: name.to_owned(),
            roles: vec!["Staff".to_owned()],
            picture: None,
            status: UserStatus::Active,
            created_at: "2026-01-01T00:00:00.000Z".to_owned(),
            roles_issued_at: None,
        }
    }

    fn untrusted_channel() -> Arc<ChannelHealth> {
        Arc::new(ChannelHealth::new(
            staleless_consumer::TrustRules::with_bound(Duration::from_secs(60)),
            &sources(),
            staleless_consumer::MetricNames::default(),
        ))
    }

    fn directory(store: &Arc<MemoryStore>, mode: CacheMode) -> Directory {
        let channel = untrusted_channel();
        channel.mark_subscribed("q");
        channel.record_ticks_now();
        Directory::new(
            store.clone(),
            store.clone(),
            mode,
            Duration::from_secs(3_600),
            100,
            channel,
            0,
        )
    }

    fn change(expected_version: Option<u64>) -> RoleChange<'static> {
        RoleChange {
            now: "2026-01-02T00:00:00.000Z",
            expected_version,
            caller_roles: &[],
        }
    }

    fn users_message(id: &str) -> Invalidation {
        Invalidation::Invalidate {
            source: Source::USERS,
            keys: vec![KeyVersion {
                id: id.to_owned(),
                seq: "1".into(),
                at_ms: 0,
            }],
        }
    }

    #[tokio::test]
    async fn a_write_through_the_api_is_read_back_at_once_on_this_task() {
        let store = Arc::new(MemoryStore::new());
        store.put_profile_directly(profile("u-1", "Ada"));
        let directory = directory(&store, CacheMode::Event);
        assert_eq!(directory.profile("u-1").await.expect("read").expect("some").name, "Ada");

        let sync = ProfileSync {
            user_id: "u-1".into(),
            email: None,
            name: Some("Ada Lovelace".into()),
            roles: Some(vec!["Staff".into()]),
            roles_issued_at: Some(1_700_000_000),
            picture: None,
            now: "2026-01-02T00:00:00.000Z".into(),
        };
        directory.sync_profile(&sync).await.expect("sync");
        // No invalidation message has arrived; the next read must still see the write.
        assert_eq!(
            directory.profile("u-1").await.expect("read").expect("some").name,
            "Ada Lovelace"
        );
    }

    #[tokio::test]
    async fn an_out_of_band_write_is_seen_after_its_invalidation_and_not_before() {
        let store = Arc::new(MemoryStore::new());
        store.put_profile_directly(profile("u-1", "Ada"));
        let directory = directory(&store, CacheMode::Event);
        directory.profile("u-1").await.expect("read");
        store.put_profile_directly(profile("u-1", "Grace"));
        assert_eq!(
            directory.profile("u-1").await.expect("read").expect("some").name,
            "Ada",
            "served from cache"
        );
        let caches = staleless_consumer::Caches::new().register("users", directory.profile_cache());
        assert_eq!(caches.apply(&users_message("u-1")), 1);
        assert_eq!(
            directory.profile("u-1").await.expect("read").expect("some").name,
            "Grace"
        );
        assert_eq!(store.profile_reads(), 2);
    }

    #[tokio::test]
    async fn an_untrusted_channel_reads_through_and_ttl_mode_ignores_it() {
        let store = Arc::new(MemoryStore::new());
        store.put_profile_directly(profile("u-1", "Ada"));
        for (mode, expected_reads) in [(CacheMode::Event, 3), (CacheMode::Ttl, 1), (CacheMode::Off, 3)] {
            let store = Arc::new(MemoryStore::new());
            store.put_profile_directly(profile("u-1", "Ada"));
            let channel = untrusted_channel();
            let directory = Directory::new(
                store.clone(),
                store.clone(),
                mode,
                Duration::from_secs(3_600),
                100,
                channel,
                0,
            );
            for _ in 0..3 {
                directory.profile("u-1").await.expect("read");
            }
            assert_eq!(store.profile_reads(), expected_reads, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn role_changes_drop_the_catalogue_and_its_memoized_resolutions() {
        let store = Arc::new(MemoryStore::new());
        let directory = directory(&store, CacheMode::Event);
        let new: NewRole = serde_json::from_str(
            r#"{"roleId":"staff","displayName":"Staff","jwtRoleMappings":["Staff"],"grantedTools":["search"]}"#,
        )
        .expect("json");
        directory
            .create_role(new, "2026-01-01T00:00:00.000Z")
            .await
            .expect("create");
        let user = profile("u-1", "Ada");
        assert_eq!(
            directory.access(&user).await.expect("access").permissions.tools,
            ["search"]
        );

        let patch: RolePatch = serde_json::from_str(r#"{"grantedTools":["search","wiki"]}"#).expect("json");
        directory
            .update_role("staff", &patch, &change(None))
            .await
            .expect("update");
        assert_eq!(
            directory.access(&user).await.expect("access").permissions.tools,
            ["search", "wiki"]
        );
    }
}
