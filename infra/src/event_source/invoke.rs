//! How the local event source mapping hands a batch to the relay function.
//!
//! - [`LambdaInvoker`]: through Lambda's `Invoke` API (`aws-sdk-lambda`), against the local
//!   Lambda (`cargo lambda watch`) running the relay's Lambda binary — the code `sam deploy`
//!   ships, with `lambda_runtime` decoding the event JSON and encoding the response exactly as
//!   on AWS. The default of `scripts/run` and of the end-to-end tests.
//! - [`InProcessInvoker`]: the relay library called in this process, for tests of the mapping's
//!   own logic that need no processes.
//!
//! Both answer an [`Invocation`], which keeps apart the three outcomes Lambda's event source
//! mapping treats differently: the function returned (perhaps naming a failed record), the
//! function failed (raised, crashed, timed out: counted as a retry, bisected), or Lambda never
//! ran it (unreachable, throttled: retried as is, not counted).
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use stream_relay::Relay;

/// What came of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The function returned; an empty `batchItemFailures` means the whole batch is done.
    Returned(DynamoDbEventResponse),
    /// The function was run and failed: an unhandled error, a crash or a timeout.
    FunctionError(String),
    /// Lambda did not run the function (unreachable, throttled, not found).
    NotInvoked(String),
}

/// Hands one batch of stream records to the relay function.
#[async_trait]
pub trait Invoker: Send + Sync {
    /// Invokes the function with `records` as one DynamoDB stream event.
    async fn invoke(&self, records: Vec<EventRecord>) -> Invocation;
}

/// The relay library, called in-process.
pub struct InProcessInvoker(pub Arc<Relay>);

#[async_trait]
impl Invoker for InProcessInvoker {
    async fn invoke(&self, records: Vec<EventRecord>) -> Invocation {
        Invocation::Returned(self.0.handle_records(&records, 0).await.response)
    }
}

/// A function behind Lambda's `Invoke` API (synchronous, `RequestResponse`), as the event source
/// mapping calls it.
pub struct LambdaInvoker {
    /// Client whose endpoint is the local Lambda (or AWS).
    client: aws_sdk_lambda::Client,
    /// `FunctionName` of the calls.
    function_name: String,
}

impl LambdaInvoker {
    /// An invoker of `function_name` through `client`.
    #[must_use]
    pub fn new(client: aws_sdk_lambda::Client, function_name: impl Into<String>) -> Self {
        Self {
            client,
            function_name: function_name.into(),
        }
    }

    /// A client for the local Lambda at `endpoint` whose calls give up `grace` after the
    /// function's own timeout (the local Lambda answers a timed-out invocation itself; this only
    /// bounds a Lambda that does not answer at all). No SDK retries: the mapping decides. Both
    /// the operation and the attempt timeout are set: `config`'s shorter attempt timeout (meant
    /// for DynamoDB and SNS calls) would otherwise cut off an invocation that is merely slow.
    #[must_use]
    pub fn client_for(
        config: &aws_config::SdkConfig,
        endpoint: &str,
        function_timeout: Duration,
        grace: Duration,
    ) -> aws_sdk_lambda::Client {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(function_timeout + grace)
            .operation_attempt_timeout(function_timeout + grace)
            .connect_timeout(Duration::from_secs(2))
            .build();
        let lambda = aws_sdk_lambda::config::Builder::from(config)
            .endpoint_url(endpoint)
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_lambda::Client::from_conf(lambda)
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke(&self, records: Vec<EventRecord>) -> Invocation {
        let mut event = Event::default();
        event.records = records;
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => payload,
            Err(err) => return Invocation::NotInvoked(format!("cannot serialize the event: {err}")),
        };
        let result = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .payload(Blob::new(payload))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => return classify_invoke_error(&err),
        };
        let body = output.payload.map(Blob::into_inner).unwrap_or_default();
        if let Some(kind) = output.function_error {
            return Invocation::FunctionError(format!("{kind}: {}", String::from_utf8_lossy(&body)));
        }
        decode_response(&body)
    }
}

/// The function's answer: the response Lambda reads `batchItemFailures` from. A body that is not
/// one (`null`, a string) counts as success, as Lambda reads it; malformed JSON as a function
/// error.
#[must_use]
pub fn decode_response(body: &[u8]) -> Invocation {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) if value.is_object() => match serde_json::from_value::<DynamoDbEventResponse>(value) {
            Ok(response) => Invocation::Returned(response),
            Err(err) => Invocation::FunctionError(format!("unreadable batch response: {err}")),
        },
        Ok(_) => Invocation::Returned(DynamoDbEventResponse::default()),
        Err(err) => Invocation::FunctionError(format!("response is not JSON: {err}")),
    }
}

/// Sorts an `Invoke` failure: the function ran and failed, or it never ran.
fn classify_invoke_error(err: &SdkError<InvokeError, HttpResponse>) -> Invocation {
    let detail = aws_sdk_lambda::error::DisplayErrorContext(err).to_string();
    let status = err.raw_response().map(|response| response.status().as_u16());
    match (err, status) {
        // The local Lambda answers a raised error with 500 and a timed-out one with 408; AWS
        // answers 200 with `X-Amz-Function-Error` (handled above). A call that outlives the
        // function's timeout means the function hung.
        (SdkError::ServiceError(_), Some(500 | 408 | 502)) | (SdkError::TimeoutError(_), _) => {
            Invocation::FunctionError(detail)
        }
        _ => Invocation::NotInvoked(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_may_last_the_function_s_timeout_whatever_the_shared_attempt_timeout() {
        // The shared configuration cuts DynamoDB and SNS attempts at 3 s; a relay invocation
        // publishing to many queues on a busy machine may take longer and is no failure.
        let shared = aws_config::SdkConfig::builder()
            .http_client(staleless_aws::https_client())
            .behavior_version(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(3))
                    .build(),
            )
            .build();
        let client = LambdaInvoker::client_for(
            &shared,
            "http://127.0.0.1:9",
            Duration::from_secs(30),
            Duration::from_secs(5),
        );
        let timeouts = client.config().timeout_config().expect("timeouts");
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(35)));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(Duration::from_secs(35)));
    }

    #[test]
    fn the_response_lambda_reads() {
        let failed = br#"{"batchItemFailures":[{"itemIdentifier":"42"}]}"#;
        let Invocation::Returned(response) = decode_response(failed) else {
            panic!("a response");
        };
        assert_eq!(response.batch_item_failures[0].item_identifier.as_deref(), Some("42"));
        assert_eq!(
            decode_response(b"null"),
            Invocation::Returned(DynamoDbEventResponse::default())
        );
        assert!(matches!(decode_response(b"{not json"), Invocation::FunctionError(_)));
        assert!(matches!(
            decode_response(br#"{"batchItemFailures":"all"}"#),
            Invocation::FunctionError(_)
        ));
    }
}
