//! The three DynamoDB Streams calls the event source mapping makes, behind a narrow trait so
//! that shard splits (which moto never does) are tested with a fake stream.

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

/// One shard as `DescribeStream` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard_id: String,
    /// The shard it split from; its records come first.
    pub parent_shard_id: Option<String>,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// The record with this sequence number (a retry after a batch item failure).
    At(String),
    /// The record after this one (resuming from a checkpoint).
    After(String),
}

/// One `GetRecords` answer.
#[derive(Debug, Clone, Default)]
pub struct RecordPage {
    /// The records, in sequence order.
    pub records: Vec<Record>,
    /// Where to read next; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
}

/// Why a stream call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The iterator is older than 15 minutes: get a new one from the checkpoint.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The position is older than the stream's 24 h retention.
    #[error("records trimmed: {0}")]
    Trimmed(String),
    /// Anything else; retried after a pause.
    #[error("{0}")]
    Other(String),
}

/// Reads DynamoDB stream shards.
#[async_trait]
pub trait StreamReader: Send + Sync {
    /// Every shard of the stream (`DescribeStream`, all pages).
    ///
    /// # Errors
    /// [`StreamError`] when the stream cannot be described.
    async fn shards(&self, stream_arn: &str) -> Result<Vec<ShardInfo>, StreamError>;

    /// An iterator for `shard_id` at `position` (`GetShardIterator`).
    ///
    /// # Errors
    /// [`StreamError::Trimmed`] for a position past retention, else [`StreamError::Other`].
    async fn iterator(&self, stream_arn: &str, shard_id: &str, position: &Position) -> Result<String, StreamError>;

    /// Up to `limit` records from `iterator` (`GetRecords`).
    ///
    /// # Errors
    /// [`StreamError::ExpiredIterator`] for a stale iterator, else [`StreamError::Other`].
    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError>;
}

/// [`StreamReader`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkStreamReader {
    /// The DynamoDB Streams client.
    client: aws_sdk_dynamodbstreams::Client,
}

impl SdkStreamReader {
    /// Reads with `client`.
    #[must_use]
    pub const fn new(client: aws_sdk_dynamodbstreams::Client) -> Self {
        Self { client }
    }
}

fn other<E, R>(err: &SdkError<E, R>) -> StreamError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StreamError::Other(DisplayErrorContext(err).to_string())
}

#[async_trait]
impl StreamReader for SdkStreamReader {
    async fn shards(&self, stream_arn: &str) -> Result<Vec<ShardInfo>, StreamError> {
        let mut shards = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(start)
                .send()
                .await
                .map_err(|err| other(&err))?;
            let Some(description) = output.stream_description else {
                return Ok(shards);
            };
            shards.extend(description.shards.unwrap_or_default().into_iter().filter_map(|shard| {
                Some(ShardInfo {
                    shard_id: shard.shard_id?,
                    parent_shard_id: shard.parent_shard_id,
                })
            }));
            start = description.last_evaluated_shard_id;
            if start.is_none() {
                return Ok(shards);
            }
        }
    }

    async fn iterator(&self, stream_arn: &str, shard_id: &str, position: &Position) -> Result<String, StreamError> {
        let (kind, sequence_number) = match position {
            Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Position::Latest => (ShardIteratorType::Latest, None),
            Position::At(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq.clone())),
            Position::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
        };
        let output = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence_number)
            .send()
            .await
            .map_err(|err| {
                if err.code() == Some("TrimmedDataAccessException") {
                    StreamError::Trimmed(DisplayErrorContext(&err).to_string())
                } else {
                    other(&err)
                }
            })?;
        output
            .shard_iterator
            .ok_or_else(|| StreamError::Other(format!("GetShardIterator returned no iterator for {shard_id}")))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|err| match err.code() {
                Some("ExpiredIteratorException") => StreamError::ExpiredIterator,
                Some("TrimmedDataAccessException") => StreamError::Trimmed(DisplayErrorContext(&err).to_string()),
                _ => other(&err),
            })?;
        Ok(RecordPage {
            records: output.records.unwrap_or_default(),
            next_iterator: output.next_shard_iterator,
        })
    }
}
