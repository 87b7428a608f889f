//! The heartbeat writer: every `H` seconds it writes heartbeat items into **each** table, one per
//! open shard of the table's stream (outside the user and role key spaces). Each write travels
//! the whole invalidation path — stream shard, event source mapping, relay, topic, every task's
//! queue — and arrives as a `tick`, the proof of life the tasks' trust in their caches rests on.
//!
//! One writer serves the whole fleet, so its cost does not grow with the number of tasks; if it
//! dies, no ticks arrive and every task reads through (fail-safe). On AWS a scheduled Lambda
//! (`lambdas/src/bin/heartbeat.rs`) runs [`HeartbeatWriter::run_for`] once a minute; locally `infra
//! heartbeat` runs the same writer until stopped.
//!
//! # Slots: one heartbeat item per shard
//!
//! A table's stream has one shard per partition and Lambda reads each shard on its own, so an
//! item proves only the shard its key hashes to. The writer therefore writes one item per open
//! shard, a *slot*: slot `0` is `HEARTBEAT#<writer>`, slot `n` is `HEARTBEAT#<writer>#<n>`
//! ([`heartbeat_slot_pk`]). Every item also carries `slots`, every slot written into that table
//! in the same beat, and `covered`, whether those slots cover every open shard of the stream as
//! the writer last found them. Tasks require a recent tick of every slot, and a source whose
//! items say `covered = false` vouches for nothing.
//!
//! DynamoDB's hash of a key is not public, so the writer discovers where slots land, through
//! [`StreamShards`]: it lists the stream's open shards, takes a `LATEST` iterator on each shard
//! without a slot, writes candidate slots (`covered = false`) and reads which shard each one
//! appeared in. Each open shard keeps the lowest slot seen in it ([`plan_slots`]); the other
//! candidates are never written again. The shards are checked at the start of each run and
//! every [`SHARD_CHECK_INTERVAL`]: a split (the parent closes, its children open), or a shard
//! closed and replaced as DynamoDB does from time to time, leaves shards without a slot and
//! starts a new discovery. From the check that notices it until discovery covers the shards
//! again, beats say `covered = false`: tasks read through, never serve stale.
//!
//! Where discovery cannot run — the table has no stream, or the writer may not describe or read
//! it — the writer beats slot `0` alone with `covered = true` and warns once per run: exactly
//! the behaviour of writers that predate slots, so a deployment without the stream permissions
//! keeps working (its tasks then prove only the shard of slot `0`, as before). A check that
//! fails after one succeeded keeps the coverage last found.
//!
//! Cost per beat: one `PutItem` per slot per table. Each check: one `DescribeTable` and one
//! `DescribeStream` page per table; a discovery adds one `GetShardIterator` per uncovered shard
//! and round, one `PutItem` per candidate and a `GetRecords` per uncovered shard every
//! [`DISCOVERY_POLL`] until the candidates show up, within the bounds below.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::AddAssign;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt as _;
use staleless_protocol::keys::{
    HEARTBEAT_COVERED_ATTRIBUTE, HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_SK, HEARTBEAT_SLOTS_ATTRIBUTE,
    HEARTBEAT_WRITTEN_AT_ATTRIBUTE, PARTITION_KEY, SORT_KEY, heartbeat_slot_pk,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Env var: seconds between two heartbeats.
pub const INTERVAL_VAR: &str = "HEARTBEAT_INTERVAL_SECS";
/// Env var: how long one Lambda invocation keeps writing.
pub const RUN_VAR: &str = "HEARTBEAT_RUN_SECS";
/// Env var: the writer's name (the `<writer>` of the item key).
pub const WRITER_VAR: &str = "HEARTBEAT_WRITER";
/// Env var listing, comma-separated, the tables to beat into; when unset, the table of every
/// source the relay serves (`RELAY_SOURCES`, see [`crate::config`]).
pub const TABLES_VAR: &str = "HEARTBEAT_TABLES";
/// Default interval: a third of the default 15 s staleness bound, so two lost heartbeats in a row
/// still leave the caches trusted.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default run of one scheduled invocation: the schedule's period.
pub const DEFAULT_RUN: Duration = Duration::from_secs(60);
/// Longest a single `PutItem` may take before that write counts as failed: a hung write must not
/// delay the next beat.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most `PutItem`s in flight per table at once (a beat of a many-shard table, a discovery round).
pub const MAX_CONCURRENT_WRITES: usize = 32;

/// Time between two checks of the tables' open shards (besides the one at the start of each
/// run): how late a split is noticed, at one `DescribeTable` and one `DescribeStream` page per
/// table. `DescribeStream` allows 10 calls a second
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_DescribeStream.html>).
pub const SHARD_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Most rounds of one discovery: candidates written, then read back from the shards.
pub const DISCOVERY_ROUNDS: usize = 8;
/// Most candidate slots one discovery writes, over all its rounds.
pub const DISCOVERY_CANDIDATES: usize = 256;
/// Candidates per shard still without a slot, per round: with `n` such shards and keys spread
/// evenly, `4n` candidates miss a given shard with probability `(1 - 1/n)^(4n) < e^-4 ≈ 2 %`.
pub const CANDIDATES_PER_SHARD: usize = 4;
/// Time between two `GetRecords` on a shard while waiting for candidates. DynamoDB Streams
/// throttles a shard read by more than two readers at once
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-dynamodb-streams>);
/// discovery reads beside the relay's event source mapping only for [`DISCOVERY_WAIT`] at most,
/// and stops reading a shard as soon as a candidate shows up in it.
pub const DISCOVERY_POLL: Duration = Duration::from_millis(50);
/// Longest a round waits for its candidates to appear in the shards.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// One heartbeat item, as [`HeartbeatSink::write`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatItem<'a> {
    /// The `<writer>` of the key.
    pub writer: &'a str,
    /// Which of the writer's items: `HEARTBEAT#<writer>` for 0, else `HEARTBEAT#<writer>#<slot>`.
    pub slot: u32,
    /// When the beat was written, ms since the Unix epoch: the same for every item of a beat.
    pub written_at_ms: i64,
    /// The writer's interval, so a task can tell a lost beat from a quiet stretch.
    pub interval: Duration,
    /// Every slot written into the table with this one: the slots a task requires ticks of.
    pub slots: &'a [u32],
    /// Whether `slots` cover every open shard of the table's stream as the writer last found them.
    pub covered: bool,
}

impl HeartbeatItem<'_> {
    /// The item's partition key.
    #[must_use]
    pub fn partition_key(&self) -> String {
        heartbeat_slot_pk(self.writer, &self.slot.to_string())
    }

    /// The item's attributes, keys included, as `PutItem` writes them.
    #[must_use]
    pub fn attributes(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PARTITION_KEY.to_owned(), AttributeValue::S(self.partition_key())),
            (SORT_KEY.to_owned(), AttributeValue::S(HEARTBEAT_SK.to_owned())),
            (
                HEARTBEAT_WRITTEN_AT_ATTRIBUTE.to_owned(),
                AttributeValue::N(self.written_at_ms.to_string()),
            ),
            (
                HEARTBEAT_INTERVAL_ATTRIBUTE.to_owned(),
                AttributeValue::N(self.interval.as_millis().to_string()),
            ),
            (
                HEARTBEAT_SLOTS_ATTRIBUTE.to_owned(),
                AttributeValue::L(
                    self.slots
                        .iter()
                        .map(|slot| AttributeValue::S(slot.to_string()))
                        .collect(),
                ),
            ),
            (
                HEARTBEAT_COVERED_ATTRIBUTE.to_owned(),
                AttributeValue::Bool(self.covered),
            ),
        ])
    }
}

/// Where heartbeats are written; DynamoDB in production, a recorder in unit tests.
#[async_trait]
pub trait HeartbeatSink: Send + Sync {
    /// Writes `item` into `table`.
    ///
    /// # Errors
    /// A description of the failure; the writer logs it and tries again at the next beat.
    async fn write(&self, table: &str, item: &HeartbeatItem<'_>) -> Result<(), String>;
}

/// [`HeartbeatSink`] on DynamoDB: one `PutItem` per item.
#[derive(Debug, Clone)]
pub struct DynamoHeartbeats {
    /// The SDK client (with the operation timeouts of its config).
    client: aws_sdk_dynamodb::Client,
}

impl DynamoHeartbeats {
    /// Heartbeats through `client`.
    #[must_use]
    pub const fn new(client: aws_sdk_dynamodb::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl HeartbeatSink for DynamoHeartbeats {
    async fn write(&self, table: &str, item: &HeartbeatItem<'_>) -> Result<(), String> {
        let put = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item.attributes()))
            .send();
        match tokio::time::timeout(WRITE_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(sdk_error(&err)),
            Err(_) => Err(format!("PutItem did not answer within {WRITE_TIMEOUT:?}")),
        }
    }
}

/// An SDK error with its causes, as the writer logs it.
fn sdk_error(err: &impl std::error::Error) -> String {
    DisplayErrorContext(err).to_string()
}

/// One `GetRecords` answer, narrowed to what discovery reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardPage {
    /// The partition key (`PK`, a string) of each record, in shard order.
    pub partition_keys: Vec<String>,
    /// Where to read next; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
}

/// The stream calls of discovery: DynamoDB and DynamoDB Streams in production, a stream in
/// memory in unit tests (splits, shards no key reaches, refused calls).
#[async_trait]
pub trait StreamShards: Send + Sync {
    /// The ARN of `table`'s stream (`DescribeTable`); `None` when the table has none enabled.
    ///
    /// # Errors
    /// A description of the failure (the table is missing, the call is refused).
    async fn stream_arn(&self, table: &str) -> Result<Option<String>, String>;

    /// The ids of the stream's open shards (`DescribeStream`, every page): those without an
    /// ending sequence number.
    ///
    /// # Errors
    /// A description of the failure.
    async fn open_shards(&self, stream_arn: &str) -> Result<BTreeSet<String>, String>;

    /// An iterator at the tip of `shard_id` (`GetShardIterator`, `LATEST`): it reads only records
    /// written after this call.
    ///
    /// # Errors
    /// A description of the failure.
    async fn latest_iterator(&self, stream_arn: &str, shard_id: &str) -> Result<String, String>;

    /// The records from `iterator` on (`GetRecords`).
    ///
    /// # Errors
    /// A description of the failure; discovery tries the shard again at its next poll.
    async fn read(&self, iterator: &str) -> Result<ShardPage, String>;
}

/// [`StreamShards`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct DynamoStreamShards {
    /// For `DescribeTable`.
    dynamodb: aws_sdk_dynamodb::Client,
    /// For `DescribeStream`, `GetShardIterator` and `GetRecords`.
    streams: aws_sdk_dynamodbstreams::Client,
}

impl DynamoStreamShards {
    /// Discovery through these clients.
    #[must_use]
    pub const fn new(dynamodb: aws_sdk_dynamodb::Client, streams: aws_sdk_dynamodbstreams::Client) -> Self {
        Self { dynamodb, streams }
    }
}

/// Most records one discovery `GetRecords` returns: a round writes at most
/// [`DISCOVERY_CANDIDATES`] items, and other writes share the shard.
const READ_LIMIT: i32 = 1000;

#[async_trait]
impl StreamShards for DynamoStreamShards {
    async fn stream_arn(&self, table: &str) -> Result<Option<String>, String> {
        let output = self
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|err| sdk_error(&err))?;
        Ok(output
            .table
            .filter(|table| {
                table
                    .stream_specification
                    .as_ref()
                    .is_some_and(|stream| stream.stream_enabled)
            })
            .and_then(|table| table.latest_stream_arn))
    }

    async fn open_shards(&self, stream_arn: &str) -> Result<BTreeSet<String>, String> {
        let mut open = BTreeSet::new();
        let mut start = None;
        loop {
            let output = self
                .streams
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(start)
                .send()
                .await
                .map_err(|err| sdk_error(&err))?;
            let Some(description) = output.stream_description else {
                return Ok(open);
            };
            open.extend(
                description
                    .shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|shard| {
                        shard
                            .sequence_number_range
                            .as_ref()
                            .is_none_or(|range| range.ending_sequence_number.is_none())
                    })
                    .filter_map(|shard| shard.shard_id),
            );
            start = description.last_evaluated_shard_id;
            if start.is_none() {
                return Ok(open);
            }
        }
    }

    async fn latest_iterator(&self, stream_arn: &str, shard_id: &str) -> Result<String, String> {
        self.streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::Latest)
            .send()
            .await
            .map_err(|err| sdk_error(&err))?
            .shard_iterator
            .ok_or_else(|| format!("GetShardIterator returned no iterator for {shard_id}"))
    }

    async fn read(&self, iterator: &str) -> Result<ShardPage, String> {
        let output = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(READ_LIMIT)
            .send()
            .await
            .map_err(|err| sdk_error(&err))?;
        Ok(ShardPage {
            partition_keys: output
                .records
                .unwrap_or_default()
                .into_iter()
                .filter_map(|record| {
                    let mut keys = record.dynamodb?.keys?;
                    match keys.remove(PARTITION_KEY)? {
                        aws_sdk_dynamodbstreams::types::AttributeValue::S(pk) => Some(pk),
                        _ => None,
                    }
                })
                .collect(),
            next_iterator: output.next_shard_iterator,
        })
    }
}

/// What the writer writes into one table at each beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPlan {
    /// The slots to write, ascending.
    pub slots: Vec<u32>,
    /// Whether they cover every open shard of the table's stream.
    pub covered: bool,
}

impl SlotPlan {
    /// Slot 0 alone: before the first check (not covered) or where discovery cannot run
    /// (covered, as writers that predate slots).
    fn first_slot_only(covered: bool) -> Self {
        Self {
            slots: vec![0],
            covered,
        }
    }
}

/// The lowest slot seen in each open shard, by shard.
fn lowest_slots<'a>(open_shards: &BTreeSet<String>, seen: &'a BTreeMap<u32, String>) -> BTreeMap<&'a str, u32> {
    let mut lowest = BTreeMap::new();
    // Ascending slots: the first one found in a shard is its lowest.
    for (slot, shard) in seen {
        if open_shards.contains(shard) {
            lowest.entry(shard.as_str()).or_insert(*slot);
        }
    }
    lowest
}

/// Which slots to write into a table whose stream has `open_shards`, given the shard each slot
/// was `seen` in, and whether they cover the stream: each open shard keeps the lowest slot seen
/// in it; slots seen only in closed shards, or in a shard that has a lower one, are dropped.
/// With no slot in any open shard, slot 0 alone, not covered, so ticks keep saying so.
#[must_use]
pub fn plan_slots(open_shards: &BTreeSet<String>, seen: &BTreeMap<u32, String>) -> SlotPlan {
    let lowest = lowest_slots(open_shards, seen);
    let covered = !open_shards.is_empty() && lowest.len() == open_shards.len();
    let mut slots: Vec<u32> = lowest.into_values().collect();
    slots.sort_unstable();
    if slots.is_empty() {
        return SlotPlan::first_slot_only(false);
    }
    SlotPlan { slots, covered }
}

/// The `count` lowest slots neither `placed` (seen in an open shard) nor `tried` (written
/// earlier in this discovery): the next round's candidates.
fn next_candidates(placed: &BTreeSet<u32>, tried: &BTreeSet<u32>, count: usize) -> Vec<u32> {
    (0..u32::MAX)
        .filter(|slot| !placed.contains(slot) && !tried.contains(slot))
        .take(count)
        .collect()
}

/// A table's stream as the writer last found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KnownShards {
    /// The stream these shards belong to; another ARN (the stream was re-enabled) starts afresh.
    stream_arn: String,
    /// Its open shards at the last check.
    open: BTreeSet<String>,
    /// The shard each slot was seen in, for slots seen in open shards.
    seen: BTreeMap<u32, String>,
}

/// What the writer knows of one table's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamKnowledge {
    /// No check has finished yet: slot 0, not covered.
    Unchecked,
    /// Discovery cannot run (no stream, no permission, no discovery configured): slot 0,
    /// covered, as writers that predate slots.
    Unavailable,
    /// The shards as last found.
    Known(KnownShards),
}

impl StreamKnowledge {
    fn plan(&self) -> SlotPlan {
        match self {
            Self::Unchecked => SlotPlan::first_slot_only(false),
            Self::Unavailable => SlotPlan::first_slot_only(true),
            Self::Known(known) => plan_slots(&known.open, &known.seen),
        }
    }
}

/// What the writer needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// The tables to beat into: every table the relay reads, each a source tasks trust.
    pub tables: Vec<String>,
    /// The `<writer>` of `HEARTBEAT#<writer>`.
    pub writer: String,
    /// Time between beats.
    pub interval: Duration,
}

impl HeartbeatConfig {
    /// Reads `HEARTBEAT_TABLES` (else the relay's sources, with its table defaults),
    /// `HEARTBEAT_INTERVAL_SECS` and `HEARTBEAT_WRITER` through `lookup`; also returns
    /// `HEARTBEAT_RUN_SECS`.
    ///
    /// # Errors
    /// A message naming the variable that is not a positive number of seconds, a writer name
    /// with a `#` (it separates the writer from the slot in `HEARTBEAT#<writer>#<slot>`), an empty
    /// table list, or the relay's sources' [`ConfigError`](crate::config::ConfigError).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<(Self, Duration), String> {
        let secs = |var: &str, default: Duration| -> Result<Duration, String> {
            match lookup(var) {
                None => Ok(default),
                Some(text) => match text.trim().parse::<f64>() {
                    Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
                    _ => Err(format!("{var} must be a positive number of seconds, not {text:?}")),
                },
            }
        };
        let tables = match lookup(TABLES_VAR) {
            Some(list) => crate::config::parse_attribute_list(&list),
            None => crate::config::sources_from_lookup(&lookup)
                .map_err(|err| err.to_string())?
                .into_iter()
                .map(|source| source.table)
                .collect(),
        };
        if tables.is_empty() {
            return Err(format!("{TABLES_VAR} names no table"));
        }
        let writer = lookup(WRITER_VAR)
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER.to_owned());
        if writer.contains('#') {
            return Err(format!("{WRITER_VAR} must not contain '#', not {writer:?}"));
        }
        let config = Self {
            tables,
            writer,
            interval: secs(INTERVAL_VAR, DEFAULT_INTERVAL)?,
        };
        Ok((config, secs(RUN_VAR, DEFAULT_RUN)?))
    }
}

/// Counts of a run, for the log line and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatRun {
    /// Items written (beats and discovery's candidates).
    pub written: usize,
    /// Writes that failed (logged one by one).
    pub failed: usize,
}

impl AddAssign for HeartbeatRun {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.failed += other.failed;
    }
}

/// Writes heartbeats on a fixed beat, one per slot of each table, and keeps the slots covering
/// the tables' stream shards.
pub struct HeartbeatWriter<S> {
    /// Where they go.
    sink: S,
    /// How shards are discovered; `None` writes slot 0 alone, as writers that predate slots.
    shards: Option<Arc<dyn StreamShards>>,
    /// Tables, name and interval.
    config: HeartbeatConfig,
    /// What the writer knows of each table's stream, in the order of `config.tables`: read by
    /// the beats, changed by the checks that run beside them, and kept from one run to the next
    /// (a warm Lambda does not discover again what it found a minute ago).
    streams: Mutex<Vec<StreamKnowledge>>,
}

impl HeartbeatWriter<DynamoHeartbeats> {
    /// The writer on AWS, or on the emulator `aws` points at: items through DynamoDB, shards
    /// discovered through `DescribeTable` and DynamoDB Streams.
    #[must_use]
    pub fn on_aws(aws: &aws_config::SdkConfig, config: HeartbeatConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let shards = DynamoStreamShards::new(dynamodb.clone(), aws_sdk_dynamodbstreams::Client::new(aws));
        Self::new(DynamoHeartbeats::new(dynamodb), config).with_shards(Arc::new(shards))
    }
}

impl<S: HeartbeatSink> HeartbeatWriter<S> {
    /// A writer into `sink` that writes slot 0 alone into each table, covered, as writers that
    /// predate slots; [`Self::with_shards`] makes it discover one slot per shard.
    #[must_use]
    pub fn new(sink: S, config: HeartbeatConfig) -> Self {
        let streams = vec![StreamKnowledge::Unavailable; config.tables.len()];
        Self {
            sink,
            shards: None,
            config,
            streams: Mutex::new(streams),
        }
    }

    /// Discovers the tables' shards through `shards` and writes one slot per open shard.
    #[must_use]
    pub fn with_shards(mut self, shards: Arc<dyn StreamShards>) -> Self {
        self.shards = Some(shards);
        self.streams = Mutex::new(vec![StreamKnowledge::Unchecked; self.config.tables.len()]);
        self
    }

    /// What the writer writes into `table` at each beat; `None` for a table it does not beat into.
    #[must_use]
    pub fn plan(&self, table: &str) -> Option<SlotPlan> {
        let index = self.config.tables.iter().position(|name| name == table)?;
        Some(self.plan_at(index))
    }

    fn plan_at(&self, index: usize) -> SlotPlan {
        self.knowledge(index).plan()
    }

    fn knowledge(&self, index: usize) -> StreamKnowledge {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)[index].clone()
    }

    fn set_knowledge(&self, index: usize, knowledge: StreamKnowledge) {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)[index] = knowledge;
    }

    /// One beat: every slot's item into each table, concurrently, all stamped the same time.
    pub async fn beat(&self) -> HeartbeatRun {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let beats = (0..self.config.tables.len()).map(|index| self.beat_table(index, now_ms));
        let mut run = HeartbeatRun::default();
        for table in futures::future::join_all(beats).await {
            run += table;
        }
        run
    }

    /// The items of the table at `index`'s current plan, stamped `written_at_ms`.
    async fn beat_table(&self, index: usize, written_at_ms: i64) -> HeartbeatRun {
        let plan = self.plan_at(index);
        self.write_slots(
            &self.config.tables[index],
            &plan.slots,
            &plan.slots,
            plan.covered,
            written_at_ms,
        )
        .await
    }

    /// Writes the items of `slots` into `table`, each announcing `announced` and `covered`.
    async fn write_slots(
        &self,
        table: &str,
        slots: &[u32],
        announced: &[u32],
        covered: bool,
        written_at_ms: i64,
    ) -> HeartbeatRun {
        // Owned slots and a named future: a closure over borrowed items would make the run's
        // future not `Send` for every lifetime, and it could no longer be spawned.
        let writes = futures::stream::iter(slots.to_vec())
            .map(|slot| self.write_slot(table, slot, announced, covered, written_at_ms))
            .buffer_unordered(MAX_CONCURRENT_WRITES)
            .collect::<Vec<_>>()
            .await;
        let mut run = HeartbeatRun::default();
        for (slot, result) in writes {
            match result {
                Ok(()) => run.written += 1,
                Err(error) => {
                    run.failed += 1;
                    tracing::warn!(table = %table, slot, error = %error, "heartbeat write failed");
                }
            }
        }
        run
    }

    /// Writes `slot`'s item into `table`; returns the slot with the outcome.
    async fn write_slot(
        &self,
        table: &str,
        slot: u32,
        announced: &[u32],
        covered: bool,
        written_at_ms: i64,
    ) -> (u32, Result<(), String>) {
        let item = HeartbeatItem {
            writer: &self.config.writer,
            slot,
            written_at_ms,
            interval: self.config.interval,
            slots: announced,
            covered,
        };
        (slot, self.sink.write(table, &item).await)
    }

    /// Checks every table's open shards now and discovers slots for shards without one; a table
    /// whose plan changed is beaten into at once. Warns of each table where discovery cannot run.
    pub async fn check_shards(&self) -> HeartbeatRun {
        let mut warned = vec![false; self.config.tables.len()];
        self.check_all(&mut warned).await
    }

    /// [`Self::check_shards`], warning only of tables not in `warned` (one warning per run).
    async fn check_all(&self, warned: &mut [bool]) -> HeartbeatRun {
        let Some(shards) = self.shards.as_deref() else {
            return HeartbeatRun::default();
        };
        let checks = (0..self.config.tables.len()).map(|index| {
            let span = tracing::info_span!("heartbeat_shards", table = %self.config.tables[index]);
            async move { (index, self.check_table(index, shards).await) }.instrument(span)
        });
        let mut run = HeartbeatRun::default();
        for (index, (checked, problem)) in futures::future::join_all(checks).await {
            run += checked;
            if let Some(problem) = problem {
                let table = &self.config.tables[index];
                if std::mem::replace(&mut warned[index], true) {
                    tracing::debug!(table = %table, problem = %problem, "heartbeat shard check failed");
                } else {
                    tracing::warn!(table = %table, problem = %problem, plan = ?self.plan_at(index),
                        "heartbeat shard check failed; slots stay as last found (slot 0 alone, covered, if never found)");
                }
            }
        }
        run
    }

    /// Checks the table at `index` and discovers slots where needed; returns the items written
    /// and, when the check or discovery could not run, why.
    async fn check_table(&self, index: usize, shards: &dyn StreamShards) -> (HeartbeatRun, Option<String>) {
        let before = self.knowledge(index);
        let mut run = HeartbeatRun::default();
        let problem = match self.find_slots(index, shards, &before, &mut run).await {
            Ok(()) => None,
            Err(problem) => {
                // Never found: beat as writers that predate slots. Found before: keep that (a
                // change noticed before the failure already says "not covered").
                if matches!(self.knowledge(index), StreamKnowledge::Unchecked) {
                    self.set_knowledge(index, StreamKnowledge::Unavailable);
                }
                Some(problem)
            }
        };
        let plan = self.plan_at(index);
        let changed = plan != before.plan();
        let table = &self.config.tables[index];
        if changed && plan.covered {
            tracing::info!(table = %table, slots = ?plan.slots, "heartbeat slots cover every open shard");
        } else if !plan.covered && problem.is_none() {
            tracing::warn!(table = %table, slots = ?plan.slots,
                "heartbeat slots do not cover every open shard; tasks read through until a later check finds them");
        }
        if changed {
            run += self.beat_table(index, chrono::Utc::now().timestamp_millis()).await;
        }
        (run, problem)
    }

    /// Lists the stream's open shards and, where one has no slot, discovers them; records what it
    /// found in the writer's knowledge.
    async fn find_slots(
        &self,
        index: usize,
        shards: &dyn StreamShards,
        before: &StreamKnowledge,
        run: &mut HeartbeatRun,
    ) -> Result<(), String> {
        let table = &self.config.tables[index];
        let stream_arn = shards
            .stream_arn(table)
            .await?
            .ok_or_else(|| format!("{table} has no stream enabled"))?;
        let open = shards.open_shards(&stream_arn).await?;
        let mut known = match before {
            StreamKnowledge::Known(known) if known.stream_arn == stream_arn => known.clone(),
            _ => KnownShards {
                stream_arn,
                ..KnownShards::default()
            },
        };
        known.seen.retain(|_, shard| open.contains(shard));
        known.open = open;
        // What was found before stays the writer's word until discovery ends: noticing a change
        // is published now (not covered), a first discovery that fails leaves "never found".
        let was_known = matches!(before, StreamKnowledge::Known(_));
        if was_known {
            self.set_knowledge(index, StreamKnowledge::Known(known.clone()));
        }
        let discovered = if plan_slots(&known.open, &known.seen).covered {
            Ok(())
        } else {
            self.discover(table, shards, &mut known, run).await
        };
        if discovered.is_ok() || was_known {
            self.set_knowledge(index, StreamKnowledge::Known(known));
        }
        discovered
    }

    /// Rounds of candidates until every open shard of `known` has a slot, or the bounds are
    /// reached: the rest stay uncovered until a later check.
    ///
    /// # Errors
    /// When no shard could be read at all in a round (the calls are refused).
    async fn discover(
        &self,
        table: &str,
        shards: &dyn StreamShards,
        known: &mut KnownShards,
        run: &mut HeartbeatRun,
    ) -> Result<(), String> {
        let stream_arn = known.stream_arn.clone();
        let mut tried = BTreeSet::new();
        for round in 1..=DISCOVERY_ROUNDS {
            let lowest = lowest_slots(&known.open, &known.seen);
            let uncovered: Vec<String> = known
                .open
                .iter()
                .filter(|shard| !lowest.contains_key(shard.as_str()))
                .cloned()
                .collect();
            let count = (CANDIDATES_PER_SHARD * uncovered.len()).min(DISCOVERY_CANDIDATES - tried.len());
            if count == 0 {
                break;
            }
            let placed: BTreeSet<u32> = known.seen.keys().copied().collect();
            let candidates = next_candidates(&placed, &tried, count);
            let mut announced: Vec<u32> = lowest.values().copied().chain(candidates.iter().copied()).collect();
            announced.sort_unstable();
            announced.dedup();

            // Iterators first: they read only what is written after them.
            let stream_arn = stream_arn.as_str();
            let iterators = futures::future::join_all(
                uncovered
                    .into_iter()
                    .map(|shard| async move { (shard.clone(), shards.latest_iterator(stream_arn, &shard).await) }),
            )
            .await;
            let mut readers = Vec::new();
            let mut refused = None;
            for (shard, iterator) in iterators {
                match iterator {
                    Ok(iterator) => readers.push((shard, Some(iterator))),
                    Err(error) => refused = Some(error),
                }
            }
            if readers.is_empty() {
                return Err(refused.unwrap_or_else(|| "no shard to read".to_owned()));
            }

            *run += self
                .write_slots(
                    table,
                    &candidates,
                    &announced,
                    false,
                    chrono::Utc::now().timestamp_millis(),
                )
                .await;
            tried.extend(candidates.iter().copied());
            let by_key: HashMap<String, u32> = candidates
                .iter()
                .map(|&slot| (heartbeat_slot_pk(&self.config.writer, &slot.to_string()), slot))
                .collect();
            let found = watch(shards, readers, &by_key).await?;
            tracing::debug!(round, candidates = candidates.len(), found = ?found, "heartbeat discovery round");
            known.seen.extend(found);
        }
        Ok(())
    }

    /// Beats at once and then every interval (a late beat does not shift the schedule) until
    /// `cancel`, or until `run_for` has passed when given. Beside the beats it checks the tables'
    /// shards at once and every [`SHARD_CHECK_INTERVAL`], discovering slots where needed.
    pub async fn run_for(&self, run_for: Option<Duration>, cancel: &CancellationToken) -> HeartbeatRun {
        let stop = cancel.child_token();
        let beating = async {
            let run = self.beat_until(run_for, &stop).await;
            stop.cancel();
            run
        };
        // Biased: at a moment both are due, the beat goes first and is never delayed by a check.
        let (mut total, checked) = tokio::join!(biased; beating, self.check_until(&stop));
        total += checked;
        total
    }

    async fn beat_until(&self, run_for: Option<Duration>, stop: &CancellationToken) -> HeartbeatRun {
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut total = HeartbeatRun::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if run_for.is_some_and(|limit| started.elapsed() >= limit) {
                break;
            }
            total += self.beat().await;
        }
        total
    }

    /// Checks the shards at once and every [`SHARD_CHECK_INTERVAL`] until `stop`; a check still
    /// running then is abandoned (what it found so far is kept).
    async fn check_until(&self, stop: &CancellationToken) -> HeartbeatRun {
        let mut total = HeartbeatRun::default();
        if self.shards.is_none() {
            return total;
        }
        let mut warned = vec![false; self.config.tables.len()];
        let mut ticker = tokio::time::interval(SHARD_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                run = self.check_all(&mut warned) => total += run,
            }
        }
        total
    }
}

/// Reads `readers` (shard, iterator) every [`DISCOVERY_POLL`] until a candidate of `by_key`
/// has shown up in each, or [`DISCOVERY_WAIT`] has passed; returns the shard each candidate
/// seen appeared in.
///
/// # Errors
/// When every read failed.
async fn watch(
    shards: &dyn StreamShards,
    mut readers: Vec<(String, Option<String>)>,
    by_key: &HashMap<String, u32>,
) -> Result<BTreeMap<u32, String>, String> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
    let mut found = BTreeMap::new();
    let mut read_once = false;
    let mut failure = None;
    loop {
        let pending: Vec<(usize, String)> = readers
            .iter()
            .enumerate()
            .filter_map(|(at, (_, iterator))| Some((at, iterator.clone()?)))
            .collect();
        let reads = pending
            .into_iter()
            .map(|(at, iterator)| async move { (at, shards.read(&iterator).await) });
        for (at, page) in futures::future::join_all(reads).await {
            let (shard, iterator) = &mut readers[at];
            match page {
                Ok(page) => {
                    read_once = true;
                    *iterator = page.next_iterator;
                    let mut shown = false;
                    for slot in page.partition_keys.iter().filter_map(|pk| by_key.get(pk)) {
                        found.insert(*slot, shard.clone());
                        shown = true;
                    }
                    if shown {
                        // Done with this shard: its lowest candidate so far is its slot.
                        *iterator = None;
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        if readers.iter().all(|(_, iterator)| iterator.is_none())
            || tokio::time::Instant::now() + DISCOVERY_POLL > deadline
        {
            break;
        }
        tokio::time::sleep(DISCOVERY_POLL).await;
    }
    match failure {
        Some(error) if !read_once => Err(error),
        _ => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One item as a sink saw it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Written {
        table: String,
        writer: String,
        slot: u32,
        written_at_ms: i64,
        slots: Vec<u32>,
        covered: bool,
        /// On the test's paused clock, since the test began.
        at: Duration,
    }

    impl Written {
        fn new(table: &str, item: &HeartbeatItem<'_>, since: tokio::time::Instant) -> Self {
            Self {
                table: table.to_owned(),
                writer: item.writer.to_owned(),
                slot: item.slot,
                written_at_ms: item.written_at_ms,
                slots: item.slots.to_vec(),
                covered: item.covered,
                at: since.elapsed(),
            }
        }
    }

    struct Recorder {
        writes: Mutex<Vec<Written>>,
        failing_table: Option<String>,
        started: tokio::time::Instant,
    }

    impl Recorder {
        fn new(failing_table: Option<&str>) -> Self {
            Self {
                writes: Mutex::default(),
                failing_table: failing_table.map(str::to_owned),
                started: tokio::time::Instant::now(),
            }
        }
    }

    #[async_trait]
    impl HeartbeatSink for &Recorder {
        async fn write(&self, table: &str, item: &HeartbeatItem<'_>) -> Result<(), String> {
            if self.failing_table.as_deref() == Some(table) {
                return Err("refused".into());
            }
            self.writes
                .lock()
                .expect("lock")
                .push(Written::new(table, item, self.started));
            Ok(())
        }
    }

    fn config() -> HeartbeatConfig {
        HeartbeatConfig {
            tables: vec!["users".into(), "roles".into()],
            writer: "w".into(),
            interval: Duration::from_secs(5),
        }
    }

    fn shard_set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn seen(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
        pairs.iter().map(|(slot, shard)| (*slot, (*shard).to_owned())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_beats_into_every_table_each_interval_and_stops_on_time() {
        let recorder = Recorder::new(None);
        let writer = HeartbeatWriter::new(&recorder, config());
        let run = writer
            .run_for(Some(Duration::from_secs(60)), &CancellationToken::new())
            .await;
        // Beats at 0, 5, …, 55 s: twelve per table, slot 0 alone without discovery.
        assert_eq!(run, HeartbeatRun { written: 24, failed: 0 });
        let writes = recorder.writes.lock().expect("lock");
        assert!(writes.iter().all(|w| w.writer == "w"
            && w.written_at_ms > 0
            && w.slot == 0
            && w.slots == [0]
            && w.covered));
        assert_eq!(writes.iter().filter(|w| w.table == "roles").count(), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_can_be_spawned_and_stops_when_cancelled() {
        let fake = FakeStream::new("users", &["s1"], &[]);
        let writer = fake.writer("users");
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let run = tokio::spawn(async move { writer.run_for(None, &stop).await });
        tokio::time::sleep(Duration::from_secs(12)).await;
        cancel.cancel();
        let run = run.await.expect("the run ends");
        // Beats at 0, 5 and 10 s; the check at 0 s: 4 candidates and the beat announcing slot 0.
        assert_eq!(run, HeartbeatRun { written: 8, failed: 0 });
    }

    #[tokio::test]
    async fn a_failing_table_does_not_stop_the_other() {
        let recorder = Recorder::new(Some("users"));
        let run = HeartbeatWriter::new(&recorder, config()).beat().await;
        assert_eq!(run, HeartbeatRun { written: 1, failed: 1 });
    }

    #[test]
    fn configuration_defaults_and_errors() {
        let vars: HashMap<&str, &str> = HashMap::from([("USERS_TABLE", "p-users"), (INTERVAL_VAR, "0.5")]);
        let (config, run) = HeartbeatConfig::from_lookup(|var| vars.get(var).map(|v| (*v).to_owned())).expect("config");
        assert_eq!(config.tables, ["p-users", "staleless-app-roles"]);
        assert_eq!(config.writer, "staleless");
        assert_eq!(config.interval, Duration::from_millis(500));
        assert_eq!(run, DEFAULT_RUN);
        let bad = HeartbeatConfig::from_lookup(|var| (var == INTERVAL_VAR).then(|| "-1".to_owned()));
        assert!(bad.expect_err("negative").contains(INTERVAL_VAR));
        let hashed = HeartbeatConfig::from_lookup(|var| (var == WRITER_VAR).then(|| "a#1".to_owned()));
        assert!(hashed.expect_err("separator").contains(WRITER_VAR));
    }

    #[test]
    fn the_writer_beats_into_every_source_table_unless_told_which() {
        let tables = |vars: &[(&str, &str)]| {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
            HeartbeatConfig::from_lookup(|var| vars.get(var).map(|v| (*v).to_owned())).map(|(config, _)| config.tables)
        };
        let third = [
            ("RELAY_SOURCES", "users,roles,orgs"),
            ("SOURCE_ORGS_TABLE", "p-orgs"),
            ("SOURCE_ORGS_PK_PREFIX", "ORG#"),
        ];
        assert_eq!(
            tables(&third).expect("tables"),
            ["staleless-users", "staleless-app-roles", "p-orgs"]
        );
        assert_eq!(tables(&[(TABLES_VAR, "a, b,a")]).expect("tables"), ["a", "b"]);
        assert!(tables(&[(TABLES_VAR, " ,")]).expect_err("empty").contains(TABLES_VAR));
        let unusable = tables(&[("RELAY_SOURCES", "orgs")]).expect_err("no table");
        assert!(unusable.contains("SOURCE_ORGS_TABLE"), "{unusable}");
    }

    #[test]
    fn an_item_carries_its_slots_and_coverage() {
        let item = HeartbeatItem {
            writer: "w",
            slot: 3,
            written_at_ms: 1_732_500_000_123,
            interval: Duration::from_secs(5),
            slots: &[0, 3],
            covered: true,
        };
        let attributes = item.attributes();
        assert_eq!(attributes[PARTITION_KEY], AttributeValue::S("HEARTBEAT#w#3".into()));
        assert_eq!(attributes[SORT_KEY], AttributeValue::S(HEARTBEAT_SK.into()));
        assert_eq!(
            attributes[HEARTBEAT_WRITTEN_AT_ATTRIBUTE],
            AttributeValue::N("1732500000123".into())
        );
        assert_eq!(
            attributes[HEARTBEAT_INTERVAL_ATTRIBUTE],
            AttributeValue::N("5000".into())
        );
        assert_eq!(
            attributes[HEARTBEAT_SLOTS_ATTRIBUTE],
            AttributeValue::L(vec![AttributeValue::S("0".into()), AttributeValue::S("3".into())])
        );
        assert_eq!(attributes[HEARTBEAT_COVERED_ATTRIBUTE], AttributeValue::Bool(true));
        let first = HeartbeatItem { slot: 0, ..item };
        assert_eq!(
            first.partition_key(),
            "HEARTBEAT#w",
            "slot 0 is the key of writers before slots"
        );
    }

    #[test]
    fn a_single_shard_takes_slot_zero() {
        // moto: one shard that never splits; every candidate lands in it.
        let open = shard_set(&["shardId-1"]);
        let plan = plan_slots(&open, &seen(&[(0, "shardId-1"), (1, "shardId-1"), (3, "shardId-1")]));
        assert_eq!(
            plan,
            SlotPlan {
                slots: vec![0],
                covered: true
            }
        );
    }

    #[test]
    fn after_a_split_each_child_keeps_the_lowest_slot_seen_in_it() {
        // The parent closed; the old slot 0 was seen again in one child.
        let open = shard_set(&["child-a", "child-b"]);
        let observed = seen(&[
            (0, "child-b"),
            (1, "parent"),
            (2, "child-a"),
            (3, "child-b"),
            (5, "child-a"),
        ]);
        assert_eq!(
            plan_slots(&open, &observed),
            SlotPlan {
                slots: vec![0, 2],
                covered: true
            }
        );
    }

    #[test]
    fn a_shard_without_a_slot_leaves_the_stream_uncovered() {
        let open = shard_set(&["a", "b", "c"]);
        let plan = plan_slots(&open, &seen(&[(0, "a"), (1, "a"), (4, "c")]));
        assert_eq!(
            plan,
            SlotPlan {
                slots: vec![0, 4],
                covered: false
            }
        );
        // Nothing seen in an open shard (only in a closed one): slot 0 keeps saying so.
        let nothing = plan_slots(&open, &seen(&[(0, "closed")]));
        assert_eq!(
            nothing,
            SlotPlan {
                slots: vec![0],
                covered: false
            }
        );
        assert!(!plan_slots(&BTreeSet::new(), &BTreeMap::new()).covered);
    }

    #[test]
    fn candidates_skip_placed_and_tried_slots() {
        let placed = BTreeSet::from([0, 2]);
        let tried = BTreeSet::from([1, 4]);
        assert_eq!(next_candidates(&placed, &tried, 3), [3, 5, 6]);
    }

    /// One shard of the fake stream.
    #[derive(Debug, Clone)]
    struct FakeShard {
        id: String,
        /// The key hashes it holds, `[low, high)`; empty for a shard no key reaches.
        hashes: (u64, u64),
        open: bool,
        /// The partition key of each record.
        records: Vec<String>,
    }

    /// A stream in memory for each table: a write's record goes to the open shard whose hash
    /// range holds its key, as DynamoDB's partitioning would put it; a split divides the parent's
    /// range among its children and leaves the other shards' keys where they were.
    #[derive(Default)]
    struct FakeState {
        /// Per table, its shards in creation order.
        tables: BTreeMap<String, Vec<FakeShard>>,
        /// Every item written, in order.
        writes: Vec<Written>,
        /// `DescribeStream` calls.
        describes: usize,
        /// Whether the table reports no stream.
        no_stream: bool,
        /// Whether `DescribeStream` is refused.
        describe_refused: bool,
        /// Whether `GetRecords` is refused.
        read_refused: bool,
    }

    #[derive(Clone)]
    struct FakeStream {
        state: Arc<Mutex<FakeState>>,
        started: tokio::time::Instant,
    }

    /// A stable, well-spread hash (FNV-1a, then `MurmurHash3`'s finaliser so neighbouring keys
    /// land far apart), so which slot lands where is the same in every run.
    fn spread(text: &str) -> u64 {
        let mut hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }

    /// `ids` dividing `[low, high)` evenly, except `empty` ones, which no key reaches.
    fn divide(ids: &[&str], empty: &[&str], (low, high): (u64, u64)) -> Vec<FakeShard> {
        let reached = ids.iter().filter(|id| !empty.contains(id)).count();
        let width = (high - low) / u64::try_from(reached.max(1)).expect("count");
        let mut next = low;
        let mut shards = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let start = next;
            if !empty.contains(id) {
                let last = ids[n + 1..].iter().all(|later| empty.contains(later));
                next = if last { high } else { next + width };
            }
            shards.push(FakeShard {
                id: (*id).to_owned(),
                hashes: (start, next),
                open: true,
                records: Vec::new(),
            });
        }
        shards
    }

    impl FakeStream {
        /// `table`'s stream with open `shards`, of which `unreached` hold no key.
        fn new(table: &str, shards: &[&str], unreached: &[&str]) -> Self {
            let mut state = FakeState::default();
            state
                .tables
                .insert(table.to_owned(), divide(shards, unreached, (0, u64::MAX)));
            Self {
                state: Arc::new(Mutex::new(state)),
                started: tokio::time::Instant::now(),
            }
        }

        fn with<T>(&self, change: impl FnOnce(&mut FakeState) -> T) -> T {
            change(&mut self.state.lock().expect("lock"))
        }

        /// Closes `parent` and opens `children`, dividing its keys.
        fn split(&self, table: &str, parent: &str, children: &[&str]) {
            self.with(|state| {
                let shards = state.tables.get_mut(table).expect("table");
                let closed = shards.iter_mut().find(|shard| shard.id == parent).expect("parent");
                closed.open = false;
                let hashes = closed.hashes;
                shards.extend(divide(children, &[], hashes));
            });
        }

        /// The open shard `slot`'s key goes to.
        fn shard_of(&self, table: &str, slot: u32) -> String {
            let hash = spread(&heartbeat_slot_pk("w", &slot.to_string()));
            self.with(|state| {
                state.tables[table]
                    .iter()
                    .find(|shard| shard.open && (shard.hashes.0..shard.hashes.1).contains(&hash))
                    .map(|shard| shard.id.clone())
                    .expect("a shard holds every key")
            })
        }

        /// The lowest slot whose key goes to `shard`.
        fn lowest_slot_in(&self, table: &str, shard: &str) -> u32 {
            (0..10_000)
                .find(|&slot| self.shard_of(table, slot) == shard)
                .expect("some slot reaches the shard")
        }

        fn writes(&self) -> Vec<Written> {
            self.with(|state| state.writes.clone())
        }

        fn writer(&self, table: &str) -> HeartbeatWriter<Self> {
            let config = HeartbeatConfig {
                tables: vec![table.to_owned()],
                writer: "w".into(),
                interval: Duration::from_secs(5),
            };
            HeartbeatWriter::new(self.clone(), config).with_shards(Arc::new(self.clone()))
        }
    }

    #[async_trait]
    impl HeartbeatSink for FakeStream {
        async fn write(&self, table: &str, item: &HeartbeatItem<'_>) -> Result<(), String> {
            let written = Written::new(table, item, self.started);
            let pk = item.partition_key();
            let hash = spread(&pk);
            self.with(|state| {
                let shards = state.tables.get_mut(table).ok_or("no such table")?;
                if let Some(shard) = shards
                    .iter_mut()
                    .find(|shard| shard.open && (shard.hashes.0..shard.hashes.1).contains(&hash))
                {
                    shard.records.push(pk);
                }
                state.writes.push(written);
                Ok(())
            })
        }
    }

    #[async_trait]
    impl StreamShards for FakeStream {
        async fn stream_arn(&self, table: &str) -> Result<Option<String>, String> {
            Ok((!self.with(|state| state.no_stream)).then(|| table.to_owned()))
        }

        async fn open_shards(&self, stream_arn: &str) -> Result<BTreeSet<String>, String> {
            self.with(|state| {
                state.describes += 1;
                if state.describe_refused {
                    return Err("AccessDeniedException".to_owned());
                }
                Ok(state.tables[stream_arn]
                    .iter()
                    .filter(|shard| shard.open)
                    .map(|shard| shard.id.clone())
                    .collect())
            })
        }

        async fn latest_iterator(&self, stream_arn: &str, shard_id: &str) -> Result<String, String> {
            self.with(|state| {
                let shard = state.tables[stream_arn]
                    .iter()
                    .find(|shard| shard.id == shard_id)
                    .ok_or("no such shard")?;
                Ok(format!("{stream_arn}|{shard_id}|{}", shard.records.len()))
            })
        }

        async fn read(&self, iterator: &str) -> Result<ShardPage, String> {
            self.with(|state| {
                if state.read_refused {
                    return Err("AccessDeniedException".to_owned());
                }
                let mut parts = iterator.split('|');
                let (Some(table), Some(shard_id), Some(offset)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err("bad iterator".to_owned());
                };
                let offset: usize = offset.parse().map_err(|_| "bad offset")?;
                let shard = state.tables[table]
                    .iter()
                    .find(|shard| shard.id == shard_id)
                    .ok_or("no such shard")?;
                Ok(ShardPage {
                    partition_keys: shard.records[offset..].to_vec(),
                    next_iterator: shard
                        .open
                        .then(|| format!("{table}|{shard_id}|{}", shard.records.len())),
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_writes_one_slot_per_shard_and_beats_only_those() {
        let fake = FakeStream::new("users", &["s1", "s2", "s3"], &[]);
        let writer = fake.writer("users");
        assert_eq!(
            writer.plan("users"),
            Some(SlotPlan {
                slots: vec![0],
                covered: false
            }),
            "before the first check"
        );
        writer.check_shards().await;
        let mut expected: Vec<u32> = ["s1", "s2", "s3"]
            .iter()
            .map(|shard| fake.lowest_slot_in("users", shard))
            .collect();
        expected.sort_unstable();
        let plan = writer.plan("users").expect("plan");
        assert_eq!(
            plan,
            SlotPlan {
                slots: expected,
                covered: true
            }
        );

        let candidates: Vec<Written> = fake.writes().into_iter().filter(|w| !w.covered).collect();
        assert_eq!(candidates.len(), 12, "one round: 4 candidates per shard");
        assert!(candidates.iter().all(|w| w.slots == (0..12).collect::<Vec<_>>()));
        assert!(
            candidates
                .iter()
                .all(|w| w.written_at_ms == candidates[0].written_at_ms)
        );

        let before = fake.writes().len();
        writer.beat().await;
        let beat = &fake.writes()[before..];
        assert_eq!(beat.iter().map(|w| w.slot).collect::<Vec<_>>(), plan.slots);
        assert!(
            beat.iter()
                .all(|w| w.covered && w.slots == plan.slots && w.written_at_ms == beat[0].written_at_ms)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_is_noticed_at_the_next_check_and_covered_again() {
        let fake = FakeStream::new("users", &["parent"], &[]);
        let writer = fake.writer("users");
        let split = async {
            tokio::time::sleep(Duration::from_secs(40)).await;
            fake.split("users", "parent", &["child-a", "child-b"]);
        };
        let cancel = CancellationToken::new();
        let (run, ()) = tokio::join!(writer.run_for(Some(Duration::from_secs(70)), &cancel), split);
        assert_eq!(run.failed, 0);
        assert_eq!(fake.with(|state| state.describes), 3, "checks at 0, 30 and 60 s");

        let mut expected: Vec<u32> = ["child-a", "child-b"]
            .iter()
            .map(|child| fake.lowest_slot_in("users", child))
            .collect();
        expected.sort_unstable();
        assert!(expected.contains(&0), "the old slot lands in one of the children");
        assert_eq!(
            writer.plan("users"),
            Some(SlotPlan {
                slots: expected.clone(),
                covered: true
            })
        );

        let writes = fake.writes();
        let at = |seconds: u64| -> Vec<&Written> {
            writes.iter().filter(|w| w.at == Duration::from_secs(seconds)).collect()
        };
        // The first beat precedes the first check; the check then announces slot 0, covered.
        assert!(at(0).first().is_some_and(|w| w.slots == [0] && !w.covered));
        assert!(at(0).last().is_some_and(|w| w.slots == [0] && w.covered));
        // After the split, until the check at 60 s: slot 0 alone, covered, as last found.
        for seconds in [5, 40, 45, 55] {
            let beat = at(seconds);
            assert!(
                !beat.is_empty() && beat.iter().all(|w| w.slots == [0] && w.covered),
                "{seconds} s: {beat:?}"
            );
        }
        // The check at 60 s (after that moment's beat) wrote candidates (not covered) for the
        // two children, four each in its first round, then a beat announcing their slots; the
        // beat at 65 s writes exactly those.
        let checking: Vec<&Written> = writes
            .iter()
            .filter(|w| (Duration::from_secs(60)..Duration::from_secs(65)).contains(&w.at))
            .collect();
        assert!(checking[0].covered && checking[0].slots == [0], "{checking:?}");
        let first_round: Vec<&&Written> = checking.iter().filter(|w| !w.covered).take(8).collect();
        assert!(
            first_round.iter().all(|w| w.slots == (0..8).collect::<Vec<_>>()),
            "{first_round:?}"
        );
        assert!(
            checking.last().is_some_and(|w| w.covered && w.slots == expected),
            "{checking:?}"
        );
        assert_eq!(at(65).iter().map(|w| w.slot).collect::<Vec<_>>(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_never_reached_stays_uncovered_within_the_round_limit() {
        let fake = FakeStream::new("users", &["s1", "s2"], &["s2"]);
        let writer = fake.writer("users");
        let started = tokio::time::Instant::now();
        writer.check_shards().await;
        assert_eq!(
            writer.plan("users"),
            Some(SlotPlan {
                slots: vec![0],
                covered: false
            })
        );
        // Round 1: 4 per shard without a slot (8); then 4 a round for s2 alone.
        let candidates = fake.writes().iter().filter(|w| !w.covered).count();
        assert_eq!(candidates, 8 + 4 * (DISCOVERY_ROUNDS - 1));
        // Every round waited its full time for s2.
        assert_eq!(started.elapsed(), DISCOVERY_WAIT * 8);
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_stops_at_its_candidate_budget() {
        let shards: Vec<String> = (0..40).map(|n| format!("s{n:02}")).collect();
        let ids: Vec<&str> = shards.iter().map(String::as_str).collect();
        let fake = FakeStream::new("users", &ids, &ids[1..]);
        let writer = fake.writer("users");
        writer.check_shards().await;
        let writes = fake.writes();
        let slots: BTreeSet<u32> = writes.iter().map(|w| w.slot).collect();
        assert_eq!(writes.len(), DISCOVERY_CANDIDATES);
        assert_eq!(slots.len(), DISCOVERY_CANDIDATES, "every candidate is a new slot");
        assert!(!writer.plan("users").expect("plan").covered);
    }

    #[tokio::test(start_paused = true)]
    async fn where_discovery_cannot_run_the_writer_beats_slot_zero_as_before() {
        let refusals: [fn(&mut FakeState); 3] = [
            |state| state.no_stream = true,
            |state| state.describe_refused = true,
            |state| state.read_refused = true,
        ];
        for refuse in refusals {
            let fake = FakeStream::new("users", &["s1", "s2"], &[]);
            fake.with(refuse);
            let writer = fake.writer("users");
            writer.check_shards().await;
            assert_eq!(
                writer.plan("users"),
                Some(SlotPlan {
                    slots: vec![0],
                    covered: true
                })
            );
            let before = fake.writes().len();
            writer.beat().await;
            let beat = &fake.writes()[before..];
            assert_eq!(beat.len(), 1);
            assert!(beat[0].slot == 0 && beat[0].slots == [0] && beat[0].covered);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_keeps_the_coverage_last_found() {
        let fake = FakeStream::new("users", &["s1", "s2"], &[]);
        let writer = fake.writer("users");
        writer.check_shards().await;
        let found = writer.plan("users").expect("plan");
        assert!(found.covered && found.slots.len() == 2, "{found:?}");
        fake.with(|state| state.describe_refused = true);
        let before = fake.writes().len();
        writer.check_shards().await;
        assert_eq!(writer.plan("users"), Some(found.clone()));
        assert_eq!(fake.writes().len(), before, "nothing changed, nothing written");

        // A split noticed, then reads refused: not covered until a later check finds the slots;
        // s2 keeps its slot throughout.
        fake.with(|state| {
            state.describe_refused = false;
            state.read_refused = true;
        });
        fake.split("users", "s1", &["s3", "s4"]);
        writer.check_shards().await;
        let uncovered = writer.plan("users").expect("plan");
        assert!(!uncovered.covered, "{uncovered:?}");
        let s2 = fake.lowest_slot_in("users", "s2");
        assert_eq!(uncovered.slots, [s2]);
        fake.with(|state| state.read_refused = false);
        writer.check_shards().await;
        let mut expected: Vec<u32> = ["s2", "s3", "s4"]
            .iter()
            .map(|shard| fake.lowest_slot_in("users", shard))
            .collect();
        expected.sort_unstable();
        assert_eq!(
            writer.plan("users"),
            Some(SlotPlan {
                slots: expected,
                covered: true
            })
        );
    }
}
