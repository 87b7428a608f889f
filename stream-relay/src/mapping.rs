//! Which key does a stream record invalidate? Pure functions over `aws_lambda_events` records,
//! no IO, no clock: the relay and the benchmark call them alike.
//!
//! - [`Mapper::map`] turns one record into a [`Mapped`]: a [`Change`] to publish (a key to
//!   invalidate, or a heartbeat to relay as a tick), a [`Flush`] of a source's caches, or a
//!   [`SkipReason`] (no-op write, item the caches do not hold).
//! - [`Coalescer`] folds a batch's changes into one [`PendingKey`] per (source, kind, key) and its
//!   flushes into one [`PendingFlush`] per source, keeping the latest sequence number and
//!   remembering the first record that needed each, which is what partial batch failures report.
//!
//! A record of a watched table is never dropped: read only in part, it still invalidates the key
//! it names (with no sequence number, as the oldest change; with an unknown `eventName`, as a
//! change), and when it names no key it flushes its table's caches — every cache when it does not
//! say which table it is from (the function is subscribed to the configured streams only).
//!
//! Which tables are read and how a record's key becomes a cache key is configuration
//! ([`SourceTable`]); heartbeat keys are parsed with the shared scheme of
//! [`staleless_protocol::keys`]. Records borrow from the event and sources from the mapper:
//! nothing is allocated per record until a key is first seen.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use serde_dynamo::{AttributeValue, Item};
use staleless_protocol::keys::{
    self, HEARTBEAT_COVERED_ATTRIBUTE, HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_SLOTS_ATTRIBUTE,
    HEARTBEAT_WRITTEN_AT_ATTRIBUTE, PARTITION_KEY, PartitionKey, SORT_KEY,
};
use staleless_protocol::{KeyVersion, SequenceNumber, Source, compare_sequence_numbers};

use crate::config::SourceTable;

/// `userIdentity.principalId` of deletions made by DynamoDB's TTL process.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-streams.html>
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// The sequence number given to a record that has none: the lowest, so any record of the same key
/// that has one counts as later.
pub const MISSING_SEQUENCE_NUMBER: &str = "0";

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
    /// The source of the table the record came from.
    pub source: &'a Source,
    /// The cache key: the user id or role id (the writer's name for a heartbeat).
    pub id: &'a str,
    /// The record's stream position ([`MISSING_SEQUENCE_NUMBER`] when it has none).
    pub seq: &'a str,
    /// The record's approximate creation time, ms since the epoch (for a heartbeat: the time
    /// the writer stamped on the item).
    pub at_ms: i64,
    /// A deletion by DynamoDB's TTL process rather than by a client; counted apart in the logs.
    pub ttl_expiry: bool,
    /// For a heartbeat: the writer's interval in ms, when the item says.
    pub interval_ms: Option<u64>,
    /// For a heartbeat: the slots its writer writes and whether they cover the stream.
    pub announcement: Option<Announcement<'a>>,
    /// What could not be read of a record whose key could (no sequence number, an unknown
    /// `eventName`): the key is invalidated all the same, and the record logged and counted as
    /// malformed. Always `None` for a heartbeat: a tick never rests on a record read in part.
    pub defect: Option<&'static str>,
}

/// A record of a watched table that names no key the relay can read: the change is somewhere in
/// its table, so that table's caches are flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush<'a> {
    /// The table's source; `None` when the record does not say which table it is from, which
    /// flushes every cache.
    pub source: Option<&'a Source>,
    /// The table name the record gives, for the logs and the message's reason.
    pub table: Option<&'a str>,
    /// The record's stream position ([`MISSING_SEQUENCE_NUMBER`] when it has none).
    pub seq: &'a str,
    /// Why no key could be read.
    pub reason: &'static str,
}

/// Why a record publishes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A MODIFY whose images differ only in ignored attributes, or not at all.
    NoOp,
    /// An item no cache holds (another key prefix, another table).
    Ignored(&'static str),
    /// A heartbeat record read only in part (no sequence number, an unknown `eventName`): it
    /// names no cached key, and a tick must not vouch for the path on a record the relay could
    /// not read, so it publishes nothing (a missing tick only makes tasks read through).
    Malformed(&'static str),
}

/// What one record means for the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped<'a> {
    /// Publish this key.
    Invalidate(Change<'a>),
    /// Flush the caches of this record's table.
    Flush(Flush<'a>),
    /// Publish nothing.
    Skip(SkipReason),
}

impl Mapped<'_> {
    /// Why the record could be read only in part, whatever it publishes; `None` for a record
    /// read in full (an ignored or no-op one included).
    #[must_use]
    pub const fn malformed(&self) -> Option<&'static str> {
        match self {
            Self::Invalidate(change) => change.defect,
            Self::Flush(flush) => Some(flush.reason),
            Self::Skip(SkipReason::Malformed(why)) => Some(why),
            Self::Skip(SkipReason::NoOp | SkipReason::Ignored(_)) => None,
        }
    }
}

/// The record → invalidation mapping of one deployment: the tables it reads, one per source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    sources: Vec<SourceTable>,
}

impl Mapper {
    /// A mapper of the two built-in sources, `users` and `roles`, on these tables.
    #[must_use]
    pub fn new(
        users_table: impl Into<String>,
        roles_table: impl Into<String>,
        ignored_attributes: Vec<String>,
    ) -> Self {
        Self::with_sources(vec![
            SourceTable::users(users_table, ignored_attributes.clone()),
            SourceTable::roles(roles_table, ignored_attributes),
        ])
    }

    /// A mapper of these sources.
    #[must_use]
    pub const fn with_sources(sources: Vec<SourceTable>) -> Self {
        Self { sources }
    }

    /// The mapper of a [`RelayConfig`](crate::config::RelayConfig).
    #[must_use]
    pub fn from_config(config: &crate::config::RelayConfig) -> Self {
        Self::with_sources(config.sources.clone())
    }

    /// Every source, in configuration order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.iter().map(|table| &table.source)
    }

    /// Maps one record. `received_at_ms` stands in for a missing `ApproximateCreationDateTime`.
    #[must_use]
    pub fn map<'a>(&'a self, record: &'a EventRecord, received_at_ms: i64) -> Mapped<'a> {
        let change = &record.change;
        // Lambda always sends a sequence number and one of three event names; a record without
        // them may still name what changed, and is relayed all the same.
        let (seq, no_seq) = match change.sequence_number.as_deref().filter(|seq| !seq.is_empty()) {
            Some(seq) => (seq, None),
            None => (MISSING_SEQUENCE_NUMBER, Some("no dynamodb.SequenceNumber")),
        };
        let operation = match record.event_name.as_str() {
            "INSERT" => Operation::Insert,
            "MODIFY" => Operation::Modify,
            "REMOVE" => Operation::Remove,
            _ => Operation::Unknown,
        };
        let defect =
            no_seq.or((operation == Operation::Unknown).then_some("eventName is not INSERT, MODIFY or REMOVE"));
        let table = table_of_record(record);
        let Some(table) = table else {
            return Mapped::Flush(Flush {
                source: None,
                table,
                seq,
                reason: "no table name in eventSourceARN",
            });
        };
        let Some(rule) = self.sources.iter().find(|rule| rule.table == table) else {
            return Mapped::Skip(SkipReason::Ignored("record from a table the relay does not serve"));
        };
        let source = &rule.source;

        let created_ms = change.approximate_creation_date_time.timestamp_millis();
        // The field defaults to the epoch when Lambda leaves it out.
        let created_ms = if created_ms > 0 { created_ms } else { received_at_ms };

        if let Some(AttributeValue::S(pk)) = change.key_attribute(PARTITION_KEY)
            && let PartitionKey::Heartbeat(writer) = keys::parse_pk(pk)
        {
            return heartbeat(operation, defect, source, writer, seq, &change.new_image, created_ms);
        }

        let id = match cache_key(rule, change) {
            Ok(id) => id,
            Err(Unkeyed::Unrelated(why)) => return Mapped::Skip(SkipReason::Ignored(why)),
            Err(Unkeyed::Unreadable(reason)) => {
                return Mapped::Flush(Flush {
                    source: Some(source),
                    table: Some(table),
                    seq,
                    reason,
                });
            }
        };

        if operation == Operation::Modify
            && !change.old_image.is_empty()
            && !change.new_image.is_empty()
            && !differs_beyond(&change.old_image, &change.new_image, &rule.ignored_attributes)
        {
            return Mapped::Skip(SkipReason::NoOp);
        }

        Mapped::Invalidate(Change {
            kind: ChangeKind::Key,
            source,
            id,
            seq,
            at_ms: created_ms,
            interval_ms: None,
            announcement: None,
            ttl_expiry: operation == Operation::Remove
                && record
                    .user_identity
                    .as_ref()
                    .is_some_and(|identity| identity.type_ == "Service" && identity.principal_id == TTL_PRINCIPAL),
            defect,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    Modify,
    Remove,
    /// An `eventName` DynamoDB Streams does not document: a change of some kind, never a no-op.
    Unknown,
}

/// Why a record of a watched table yields no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unkeyed {
    /// An item of a key space no cache holds.
    Unrelated(&'static str),
    /// The record does not say which key changed.
    Unreadable(&'static str),
}

trait KeyAttribute {
    /// A key attribute from the record's `Keys`, or from its images when `Keys` lacks it.
    fn key_attribute(&self, name: &str) -> Option<&AttributeValue>;
}

impl KeyAttribute for aws_lambda_events::event::dynamodb::StreamRecord {
    fn key_attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.keys
            .get(name)
            .or_else(|| self.new_image.get(name))
            .or_else(|| self.old_image.get(name))
    }
}

/// A heartbeat record: a tick stamped with the writer's time (the record's when the item has none).
/// Only writes prove the path; a heartbeat item deleted by hand publishes nothing, and neither
/// does a heartbeat record read only in part.
fn heartbeat<'a>(
    operation: Operation,
    defect: Option<&'static str>,
    source: &'a Source,
    writer: &'a str,
    seq: &'a str,
    new_image: &'a Item,
    created_ms: i64,
) -> Mapped<'a> {
    if operation == Operation::Remove {
        return Mapped::Skip(SkipReason::Ignored("heartbeat item removed"));
    }
    if let Some(why) = defect {
        return Mapped::Skip(SkipReason::Malformed(why));
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
        announcement: Some(Announcement {
            slots: match new_image.get(HEARTBEAT_SLOTS_ATTRIBUTE) {
                Some(AttributeValue::L(slots)) => Some(slots.as_slice()),
                _ => None,
            },
            covered: match new_image.get(HEARTBEAT_COVERED_ATTRIBUTE) {
                Some(AttributeValue::Bool(covered)) => Some(*covered),
                _ => None,
            },
        }),
        defect: None,
    })
}

/// What a heartbeat item says besides its time: every slot its writer writes into the table, and
/// whether they cover every open shard of the stream. Passed on in the tick as the item says;
/// values of the wrong type are left out (the task then requires only the tick's own slot, or
/// takes the coverage as given, as for writers that predate slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// The item's `slots` list, when it is one.
    pub slots: Option<&'a [AttributeValue]>,
    /// The item's `covered` flag, when it is a boolean.
    pub covered: Option<bool>,
}

impl Announcement<'_> {
    /// The slots named as strings (other entries are left out).
    #[must_use]
    pub fn slot_names(&self) -> Option<Vec<String>> {
        self.slots.map(|slots| {
            slots
                .iter()
                .filter_map(|slot| match slot {
                    AttributeValue::S(name) => Some(name.clone()),
                    _ => None,
                })
                .collect()
        })
    }
}

/// The table a stream ARN belongs to: the one rule, shared with the tasks (which read it from
/// give-up messages).
pub use staleless_protocol::keys::table_of_stream_arn;

/// The table a record says it comes from: the one of its `eventSourceARN`, else its `tableName`.
#[must_use]
pub fn table_of_record(record: &EventRecord) -> Option<&str> {
    record
        .event_source_arn
        .as_deref()
        .and_then(table_of_stream_arn)
        .or(record.table_name.as_deref())
        .filter(|table| !table.is_empty())
}

/// The cache key a record of `rule`'s table names: the part of `PK` after the source's prefix,
/// or, when `PK` does not carry it (absent, not a string, the bare prefix), the id attribute of
/// either image.
fn cache_key<'a>(
    rule: &'a SourceTable,
    change: &'a aws_lambda_events::event::dynamodb::StreamRecord,
) -> Result<&'a str, Unkeyed> {
    let unkeyed = match change.key_attribute(PARTITION_KEY) {
        Some(AttributeValue::S(pk)) => match pk.strip_prefix(rule.pk_prefix.as_str()) {
            Some(id) if !id.is_empty() => {
                return match (&rule.sk_prefix, change.key_attribute(SORT_KEY)) {
                    (Some(prefix), Some(AttributeValue::S(sk))) if !sk.starts_with(prefix.as_str()) => {
                        Err(Unkeyed::Unrelated("item outside the source's sort key prefix"))
                    }
                    _ => Ok(id),
                };
            }
            Some(_) => "no cache key after the partition key prefix",
            // Tools, per-user preferences and anything else in the table: no cache holds them.
            None => return Err(Unkeyed::Unrelated("item outside the source's partition key prefix")),
        },
        Some(_) => "partition key is not a string",
        None => "no PK in the record's keys",
    };
    let Some(attribute) = rule.id_attribute.as_deref() else {
        return Err(Unkeyed::Unreadable(unkeyed));
    };
    [&change.new_image, &change.old_image]
        .into_iter()
        .find_map(|image| match image.get(attribute) {
            Some(AttributeValue::S(id)) if !id.is_empty() => Some(id.as_str()),
            _ => None,
        })
        .ok_or(Unkeyed::Unreadable(
            "no cache key in the partition key nor in the id attribute",
        ))
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
    /// The source of its table.
    pub source: &'a Source,
    /// The user id or role id.
    pub id: &'a str,
    /// The latest (numerically highest) sequence number seen for it in the batch.
    pub seq: &'a str,
    /// Creation time of that latest record.
    pub at_ms: i64,
    /// For a heartbeat, the writer's interval (from the latest record).
    pub interval_ms: Option<u64>,
    /// For a heartbeat, what its latest record announces.
    pub announcement: Option<Announcement<'a>>,
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

/// One flush of a batch that must be published: the records of one source (or of no named
/// table) that named no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFlush<'a> {
    /// The source whose caches to flush; `None` for every cache.
    pub source: Option<&'a Source>,
    /// The table name the first such record gave.
    pub table: Option<&'a str>,
    /// The latest (numerically highest) sequence number of those records.
    pub seq: &'a str,
    /// Position in the batch of the first record that needed the flush: like a key's, the record
    /// a failed publish reports, so a tick of a later record is never published before it.
    pub first_record: usize,
}

impl PendingFlush<'_> {
    /// The reason the flush message carries, for the logs of every task.
    #[must_use]
    pub fn reason(&self) -> String {
        format!(
            "unreadable stream record {} of {}",
            self.seq,
            self.table.unwrap_or("an unnamed table")
        )
    }
}

/// Folds a batch's changes into one [`PendingKey`] per (source, kind, key), and its flushes into
/// one [`PendingFlush`] per source.
#[derive(Debug, Default)]
pub struct Coalescer<'a> {
    /// Index into `keys` by (source, kind, id).
    index: HashMap<(&'a Source, ChangeKind, &'a str), usize>,
    /// In order of first appearance, hence sorted by `first_record`.
    keys: Vec<PendingKey<'a>>,
    /// At most one per source and one for every source, in order of first appearance.
    flushes: Vec<PendingFlush<'a>>,
}

impl<'a> Coalescer<'a> {
    /// An empty coalescer sized for about `records` records.
    #[must_use]
    pub fn with_capacity(records: usize) -> Self {
        Self {
            index: HashMap::with_capacity(records),
            keys: Vec::with_capacity(records),
            flushes: Vec::new(),
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
                    key.announcement = change.announcement;
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
                    announcement: change.announcement,
                    first_record: position,
                });
            }
        }
    }

    /// Adds the flush of the record at `position` in the batch.
    pub fn add_flush(&mut self, flush: Flush<'a>, position: usize) {
        match self.flushes.iter_mut().find(|pending| pending.source == flush.source) {
            Some(pending) => {
                if compare_sequence_numbers(flush.seq, pending.seq).is_gt() {
                    pending.seq = flush.seq;
                }
            }
            None => self.flushes.push(PendingFlush {
                source: flush.source,
                table: flush.table,
                seq: flush.seq,
                first_record: position,
            }),
        }
    }

    /// The distinct keys and the flushes, each ordered by the first record that needed them.
    #[must_use]
    pub fn finish(mut self) -> (Vec<PendingKey<'a>>, Vec<PendingFlush<'a>>) {
        // A heartbeat's position moves to its latest record; keep the order the relay relies on.
        self.keys.sort_by_key(|key| key.first_record);
        (self.keys, self.flushes)
    }
}

/// Counts of a batch's records by outcome: each record is counted once in the first six, and
/// `read_in_part` counts across them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingCounts {
    /// Records that invalidate a key.
    pub invalidating: usize,
    /// Heartbeat records (published as ticks).
    pub heartbeats: usize,
    /// Records of a watched table that name no key: each needs a flush of its table's caches.
    pub flushing: usize,
    /// No-op MODIFY records.
    pub no_op: usize,
    /// Records of items no cache holds.
    pub ignored: usize,
    /// Heartbeat records read only in part, skipped.
    pub malformed: usize,
    /// Of the invalidating records, deletions by the TTL process.
    pub ttl_expiries: usize,
    /// Records read only in part ([`Mapped::malformed`]), whatever they publish.
    pub read_in_part: usize,
}

/// What a batch must publish, and how its records were counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedBatch<'a> {
    /// The distinct keys and heartbeats, ordered by the first record that needed them.
    pub keys: Vec<PendingKey<'a>>,
    /// The flushes, one per source at most (and one for every cache), in the same order.
    pub flushes: Vec<PendingFlush<'a>>,
    /// The records by outcome.
    pub counts: MappingCounts,
}

/// Maps and coalesces a whole batch, calling `inspect(position, record, mapped)` for each record
/// (the relay logs the skipped and malformed ones there).
pub fn map_batch<'a>(
    mapper: &'a Mapper,
    records: &'a [EventRecord],
    received_at_ms: i64,
    mut inspect: impl FnMut(usize, &'a EventRecord, Mapped<'a>),
) -> MappedBatch<'a> {
    let mut counts = MappingCounts::default();
    let mut coalescer = Coalescer::with_capacity(records.len());
    for (position, record) in records.iter().enumerate() {
        let mapped = mapper.map(record, received_at_ms);
        counts.read_in_part += usize::from(mapped.malformed().is_some());
        match mapped {
            Mapped::Invalidate(change) => {
                match change.kind {
                    ChangeKind::Key => counts.invalidating += 1,
                    ChangeKind::Heartbeat => counts.heartbeats += 1,
                }
                counts.ttl_expiries += usize::from(change.ttl_expiry);
                coalescer.add(change, position);
            }
            Mapped::Flush(flush) => {
                counts.flushing += 1;
                coalescer.add_flush(flush, position);
            }
            Mapped::Skip(SkipReason::NoOp) => counts.no_op += 1,
            Mapped::Skip(SkipReason::Ignored(_)) => counts.ignored += 1,
            Mapped::Skip(SkipReason::Malformed(_)) => counts.malformed += 1,
        }
        inspect(position, record, mapped);
    }
    let (keys, flushes) = coalescer.finish();
    MappedBatch { keys, flushes, counts }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::dynamodb::Event;

    use super::*;

    /// The mapper of the default deployment; static, as the mapped records borrow its sources.
    pub(crate) fn mapper() -> &'static Mapper {
        static MAPPER: std::sync::LazyLock<Mapper> = std::sync::LazyLock::new(|| {
            Mapper::new("staleless-users", "staleless-app-roles", vec!["lastLoginAt".into()])
        });
        &MAPPER
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
                source: &Source::USERS,
                id: "u-1",
                seq: "4100000000000000000001",
                at_ms: 1_732_500_000_000,
                ttl_expiry: false,
                interval_ms: None,
                announcement: None,
                defect: None,
            })
        );
    }

    #[test]
    fn a_status_change_invalidates() {
        let Mapped::Invalidate(change) = only(include_str!("../tests/fixtures/users_modify_status.json")) else {
            panic!("a status change must invalidate");
        };
        assert_eq!((change.source, change.id), (&Source::USERS, "u-1"));
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
        let MappedBatch { keys, counts, .. } = map_batch(mapper(), &event.records, 0, |_, _, mapped| {
            assert!(matches!(mapped, Mapped::Invalidate(_)), "{mapped:?}");
        });
        assert_eq!(counts.invalidating, 4);
        assert_eq!(
            keys,
            vec![PendingKey {
                kind: ChangeKind::Key,
                source: &Source::ROLES,
                id: "staff",
                seq: "4200000000000000000104",
                at_ms: 1_732_500_003_000,
                interval_ms: None,
                announcement: None,
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

    /// The record of `fixtures/unreadable.json` with this `eventID`, mapped.
    fn unreadable(event_id: &str) -> Mapped<'static> {
        let event: &'static Event = Box::leak(Box::new(event(UNREADABLE)));
        let record = event
            .records
            .iter()
            .find(|record| record.event_id == event_id)
            .expect("a record of the fixture");
        mapper().map(record, 7)
    }

    const UNREADABLE: &str = include_str!("../tests/fixtures/unreadable.json");

    #[test]
    fn a_user_key_that_is_not_a_string_falls_back_to_the_user_id() {
        let Mapped::Invalidate(change) = unreadable("e000401") else {
            panic!("the userId names the user");
        };
        assert_eq!((change.source, change.id, change.defect), (&Source::USERS, "u-9", None));
    }

    #[test]
    fn a_users_record_naming_no_user_flushes_the_users_caches() {
        assert_eq!(
            unreadable("e000402"),
            Mapped::Flush(Flush {
                source: Some(&Source::USERS),
                table: Some("staleless-users"),
                seq: "4300000000000000000402",
                reason: "no cache key in the partition key nor in the id attribute",
            })
        );
    }

    #[test]
    fn a_role_key_without_a_role_id_flushes_the_roles_caches() {
        let Mapped::Flush(flush) = unreadable("e000403") else {
            panic!("a flush");
        };
        assert_eq!(
            (flush.source, flush.table, flush.reason),
            (
                Some(&Source::ROLES),
                Some("staleless-app-roles"),
                "no cache key after the partition key prefix"
            )
        );
    }

    #[test]
    fn a_key_that_is_not_a_string_flushes_its_source() {
        let Mapped::Flush(flush) = unreadable("e000404") else {
            panic!("a flush");
        };
        assert_eq!(
            (flush.source, flush.reason),
            (Some(&Source::ROLES), "partition key is not a string")
        );
    }

    #[test]
    fn a_record_naming_no_table_flushes_every_cache() {
        assert_eq!(
            unreadable("e000405"),
            Mapped::Flush(Flush {
                source: None,
                table: None,
                seq: "4300000000000000000405",
                reason: "no table name in eventSourceARN",
            })
        );
    }

    #[test]
    fn a_tool_item_is_still_ignored() {
        assert!(matches!(unreadable("e000406"), Mapped::Skip(SkipReason::Ignored(_))));
    }

    #[test]
    fn an_unknown_event_name_with_a_readable_key_invalidates_the_key() {
        let mapped = unreadable("e000407");
        let Mapped::Invalidate(change) = mapped else {
            panic!("the key is readable: {mapped:?}");
        };
        assert_eq!(
            (change.kind, change.source, change.id, change.seq),
            (ChangeKind::Key, &Source::USERS, "u-10", "4300000000000000000407")
        );
        assert_eq!(mapped.malformed(), Some("eventName is not INSERT, MODIFY or REMOVE"));
    }

    #[test]
    fn an_unknown_event_name_is_never_a_no_op() {
        let mut event = event(include_str!("../tests/fixtures/users_modify_identical.json"));
        event.records[0].event_name = "UPSERT".to_owned();
        assert!(matches!(
            mapper().map(&event.records[0], 0),
            Mapped::Invalidate(Change { id: "u-1", .. })
        ));
    }

    #[test]
    fn a_record_without_a_sequence_number_invalidates_its_key_as_the_oldest_change() {
        let mapped = unreadable("e000408");
        assert!(
            matches!(
                mapped,
                Mapped::Invalidate(Change {
                    id: "u-11",
                    seq: MISSING_SEQUENCE_NUMBER,
                    defect: Some("no dynamodb.SequenceNumber"),
                    ..
                })
            ),
            "{mapped:?}"
        );
    }

    #[test]
    fn flushes_coalesce_per_source_from_the_first_record_that_needed_them() {
        let event = event(UNREADABLE);
        let batch = map_batch(mapper(), &event.records, 0, |_, _, _| {});
        let flushes: Vec<_> = batch
            .flushes
            .iter()
            .map(|flush| (flush.source, flush.seq, flush.first_record))
            .collect();
        assert_eq!(
            flushes,
            [
                // Records 1 and 8: the latest sequence number, the first record.
                (Some(&Source::USERS), "4300000000000000000409", 1),
                (Some(&Source::ROLES), "4300000000000000000404", 2),
                (None, "4300000000000000000405", 4),
            ]
        );
        assert_eq!(
            batch.flushes[0].reason(),
            "unreadable stream record 4300000000000000000409 of staleless-users"
        );
        assert_eq!(
            batch.flushes[2].reason(),
            "unreadable stream record 4300000000000000000405 of an unnamed table"
        );
        let ids: Vec<&str> = batch.keys.iter().map(|key| key.id).collect();
        assert_eq!(ids, ["u-9", "u-10", "u-11"]);
        assert_eq!(
            batch.counts,
            MappingCounts {
                invalidating: 3,
                flushing: 5,
                ignored: 1,
                read_in_part: 7,
                ..MappingCounts::default()
            }
        );
    }

    #[test]
    fn malformed_records_invalidate_their_keys_or_flush_their_source() {
        let event = event(include_str!("../tests/fixtures/malformed.json"));
        let mut malformed = Vec::new();
        let batch = map_batch(mapper(), &event.records, 0, |position, _, mapped| {
            if let Some(why) = mapped.malformed() {
                malformed.push((position, why));
            }
        });
        let keys: Vec<(&str, &str, usize)> = batch
            .keys
            .iter()
            .map(|key| (key.id, key.seq, key.first_record))
            .collect();
        // u-bad: once without a sequence number, once with an unknown eventName.
        assert_eq!(
            keys,
            [
                ("u-ok", "4100000000000000000301", 0),
                ("u-bad", "4100000000000000000303", 1),
                ("u-ok-too", "4100000000000000000308", 7),
            ]
        );
        let flushes: Vec<_> = batch
            .flushes
            .iter()
            .map(|flush| (flush.source, flush.first_record))
            .collect();
        assert_eq!(
            flushes,
            [(None, 3), (Some(&Source::ROLES), 4), (Some(&Source::USERS), 5)]
        );
        assert_eq!(malformed.len(), 5, "{malformed:?}");
        assert_eq!((batch.counts.read_in_part, batch.counts.ignored), (5, 1));
        assert_eq!((batch.counts.invalidating, batch.counts.flushing), (4, 3));
    }

    #[test]
    fn the_latest_sequence_number_wins_numerically() {
        let mut coalescer = Coalescer::default();
        let change = |seq, at_ms| Change {
            kind: ChangeKind::Key,
            source: &Source::USERS,
            id: "u-1",
            seq,
            at_ms,
            ttl_expiry: false,
            interval_ms: None,
            announcement: None,
            defect: None,
        };
        coalescer.add(change("99", 1), 0);
        coalescer.add(change("100", 2), 1);
        coalescer.add(change("98", 3), 2);
        let (keys, _) = coalescer.finish();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].seq, keys[0].at_ms, keys[0].first_record), ("100", 2, 0));
    }

    #[test]
    fn the_same_id_in_both_tables_is_two_keys() {
        let mut coalescer = Coalescer::default();
        for (position, source) in [&Source::USERS, &Source::ROLES].into_iter().enumerate() {
            coalescer.add(
                Change {
                    kind: ChangeKind::Key,
                    source,
                    id: "x",
                    seq: "1",
                    at_ms: 0,
                    ttl_expiry: false,
                    interval_ms: None,
                    announcement: None,
                    defect: None,
                },
                position,
            );
        }
        assert_eq!(coalescer.finish().0.len(), 2);
    }

    #[test]
    fn heartbeats_become_one_tick_per_table_placed_after_the_changes_before_them() {
        let event: Event = event(include_str!("../tests/fixtures/heartbeats.json"));
        let MappedBatch { keys, counts, .. } = map_batch(mapper(), &event.records, 7, |_, _, mapped| {
            assert!(
                matches!(mapped, Mapped::Invalidate(_)),
                "nothing is skipped: {mapped:?}"
            );
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
                (ChangeKind::Key, &Source::USERS, "u-1", 1_732_500_001_000, 1),
                // The latest users heartbeat, stamped with the writer's time, after the user change.
                (ChangeKind::Heartbeat, &Source::USERS, "staleless", 1_732_500_005_100, 2),
                // No writtenAtMs: the record's own creation time.
                (ChangeKind::Heartbeat, &Source::ROLES, "staleless", 1_732_500_006_000, 3),
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
    fn a_heartbeat_record_read_in_part_publishes_no_tick() {
        let mut event: Event = event(include_str!("../tests/fixtures/heartbeats.json"));
        let record = &mut event.records[0];
        record.event_name = "UPSERT".to_owned();
        assert!(matches!(
            mapper().map(record, 0),
            Mapped::Skip(SkipReason::Malformed(_))
        ));
        record.event_name = "INSERT".to_owned();
        record.change.sequence_number = None;
        let mapped = mapper().map(record, 0);
        assert_eq!(
            mapped,
            Mapped::Skip(SkipReason::Malformed("no dynamodb.SequenceNumber"))
        );
        assert!(mapped.malformed().is_some());
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
