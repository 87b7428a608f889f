//! The `stream-relay` Lambda: reads its configuration, builds the SNS client once and serves
//! DynamoDB stream batches with [`stream_relay::function_handler`].

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use stream_relay::metrics::MetricsSink;
use stream_relay::{LenientEvent, Mapper, Relay, RelayConfig, SnsPublisher, function_handler};

/// Runs the function until the Lambda runtime (or, for a process, a signal) stops it.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    stream_relay::init_lambda_tracing();

    let config = RelayConfig::from_env()?;
    let aws = stream_relay::aws_config_with_timeouts().await;
    let mapper = Mapper::from_config(&config);
    let publisher = SnsPublisher::new(
        aws_sdk_sns::Client::new(&aws),
        &config.topic_arn,
        mapper.sources().cloned().collect(),
    );
    let relay = Relay::new(mapper, Arc::new(publisher)).with_metrics(MetricsSink::EmbeddedMetricFormat);
    let sources: Vec<String> = config.sources.iter().map(ToString::to_string).collect();
    tracing::info!(sources = sources.join(", "), "stream relay ready");

    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LenientEvent>| async move {
        function_handler(relay, event).await
    }))
    .await
}
