//! Fan-out: the one-method [`Publisher`] the relay sends invalidations through, its SNS
//! implementation ([`SnsPublisher`], `PublishBatch` with the `source` message attribute) and an
//! in-memory one for tests and benchmarks ([`MemoryPublisher`]).
//!
//! The `source` attribute lets a subscriber's filter policy take only the sources it caches
//! ([`SOURCE_ATTRIBUTE`]). A message about every source (a flush of every cache) carries every
//! source's name, as a `String.Array`, which a policy on any one source matches: no subscriber
//! filtering on `source` can miss it.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use staleless_protocol::{SOURCE_ATTRIBUTE, Source};

/// `PublishBatch` takes at most 10 entries.
/// <https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html>
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The sum of all message sizes in one `PublishBatch` call must not exceed 256 KiB (the default
/// topic `MaximumMessageSize`), so a full-size message travels alone.
/// <https://docs.aws.amazon.com/sns/latest/dg/sns-batch-api-actions.html>
pub const MAX_BATCH_BYTES: usize = staleless_protocol::SNS_MAX_MESSAGE_BYTES;

/// One message of a `PublishBatch` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEntry {
    /// Unique within its call; SNS reports per-entry results by it.
    pub id: String,
    /// Sent as the `source` message attribute, for subscribers' filter policies; `None` for a
    /// message about every source ([`Invalidation::source`](staleless_protocol::Invalidation::source)),
    /// sent with the name of every source the publisher serves.
    pub source: Option<Source>,
    /// The encoded [`staleless_protocol::Invalidation`].
    pub body: String,
}

impl PublishEntry {
    /// Bytes this entry counts toward [`MAX_BATCH_BYTES`]: the body plus the attribute allowance.
    #[must_use]
    pub const fn batch_bytes(&self) -> usize {
        self.body.len() + staleless_protocol::MESSAGE_ATTRIBUTE_ALLOWANCE_BYTES
    }
}

/// Why a batch was not (entirely) published. Any failure means the whole call is retried or
/// reported: republishing an entry that did go through only repeats an idempotent eviction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// SNS throttled the call; worth retrying after a pause.
    #[error("throttled: {0}")]
    Throttled(String),
    /// A network error, a timeout, a 5xx, or entries SNS dropped without saying why.
    #[error("transient failure: {0}")]
    Transient(String),
    /// SNS refused the call (topic gone, access denied, invalid request): retrying within the
    /// invocation will not help; Lambda's own retry (or the local event source's) will.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl PublishError {
    /// Whether retrying the same call inside this invocation may succeed.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transient(_))
    }
}

/// Sends invalidation messages to every subscriber.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes up to [`MAX_BATCH_ENTRIES`] entries of at most [`MAX_BATCH_BYTES`] in total.
    ///
    /// # Errors
    /// [`PublishError`] unless every entry was accepted.
    async fn publish_batch(&self, entries: &[PublishEntry]) -> Result<(), PublishError>;
}

/// [`Publisher`] to an SNS topic.
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    /// The SNS client, built once per process.
    client: aws_sdk_sns::Client,
    /// `INVALIDATION_TOPIC_ARN`.
    topic_arn: String,
    /// Every source the relay serves: the `source` attribute of a message about all of them.
    every_source: Vec<Source>,
}

impl SnsPublisher {
    /// Publishes to `topic_arn` with `client`, for the relay of `every_source`.
    #[must_use]
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>, every_source: Vec<Source>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
            every_source,
        }
    }
}

#[async_trait]
impl Publisher for SnsPublisher {
    async fn publish_batch(&self, entries: &[PublishEntry]) -> Result<(), PublishError> {
        let mut request = self.client.publish_batch().topic_arn(&self.topic_arn);
        for entry in entries {
            let attribute = source_attribute(entry.source.as_ref(), &self.every_source)
                .map_err(|err| PublishError::Rejected(err.to_string()))?;
            request = request.publish_batch_request_entries(
                PublishBatchRequestEntry::builder()
                    .id(&entry.id)
                    .message(&entry.body)
                    .message_attributes(SOURCE_ATTRIBUTE, attribute)
                    .build()
                    .map_err(|err| PublishError::Rejected(err.to_string()))?,
            );
        }
        let output = request.send().await.map_err(classify)?;
        if output.successful().len() == entries.len() {
            return Ok(());
        }
        // Checked even on HTTP 200: entries can fail one by one, and moto (with a subscription to
        // a deleted queue) returns neither Successful nor Failed entries for some of them.
        let failed = output.failed();
        let detail = format!(
            "SNS accepted {} of {} entries{}",
            output.successful().len(),
            entries.len(),
            failed
                .first()
                .map(|entry| format!(", first failure {}: {}", entry.code(), entry.message().unwrap_or("")))
                .unwrap_or_default()
        );
        Err(if failed.iter().any(|entry| entry.sender_fault()) {
            PublishError::Rejected(detail)
        } else if failed.iter().any(|entry| is_throttling(entry.code())) {
            PublishError::Throttled(detail)
        } else {
            PublishError::Transient(detail)
        })
    }
}

/// The `source` attribute of a message about `source`, or about every source: a `String.Array`
/// of their names, which a filter policy naming any one of them matches.
/// <https://docs.aws.amazon.com/sns/latest/dg/sns-message-attributes.html>
fn source_attribute(source: Option<&Source>, every_source: &[Source]) -> Result<MessageAttributeValue, BuildError> {
    let builder = match source {
        Some(source) => MessageAttributeValue::builder()
            .data_type("String")
            .string_value(source.as_str()),
        None => MessageAttributeValue::builder().data_type("String.Array").string_value(
            serde_json::Value::from(every_source.iter().map(Source::as_str).collect::<Vec<_>>()).to_string(),
        ),
    };
    builder.build()
}

/// SNS error codes that mean "slow down".
/// <https://docs.aws.amazon.com/sns/latest/api/CommonErrors.html>
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttled" | "Throttling" | "ThrottlingException" | "KMSThrottling" | "RequestThrottled"
    )
}

fn classify<E>(err: SdkError<E, HttpResponse>) -> PublishError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            PublishError::Transient(detail)
        }
        SdkError::ServiceError(context) => {
            if context.err().code().is_some_and(is_throttling) {
                PublishError::Throttled(detail)
            } else if context.raw().status().is_server_error() {
                PublishError::Transient(detail)
            } else {
                PublishError::Rejected(detail)
            }
        }
        _ => PublishError::Rejected(detail),
    }
}

/// In-memory [`Publisher`] for tests and benchmarks: records every call, and fails the calls it
/// is told to.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    /// Everything accepted, call by call.
    accepted: Mutex<Vec<Vec<PublishEntry>>>,
    /// Outcomes for the next calls, consumed one per call; empty means success.
    script: Mutex<VecDeque<Result<(), PublishError>>>,
    /// How many times `publish_batch` was called, failed calls included.
    calls: Mutex<usize>,
}

impl MemoryPublisher {
    /// A publisher that accepts everything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next calls return these outcomes, in order; later calls succeed.
    pub fn script(&self, outcomes: impl IntoIterator<Item = Result<(), PublishError>>) {
        lock(&self.script).extend(outcomes);
    }

    /// Every call made, failed ones included (what SNS would bill).
    #[must_use]
    pub fn calls(&self) -> usize {
        *lock(&self.calls)
    }

    /// The accepted calls, each a list of entries.
    #[must_use]
    pub fn accepted(&self) -> Vec<Vec<PublishEntry>> {
        lock(&self.accepted).clone()
    }

    /// Every accepted message, decoded, in publish order, with the source it was tagged with
    /// (`None`: every source).
    #[must_use]
    pub fn accepted_messages(&self) -> Vec<(Option<Source>, staleless_protocol::Invalidation)> {
        lock(&self.accepted)
            .iter()
            .flatten()
            .filter_map(|entry| {
                staleless_protocol::decode(&entry.body)
                    .ok()
                    .map(|message| (entry.source.clone(), message))
            })
            .collect()
    }
}

/// The data behind these mutexes stays consistent even if a holder panicked (each update is one
/// push or increment), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish_batch(&self, entries: &[PublishEntry]) -> Result<(), PublishError> {
        *lock(&self.calls) += 1;
        assert!(
            entries.len() <= MAX_BATCH_ENTRIES,
            "{} entries in one PublishBatch",
            entries.len()
        );
        let bytes: usize = entries.iter().map(PublishEntry::batch_bytes).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes} bytes in one PublishBatch");
        let outcome = lock(&self.script).pop_front().unwrap_or(Ok(()));
        if outcome.is_ok() {
            lock(&self.accepted).push(entries.to_vec());
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_and_transient_errors_are_retried() {
        assert!(PublishError::Throttled(String::new()).is_retryable());
        assert!(PublishError::Transient(String::new()).is_retryable());
        assert!(!PublishError::Rejected(String::new()).is_retryable());
    }

    #[test]
    fn sns_throttling_codes_are_recognised() {
        for code in ["Throttled", "ThrottlingException", "KMSThrottling"] {
            assert!(is_throttling(code), "{code}");
        }
        assert!(!is_throttling("NotFound"));
    }

    #[test]
    fn a_message_about_every_source_is_tagged_with_every_source() {
        let orgs = Source::new("orgs").expect("name");
        let every = source_attribute(None, &[Source::USERS, Source::ROLES, orgs]).expect("attribute");
        assert_eq!(
            (every.data_type(), every.string_value()),
            ("String.Array", Some(r#"["users","roles","orgs"]"#))
        );
        let users = source_attribute(Some(&Source::USERS), &[]).expect("attribute");
        assert_eq!((users.data_type(), users.string_value()), ("String", Some("users")));
    }
}
