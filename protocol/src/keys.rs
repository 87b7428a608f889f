//! The key scheme of both tables, defined once for the relay, the API and the operator tools.
//!
//! A drift between the crates here would silently stop invalidations (the relay would map a key
//! the API never reads), so every `PK`/`SK` is built and parsed through these functions.
//!
//! | item | `PK` | `SK` |
//! |---|---|---|
//! | profile | `USER#<user_id>` | `PROFILE` |
//! | role definition | `ROLE#<role_id>` | `DEFINITION` |
//! | role mapping | `ROLE#<role_id>` | `JWT_MAPPING#<idp role>` |
//! | heartbeat (each table), slot `0` | `HEARTBEAT#<writer>` | `HEARTBEAT` |
//! | heartbeat (each table), slot `n` | `HEARTBEAT#<writer>#<n>` | `HEARTBEAT` |
//!
//! A table's stream has one shard per partition, and a heartbeat item proves only the shard its
//! key hashes to; so the writer writes one item (a *slot*) per open shard, and tasks require a
//! recent tick of every slot the writer announces.
//!
//! Heartbeat items live outside the user and role key spaces: no `GetItem` of a user or a role can
//! reach them, and the role catalogue only reads `ROLE#` definitions.

/// The users table's name where none is configured (`USERS_TABLE`): the template's, for its
/// default `NamePrefix`. Every component defaults to this one constant.
pub const DEFAULT_USERS_TABLE: &str = "staleless-users";
/// The roles table's name where none is configured (`ROLES_TABLE`), as [`DEFAULT_USERS_TABLE`].
pub const DEFAULT_ROLES_TABLE: &str = "staleless-app-roles";

/// The partition key attribute of both tables.
pub const PARTITION_KEY: &str = "PK";
/// The sort key attribute of both tables.
pub const SORT_KEY: &str = "SK";

/// Partition key prefix of user items.
pub const USER_PK_PREFIX: &str = "USER#";
/// Sort key of a profile item.
pub const PROFILE_SK: &str = "PROFILE";
/// Partition key prefix of role items (definition and mapping items alike).
pub const ROLE_PK_PREFIX: &str = "ROLE#";
/// Sort key of a role definition item.
pub const DEFINITION_SK: &str = "DEFINITION";
/// Sort key prefix of a role's mapping items (`JWT_MAPPING#<idp role>`).
pub const JWT_MAPPING_SK_PREFIX: &str = "JWT_MAPPING#";
/// `GSI1PK` prefix of mapping items (`JWT_ROLE#<idp role>`).
pub const JWT_ROLE_GSI_PREFIX: &str = "JWT_ROLE#";
/// Partition key prefix of heartbeat items.
pub const HEARTBEAT_PK_PREFIX: &str = "HEARTBEAT#";
/// Sort key of a heartbeat item.
pub const HEARTBEAT_SK: &str = "HEARTBEAT";
/// The heartbeat writer's name when none is configured: one writer per deployment.
pub const DEFAULT_HEARTBEAT_WRITER: &str = "staleless";
/// Attribute of a heartbeat item holding the write time, ms since the Unix epoch.
pub const HEARTBEAT_WRITTEN_AT_ATTRIBUTE: &str = "writtenAtMs";
/// Attribute of a heartbeat item holding the writer's interval in ms.
pub const HEARTBEAT_INTERVAL_ATTRIBUTE: &str = "intervalMs";
/// Attribute of a heartbeat item listing every slot its writer writes into that table (a list of
/// strings): the slots a task requires recent ticks of.
pub const HEARTBEAT_SLOTS_ATTRIBUTE: &str = "slots";
/// Attribute of a heartbeat item saying whether those slots cover every open shard of the
/// table's stream, as the writer last found them (a boolean).
pub const HEARTBEAT_COVERED_ATTRIBUTE: &str = "covered";
/// The slot of the item `HEARTBEAT#<writer>`, the only one of writers that predate slots.
pub const FIRST_HEARTBEAT_SLOT: &str = "0";
/// The sparse index of the app-roles table holding exactly the role definitions (keyed on
/// `displayName`, which only definitions carry): the role catalogue is listed from it in
/// O(number of roles), never by scanning a table that also holds per-user items.
pub const ROLE_DEFINITION_INDEX: &str = "RoleDefinitionIndex";
/// Attribute of user items holding the user id.
pub const USER_ID_ATTRIBUTE: &str = "userId";

/// `USER#<user_id>`.
#[must_use]
pub fn user_pk(user_id: &str) -> String {
    format!("{USER_PK_PREFIX}{user_id}")
}

/// `ROLE#<role_id>`.
#[must_use]
pub fn role_pk(role_id: &str) -> String {
    format!("{ROLE_PK_PREFIX}{role_id}")
}

/// `JWT_MAPPING#<idp role>`, the sort key of a role's mapping item.
#[must_use]
pub fn jwt_mapping_sk(idp_role: &str) -> String {
    format!("{JWT_MAPPING_SK_PREFIX}{idp_role}")
}

/// `JWT_ROLE#<idp role>`, the `GSI1PK` of a mapping item.
#[must_use]
pub fn jwt_role_gsi_pk(idp_role: &str) -> String {
    format!("{JWT_ROLE_GSI_PREFIX}{idp_role}")
}

/// `HEARTBEAT#<writer>`.
#[must_use]
pub fn heartbeat_pk(writer: &str) -> String {
    format!("{HEARTBEAT_PK_PREFIX}{writer}")
}

/// The heartbeat item of `writer`'s `slot`: `HEARTBEAT#<writer>` for slot `0`, else
/// `HEARTBEAT#<writer>#<slot>`.
#[must_use]
pub fn heartbeat_slot_pk(writer: &str, slot: &str) -> String {
    if slot == FIRST_HEARTBEAT_SLOT {
        heartbeat_pk(writer)
    } else {
        format!("{HEARTBEAT_PK_PREFIX}{writer}#{slot}")
    }
}

/// The writer and slot of the `<writer>[#<slot>]` part of a heartbeat key.
#[must_use]
pub fn heartbeat_writer_and_slot(name: &str) -> (&str, &str) {
    name.split_once('#').unwrap_or((name, FIRST_HEARTBEAT_SLOT))
}

/// What a partition key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey<'a> {
    /// `USER#<id>` with a non-empty id.
    User(&'a str),
    /// `ROLE#<id>` with a non-empty id (not checked against [`is_valid_role_id`]: a role written
    /// by a script with an odd id must still be invalidated).
    Role(&'a str),
    /// `HEARTBEAT#<writer>`.
    Heartbeat(&'a str),
    /// A known prefix with nothing after it.
    Empty(&'static str),
    /// Anything else (tools, preferences, other services' items).
    Other,
}

/// Reads a partition key.
#[must_use]
pub fn parse_pk(pk: &str) -> PartitionKey<'_> {
    let (prefix, rest) = if let Some(rest) = pk.strip_prefix(USER_PK_PREFIX) {
        (USER_PK_PREFIX, rest)
    } else if let Some(rest) = pk.strip_prefix(ROLE_PK_PREFIX) {
        (ROLE_PK_PREFIX, rest)
    } else if let Some(rest) = pk.strip_prefix(HEARTBEAT_PK_PREFIX) {
        (HEARTBEAT_PK_PREFIX, rest)
    } else {
        return PartitionKey::Other;
    };
    match (prefix, rest.is_empty()) {
        (_, true) => PartitionKey::Empty(prefix),
        (USER_PK_PREFIX, false) => PartitionKey::User(rest),
        (ROLE_PK_PREFIX, false) => PartitionKey::Role(rest),
        _ => PartitionKey::Heartbeat(rest),
    }
}

/// `staleless-users` from `arn:aws:dynamodb:<region>:<account>:table/staleless-users/stream/<label>`.
#[must_use]
pub fn table_of_stream_arn(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":table/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Whether `role_id` matches `^[a-z][a-z0-9_]{2,49}$`, the data model's rule for role ids.
#[must_use]
pub fn is_valid_role_id(role_id: &str) -> bool {
    let mut chars = role_id.chars();
    (3..=50).contains(&role_id.len())
        && chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_parser() {
        assert_eq!(parse_pk(&user_pk("u-1")), PartitionKey::User("u-1"));
        assert_eq!(parse_pk(&role_pk("staff")), PartitionKey::Role("staff"));
        assert_eq!(
            parse_pk(&heartbeat_pk("staleless")),
            PartitionKey::Heartbeat("staleless")
        );
        assert_eq!(parse_pk("USER#"), PartitionKey::Empty(USER_PK_PREFIX));
        assert_eq!(parse_pk("TOOL#search"), PartitionKey::Other);
        assert_eq!(parse_pk("user#u-1"), PartitionKey::Other, "prefixes are case-sensitive");
    }

    #[test]
    fn heartbeat_slots_round_trip_and_slot_zero_is_the_old_key() {
        assert_eq!(heartbeat_slot_pk("w", "0"), heartbeat_pk("w"));
        for slot in ["0", "3", "17"] {
            let pk = heartbeat_slot_pk("w", slot);
            let PartitionKey::Heartbeat(name) = parse_pk(&pk) else {
                panic!("{pk} is a heartbeat key");
            };
            assert_eq!(heartbeat_writer_and_slot(name), ("w", slot));
        }
    }

    #[test]
    fn heartbeat_keys_are_outside_user_and_role_key_spaces() {
        let pk = heartbeat_pk(DEFAULT_HEARTBEAT_WRITER);
        assert!(!pk.starts_with(USER_PK_PREFIX) && !pk.starts_with(ROLE_PK_PREFIX));
    }

    #[test]
    fn the_role_id_rule() {
        for valid in ["abc", "system_admin", "a1_", &"a".repeat(50)] {
            assert!(is_valid_role_id(valid), "{valid}");
        }
        for invalid in ["", "ab", "Abc", "1abc", "ab-c", "abc ", &"a".repeat(51), "ab\u{e9}"] {
            assert!(!is_valid_role_id(invalid), "{invalid}");
        }
    }
}
