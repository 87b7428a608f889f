//! The local stand-in for Lambda's DynamoDB event source mapping: polls both tables' streams,
//! applies the template's `FilterCriteria`, hands each batch to the stream relay in-process,
//! and honours its `batchItemFailures`.
//!
//! - [`run`] / [`spawn`]: the whole mapping for a provisioned stack, publishing to its topic.
//! - [`run_with`]: the same over any [`StreamReader`] and [`Relay`] (tests use a fake stream).
//! - [`filter`], [`convert`], [`checkpoint`], [`reader`]: pattern matching, SDK record → Lambda
//!   record, on-disk progress, and the three DynamoDB Streams calls.
//!
//! Like Lambda it reads each shard in order, one batch at a time, children only after their
//! parent is finished; a failed batch is re-read from the reported record after a backoff.
//! Unlike Lambda it never gives up on a batch (there is no dead-letter queue locally: a record
//! that cannot be published stays due until it can be), and it starts at `TRIM_HORIZON` by
//! default so that a write made right after [`spawn`] is never missed.

pub mod checkpoint;
pub mod convert;
pub mod filter;
pub mod reader;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::Record;
use stream_relay::{Mapper, Relay, SnsPublisher};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::provision::Provisioned;
use crate::template::{self, TemplateError, TemplateSpec};
use checkpoint::{Checkpoint, CheckpointFile};
use filter::{FilterPattern, PatternError};
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
    /// `RELAY_IGNORED_ATTRIBUTES` of the in-process relay.
    pub ignored_attributes: Vec<String>,
    /// The template whose `FilterCriteria` and `BatchSize` apply.
    pub template_path: PathBuf,
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
            ignored_attributes: stream_relay::config::parse_attribute_list(
                stream_relay::config::DEFAULT_IGNORED_ATTRIBUTES,
            ),
            template_path: template::default_template_path(),
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
}

/// The relay's stream event sources in `spec`, bound to `stack`'s tables.
///
/// # Errors
/// [`EventSourceError::Source`] when the template reads a table the stack does not have, or has
/// no event source for the relay; [`EventSourceError::Pattern`] for an unsupported filter.
pub fn stream_sources(
    spec: &TemplateSpec,
    stack: &Provisioned,
    batch_size: Option<u32>,
) -> Result<Vec<StreamSource>, EventSourceError> {
    let mut sources = Vec::new();
    for event in spec
        .stream_events
        .iter()
        .filter(|event| event.function == RELAY_FUNCTION)
    {
        let (table, stream_arn) = match event.table_logical_id.as_str() {
            "UsersTable" => (&stack.users_table, &stack.users_stream_arn),
            "AppRolesTable" => (&stack.roles_table, &stack.roles_stream_arn),
            other => {
                return Err(EventSourceError::Source {
                    event: event.name.clone(),
                    problem: format!("reads the stream of {other}, which the local stack does not provision"),
                });
            }
        };
        sources.push(StreamSource {
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
    let parameters = BTreeMap::from([("NamePrefix".to_owned(), stack.prefix.clone())]);
    let spec = template::load(&options.template_path, &parameters)?;
    let sources = stream_sources(&spec, stack, options.batch_size)?;
    let mapper = Mapper::new(
        &stack.users_table,
        &stack.roles_table,
        options.ignored_attributes.clone(),
    );
    let publisher = SnsPublisher::new(aws_sdk_sns::Client::new(config), &stack.topic_arn);
    let relay = Arc::new(Relay::new(mapper, Arc::new(publisher)));
    let reader = Arc::new(SdkStreamReader::new(aws_sdk_dynamodbstreams::Client::new(config)));
    run_with(reader, relay, sources, &options, shutdown).await
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

/// Polls `sources` through `reader` and hands batches to `relay` until `shutdown`.
///
/// # Errors
/// [`EventSourceError::CheckpointDir`] when the checkpoint directory cannot be created.
pub async fn run_with(
    reader: Arc<dyn StreamReader>,
    relay: Arc<Relay>,
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
            relay: relay.clone(),
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
}

/// The poller of one stream.
struct StreamPoller {
    /// The stream calls.
    reader: Arc<dyn StreamReader>,
    /// Where batches go.
    relay: Arc<Relay>,
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

/// What happened to a batch handed to the relay.
enum Delivery {
    /// Every record is acknowledged.
    Done,
    /// Records from `retry_from` on must be re-read; `acknowledged` is the last one before it.
    Failed {
        acknowledged: Option<String>,
        retry_from: Option<String>,
    },
}

fn sequence_number(record: &Record) -> Option<&str> {
    record.dynamodb.as_ref()?.sequence_number.as_deref()
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
        match self.deliver(&page.records).await {
            Delivery::Done => {
                let last = page.records.iter().rev().find_map(sequence_number).map(str::to_owned);
                self.advance(shard_id, last, page.next_iterator).await;
                true
            }
            Delivery::Failed {
                acknowledged,
                retry_from,
            } => {
                if let Some(seq) = &acknowledged {
                    self.acknowledge(shard_id, seq).await;
                }
                if let Some(cursor) = self.shards.get_mut(shard_id) {
                    cursor.iterator = None;
                    if let Some(seq) = retry_from.clone() {
                        cursor.resume = Position::At(seq);
                    }
                }
                let pause = self.back_off(shard_id);
                tracing::warn!(table = %self.source.table, shard = shard_id, retry_from = retry_from.as_deref(),
                    pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "relay reported a batch item failure; re-reading from it after a pause");
                false
            }
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

    /// Converts, filters and hands a page to the relay, as Lambda would invoke the function.
    async fn deliver(&self, records: &[Record]) -> Delivery {
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
            return Delivery::Done;
        }
        let outcome = self.relay.handle_records(&batch, 0).await;
        let Some(failure) = outcome.response.batch_item_failures.first() else {
            return Delivery::Done;
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
        Delivery::Failed {
            acknowledged: records[..position]
                .iter()
                .rev()
                .find_map(sequence_number)
                .map(str::to_owned),
            retry_from: records[position..].iter().find_map(sequence_number).map(str::to_owned),
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
