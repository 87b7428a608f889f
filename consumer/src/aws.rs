//! The AWS clients a task's queue needs, and the timeouts every call gets.

use std::time::Duration;

use clap::Args;

/// Timeouts of every AWS call, so that no hung dependency holds a request or the listener.
#[derive(Debug, Clone, Args)]
pub struct AwsTimeouts {
    /// Longest one DynamoDB or SNS call may take, retries included; a request waiting on a read
    /// that never answers fails (503) within this, and the next request tries again.
    #[arg(long, env = "AWS_CALL_TIMEOUT_MS", default_value_t = 3_000)]
    pub call_timeout_ms: u64,
    /// Longest one attempt may take before the SDK retries it.
    #[arg(long, env = "AWS_ATTEMPT_TIMEOUT_MS", default_value_t = 1_000)]
    pub attempt_timeout_ms: u64,
}

impl AwsTimeouts {
    /// The SDK timeouts for DynamoDB and SNS calls.
    #[must_use]
    pub fn for_calls(&self) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(Duration::from_millis(self.call_timeout_ms.max(1)))
            .operation_attempt_timeout(Duration::from_millis(
                self.attempt_timeout_ms.clamp(1, self.call_timeout_ms.max(1)),
            ))
            .build()
    }

    /// The SDK timeouts for SQS, whose receives wait up to `poll_wait` by design.
    #[must_use]
    pub fn for_queue(&self, poll_wait: Duration) -> aws_config::timeout::TimeoutConfig {
        let call = poll_wait + Duration::from_millis(self.call_timeout_ms.max(1));
        aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(call)
            .operation_attempt_timeout(call)
            .build()
    }
}

/// The SQS, SNS and STS clients a task's queue and the fleet sweeper need.
#[derive(Debug, Clone)]
pub struct ChannelClients {
    /// For the task's queue.
    pub sqs: aws_sdk_sqs::Client,
    /// For the subscription to the topic.
    pub sns: aws_sdk_sns::Client,
    /// For the task's own identity (`GetCallerIdentity`), the owner tag of its queue.
    pub sts: aws_sdk_sts::Client,
}

impl ChannelClients {
    /// Clients from `sdk` with the configured timeouts; SQS's allow for a long poll of `poll_wait`.
    #[must_use]
    pub fn from_sdk(sdk: &aws_config::SdkConfig, timeouts: &AwsTimeouts, poll_wait: std::time::Duration) -> Self {
        let calls = timeouts.for_calls();
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .timeout_config(timeouts.for_queue(poll_wait))
                    .build(),
            ),
            sns: aws_sdk_sns::Client::from_conf(
                aws_sdk_sns::config::Builder::from(sdk)
                    .timeout_config(calls.clone())
                    .build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(sdk).timeout_config(calls).build()),
        }
    }
}
