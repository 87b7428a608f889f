//! The relay's configuration, read once from the Lambda's environment (set by `template.yaml`).
//!
//! Parsing is a pure function over a lookup closure, so it is tested without touching the
//! process environment.

/// Env var naming the users table (contract).
pub const USERS_TABLE_VAR: &str = "USERS_TABLE";
/// Env var naming the app-roles table (contract).
pub const ROLES_TABLE_VAR: &str = "ROLES_TABLE";
/// Env var holding the ARN of the invalidation topic.
pub const TOPIC_ARN_VAR: &str = "INVALIDATION_TOPIC_ARN";
/// Env var listing, comma-separated, the attributes whose changes alone never invalidate.
pub const IGNORED_ATTRIBUTES_VAR: &str = "RELAY_IGNORED_ATTRIBUTES";

pub use staleless_protocol::keys::{DEFAULT_ROLES_TABLE, DEFAULT_USERS_TABLE};
/// `RELAY_IGNORED_ATTRIBUTES` when unset: the API rewrites `lastLoginAt` on every request, and
/// without this every request would flush every task's cache.
pub const DEFAULT_IGNORED_ATTRIBUTES: &str = "lastLoginAt";

/// Why the configuration is unusable; the Lambda refuses to start rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A variable is set to an empty value where a name is needed (most likely a template mistake).
    #[error("{0} is set but empty")]
    Empty(&'static str),
}

/// Everything the relay needs to know about its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Physical name of the users table: a record whose `eventSourceARN` names it is a users change.
    pub users_table: String,
    /// Physical name of the app-roles table.
    pub roles_table: String,
    /// Where invalidations are published.
    pub topic_arn: String,
    /// Attributes whose changes alone are no-ops (empty when the variable is set to "").
    pub ignored_attributes: Vec<String>,
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
    /// table name or the topic is set to an empty string.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let name = |var: &'static str, default: Option<&str>| -> Result<String, ConfigError> {
            match lookup(var) {
                Some(value) if value.trim().is_empty() => Err(ConfigError::Empty(var)),
                Some(value) => Ok(value.trim().to_owned()),
                None => default.map(str::to_owned).ok_or(ConfigError::Missing(var)),
            }
        };
        let ignored = lookup(IGNORED_ATTRIBUTES_VAR).unwrap_or_else(|| DEFAULT_IGNORED_ATTRIBUTES.to_owned());
        Ok(Self {
            users_table: name(USERS_TABLE_VAR, Some(DEFAULT_USERS_TABLE))?,
            roles_table: name(ROLES_TABLE_VAR, Some(DEFAULT_ROLES_TABLE))?,
            topic_arn: name(TOPIC_ARN_VAR, None)?,
            ignored_attributes: parse_attribute_list(&ignored),
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

    #[test]
    fn defaults_apply_when_only_the_topic_is_set() {
        let config = parse(&[(TOPIC_ARN_VAR, "arn:aws:sns:us-east-1:123456789012:t")]).expect("config");
        assert_eq!(
            config,
            RelayConfig {
                users_table: DEFAULT_USERS_TABLE.into(),
                roles_table: DEFAULT_ROLES_TABLE.into(),
                topic_arn: "arn:aws:sns:us-east-1:123456789012:t".into(),
                ignored_attributes: vec!["lastLoginAt".into()],
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
        assert_eq!(config.users_table, "p-users");
        assert_eq!(config.roles_table, "p-app-roles");
        assert_eq!(config.topic_arn, "arn:t");
        assert_eq!(config.ignored_attributes, ["lastLoginAt", "lastSeenAt"]);
    }

    #[test]
    fn an_empty_ignore_list_ignores_nothing() {
        let config = parse(&[(TOPIC_ARN_VAR, "arn:t"), (IGNORED_ATTRIBUTES_VAR, "")]).expect("config");
        assert!(config.ignored_attributes.is_empty());
    }

    #[test]
    fn the_topic_is_required_and_names_are_never_empty() {
        assert_eq!(parse(&[]), Err(ConfigError::Missing(TOPIC_ARN_VAR)));
        assert_eq!(parse(&[(TOPIC_ARN_VAR, "  ")]), Err(ConfigError::Empty(TOPIC_ARN_VAR)));
        assert_eq!(
            parse(&[(TOPIC_ARN_VAR, "arn:t"), (USERS_TABLE_VAR, "")]),
            Err(ConfigError::Empty(USERS_TABLE_VAR))
        );
    }
}
