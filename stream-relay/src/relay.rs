//! One invocation: map and coalesce the batch, pack the keys into messages, publish them with
//! retries, and report the first record whose keys did not go out as the batch item failure.
//!
//! A record of a watched table is never dropped: one that names no key publishes a flush of its
//! table's caches (of every cache when it names no table), in order with the batch's other
//! messages, and is logged with its sequence number, table and reason.
//!
//! The same [`Relay`] serves the Lambda (through [`function_handler`]) and the local event
//! source mapping in `infra` (through [`Relay::handle_records`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use staleless_protocol::{EncodeError, Invalidation, Source, pack_invalidation_messages, sns_body_budget};
use tracing::Instrument;

use crate::mapping::{
    ChangeKind, Mapped, MappedBatch, Mapper, PendingFlush, PendingKey, SkipReason, map_batch, table_of_record,
};
use crate::metrics::MetricsSink;
use crate::publish::{MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, PublishEntry, PublishError, Publisher};

/// How throttled or transient publish failures are retried inside one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per `PublishBatch` call, the first included.
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one pause.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Six attempts over about 1.5 s: enough to ride out a throttling burst, far inside the
    /// function's 30 s timeout, and short enough that a real outage is handed back to Lambda's
    /// own retries (which bisect and finally give the batch up to the invalidation topic: every
    /// task flushes that table, and the dead-letter queue keeps a copy).
    pub const DEFAULT: Self = Self {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    };

    /// The pause after failed attempt number `attempt` (1-based).
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one invocation did, for the log line and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationSummary {
    /// Records in the event, unreadable ones included.
    pub records_in: usize,
    /// Records that invalidate a key.
    pub records_invalidating: usize,
    /// Heartbeat records.
    pub heartbeats: usize,
    /// Records of a watched table that name no key, so flush their table's caches.
    pub records_flushing: usize,
    /// Ticks SNS accepted, by source.
    pub ticks_published: BTreeMap<Source, usize>,
    /// Flushes SNS accepted, each for records that named no key (the `UnreadableRecordFlushes`
    /// metric).
    pub flushes_published: usize,
    /// Of the invalidating records, deletions by DynamoDB's TTL process.
    pub ttl_expiries: usize,
    /// MODIFY records that changed only ignored attributes (or nothing).
    pub skipped_no_op: usize,
    /// Records of items no cache holds.
    pub skipped_ignored: usize,
    /// Records that publish nothing because nothing of them can be relayed: heartbeat records
    /// read only in part, and records the caller dropped.
    pub skipped_malformed: usize,
    /// Records read only in part, whatever they published (their key, a flush, or nothing), each
    /// logged with its sequence number (the `MalformedRecords` metric). A record of a table the
    /// relay does not serve is ignored whatever its shape.
    pub records_malformed: usize,
    /// Distinct (source, key) pairs after coalescing.
    pub keys: usize,
    /// Keys whose message SNS accepted.
    pub keys_published: usize,
    /// Messages SNS accepted.
    pub messages_published: usize,
    /// `PublishBatch` calls made, retries included.
    pub sns_calls: usize,
    /// Retries after throttling or transient errors.
    pub publish_retries: usize,
    /// Time spent publishing, retries and backoff included.
    pub publish_latency: Duration,
    /// Age of the oldest record at the start of the invocation (from `ApproximateCreationDateTime`).
    pub max_lag: Option<Duration>,
    /// The sequence number reported as the batch item failure, if any.
    pub failed_from: Option<String>,
}

/// The response and what was done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayOutcome {
    /// What Lambda gets back: empty `batchItemFailures` means the whole batch is done.
    pub response: DynamoDbEventResponse,
    /// Counts for logs and tests.
    pub summary: InvocationSummary,
}

/// The DynamoDB stream event as the Lambda runtime delivers it, read record by record, so that
/// one record Lambda's type cannot parse is relayed as what can be read of it instead of failing
/// the whole invocation (which would block the shard until the record ages out).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LenientEvent {
    /// The records, each still raw JSON.
    #[serde(rename = "Records", default)]
    pub records: Vec<serde_json::Value>,
}

/// Turns stream records into invalidations on the topic.
pub struct Relay {
    /// Record → key mapping of this deployment.
    mapper: Mapper,
    /// Where messages go.
    publisher: Arc<dyn Publisher>,
    /// Retries of throttled calls.
    retry: RetryPolicy,
    /// Size budget of one message; below SNS's limit by the attribute allowance.
    max_message_bytes: usize,
    /// Where the invocation's counts go as metrics (CloudWatch on Lambda, nowhere locally).
    metrics: MetricsSink,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("mapper", &self.mapper)
            .field("retry", &self.retry)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

/// One message to publish and the first batch record that needs it.
struct OutgoingMessage {
    /// Its `source` attribute; `None` for every source.
    source: Option<Source>,
    body: String,
    carries: Carries,
    first_record: usize,
}

/// What an [`OutgoingMessage`] carries, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Carries {
    /// This many keys to invalidate.
    Keys(usize),
    /// A tick of this source.
    Tick(Source),
    /// A flush for records that named no key.
    Flush,
}

impl Relay {
    /// A relay publishing through `publisher` with the default retry policy and message size.
    #[must_use]
    pub fn new(mapper: Mapper, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            mapper,
            publisher,
            retry: RetryPolicy::DEFAULT,
            max_message_bytes: sns_body_budget(),
            metrics: MetricsSink::None,
        }
    }

    /// Sends each invocation's counts to `metrics` (the Lambda uses CloudWatch's embedded metric
    /// format, which the tick, malformed-record and unreadable-record alarms of `template.yaml`
    /// read).
    #[must_use]
    pub const fn with_metrics(mut self, metrics: MetricsSink) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replaces the retry policy (tests use short pauses).
    #[must_use]
    pub const fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the message size budget (tests use small ones to get many messages); never above
    /// SNS's own limit.
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.min(sns_body_budget());
        self
    }

    /// Handles a typed event (the local event source mapping builds these).
    pub async fn handle_event(&self, event: &Event) -> RelayOutcome {
        self.handle_records(&event.records, 0).await
    }

    /// Handles the event as the Lambda runtime delivers it. A record Lambda's type cannot read is
    /// logged and relayed as what can still be read of it: a record that names no key, so a flush
    /// of its table's caches (of every cache when it names no table; another table's is ignored).
    pub async fn handle_lenient(&self, event: LenientEvent) -> RelayOutcome {
        let records: Vec<EventRecord> = event
            .records
            .iter()
            .enumerate()
            .map(|(position, raw)| {
                EventRecord::deserialize(raw).unwrap_or_else(|err| {
                    let record = stand_in(raw);
                    tracing::warn!(
                        position,
                        sequence_number = record.change.sequence_number.as_deref().unwrap_or("none"),
                        table = table_of_record(&record).unwrap_or("none"),
                        reason = %err,
                        "a stream record does not parse: relaying it without its key and images"
                    );
                    record
                })
            })
            .collect();
        self.handle_records(&records, 0).await
    }

    /// Handles parsed records; `unparseable` more were already dropped by the caller and are
    /// counted as malformed. Never fails: a publish failure becomes a batch item failure in the
    /// response.
    pub async fn handle_records(&self, records: &[EventRecord], unparseable: usize) -> RelayOutcome {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let MappedBatch { keys, flushes, counts } = map_batch(&self.mapper, records, now_ms, log_record);
        let mut summary = InvocationSummary {
            records_in: records.len() + unparseable,
            records_invalidating: counts.invalidating,
            heartbeats: counts.heartbeats,
            records_flushing: counts.flushing,
            ttl_expiries: counts.ttl_expiries,
            skipped_no_op: counts.no_op,
            skipped_ignored: counts.ignored,
            skipped_malformed: counts.malformed + unparseable,
            records_malformed: counts.read_in_part + unparseable,
            keys: keys.len(),
            max_lag: records
                .iter()
                .map(|record| record.change.approximate_creation_date_time.timestamp_millis())
                .filter(|created| *created > 0)
                .min()
                .and_then(|oldest| u64::try_from(now_ms - oldest).ok())
                .map(Duration::from_millis),
            ..InvocationSummary::default()
        };

        let first_unpublished = self.publish(&keys, &flushes, &mut summary).await;
        let mut response = DynamoDbEventResponse::default();
        if let Some(position) = first_unpublished {
            // The first unpublished record's sequence number; for a record without one, the
            // nearest earlier record's (retrying from earlier only repeats idempotent messages);
            // with none at all, an empty identifier, which Lambda reads as a failure of the
            // whole batch. Never nothing: that would acknowledge records whose messages were
            // not sent.
            let seq = records
                .iter()
                .take(position.saturating_add(1))
                .rev()
                .find_map(|record| record.change.sequence_number.clone().filter(|seq| !seq.is_empty()))
                .unwrap_or_default();
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(seq.clone());
            response.batch_item_failures.push(failure);
            summary.failed_from = Some(seq);
        }
        log_summary(&summary);
        self.metrics.record(&summary);
        RelayOutcome { response, summary }
    }

    /// Publishes every key and flush; returns the batch position of the first record whose
    /// messages did not go out, if any.
    async fn publish(
        &self,
        keys: &[PendingKey<'_>],
        flushes: &[PendingFlush<'_>],
        summary: &mut InvocationSummary,
    ) -> Option<usize> {
        let messages = match self.pack(keys, flushes) {
            Ok(messages) => messages,
            Err(err) => {
                // Only a key over 256 KiB can do this, and DynamoDB keys are at most 2 KiB: a bug,
                // reported as a failure of the whole batch so nothing is acknowledged unsent.
                tracing::error!(error = %err, "cannot encode invalidations");
                return keys
                    .iter()
                    .map(|key| key.first_record)
                    .chain(flushes.iter().map(|flush| flush.first_record))
                    .min();
            }
        };
        let started = Instant::now();
        let mut next = 0;
        let mut first_unpublished = None;
        while next < messages.len() {
            let call = batch_end(&messages, next);
            let entries: Vec<PublishEntry> = messages[next..call]
                .iter()
                .enumerate()
                .map(|(index, message)| PublishEntry {
                    id: index.to_string(),
                    source: message.source.clone(),
                    body: message.body.clone(),
                })
                .collect();
            match self.publish_with_retries(&entries, summary).await {
                Ok(()) => {
                    summary.messages_published += entries.len();
                    for message in &messages[next..call] {
                        match &message.carries {
                            Carries::Keys(keys) => summary.keys_published += keys,
                            Carries::Tick(source) => {
                                *summary.ticks_published.entry(source.clone()).or_default() += 1;
                            }
                            Carries::Flush => summary.flushes_published += 1,
                        }
                    }
                    next = call;
                }
                Err(err) => {
                    // Messages are ordered by their first record, so every record from this
                    // message's first one on is unpublished; later calls would be retried anyway.
                    first_unpublished = messages.get(next).map(|message| message.first_record);
                    tracing::error!(error = %err, unsent_messages = messages.len() - next, "publishing invalidations failed");
                    break;
                }
            }
        }
        summary.publish_latency = started.elapsed();
        first_unpublished
    }

    async fn publish_with_retries(
        &self,
        entries: &[PublishEntry],
        summary: &mut InvocationSummary,
    ) -> Result<(), PublishError> {
        let mut attempt = 1;
        loop {
            summary.sns_calls += 1;
            match self.publisher.publish_batch(entries).await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_retryable() && attempt < self.retry.max_attempts => {
                    let pause = self.retry.backoff(attempt);
                    tracing::warn!(error = %err, attempt, pause_ms = pause.as_millis(), "retrying PublishBatch");
                    summary.publish_retries += 1;
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Packs each source's keys into messages, each heartbeat into a tick and each flush into a
    /// `flush_all`, then orders all messages by the first record that needs them, so that a
    /// failure part-way acknowledges as many records as possible and a tick never goes out before
    /// the changes (or flushes) it vouches for.
    fn pack(&self, keys: &[PendingKey<'_>], flushes: &[PendingFlush<'_>]) -> Result<Vec<OutgoingMessage>, EncodeError> {
        let mut messages = Vec::new();
        for heartbeat in keys.iter().filter(|key| key.kind == ChangeKind::Heartbeat) {
            // `HEARTBEAT#<writer>#<slot>`: each slot is one heartbeat item, on one shard.
            let (writer, slot) = staleless_protocol::keys::heartbeat_writer_and_slot(heartbeat.id);
            let announcement = heartbeat.announcement;
            let tick = Invalidation::Tick {
                source: heartbeat.source.clone(),
                written_at_ms: heartbeat.at_ms,
                writer: Some(writer.to_owned()),
                slot: (slot != staleless_protocol::keys::FIRST_HEARTBEAT_SLOT).then(|| slot.to_owned()),
                slots: announcement.and_then(|announcement| announcement.slot_names()),
                covered: announcement.and_then(|announcement| announcement.covered),
                interval_ms: heartbeat.interval_ms,
            };
            messages.push(OutgoingMessage {
                source: Some(heartbeat.source.clone()),
                body: tick.encode()?,
                carries: Carries::Tick(heartbeat.source.clone()),
                first_record: heartbeat.first_record,
            });
        }
        for flush in flushes {
            let message = Invalidation::FlushAll {
                source: flush.source.cloned(),
                reason: Some(flush.reason()),
            };
            messages.push(OutgoingMessage {
                source: flush.source.cloned(),
                body: message.encode()?,
                carries: Carries::Flush,
                first_record: flush.first_record,
            });
        }
        for source in self.mapper.sources() {
            let of_source: Vec<&PendingKey<'_>> = keys
                .iter()
                .filter(|key| key.source == source && key.kind == ChangeKind::Key)
                .collect();
            let packed = pack_invalidation_messages(
                source,
                of_source.iter().map(|key| key.key_version()),
                self.max_message_bytes,
            )?;
            let mut offset = 0;
            for message in packed {
                // Keys are in first-record order, so a message's first key has its earliest record.
                let first_record = of_source.get(offset).map_or(usize::MAX, |key| key.first_record);
                offset += message.key_count;
                messages.push(OutgoingMessage {
                    source: Some(source.clone()),
                    body: message.body,
                    carries: Carries::Keys(message.key_count),
                    first_record,
                });
            }
        }
        messages.sort_by_key(|message| message.first_record);
        Ok(messages)
    }
}

/// End (exclusive) of the `PublishBatch` call starting at `start`: at most ten entries and
/// 256 KiB in total, and always at least one entry.
fn batch_end(messages: &[OutgoingMessage], start: usize) -> usize {
    let mut end = start;
    let mut bytes = 0;
    while end < messages.len() && end - start < MAX_BATCH_ENTRIES {
        let size = messages[end].body.len() + staleless_protocol::MESSAGE_ATTRIBUTE_ALLOWANCE_BYTES;
        if end > start && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        end += 1;
    }
    end
}

/// What a record that is not plainly relayed is worth in the log: a warning naming its sequence
/// number, table and reason when it was read only in part, a debug line when it is skipped.
fn log_record(position: usize, record: &EventRecord, mapped: Mapped<'_>) {
    let sequence_number = record.change.sequence_number.as_deref().unwrap_or("none");
    let table = table_of_record(record).unwrap_or("none");
    match mapped {
        Mapped::Flush(flush) => tracing::warn!(
            position,
            sequence_number,
            table,
            event_id = %record.event_id,
            flushed = flush.source.map_or("every source", Source::as_str),
            reason = flush.reason,
            "a stream record of a watched table names no key: flushing its caches"
        ),
        Mapped::Invalidate(change) => {
            if let Some(why) = change.defect {
                tracing::warn!(
                    position,
                    sequence_number,
                    table,
                    event_id = %record.event_id,
                    key = change.id,
                    reason = why,
                    "a stream record read only in part: invalidating the key it names"
                );
            }
        }
        Mapped::Skip(SkipReason::Malformed(why)) => tracing::warn!(
            position,
            sequence_number,
            table,
            event_id = %record.event_id,
            reason = why,
            "skipping a heartbeat record read only in part: no tick rests on it"
        ),
        Mapped::Skip(SkipReason::Ignored(why)) => {
            tracing::debug!(sequence_number, reason = why, "ignoring a stream record")
        }
        Mapped::Skip(SkipReason::NoOp) => tracing::debug!(sequence_number, "no-op change; nothing to invalidate"),
    }
}

/// What can be read of a record Lambda's type refuses, whatever else is wrong with it: its id,
/// event name, table and sequence number, never its key or images (they may be what is broken).
/// Mapped like any record, it flushes its table's caches (every cache when it names no table)
/// or is ignored as another table's, and a failed publish still reports its sequence number.
fn stand_in(raw: &serde_json::Value) -> EventRecord {
    let text = |pointer: &str| {
        raw.pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let mut record = EventRecord::default();
    record.event_id = text("/eventID").unwrap_or_default();
    record.event_name = text("/eventName").unwrap_or_default();
    record.event_source_arn = text("/eventSourceARN");
    record.table_name = text("/tableName");
    record.change.sequence_number = text("/dynamodb/SequenceNumber");
    record
}

fn log_summary(summary: &InvocationSummary) {
    tracing::info!(
        records_in = summary.records_in,
        records_invalidating = summary.records_invalidating,
        heartbeats = summary.heartbeats,
        records_flushing = summary.records_flushing,
        ticks = ?summary.ticks_published,
        flushes_published = summary.flushes_published,
        ttl_expiries = summary.ttl_expiries,
        skipped_no_op = summary.skipped_no_op,
        skipped_ignored = summary.skipped_ignored,
        skipped_malformed = summary.skipped_malformed,
        records_malformed = summary.records_malformed,
        keys = summary.keys,
        keys_published = summary.keys_published,
        messages_published = summary.messages_published,
        sns_calls = summary.sns_calls,
        publish_retries = summary.publish_retries,
        publish_latency_ms = u64::try_from(summary.publish_latency.as_millis()).unwrap_or(u64::MAX),
        max_lag_ms = summary
            .max_lag
            .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)),
        failed_from = summary.failed_from.as_deref(),
        "relayed stream batch"
    );
}

/// The Lambda handler: `main` wires it with `service_fn`.
///
/// # Errors
/// Never: publish failures are reported as `batchItemFailures` so that Lambda retries from the
/// first unpublished record only.
pub async fn function_handler(
    relay: &Relay,
    event: LambdaEvent<LenientEvent>,
) -> Result<DynamoDbEventResponse, lambda_runtime::Error> {
    let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
    Ok(relay.handle_lenient(event.payload).instrument(span).await.response)
}
