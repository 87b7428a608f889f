//! Creates what `template.yaml` declares (tables with their streams and indexes, the topic, the
//! relay's dead-letter queue and its subscription to the topic) in an AWS endpoint, normally the
//! local emulator.
//!
//! Provisioning is idempotent: what already exists is described and reused, so the run command
//! can be pointed at an emulator that is already up.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{self, SubscriptionSpec, TableSpec, TemplateSpec};

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Nothing answers at the endpoint.
    #[error("cannot reach the AWS endpoint {endpoint}: is the emulator running? ({detail})")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The connection error.
        detail: String,
    },
    /// The service answered with an error.
    #[error("{operation} {resource} failed: {detail}")]
    Service {
        /// The API call.
        operation: &'static str,
        /// The table, topic or queue.
        resource: String,
        /// The service's message.
        detail: String,
    },
    /// The template does not declare what the stack needs.
    #[error("template declares no {0}")]
    Missing(&'static str),
}

/// The physical names and ARNs of one provisioned stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The name prefix (`NamePrefix`) everything was created with.
    pub prefix: String,
    /// `USERS_TABLE`.
    pub users_table: String,
    /// `ROLES_TABLE`.
    pub roles_table: String,
    /// Stream of the users table.
    pub users_stream_arn: String,
    /// Stream of the roles table.
    pub roles_stream_arn: String,
    /// `INVALIDATION_TOPIC_ARN`.
    pub topic_arn: String,
    /// URL of the relay's dead-letter queue.
    pub dead_letter_queue_url: String,
    /// Prefix for the API tasks' own queues (`QUEUE_NAME_PREFIX`), as the template's output.
    pub task_queue_prefix: String,
    /// Every table of the template by logical id, the two above included: a template that adds
    /// a table (and a relay event source on its stream) needs no code here.
    pub tables: BTreeMap<String, ProvisionedTable>,
}

/// One provisioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedTable {
    /// Its physical name.
    pub name: String,
    /// Its stream, when it has one.
    pub stream_arn: Option<String>,
}

impl Provisioned {
    /// Whether a subscription endpoint (a queue ARN) is an API task's queue: the topic also has
    /// the dead-letter queue's subscription (which copies give-ups for operators), which no test
    /// of the tasks' own subscriptions may count or pick.
    #[must_use]
    pub fn is_task_queue(&self, queue_arn_or_url: &str) -> bool {
        let name = queue_arn_or_url.rsplit(['/', ':']).next().unwrap_or_default();
        name.strip_prefix(self.task_queue_prefix.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

fn classify<E, R>(endpoint: &str, operation: &'static str, resource: &str, err: SdkError<E, R>) -> ProvisionError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ProvisionError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail: root_cause(&err),
        },
        _ => ProvisionError::Service {
            operation,
            resource: resource.to_owned(),
            detail: one_line(&DisplayErrorContext(&err).to_string()),
        },
    }
}

/// The innermost error's message ("Connection refused (os error 111)"): the layers above it
/// only repeat that a request failed.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    one_line(&current.to_string())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Provisions the stack described by `spec` with the given prefix.
///
/// # Errors
/// [`ProvisionError::Unreachable`] when nothing answers at the endpoint; otherwise the first
/// failing call.
pub async fn provision(config: &SdkConfig, spec: &TemplateSpec, prefix: &str) -> Result<Provisioned, ProvisionError> {
    let endpoint = config.endpoint_url().unwrap_or("the default AWS endpoint").to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let sns = aws_sdk_sns::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);

    let mut streams = Vec::new();
    for table in &spec.tables {
        streams.push(create_table(&dynamodb, &endpoint, table).await?);
    }
    let stream_of = |logical_id: &'static str| {
        spec.tables
            .iter()
            .zip(&streams)
            .find(|(table, _)| table.logical_id == logical_id)
            .and_then(|(table, stream)| stream.clone().map(|arn| (table.name.clone(), arn)))
            .ok_or(ProvisionError::Missing(logical_id))
    };
    let (users_table, users_stream_arn) = stream_of("UsersTable")?;
    let (roles_table, roles_stream_arn) = stream_of("AppRolesTable")?;
    let tables = spec
        .tables
        .iter()
        .zip(streams)
        .map(|(table, stream_arn)| {
            (
                table.logical_id.clone(),
                ProvisionedTable {
                    name: table.name.clone(),
                    stream_arn,
                },
            )
        })
        .collect();

    // Topic ARNs and queue URLs by logical id, for the subscriptions and the stack's outputs.
    let mut topic_arns = BTreeMap::new();
    for topic in &spec.topics {
        let arn = sns
            .create_topic()
            .name(&topic.name)
            .send()
            .await
            .map_err(|err| classify(&endpoint, "CreateTopic", &topic.name, err))?
            .topic_arn
            .ok_or_else(|| ProvisionError::Service {
                operation: "CreateTopic",
                resource: topic.name.clone(),
                detail: "no TopicArn in the response".into(),
            })?;
        topic_arns.insert(topic.logical_id.as_str(), arn);
    }
    let topic_arn = topic_arns
        .get("InvalidationTopic")
        .cloned()
        .ok_or(ProvisionError::Missing("InvalidationTopic"))?;

    let mut queue_urls = BTreeMap::new();
    for queue in &spec.queues {
        let url = sqs
            .create_queue()
            .queue_name(&queue.name)
            .send()
            .await
            .map_err(|err| classify(&endpoint, "CreateQueue", &queue.name, err))?
            .queue_url
            .unwrap_or_default();
        queue_urls.insert(queue.logical_id.as_str(), url);
    }
    let dead_letter_queue_url = queue_urls.get("RelayDeadLetterQueue").cloned().unwrap_or_default();

    for subscription in &spec.subscriptions {
        let (Some(topic_arn), Some(queue_url)) = (
            topic_arns.get(subscription.topic.as_str()),
            queue_urls.get(subscription.queue.as_str()),
        ) else {
            return Err(ProvisionError::Service {
                operation: "Subscribe",
                resource: subscription.logical_id.clone(),
                detail: format!(
                    "subscribes {} to {}, which the template does not declare as a queue and a topic",
                    subscription.queue, subscription.topic
                ),
            });
        };
        subscribe(&sns, &sqs, &endpoint, subscription, topic_arn, queue_url).await?;
    }

    Ok(Provisioned {
        prefix: prefix.to_owned(),
        users_table,
        roles_table,
        users_stream_arn,
        roles_stream_arn,
        topic_arn,
        dead_letter_queue_url,
        task_queue_prefix: format!("{prefix}-task"),
        tables,
    })
}

/// Subscribes the queue at `queue_url` to `topic_arn` with the subscription's attributes. SNS
/// answers a repeated `Subscribe` with the subscription that exists.
async fn subscribe(
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    endpoint: &str,
    subscription: &SubscriptionSpec,
    topic_arn: &str,
    queue_url: &str,
) -> Result<(), ProvisionError> {
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|err| classify(endpoint, "GetQueueAttributes", queue_url, err))?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| ProvisionError::Service {
            operation: "GetQueueAttributes",
            resource: queue_url.to_owned(),
            detail: "no QueueArn in the response".into(),
        })?;
    let attributes = [
        (
            "RawMessageDelivery",
            Some(subscription.raw_message_delivery.to_string()),
        ),
        ("FilterPolicyScope", subscription.filter_policy_scope.clone()),
        ("FilterPolicy", subscription.filter_policy.clone()),
    ];
    let mut request = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn);
    for (name, value) in attributes {
        if let Some(value) = value {
            request = request.attributes(name, value);
        }
    }
    request
        .send()
        .await
        .map_err(|err| classify(endpoint, "Subscribe", &subscription.logical_id, err))?;
    Ok(())
}

/// Creates one table (or reuses it) and returns its latest stream ARN.
async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    endpoint: &str,
    table: &TableSpec,
) -> Result<Option<String>, ProvisionError> {
    let key_schema = |elements: &[template::KeyElement]| {
        elements
            .iter()
            .map(|element| {
                KeySchemaElement::builder()
                    .attribute_name(&element.attribute_name)
                    .key_type(match element.key_type {
                        template::KeyType::Hash => KeyType::Hash,
                        template::KeyType::Range => KeyType::Range,
                    })
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let build_error = |err: aws_sdk_dynamodb::error::BuildError| ProvisionError::Service {
        operation: "CreateTable",
        resource: table.name.clone(),
        detail: err.to_string(),
    };

    let mut request = client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.key_schema).map_err(build_error)?));
    for attribute in &table.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&attribute.attribute_name)
                .attribute_type(ScalarAttributeType::from(attribute.attribute_type.as_str()))
                .build()
                .map_err(build_error)?,
        );
    }
    for index in &table.indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection_type.as_str()))
            .set_non_key_attributes((!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()))
            .build();
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key_schema).map_err(build_error)?))
                .projection(projection)
                .build()
                .map_err(build_error)?,
        );
    }
    if let Some(view_type) = &table.stream_view_type {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view_type.as_str()))
                .build()
                .map_err(build_error)?,
        );
    }

    match request.send().await {
        Ok(_) => {
            if let Some(attribute) = &table.ttl_attribute {
                client
                    .update_time_to_live()
                    .table_name(&table.name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(attribute)
                            .enabled(true)
                            .build()
                            .map_err(build_error)?,
                    )
                    .send()
                    .await
                    .map_err(|err| classify(endpoint, "UpdateTimeToLive", &table.name, err))?;
            }
        }
        Err(err) if err.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ResourceInUseException") => {}
        Err(err) => return Err(classify(endpoint, "CreateTable", &table.name, err)),
    }

    let description = client
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
        .map_err(|err| classify(endpoint, "DescribeTable", &table.name, err))?;
    Ok(description.table.and_then(|table| table.latest_stream_arn))
}

/// Deletes what [`provision`] created (the topic's subscriptions go with it). Best effort: used by
/// tests to leave a shared emulator clean, never on a real account.
pub async fn teardown(config: &SdkConfig, stack: &Provisioned) {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let sns = aws_sdk_sns::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    for table in stack.tables.values() {
        let _ = dynamodb.delete_table().table_name(&table.name).send().await;
    }
    let _ = sns.delete_topic().topic_arn(&stack.topic_arn).send().await;
    if !stack.dead_letter_queue_url.is_empty() {
        let _ = sqs.delete_queue().queue_url(&stack.dead_letter_queue_url).send().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_queues_are_told_from_the_dead_letter_queue() {
        let stack = Provisioned {
            prefix: "p".into(),
            users_table: String::new(),
            roles_table: String::new(),
            users_stream_arn: String::new(),
            roles_stream_arn: String::new(),
            topic_arn: String::new(),
            dead_letter_queue_url: String::new(),
            task_queue_prefix: "p-task".into(),
            tables: BTreeMap::new(),
        };
        assert!(stack.is_task_queue("arn:aws:sqs:us-east-1:1:p-task-abc"));
        assert!(stack.is_task_queue("http://127.0.0.1:4566/1/p-task-abc-2"));
        assert!(!stack.is_task_queue("arn:aws:sqs:us-east-1:1:p-relay-dlq"));
        assert!(!stack.is_task_queue("arn:aws:sqs:us-east-1:1:p-tasks"));
    }
}
