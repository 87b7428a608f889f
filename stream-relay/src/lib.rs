//! The stream relay: the Lambda that turns DynamoDB stream records of the users and app-roles
//! tables into invalidation messages on the SNS topic.
//!
//! - [`config`]: `USERS_TABLE`, `ROLES_TABLE`, `INVALIDATION_TOPIC_ARN`, `RELAY_IGNORED_ATTRIBUTES`.
//! - [`mapping`]: pure — which key a record invalidates (or, naming none, which source's caches
//!   it flushes), the no-op filter, coalescing per key.
//! - [`publish`]: the one-method [`Publisher`], its SNS implementation and an in-memory one.
//! - [`relay`]: one invocation — map, pack, publish with retries, report partial batch failures,
//!   log a summary.
//! - [`metrics`]: each invocation's counts as CloudWatch embedded-metric-format lines.
//! - [`heartbeat`]: the heartbeat writer (its own Lambda, `lambdas/src/bin/heartbeat.rs`, and `infra
//!   heartbeat` locally) whose items come back to every task as ticks.
//!
//! `main.rs` only wires these to the Lambda runtime; `infra`'s local event source mapping calls
//! [`Relay::handle_records`] in-process, so both paths run the same code.

pub mod config;
pub mod heartbeat;
pub mod mapping;
pub mod metrics;
pub mod publish;
pub mod relay;

use std::time::Duration;

/// Longest one AWS call may take, retries included: far inside the functions' timeouts, so a
/// hung SNS or DynamoDB fails the call (and Lambda retries the batch) instead of the invocation.
pub const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt may take before the SDK retries it.
pub const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// JSON log lines for CloudWatch (the template sets `LogFormat: JSON`), level from `RUST_LOG`
/// (default `info`), no timestamps (CloudWatch stamps each line): both Lambdas' logging.
pub fn init_lambda_tracing() {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .init();
}

/// The SDK configuration of the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials) with
/// the operation and attempt timeouts above: what both Lambdas and the local relay use.
pub async fn aws_config_with_timeouts() -> aws_config::SdkConfig {
    staleless_aws::from_env()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(AWS_OPERATION_TIMEOUT)
                .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

pub use config::RelayConfig;
pub use mapping::Mapper;
pub use publish::{MemoryPublisher, PublishEntry, PublishError, Publisher, SnsPublisher};
pub use relay::{InvocationSummary, LenientEvent, Relay, RelayOutcome, RetryPolicy, function_handler};
