//! The data model (`docs/design.md`, "Data model") as Rust types, the reading of stored items,
//! the validation of admin input, and the items written: the one place that says what a profile
//! and a role item hold, for the API and for the operator tools and the consistency check in
//! `infra` alike.
//!
//! Field names are the stored (camelCase) attribute names, so one `serde` derive serves the
//! DynamoDB item (through `serde_dynamo`) and the JSON the API returns. Validation is pure:
//! [`NewRole::validate`] and [`RolePatch::apply`] are tested without any store.
//!
//! Stored items are input like any other: anyone with write access to a table (the console, a
//! script) can put a string where a boolean belongs. [`read_item`] names the attribute at fault;
//! [`StoredRole::read`] reads what it can of a role definition and lists what it could not, so a
//! corrupt role is left out of permission resolution (its grants are not given) yet stays
//! visible and repairable through the admin API.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use staleless_protocol::keys::{
    DEFINITION_SK, PARTITION_KEY, PROFILE_SK, SORT_KEY, jwt_mapping_sk, jwt_role_gsi_pk, role_pk, user_pk,
};

/// A user's account state; anything but [`UserStatus::Active`] is refused on every authenticated
/// route except `GET /users/me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May use the API. Also assumed when the item has no `status` (items older than the field).
    #[default]
    Active,
    /// Deactivated by an administrator.
    Inactive,
    /// Blocked, e.g. pending an investigation.
    Suspended,
    // Any other value makes the profile corrupt (refused with an error naming `status`, and
    // counted): never guessed to be active.
}

impl UserStatus {
    /// Every status the data model allows.
    pub const ALL: [Self; 3] = [Self::Active, Self::Inactive, Self::Suspended];

    /// Whether the user may use routes other than `GET /users/me`.
    #[must_use]
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active)
    }

    /// The stored value (`active`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Suspended => "suspended",
        }
    }

    /// The status a stored value names; `None` for anything else.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == value)
    }
}

/// `attributes` with the item's key added: a whole item as stored (JSON, for `serde_dynamo`).
fn keyed(pk: String, sk: &str, attributes: &impl Serialize) -> Value {
    let mut item = serde_json::to_value(attributes).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut item {
        fields.insert(PARTITION_KEY.to_owned(), Value::String(pk));
        fields.insert(SORT_KEY.to_owned(), Value::String(sk.to_owned()));
    }
    item
}

/// A user's profile: the item `PK = USER#<userId>`, `SK = PROFILE`, as the API reads and
/// caches it (attributes not named here, such as `lastLoginAt`, are ignored on read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The IdP subject (`sub`).
    pub user_id: String,
    /// Lower-case e-mail address.
    #[serde(default)]
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Identity-provider role names, mapped to AppRoles by permission resolution.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// Account state.
    #[serde(default)]
    pub status: UserStatus,
    /// ISO-8601 creation time.
    #[serde(default)]
    pub created_at: String,
    /// `iat` (Unix seconds) of the token whose roles claim set `roles`; absent when an operator
    /// set them. A token issued before it cannot change them back: see [`claim_is_current`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_issued_at: Option<i64>,
    // `lastLoginAt` is written by every sync but deliberately not part of the model: a change to
    // it alone never invalidates (the relay ignores it), so a cached copy would be wrong by
    // design, and leaving it out keeps 100,000 cached profiles smaller.
}

impl Profile {
    /// The profile's item as stored: `PK = USER#<userId>`, `SK = PROFILE` and every attribute of
    /// the model (`lastLoginAt`, which only the API's sync writes, is not one).
    #[must_use]
    pub fn item(&self) -> Value {
        keyed(user_pk(&self.user_id), PROFILE_SK, self)
    }
}

/// Whether a token issued at `issued_at` (its `iat`; `None` counts as the oldest) may speak for
/// the roles of `profile`: unless a token issued later already set them. The IdP's newest word
/// decides, so a demotion cannot be undone by presenting a token from before it, which is still
/// valid until its `exp`.
#[must_use]
pub fn claim_is_current(profile: &Profile, issued_at: Option<i64>) -> bool {
    profile
        .roles_issued_at
        .is_none_or(|stored| issued_at.unwrap_or(i64::MIN) >= stored)
}

/// An AppRole: the item `PK = ROLE#<roleId>`, `SK = DEFINITION`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// `^[a-z][a-z0-9_]{2,49}$`.
    pub role_id: String,
    /// Human name.
    #[serde(default)]
    pub display_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// IdP role names that grant this role.
    #[serde(default)]
    pub jwt_role_mappings: Vec<String>,
    /// Tools granted; `"*"` means all.
    #[serde(default)]
    pub granted_tools: Vec<String>,
    /// Models granted; `"*"` means all.
    #[serde(default)]
    pub granted_models: Vec<String>,
    /// Skills granted; `"*"` means all.
    #[serde(default)]
    pub granted_skills: Vec<String>,
    /// 0–999; the highest-priority matched role decides the quota tier.
    #[serde(default)]
    pub priority: u16,
    /// A disabled role grants nothing and is never the fallback.
    #[serde(default)]
    pub enabled: bool,
    /// Seeded roles, which the API refuses to delete.
    #[serde(default)]
    pub is_system_role: bool,
    /// The quota tier this role confers; when absent, the role id is the tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_tier: Option<String>,
    /// ISO-8601 creation time.
    #[serde(default)]
    pub created_at: String,
    /// ISO-8601 time of the last change.
    #[serde(default)]
    pub updated_at: String,
    /// Bumped by every API write, in the same conditional write that checks it; `0` for an item
    /// written without one (seeded or edited by hand). An API write based on version `n` applies
    /// only while the stored item is still at `n`.
    #[serde(default)]
    pub version: u64,
}

impl RoleDefinition {
    /// The definition item as stored: `PK = ROLE#<roleId>`, `SK = DEFINITION` and every attribute.
    #[must_use]
    pub fn item(&self) -> Value {
        keyed(role_pk(&self.role_id), DEFINITION_SK, self)
    }

    /// The mapping items of its `jwtRoleMappings`, one per distinct IdP role.
    #[must_use]
    pub fn mapping_items(&self) -> Vec<Value> {
        let distinct: std::collections::BTreeSet<&String> = self.jwt_role_mappings.iter().collect();
        distinct
            .into_iter()
            .map(|jwt_role| mapping_item(&self.role_id, jwt_role))
            .collect()
    }
}

/// The mapping item of `jwt_role` for `role_id`: `SK = JWT_MAPPING#<jwt role>`, found by IdP role
/// through `GSI1` by the production system (the API resolves from the definitions it caches).
#[must_use]
pub fn mapping_item(role_id: &str, jwt_role: &str) -> Value {
    json!({
        PARTITION_KEY: role_pk(role_id),
        SORT_KEY: jwt_mapping_sk(jwt_role),
        "GSI1PK": jwt_role_gsi_pk(jwt_role),
        "GSI1SK": role_pk(role_id),
        "roleId": role_id,
        "jwtRole": jwt_role,
    })
}

/// What is wrong with a stored item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFault {
    /// The attribute at fault (`.` for the item as a whole).
    pub attribute: String,
    /// Why it does not fit the data model.
    pub problem: String,
}

impl std::fmt::Display for ItemFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attribute `{}`: {}", self.attribute, self.problem)
    }
}

/// Reads a stored item (as JSON) as `T`, naming the attribute at fault when it does not fit.
///
/// # Errors
/// The first attribute that does not fit, and why.
pub fn read_item<T: DeserializeOwned>(item: &serde_json::Value) -> Result<T, ItemFault> {
    serde_path_to_error::deserialize(item).map_err(|err| ItemFault {
        attribute: err.path().to_string(),
        problem: err.inner().to_string(),
    })
}

/// A role definition as stored: what could be read of it, and what could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRole {
    /// The definition, with every attribute at fault left at its default.
    #[serde(flatten)]
    pub role: RoleDefinition,
    /// The attributes that do not fit the data model; empty for a sound role. A role with
    /// faults grants nothing (fail closed) until an admin repairs or deletes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<ItemFault>,
}

impl StoredRole {
    /// A sound role.
    #[must_use]
    pub const fn sound(role: RoleDefinition) -> Self {
        Self {
            role,
            faults: Vec::new(),
        }
    }

    /// Whether the stored item did not fit the data model.
    #[must_use]
    pub fn is_corrupt(&self) -> bool {
        !self.faults.is_empty()
    }

    /// Reads the definition item of `role_id` (its key's id), given as a JSON object: each
    /// attribute that does not fit is left out (its default taken) and listed in `faults`, and
    /// so is a `roleId` other than the key's.
    #[must_use]
    pub fn read(role_id: &str, item: serde_json::Value) -> Self {
        let mut attributes = match item {
            serde_json::Value::Object(attributes) => attributes,
            other => {
                return Self::unreadable(role_id, format!("not a map but {other}"));
            }
        };
        let mut faults = Vec::new();
        if let Some(stored) = attributes.get("roleId")
            && stored.as_str() != Some(role_id)
        {
            faults.push(ItemFault {
                attribute: "roleId".to_owned(),
                problem: format!("{stored} does not match the item's key ROLE#{role_id}"),
            });
            attributes.insert("roleId".to_owned(), role_id.into());
        }
        // Each pass removes one attribute at fault; an item has finitely many.
        for _ in 0..=attributes.len() + 1 {
            let fault = match read_item::<RoleDefinition>(&serde_json::Value::Object(attributes.clone())) {
                Ok(role) => return Self { role, faults },
                Err(fault) => fault,
            };
            let missing_id = fault.attribute == "." && fault.problem.contains("`roleId`");
            if missing_id {
                attributes.insert("roleId".to_owned(), role_id.into());
                faults.push(ItemFault {
                    attribute: "roleId".to_owned(),
                    problem: "missing".to_owned(),
                });
            } else if attributes.remove(top_level(&fault.attribute)).is_some() {
                faults.push(ItemFault {
                    attribute: top_level(&fault.attribute).to_owned(),
                    problem: fault.problem,
                });
            } else {
                faults.push(fault);
                break;
            }
        }
        let mut unreadable = Self::unreadable(role_id, String::new());
        unreadable.faults = faults;
        unreadable
    }

    /// A role of which nothing could be read but its id.
    fn unreadable(role_id: &str, problem: String) -> Self {
        Self {
            role: RoleDefinition {
                role_id: role_id.to_owned(),
                ..RoleDefinition::default()
            },
            faults: vec![ItemFault {
                attribute: ".".to_owned(),
                problem,
            }],
        }
    }

    /// The attributes at fault that `patch` does not set: a corrupt role is repaired by a patch
    /// that names each of them, never by guessing their values.
    #[must_use]
    pub fn faults_left_by(&self, patch: &RolePatch) -> Vec<&str> {
        let named = patch.named_attributes();
        self.faults
            .iter()
            .map(|fault| fault.attribute.as_str())
            .filter(|attribute| !named.contains(attribute) && !READ_ONLY_REPAIRS.contains(attribute))
            .collect()
    }
}

/// Attributes at fault that every API write sets anyway (the id comes from the key; the
/// version and the update time are written by each patch).
const READ_ONLY_REPAIRS: [&str; 3] = ["roleId", "updatedAt", "version"];

/// `grantedTools` of the path `grantedTools[3]`.
fn top_level(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Highest allowed `priority`.
pub const MAX_PRIORITY: u16 = 999;
/// Most entries in one list field: keeps an item far below DynamoDB's 400 KB and a role's
/// mapping items within one `TransactWriteItems` (100 actions).
pub const MAX_LIST_ENTRIES: usize = 64;
/// Longest string in any field.
pub const MAX_TEXT_CHARS: usize = 512;

/// Whether a role id fits the data model: the one rule, shared with the relay and the tools.
pub use staleless_protocol::keys::is_valid_role_id;

/// The body of `POST /admin/roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRole {
    /// The new role's id.
    pub role_id: String,
    /// Human name (required).
    pub display_name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// IdP role names that grant it.
    #[serde(default)]
    pub jwt_role_mappings: Vec<String>,
    /// Tools granted.
    #[serde(default)]
    pub granted_tools: Vec<String>,
    /// Models granted.
    #[serde(default)]
    pub granted_models: Vec<String>,
    /// Skills granted.
    #[serde(default)]
    pub granted_skills: Vec<String>,
    /// 0–999.
    #[serde(default)]
    pub priority: u16,
    /// Defaults to enabled.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Defaults to a user-made role.
    #[serde(default)]
    pub is_system_role: bool,
    /// Optional quota tier.
    #[serde(default)]
    pub quota_tier: Option<String>,
}

const fn enabled_by_default() -> bool {
    true
}

/// The body of `PATCH /admin/roles/{role_id}`: absent fields keep their value; the id cannot
/// change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolePatch {
    /// New human name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New mappings.
    pub jwt_role_mappings: Option<Vec<String>>,
    /// New tools.
    pub granted_tools: Option<Vec<String>>,
    /// New models.
    pub granted_models: Option<Vec<String>>,
    /// New skills.
    pub granted_skills: Option<Vec<String>>,
    /// New priority.
    pub priority: Option<u16>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Mark as system role or not.
    pub is_system_role: Option<bool>,
    /// New quota tier.
    pub quota_tier: Option<String>,
}

impl NewRole {
    /// Checks the fields and builds the definition to store, stamped `now`.
    ///
    /// # Errors
    /// A message naming the first field that does not fit the data model.
    pub fn validate(self, now: &str) -> Result<RoleDefinition, String> {
        if !is_valid_role_id(&self.role_id) {
            return Err(format!("roleId {:?} must match ^[a-z][a-z0-9_]{{2,49}}$", self.role_id));
        }
        let role = RoleDefinition {
            role_id: self.role_id,
            display_name: self.display_name,
            description: self.description,
            jwt_role_mappings: self.jwt_role_mappings,
            granted_tools: self.granted_tools,
            granted_models: self.granted_models,
            granted_skills: self.granted_skills,
            priority: self.priority,
            enabled: self.enabled,
            is_system_role: self.is_system_role,
            quota_tier: self.quota_tier,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            version: 1,
        };
        check_fields(&role)?;
        Ok(role)
    }
}

impl RolePatch {
    /// The stored attribute names this patch sets: the only ones its write touches, so a field
    /// it does not name keeps whatever another writer put there meanwhile.
    #[must_use]
    pub fn named_attributes(&self) -> Vec<&'static str> {
        self.attributes().into_iter().map(|(name, _)| name).collect()
    }

    /// The stored attributes this patch sets, with their values as stored: what an `UpdateItem`
    /// of exactly these attributes writes (the operator tools' path, which bumps no version).
    #[must_use]
    pub fn attributes(&self) -> Vec<(&'static str, Value)> {
        let set = [
            ("displayName", self.display_name.as_ref().map(|value| json!(value))),
            ("description", self.description.as_ref().map(|value| json!(value))),
            (
                "jwtRoleMappings",
                self.jwt_role_mappings.as_ref().map(|value| json!(value)),
            ),
            ("grantedTools", self.granted_tools.as_ref().map(|value| json!(value))),
            ("grantedModels", self.granted_models.as_ref().map(|value| json!(value))),
            ("grantedSkills", self.granted_skills.as_ref().map(|value| json!(value))),
            ("priority", self.priority.map(|value| json!(value))),
            ("enabled", self.enabled.map(|value| json!(value))),
            ("isSystemRole", self.is_system_role.map(|value| json!(value))),
            ("quotaTier", self.quota_tier.as_ref().map(|value| json!(value))),
        ];
        set.into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
            .collect()
    }

    /// The role with this patch applied, `updatedAt = now` and the version bumped.
    ///
    /// # Errors
    /// A message naming the first field that does not fit the data model.
    pub fn apply(self, current: &RoleDefinition, now: &str) -> Result<RoleDefinition, String> {
        let mut role = current.clone();
        let Self {
            display_name,
            description,
            jwt_role_mappings,
            granted_tools,
            granted_models,
            granted_skills,
            priority,
            enabled,
            is_system_role,
            quota_tier,
        } = self;
        if let Some(value) = display_name {
            role.display_name = value;
        }
        if let Some(value) = description {
            role.description = value;
        }
        if let Some(value) = jwt_role_mappings {
            role.jwt_role_mappings = value;
        }
        if let Some(value) = granted_tools {
            role.granted_tools = value;
        }
        if let Some(value) = granted_models {
            role.granted_models = value;
        }
        if let Some(value) = granted_skills {
            role.granted_skills = value;
        }
        if let Some(value) = priority {
            role.priority = value;
        }
        if let Some(value) = enabled {
            role.enabled = value;
        }
        if let Some(value) = is_system_role {
            role.is_system_role = value;
        }
        if quota_tier.is_some() {
            role.quota_tier = quota_tier;
        }
        now.clone_into(&mut role.updated_at);
        role.version = current.version.saturating_add(1);
        check_fields(&role)?;
        Ok(role)
    }
}

/// Field checks shared by creation and patching.
fn check_fields(role: &RoleDefinition) -> Result<(), String> {
    if role.display_name.trim().is_empty() {
        return Err("displayName must not be empty".to_owned());
    }
    if role.priority > MAX_PRIORITY {
        return Err(format!("priority must be 0-{MAX_PRIORITY}, not {}", role.priority));
    }
    let texts = [("displayName", &role.display_name), ("description", &role.description)];
    for (field, text) in texts {
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(format!("{field} is longer than {MAX_TEXT_CHARS} characters"));
        }
    }
    if let Some(tier) = &role.quota_tier
        && (tier.is_empty() || tier.chars().count() > MAX_TEXT_CHARS)
    {
        return Err("quotaTier must be a non-empty string".to_owned());
    }
    let lists = [
        ("jwtRoleMappings", &role.jwt_role_mappings),
        ("grantedTools", &role.granted_tools),
        ("grantedModels", &role.granted_models),
        ("grantedSkills", &role.granted_skills),
    ];
    for (field, list) in lists {
        if list.len() > MAX_LIST_ENTRIES {
            return Err(format!("{field} has more than {MAX_LIST_ENTRIES} entries"));
        }
        if list
            .iter()
            .any(|entry| entry.trim().is_empty() || entry.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(format!("{field} entries must be non-empty strings"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_role(json: &str) -> Result<RoleDefinition, String> {
        serde_json::from_str::<NewRole>(json)
            .map_err(|err| err.to_string())?
            .validate("2026-01-01T00:00:00.000Z")
    }

    #[test]
    fn items_carry_their_key_and_read_back_as_the_model() {
        let role =
            new_role(r#"{"roleId":"ops","displayName":"Ops","jwtRoleMappings":["Ops","Ops","Admin"]}"#).expect("valid");
        let item = role.item();
        assert_eq!(
            (item["PK"].as_str(), item["SK"].as_str()),
            (Some("ROLE#ops"), Some("DEFINITION"))
        );
        assert_eq!(read_item::<RoleDefinition>(&item), Ok(role.clone()));
        let mappings = role.mapping_items();
        assert_eq!(mappings.len(), 2, "one per distinct IdP role");
        assert_eq!(mappings[0]["SK"], "JWT_MAPPING#Admin");
        assert_eq!(mappings[0]["GSI1PK"], "JWT_ROLE#Admin");
        let profile = Profile {
            user_id: "u-1".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            roles: vec!["Staff".into()],
            picture: None,
            status: UserStatus::Suspended,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            roles_issued_at: None,
        };
        let item = profile.item();
        assert_eq!(
            (item["PK"].as_str(), item["status"].as_str()),
            (Some("USER#u-1"), Some("suspended"))
        );
        assert_eq!(read_item::<Profile>(&item), Ok(profile));
    }

    #[test]
    fn statuses_read_as_stored_and_nothing_else() {
        for status in UserStatus::ALL {
            assert_eq!(UserStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        assert_eq!(UserStatus::parse("Active"), None);
    }

    #[test]
    fn a_patch_lists_the_attributes_it_sets_with_their_stored_values() {
        let patch = RolePatch {
            priority: Some(7),
            granted_tools: Some(vec!["search".into()]),
            ..RolePatch::default()
        };
        assert_eq!(
            patch.attributes(),
            [("grantedTools", json!(["search"])), ("priority", json!(7))]
        );
        assert_eq!(patch.named_attributes(), ["grantedTools", "priority"]);
    }

    #[test]
    fn a_stored_last_login_time_is_read_past_and_never_served() {
        let item = serde_json::json!({
            "userId": "u-1", "email": "ada@example.com", "name": "Ada", "roles": ["Staff"],
            "status": "active", "createdAt": "2026-01-01T00:00:00.000Z",
            "lastLoginAt": "2026-01-02T00:00:00.000Z", "PK": "USER#u-1", "SK": "PROFILE",
        });
        let profile: Profile = serde_json::from_value(item).expect("a stored profile item");
        assert_eq!(profile.name, "Ada");
        let served = serde_json::to_value(&profile).expect("serializable");
        assert!(served.get("lastLoginAt").is_none(), "{served}");
    }

    #[test]
    fn role_ids_follow_the_data_model() {
        for valid in ["staff", "system_admin", "abc", "a12_3", &"a".repeat(50)] {
            assert!(is_valid_role_id(valid), "{valid}");
        }
        for invalid in ["ab", "Staff", "1abc", "a-b", "", &"a".repeat(51), "rôle", "_ab"] {
            assert!(!is_valid_role_id(invalid), "{invalid}");
        }
    }

    #[test]
    fn a_new_role_gets_defaults_and_timestamps() {
        let role = new_role(r#"{"roleId":"analyst","displayName":"Analyst"}"#).expect("valid");
        assert!(role.enabled && !role.is_system_role);
        assert_eq!(role.created_at, role.updated_at);
    }

    #[test]
    fn bad_fields_are_refused_with_the_field_name() {
        let cases = [
            (r#"{"roleId":"Bad","displayName":"x"}"#, "roleId"),
            (r#"{"roleId":"good","displayName":" "}"#, "displayName"),
            (r#"{"roleId":"good","displayName":"x","priority":1000}"#, "priority"),
            (
                r#"{"roleId":"good","displayName":"x","grantedTools":[""]}"#,
                "grantedTools",
            ),
            (
                r#"{"roleId":"good","displayName":"x","priority":"high"}"#,
                "invalid type",
            ),
            (
                r#"{"roleId":"good","displayName":"x","grantedTools":"*"}"#,
                "invalid type",
            ),
            (r#"{"roleId":"good","displayName":"x","colour":"red"}"#, "unknown field"),
        ];
        for (json, expected) in cases {
            let err = new_role(json).expect_err(json);
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let role = new_role(r#"{"roleId":"analyst","displayName":"Analyst","grantedTools":["a"]}"#).expect("valid");
        let patch: RolePatch = serde_json::from_str(r#"{"enabled":false,"priority":5}"#).expect("patch");
        let patched = patch.apply(&role, "2026-02-01T00:00:00.000Z").expect("apply");
        assert!(!patched.enabled);
        assert_eq!(patched.priority, 5);
        assert_eq!(patched.granted_tools, ["a"]);
        assert_eq!(patched.created_at, role.created_at);
        assert_eq!(patched.updated_at, "2026-02-01T00:00:00.000Z");
        assert_eq!((role.version, patched.version), (1, 2));
        assert!(serde_json::from_str::<RolePatch>(r#"{"roleId":"other"}"#).is_err());
    }

    #[test]
    fn a_patch_names_exactly_the_attributes_it_sets() {
        let patch: RolePatch = serde_json::from_str(r#"{"enabled":false,"jwtRoleMappings":["Ops"]}"#).expect("patch");
        assert_eq!(patch.named_attributes(), ["jwtRoleMappings", "enabled"]);
        assert!(RolePatch::default().named_attributes().is_empty());
        // Every attribute a patch can name is an attribute of the stored definition.
        let full: RolePatch = serde_json::from_str(
            r#"{"displayName":"d","description":"d","jwtRoleMappings":[],"grantedTools":[],"grantedModels":[],
                "grantedSkills":[],"priority":1,"enabled":true,"isSystemRole":false,"quotaTier":"t"}"#,
        )
        .expect("patch");
        let role = new_role(r#"{"roleId":"analyst","displayName":"Analyst","quotaTier":"t"}"#).expect("valid");
        let stored = serde_json::to_value(&role).expect("json");
        for name in full.named_attributes() {
            assert!(stored.get(name).is_some(), "{name}");
        }
        assert_eq!(full.named_attributes().len(), 10);
    }

    #[test]
    fn a_missing_status_is_active_and_an_unknown_one_names_the_attribute() {
        let profile: Profile = read_item(&serde_json::json!({"userId": "u"})).expect("minimal");
        assert_eq!(profile.status, UserStatus::Active);
        let fault = read_item::<Profile>(&serde_json::json!({"userId": "u", "status": "banned"})).expect_err("unknown");
        assert_eq!(fault.attribute, "status");
        assert!(fault.problem.contains("banned"), "{fault}");
    }

    #[test]
    fn typical_typos_in_a_profile_name_the_attribute_at_fault() {
        let cases = [
            (serde_json::json!({"userId": "u", "roles": "Staff"}), "roles"),
            (serde_json::json!({"userId": "u", "roles": ["Staff", 3]}), "roles[1]"),
            (serde_json::json!({"userId": "u", "name": true}), "name"),
            (
                serde_json::json!({"userId": "u", "rolesIssuedAt": "1700000000"}),
                "rolesIssuedAt",
            ),
            (serde_json::json!({"userId": "u", "status": "Active"}), "status"),
            (serde_json::json!({"name": "no id"}), "."),
        ];
        for (item, attribute) in cases {
            let fault = read_item::<Profile>(&item).expect_err(&item.to_string());
            assert_eq!(fault.attribute, attribute, "{item}: {fault}");
        }
    }

    fn stored_role(item: serde_json::Value) -> StoredRole {
        StoredRole::read("staff", item)
    }

    #[test]
    fn a_sound_role_reads_without_faults() {
        let role = stored_role(serde_json::json!({
            "roleId": "staff", "displayName": "Staff", "enabled": true, "priority": 5,
            "grantedTools": ["search"], "PK": "ROLE#staff", "SK": "DEFINITION",
        }));
        assert!(!role.is_corrupt(), "{:?}", role.faults);
        assert!(role.role.enabled);
        assert_eq!(role.role.priority, 5);
    }

    #[test]
    fn typical_typos_in_a_role_are_listed_and_the_rest_is_read() {
        let cases = [
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "enabled": "yes"}),
                vec!["enabled"],
            ),
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "priority": "5"}),
                vec!["priority"],
            ),
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "grantedTools": "*"}),
                vec!["grantedTools"],
            ),
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "grantedTools": ["a", 1]}),
                vec!["grantedTools"],
            ),
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "isSystemRole": "true", "priority": -1}),
                vec!["isSystemRole", "priority"],
            ),
            (serde_json::json!({"displayName": "S", "enabled": true}), vec!["roleId"]),
            (
                serde_json::json!({"roleId": "admin", "displayName": "S"}),
                vec!["roleId"],
            ),
            (
                serde_json::json!({"roleId": "staff", "displayName": "S", "priority": 1000}),
                vec![],
            ),
        ];
        for (item, expected) in cases {
            let role = stored_role(item.clone());
            let attributes: Vec<&str> = role.faults.iter().map(|fault| fault.attribute.as_str()).collect();
            assert_eq!(attributes, expected, "{item}");
            assert_eq!(role.role.role_id, "staff", "the key names the role");
            assert_eq!(role.role.display_name, "S", "what fits is still read");
        }
        assert!(StoredRole::read("staff", serde_json::json!("text")).is_corrupt());
    }

    #[test]
    fn a_corrupt_role_is_repaired_only_by_a_patch_naming_each_fault() {
        let role = stored_role(serde_json::json!({"displayName": "S", "enabled": "yes", "priority": "5"}));
        let partial: RolePatch = serde_json::from_str(r#"{"enabled":true}"#).expect("patch");
        assert_eq!(role.faults_left_by(&partial), ["priority"], "roleId comes from the key");
        let whole: RolePatch = serde_json::from_str(r#"{"enabled":true,"priority":5}"#).expect("patch");
        assert!(role.faults_left_by(&whole).is_empty());
    }
}
