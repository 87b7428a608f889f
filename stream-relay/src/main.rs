//! The `stream-relay` Lambda: reads its configuration, builds the SNS client once and serves
//! DynamoDB stream batches with [`stream_relay::function_handler`].

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use stream_relay::{LenientEvent, Mapper, Relay, RelayConfig, SnsPublisher, function_handler};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // JSON lines for CloudWatch (the template sets LogFormat: JSON); CloudWatch stamps the time.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .without_time()
        .init();

    let config = RelayConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    let publisher = SnsPublisher::new(aws_sdk_sns::Client::new(&aws), &config.topic_arn);
    let relay = Relay::new(Mapper::from_config(&config), Arc::new(publisher));
    tracing::info!(
        users_table = %config.users_table,
        roles_table = %config.roles_table,
        ignored_attributes = ?config.ignored_attributes,
        "stream relay ready"
    );

    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LenientEvent>| async move {
        function_handler(relay, event).await
    }))
    .await
}
