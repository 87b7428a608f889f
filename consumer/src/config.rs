//! The fleet sweeper's configuration, read from the environment (or flags) with defaults.

use clap::Parser;

use crate::AwsTimeouts;

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
    /// Timeouts of every AWS call.
    #[command(flatten)]
    pub aws: AwsTimeouts,
}
