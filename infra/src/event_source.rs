//! The local stand-in for Lambda's DynamoDB event source mapping: polls both tables' streams,
//! applies the template's `FilterCriteria`, invokes the relay function with each batch as
//! Lambda serializes it, and honours its `batchItemFailures`, the template's retry limits,
//! bisection and on-failure destination.
//!
//! - [`run`] / [`spawn`]: the whole mapping for a provisioned stack: the relay's Lambda binary
//!   through the `Invoke` API of the local Lambda ([`LambdaTarget`]), or the relay library
//!   in-process when none is given.
//! - [`run_with`]: the same over any [`StreamReader`] and [`Target`] (tests use a fake stream
//!   and a fake function).
//! - [`filter`], [`convert`], [`checkpoint`], [`reader`], [`invoke`], [`failure`]: pattern
//!   matching, SDK record → Lambda record, on-disk progress, the three DynamoDB Streams calls,
//!   the two ways to invoke the relay, and the rules for failed batches.
//!
//! Like Lambda it reads each shard in order, one batch at a time, children only after their
//! parent is finished. A batch the function fails (raises, crashes, times out) is bisected down
//! to the record; a record it reports is retried from; after `MaximumRetryAttempts` retries (or
//! past `MaximumRecordAgeInSeconds`) the records are given up to the template's on-failure
//! destination (the invalidation topic, [`SnsDestination`]; or a queue, [`SqsDestination`]) with
//! the message AWS sends, and the shard moves on. When Lambda cannot run the function at all, the
//! batch waits, uncounted. Unlike the template's `LATEST`, it starts at `TRIM_HORIZON` by
//! default so that a write made right after [`spawn`] is never missed.

pub mod checkpoint;
pub mod convert;
pub mod failure;
pub mod filter;
pub mod invoke;
pub mod memory;
pub mod reader;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::Record;
use chrono::{DateTime, Utc};
use stream_relay::{Mapper, Relay, SnsPublisher};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::provision::Provisioned;
use crate::template::{self, OnFailureDestination, TemplateError, TemplateSpec};
use checkpoint::{Checkpoint, CheckpointFile};
use failure::{Condition, Decision, DiscardContext, DiscardedBatch, FailurePolicy, Outcome, RetryState};
use filter::{FilterPattern, PatternError};
use invoke::{InProcessInvoker, Invocation, Invoker, LambdaInvoker};
use reader::{Position, SdkStreamReader, ShardInfo, StreamError, StreamReader};

/// Pause between polls of a stream that had nothing new. DynamoDB Streams has no long poll, so
/// this bounds the added latency: at 20 ms, write → SQS stays under the 50 ms p99 goal locally
/// (see the `propagation` bench), at about 100 cheap `GetRecords` calls per second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Records per batch when the template sets no `BatchSize` (Lambda's default for streams).
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// `GetRecords` returns at most 1,000 records.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_GetRecords.html>
pub const MAX_BATCH_SIZE: u32 = 1_000;
/// Logical id of the relay function in `template.yaml`, whose DynamoDB events are reproduced.
pub const RELAY_FUNCTION: &str = "StreamRelayFunction";
/// Logical id of the relay's dead-letter queue, the one queue the local stack can name as an
/// on-failure destination (its URL is [`Provisioned::dead_letter_queue_url`]).
pub const DEAD_LETTER_QUEUE: &str = "RelayDeadLetterQueue";
/// Logical id of the invalidation topic, the one topic the local stack can name as an on-failure
/// destination (its ARN is [`Provisioned::topic_arn`]).
pub const INVALIDATION_TOPIC: &str = "InvalidationTopic";
/// Longest one send to the on-failure destination may take: one that does not answer is then
/// retried like one that refuses (the batch kept, the shard backing off) instead of holding its
/// shard for good. The relay's own bound on one AWS call.
pub const DESTINATION_TIMEOUT: Duration = stream_relay::AWS_OPERATION_TIMEOUT;
/// How long an `Invoke` may outlast the function's timeout before the mapping stops waiting: the
/// local Lambda answers a timed-out invocation itself, so this only bounds one that never does.
const INVOKE_GRACE: Duration = Duration::from_secs(5);

/// The relay function behind a Lambda `Invoke` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaTarget {
    /// The Lambda API (`http://127.0.0.1:<port>` of `cargo lambda watch`).
    pub endpoint: String,
    /// `FunctionName` of the invocations.
    pub function_name: String,
}

/// Where a stream without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// Everything still in the stream (up to 24 h): nothing written after start-up is missed,
    /// and replaying older records only repeats idempotent invalidations.
    TrimHorizon,
    /// Only what is written after the first `GetShardIterator` (the template's choice on AWS).
    Latest,
}

/// How the local event source mapping runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceOptions {
    /// Directory of the per-stream checkpoint files (`<table>.checkpoint.json`); created if needed.
    pub checkpoint_dir: PathBuf,
    /// Pause after a poll that found nothing; see [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
    /// Start of a stream that has no checkpoint yet.
    pub starting_position: StartingPosition,
    /// Records per relay invocation; `None` takes the template's `BatchSize`.
    pub batch_size: Option<u32>,
    /// First pause before re-reading a failed batch; doubled per failure.
    pub retry_initial_backoff: Duration,
    /// Longest pause between retries of a failed batch.
    pub retry_max_backoff: Duration,
    /// How often `DescribeStream` looks for new (child) shards.
    pub shard_refresh_interval: Duration,
    /// The template whose `FilterCriteria`, `BatchSize` and retry settings apply.
    pub template_path: PathBuf,
    /// Invoke the relay function through Lambda's API; `None`: the relay library in-process.
    pub lambda: Option<LambdaTarget>,
    /// The function's timeout, when not the template's (the local Lambda is told the same).
    pub function_timeout: Option<Duration>,
}

impl EventSourceOptions {
    /// Defaults, with checkpoints under `checkpoint_dir`.
    #[must_use]
    pub fn new(checkpoint_dir: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint_dir: checkpoint_dir.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            starting_position: StartingPosition::TrimHorizon,
            batch_size: None,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(2),
            shard_refresh_interval: Duration::from_secs(1),
            template_path: template::default_template_path(),
            lambda: None,
            function_timeout: None,
        }
    }
}

impl Default for EventSourceOptions {
    /// Checkpoints in `<temp dir>/staleless-event-source` (files are named per table, so stacks
    /// with different prefixes never share one).
    fn default() -> Self {
        Self::new(std::env::temp_dir().join("staleless-event-source"))
    }
}

/// Why the mapping could not start. Once running it does not fail: stream and publish errors
/// are logged and retried until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum EventSourceError {
    /// `template.yaml` could not be read.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A `FilterCriteria` pattern uses something the local mapping does not implement.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The template's relay event sources do not fit the provisioned stack.
    #[error("event source {event}: {problem}")]
    Source {
        /// The event's name in the template, or the function's.
        event: String,
        /// What is wrong.
        problem: String,
    },
    /// The checkpoint directory cannot be created.
    #[error("cannot create checkpoint directory {path}: {source}")]
    CheckpointDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One stream as the mapping reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSource {
    /// The table, for logs and the checkpoint file name.
    pub table: String,
    /// The stream; also the records' `eventSourceARN`.
    pub stream_arn: String,
    /// Records per relay invocation.
    pub batch_size: u32,
    /// A record is forwarded when any matches; none means every record.
    pub filters: Vec<FilterPattern>,
    /// Retries, bisection and record age.
    pub policy: FailurePolicy,
    /// Failed batches are described to the on-failure destination (else only logged, as Lambda
    /// skips them without one).
    pub on_failure: bool,
}

/// Where the mapping sends what it invokes and what it gives up.
pub struct Target {
    /// Runs the relay function.
    pub invoker: Arc<dyn Invoker>,
    /// The function's ARN, for the on-failure messages.
    pub function_arn: String,
    /// The on-failure destination, when the template names one.
    pub on_failure: Option<Arc<dyn FailureDestination>>,
}

impl Target {
    /// The relay library in-process, with no on-failure destination (discards are only logged).
    #[must_use]
    pub fn in_process(relay: Arc<Relay>) -> Self {
        Self {
            invoker: Arc::new(InProcessInvoker(relay)),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:stream-relay".to_owned(),
            on_failure: None,
        }
    }
}

/// An on-failure destination: receives the message of each discarded batch.
#[async_trait]
pub trait FailureDestination: Send + Sync {
    /// Sends one message.
    ///
    /// # Errors
    /// A description of the failure; the batch is kept and the send retried.
    async fn send(&self, message: String) -> Result<(), String>;
}

/// An SQS queue as the on-failure destination (`Type: SQS`), the relay's dead-letter queue.
pub struct SqsDestination {
    /// SQS client.
    pub client: aws_sdk_sqs::Client,
    /// Queue URL.
    pub queue_url: String,
}

#[async_trait]
impl FailureDestination for SqsDestination {
    async fn send(&self, message: String) -> Result<(), String> {
        let sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message)
            .send();
        within_destination_timeout(sent, |err| aws_sdk_sqs::error::DisplayErrorContext(err).to_string()).await
    }
}

/// The invalidation topic as the on-failure destination (`Type: SNS`): every task hears the
/// message on its queue and flushes the caches of the table whose records were given up, and the
/// dead-letter queue's body-filtered subscription keeps a copy.
pub struct SnsDestination {
    /// SNS client.
    pub client: aws_sdk_sns::Client,
    /// Topic ARN.
    pub topic_arn: String,
}

#[async_trait]
impl FailureDestination for SnsDestination {
    async fn send(&self, message: String) -> Result<(), String> {
        // The body alone, no message attributes: what Lambda publishes.
        let published = self.client.publish().topic_arn(&self.topic_arn).message(message).send();
        within_destination_timeout(published, |err| {
            aws_sdk_sns::error::DisplayErrorContext(err).to_string()
        })
        .await
    }
}

/// Awaits one destination call for at most [`DESTINATION_TIMEOUT`].
async fn within_destination_timeout<T, E>(
    call: impl std::future::Future<Output = Result<T, E>>,
    describe: impl FnOnce(E) -> String,
) -> Result<(), String> {
    match tokio::time::timeout(DESTINATION_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(describe(err)),
        Err(_) => Err(format!("no answer within {DESTINATION_TIMEOUT:?}")),
    }
}

/// The on-failure destination of the relay's event sources in `spec`: `None` when none names
/// one.
///
/// # Errors
/// [`EventSourceError::Source`] when an event source names a destination other than
/// [`INVALIDATION_TOPIC`] or [`DEAD_LETTER_QUEUE`] (the local stack knows no other's address),
/// or two name different ones (the local mapping has one).
pub fn failure_destination(spec: &TemplateSpec) -> Result<Option<OnFailureDestination>, EventSourceError> {
    let mut found: Option<&OnFailureDestination> = None;
    for event in spec
        .stream_events
        .iter()
        .filter(|event| event.function == RELAY_FUNCTION)
    {
        let Some(destination) = &event.on_failure else {
            continue;
        };
        let problem = match destination {
            OnFailureDestination::Topic(topic) if topic != INVALIDATION_TOPIC => Some(format!(
                "sends failures to topic {topic}; the local stack can send them only to {INVALIDATION_TOPIC}"
            )),
            OnFailureDestination::Queue(queue) if queue != DEAD_LETTER_QUEUE => Some(format!(
                "sends failures to queue {queue}; the local stack can send them only to {DEAD_LETTER_QUEUE}"
            )),
            _ if found.is_some_and(|found| found != destination) => Some(format!(
                "sends failures to {destination:?}, another event source to {found:?}; the local mapping has one destination"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(EventSourceError::Source {
                event: event.name.clone(),
                problem,
            });
        }
        found = Some(destination);
    }
    Ok(found.cloned())
}

/// The relay's stream event sources in `spec`, bound to `stack`'s tables.
///
/// # Errors
/// [`EventSourceError::Source`] when the template reads a table the stack does not have, names an
/// on-failure destination it cannot send to (see [`failure_destination`]), or has no event source
/// for the relay; [`EventSourceError::Pattern`] for an unsupported filter.
pub fn stream_sources(
    spec: &TemplateSpec,
    stack: &Provisioned,
    batch_size: Option<u32>,
) -> Result<Vec<StreamSource>, EventSourceError> {
    failure_destination(spec)?;
    let mut sources = Vec::new();
    for event in spec
        .stream_events
        .iter()
        .filter(|event| event.function == RELAY_FUNCTION)
    {
        let Some((table, Some(stream_arn))) = stack
            .tables
            .get(&event.table_logical_id)
            .map(|table| (&table.name, table.stream_arn.as_ref()))
        else {
            return Err(EventSourceError::Source {
                event: event.name.clone(),
                problem: format!(
                    "reads the stream of {}, which the local stack does not provision with a stream",
                    event.table_logical_id
                ),
            });
        };
        sources.push(StreamSource {
            policy: FailurePolicy::of(event),
            on_failure: event.on_failure.is_some(),
            table: table.clone(),
            stream_arn: stream_arn.clone(),
            batch_size: batch_size
                .or(event.batch_size)
                .unwrap_or(DEFAULT_BATCH_SIZE)
                .clamp(1, MAX_BATCH_SIZE),
            filters: event
                .filter_patterns
                .iter()
                .map(|pattern| FilterPattern::compile(pattern))
                .collect::<Result<_, _>>()?,
        });
    }
    if sources.is_empty() {
        return Err(EventSourceError::Source {
            event: RELAY_FUNCTION.into(),
            problem: "the template declares no DynamoDB event source for it".into(),
        });
    }
    Ok(sources)
}

/// Runs the mapping for `stack` (both tables' streams → relay → `stack.topic_arn`) until
/// `shutdown` is cancelled.
///
/// # Errors
/// Only at start-up: see [`EventSourceError`].
pub async fn run(
    config: &SdkConfig,
    stack: &Provisioned,
    options: EventSourceOptions,
    shutdown: CancellationToken,
) -> Result<(), EventSourceError> {
    let spec = template::load_for(&options.template_path, &stack.prefix)?;
    let sources = stream_sources(&spec, stack, options.batch_size)?;
    let invoker: Arc<dyn Invoker> = match &options.lambda {
        Some(lambda) => {
            let timeout = options
                .function_timeout
                .unwrap_or_else(|| spec.function_timeout(RELAY_FUNCTION));
            let client = LambdaInvoker::client_for(config, &lambda.endpoint, timeout, INVOKE_GRACE);
            Arc::new(LambdaInvoker::new(client, &lambda.function_name))
        }
        None => {
            // Configured as the template configures the function.
            let relay_config =
                crate::system::relay_config(&spec, stack).map_err(|problem| EventSourceError::Source {
                    event: RELAY_FUNCTION.into(),
                    problem,
                })?;
            let mapper = Mapper::from_config(&relay_config);
            let publisher = SnsPublisher::new(
                aws_sdk_sns::Client::new(config),
                &stack.topic_arn,
                mapper.sources().cloned().collect(),
            );
            Arc::new(InProcessInvoker(Arc::new(Relay::new(mapper, Arc::new(publisher)))))
        }
    };
    let function_name = options.lambda.as_ref().map_or_else(
        || format!("{}-stream-relay", stack.prefix),
        |lambda| lambda.function_name.clone(),
    );
    let on_failure: Option<Arc<dyn FailureDestination>> = match failure_destination(&spec)? {
        Some(OnFailureDestination::Topic(_)) => Some(Arc::new(SnsDestination {
            client: aws_sdk_sns::Client::new(config),
            topic_arn: stack.topic_arn.clone(),
        })),
        Some(OnFailureDestination::Queue(_)) => Some(Arc::new(SqsDestination {
            client: aws_sdk_sqs::Client::new(config),
            queue_url: stack.dead_letter_queue_url.clone(),
        })),
        None => None,
    };
    let target = Target {
        invoker,
        function_arn: function_arn(&stack.users_stream_arn, &function_name),
        on_failure,
    };
    let reader = Arc::new(SdkStreamReader::new(aws_sdk_dynamodbstreams::Client::new(config)));
    run_with(reader, Arc::new(target), sources, &options, shutdown).await
}

/// `arn:aws:lambda:<region>:<account>:function:<name>`, in the stream's region and account.
fn function_arn(stream_arn: &str, function_name: &str) -> String {
    let mut parts = stream_arn.split(':').skip(3);
    let region = parts.next().unwrap_or("us-east-1");
    let account = parts.next().unwrap_or("123456789012");
    format!("arn:aws:lambda:{region}:{account}:function:{function_name}")
}

/// [`run`] on a task of its own.
#[must_use]
pub fn spawn(
    config: &SdkConfig,
    stack: &Provisioned,
    options: EventSourceOptions,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), EventSourceError>> {
    let config = config.clone();
    let stack = stack.clone();
    tokio::spawn(async move { run(&config, &stack, options, shutdown).await })
}

/// Polls `sources` through `reader` and invokes `target` with batches until `shutdown`.
///
/// # Errors
/// [`EventSourceError::CheckpointDir`] when the checkpoint directory cannot be created.
pub async fn run_with(
    reader: Arc<dyn StreamReader>,
    target: Arc<Target>,
    sources: Vec<StreamSource>,
    options: &EventSourceOptions,
    shutdown: CancellationToken,
) -> Result<(), EventSourceError> {
    tokio::fs::create_dir_all(&options.checkpoint_dir)
        .await
        .map_err(|source| EventSourceError::CheckpointDir {
            path: options.checkpoint_dir.clone(),
            source,
        })?;
    let mut pollers = JoinSet::new();
    for source in sources {
        let poller = StreamPoller {
            file: CheckpointFile::new(&options.checkpoint_dir, &source.table),
            checkpoint: Checkpoint {
                stream_arn: source.stream_arn.clone(),
                shards: BTreeMap::new(),
            },
            resumed: false,
            shards: BTreeMap::new(),
            next_refresh: Instant::now(),
            reader: reader.clone(),
            target: target.clone(),
            options: options.clone(),
            source,
        };
        pollers.spawn(poller.run(shutdown.clone()));
    }
    while let Some(result) = pollers.join_next().await {
        if let Err(err) = result {
            tracing::error!(error = %err, "a stream poller stopped unexpectedly");
        }
    }
    Ok(())
}

/// Reading state of one shard.
#[derive(Debug)]
struct ShardCursor {
    /// The shard it split from.
    parent: Option<String>,
    /// The next `GetRecords` iterator, when one is held.
    iterator: Option<String>,
    /// Where a new iterator starts when none is held (after expiry or a failed batch).
    resume: Position,
    /// No reads before this instant: backoff after a failure.
    not_before: Option<Instant>,
    /// The current backoff, zero after a success.
    backoff: Duration,
    /// Closed and read to its end.
    finished: bool,
    /// Failures of the record at the head, and the bisected batch size.
    retry: RetryState,
}

/// The poller of one stream.
struct StreamPoller {
    /// The stream calls.
    reader: Arc<dyn StreamReader>,
    /// Where batches go.
    target: Arc<Target>,
    /// Which stream, and how it is filtered and batched.
    source: StreamSource,
    /// Intervals and backoffs.
    options: EventSourceOptions,
    /// Where progress is saved.
    file: CheckpointFile,
    /// Progress so far.
    checkpoint: Checkpoint,
    /// A checkpoint existed at start-up: shards it does not know start at `TRIM_HORIZON`.
    resumed: bool,
    /// Every shard seen, by id (ordered, so shards are polled in a stable order).
    shards: BTreeMap<String, ShardCursor>,
    /// When to call `DescribeStream` next.
    next_refresh: Instant,
}

fn sequence_number(record: &Record) -> Option<&str> {
    record.dynamodb.as_ref()?.sequence_number.as_deref()
}

/// When the record was written (`ApproximateCreationDateTime`); now when the stream omits it, so
/// that such a record never counts as expired.
fn arrival(record: &Record) -> DateTime<Utc> {
    record
        .dynamodb
        .as_ref()
        .and_then(|change| change.approximate_creation_date_time)
        .and_then(|at| DateTime::<Utc>::from_timestamp(at.secs(), at.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

impl StreamPoller {
    async fn run(mut self, shutdown: CancellationToken) {
        if let Some(saved) = self.file.load(&self.source.stream_arn).await {
            self.checkpoint = saved;
            self.resumed = true;
        }
        tracing::info!(table = %self.source.table, stream = %self.source.stream_arn, resumed = self.resumed,
            "local event source mapping started");
        while !shutdown.is_cancelled() {
            // A step runs to its end: a batch the relay has published is acknowledged (and its
            // checkpoint saved) before the mapping stops, so a restart does not publish it again.
            let busy = self.step().await;
            if !busy {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.options.poll_interval) => {}
                }
            }
        }
        tracing::info!(table = %self.source.table, "local event source mapping stopped");
    }

    /// One round over the readable shards; `true` when a batch was delivered (poll again at once).
    async fn step(&mut self) -> bool {
        if Instant::now() >= self.next_refresh {
            self.refresh().await;
        }
        let now = Instant::now();
        let readable: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, cursor)| !cursor.finished && cursor.not_before.is_none_or(|at| at <= now))
            .filter(|(_, cursor)| {
                cursor
                    .parent
                    .as_ref()
                    .and_then(|parent| self.shards.get(parent))
                    .is_none_or(|parent| parent.finished)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut busy = false;
        for shard_id in readable {
            busy |= self.poll_shard(&shard_id).await;
        }
        busy
    }

    /// Learns new shards from `DescribeStream`.
    async fn refresh(&mut self) {
        self.next_refresh = Instant::now() + self.options.shard_refresh_interval;
        let listed = match self.reader.shards(&self.source.stream_arn).await {
            Ok(listed) => listed,
            Err(err) => {
                tracing::warn!(table = %self.source.table, error = %err, "DescribeStream failed; retrying later");
                return;
            }
        };
        let first_listing = self.shards.is_empty();
        for ShardInfo {
            shard_id,
            parent_shard_id,
        } in listed
        {
            if self.shards.contains_key(&shard_id) {
                continue;
            }
            let saved = self.checkpoint.shards.get(&shard_id);
            let resume = match saved.and_then(|saved| saved.sequence_number.clone()) {
                Some(seq) => Position::After(seq),
                // Shards appearing later are children of a split: read them from their start.
                None if first_listing && !self.resumed => match self.options.starting_position {
                    StartingPosition::TrimHorizon => Position::TrimHorizon,
                    StartingPosition::Latest => Position::Latest,
                },
                None => Position::TrimHorizon,
            };
            tracing::debug!(table = %self.source.table, shard = %shard_id, ?resume, "new shard");
            self.shards.insert(
                shard_id,
                ShardCursor {
                    parent: parent_shard_id,
                    iterator: None,
                    resume,
                    not_before: None,
                    backoff: Duration::ZERO,
                    finished: saved.is_some_and(|saved| saved.finished),
                    retry: RetryState::default(),
                },
            );
        }
        if first_listing && !self.resumed {
            // From now on a restart resumes instead of starting at the configured position.
            self.save().await;
            self.resumed = true;
        }
    }

    /// Reads one batch of one shard; `true` when records were delivered.
    async fn poll_shard(&mut self, shard_id: &str) -> bool {
        let Some(cursor) = self.shards.get_mut(shard_id) else {
            return false;
        };
        let iterator = match cursor.iterator.take() {
            Some(iterator) => iterator,
            None => match self
                .reader
                .iterator(&self.source.stream_arn, shard_id, &cursor.resume)
                .await
            {
                Ok(iterator) => iterator,
                Err(StreamError::Trimmed(detail)) => {
                    tracing::warn!(table = %self.source.table, shard = shard_id, %detail,
                        "checkpoint is past the stream's retention; reading from TRIM_HORIZON");
                    cursor.resume = Position::TrimHorizon;
                    return false;
                }
                Err(err) => {
                    tracing::warn!(table = %self.source.table, shard = shard_id, error = %err, "GetShardIterator failed");
                    self.back_off(shard_id);
                    return false;
                }
            },
        };
        let page = match self
            .reader
            .records(&iterator, i32::try_from(self.source.batch_size).unwrap_or(i32::MAX))
            .await
        {
            Ok(page) => page,
            Err(StreamError::ExpiredIterator) => return false,
            Err(err) => {
                tracing::warn!(table = %self.source.table, shard = shard_id, error = %err, "GetRecords failed");
                if let Some(cursor) = self.shards.get_mut(shard_id) {
                    cursor.iterator = Some(iterator);
                }
                self.back_off(shard_id);
                return false;
            }
        };
        if page.records.is_empty() {
            self.advance(shard_id, None, page.next_iterator).await;
            return false;
        }
        // A bisected batch is retried a part at a time.
        let limit = self
            .shards
            .get(shard_id)
            .and_then(|cursor| cursor.retry.limit)
            .unwrap_or(usize::MAX);
        let whole_page = page.records.len() <= limit;
        let records = &page.records[..page.records.len().min(limit)];
        let arrivals: Vec<DateTime<Utc>> = records.iter().map(arrival).collect();
        let expired = failure::expired_prefix(&self.source.policy, &arrivals, Utc::now());
        if expired > 0 {
            return self
                .discard(shard_id, &records[..expired], Condition::RecordAgeExceeded, 0, false)
                .await;
        }
        let outcome = self.deliver(records).await;
        let Some(mut retry) = self.shards.get(shard_id).map(|cursor| cursor.retry) else {
            return false;
        };
        let decision = failure::decide(&self.source.policy, &mut retry, records.len(), outcome);
        if let Some(cursor) = self.shards.get_mut(shard_id) {
            cursor.retry = retry;
        }
        match decision {
            Decision::Done => {
                let last = records.iter().rev().find_map(sequence_number).map(str::to_owned);
                if whole_page {
                    self.advance(shard_id, last, page.next_iterator).await;
                } else {
                    self.advance_within_page(shard_id, last).await;
                }
                true
            }
            Decision::Retry { acknowledged, pause } => {
                self.retry_from(shard_id, records, acknowledged).await;
                if pause {
                    let pause = self.back_off(shard_id);
                    tracing::warn!(table = %self.source.table, shard = shard_id, attempts = retry.attempts,
                        pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "batch not done; re-reading from its first failed record after a pause");
                    false
                } else {
                    tracing::warn!(table = %self.source.table, shard = shard_id, batch = records.len() - acknowledged,
                        next = retry.limit, "function error: bisecting the batch");
                    true
                }
            }
            Decision::Discard {
                acknowledged,
                end,
                condition,
                invoke_count,
            } => {
                self.retry_from(shard_id, records, acknowledged).await;
                let function_error = matches!(
                    outcome,
                    Outcome::Failed {
                        function_error: true,
                        ..
                    }
                );
                self.discard(
                    shard_id,
                    &records[acknowledged..end],
                    condition,
                    invoke_count,
                    function_error,
                )
                .await
            }
        }
    }

    /// Acknowledges `records[..acknowledged]` and makes the next read start at the record after.
    async fn retry_from(&mut self, shard_id: &str, records: &[Record], acknowledged: usize) {
        if let Some(seq) = records[..acknowledged].iter().rev().find_map(sequence_number) {
            let seq = seq.to_owned();
            self.acknowledge(shard_id, &seq).await;
        }
        if let Some(cursor) = self.shards.get_mut(shard_id) {
            cursor.iterator = None;
            if let Some(seq) = records[acknowledged..].iter().find_map(sequence_number) {
                cursor.resume = Position::At(seq.to_owned());
            }
        }
    }

    /// Gives `records` up: describes them to the on-failure destination (as Lambda does), then
    /// acknowledges them so the shard moves on. `true` when done (poll again at once); when the
    /// destination refuses, nothing is acknowledged and the shard backs off.
    async fn discard(
        &mut self,
        shard_id: &str,
        records: &[Record],
        condition: Condition,
        invoke_count: u32,
        function_error: bool,
    ) -> bool {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return true;
        };
        let start = sequence_number(first).unwrap_or_default().to_owned();
        let end = sequence_number(last).unwrap_or_default().to_owned();
        let batch = DiscardedBatch {
            shard_id: shard_id.to_owned(),
            stream_arn: self.source.stream_arn.clone(),
            start_sequence_number: start.clone(),
            end_sequence_number: end.clone(),
            first_arrival: arrival(first),
            last_arrival: arrival(last),
            batch_size: records.len(),
        };
        let context = DiscardContext {
            function_arn: self.target.function_arn.clone(),
            condition,
            invoke_count,
            function_error: function_error.then(|| "Unhandled".to_owned()),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let destination = self.target.on_failure.as_ref().filter(|_| self.source.on_failure);
        if let Some(destination) = destination {
            let message = failure::on_failure_message(&batch, &context, Utc::now()).to_string();
            if let Err(err) = destination.send(message).await {
                tracing::warn!(table = %self.source.table, shard = shard_id, error = %err,
                    "cannot send a discarded batch to the on-failure destination; keeping it");
                self.back_off(shard_id);
                return false;
            }
        }
        tracing::error!(table = %self.source.table, shard = shard_id, condition = condition.as_str(),
            start_sequence_number = %start, end_sequence_number = %end, records = records.len(), invoke_count,
            to_destination = destination.is_some(), "gave up a batch, as Lambda does past the template's limits");
        self.advance_within_page(shard_id, Some(end)).await;
        if let Some(cursor) = self.shards.get_mut(shard_id) {
            cursor.retry = RetryState::default();
        }
        true
    }

    /// Moves past part of a page (up to `last`): the rest of it is read again after `last`.
    async fn advance_within_page(&mut self, shard_id: &str, last: Option<String>) {
        if let Some(seq) = &last {
            self.acknowledge(shard_id, seq).await;
        }
        if let Some(cursor) = self.shards.get_mut(shard_id) {
            cursor.iterator = None;
            cursor.backoff = Duration::ZERO;
            cursor.not_before = None;
        }
    }

    /// Moves past a page: records it up to `last`, keeps `next` or finishes a closed shard.
    async fn advance(&mut self, shard_id: &str, last: Option<String>, next: Option<String>) {
        if let Some(seq) = &last {
            self.acknowledge(shard_id, seq).await;
        }
        let Some(cursor) = self.shards.get_mut(shard_id) else {
            return;
        };
        cursor.backoff = Duration::ZERO;
        cursor.not_before = None;
        match next {
            Some(next) => cursor.iterator = Some(next),
            None => {
                cursor.finished = true;
                self.checkpoint.shards.entry(shard_id.to_owned()).or_default().finished = true;
                tracing::info!(table = %self.source.table, shard = shard_id, "shard closed and read to its end");
                self.save().await;
                // Its children are probably listed already.
                self.next_refresh = Instant::now();
            }
        }
    }

    /// Records `seq` as the last acknowledged record of the shard.
    async fn acknowledge(&mut self, shard_id: &str, seq: &str) {
        if let Some(cursor) = self.shards.get_mut(shard_id) {
            cursor.resume = Position::After(seq.to_owned());
        }
        self.checkpoint
            .shards
            .entry(shard_id.to_owned())
            .or_default()
            .sequence_number = Some(seq.to_owned());
        self.save().await;
    }

    async fn save(&self) {
        if let Err(err) = self.file.save(&self.checkpoint).await {
            tracing::warn!(path = %self.file.path().display(), error = %err, "cannot save checkpoint");
        }
    }

    /// Schedules the shard's next read after a doubling pause; returns the pause.
    fn back_off(&mut self, shard_id: &str) -> Duration {
        let Some(cursor) = self.shards.get_mut(shard_id) else {
            return Duration::ZERO;
        };
        cursor.backoff = if cursor.backoff.is_zero() {
            self.options.retry_initial_backoff
        } else {
            cursor.backoff.saturating_mul(2).min(self.options.retry_max_backoff)
        };
        cursor.not_before = Some(Instant::now() + cursor.backoff);
        cursor.backoff
    }

    /// Converts and filters records and invokes the function with them, as Lambda would.
    async fn deliver(&self, records: &[Record]) -> Outcome {
        let mut batch = Vec::with_capacity(records.len());
        for record in records {
            match convert::lambda_record(record, &self.source.stream_arn) {
                Ok(lambda) if self.passes_filters(&lambda) => batch.push(lambda),
                Ok(_) => {}
                // Lambda would deliver it and the relay would skip it as malformed; skipping it
                // here keeps the shard moving the same way.
                Err(err) => tracing::warn!(table = %self.source.table, error = %err, "skipping a stream record"),
            }
        }
        if batch.is_empty() {
            return Outcome::Done;
        }
        match self.target.invoker.invoke(batch).await {
            Invocation::Returned(response) => {
                let Some(failure) = response.batch_item_failures.first() else {
                    return Outcome::Done;
                };
                // Like Lambda: an identifier that names no record of the batch fails the whole batch.
                let position = failure
                    .item_identifier
                    .as_deref()
                    .and_then(|failed| {
                        records
                            .iter()
                            .position(|record| sequence_number(record) == Some(failed))
                    })
                    .unwrap_or(0);
                Outcome::Failed {
                    position,
                    function_error: false,
                }
            }
            Invocation::FunctionError(detail) => {
                tracing::warn!(table = %self.source.table, %detail, "the relay function failed");
                Outcome::Failed {
                    position: 0,
                    function_error: true,
                }
            }
            Invocation::NotInvoked(detail) => {
                tracing::warn!(table = %self.source.table, %detail, "Lambda did not run the relay function");
                Outcome::NotInvoked
            }
        }
    }

    fn passes_filters(&self, record: &aws_lambda_events::event::dynamodb::EventRecord) -> bool {
        if self.source.filters.is_empty() {
            return true;
        }
        // Patterns are written against the record's JSON, exactly as Lambda evaluates them.
        match serde_json::to_value(record) {
            Ok(json) => self.source.filters.iter().any(|pattern| pattern.matches(&json)),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TEMPLATE: &str = include_str!("../../template.yaml");
    const TO_TOPIC: &str = "Type: SNS\n                Destination: !Ref InvalidationTopic";
    const TO_QUEUE: &str = "Type: SQS\n                Destination: !GetAtt RelayDeadLetterQueue.Arn";

    fn destination(text: &str) -> Result<Option<OnFailureDestination>, EventSourceError> {
        failure_destination(&template::parse(text, "t.yaml", &BTreeMap::new()).expect("parses"))
    }

    #[test]
    fn the_template_gives_records_up_to_the_invalidation_topic() {
        assert_eq!(TEMPLATE.matches(TO_TOPIC).count(), 2, "both event sources");
        assert_eq!(
            destination(TEMPLATE).expect("supported"),
            Some(OnFailureDestination::Topic(INVALIDATION_TOPIC.into()))
        );
        assert_eq!(
            destination(&TEMPLATE.replace(TO_TOPIC, TO_QUEUE)).expect("supported"),
            Some(OnFailureDestination::Queue(DEAD_LETTER_QUEUE.into())),
            "a template that says SQS keeps the queue"
        );
        let without = TEMPLATE.replace(
            &format!("            DestinationConfig:\n              OnFailure:\n                {TO_TOPIC}\n"),
            "",
        );
        assert_eq!(destination(&without).expect("supported"), None);
    }

    #[test]
    fn a_destination_the_local_stack_cannot_address_is_refused() {
        for (text, expected) in [
            (
                TEMPLATE.replace("Destination: !Ref InvalidationTopic", "Destination: !Ref OtherTopic"),
                "topic OtherTopic",
            ),
            (TEMPLATE.replacen(TO_TOPIC, TO_QUEUE, 1), "one destination"),
        ] {
            let message = destination(&text).expect_err(expected).to_string();
            assert!(message.contains(expected), "{message}");
        }
    }
}
