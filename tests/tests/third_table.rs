//! A third table is configuration, not code: a copy of `template.yaml` that adds an `orgs` table
//! with its stream, a relay event source on it and the `orgs` source's variables (on the relay
//! and on the heartbeat writer) is provisioned and run as it is — the relay's Lambda binary, the
//! event source mapping and the writer unchanged — and a consumer built on `staleless-consumer`
//! and registered for `orgs` sees the table's changes, trusts its ticks and, with the relay hung,
//! serves nothing older than the bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Parser;
use serde_yaml_ng::Value;
use staleless_consumer::{
    AwsTimeouts, CacheMode, Caches, ChannelClients, ChannelHealth, FillAborted, MetricNames, ReadPath, SourceSpec,
    Subscriber, SubscriberConfig, TrustedCache,
};
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions, eventually};
use tokio_util::sync::CancellationToken;

/// The consumer's bound, as the tasks' in the end-to-end tests.
const BOUND: Duration = SystemOptions::TEST_BOUND;

/// The third source's variables, as a deployer would set them on the relay and on the writer.
const ORGS_VARIABLES: &str = r#"
RELAY_SOURCES: "users,roles,orgs"
SOURCE_ORGS_TABLE: !Ref OrgsTable
SOURCE_ORGS_PK_PREFIX: "ORG#"
SOURCE_ORGS_IGNORED_ATTRIBUTES: "viewedAt"
"#;

const ORGS_FILTER: &str = r#"
Filters:
  - Pattern: '{"dynamodb":{"Keys":{"PK":{"S":[{"prefix":"ORG#"},{"prefix":"HEARTBEAT#"}]}}}}'
"#;

const ORGS_TABLE: &str = r#"
Type: AWS::DynamoDB::Table
Properties:
  TableName: !Sub "${NamePrefix}-orgs"
  BillingMode: PAY_PER_REQUEST
  AttributeDefinitions:
    - { AttributeName: PK, AttributeType: S }
    - { AttributeName: SK, AttributeType: S }
  KeySchema:
    - { AttributeName: PK, KeyType: HASH }
    - { AttributeName: SK, KeyType: RANGE }
  StreamSpecification:
    StreamViewType: NEW_AND_OLD_IMAGES
"#;

/// `template.yaml` with the `orgs` table, its stream event on the relay, and the source's
/// variables on the relay and the heartbeat writer; written to a temporary file.
fn template_with_a_third_table() -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(infra::template::default_template_path())?;
    let mut template: Value = serde_yaml_ng::from_str(&text)?;
    let resources = template
        .get_mut("Resources")
        .and_then(Value::as_mapping_mut)
        .context("Resources")?;
    resources.insert("OrgsTable".into(), serde_yaml_ng::from_str(ORGS_TABLE)?);
    let variables: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(ORGS_VARIABLES)?;
    for function in ["StreamRelayFunction", "HeartbeatFunction"] {
        let environment = resources
            .get_mut(function)
            .and_then(|function| function.get_mut("Properties"))
            .and_then(|properties| properties.get_mut("Environment"))
            .and_then(|environment| environment.get_mut("Variables"))
            .and_then(Value::as_mapping_mut)
            .with_context(|| format!("{function} variables"))?;
        environment.extend(variables.clone());
    }
    let events = resources
        .get_mut("StreamRelayFunction")
        .and_then(|function| function.get_mut("Properties"))
        .and_then(|properties| properties.get_mut("Events"))
        .and_then(Value::as_mapping_mut)
        .context("relay events")?;
    // The users table's event source, on the orgs table's stream and filtered to its key space
    // (and the heartbeat items').
    let mut orgs_stream = events.get("UsersStream").cloned().context("UsersStream")?;
    let properties = orgs_stream.get_mut("Properties").context("UsersStream's properties")?;
    properties["Stream"] = serde_yaml_ng::from_str("!GetAtt OrgsTable.StreamArn")?;
    properties["FilterCriteria"] = serde_yaml_ng::from_str(ORGS_FILTER)?;
    events.insert("OrgsStream".into(), orgs_stream);
    let path = std::env::temp_dir().join(format!("staleless-third-table-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, serde_yaml_ng::to_string(&template)?)?;
    Ok(path)
}

/// The consumer's configuration: its flags, as a service would take them from its environment.
#[derive(Debug, Parser)]
struct ConsumerConfig {
    #[command(flatten)]
    channel: SubscriberConfig,
    #[command(flatten)]
    aws: AwsTimeouts,
}

/// Why an org could not be read (the cache's loader error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct LoadError(String);

impl From<FillAborted> for LoadError {
    fn from(aborted: FillAborted) -> Self {
        Self(aborted.to_string())
    }
}

type Orgs = TrustedCache<String, Option<String>, LoadError>;

/// A consumer of the `orgs` source alone: its cache of org names and what feeds it.
struct OrgsConsumer {
    orgs: Orgs,
    health: Arc<ChannelHealth>,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    /// Reads that went to the table (fills and read-throughs).
    loads: Arc<AtomicUsize>,
    cancel: CancellationToken,
    subscription: tokio::task::JoinHandle<()>,
}

impl OrgsConsumer {
    fn start(system: &LocalSystem, table: &str) -> anyhow::Result<Self> {
        let bound = BOUND.as_secs().to_string();
        let config = ConsumerConfig::try_parse_from([
            "orgs-consumer",
            "--topic-arn",
            &system.stack.topic_arn,
            "--queue-name-prefix",
            &system.stack.task_queue_prefix,
            "--poll-wait-secs",
            "1",
            "--staleness-bound-secs",
            &bound,
        ])?;
        let sdk = infra::sdk_config_for(system.aws.endpoint());
        let sources = [SourceSpec::new("orgs", "orgs")];
        let health = Arc::new(ChannelHealth::new(
            config.channel.trust_rules(),
            &sources,
            MetricNames::with_prefix("orgs_consumer"),
        ));
        let orgs: Orgs = TrustedCache::new(
            Arc::clone(&health),
            "orgs",
            CacheMode::Event,
            1_000,
            Duration::from_secs(3_600),
        );
        let caches = Caches::new().register("orgs", Arc::new(orgs.clone()));
        let clients = ChannelClients::from_sdk(&sdk, &config.aws, config.channel.poll_wait());
        let topic = config.channel.topic_arn.clone().context("topic")?;
        let subscriber = Subscriber::new(
            Arc::clone(&health),
            caches,
            clients,
            &topic,
            config.channel.clone(),
            &format!("orgs-{}", uuid::Uuid::new_v4().simple()),
        )
        .with_table(table, "orgs");
        let cancel = CancellationToken::new();
        let subscription = tokio::spawn(subscriber.run(cancel.clone()));
        Ok(Self {
            orgs,
            health,
            dynamodb: system.aws.dynamodb(),
            table: table.to_owned(),
            loads: Arc::new(AtomicUsize::new(0)),
            cancel,
            subscription,
        })
    }

    /// The org's name as the consumer serves it.
    async fn name(&self, org: &str) -> anyhow::Result<Option<String>> {
        let (dynamodb, table, key, loads) = (
            self.dynamodb.clone(),
            self.table.clone(),
            org.to_owned(),
            Arc::clone(&self.loads),
        );
        let load = move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            let item = dynamodb
                .get_item()
                .table_name(table)
                .key("PK", AttributeValue::S(format!("ORG#{key}")))
                .key("SK", AttributeValue::S("ORG".to_owned()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|err| LoadError(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string()))?
                .item;
            Ok(item.and_then(|item| item.get("name").and_then(|name| name.as_s().ok()).cloned()))
        };
        Ok(self.orgs.get(org, load).await?)
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.subscription.await;
    }
}

async fn put_org(system: &LocalSystem, table: &str, org: &str, attributes: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut put = system
        .aws
        .dynamodb()
        .put_item()
        .table_name(table)
        .item("PK", AttributeValue::S(format!("ORG#{org}")))
        .item("SK", AttributeValue::S("ORG".to_owned()));
    for (name, value) in attributes {
        put = put.item(*name, AttributeValue::S((*value).to_owned()));
    }
    put.send().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_table_is_configuration_and_its_consumer_is_bounded_by_its_ticks() -> anyhow::Result<()> {
    let template = template_with_a_third_table()?;
    let system = LocalSystem::start(SystemOptions {
        tasks: 1,
        template: Some(template.clone()),
        ..SystemOptions::default()
    })
    .await?;
    let table = system
        .stack
        .tables
        .get("OrgsTable")
        .map(|table| table.name.clone())
        .context("the orgs table was provisioned")?;
    let consumer = OrgsConsumer::start(&system, &table)?;
    let outcome = exercise(&system, &consumer, &table).await;
    if outcome.is_err() {
        eprintln!("logs: {}", system.logs_dir().display());
    }
    consumer.stop().await;
    system.stop().await;
    let _ = std::fs::remove_file(template);
    outcome
}

async fn exercise(system: &LocalSystem, consumer: &OrgsConsumer, table: &str) -> anyhow::Result<()> {
    // The heartbeat writer beats into the orgs table too, and its ticks cross the relay.
    eventually(PATIENCE, "the orgs consumer to trust its cache", || async {
        Ok(consumer.health.is_trusted("orgs"))
    })
    .await?;
    let ready = system.relay_ready_line()?;
    let sources = ready["sources"].as_str().unwrap_or_default();
    anyhow::ensure!(
        sources.contains(&format!("orgs={table} (PK ORG#…, ignores viewedAt)")),
        "the relay binary read the third source from the template: {sources}"
    );

    // A change made with the SDK reaches the consumer's cache.
    put_org(system, table, "acme", &[("name", "Acme")]).await?;
    assert_eq!(consumer.name("acme").await?, Some("Acme".to_owned()));
    let loads = consumer.loads.load(Ordering::SeqCst);
    assert_eq!(consumer.name("acme").await?, Some("Acme".to_owned()));
    assert_eq!(consumer.loads.load(Ordering::SeqCst), loads, "a trusted hit");
    put_org(system, table, "acme", &[("name", "Acme Corp")]).await?;
    eventually(PATIENCE, "the rename to reach the consumer", || async {
        Ok(consumer.name("acme").await? == Some("Acme Corp".to_owned()))
    })
    .await?;
    assert_eq!(
        consumer.orgs.read_path(),
        ReadPath::Cache,
        "served from the cache: the invalidation evicted the old name"
    );

    // The relay hangs: no invalidation, no tick. Every read answered with the old name is made
    // within the bound of the write; then the consumer reads through. On a busy machine a tick
    // already on its way can arrive late enough to count as a gap and flush the cache: the next
    // read is then a miss that fills from the table, on the cache path, before the bound. Either
    // way the consumer must stop trusting the cache while the relay stays hung.
    assert_eq!(consumer.name("acme").await?, Some("Acme Corp".to_owned()));
    system.relay.as_ref().context("no relay to pause")?.pause();
    put_org(system, table, "acme", &[("name", "Acme Paused")]).await?;
    let acknowledged = Instant::now();
    let loads_before = consumer.loads.load(Ordering::SeqCst);
    let mut oldest_stale_read = Duration::ZERO;
    let served = loop {
        let started = acknowledged.elapsed();
        let name = consumer.name("acme").await?;
        if name.as_deref() == Some("Acme Paused") {
            break consumer.orgs.read_path();
        }
        oldest_stale_read = oldest_stale_read.max(started);
        anyhow::ensure!(started < PATIENCE, "the old name for {started:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if served == ReadPath::Cache {
        assert!(
            consumer.loads.load(Ordering::SeqCst) > loads_before,
            "the new name came from the cache path without a read of the table"
        );
    }
    let lapsed = eventually(
        PATIENCE,
        "the consumer to stop trusting its cache with the relay hung",
        || async { Ok(consumer.orgs.read_path() == ReadPath::Bypass) },
    )
    .await;
    if let Some(relay) = &system.relay {
        relay.resume();
    }
    lapsed?;
    assert!(
        oldest_stale_read <= BOUND,
        "the old name was served {oldest_stale_read:?} after the write, beyond the bound {BOUND:?}"
    );
    Ok(())
}
