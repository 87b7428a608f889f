//! Which key does a stream record invalidate? Pure functions over `aws_lambda_events` records,
//! no IO, no clock: the relay and the benchmark call them alike.
//!
//! - [`Mapper::map`] turns one record into a [`Mapped`]: a [`Change`] to publish (a key to
//!   invalidate, or a heartbeat to relay as a tick), or a [`SkipReason`] (no-op write, item the
//!   caches do not hold, malformed record).
//! - [`Coalescer`] folds a batch's changes into one [`PendingKey`] per (source, kind, key), keeping
//!   the latest sequence number and remembering the first record that needed the key, which is
//!   what partial batch failures report.
//!
//! Keys are parsed with the shared scheme of [`staleless_protocol::keys`]. Records borrow from the
//! event: nothing is allocated per record until a key is first seen.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use serde_dynamo::{AttributeValue, Item};
use staleless_protocol::keys::{
    self, HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_WRITTEN_AT_ATTRIBUTE, PARTITION_KEY, PartitionKey, USER_ID_ATTRIBUTE,
};
use staleless_protocol::{KeyVersion, SequenceNumber, Source, compare_sequence_numbers};

/// `userIdentity.principalId` of deletions made by DynamoDB's TTL process.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-streams.html>
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// What a [`Change`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A user or role whose cached entries are stale.
    Key,
    /// A heartbeat item: published as a tick, the proof that the path works up to its time.
    Heartbeat,
}

/// A record that invalidates one key, or a heartbeat to relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// A key or a heartbeat.
    pub kind: ChangeKind,
    /// The table the record came from.
    pub source: Source,
    /// The user id or role id (the writer's name for a heartbeat).
    pub id: &'a str,
    /// The record's stream position.
    pub seq: &'a str,
    /// The record's approximate creation time, ms since the epoch (for a heartbeat: the time
    /// the writer stamped on the item).
    pub at_ms: i64,
    /// A deletion by DynamoDB's TTL process rather than by a client; counted apart in the logs.
    pub ttl_expiry: bool,
    /// For a heartbeat: the writer's interval in ms, when the item says.
    pub interval_ms: Option<u64>,
}

/// Why a record publishes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A MODIFY whose images differ only in ignored attributes, or not at all.
    NoOp,
    /// An item no cache holds (another key prefix, another table).
    Ignored(&'static str),
    /// A record the relay cannot read; logged with its sequence number and skipped, because
    /// failing the batch would block the shard for up to 24 hours.
    Malformed(&'static str),
}

/// What one record means for the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped<'a> {
    /// Publish this key.
    Invalidate(Change<'a>),
    /// Publish nothing.
    Skip(SkipReason),
}

/// The record → invalidation mapping of one deployment (table names, ignored attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    /// Records from this table are [`Source::Users`] changes.
    users_table: String,
    /// Records from this table are [`Source::Roles`] changes.
    roles_table: String,
    /// Attributes whose changes alone are no-ops.
    ignored_attributes: Vec<String>,
}

impl Mapper {
    /// A mapper for these tables and ignored attributes.
    #[must_use]
    pub fn new(
        users_table: impl Into<String>,
        roles_table: impl Into<String>,
        ignored_attributes: Vec<String>,
    ) -> Self {
        Self {
            users_table: users_table.into(),
            roles_table: roles_table.into(),
            ignored_attributes,
        }
    }

    /// The mapper of a [`RelayConfig`](crate::config::RelayConfig).
    #[must_use]
    pub fn from_config(config: &crate::config::RelayConfig) -> Self {
        Self::new(
            &config.users_table,
            &config.roles_table,
            config.ignored_attributes.clone(),
        )
    }

    /// Maps one record. `received_at_ms` stands in for a missing `ApproximateCreationDateTime`.
    #[must_use]
    pub fn map<'a>(&self, record: &'a EventRecord, received_at_ms: i64) -> Mapped<'a> {
        match self.try_map(record, received_at_ms) {
            Ok(mapped) => mapped,
            Err(reason) => Mapped::Skip(reason),
        }
    }

    fn try_map<'a>(&self, record: &'a EventRecord, received_at_ms: i64) -> Result<Mapped<'a>, SkipReason> {
        let change = &record.change;
        let seq = change
            .sequence_number
            .as_deref()
            .filter(|seq| !seq.is_empty())
            .ok_or(SkipReason::Malformed("no dynamodb.SequenceNumber"))?;
        let operation = match record.event_name.as_str() {
            "INSERT" => Operation::Insert,
            "MODIFY" => Operation::Modify,
            "REMOVE" => Operation::Remove,
            _ => return Err(SkipReason::Malformed("eventName is not INSERT, MODIFY or REMOVE")),
        };
        let table = record
            .event_source_arn
            .as_deref()
            .and_then(table_of_stream_arn)
            .or(record.table_name.as_deref())
            .ok_or(SkipReason::Malformed("no table name in eventSourceARN"))?;
        let source = if table == self.users_table {
            Source::Users
        } else if table == self.roles_table {
            Source::Roles
        } else {
            return Err(SkipReason::Ignored("record from a table the relay does not serve"));
        };

        let created_ms = change.approximate_creation_date_time.timestamp_millis();
        // The field defaults to the epoch when Lambda leaves it out.
        let created_ms = if created_ms > 0 { created_ms } else { received_at_ms };

        if let Some(AttributeValue::S(pk)) = change.keys_pk()
            && let PartitionKey::Heartbeat(writer) = keys::parse_pk(pk)
        {
            return Ok(heartbeat(operation, source, writer, seq, &change.new_image, created_ms));
        }

        let id = match source {
            Source::Users => user_id(change.keys_pk(), &change.new_image, &change.old_image)?,
            Source::Roles => role_id(change.keys_pk())?,
        };

        if operation == Operation::Modify
            && !change.old_image.is_empty()
            && !change.new_image.is_empty()
            && !differs_beyond(&change.old_image, &change.new_image, &self.ignored_attributes)
        {
            return Ok(Mapped::Skip(SkipReason::NoOp));
        }

        Ok(Mapped::Invalidate(Change {
            kind: ChangeKind::Key,
            source,
            id,
            seq,
            at_ms: created_ms,
            interval_ms: None,
            ttl_expiry: operation == Operation::Remove
                && record
                    .user_identity
                    .as_ref()
                    .is_some_and(|identity| identity.type_ == "Service" && identity.principal_id == TTL_PRINCIPAL),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    Modify,
    Remove,
}

/// The `PK` of a record's key, or of its images when `Keys` is absent.
trait KeysPk {
    fn keys_pk(&self) -> Option<&AttributeValue>;
}

impl KeysPk for aws_lambda_events::event::dynamodb::StreamRecord {
    fn keys_pk(&self) -> Option<&AttributeValue> {
        self.keys
            .get(PARTITION_KEY)
            .or_else(|| self.new_image.get(PARTITION_KEY))
            .or_else(|| self.old_image.get(PARTITION_KEY))
    }
}

/// A heartbeat record: a tick stamped with the writer's time (the record's when the item has none).
/// Only writes prove the path; a heartbeat item deleted by hand publishes nothing.
fn heartbeat<'a>(
    operation: Operation,
    source: Source,
    writer: &'a str,
    seq: &'a str,
    new_image: &Item,
    created_ms: i64,
) -> Mapped<'a> {
    if operation == Operation::Remove {
        return Mapped::Skip(SkipReason::Ignored("heartbeat item removed"));
    }
    let number = |attribute: &str| match new_image.get(attribute) {
        Some(AttributeValue::N(number)) => number.parse::<i64>().ok().filter(|value| *value > 0),
        _ => None,
    };
    Mapped::Invalidate(Change {
        kind: ChangeKind::Heartbeat,
        source,
        id: writer,
        seq,
        at_ms: number(HEARTBEAT_WRITTEN_AT_ATTRIBUTE).unwrap_or(created_ms),
        ttl_expiry: false,
        interval_ms: number(HEARTBEAT_INTERVAL_ATTRIBUTE).and_then(|ms| u64::try_from(ms).ok()),
    })
}

/// `staleless-users` from `arn:aws:dynamodb:<region>:<account>:table/staleless-users/stream/<label>`.
#[must_use]
pub fn table_of_stream_arn(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":table/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

fn user_id<'a>(pk: Option<&'a AttributeValue>, new: &'a Item, old: &'a Item) -> Result<&'a str, SkipReason> {
    if let Some(AttributeValue::S(pk)) = pk {
        match keys::parse_pk(pk) {
            PartitionKey::User(id) => return Ok(id),
            PartitionKey::Empty(keys::USER_PK_PREFIX) => {}
            _ => return Err(SkipReason::Ignored("users-table item without a USER# partition key")),
        }
    }
    // The key does not carry the id (absent, not a string, or a bare `USER#`): the item's own
    // `userId` still names the user whose cache entry is stale.
    [new, old]
        .into_iter()
        .find_map(|image| match image.get(USER_ID_ATTRIBUTE) {
            Some(AttributeValue::S(id)) if !id.is_empty() => Some(id.as_str()),
            _ => None,
        })
        .ok_or(SkipReason::Malformed(
            "no USER#<id> partition key and no userId attribute",
        ))
}

fn role_id(pk: Option<&AttributeValue>) -> Result<&str, SkipReason> {
    match pk {
        Some(AttributeValue::S(pk)) => match keys::parse_pk(pk) {
            PartitionKey::Role(id) => Ok(id),
            PartitionKey::Empty(keys::ROLE_PK_PREFIX) => {
                Err(SkipReason::Malformed("ROLE# partition key without a role id"))
            }
            // Tools, per-user preferences and anything else in the roles table: no role cache holds them.
            _ => Err(SkipReason::Ignored("roles-table item without a ROLE# partition key")),
        },
        Some(_) => Err(SkipReason::Malformed("partition key is not a string")),
        None => Err(SkipReason::Malformed("no PK in the record's keys")),
    }
}

/// Whether `old` and `new` differ in any attribute not in `ignored`.
///
/// Values are compared structurally: a set in another order or `1.0` against `1` counts as a
/// difference, which only ever costs one unnecessary invalidation.
#[must_use]
pub fn differs_beyond(old: &Item, new: &Item, ignored: &[String]) -> bool {
    let relevant = |name: &String| !ignored.iter().any(|ignored| ignored == name);
    let mut relevant_in_new = 0usize;
    for (name, value) in new.iter().filter(|(name, _)| relevant(name)) {
        relevant_in_new += 1;
        if old.get(name) != Some(value) {
            return true;
        }
    }
    old.keys().filter(|name| relevant(name)).count() != relevant_in_new
}

/// One key (or heartbeat) of a batch that must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey<'a> {
    /// A key to invalidate, or a heartbeat to relay as a tick.
    pub kind: ChangeKind,
    /// The table it belongs to.
    pub source: Source,
    /// The user id or role id.
    pub id: &'a str,
    /// The latest (numerically highest) sequence number seen for it in the batch.
    pub seq: &'a str,
    /// Creation time of that latest record.
    pub at_ms: i64,
    /// For a heartbeat, the writer's interval (from the latest record).
    pub interval_ms: Option<u64>,
    /// Position in the batch of the first record that needed this key: if the key is not
    /// published, that record and every later one must be retried. For a heartbeat it is the
    /// latest heartbeat record instead, so its tick is published after every key of the records
    /// before it: a tick must never vouch for a change not yet sent.
    pub first_record: usize,
}

impl PendingKey<'_> {
    /// The wire form.
    #[must_use]
    pub fn key_version(&self) -> KeyVersion {
        KeyVersion {
            id: self.id.to_owned(),
            seq: SequenceNumber::from(self.seq),
            at_ms: self.at_ms,
        }
    }
}

/// Folds a batch's changes into one [`PendingKey`] per (source, key).
#[derive(Debug, Default)]
pub struct Coalescer<'a> {
    /// Index into `keys` by (source, kind, id).
    index: HashMap<(Source, ChangeKind, &'a str), usize>,
    /// In order of first appearance, hence sorted by `first_record`.
    keys: Vec<PendingKey<'a>>,
}

impl<'a> Coalescer<'a> {
    /// An empty coalescer sized for about `records` records.
    #[must_use]
    pub fn with_capacity(records: usize) -> Self {
        Self {
            index: HashMap::with_capacity(records),
            keys: Vec::with_capacity(records),
        }
    }

    /// Adds the change of the record at `position` in the batch.
    pub fn add(&mut self, change: Change<'a>, position: usize) {
        match self.index.get(&(change.source, change.kind, change.id)) {
            Some(&slot) => {
                let key = &mut self.keys[slot];
                if compare_sequence_numbers(change.seq, key.seq).is_gt() {
                    key.seq = change.seq;
                    key.at_ms = change.at_ms;
                    key.interval_ms = change.interval_ms;
                    if change.kind == ChangeKind::Heartbeat {
                        key.first_record = position;
                    }
                }
            }
            None => {
                self.index
                    .insert((change.source, change.kind, change.id), self.keys.len());
                self.keys.push(PendingKey {
                    kind: change.kind,
                    source: change.source,
                    id: change.id,
                    seq: change.seq,
                    at_ms: change.at_ms,
                    interval_ms: change.interval_ms,
                    first_record: position,
                });
            }
        }
    }

    /// The distinct keys, ordered by the first record that needed them.
    #[must_use]
    pub fn into_keys(mut self) -> Vec<PendingKey<'a>> {
        // A heartbeat's position moves to its latest record; keep the order the relay relies on.
        self.keys.sort_by_key(|key| key.first_record);
        self.keys
    }
}

/// Counts of a batch's records by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingCounts {
    /// Records that invalidate a key.
    pub invalidating: usize,
    /// Heartbeat records (published as ticks).
    pub heartbeats: usize,
    /// Of those, deletions by the TTL process.
    pub ttl_expiries: usize,
    /// No-op MODIFY records.
    pub no_op: usize,
    /// Records of items no cache holds.
    pub ignored: usize,
    /// Records that could not be read.
    pub malformed: usize,
}

/// Maps and coalesces a whole batch, calling `on_skip(position, record, reason)` for each record
/// that publishes nothing (the relay logs malformed ones there).
pub fn map_batch<'a>(
    mapper: &Mapper,
    records: &'a [EventRecord],
    received_at_ms: i64,
    mut on_skip: impl FnMut(usize, &'a EventRecord, SkipReason),
) -> (Vec<PendingKey<'a>>, MappingCounts) {
    let mut counts = MappingCounts::default();
    let mut coalescer = Coalescer::with_capacity(records.len());
    for (position, record) in records.iter().enumerate() {
        match mapper.map(record, received_at_ms) {
            Mapped::Invalidate(change) => {
                match change.kind {
                    ChangeKind::Key => counts.invalidating += 1,
                    ChangeKind::Heartbeat => counts.heartbeats += 1,
                }
                counts.ttl_expiries += usize::from(change.ttl_expiry);
                coalescer.add(change, position);
            }
            Mapped::Skip(reason) => {
                match reason {
                    SkipReason::NoOp => counts.no_op += 1,
                    SkipReason::Ignored(_) => counts.ignored += 1,
                    SkipReason::Malformed(_) => counts.malformed += 1,
                }
                on_skip(position, record, reason);
            }
        }
    }
    (coalescer.into_keys(), counts)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::dynamodb::Event;

    use super::*;

    pub(crate) fn mapper() -> Mapper {
        Mapper::new("staleless-users", "staleless-app-roles", vec!["lastLoginAt".into()])
    }

    fn event(json: &str) -> Event {
        serde_json::from_str(json).expect("fixture is a Lambda DynamoDB event")
    }

    fn map_all(json: &str) -> Vec<Mapped<'static>> {
        // Leaked (a few KiB per test) so the borrowed results can outlive this helper.
        let event: &'static Event = Box::leak(Box::new(event(json)));
        event.records.iter().map(|record| mapper().map(record, 7)).collect()
    }

    fn only(json: &str) -> Mapped<'static> {
        let mapped = map_all(json);
        assert_eq!(mapped.len(), 1, "{mapped:?}");
        mapped[0]
    }

    #[test]
    fn a_user_insert_invalidates_the_user() {
        assert_eq!(
            only(include_str!("../tests/fixtures/users_insert.json")),
            Mapped::Invalidate(Change {
                kind: ChangeKind::Key,
                source: Source::Users,
                id: "u-1",
                seq: "4100000000000000000001",
                at_ms: 1_732_500_000_000,
                ttl_expiry: false,
                interval_ms: None,
            })
        );
    }

    #[test]
    fn a_status_change_invalidates() {
        let Mapped::Invalidate(change) = only(include_str!("../tests/fixtures/users_modify_status.json")) else {
            panic!("a status change must invalidate");
        };
        assert_eq!((change.source, change.id), (Source::Users, "u-1"));
    }

    #[test]
    fn a_last_login_only_modify_is_a_no_op() {
        assert_eq!(
            only(include_str!("../tests/fixtures/users_modify_last_login_only.json")),
            Mapped::Skip(SkipReason::NoOp)
        );
    }

    #[test]
    fn an_identical_rewrite_is_a_no_op() {
        assert_eq!(
            only(include_str!("../tests/fixtures/users_modify_identical.json")),
            Mapped::Skip(SkipReason::NoOp)
        );
    }

    #[test]
    fn with_nothing_ignored_a_last_login_change_invalidates() {
        let event = event(include_str!("../tests/fixtures/users_modify_last_login_only.json"));
        let mapper = Mapper::new("staleless-users", "staleless-app-roles", Vec::new());
        assert!(matches!(mapper.map(&event.records[0], 0), Mapped::Invalidate(_)));
    }

    #[test]
    fn a_delete_invalidates() {
        let Mapped::Invalidate(change) = only(include_str!("../tests/fixtures/users_remove.json")) else {
            panic!("a delete must invalidate");
        };
        assert_eq!((change.id, change.ttl_expiry), ("u-1", false));
    }

    #[test]
    fn a_ttl_delete_invalidates_and_is_recognised() {
        let Mapped::Invalidate(change) = only(include_str!("../tests/fixtures/users_ttl_remove.json")) else {
            panic!("a TTL delete must invalidate");
        };
        assert_eq!((change.id, change.ttl_expiry), ("u-2", true));
    }

    #[test]
    fn keys_only_records_invalidate_conservatively() {
        let mapped = map_all(include_str!("../tests/fixtures/users_keys_only.json"));
        assert_eq!(mapped.len(), 2);
        for record in mapped {
            assert!(
                matches!(record, Mapped::Invalidate(Change { id: "u-3", .. })),
                "{record:?}"
            );
        }
    }

    #[test]
    fn the_user_id_falls_back_to_the_attribute() {
        let Mapped::Invalidate(change) = only(include_str!("../tests/fixtures/users_user_id_fallback.json")) else {
            panic!("must invalidate");
        };
        assert_eq!(change.id, "u-7");
    }

    #[test]
    fn a_role_edit_coalesces_to_one_key_with_the_latest_sequence_number() {
        let event = event(include_str!("../tests/fixtures/roles_edit.json"));
        assert_eq!(event.records.len(), 4, "definition plus three mapping items");
        let (keys, counts) = map_batch(&mapper(), &event.records, 0, |_, _, reason| {
            panic!("skipped: {reason:?}")
        });
        assert_eq!(counts.invalidating, 4);
        assert_eq!(
            keys,
            vec![PendingKey {
                kind: ChangeKind::Key,
                source: Source::Roles,
                id: "staff",
                seq: "4200000000000000000104",
                at_ms: 1_732_500_003_000,
                interval_ms: None,
                first_record: 0,
            }]
        );
    }

    #[test]
    fn tools_and_user_preferences_in_the_roles_table_are_ignored() {
        let mapped = map_all(include_str!("../tests/fixtures/roles_ignored.json"));
        assert_eq!(mapped.len(), 2);
        for record in mapped {
            assert!(matches!(record, Mapped::Skip(SkipReason::Ignored(_))), "{record:?}");
        }
    }

    #[test]
    fn malformed_records_are_skipped_with_a_reason() {
        let event = event(include_str!("../tests/fixtures/malformed.json"));
        let mut skipped = Vec::new();
        let (keys, counts) = map_batch(&mapper(), &event.records, 0, |position, _, reason| {
            skipped.push((position, reason));
        });
        let ids: Vec<&str> = keys.iter().map(|key| key.id).collect();
        assert_eq!(ids, ["u-ok", "u-ok-too"]);
        assert_eq!(counts.malformed, 5, "{skipped:?}");
        assert_eq!(counts.ignored, 1, "{skipped:?}");
        assert!(skipped.iter().all(|(_, reason)| !matches!(reason, SkipReason::NoOp)));
    }

    #[test]
    fn the_latest_sequence_number_wins_numerically() {
        let mut coalescer = Coalescer::default();
        let change = |seq, at_ms| Change {
            kind: ChangeKind::Key,
            source: Source::Users,
            id: "u-1",
            seq,
            at_ms,
            ttl_expiry: false,
            interval_ms: None,
        };
        coalescer.add(change("99", 1), 0);
        coalescer.add(change("100", 2), 1);
        coalescer.add(change("98", 3), 2);
        let keys = coalescer.into_keys();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].seq, keys[0].at_ms, keys[0].first_record), ("100", 2, 0));
    }

    #[test]
    fn the_same_id_in_both_tables_is_two_keys() {
        let mut coalescer = Coalescer::default();
        for (position, source) in [Source::Users, Source::Roles].into_iter().enumerate() {
            coalescer.add(
                Change {
                    kind: ChangeKind::Key,
                    source,
                    id: "x",
                    seq: "1",
                    at_ms: 0,
                    ttl_expiry: false,
                    interval_ms: None,
                },
                position,
            );
        }
        assert_eq!(coalescer.into_keys().len(), 2);
    }

    #[test]
    fn heartbeats_become_one_tick_per_table_placed_after_the_changes_before_them() {
        let event: Event = event(include_str!("../tests/fixtures/heartbeats.json"));
        let (keys, counts) = map_batch(&mapper(), &event.records, 7, |_, _, reason| {
            panic!("nothing is skipped: {reason:?}");
        });
        assert_eq!((counts.heartbeats, counts.invalidating), (3, 1));
        assert_eq!(
            keys[1].interval_ms,
            Some(5_000),
            "the writer's interval travels with the tick"
        );
        let summary: Vec<_> = keys
            .iter()
            .map(|key| (key.kind, key.source, key.id, key.at_ms, key.first_record))
            .collect();
        assert_eq!(
            summary,
            [
                (ChangeKind::Key, Source::Users, "u-1", 1_732_500_001_000, 1),
                // The latest users heartbeat, stamped with the writer's time, after the user change.
                (ChangeKind::Heartbeat, Source::Users, "staleless", 1_732_500_005_100, 2),
                // No writtenAtMs: the record's own creation time.
                (ChangeKind::Heartbeat, Source::Roles, "staleless", 1_732_500_006_000, 3),
            ]
        );
    }

    #[test]
    fn a_heartbeat_named_like_a_user_is_still_a_heartbeat_and_a_removed_one_is_ignored() {
        let mut event: Event = event(include_str!("../tests/fixtures/heartbeats.json"));
        let record = &mut event.records[0];
        assert!(matches!(
            mapper().map(record, 0),
            Mapped::Invalidate(Change {
                kind: ChangeKind::Heartbeat,
                ..
            })
        ));
        record.event_name = "REMOVE".to_owned();
        assert!(matches!(mapper().map(record, 0), Mapped::Skip(SkipReason::Ignored(_))));
    }

    #[test]
    fn table_names_come_from_stream_arns() {
        assert_eq!(
            table_of_stream_arn("arn:aws:dynamodb:us-east-1:123456789012:table/p-users/stream/2024-11-25T00:00:00.000"),
            Some("p-users")
        );
        assert_eq!(
            table_of_stream_arn("arn:aws:dynamodb:us-east-1:123456789012:table/"),
            None
        );
        assert_eq!(table_of_stream_arn("not an arn"), None);
    }
}

#[cfg(test)]
mod properties;
