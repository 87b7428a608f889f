//! Permission resolution (`docs/design.md`, "Data model"), a pure function of a user's IdP roles and the role
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

/// Whether two lists name the same IdP roles, in any order: the hot path compares the token's
/// roles with the stored ones on every request, so the common case (equal lists) allocates
/// nothing.
#[must_use]
pub fn same_roles(stored: &[String], token: &[String]) -> bool {
    fn distinct(roles: &[String]) -> BTreeSet<&str> {
        roles.iter().map(String::as_str).collect()
    }
    stored == token || distinct(stored) == distinct(token)
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

/// Why storing `after` as the `system_admin` role (`None`: deleting it) would lock administrators
/// out, if it would; `None` for any other role. The role is the only way into the admin routes,
/// so it must stay an enabled system role with a mapping, and the admin making the change
/// (`caller_roles`: their IdP roles) must still hold it afterwards — otherwise one request could
/// leave nobody able to undo it.
#[must_use]
pub fn admin_lockout(role_id: &str, after: Option<&RoleDefinition>, caller_roles: &[String]) -> Option<String> {
    if role_id != ADMIN_ROLE {
        return None;
    }
    let why = match after {
        None => "cannot be deleted",
        Some(role) if !role.enabled => "cannot be disabled",
        Some(role) if !role.is_system_role => "must stay a system role",
        Some(role) if role.jwt_role_mappings.is_empty() => "must keep at least one jwtRoleMappings entry",
        Some(role)
            if !role
                .jwt_role_mappings
                .iter()
                .any(|mapping| caller_roles.contains(mapping)) =>
        {
            "must keep a mapping to one of your own IdP roles, or you would lose access yourself"
        }
        Some(_) => return None,
    };
    Some(format!(
        "the {ADMIN_ROLE} role {why}: it is the only way into the admin routes, and this change would lock administrators out"
    ))
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
            version: 1,
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

    #[test]
    fn roles_are_the_same_in_any_order_and_count() {
        assert!(same_roles(
            &roles(&["Staff", "Admin"]),
            &roles(&["Admin", "Staff", "Admin"])
        ));
        assert!(same_roles(&[], &[]));
        assert!(!same_roles(&roles(&["Staff", "Admin"]), &roles(&["Staff"])));
        assert!(!same_roles(&[], &roles(&["Staff"])));
    }

    #[test]
    fn the_admin_role_cannot_be_made_unreachable() {
        let caller = roles(&["Admin"]);
        let mut admin = role(ADMIN_ROLE, &["Admin"], &["*"], 900, true);
        admin.is_system_role = true;
        assert_eq!(admin_lockout(ADMIN_ROLE, Some(&admin), &caller), None);

        let mut changes: Vec<(&str, Option<RoleDefinition>)> = vec![("delete", None)];
        let mut disabled = admin.clone();
        disabled.enabled = false;
        changes.push(("disable", Some(disabled)));
        let mut unmapped = admin.clone();
        unmapped.jwt_role_mappings.clear();
        changes.push(("unmap", Some(unmapped)));
        let mut not_system = admin.clone();
        not_system.is_system_role = false;
        changes.push(("un-system", Some(not_system)));
        let mut remapped = admin.clone();
        remapped.jwt_role_mappings = roles(&["NobodyHasThis"]);
        changes.push(("remap away from the caller", Some(remapped)));
        for (change, after) in changes {
            let refusal = admin_lockout(ADMIN_ROLE, after.as_ref(), &caller);
            assert!(refusal.is_some_and(|why| why.contains(ADMIN_ROLE)), "{change}");
        }
        // Other roles are the catalogue's business, whatever happens to them.
        assert_eq!(admin_lockout("staff", None, &caller), None);
    }
}
