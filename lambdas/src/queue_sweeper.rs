//! `queue-sweeper`: the fleet's one sweeper of queues and subscriptions left by crashed tasks.
//!
//! On AWS it is a scheduled Lambda (`QueueSweeperFunction`): each invocation sweeps once, and a
//! sweep whose listing fails fails the invocation, which the template alarms on. Anywhere else
//! (the local stack) it is a process that sweeps every `SWEEP_INTERVAL_SECS` until SIGINT or
//! SIGTERM. Both run [`Sweeper::sweep_once`], so what each API task costs stays flat however
//! many tasks run, and no task may touch another task's queue.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use lambda_runtime::{LambdaEvent, service_fn};
use staleless_consumer::sweeper::Sweeper;
use staleless_consumer::{ChannelClients, SweeperConfig, shutdown_signal, telemetry};
use tokio_util::sync::CancellationToken;

/// Runs the function until the Lambda runtime (or, for a process, a signal) stops it.
pub async fn run() -> ExitCode {
    let config = match SweeperConfig::try_parse() {
        Ok(config) => config,
        Err(err) => err.exit(),
    };
    telemetry::init();
    let sdk = staleless_aws::load_from_env().await;
    // The sweeper never long-polls: SQS calls get the ordinary call timeout.
    let clients = ChannelClients::from_sdk(&sdk, &config.aws, Duration::ZERO);
    let sweeper = Sweeper::new(
        clients,
        config.topic_arn.clone(),
        config.queue_name_prefix.clone(),
        Duration::from_secs(config.queue_stale_after_secs),
    )
    .with_heartbeat_tag(&config.tags.heartbeat);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let sweeper = &sweeper;
        let handler = service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
            let report = sweeper.sweep_once().await?;
            tracing::info!(?report, "sweep done");
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "staleQueues": report.stale_queues,
                "orphanedSubscriptions": report.orphaned_subscriptions,
            }))
        });
        return match lambda_runtime::run(handler).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "the Lambda runtime stopped");
                ExitCode::FAILURE
            }
        };
    }
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown_signal().await;
            cancel.cancel();
        }
    });
    tracing::info!(
        prefix = %config.queue_name_prefix,
        interval_secs = config.sweep_interval_secs,
        "sweeping queues left by crashed tasks"
    );
    sweeper
        .run(Duration::from_secs(config.sweep_interval_secs.max(1)), cancel)
        .await;
    ExitCode::SUCCESS
}
