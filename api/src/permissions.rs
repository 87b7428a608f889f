//! Permission resolution (DESIGN.md §1), a pure function of a user's IdP roles and the role
//! catalogue.
//!
//! IdP roles → enabled AppRoles whose `jwtRoleMappings` contain any of them; none → the `default`
//! AppRole (if enabled). Permissions are the union of the granted lists, where `"*"` wins;
//! `quotaTier` comes from the highest-priority matched role (ties: the smaller role id).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::RoleDefinition;

/// The AppRole every user without a mapped role gets.
pub const DEFAULT_ROLE: &str = "default";
/// The AppRole that may use the admin routes.
pub const ADMIN_ROLE: &str = "system_admin";
/// The wildcard entry meaning "everything".
pub const WILDCARD: &str = "*";

/// What a user may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// Tool ids, or `["*"]`.
    pub tools: Vec<String>,
    /// Model ids, or `["*"]`.
    pub models: Vec<String>,
    /// Skill ids, or `["*"]`.
    pub skills: Vec<String>,
    /// The quota tier, `null` when no role applies.
    pub quota_tier: Option<String>,
}

/// A user's resolved AppRoles and their permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// The matched AppRole ids, highest priority first.
    pub app_roles: Vec<String>,
    /// The union of what they grant.
    pub permissions: Permissions,
}

impl Access {
    /// Whether the user holds `role_id`.
    #[must_use]
    pub fn has_role(&self, role_id: &str) -> bool {
        self.app_roles.iter().any(|role| role == role_id)
    }
}

/// Resolves a user's IdP roles against the catalogue.
#[must_use]
pub fn resolve(idp_roles: &[String], catalogue: &[RoleDefinition]) -> Access {
    let mut matched: Vec<&RoleDefinition> = catalogue
        .iter()
        .filter(|role| role.enabled && role.jwt_role_mappings.iter().any(|mapping| idp_roles.contains(mapping)))
        .collect();
    if matched.is_empty() {
        matched.extend(
            catalogue
                .iter()
                .filter(|role| role.enabled && role.role_id == DEFAULT_ROLE),
        );
    }
    matched.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.role_id.cmp(&b.role_id)));
    matched.dedup_by(|a, b| a.role_id == b.role_id);

    let union = |pick: fn(&RoleDefinition) -> &Vec<String>| -> Vec<String> {
        let all: BTreeSet<&String> = matched.iter().flat_map(|role| pick(role)).collect();
        if all.iter().any(|entry| *entry == WILDCARD) {
            vec![WILDCARD.to_owned()]
        } else {
            all.into_iter().cloned().collect()
        }
    };
    Access {
        app_roles: matched.iter().map(|role| role.role_id.clone()).collect(),
        permissions: Permissions {
            tools: union(|role| &role.granted_tools),
            models: union(|role| &role.granted_models),
            skills: union(|role| &role.granted_skills),
            quota_tier: matched
                .first()
                .map(|role| role.quota_tier.clone().unwrap_or_else(|| role.role_id.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(id: &str, mappings: &[&str], tools: &[&str], priority: u16, enabled: bool) -> RoleDefinition {
        let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect::<Vec<_>>();
        RoleDefinition {
            role_id: id.to_owned(),
            display_name: id.to_owned(),
            description: String::new(),
            jwt_role_mappings: strings(mappings),
            granted_tools: strings(tools),
            granted_models: strings(&["basic"]),
            granted_skills: Vec::new(),
            priority,
            enabled,
            is_system_role: false,
            quota_tier: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn roles(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    fn catalogue() -> Vec<RoleDefinition> {
        vec![
            role("system_admin", &["Admin"], &["*"], 900, true),
            role("staff", &["Staff"], &["search", "calendar"], 100, true),
            role("contractor", &["Contractor"], &["search", "wiki"], 50, true),
            role("retired", &["Staff"], &["fax"], 999, false),
            role(DEFAULT_ROLE, &[], &["search"], 0, true),
        ]
    }

    #[test]
    fn mapped_roles_are_unioned_and_ordered_by_priority() {
        let access = resolve(&roles(&["Contractor", "Staff"]), &catalogue());
        assert_eq!(access.app_roles, ["staff", "contractor"]);
        assert_eq!(access.permissions.tools, ["calendar", "search", "wiki"]);
        assert_eq!(access.permissions.quota_tier.as_deref(), Some("staff"));
    }

    #[test]
    fn a_wildcard_wins_over_any_list() {
        let access = resolve(&roles(&["Staff", "Admin"]), &catalogue());
        assert_eq!(access.permissions.tools, ["*"]);
        assert_eq!(access.permissions.models, ["basic"]);
        assert!(access.has_role(ADMIN_ROLE));
        assert_eq!(access.permissions.quota_tier.as_deref(), Some("system_admin"));
    }

    #[test]
    fn disabled_roles_grant_nothing_even_at_top_priority() {
        let access = resolve(&roles(&["Staff"]), &catalogue());
        assert!(!access.has_role("retired"));
        assert!(!access.permissions.tools.contains(&"fax".to_owned()));
    }

    #[test]
    fn no_mapped_role_falls_back_to_default_unless_it_is_disabled() {
        let access = resolve(&roles(&["Visitor"]), &catalogue());
        assert_eq!(access.app_roles, [DEFAULT_ROLE]);
        assert_eq!(access.permissions.tools, ["search"]);

        let mut without_default = catalogue();
        for role in &mut without_default {
            role.enabled = role.role_id != DEFAULT_ROLE;
        }
        let access = resolve(&[], &without_default);
        assert!(access.app_roles.is_empty());
        assert!(access.permissions.tools.is_empty());
        assert_eq!(access.permissions.quota_tier, None);
    }

    #[test]
    fn an_explicit_quota_tier_beats_the_role_id_and_ties_break_by_id() {
        let mut catalogue = vec![
            role("beta", &["X"], &[], 10, true),
            role("alpha", &["X"], &[], 10, true),
        ];
        assert_eq!(
            resolve(&roles(&["X"]), &catalogue).permissions.quota_tier.as_deref(),
            Some("alpha")
        );
        catalogue[1].quota_tier = Some("gold".to_owned());
        assert_eq!(
            resolve(&roles(&["X"]), &catalogue).permissions.quota_tier.as_deref(),
            Some("gold")
        );
    }
}
