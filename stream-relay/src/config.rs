//! The relay's configuration, read once from the Lambda's environment (set by `template.yaml`).
//!
//! Which tables the relay reads is configuration, not code: `RELAY_SOURCES` names the sources
//! (`users,roles` when unset), and each source `<name>` is described by variables of its own,
//! `<NAME>` being the name upper-cased with `-` and `.` as `_`:
//!
//! | variable | meaning | `users` / `roles` when unset |
//! |---|---|---|
//! | `SOURCE_<NAME>_TABLE` | the table whose stream records are this source's changes | `USERS_TABLE` / `ROLES_TABLE` |
//! | `SOURCE_<NAME>_PK_PREFIX` | a cache key is the part of `PK` after this prefix | `USER#` / `ROLE#` |
//! | `SOURCE_<NAME>_SK_PREFIX` | only items whose `SK` starts with it are cached (optional) | none |
//! | `SOURCE_<NAME>_ID_ATTRIBUTE` | names the key when `PK` does not (optional) | `userId` / none |
//! | `SOURCE_<NAME>_IGNORED_ATTRIBUTES` | attributes whose changes alone are no-ops | `RELAY_IGNORED_ATTRIBUTES` |
//!
//! A source other than `users` and `roles` needs its table and prefix set. The heartbeat writer
//! reads the same variables to learn which tables to beat into.
//!
//! Parsing is a pure function over a lookup closure, so it is tested without touching the
//! process environment.

use staleless_protocol::Source;
use staleless_protocol::keys::{HEARTBEAT_PK_PREFIX, ROLE_PK_PREFIX, USER_ID_ATTRIBUTE, USER_PK_PREFIX};

/// Env var naming the users table (contract): the `users` source's table by default.
pub const USERS_TABLE_VAR: &str = "USERS_TABLE";
/// Env var naming the app-roles table (contract): the `roles` source's table by default.
pub const ROLES_TABLE_VAR: &str = "ROLES_TABLE";
/// Env var holding the ARN of the invalidation topic.
pub const TOPIC_ARN_VAR: &str = "INVALIDATION_TOPIC_ARN";
/// Env var listing, comma-separated, the attributes whose changes alone never invalidate, for
/// the sources that do not set their own.
pub const IGNORED_ATTRIBUTES_VAR: &str = "RELAY_IGNORED_ATTRIBUTES";
/// Env var listing, comma-separated, the sources the relay serves.
pub const SOURCES_VAR: &str = "RELAY_SOURCES";
/// `RELAY_SOURCES` when unset.
pub const DEFAULT_SOURCES: &str = "users,roles";

pub use staleless_protocol::keys::{DEFAULT_ROLES_TABLE, DEFAULT_USERS_TABLE};
/// `RELAY_IGNORED_ATTRIBUTES` when unset: the API rewrites `lastLoginAt` on every request, and
/// without this every request would flush every task's cache.
pub const DEFAULT_IGNORED_ATTRIBUTES: &str = "lastLoginAt";

/// Why the configuration is unusable; the Lambda refuses to start rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset.
    #[error("{0} is required")]
    Missing(String),
    /// A variable is set to an empty value where a name is needed (most likely a template mistake).
    #[error("{0} is set but empty")]
    Empty(String),
    /// A variable's value cannot be used.
    #[error("{var}: {problem}")]
    Invalid {
        /// The variable.
        var: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// One table the relay reads, and how its records become cache keys of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// The source its changes are published under.
    pub source: Source,
    /// Physical name of the table: a record whose `eventSourceARN` names it is this source's.
    pub table: String,
    /// A cache key is the part of `PK` after this prefix; items with another prefix are not
    /// cached (and publish nothing).
    pub pk_prefix: String,
    /// When set, only items whose `SK` starts with it are cached.
    pub sk_prefix: Option<String>,
    /// The attribute that names the key when `PK` does not (absent, not a string, or the bare
    /// prefix); without it such a record flushes the source's caches.
    pub id_attribute: Option<String>,
    /// Attributes whose changes alone are no-ops.
    pub ignored_attributes: Vec<String>,
}

impl SourceTable {
    /// The users table: `USER#<user id>`, the id also in `userId`.
    #[must_use]
    pub fn users(table: impl Into<String>, ignored_attributes: Vec<String>) -> Self {
        Self {
            source: Source::USERS,
            table: table.into(),
            pk_prefix: USER_PK_PREFIX.to_owned(),
            sk_prefix: None,
            id_attribute: Some(USER_ID_ATTRIBUTE.to_owned()),
            ignored_attributes,
        }
    }

    /// The app-roles table: `ROLE#<role id>`, definition and mapping items alike.
    #[must_use]
    pub fn roles(table: impl Into<String>, ignored_attributes: Vec<String>) -> Self {
        Self {
            source: Source::ROLES,
            table: table.into(),
            pk_prefix: ROLE_PK_PREFIX.to_owned(),
            sk_prefix: None,
            id_attribute: None,
            ignored_attributes,
        }
    }
}

/// `users=staleless-users (PK USER#…, id attribute userId, ignores lastLoginAt)`: one source as
/// the relay's ready line describes it.
impl std::fmt::Display for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={} (PK {}…", self.source, self.table, self.pk_prefix)?;
        if let Some(prefix) = &self.sk_prefix {
            write!(f, ", SK {prefix}…")?;
        }
        if let Some(attribute) = &self.id_attribute {
            write!(f, ", id attribute {attribute}")?;
        }
        if !self.ignored_attributes.is_empty() {
            write!(f, ", ignores {}", self.ignored_attributes.join(" "))?;
        }
        f.write_str(")")
    }
}

/// `SOURCE_<NAME>_<field>` of `source`.
#[must_use]
pub fn source_var(source: &Source, field: &str) -> String {
    let name: String = source
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SOURCE_{name}_{field}")
}

/// Reads the sources (`RELAY_SOURCES` and each source's variables) through `lookup`: what the
/// relay maps and what the heartbeat writer beats into.
///
/// # Errors
/// [`ConfigError`] naming the first variable that is missing, empty or unusable: a malformed or
/// repeated source name, two sources on one table, a prefix that is empty or inside the
/// heartbeat items' key space.
pub fn sources_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Vec<SourceTable>, ConfigError> {
    let names = lookup(SOURCES_VAR).unwrap_or_else(|| DEFAULT_SOURCES.to_owned());
    let default_ignored =
        parse_attribute_list(&lookup(IGNORED_ATTRIBUTES_VAR).unwrap_or_else(|| DEFAULT_IGNORED_ATTRIBUTES.to_owned()));
    let invalid = |var: &str, problem: String| ConfigError::Invalid {
        var: var.to_owned(),
        problem,
    };
    let mut sources: Vec<SourceTable> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let source = Source::new(name).map_err(|err| invalid(SOURCES_VAR, err.to_string()))?;
        if sources.iter().any(|known| known.source == source) {
            return Err(invalid(SOURCES_VAR, format!("{source} is listed twice")));
        }
        let built_in = match source.as_str() {
            "users" => Some(SourceTable::users(
                value(lookup, USERS_TABLE_VAR, Some(DEFAULT_USERS_TABLE))?,
                default_ignored.clone(),
            )),
            "roles" => Some(SourceTable::roles(
                value(lookup, ROLES_TABLE_VAR, Some(DEFAULT_ROLES_TABLE))?,
                default_ignored.clone(),
            )),
            _ => None,
        };
        let var = |field: &str| source_var(&source, field);
        let optional = |field: &str| -> Result<Option<String>, ConfigError> {
            let var = var(field);
            lookup(&var)
                .map(|value| match value.trim() {
                    "" => Err(ConfigError::Empty(var.clone())),
                    value => Ok(value.to_owned()),
                })
                .transpose()
        };
        let table = match (optional("TABLE")?, &built_in) {
            (Some(table), _) => table,
            (None, Some(built_in)) => built_in.table.clone(),
            (None, None) => return Err(ConfigError::Missing(var("TABLE"))),
        };
        let pk_prefix = match (optional("PK_PREFIX")?, &built_in) {
            (Some(prefix), _) => prefix,
            (None, Some(built_in)) => built_in.pk_prefix.clone(),
            (None, None) => return Err(ConfigError::Missing(var("PK_PREFIX"))),
        };
        // Heartbeat items are recognised first: a source under their prefix would never see a key.
        if pk_prefix.starts_with(HEARTBEAT_PK_PREFIX) {
            return Err(invalid(
                &var("PK_PREFIX"),
                format!("{pk_prefix:?} overlaps the heartbeat items' {HEARTBEAT_PK_PREFIX}"),
            ));
        }
        if let Some(clash) = sources.iter().find(|known| known.table == table) {
            return Err(invalid(
                &var("TABLE"),
                format!("{table} is already the table of {}", clash.source),
            ));
        }
        let ignored_attributes = match lookup(&var("IGNORED_ATTRIBUTES")) {
            Some(list) => parse_attribute_list(&list),
            None => built_in
                .as_ref()
                .map_or_else(Vec::new, |built_in| built_in.ignored_attributes.clone()),
        };
        sources.push(SourceTable {
            sk_prefix: optional("SK_PREFIX")?,
            id_attribute: optional("ID_ATTRIBUTE")?.or_else(|| built_in.and_then(|built_in| built_in.id_attribute)),
            source,
            table,
            pk_prefix,
            ignored_attributes,
        });
    }
    if sources.is_empty() {
        return Err(ConfigError::Empty(SOURCES_VAR.to_owned()));
    }
    Ok(sources)
}

/// A trimmed, non-empty value of `var`, or `default`.
fn value(lookup: &impl Fn(&str) -> Option<String>, var: &str, default: Option<&str>) -> Result<String, ConfigError> {
    match lookup(var) {
        Some(value) if value.trim().is_empty() => Err(ConfigError::Empty(var.to_owned())),
        Some(value) => Ok(value.trim().to_owned()),
        None => default
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing(var.to_owned())),
    }
}

/// Everything the relay needs to know about its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The tables it reads, one per source.
    pub sources: Vec<SourceTable>,
    /// Where invalidations are published.
    pub topic_arn: String,
}

impl RelayConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// See [`RelayConfig::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from `lookup(variable name)`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] without `INVALIDATION_TOPIC_ARN`; [`ConfigError::Empty`] when a
    /// table name or the topic is set to an empty string; see [`sources_from_lookup`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            sources: sources_from_lookup(&lookup)?,
            topic_arn: value(&lookup, TOPIC_ARN_VAR, None)?,
        })
    }
}

/// Splits a comma-separated attribute list, dropping blanks and duplicates (order kept).
#[must_use]
pub fn parse_attribute_list(text: &str) -> Vec<String> {
    let mut attributes: Vec<String> = Vec::new();
    for attribute in text.split(',').map(str::trim).filter(|attribute| !attribute.is_empty()) {
        if !attributes.iter().any(|known| known == attribute) {
            attributes.push(attribute.to_owned());
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<RelayConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        RelayConfig::from_lookup(|name| vars.get(name).cloned())
    }

    const TOPIC: (&str, &str) = (TOPIC_ARN_VAR, "arn:t");

    #[test]
    fn defaults_apply_when_only_the_topic_is_set() {
        let config = parse(&[(TOPIC_ARN_VAR, "arn:aws:sns:us-east-1:123456789012:t")]).expect("config");
        assert_eq!(
            config,
            RelayConfig {
                sources: vec![
                    SourceTable::users(DEFAULT_USERS_TABLE, vec!["lastLoginAt".into()]),
                    SourceTable::roles(DEFAULT_ROLES_TABLE, vec!["lastLoginAt".into()]),
                ],
                topic_arn: "arn:aws:sns:us-east-1:123456789012:t".into(),
            }
        );
    }

    #[test]
    fn every_variable_is_honoured() {
        let config = parse(&[
            (USERS_TABLE_VAR, "p-users"),
            (ROLES_TABLE_VAR, "p-app-roles"),
            (TOPIC_ARN_VAR, " arn:t "),
            (IGNORED_ATTRIBUTES_VAR, "lastLoginAt, lastSeenAt,,lastLoginAt"),
        ])
        .expect("config");
        assert_eq!(config.sources[0].table, "p-users");
        assert_eq!(config.sources[1].table, "p-app-roles");
        assert_eq!(config.topic_arn, "arn:t");
        for source in &config.sources {
            assert_eq!(source.ignored_attributes, ["lastLoginAt", "lastSeenAt"]);
        }
    }

    #[test]
    fn an_empty_ignore_list_ignores_nothing() {
        let config = parse(&[TOPIC, (IGNORED_ATTRIBUTES_VAR, "")]).expect("config");
        assert!(config.sources.iter().all(|source| source.ignored_attributes.is_empty()));
    }

    #[test]
    fn the_topic_is_required_and_names_are_never_empty() {
        assert_eq!(parse(&[]), Err(ConfigError::Missing(TOPIC_ARN_VAR.into())));
        assert_eq!(
            parse(&[(TOPIC_ARN_VAR, "  ")]),
            Err(ConfigError::Empty(TOPIC_ARN_VAR.into()))
        );
        assert_eq!(
            parse(&[TOPIC, (USERS_TABLE_VAR, "")]),
            Err(ConfigError::Empty(USERS_TABLE_VAR.into()))
        );
        assert_eq!(
            parse(&[TOPIC, (SOURCES_VAR, " , ")]),
            Err(ConfigError::Empty(SOURCES_VAR.into()))
        );
    }

    #[test]
    fn a_third_source_is_configuration() {
        let config = parse(&[
            TOPIC,
            (SOURCES_VAR, "users, roles, org-units"),
            ("SOURCE_ORG_UNITS_TABLE", "p-org-units"),
            ("SOURCE_ORG_UNITS_PK_PREFIX", "ORG#"),
            ("SOURCE_ORG_UNITS_SK_PREFIX", "UNIT#"),
            ("SOURCE_ORG_UNITS_ID_ATTRIBUTE", "orgId"),
            ("SOURCE_ORG_UNITS_IGNORED_ATTRIBUTES", "viewedAt"),
            ("SOURCE_USERS_IGNORED_ATTRIBUTES", "lastLoginAt,lastSeenAt"),
        ])
        .expect("config");
        assert_eq!(
            config.sources[2],
            SourceTable {
                source: Source::new("org-units").expect("name"),
                table: "p-org-units".into(),
                pk_prefix: "ORG#".into(),
                sk_prefix: Some("UNIT#".into()),
                id_attribute: Some("orgId".into()),
                ignored_attributes: vec!["viewedAt".into()],
            }
        );
        assert_eq!(config.sources[0].ignored_attributes, ["lastLoginAt", "lastSeenAt"]);
        assert_eq!(config.sources[1].ignored_attributes, ["lastLoginAt"]);
    }

    #[test]
    fn only_the_built_in_sources_have_defaults() {
        let only_orgs = parse(&[TOPIC, (SOURCES_VAR, "orgs"), ("SOURCE_ORGS_TABLE", "o")]);
        assert_eq!(only_orgs, Err(ConfigError::Missing("SOURCE_ORGS_PK_PREFIX".into())));
        let no_table = parse(&[TOPIC, (SOURCES_VAR, "orgs"), ("SOURCE_ORGS_PK_PREFIX", "ORG#")]);
        assert_eq!(no_table, Err(ConfigError::Missing("SOURCE_ORGS_TABLE".into())));
        let users_moved = parse(&[TOPIC, (SOURCES_VAR, "users"), ("SOURCE_USERS_TABLE", "elsewhere")]).expect("config");
        assert_eq!(users_moved.sources.len(), 1);
        assert_eq!(users_moved.sources[0].table, "elsewhere");
        assert_eq!(users_moved.sources[0].pk_prefix, USER_PK_PREFIX);
    }

    #[test]
    fn unusable_sources_are_refused_by_name() {
        let refused = |vars: &[(&str, &str)]| match parse(vars) {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => panic!("{vars:?} should be refused, not {other:?}"),
        };
        assert_eq!(refused(&[TOPIC, (SOURCES_VAR, "users,users")]), SOURCES_VAR);
        assert_eq!(refused(&[TOPIC, (SOURCES_VAR, "no spaces")]), SOURCES_VAR);
        assert_eq!(
            refused(&[
                TOPIC,
                (SOURCES_VAR, "users,orgs"),
                ("SOURCE_ORGS_TABLE", DEFAULT_USERS_TABLE),
                ("SOURCE_ORGS_PK_PREFIX", "ORG#")
            ]),
            "SOURCE_ORGS_TABLE"
        );
        for prefix in ["HEARTBEAT#", "HEARTBEAT#x"] {
            assert_eq!(
                refused(&[
                    TOPIC,
                    (SOURCES_VAR, "orgs"),
                    ("SOURCE_ORGS_TABLE", "o"),
                    ("SOURCE_ORGS_PK_PREFIX", prefix)
                ]),
                "SOURCE_ORGS_PK_PREFIX"
            );
        }
        assert_eq!(
            parse(&[
                TOPIC,
                (SOURCES_VAR, "orgs"),
                ("SOURCE_ORGS_TABLE", "o"),
                ("SOURCE_ORGS_PK_PREFIX", " ")
            ]),
            Err(ConfigError::Empty("SOURCE_ORGS_PK_PREFIX".into()))
        );
    }

    #[test]
    fn a_source_describes_itself_for_the_ready_line() {
        assert_eq!(
            SourceTable::users("u", vec!["lastLoginAt".into(), "x".into()]).to_string(),
            "users=u (PK USER#…, id attribute userId, ignores lastLoginAt x)"
        );
        assert_eq!(SourceTable::roles("r", Vec::new()).to_string(), "roles=r (PK ROLE#…)");
    }

    #[test]
    fn source_variables_are_named_after_the_source() {
        assert_eq!(source_var(&Source::USERS, "TABLE"), "SOURCE_USERS_TABLE");
        let odd = Source::new("org-units.v2").expect("name");
        assert_eq!(source_var(&odd, "PK_PREFIX"), "SOURCE_ORG_UNITS_V2_PK_PREFIX");
    }
}
