//! The `heartbeat` Lambda: invoked once a minute by its schedule, it writes a heartbeat item per
//! stream shard into each table every `HEARTBEAT_INTERVAL_SECS` for `HEARTBEAT_RUN_SECS`, then
//! returns (see [`stream_relay::heartbeat`]). The writer outlives invocations, so a warm
//! environment keeps the slots it found.

use lambda_runtime::{LambdaEvent, service_fn};
use stream_relay::heartbeat::{HeartbeatConfig, HeartbeatWriter};
use tokio_util::sync::CancellationToken;

/// Runs the function until the Lambda runtime (or, for a process, a signal) stops it.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    stream_relay::init_lambda_tracing();

    let (config, run_for) = HeartbeatConfig::from_lookup(|name| std::env::var(name).ok())?;
    let aws = stream_relay::aws_config_with_timeouts().await;
    let writer = HeartbeatWriter::on_aws(&aws, config);
    let writer = &writer;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let run = writer.run_for(Some(run_for), &CancellationToken::new()).await;
        tracing::info!(written = run.written, failed = run.failed, "heartbeat run done");
        Ok::<_, lambda_runtime::Error>(serde_json::json!({"written": run.written, "failed": run.failed}))
    }))
    .await
}
