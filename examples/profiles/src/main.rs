//! `staleless-example`: a service that is not the staleless API, caching user display names from
//! the users table through `staleless-consumer`'s public API only, with the same bound.
//!
//! `GET /profiles/{user_id}` answers `{"userId", "name"}` (404 JSON for an unknown user) with no
//! token; `/ready` and `/metrics` as the API tasks have them, with the same metric names. The
//! lines between `wiring:` and `end of wiring` are all it takes to adopt the guarantee (the
//! README counts them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;
use staleless_consumer::{
    AwsTimeouts, CacheMode, Caches, ChannelClients, ChannelHealth, FillAborted, MetricNames, SourceSpec, Subscriber,
    SubscriberConfig, TrustedCache, queue, shutdown_signal, telemetry,
};
use tokio_util::sync::CancellationToken;

/// The example's configuration: its address and table, and the consumer's own settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "staleless-example",
    about = "Caches user display names with the staleless bound"
)]
struct Config {
    /// Address the HTTP server binds (named after its variable, so a malformed one is reported
    /// by that name).
    #[arg(
        long,
        env = "EXAMPLE_ADDR",
        value_name = "EXAMPLE_ADDR",
        default_value = "127.0.0.1:8083"
    )]
    addr: SocketAddr,
    /// The users table.
    #[arg(long, env = "USERS_TABLE", default_value = staleless_protocol::keys::DEFAULT_USERS_TABLE)]
    users_table: String,
    /// The subscription and the bound.
    #[command(flatten)]
    channel: SubscriberConfig,
    /// Timeouts of every AWS call.
    #[command(flatten)]
    aws: AwsTimeouts,
}

/// Why a name could not be read.
#[derive(Debug, Clone, thiserror::Error)]
enum LoadError {
    /// DynamoDB failed or timed out.
    #[error("users table unavailable: {0}")]
    Unavailable(String),
    /// The item has no string `name`.
    #[error("the item of {0} has no readable name")]
    Corrupt(String),
}

impl From<FillAborted> for LoadError {
    fn from(aborted: FillAborted) -> Self {
        Self::Unavailable(aborted.to_string())
    }
}

/// Display names by user id; `None` caches "no such user".
type Names = TrustedCache<String, Option<Arc<str>>, LoadError>;

#[derive(Clone)]
struct App {
    names: Names,
    health: Arc<ChannelHealth>,
    dynamodb: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init();
    let metrics = staleless_consumer::install_prometheus();
    let topic_arn = config
        .channel
        .topic_arn
        .clone()
        .context("INVALIDATION_TOPIC_ARN is required")?;
    let sdk = staleless_aws::load_from_env().await;
    let cancel = CancellationToken::new();

    // wiring: trust by ticks of the users table, one trusted cache, the task's subscription.
    let sources = [SourceSpec::new("users", "profiles")];
    MetricNames::default().describe(&sources);
    let health = Arc::new(ChannelHealth::new(
        config.channel.trust_rules(),
        &sources,
        MetricNames::default(),
    ));
    let names: Names = TrustedCache::new(
        Arc::clone(&health),
        "users",
        CacheMode::Event,
        100_000,
        Duration::from_secs(3_600),
    )
    .verified(config.channel.verify_one_in, |served, stored| served == stored);
    let caches = Caches::new().register("users", Arc::new(names.clone()));
    let clients = ChannelClients::from_sdk(&sdk, &config.aws, config.channel.poll_wait());
    let subscriber = Subscriber::new(
        Arc::clone(&health),
        caches,
        clients,
        &topic_arn,
        config.channel.clone(),
        &queue::local_task_id(),
    )
    .with_table(&config.users_table, "users");
    let subscription = tokio::spawn(subscriber.run(cancel.clone()));
    // end of wiring

    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .timeout_config(config.aws.for_calls())
            .build(),
    );
    let app = App {
        names,
        health: Arc::clone(&health),
        dynamodb,
        table: config.users_table.as_str().into(),
        metrics,
    };
    let router = Router::new()
        .route("/profiles/{user_id}", get(profile))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot bind {}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let stopping = Arc::clone(&health);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.mark_stopping();
        })
        .await
        .context("server failed")?;
    // The subscriber unsubscribes and deletes its queue before the process ends.
    cancel.cancel();
    subscription.await.context("subscriber panicked")?;
    Ok(())
}

/// `GET /profiles/{user_id}`.
async fn profile(State(app): State<App>, Path(user_id): Path<String>) -> Response {
    let read = || load_name(app.dynamodb.clone(), Arc::clone(&app.table), user_id.clone());
    match app.names.get(user_id.as_str(), read).await {
        Ok(Some(name)) => Json(json!({"userId": user_id, "name": &*name})).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", &format!("no user {user_id}")),
        Err(LoadError::Unavailable(detail)) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &detail),
        Err(err @ LoadError::Corrupt(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_item", &err.to_string()),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// Reads a user's name with `ConsistentRead`: a read-through after an outage must see the newest
/// write.
async fn load_name(
    dynamodb: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    user_id: String,
) -> Result<Option<Arc<str>>, LoadError> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use staleless_protocol::keys;
    let output = dynamodb
        .get_item()
        .table_name(&*table)
        .key(keys::PARTITION_KEY, AttributeValue::S(keys::user_pk(&user_id)))
        .key(keys::SORT_KEY, AttributeValue::S(keys::PROFILE_SK.to_owned()))
        .projection_expression("#name")
        .expression_attribute_names("#name", "name")
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| LoadError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string()))?;
    let Some(item) = output.item else {
        return Ok(None);
    };
    match item.get("name") {
        Some(AttributeValue::S(name)) => Ok(Some(name.as_str().into())),
        _ => Err(LoadError::Corrupt(user_id)),
    }
}

/// `GET /ready`: 200 once the subscription is set up (or kept failing past the bound), until
/// shutdown begins.
async fn ready(State(app): State<App>) -> Response {
    if app.health.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting or stopping")
    }
}

/// `GET /metrics`: Prometheus text, with the freshness gauges current.
async fn render_metrics(State(app): State<App>) -> impl IntoResponse {
    app.metrics.run_upkeep();
    app.health.publish_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
