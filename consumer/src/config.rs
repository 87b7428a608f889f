//! Configuration read from the environment (or flags) with defaults: a task's subscription and
//! bound ([`SubscriberConfig`]) and the fleet sweeper's ([`SweeperConfig`]).

use std::time::Duration;

use clap::{Args, Parser};

use crate::AwsTimeouts;
use crate::trust::TrustRules;

/// The task's own invalidation queue and its freshness bound, from the environment (or flags)
/// with defaults: a service flattens it into its own configuration.
#[derive(Debug, Clone, Args)]
pub struct SubscriberConfig {
    /// The topic the stream relay publishes to (required in `event` mode).
    #[arg(long, env = "INVALIDATION_TOPIC_ARN")]
    pub topic_arn: Option<String>,
    /// This task's queue is `<prefix>-<task id>`; the sweeper only touches queues of the prefix.
    #[arg(long, env = "QUEUE_NAME_PREFIX", default_value = "staleless-task")]
    pub queue_name_prefix: String,
    /// Long-poll wait per receive, at most 20 s (the SQS maximum).
    #[arg(long, env = "POLL_WAIT_SECS", default_value_t = 20)]
    pub poll_wait_secs: u64,
    /// The freshness bound `B`: a cache is served only while a tick of its source (a heartbeat
    /// that crossed the whole path) was written and arrived within this many seconds; past it
    /// the cache is bypassed (read-through) until ticks are back, then flushed. No task serves a
    /// cached value older than this. Keep the heartbeat interval at most a third of it.
    #[arg(long, env = "STALENESS_BOUND_SECS", default_value_t = 15)]
    pub staleness_bound_secs: u64,
    /// Messages older than this are dropped by SQS: after a gap that long the cache is flushed
    /// anyway, so keeping them would only replay work.
    #[arg(long, env = "QUEUE_RETENTION_SECS", default_value_t = 300)]
    pub queue_retention_secs: u64,
    /// How often the queue's heartbeat tag is refreshed.
    #[arg(long, env = "QUEUE_HEARTBEAT_INTERVAL_SECS", default_value_t = 60)]
    pub queue_heartbeat_interval_secs: u64,
    /// The heartbeat writers whose ticks count (the `<writer>` of their `HEARTBEAT#<writer>`
    /// items, comma-separated): the heartbeat Lambda's `HEARTBEAT_WRITER`. A tick of any other
    /// name is refused and counted.
    #[arg(long, env = "HEARTBEAT_WRITERS", value_delimiter = ',', default_value = staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER)]
    pub heartbeat_writers: Vec<String>,
    /// How far ahead of this task's clock a tick may be written (clock skew), charged against
    /// the bound; at most half of it. A tick from further ahead is refused and counted.
    #[arg(long, env = "TICK_FUTURE_TOLERANCE_MS", default_value_t = 500)]
    pub tick_future_tolerance_ms: u64,
    /// One cache hit in this many is re-read (off the request path) and compared with what was
    /// served: the live measure of the cache's freshness (`TrustedCache::verified`). `0` turns
    /// it off.
    #[arg(long, env = "CACHE_VERIFY_ONE_IN", default_value_t = 1_000)]
    pub verify_one_in: u64,
    /// The names of the queue's tags.
    #[command(flatten)]
    pub tags: QueueTags,
}

/// The names of the two tags on a task's queue. The task policy's conditions name the owner tag
/// (`template.yaml`'s `ApiTaskPolicy`), so a deployment that renames it renames it there too.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct QueueTags {
    /// The tag naming the task that created the queue (its `aws:userid`).
    #[arg(long = "queue-owner-tag", env = "QUEUE_OWNER_TAG", default_value = crate::queue::OWNER_TAG)]
    pub owner: String,
    /// The tag holding the Unix time of the owner's last heartbeat, which the fleet sweeper reads.
    #[arg(long = "queue-heartbeat-tag", env = "QUEUE_HEARTBEAT_TAG", default_value = crate::queue::HEARTBEAT_TAG)]
    pub heartbeat: String,
}

impl Default for QueueTags {
    fn default() -> Self {
        Self {
            owner: crate::queue::OWNER_TAG.to_owned(),
            heartbeat: crate::queue::HEARTBEAT_TAG.to_owned(),
        }
    }
}

impl SubscriberConfig {
    /// The long-poll wait, clamped to what SQS allows (0–20 s).
    /// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html>
    #[must_use]
    pub fn poll_wait(&self) -> Duration {
        Duration::from_secs(self.poll_wait_secs.min(20))
    }

    /// The staleness bound.
    #[must_use]
    pub const fn staleness_bound(&self) -> Duration {
        Duration::from_secs(self.staleness_bound_secs)
    }

    /// The trust rules of the configured bound, writers and tolerance.
    #[must_use]
    pub fn trust_rules(&self) -> TrustRules {
        TrustRules::new(
            self.staleness_bound(),
            Duration::from_millis(self.tick_future_tolerance_ms),
            &self.heartbeat_writers,
        )
    }
}

/// The fleet's queue sweeper (`queue-sweeper`): one for all tasks.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "queue-sweeper",
    about = "Removes the queues and subscriptions of crashed API tasks"
)]
pub struct SweeperConfig {
    /// The topic the tasks subscribe to. Named after its variable, so that the error a Lambda
    /// without it logs says what to set.
    #[arg(long, env = "INVALIDATION_TOPIC_ARN", value_name = "INVALIDATION_TOPIC_ARN")]
    pub topic_arn: String,
    /// Only queues named `<prefix>-…` are considered: the tasks' `QUEUE_NAME_PREFIX`.
    #[arg(long, env = "QUEUE_NAME_PREFIX", default_value = "staleless-task")]
    pub queue_name_prefix: String,
    /// Queues of the prefix whose heartbeat tag is older than this belong to crashed tasks: keep
    /// it several times the tasks' `QUEUE_HEARTBEAT_INTERVAL_SECS` (60), so a live task's queue
    /// is never taken for a dead one's.
    #[arg(long, env = "QUEUE_STALE_AFTER_SECS", default_value_t = 600)]
    pub queue_stale_after_secs: u64,
    /// As a process (not a Lambda): how often it sweeps. On AWS the schedule decides.
    #[arg(long, env = "SWEEP_INTERVAL_SECS", default_value_t = 300)]
    pub sweep_interval_secs: u64,
    /// The tags' names, as the tasks have them.
    #[command(flatten)]
    pub tags: QueueTags,
    /// Timeouts of every AWS call.
    #[command(flatten)]
    pub aws: AwsTimeouts,
}
