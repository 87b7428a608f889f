//! The invalidation message that the stream relay publishes and every API task consumes.
//!
//! A message names *what changed* (keys and the stream position of the change), never the changed
//! data: subscribers evict and re-read from the table, so a message can be duplicated, reordered
//! or replayed without harm.
//!
//! Wire format (JSON, one object per SNS message):
//!
//! ```json
//! {"v":1,"kind":"invalidate","source":"users",
//!  "keys":[{"id":"u-1","seq":"4100000000000000000001","at_ms":1732500000123}]}
//! {"v":1,"kind":"flush_all","reason":"operator request"}
//! {"v":1,"kind":"flush_all","source":"users","reason":"unreadable stream record 41… of staleless-users"}
//! {"v":1,"kind":"tick","source":"users","written_at_ms":1732500000123,"writer":"staleless","interval_ms":5000}
//! {"v":1,"kind":"tick","source":"users","written_at_ms":1732500000123,"writer":"staleless","slot":"3","slots":["0","3"],"covered":true,"interval_ms":5000}
//! ```
//!
//! A `tick` is the heartbeat of one source: a heartbeat item written into that source's table
//! crossed the stream, the relay, the topic and the task's queue, so the whole path is proven up
//! to `written_at_ms`. Tasks trust a cache only while its source's ticks are recent.
//!
//! - [`keys`]: the key scheme of both tables (user, role and heartbeat keys), used by every crate.
//! - [`Invalidation`] is the message, [`Envelope`] its versioned wire form.
//! - [`decode`] turns a queue body into an [`Invalidation`] or a typed [`DecodeError`].
//! - [`pack_invalidations`] splits a key list into as few messages as fit SNS's size limit;
//!   [`pack_invalidation_messages`] also says how many keys each message carries.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

pub mod keys;
#[cfg(test)]
mod properties;

use serde::{Deserialize, Serialize};

/// The protocol version this crate writes and the only one it reads.
pub const PROTOCOL_VERSION: u32 = 1;

/// SNS rejects messages over 256 KiB (262,144 bytes), attributes included.
/// <https://docs.aws.amazon.com/sns/latest/api/API_Publish.html>
pub const SNS_MAX_MESSAGE_BYTES: usize = 262_144;

/// Head-room kept below [`SNS_MAX_MESSAGE_BYTES`] for the `source` message attribute, which SNS
/// counts toward the same limit.
pub const MESSAGE_ATTRIBUTE_ALLOWANCE_BYTES: usize = 1_024;

/// Name of the SNS/SQS message attribute carrying the [`Source`], so that a subscriber can use a
/// filter policy to receive only the sources it caches.
pub const SOURCE_ATTRIBUTE: &str = "source";

/// The name of a source of changes: one table whose stream the relay reads (`users`, `roles`, or
/// any other the deployment configures). Messages, the `source` attribute, metric labels and the
/// consumers' registrations all use it; it is a name, not a closed set, so a new table needs no
/// new code on either side.
///
/// A name is 1 to [`Source::MAX_LEN`] characters of ASCII letters, digits, `_`, `-` and `.`, so
/// it fits a message attribute, a metric label and an environment variable's name as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Source(Cow<'static, str>);

/// Why a text is not a [`Source`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a source name (1 to 64 of A-Z, a-z, 0-9, '_', '-', '.')")]
pub struct InvalidSourceName(pub String);

impl Source {
    /// The users table's source: keys are user ids.
    pub const USERS: Self = Self(Cow::Borrowed("users"));
    /// The app-roles table's source: keys are role ids.
    pub const ROLES: Self = Self(Cow::Borrowed("roles"));
    /// The longest name.
    pub const MAX_LEN: usize = 64;

    /// The source called `name`.
    ///
    /// # Errors
    /// [`InvalidSourceName`] for an empty or too long name, or one with other characters.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidSourceName> {
        let name = name.into();
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
        if !valid {
            return Err(InvalidSourceName(name));
        }
        Ok(match name.as_str() {
            "users" => Self::USERS,
            "roles" => Self::ROLES,
            _ => Self(Cow::Owned(name)),
        })
    }

    /// The wire name, also used as the `source` message attribute value and metric label.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Source {
    type Error = InvalidSourceName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl From<Source> for String {
    fn from(source: Source) -> Self {
        source.0.into_owned()
    }
}

impl std::str::FromStr for Source {
    type Err = InvalidSourceName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DynamoDB Streams sequence number.
///
/// AWS documents them as strings of 21 to 40 digits that grow within a shard; comparing them as
/// strings would put `"9"` after `"10"`, so ordering is numeric (length first, then digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SequenceNumber(pub String);

impl SequenceNumber {
    /// The digits as received from the stream.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SequenceNumber {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_sequence_numbers(&self.0, &other.0)
    }
}

/// Numeric order of two sequence numbers given as digit strings (length first, then digits), for
/// callers that hold borrowed `&str`s and must not allocate a [`SequenceNumber`] per comparison.
#[must_use]
pub fn compare_sequence_numbers(left: &str, right: &str) -> Ordering {
    let left = left.trim_start_matches('0');
    let right = right.trim_start_matches('0');
    left.len().cmp(&right.len()).then_with(|| left.cmp(right))
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One changed key and the version of the change that invalidated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The user id or role id whose cached entries are now stale.
    pub id: String,
    /// Stream position of the latest change seen for this key; lets a subscriber log and
    /// de-duplicate, never needed for correctness because eviction is idempotent.
    pub seq: SequenceNumber,
    /// The record's approximate creation time (ms since the Unix epoch), so subscribers can
    /// measure end-to-end invalidation lag.
    pub at_ms: i64,
}

/// What a subscriber must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    /// Evict these keys from the caches of `source`.
    Invalidate {
        /// The table the keys belong to.
        source: Source,
        /// The changed keys; never empty when produced by [`pack_invalidations`].
        keys: Vec<KeyVersion>,
    },
    /// Clear the caches of `source`, or every cache when it is absent: sent by operators after a
    /// bulk import, a restore or a schema change, and by the relay for a record of a watched
    /// table that names no key it can read (the change is somewhere in that table).
    ///
    /// A reader that predates `source` ignores it and flushes everything: a superset, never less.
    FlushAll {
        /// The only source to flush; `None` flushes every cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Source>,
        /// Free text for the logs of every task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A heartbeat of `source` crossed the whole path: nothing to evict, but proof that every
    /// change of that table written before `written_at_ms` has been relayed.
    Tick {
        /// The table the heartbeat item was written into.
        source: Source,
        /// When the heartbeat writer wrote it, ms since the Unix epoch (the writer's clock).
        written_at_ms: i64,
        /// The writer's name (the `<writer>` of its `HEARTBEAT#<writer>` item). Subscribers count
        /// only ticks of the writers they are configured to trust, and keep their state per
        /// writer, so an item forged under another name, or one writer's bad clock, vouches for
        /// nothing. Absent in ticks of relays that predate it: such a tick is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<String>,
        /// The heartbeat item (slot) the tick came from; absent means slot `0`, the only one of
        /// writers that predate slots. Each slot lives on one shard of the table's stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
        /// Every slot the writer writes into this table; absent means `[slot]`. A task requires
        /// recent ticks of each, so a stuck shard stops trust however many others flow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<Vec<String>>,
        /// Whether those slots cover every open shard of the stream as the writer last found
        /// them; absent means yes. `false` (a split not yet covered) vouches for nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        covered: Option<bool>,
        /// The writer's interval between heartbeats, so a subscriber can tell a heartbeat that
        /// went missing (the path dropped messages) from a quiet stretch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
    },
}

/// The versioned wire form of an [`Invalidation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version; readers reject versions they do not know rather than guess.
    pub v: u32,
    /// The message itself.
    #[serde(flatten)]
    pub body: Invalidation,
}

/// Why a queue body could not be read as an [`Invalidation`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON, or not an object with a numeric `v`.
    #[error("malformed invalidation message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A newer relay wrote a version this reader does not know.
    #[error("unsupported invalidation protocol version {found} (this reader knows {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version found in the message.
        found: u32,
    },
    /// The version is known but the body does not match it.
    #[error("invalid version {PROTOCOL_VERSION} invalidation message: {0}")]
    InvalidBody(#[source] serde_json::Error),
}

/// Why a set of keys could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// One key alone would exceed the message limit (DynamoDB keys are at most 2 KiB, so this
    /// means a bug upstream, not data to retry).
    #[error("key of {size} bytes cannot fit one message of at most {limit} bytes")]
    KeyTooLarge {
        /// Encoded size of the key entry.
        size: usize,
        /// The limit it was packed against.
        limit: usize,
    },
    /// Serialisation failed (not expected for these types).
    #[error("cannot serialise invalidation: {0}")]
    Json(#[from] serde_json::Error),
}

impl Invalidation {
    /// The JSON text of this message in the current protocol version.
    ///
    /// # Errors
    /// Only if serde_json fails, which these plain types do not do in practice.
    pub fn encode(&self) -> Result<String, EncodeError> {
        Ok(serde_json::to_string(&Envelope {
            v: PROTOCOL_VERSION,
            body: self.clone(),
        })?)
    }

    /// The source whose caches this message concerns; `None` for a [`Invalidation::FlushAll`]
    /// of every cache.
    #[must_use]
    pub const fn source(&self) -> Option<&Source> {
        match self {
            Self::Invalidate { source, .. } | Self::Tick { source, .. } => Some(source),
            Self::FlushAll { source, .. } => source.as_ref(),
        }
    }
}

/// Records of a stream the event source mapping gave up on (retries exhausted, or older than
/// the maximum record age): the part of AWS's on-failure message a subscriber needs. The mapping
/// sends it to the invalidation topic, so every task learns that invalidations of that table may
/// be lost and flushes its caches of it.
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GiveUp {
    /// The stream the records were in: its table decides which caches are flushed.
    pub stream_arn: String,
    /// The shard.
    #[serde(default)]
    pub shard_id: Option<String>,
    /// The first record given up.
    #[serde(default)]
    pub start_sequence_number: Option<String>,
    /// The last record given up.
    #[serde(default)]
    pub end_sequence_number: Option<String>,
    /// How many records.
    #[serde(default)]
    pub batch_size: Option<u64>,
}

impl GiveUp {
    /// The table of the stream.
    #[must_use]
    pub fn table(&self) -> Option<&str> {
        keys::table_of_stream_arn(&self.stream_arn)
    }
}

/// Reads a queue body as AWS's on-failure message of a DynamoDB stream event source mapping;
/// `None` for anything else (an invalidation message included).
#[must_use]
pub fn decode_give_up(body: &str) -> Option<GiveUp> {
    #[derive(Deserialize)]
    struct OnFailure {
        #[serde(rename = "DDBStreamBatchInfo")]
        batch: GiveUp,
    }
    serde_json::from_str::<OnFailure>(body)
        .ok()
        .map(|message| message.batch)
}

/// Reads one queue body.
///
/// # Errors
/// [`DecodeError::Malformed`] for anything that is not a versioned JSON object,
/// [`DecodeError::UnsupportedVersion`] for a version other than [`PROTOCOL_VERSION`], and
/// [`DecodeError::InvalidBody`] when a version-1 body has the wrong shape.
pub fn decode(body: &str) -> Result<Invalidation, DecodeError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    // A derived struct also reads a JSON array, `[2]` as version 2: only an object has a `v`.
    if !body.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(DecodeError::Malformed(serde::de::Error::custom("not a JSON object")));
    }
    let VersionOnly { v } = serde_json::from_str(body).map_err(DecodeError::Malformed)?;
    if v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: v });
    }
    let envelope: Envelope = serde_json::from_str(body).map_err(DecodeError::InvalidBody)?;
    Ok(envelope.body)
}

/// Splits `keys` of one `source` into as few encoded messages as fit `max_message_bytes` each.
///
/// Keys are taken in order and each message is filled before the next starts; entries are small
/// (tens of bytes) against a 256 KiB limit, so this greedy fill is within one message of optimal.
/// An empty key list yields no message.
///
/// # Errors
/// [`EncodeError::KeyTooLarge`] if a single key cannot fit an otherwise empty message.
pub fn pack_invalidations(
    source: &Source,
    keys: impl IntoIterator<Item = KeyVersion>,
    max_message_bytes: usize,
) -> Result<Vec<String>, EncodeError> {
    Ok(pack_invalidation_messages(source, keys, max_message_bytes)?
        .into_iter()
        .map(|message| message.body)
        .collect())
}

/// One encoded message of [`pack_invalidation_messages`] and how many of the input keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedMessage {
    /// The encoded message, at most the requested size.
    pub body: String,
    /// How many consecutive input keys it carries, so a publisher that fails part-way knows
    /// exactly which keys were not sent without decoding what it packed.
    pub key_count: usize,
}

/// [`pack_invalidations`], also saying how many keys each message carries (messages hold
/// consecutive runs of the input, in order).
///
/// # Errors
/// [`EncodeError::KeyTooLarge`] if a single key cannot fit an otherwise empty message.
pub fn pack_invalidation_messages(
    source: &Source,
    keys: impl IntoIterator<Item = KeyVersion>,
    max_message_bytes: usize,
) -> Result<Vec<PackedMessage>, EncodeError> {
    // The envelope of an empty key list ends in `[]}`; each entry adds its own bytes plus a
    // comma after the first, so sizes are exact without re-encoding the message per key.
    let empty = Invalidation::Invalidate {
        source: source.clone(),
        keys: Vec::new(),
    }
    .encode()?;
    let (head, tail) = empty.split_at(empty.len() - 2);

    let mut messages = Vec::new();
    let mut body = String::from(head);
    let mut entries_in_body = 0usize;
    for key in keys {
        let entry = serde_json::to_string(&key)?;
        let needed = head.len() + entry.len() + tail.len();
        if needed > max_message_bytes {
            return Err(EncodeError::KeyTooLarge {
                size: needed,
                limit: max_message_bytes,
            });
        }
        let separator = usize::from(entries_in_body > 0);
        if body.len() + separator + entry.len() + tail.len() > max_message_bytes {
            body.push_str(tail);
            messages.push(PackedMessage {
                body: std::mem::replace(&mut body, String::from(head)),
                key_count: entries_in_body,
            });
            entries_in_body = 0;
        }
        if entries_in_body > 0 {
            body.push(',');
        }
        body.push_str(&entry);
        entries_in_body += 1;
    }
    if entries_in_body > 0 {
        body.push_str(tail);
        messages.push(PackedMessage {
            body,
            key_count: entries_in_body,
        });
    }
    Ok(messages)
}

/// The size budget for one message body when published with the `source` attribute.
#[must_use]
pub const fn sns_body_budget() -> usize {
    SNS_MAX_MESSAGE_BYTES - MESSAGE_ATTRIBUTE_ALLOWANCE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, seq: &str) -> KeyVersion {
        KeyVersion {
            id: id.to_owned(),
            seq: SequenceNumber::from(seq),
            at_ms: 1_732_500_000_123,
        }
    }

    // Round trips of every message shape are the property `any_message_round_trips`.

    #[test]
    fn wire_format_is_the_documented_one() {
        let text = Invalidation::Invalidate {
            source: Source::USERS,
            keys: vec![key("u-1", "4100000000000000000001")],
        }
        .encode()
        .expect("encode");
        assert_eq!(
            text,
            r#"{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"u-1","seq":"4100000000000000000001","at_ms":1732500000123}]}"#
        );
        let fixture = r#"{"v":1,"kind":"flush_all","reason":"operator request"}"#;
        assert_eq!(
            decode(fixture).expect("decode"),
            Invalidation::FlushAll {
                source: None,
                reason: Some("operator request".to_owned())
            }
        );
        let one_source = Invalidation::FlushAll {
            source: Some(Source::ROLES),
            reason: Some("unreadable record".to_owned()),
        };
        let text = one_source.encode().expect("encode");
        assert_eq!(
            text,
            r#"{"v":1,"kind":"flush_all","source":"roles","reason":"unreadable record"}"#
        );
        assert_eq!(decode(&text).expect("decode"), one_source);
        assert_eq!(one_source.source(), Some(&Source::ROLES));
    }

    #[test]
    fn a_give_up_is_read_from_the_on_failure_message_and_nothing_else() {
        // The shape AWS documents for a DynamoDB stream source's on-failure destination.
        let message = r#"{"requestContext":{"requestId":"r","functionArn":"arn:aws:lambda:us-east-1:1:function:relay",
            "condition":"RetryAttemptsExhausted","approximateInvokeCount":11},
            "responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},
            "version":"1.0","timestamp":"2026-12-04T10:00:00.000Z",
            "DDBStreamBatchInfo":{"shardId":"shardId-0001","startSequenceNumber":"41","endSequenceNumber":"42",
            "approximateArrivalOfFirstRecord":"2026-12-04T09:59:00Z","approximateArrivalOfLastRecord":"2026-12-04T09:59:01Z",
            "batchSize":2,"streamArn":"arn:aws:dynamodb:us-east-1:1:table/staleless-users/stream/2026-01-01T00:00:00.000"}}"#;
        let give_up = decode_give_up(message).expect("an on-failure message");
        assert_eq!(give_up.table(), Some("staleless-users"));
        assert_eq!(give_up.batch_size, Some(2));
        assert_eq!(give_up.shard_id.as_deref(), Some("shardId-0001"));
        for other in [
            r#"{"v":1,"kind":"flush_all"}"#,
            r#"{"DDBStreamBatchInfo":{}}"#,
            "not json",
            r#"{"DDBStreamBatchInfo":{"streamArn":7}}"#,
        ] {
            assert_eq!(decode_give_up(other), None, "{other}");
        }
    }

    #[test]
    fn tick_round_trips_and_has_the_documented_form() {
        let tick = Invalidation::Tick {
            source: Source::ROLES,
            written_at_ms: 1_732_500_000_123,
            writer: Some("staleless".to_owned()),
            slot: None,
            slots: None,
            covered: None,
            interval_ms: Some(5_000),
        };
        let text = tick.encode().expect("encode");
        assert_eq!(
            text,
            r#"{"v":1,"kind":"tick","source":"roles","written_at_ms":1732500000123,"writer":"staleless","interval_ms":5000}"#
        );
        assert_eq!(decode(&text).expect("decode"), tick);
        let without_interval = decode(r#"{"v":1,"kind":"tick","source":"users","written_at_ms":1}"#).expect("decode");
        assert!(matches!(
            without_interval,
            Invalidation::Tick {
                interval_ms: None,
                writer: None,
                slot: None,
                slots: None,
                covered: None,
                ..
            }
        ));
        let per_shard = Invalidation::Tick {
            source: Source::USERS,
            written_at_ms: 1,
            writer: Some("staleless".to_owned()),
            slot: Some("3".to_owned()),
            slots: Some(vec!["0".to_owned(), "3".to_owned()]),
            covered: Some(true),
            interval_ms: None,
        };
        let text = per_shard.encode().expect("encode");
        assert_eq!(
            text,
            r#"{"v":1,"kind":"tick","source":"users","written_at_ms":1,"writer":"staleless","slot":"3","slots":["0","3"],"covered":true}"#
        );
        assert_eq!(decode(&text).expect("decode"), per_shard);
        assert_eq!(tick.source(), Some(&Source::ROLES));
        assert!(matches!(
            decode(r#"{"v":1,"kind":"tick","source":"users"}"#),
            Err(DecodeError::InvalidBody(_))
        ));
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let err = decode(r#"{"v":2,"kind":"evict_everything_new"}"#).expect_err("v2");
        assert!(matches!(err, DecodeError::UnsupportedVersion { found: 2 }), "{err}");
    }

    #[test]
    fn a_source_is_any_well_formed_name() {
        let body = r#"{"v":1,"kind":"invalidate","source":"org-units.v2","keys":[]}"#;
        let Ok(Invalidation::Invalidate { source, .. }) = decode(body) else {
            panic!("{body} names a source");
        };
        assert_eq!(source.as_str(), "org-units.v2");
        assert_eq!(Source::new("users"), Ok(Source::USERS));
        assert_eq!("roles".parse::<Source>(), Ok(Source::ROLES));
        for bad in ["", "a b", "é", &"x".repeat(Source::MAX_LEN + 1)] {
            assert_eq!(Source::new(bad), Err(InvalidSourceName(bad.to_owned())));
        }
        assert!(Source::new("x".repeat(Source::MAX_LEN)).is_ok());
    }

    #[test]
    fn malformed_bodies_are_typed_errors_not_panics() {
        for body in [
            "",
            "not json",
            "[]",
            "[2]",
            "[1]",
            "{}",
            r#"{"v":"1"}"#,
            r#"{"v":-1}"#,
            "\u{0}",
        ] {
            assert!(
                matches!(decode(body), Err(DecodeError::Malformed(_))),
                "{body:?} should be malformed"
            );
        }
        for body in [
            r#"{"v":1}"#,
            r#"{"v":1,"kind":"invalidate","source":"no spaces","keys":[]}"#,
            r#"{"v":1,"kind":"invalidate","source":"","keys":[]}"#,
            r#"{"v":1,"kind":"invalidate","source":7,"keys":[]}"#,
            r#"{"v":1,"kind":"invalidate","source":"users","keys":[{"id":1}]}"#,
            r#"{"v":1,"kind":"reboot"}"#,
        ] {
            assert!(
                matches!(decode(body), Err(DecodeError::InvalidBody(_))),
                "{body:?} should be an invalid body"
            );
        }
    }

    #[test]
    fn sequence_numbers_order_numerically() {
        let nine = SequenceNumber::from("9");
        let ten = SequenceNumber::from("10");
        assert!(nine < ten);
        assert!(SequenceNumber::from("000120") > SequenceNumber::from("119"));
        assert_eq!(
            SequenceNumber::from("0042").cmp(&SequenceNumber::from("42")),
            Ordering::Equal
        );
    }

    #[test]
    fn packing_nothing_yields_no_message() {
        let messages = pack_invalidations(&Source::USERS, Vec::new(), sns_body_budget()).expect("pack");
        assert!(messages.is_empty());
    }

    #[test]
    fn packing_respects_the_limit_and_loses_no_key() {
        let keys: Vec<KeyVersion> = (0..20_000)
            .map(|i| {
                key(
                    &format!("user-{i:05}-{}", "x".repeat(i % 40)),
                    &format!("{}", 1_000_000 + i),
                )
            })
            .collect();
        let messages = pack_invalidations(&Source::USERS, keys.clone(), sns_body_budget()).expect("pack");

        let total_bytes: usize = messages.iter().map(String::len).sum();
        let lower_bound = total_bytes.div_ceil(sns_body_budget());
        assert!(
            messages.len() <= lower_bound + 1,
            "{} messages for {total_bytes} bytes",
            messages.len()
        );

        let mut decoded = Vec::new();
        for message in &messages {
            assert!(message.len() <= sns_body_budget(), "message of {} bytes", message.len());
            match decode(message).expect("decode packed") {
                Invalidation::Invalidate { source, keys } => {
                    assert_eq!(source, Source::USERS);
                    assert!(!keys.is_empty());
                    decoded.extend(keys);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(decoded, keys);
    }

    #[test]
    fn packing_fills_a_message_exactly_to_the_limit() {
        let keys = vec![key("a", "1"), key("b", "2"), key("c", "3")];
        let one = pack_invalidations(&Source::ROLES, keys.clone(), usize::MAX).expect("pack");
        assert_eq!(one.len(), 1);
        let exact = one[0].len();
        assert_eq!(
            pack_invalidations(&Source::ROLES, keys.clone(), exact)
                .expect("pack")
                .len(),
            1
        );
        assert_eq!(
            pack_invalidations(&Source::ROLES, keys, exact - 1).expect("pack").len(),
            2
        );
    }

    #[test]
    fn packed_messages_count_their_keys() {
        let keys: Vec<KeyVersion> = (0..5_000).map(|i| key(&format!("user-{i}"), &format!("{i}"))).collect();
        let packed = pack_invalidation_messages(&Source::USERS, keys.clone(), 4_096).expect("pack");
        assert!(packed.len() > 1);
        let mut offset = 0;
        for message in &packed {
            let Invalidation::Invalidate { keys: carried, .. } = decode(&message.body).expect("decode") else {
                panic!("not an invalidation");
            };
            assert_eq!(carried.len(), message.key_count);
            assert_eq!(carried, keys[offset..offset + message.key_count]);
            offset += message.key_count;
        }
        assert_eq!(offset, keys.len());
    }

    #[test]
    fn a_key_larger_than_a_message_is_an_error() {
        let err = pack_invalidations(&Source::USERS, vec![key(&"x".repeat(500), "1")], 200).expect_err("too large");
        assert!(matches!(err, EncodeError::KeyTooLarge { limit: 200, .. }), "{err}");
    }
}
