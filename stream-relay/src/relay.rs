//! One invocation: map and coalesce the batch, pack the keys into messages, publish them with
//! retries, and report the first record whose keys did not go out as the batch item failure.
//!
//! The same [`Relay`] serves the Lambda (through [`function_handler`]) and the local event
//! source mapping in `infra` (through [`Relay::handle_records`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use staleless_protocol::{EncodeError, Invalidation, Source, pack_invalidation_messages, sns_body_budget};
use tracing::Instrument;

use crate::mapping::{ChangeKind, Mapper, PendingKey, SkipReason, map_batch};
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
    /// own retries (which bisect and finally park the batch on the dead-letter queue).
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
    /// Ticks SNS accepted, by source (users, roles).
    pub ticks_published: [usize; 2],
    /// Of those, deletions by DynamoDB's TTL process.
    pub ttl_expiries: usize,
    /// MODIFY records that changed only ignored attributes (or nothing).
    pub skipped_no_op: usize,
    /// Records of items no cache holds.
    pub skipped_ignored: usize,
    /// Records that could not be read (logged one by one with their sequence numbers).
    pub skipped_malformed: usize,
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
/// one record Lambda's type cannot parse is skipped instead of failing the whole invocation
/// (which would block the shard until the record ages out).
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
    source: Source,
    body: String,
    keys: usize,
    first_record: usize,
    /// A tick rather than an invalidation.
    tick: bool,
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
    /// format, which the tick and malformed-record alarms of `template.yaml` read).
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

    /// Handles the event as the Lambda runtime delivers it; records that do not parse are
    /// logged, counted as malformed and skipped.
    pub async fn handle_lenient(&self, event: LenientEvent) -> RelayOutcome {
        let total = event.records.len();
        let mut records = Vec::with_capacity(total);
        for raw in event.records {
            let sequence_number = raw
                .pointer("/dynamodb/SequenceNumber")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match serde_json::from_value::<EventRecord>(raw) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(
                    sequence_number = sequence_number.as_deref().unwrap_or("none"),
                    reason = %err,
                    "skipping a stream record that does not parse"
                ),
            }
        }
        self.handle_records(&records, total - records.len()).await
    }

    /// Handles parsed records; `unparseable` more were already dropped and are counted as
    /// malformed. Never fails: a publish failure becomes a batch item failure in the response.
    pub async fn handle_records(&self, records: &[EventRecord], unparseable: usize) -> RelayOutcome {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (keys, counts) = map_batch(&self.mapper, records, now_ms, |position, record, reason| {
            let sequence_number = record.change.sequence_number.as_deref().unwrap_or("none");
            match reason {
                SkipReason::Malformed(why) => tracing::warn!(
                    position,
                    sequence_number,
                    event_id = %record.event_id,
                    reason = why,
                    "skipping a malformed stream record"
                ),
                SkipReason::Ignored(why) => tracing::debug!(sequence_number, reason = why, "ignoring a stream record"),
                SkipReason::NoOp => tracing::debug!(sequence_number, "no-op change; nothing to invalidate"),
            }
        });
        let mut summary = InvocationSummary {
            records_in: records.len() + unparseable,
            records_invalidating: counts.invalidating,
            heartbeats: counts.heartbeats,
            ttl_expiries: counts.ttl_expiries,
            skipped_no_op: counts.no_op,
            skipped_ignored: counts.ignored,
            skipped_malformed: counts.malformed + unparseable,
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

        let first_unpublished = self.publish(&keys, &mut summary).await;
        let mut response = DynamoDbEventResponse::default();
        if let Some(position) = first_unpublished {
            // The record exists and has a sequence number: only such records produce keys.
            let seq = records
                .get(position)
                .and_then(|record| record.change.sequence_number.clone());
            if let Some(seq) = &seq {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(seq.clone());
                response.batch_item_failures.push(failure);
            }
            summary.failed_from = seq;
        }
        log_summary(&summary);
        self.metrics.record(&summary);
        RelayOutcome { response, summary }
    }

    /// Publishes every key; returns the batch position of the first record whose keys did not
    /// go out, if any.
    async fn publish(&self, keys: &[PendingKey<'_>], summary: &mut InvocationSummary) -> Option<usize> {
        let messages = match self.pack(keys) {
            Ok(messages) => messages,
            Err(err) => {
                // Only a key over 256 KiB can do this, and DynamoDB keys are at most 2 KiB: a bug,
                // reported as a failure of the whole batch so nothing is acknowledged unsent.
                tracing::error!(error = %err, "cannot encode invalidations");
                return keys.first().map(|key| key.first_record);
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
                    source: message.source,
                    body: message.body.clone(),
                })
                .collect();
            match self.publish_with_retries(&entries, summary).await {
                Ok(()) => {
                    summary.messages_published += entries.len();
                    for message in &messages[next..call] {
                        if message.tick {
                            summary.ticks_published[usize::from(message.source == Source::Roles)] += 1;
                        } else {
                            summary.keys_published += message.keys;
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

    /// Packs each source's keys into messages and each heartbeat into a tick, then orders all
    /// messages by the first record that needs them, so that a failure part-way acknowledges as
    /// many records as possible and a tick never goes out before the changes it vouches for.
    fn pack(&self, keys: &[PendingKey<'_>]) -> Result<Vec<OutgoingMessage>, EncodeError> {
        let mut messages = Vec::new();
        for heartbeat in keys.iter().filter(|key| key.kind == ChangeKind::Heartbeat) {
            let tick = Invalidation::Tick {
                source: heartbeat.source,
                written_at_ms: heartbeat.at_ms,
                interval_ms: heartbeat.interval_ms,
            };
            messages.push(OutgoingMessage {
                source: heartbeat.source,
                body: tick.encode()?,
                keys: 0,
                first_record: heartbeat.first_record,
                tick: true,
            });
        }
        for source in [Source::Users, Source::Roles] {
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
                    source,
                    body: message.body,
                    keys: message.key_count,
                    first_record,
                    tick: false,
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

fn log_summary(summary: &InvocationSummary) {
    tracing::info!(
        records_in = summary.records_in,
        records_invalidating = summary.records_invalidating,
        heartbeats = summary.heartbeats,
        ticks_users = summary.ticks_published[0],
        ticks_roles = summary.ticks_published[1],
        ttl_expiries = summary.ttl_expiries,
        skipped_no_op = summary.skipped_no_op,
        skipped_ignored = summary.skipped_ignored,
        skipped_malformed = summary.skipped_malformed,
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
