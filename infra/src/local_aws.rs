//! Test support: a local AWS with a freshly provisioned stack and configured SDK clients.
//!
//! Each [`LocalAws`] starts its own emulator on a free port, unless `STALELESS_AWS_ENDPOINT`
//! names one already running (handy while iterating). Every stack it provisions gets a unique
//! name prefix, so tests run in parallel without seeing each other's tables, topics or queues.

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
        let spec = template::load_for(&template::default_template_path(), prefix)?;
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
