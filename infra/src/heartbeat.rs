//! The heartbeat writer of the local stack: the same [`stream_relay::heartbeat::HeartbeatWriter`]
//! the scheduled Lambda runs on AWS, beating into a provisioned stack's two tables until stopped,
//! one item per stream shard (moto's streams have one shard that never splits: slot `0`).
//! `infra heartbeat` runs it as its own process (so a test or an operator can pause it like any
//! other component); in-process tests spawn it with [`spawn`].

use std::time::Duration;

use aws_config::SdkConfig;
use stream_relay::heartbeat::{DynamoHeartbeats, HeartbeatConfig, HeartbeatRun, HeartbeatWriter};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::provision::Provisioned;

/// The writer for `stack`, beating every `interval` and discovering the streams' shards.
#[must_use]
pub fn writer(config: &SdkConfig, stack: &Provisioned, interval: Duration) -> HeartbeatWriter<DynamoHeartbeats> {
    HeartbeatWriter::on_aws(
        config,
        HeartbeatConfig {
            tables: vec![stack.users_table.clone(), stack.roles_table.clone()],
            writer: staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER.to_owned(),
            interval,
        },
    )
}

/// Beats into `stack` every `interval` on a task of its own until `shutdown`.
#[must_use]
pub fn spawn(
    config: &SdkConfig,
    stack: &Provisioned,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<HeartbeatRun> {
    let writer = writer(config, stack, interval);
    tokio::spawn(async move { writer.run_for(None, &shutdown).await })
}
