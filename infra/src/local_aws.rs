//! The one harness every local run starts from: an emulator, the template's stack provisioned in
//! it, and SDK clients for both.
//!
//! - [`LocalAws`]: an emulator on a free port (or a given one), unless `STALELESS_AWS_ENDPOINT`
//!   names one already running (handy while iterating). Every stack it provisions under
//!   [`LocalAws::provision_unique`] gets a unique name prefix, so tests run in parallel without
//!   seeing each other's tables, topics or queues.
//! - [`LocalStack`]: that plus the demo data seeded and a state directory for logs, keys and
//!   checkpoints: what `infra up`, the end-to-end tests (`tests/`) and the API's in-process moto
//!   tests (`api/tests/moto.rs`) each build their components on.

use std::path::{Path, PathBuf};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::emulator::{Emulator, EmulatorError};
use crate::provision::{self, ProvisionError, Provisioned};
use crate::template::{self, TemplateError};

/// The region the local stack uses everywhere.
pub const LOCAL_REGION: &str = "us-east-1";

/// Why a local AWS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalAwsError {
    /// The emulator failed to start.
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    /// `template.yaml` could not be read.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

/// SDK configuration for an emulator endpoint: fixed region and dummy credentials, so nothing on
/// the machine (profiles, IMDS) is consulted.
#[must_use]
pub fn sdk_config_for(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .http_client(staleless_aws::https_client())
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            Credentials::new("staleless", "staleless", None, None, "staleless-local"),
        ))
        .build()
}

/// A running local AWS and the clients to talk to it.
#[derive(Debug)]
pub struct LocalAws {
    /// The emulator this value owns; `None` when reusing an external one.
    emulator: Option<Emulator>,
    /// Its endpoint URL.
    endpoint: String,
    /// SDK configuration pointing at it.
    config: SdkConfig,
}

impl LocalAws {
    /// Starts an emulator on a free port, or reuses `STALELESS_AWS_ENDPOINT`.
    ///
    /// # Errors
    /// When moto cannot be installed or started.
    pub fn start() -> Result<Self, LocalAwsError> {
        if let Ok(endpoint) = std::env::var("STALELESS_AWS_ENDPOINT") {
            return Ok(Self::external(&endpoint));
        }
        let emulator = Emulator::start(0, None)?;
        let endpoint = emulator.endpoint();
        Ok(Self {
            emulator: Some(emulator),
            config: sdk_config_for(&endpoint),
            endpoint,
        })
    }

    /// Starts an emulator on `port` (0: a free one), logging to `log` (or discarding its output).
    /// Unlike [`LocalAws::start`], never reuses `STALELESS_AWS_ENDPOINT`: `infra up` owns its
    /// emulator.
    ///
    /// # Errors
    /// When moto cannot be installed or started, or the port is taken.
    pub fn start_on(port: u16, log: Option<&Path>) -> Result<Self, LocalAwsError> {
        let emulator = Emulator::start(port, log)?;
        let endpoint = emulator.endpoint();
        Ok(Self {
            emulator: Some(emulator),
            config: sdk_config_for(&endpoint),
            endpoint,
        })
    }

    /// Uses an emulator (or any endpoint) that someone else runs.
    #[must_use]
    pub fn external(endpoint: &str) -> Self {
        Self {
            emulator: None,
            endpoint: endpoint.to_owned(),
            config: sdk_config_for(endpoint),
        }
    }

    /// The endpoint URL (`AWS_ENDPOINT_URL` for child processes).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The SDK configuration every client here is built from.
    #[must_use]
    pub const fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// A DynamoDB client.
    #[must_use]
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }

    /// A DynamoDB Streams client.
    #[must_use]
    pub fn streams(&self) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.config)
    }

    /// An SNS client.
    #[must_use]
    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.config)
    }

    /// An SQS client.
    #[must_use]
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config)
    }

    /// Provisions the template's stack under a fresh unique prefix.
    ///
    /// # Errors
    /// When the template cannot be read or provisioning fails.
    pub async fn provision_unique(&self) -> Result<Provisioned, LocalAwsError> {
        let prefix = unique_prefix();
        self.provision(&prefix).await
    }

    /// Provisions the template's stack under `prefix`.
    ///
    /// # Errors
    /// When the template cannot be read or provisioning fails.
    pub async fn provision(&self, prefix: &str) -> Result<Provisioned, LocalAwsError> {
        self.provision_from(&template::default_template_path(), prefix).await
    }

    /// Provisions the stack of the template at `template` under `prefix`.
    ///
    /// # Errors
    /// When the template cannot be read or provisioning fails.
    pub async fn provision_from(&self, template: &Path, prefix: &str) -> Result<Provisioned, LocalAwsError> {
        let spec = template::load_for(template, prefix)?;
        Ok(provision::provision(&self.config, &spec, prefix).await?)
    }

    /// Deletes a stack's tables, topic and queue (for tests sharing an external emulator).
    pub async fn teardown(&self, stack: &Provisioned) {
        provision::teardown(&self.config, stack).await;
    }

    /// Creates the queue `name` and subscribes it to `topic_arn` with raw message delivery, as
    /// an API task does; tests and benches read invalidations from it.
    ///
    /// # Errors
    /// The first failing SQS or SNS call.
    pub async fn create_subscribed_queue(&self, topic_arn: &str, name: &str) -> Result<SubscribedQueue, LocalAwsError> {
        let failed = |operation: &'static str, detail: String| {
            LocalAwsError::Provision(ProvisionError::Service {
                operation,
                resource: name.to_owned(),
                detail,
            })
        };
        let url = self
            .sqs()
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|err| failed("CreateQueue", DisplayErrorContext(&err).to_string()))?
            .queue_url
            .ok_or_else(|| failed("CreateQueue", "no QueueUrl in the response".into()))?;
        let arn = self.queue_arn(&url).await?;
        self.subscribe_queue(topic_arn, &arn).await?;
        Ok(SubscribedQueue { url, arn })
    }

    /// The ARN of the queue at `url` (what a subscription names).
    ///
    /// # Errors
    /// When `GetQueueAttributes` fails or answers without the ARN.
    pub async fn queue_arn(&self, url: &str) -> Result<String, LocalAwsError> {
        let failed = |detail: String| {
            LocalAwsError::Provision(ProvisionError::Service {
                operation: "GetQueueAttributes",
                resource: url.to_owned(),
                detail,
            })
        };
        self.sqs()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|err| failed(DisplayErrorContext(&err).to_string()))?
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| failed("no QueueArn in the response".into()))
    }

    /// Subscribes the queue `queue_arn` to `topic_arn` with raw message delivery.
    ///
    /// # Errors
    /// When `Subscribe` fails.
    pub async fn subscribe_queue(&self, topic_arn: &str, queue_arn: &str) -> Result<(), LocalAwsError> {
        self.sns()
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .map_err(|err| {
                LocalAwsError::Provision(ProvisionError::Service {
                    operation: "Subscribe",
                    resource: queue_arn.to_owned(),
                    detail: DisplayErrorContext(&err).to_string(),
                })
            })?;
        Ok(())
    }

    /// Stops the emulator, if this value owns one. Also done on drop.
    pub fn stop(&mut self) {
        if let Some(emulator) = self.emulator.as_mut() {
            emulator.stop();
        }
    }
}

/// Why a [`LocalStack`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalStackError {
    /// The emulator or the provisioning failed.
    #[error(transparent)]
    Aws(#[from] LocalAwsError),
    /// The demo data could not be written.
    #[error("cannot seed the demo data: {0}")]
    Seed(#[from] crate::operator::OperatorError),
    /// The state directory could not be created.
    #[error("cannot create {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An emulator with the template's stack provisioned and the demo data seeded, and the state
/// directory of the components started on it. Components are the caller's: it starts them in
/// the order they feed each other and stops them in reverse, before the emulator (dropped last).
#[derive(Debug)]
pub struct LocalStack {
    /// The emulator and its clients.
    pub aws: LocalAws,
    /// The provisioned stack.
    pub stack: Provisioned,
    /// When the demo data was written (Unix ms): ticks written after it prove the relay has
    /// passed the seed data.
    pub seeded_at_ms: i64,
    /// Logs (`logs/`), the local key pair (`jwt/`), checkpoints.
    pub state_dir: PathBuf,
}

impl LocalStack {
    /// Provisions the stack of `template` (the repository's when `None`) under `prefix` (a
    /// fresh unique one when `None`) in `aws`, seeds the demo data and creates `state_dir` (the
    /// temporary directory's `staleless-<prefix>` when `None`) with its `logs/`.
    ///
    /// # Errors
    /// When provisioning, seeding or creating the directory fails.
    pub async fn seeded(
        aws: LocalAws,
        template: Option<&Path>,
        prefix: Option<&str>,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, LocalStackError> {
        let prefix = prefix.map_or_else(unique_prefix, str::to_owned);
        let template = template.map_or_else(template::default_template_path, Path::to_path_buf);
        let stack = aws.provision_from(&template, &prefix).await?;
        crate::operator::seed_demo(&aws.dynamodb(), &stack.users_table, &stack.roles_table).await?;
        let seeded_at_ms = chrono::Utc::now().timestamp_millis();
        let state_dir = state_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("staleless-{}", stack.prefix)));
        let logs = state_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| LocalStackError::StateDir { path: logs, source })?;
        Ok(Self {
            aws,
            stack,
            seeded_at_ms,
            state_dir,
        })
    }

    /// Where the components' logs go.
    #[must_use]
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Where the local key pair and `jwks.json` live.
    #[must_use]
    pub fn key_dir(&self) -> PathBuf {
        self.state_dir.join("jwt")
    }

    /// The environment every component runs with (see [`crate::system::component_env`]).
    #[must_use]
    pub fn component_env(&self, rust_log: &str) -> Vec<(String, String)> {
        crate::system::component_env(self.aws.endpoint(), &self.stack, &self.key_dir(), rust_log)
    }
}

/// A queue made by [`LocalAws::create_subscribed_queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedQueue {
    /// Its URL, for receiving.
    pub url: String,
    /// Its ARN, for subscribing again (after the topic was re-created).
    pub arn: String,
}

/// A name prefix no other test uses, valid for the template's `NamePrefix` pattern.
#[must_use]
pub fn unique_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..10])
}
