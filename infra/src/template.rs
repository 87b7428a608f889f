//! Reads `template.yaml` (the SAM template that deploys staleless) into the specs the local stack
//! provisions, so that local tables, streams and topic cannot drift from what `sam deploy` creates.
//!
//! Only what the emulator needs is read: DynamoDB tables (keys, attribute types, GSIs, stream view
//! type, TTL attribute), SNS topics, SQS queues, SNS subscriptions of those queues to those topics
//! (raw delivery, filter policy), the functions' DynamoDB event sources (stream, batch size,
//! starting position, filter patterns, retries, bisection, on-failure destination) that the local
//! event source mapping reproduces, and the functions themselves (binary, timeout, environment)
//! that the local Lambda runs. Names written with `!Sub "${NamePrefix}-..."` or
//! `!Ref NamePrefix` are resolved against the parameters given (defaults from the template).
//!
//! IAM managed policies and the roles' inline policies are read too, not to provision them (the
//! emulator enforces no IAM) but so that tests can check the deployed permissions as data.
//! Queue policies are not read: the emulator does not enforce them either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// Why the template could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read template {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or not shaped like a CloudFormation template.
    #[error("template {origin} is malformed: {source}")]
    Yaml {
        /// The file, or `<inline>`.
        origin: String,
        /// The parser's message, with line and column.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A resource is missing something the local stack needs, or uses a form it cannot resolve.
    #[error("template {origin}: resource {resource}: {problem}")]
    Resource {
        /// The file, or `<inline>`.
        origin: String,
        /// The logical id.
        resource: String,
        /// What is wrong.
        problem: String,
    },
}

/// A DynamoDB key attribute's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyType {
    /// The partition key.
    Hash,
    /// The sort key.
    Range,
}

/// One `KeySchema` element.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyElement {
    /// The attribute.
    pub attribute_name: String,
    /// Partition or sort key.
    pub key_type: KeyType,
}

/// One `AttributeDefinitions` element.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    /// The attribute.
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index name.
    pub name: String,
    /// Its keys.
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    /// Non-key attributes for `INCLUDE`.
    pub non_key_attributes: Vec<String>,
}

/// A table as the template declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Logical id in the template (`UsersTable`).
    pub logical_id: String,
    /// Resolved physical name (`staleless-users`).
    pub name: String,
    /// Key attribute types.
    pub attributes: Vec<AttributeDefinition>,
    /// Table keys.
    pub key_schema: Vec<KeyElement>,
    /// Global secondary indexes.
    pub indexes: Vec<IndexSpec>,
    /// `NEW_AND_OLD_IMAGES` etc.; `None` when the table has no stream.
    pub stream_view_type: Option<String>,
    /// The TTL attribute, when enabled.
    pub ttl_attribute: Option<String>,
}

/// A topic or queue: only its resolved name matters locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedResource {
    /// Logical id in the template.
    pub logical_id: String,
    /// Resolved physical name.
    pub name: String,
}

/// A function's `Type: DynamoDB` event: what Lambda's event source mapping reads and forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEventSpec {
    /// Logical id of the function (`StreamRelayFunction`).
    pub function: String,
    /// The event's name under `Events` (`UsersStream`).
    pub name: String,
    /// Logical id of the table whose stream is read (from `!GetAtt <Table>.StreamArn`).
    pub table_logical_id: String,
    /// `BatchSize`, when set.
    pub batch_size: Option<u32>,
    /// `StartingPosition` (`LATEST`, `TRIM_HORIZON`).
    pub starting_position: Option<String>,
    /// `FilterCriteria.Filters[].Pattern`, each a JSON text; a record passes if any matches.
    pub filter_patterns: Vec<String>,
    /// `MaximumRetryAttempts`: retries of a failing batch before it goes to `on_failure`
    /// (`-1` or unset: until the records expire).
    pub maximum_retry_attempts: Option<i64>,
    /// `MaximumRecordAgeInSeconds`: older records go to `on_failure` unprocessed (`-1` or
    /// unset: never).
    pub maximum_record_age_secs: Option<i64>,
    /// `BisectBatchOnFunctionError`: a batch whose invocation fails is split in two.
    pub bisect_on_function_error: bool,
    /// `FunctionResponseTypes` holds `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `DestinationConfig.OnFailure`: where Lambda sends the message describing records it gives
    /// up.
    pub on_failure: Option<OnFailureDestination>,
}

/// A stream event source's `DestinationConfig.OnFailure`, by the logical id it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailureDestination {
    /// `Type: SQS`, `Destination: !GetAtt <Queue>.Arn`.
    Queue(String),
    /// `Type: SNS`, `Destination: !Ref <Topic>`.
    Topic(String),
}

/// An `AWS::SNS::Subscription` of one of the template's queues to one of its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Logical id in the template (`RelayDeadLetterSubscription`).
    pub logical_id: String,
    /// Logical id of the topic (from `TopicArn: !Ref <Topic>`).
    pub topic: String,
    /// Logical id of the subscribed queue (`Protocol: sqs`, `Endpoint: !GetAtt <Queue>.Arn`): the
    /// only kind of endpoint the local stack subscribes.
    pub queue: String,
    /// `RawMessageDelivery`: the queue receives the published body as is, not SNS's envelope.
    pub raw_message_delivery: bool,
    /// `FilterPolicyScope` (`MessageAttributes`, SNS's default, or `MessageBody`).
    pub filter_policy_scope: Option<String>,
    /// `FilterPolicy` as the JSON text `Subscribe` takes.
    pub filter_policy: Option<String>,
}

/// A value of a function's `Environment.Variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A literal, or a parameter's value (`!Ref Parameter`, `!Sub` of parameters).
    Text(String),
    /// `!Ref <Resource>`: its physical id (a table's name, a topic's ARN), known once provisioned.
    ResourceRef(String),
}

/// An `AWS::Serverless::Function`: what the local Lambda needs to run it as Lambda would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Logical id (`StreamRelayFunction`).
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary` (the `rust-cargolambda` binary), when set.
    pub binary: Option<String>,
    /// `Timeout`, or `Globals.Function.Timeout`; Lambda's default of 3 s when neither is set.
    pub timeout_secs: u64,
    /// `Environment.Variables`.
    pub environment: BTreeMap<String, EnvValue>,
}

/// One statement of an IAM policy. Intrinsics read the way `!Sub` writes them, unresolved:
/// `!GetAtt UsersTable.Arn` reads `${UsersTable.Arn}`, `!Ref InvalidationTopic` reads
/// `${InvalidationTopic}`, and a `!Sub` pattern reads as itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatement {
    /// `Sid`, when set.
    pub sid: Option<String>,
    /// `Allow` or `Deny`.
    pub effect: String,
    /// `Action`, as written (patterns such as `sqs:Get*` stay patterns).
    pub actions: Vec<String>,
    /// `Resource`, one entry per ARN or pattern.
    pub resources: Vec<String>,
    /// `Condition`: operator (`StringEquals`, `ForAllValues:StringLike`, ...) to condition key
    /// to the values it is compared with.
    pub conditions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// An `AWS::IAM::ManagedPolicy`, or the inline policies of an `AWS::IAM::Role` together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Logical id in the template (`ApiTaskPolicy`, `StreamRelayRole`).
    pub logical_id: String,
    /// `PolicyDocument.Statement`.
    pub statements: Vec<PolicyStatement>,
}

/// What the local stack provisions from the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// DynamoDB tables, in template order of logical id.
    pub tables: Vec<TableSpec>,
    /// SNS topics.
    pub topics: Vec<NamedResource>,
    /// SQS queues declared by the template (the relay's dead-letter queue).
    pub queues: Vec<NamedResource>,
    /// SNS subscriptions of the template's queues to its topics (the dead-letter queue's).
    pub subscriptions: Vec<SubscriptionSpec>,
    /// DynamoDB stream event sources of the template's functions.
    pub stream_events: Vec<StreamEventSpec>,
    /// The serverless functions.
    pub functions: Vec<FunctionSpec>,
    /// IAM managed policies, for tests that check permissions as data; nothing provisions them.
    pub policies: Vec<PolicySpec>,
    /// IAM roles, each with the statements of all its inline `Policies`, for the same tests.
    pub roles: Vec<PolicySpec>,
}

impl TemplateSpec {
    /// The table with this logical id.
    #[must_use]
    pub fn table(&self, logical_id: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|table| table.logical_id == logical_id)
    }

    /// The topic with this logical id.
    #[must_use]
    pub fn topic(&self, logical_id: &str) -> Option<&NamedResource> {
        self.topics.iter().find(|topic| topic.logical_id == logical_id)
    }

    /// The function with this logical id.
    #[must_use]
    pub fn function(&self, logical_id: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|function| function.logical_id == logical_id)
    }

    /// The timeout Lambda gives the function with this logical id: its own, else the template's
    /// `Globals`, else Lambda's default (also for a function the template does not have).
    #[must_use]
    pub fn function_timeout(&self, logical_id: &str) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.function(logical_id)
                .map_or(LAMBDA_DEFAULT_TIMEOUT_SECS, |function| function.timeout_secs),
        )
    }

    /// The managed policy with this logical id.
    #[must_use]
    pub fn policy(&self, logical_id: &str) -> Option<&PolicySpec> {
        self.policies.iter().find(|policy| policy.logical_id == logical_id)
    }

    /// The inline policies of the role with this logical id.
    #[must_use]
    pub fn role(&self, logical_id: &str) -> Option<&PolicySpec> {
        self.roles.iter().find(|role| role.logical_id == logical_id)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTemplate {
    #[serde(default)]
    parameters: BTreeMap<String, RawParameter>,
    #[serde(default)]
    globals: RawGlobals,
    resources: BTreeMap<String, RawResource>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawGlobals {
    #[serde(default)]
    function: RawFunctionGlobals,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawFunctionGlobals {
    timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawParameter {
    default: Option<Value>,
}

#[derive(Deserialize)]
struct RawResource {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Properties", default)]
    properties: Value,
    #[serde(rename = "Metadata", default)]
    metadata: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTable {
    table_name: Value,
    attribute_definitions: Vec<AttributeDefinition>,
    key_schema: Vec<KeyElement>,
    #[serde(default)]
    global_secondary_indexes: Vec<RawIndex>,
    stream_specification: Option<RawStream>,
    time_to_live_specification: Option<RawTtl>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIndex {
    index_name: String,
    key_schema: Vec<KeyElement>,
    projection: RawProjection,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawProjection {
    projection_type: String,
    #[serde(default)]
    non_key_attributes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStream {
    stream_view_type: String,
}

/// A SAM function's `Events`, each shaped like a resource (`Type`, `Properties`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFunction {
    #[serde(default)]
    events: BTreeMap<String, RawResource>,
    timeout: Option<u64>,
    #[serde(default)]
    environment: RawEnvironment,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawEnvironment {
    #[serde(default)]
    variables: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStreamEvent {
    stream: Value,
    batch_size: Option<u32>,
    starting_position: Option<String>,
    filter_criteria: Option<RawFilterCriteria>,
    maximum_retry_attempts: Option<i64>,
    maximum_record_age_in_seconds: Option<i64>,
    #[serde(default)]
    bisect_batch_on_function_error: bool,
    #[serde(default)]
    function_response_types: Vec<String>,
    destination_config: Option<RawDestinationConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawDestinationConfig {
    on_failure: Option<RawDestination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawDestination {
    #[serde(rename = "Type")]
    kind: Option<String>,
    destination: Value,
}

/// `RawMessageDelivery` is a boolean, which YAML may also spell as a string.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSubscription {
    topic_arn: Value,
    protocol: String,
    endpoint: Value,
    #[serde(default)]
    raw_message_delivery: Value,
    filter_policy_scope: Option<String>,
    filter_policy: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFilterCriteria {
    #[serde(default)]
    filters: Vec<RawFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFilter {
    pattern: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTtl {
    attribute_name: String,
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawManagedPolicy {
    policy_document: RawPolicyDocument,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRole {
    #[serde(default)]
    policies: Vec<RawManagedPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPolicyDocument {
    statement: Vec<RawStatement>,
}

/// `Action`, `Resource` and condition values may each be one value or a list, and may be
/// intrinsics: kept as YAML until [`policy_statement`] reads them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStatement {
    sid: Option<String>,
    effect: String,
    action: Value,
    #[serde(default)]
    resource: Value,
    #[serde(default)]
    condition: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Lambda's timeout when a function and the template's globals set none.
const LAMBDA_DEFAULT_TIMEOUT_SECS: u64 = 3;

/// The repository's `template.yaml` (or `STALELESS_TEMPLATE`).
#[must_use]
pub fn default_template_path() -> PathBuf {
    std::env::var_os("STALELESS_TEMPLATE")
        .map_or_else(|| crate::emulator::project_root().join("template.yaml"), PathBuf::from)
}

/// The template's parameters for the stack named `prefix`: `NamePrefix`, from which every table,
/// topic and queue name is built (the others keep the template's defaults).
#[must_use]
pub fn parameters_for(prefix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("NamePrefix".to_owned(), prefix.to_owned())])
}

/// Reads and resolves `path` for the stack named `prefix` ([`parameters_for`]).
///
/// # Errors
/// As [`load`].
pub fn load_for(path: &Path, prefix: &str) -> Result<TemplateSpec, TemplateError> {
    load(path, &parameters_for(prefix))
}

/// Reads and resolves a template file.
///
/// # Errors
/// [`TemplateError`] naming the file and the problem.
pub fn load(path: &Path, parameters: &BTreeMap<String, String>) -> Result<TemplateSpec, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string(), parameters)
}

/// Parses template text; `origin` names it in errors.
///
/// # Errors
/// [`TemplateError::Yaml`] for YAML or shape errors, [`TemplateError::Resource`] for resources
/// the local stack cannot provision.
pub fn parse(text: &str, origin: &str, overrides: &BTreeMap<String, String>) -> Result<TemplateSpec, TemplateError> {
    let yaml_error = |source| TemplateError::Yaml {
        origin: origin.to_owned(),
        source,
    };
    let raw: RawTemplate = serde_yaml_ng::from_str(text).map_err(yaml_error)?;

    let mut parameters: BTreeMap<String, String> = raw
        .parameters
        .iter()
        .filter_map(|(name, parameter)| match &parameter.default {
            Some(Value::String(text)) => Some((name.clone(), text.clone())),
            Some(Value::Number(number)) => Some((name.clone(), number.to_string())),
            _ => None,
        })
        .collect();
    parameters.extend(overrides.iter().map(|(key, value)| (key.clone(), value.clone())));

    let mut spec = TemplateSpec {
        tables: Vec::new(),
        topics: Vec::new(),
        queues: Vec::new(),
        subscriptions: Vec::new(),
        stream_events: Vec::new(),
        functions: Vec::new(),
        policies: Vec::new(),
        roles: Vec::new(),
    };
    for (logical_id, resource) in raw.resources {
        let resource_error = |problem: String| TemplateError::Resource {
            origin: origin.to_owned(),
            resource: logical_id.clone(),
            problem,
        };
        match resource.kind.as_str() {
            "AWS::DynamoDB::Table" => {
                let table: RawTable = serde_yaml_ng::from_value(resource.properties).map_err(yaml_error)?;
                let name = resolve_name(&table.table_name, &parameters).map_err(resource_error)?;
                spec.tables.push(TableSpec {
                    logical_id: logical_id.clone(),
                    name,
                    attributes: table.attribute_definitions,
                    key_schema: table.key_schema,
                    indexes: table
                        .global_secondary_indexes
                        .into_iter()
                        .map(|index| IndexSpec {
                            name: index.index_name,
                            key_schema: index.key_schema,
                            projection_type: index.projection.projection_type,
                            non_key_attributes: index.projection.non_key_attributes,
                        })
                        .collect(),
                    stream_view_type: table.stream_specification.map(|stream| stream.stream_view_type),
                    ttl_attribute: table
                        .time_to_live_specification
                        .filter(|ttl| ttl.enabled)
                        .map(|ttl| ttl.attribute_name),
                });
            }
            "AWS::SNS::Topic" | "AWS::SQS::Queue" => {
                let name_field = if resource.kind == "AWS::SNS::Topic" {
                    "TopicName"
                } else {
                    "QueueName"
                };
                let name_value = resource
                    .properties
                    .get(name_field)
                    .ok_or_else(|| resource_error(format!("{name_field} is required for the local stack")))?;
                let name = resolve_name(name_value, &parameters).map_err(resource_error)?;
                let named = NamedResource {
                    logical_id: logical_id.clone(),
                    name,
                };
                if resource.kind == "AWS::SNS::Topic" {
                    spec.topics.push(named);
                } else {
                    spec.queues.push(named);
                }
            }
            "AWS::SNS::Subscription" => {
                let raw: RawSubscription = serde_yaml_ng::from_value(resource.properties).map_err(yaml_error)?;
                spec.subscriptions
                    .push(subscription(&logical_id, raw).map_err(resource_error)?);
            }
            "AWS::IAM::ManagedPolicy" => {
                let policy: RawManagedPolicy = serde_yaml_ng::from_value(resource.properties).map_err(yaml_error)?;
                spec.policies
                    .push(policy_spec(&logical_id, policy.policy_document.statement).map_err(resource_error)?);
            }
            "AWS::IAM::Role" => {
                let role: RawRole = serde_yaml_ng::from_value(resource.properties).map_err(yaml_error)?;
                let statements = role
                    .policies
                    .into_iter()
                    .flat_map(|policy| policy.policy_document.statement);
                spec.roles
                    .push(policy_spec(&logical_id, statements).map_err(resource_error)?);
            }
            "AWS::Serverless::Function" => {
                let function: RawFunction = serde_yaml_ng::from_value(resource.properties).map_err(yaml_error)?;
                let environment = function
                    .environment
                    .variables
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), env_value(value, &parameters)?)))
                    .collect::<Result<_, String>>()
                    .map_err(resource_error)?;
                spec.functions.push(FunctionSpec {
                    logical_id: logical_id.clone(),
                    binary: resource
                        .metadata
                        .get("BuildProperties")
                        .and_then(|properties| properties.get("Binary"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    timeout_secs: function
                        .timeout
                        .or(raw.globals.function.timeout)
                        .unwrap_or(LAMBDA_DEFAULT_TIMEOUT_SECS),
                    environment,
                });
                for (name, event) in function.events {
                    if event.kind != "DynamoDB" {
                        continue;
                    }
                    let event_error = |problem: String| resource_error(format!("event {name}: {problem}"));
                    let raw: RawStreamEvent = serde_yaml_ng::from_value(event.properties).map_err(yaml_error)?;
                    spec.stream_events.push(StreamEventSpec {
                        function: logical_id.clone(),
                        table_logical_id: stream_table(&raw.stream).map_err(event_error)?,
                        name: name.clone(),
                        batch_size: raw.batch_size,
                        starting_position: raw.starting_position,
                        filter_patterns: raw
                            .filter_criteria
                            .map(|criteria| criteria.filters.into_iter().map(|filter| filter.pattern).collect())
                            .unwrap_or_default(),
                        maximum_retry_attempts: raw.maximum_retry_attempts,
                        maximum_record_age_secs: raw.maximum_record_age_in_seconds,
                        bisect_on_function_error: raw.bisect_batch_on_function_error,
                        report_batch_item_failures: raw
                            .function_response_types
                            .iter()
                            .any(|kind| kind == "ReportBatchItemFailures"),
                        on_failure: raw
                            .destination_config
                            .and_then(|config| config.on_failure)
                            .map(|destination| on_failure_destination(&destination))
                            .transpose()
                            .map_err(event_error)?,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(spec)
}

fn policy_spec(logical_id: &str, statements: impl IntoIterator<Item = RawStatement>) -> Result<PolicySpec, String> {
    Ok(PolicySpec {
        logical_id: logical_id.to_owned(),
        statements: statements.into_iter().map(policy_statement).collect::<Result<_, _>>()?,
    })
}

fn policy_statement(raw: RawStatement) -> Result<PolicyStatement, String> {
    let conditions = raw
        .condition
        .into_iter()
        .map(|(operator, keys)| {
            let keys = keys
                .into_iter()
                .map(|(key, values)| Ok((key, policy_values(&values)?)))
                .collect::<Result<_, String>>()?;
            Ok((operator, keys))
        })
        .collect::<Result<_, String>>()?;
    Ok(PolicyStatement {
        sid: raw.sid,
        effect: raw.effect,
        actions: policy_values(&raw.action)?,
        resources: policy_values(&raw.resource)?,
        conditions,
    })
}

/// One policy value or a list of them, each as [`sub_form`] writes it; nothing for an absent one.
fn policy_values(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(sub_form).collect(),
        single => Ok(vec![sub_form(single)?]),
    }
}

/// A policy string in `!Sub` syntax, left unresolved: a plain string or `!Sub` pattern as is,
/// `!GetAtt A.B` as `${A.B}`, `!Ref A` as `${A}`.
fn sub_form(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Tagged(tagged) => match &tagged.value {
            Value::String(text) if tagged.tag == "Sub" => Ok(text.clone()),
            Value::String(name) if tagged.tag == "Ref" || tagged.tag == "GetAtt" => Ok(format!("${{{name}}}")),
            Value::Sequence(parts) if tagged.tag == "GetAtt" => match parts.as_slice() {
                [Value::String(resource), Value::String(attribute)] => Ok(format!("${{{resource}.{attribute}}}")),
                _ => Err(format!("cannot read !GetAtt {parts:?} in a policy")),
            },
            _ => Err(format!("cannot read {} in a policy", tagged.tag)),
        },
        other => Err(format!("cannot read {other:?} in a policy")),
    }
}

/// The queue or topic of a `DestinationConfig.OnFailure`, as its `Type` says to name it.
fn on_failure_destination(raw: &RawDestination) -> Result<OnFailureDestination, String> {
    match raw.kind.as_deref() {
        Some("SQS") => get_att(&raw.destination, "Arn").map(OnFailureDestination::Queue),
        Some("SNS") => reference(&raw.destination).map(OnFailureDestination::Topic),
        Some(other) => Err(format!(
            "OnFailure Type {other}: the local stack delivers failures to SQS or SNS only"
        )),
        None => Err("OnFailure needs its Type (SQS or SNS)".to_owned()),
    }
}

/// A subscription of a queue: the only endpoint the local stack can create.
fn subscription(logical_id: &str, raw: RawSubscription) -> Result<SubscriptionSpec, String> {
    if !raw.protocol.eq_ignore_ascii_case("sqs") {
        return Err(format!(
            "Protocol {}: the local stack subscribes SQS queues only",
            raw.protocol
        ));
    }
    let raw_message_delivery = match &raw.raw_message_delivery {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::String(text) if text.eq_ignore_ascii_case("true") => true,
        Value::String(text) if text.eq_ignore_ascii_case("false") => false,
        other => return Err(format!("RawMessageDelivery must be true or false, found {other:?}")),
    };
    let filter_policy = raw
        .filter_policy
        .map(|policy| {
            // CloudFormation takes the policy as an object or as its JSON text; an intrinsic
            // function in it is refused (nothing here resolves one).
            match policy {
                Value::String(text) => serde_json::from_str::<serde_json::Value>(&text).map_err(|err| err.to_string()),
                other => serde_yaml_ng::from_value::<serde_json::Value>(other).map_err(|err| err.to_string()),
            }
            .map_err(|err| format!("FilterPolicy is not plain JSON: {err}"))
        })
        .transpose()?;
    Ok(SubscriptionSpec {
        logical_id: logical_id.to_owned(),
        topic: reference(&raw.topic_arn).map_err(|problem| format!("TopicArn: {problem}"))?,
        queue: get_att(&raw.endpoint, "Arn").map_err(|problem| format!("Endpoint: {problem}"))?,
        raw_message_delivery,
        filter_policy_scope: raw.filter_policy_scope,
        filter_policy: filter_policy.map(|policy| policy.to_string()),
    })
}

/// The resource of `!Ref <Resource>`.
fn reference(value: &Value) -> Result<String, String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged
            .value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "!Ref needs a name".to_owned()),
        other => Err(format!("expected !Ref <Resource>, found {other:?}")),
    }
}

/// The table of `!GetAtt <Table>.StreamArn` (or its list form).
fn stream_table(value: &Value) -> Result<String, String> {
    get_att(value, "StreamArn")
}

/// The resource of `!GetAtt <Resource>.<attribute>` (either form), refusing any other attribute.
fn get_att(value: &Value, attribute: &str) -> Result<String, String> {
    let Value::Tagged(tagged) = value else {
        return Err(format!("expected !GetAtt <Resource>.{attribute}, found {value:?}"));
    };
    if tagged.tag != "GetAtt" {
        return Err(format!("expected !GetAtt <Resource>.{attribute}, found {}", tagged.tag));
    }
    let (resource, found) = match &tagged.value {
        Value::String(text) => text
            .split_once('.')
            .ok_or_else(|| format!("!GetAtt needs <Resource>.{attribute}"))?,
        Value::Sequence(parts) => match parts.as_slice() {
            [Value::String(resource), Value::String(found)] => (resource.as_str(), found.as_str()),
            _ => return Err(format!("!GetAtt needs [<Resource>, {attribute}]")),
        },
        other => return Err(format!("cannot read !GetAtt {other:?}")),
    };
    if found != attribute {
        return Err(format!("reads {resource}.{found}, expected {resource}.{attribute}"));
    }
    Ok(resource.to_owned())
}

/// An environment variable's value: a `!Ref` to a parameter or a plain string/number is known
/// now; a `!Ref` to a resource is left for whoever knows the provisioned stack.
fn env_value(value: &Value, parameters: &BTreeMap<String, String>) -> Result<EnvValue, String> {
    match value {
        Value::Number(number) => Ok(EnvValue::Text(number.to_string())),
        Value::Bool(flag) => Ok(EnvValue::Text(flag.to_string())),
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            let name = tagged.value.as_str().ok_or("!Ref needs a name")?;
            Ok(parameters.get(name).map_or_else(
                || EnvValue::ResourceRef(name.to_owned()),
                |value| EnvValue::Text(value.clone()),
            ))
        }
        other => resolve_name(other, parameters).map(EnvValue::Text),
    }
}

/// Resolves a plain string, `!Ref Parameter` or `!Sub "...${Parameter}..."`.
fn resolve_name(value: &Value, parameters: &BTreeMap<String, String>) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            let name = tagged.value.as_str().ok_or("!Ref needs a parameter name")?;
            parameters
                .get(name)
                .cloned()
                .ok_or_else(|| format!("!Ref {name}: no such parameter with a value"))
        }
        Value::Tagged(tagged) if tagged.tag == "Sub" => {
            let pattern = tagged
                .value
                .as_str()
                .ok_or("only the one-string form of !Sub is supported")?;
            substitute(pattern, parameters)
        }
        other => Err(format!("cannot resolve a name from {other:?}")),
    }
}

fn substitute(pattern: &str, parameters: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {pattern:?}"))?;
        let name = &after[..end];
        let value = parameters
            .get(name)
            .ok_or_else(|| format!("!Sub {pattern:?}: {name} is not a parameter with a value"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../template.yaml");

    fn prefix(value: &str) -> BTreeMap<String, String> {
        parameters_for(value)
    }

    #[test]
    fn reads_the_deployed_template() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        let users = spec.table("UsersTable").expect("users table");
        // The template's default names are the components' defaults.
        assert_eq!(users.name, staleless_protocol::keys::DEFAULT_USERS_TABLE);
        assert_eq!(users.stream_view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));
        assert_eq!(
            users.key_schema,
            vec![
                KeyElement {
                    attribute_name: "PK".into(),
                    key_type: KeyType::Hash
                },
                KeyElement {
                    attribute_name: "SK".into(),
                    key_type: KeyType::Range
                },
            ]
        );
        let index_names: Vec<&str> = users.indexes.iter().map(|index| index.name.as_str()).collect();
        assert_eq!(index_names, ["UserIdIndex", "EmailIndex"]);
        assert_eq!(users.ttl_attribute.as_deref(), Some("expiresAt"));

        let roles = spec.table("AppRolesTable").expect("roles table");
        assert_eq!(roles.name, staleless_protocol::keys::DEFAULT_ROLES_TABLE);
        assert_eq!(roles.stream_view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));

        assert_eq!(
            spec.topic("InvalidationTopic").expect("topic").name,
            "staleless-invalidations"
        );
        assert_eq!(spec.queues.len(), 1);
    }

    #[test]
    fn reads_the_relay_event_sources_and_their_filters() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        let summary: Vec<(&str, &str, Option<u32>, &[String])> = spec
            .stream_events
            .iter()
            .map(|event| {
                (
                    event.function.as_str(),
                    event.table_logical_id.as_str(),
                    event.batch_size,
                    event.filter_patterns.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "StreamRelayFunction",
                    "AppRolesTable",
                    Some(100),
                    &[r#"{"dynamodb":{"Keys":{"PK":{"S":[{"prefix":"ROLE#"},{"prefix":"HEARTBEAT#"}]}}}}"#.to_owned()]
                        [..]
                ),
                (
                    "StreamRelayFunction",
                    "UsersTable",
                    Some(100),
                    &[r#"{"dynamodb":{"Keys":{"PK":{"S":[{"prefix":"USER#"},{"prefix":"HEARTBEAT#"}]}}}}"#.to_owned()]
                        [..]
                ),
            ]
        );
    }

    #[test]
    fn reads_how_lambda_retries_and_where_failures_go() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        for event in spec
            .stream_events
            .iter()
            .filter(|event| event.function == "StreamRelayFunction")
        {
            assert_eq!(event.maximum_retry_attempts, Some(10), "{}", event.name);
            assert_eq!(event.maximum_record_age_secs, Some(3600), "{}", event.name);
            assert!(event.bisect_on_function_error, "{}", event.name);
            assert!(event.report_batch_item_failures, "{}", event.name);
            assert_eq!(
                event.on_failure,
                Some(OnFailureDestination::Topic("InvalidationTopic".into())),
                "a give-up is a flush: {}",
                event.name
            );
        }
    }

    #[test]
    fn the_dead_letter_queue_copies_exactly_the_give_ups_from_the_topic() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        assert_eq!(
            spec.subscriptions,
            [SubscriptionSpec {
                logical_id: "RelayDeadLetterSubscription".into(),
                topic: "InvalidationTopic".into(),
                queue: "RelayDeadLetterQueue".into(),
                raw_message_delivery: true,
                filter_policy_scope: Some("MessageBody".into()),
                filter_policy: Some(r#"{"DDBStreamBatchInfo":{"streamArn":[{"exists":true}]}}"#.into()),
            }]
        );
        // Wherever the relay's event sources give up, the dead-letter queue listens.
        for event in &spec.stream_events {
            let Some(OnFailureDestination::Topic(topic)) = &event.on_failure else {
                continue;
            };
            assert!(
                spec.subscriptions
                    .iter()
                    .any(|subscription| &subscription.topic == topic && subscription.queue == "RelayDeadLetterQueue"),
                "{}: nothing keeps a copy of what goes to {topic}",
                event.name
            );
        }
    }

    #[test]
    fn the_relay_role_publishes_where_its_event_sources_give_up_and_never_calls_sqs() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        let role = spec.role("StreamRelayRole").expect("relay role");
        for event in spec
            .stream_events
            .iter()
            .filter(|event| event.function == "StreamRelayFunction")
        {
            // Lambda sends the on-failure message with the function's execution role.
            let (action, resource) = match event.on_failure.as_ref().expect("a destination") {
                OnFailureDestination::Topic(topic) => ("sns:Publish", format!("${{{topic}}}")),
                OnFailureDestination::Queue(queue) => ("sqs:SendMessage", format!("${{{queue}.Arn}}")),
            };
            assert!(
                role.statements
                    .iter()
                    .any(|statement| grants(statement, action) && statement.resources.contains(&resource)),
                "{}: the role may not {action} on {resource}",
                event.name
            );
        }
        let sqs: Vec<&str> = role
            .statements
            .iter()
            .filter(|statement| statement.actions.iter().any(|action| action.starts_with("sqs:")))
            .map(name)
            .collect();
        assert!(sqs.is_empty(), "the relay sends nothing to SQS: {sqs:?}");
    }

    #[test]
    fn an_on_failure_destination_is_named_as_its_type_says() {
        let event = |destination: &str| {
            format!(
                "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Events:\n        E:\n          Type: DynamoDB\n          Properties:\n            Stream: !GetAtt T.StreamArn\n            DestinationConfig:\n              OnFailure:\n{destination}"
            )
        };
        let on_failure = |destination: &str| {
            parse(&event(destination), "t.yaml", &BTreeMap::new()).map(|spec| spec.stream_events[0].on_failure.clone())
        };
        assert_eq!(
            on_failure("                Type: SQS\n                Destination: !GetAtt [Q, Arn]\n").expect("a queue"),
            Some(OnFailureDestination::Queue("Q".into()))
        );
        assert_eq!(
            on_failure("                Type: SNS\n                Destination: !Ref Topic\n").expect("a topic"),
            Some(OnFailureDestination::Topic("Topic".into()))
        );
        for (destination, expected) in [
            (
                "                Type: SNS\n                Destination: !GetAtt Q.Arn\n",
                "!Ref",
            ),
            (
                "                Type: SQS\n                Destination: !Ref Q\n",
                "expected !GetAtt <Resource>.Arn, found !Ref",
            ),
            ("                Destination: !GetAtt Q.Arn\n", "needs its Type"),
            (
                "                Type: S3\n                Destination: !GetAtt B.Arn\n",
                "S3",
            ),
        ] {
            let message = on_failure(destination).expect_err(destination).to_string();
            assert!(
                message.contains("event E") && message.contains(expected),
                "{destination}: {message}"
            );
        }
    }

    #[test]
    fn a_subscription_reads_as_subscribe_takes_it() {
        let text = |properties: &str| {
            format!(
                "Resources:\n  S:\n    Type: AWS::SNS::Subscription\n    Properties:\n      TopicArn: !Ref T\n      Endpoint: !GetAtt Q.Arn\n{properties}"
            )
        };
        let spec = parse(
            &text("      Protocol: sqs\n      RawMessageDelivery: \"true\"\n      FilterPolicy: '{\"kind\": [\"flush\"]}'\n"),
            "t.yaml",
            &BTreeMap::new(),
        )
        .expect("parses");
        assert_eq!(
            spec.subscriptions,
            [SubscriptionSpec {
                logical_id: "S".into(),
                topic: "T".into(),
                queue: "Q".into(),
                raw_message_delivery: true,
                filter_policy_scope: None,
                filter_policy: Some(r#"{"kind":["flush"]}"#.into()),
            }]
        );
        let spec = parse(&text("      Protocol: sqs\n"), "t.yaml", &BTreeMap::new()).expect("parses");
        assert!(!spec.subscriptions[0].raw_message_delivery, "SNS's default");
        for (properties, expected) in [
            ("      Protocol: https\n", "Protocol https"),
            (
                "      Protocol: sqs\n      FilterPolicy:\n        source: !Ref P\n",
                "FilterPolicy",
            ),
            (
                "      Protocol: sqs\n      RawMessageDelivery: yes please\n",
                "RawMessageDelivery",
            ),
        ] {
            let message = parse(&text(properties), "t.yaml", &BTreeMap::new())
                .expect_err(properties)
                .to_string();
            assert!(
                message.contains("resource S") && message.contains(expected),
                "{properties}: {message}"
            );
        }
    }

    #[test]
    fn reads_the_relay_function_as_lambda_runs_it() {
        let spec = parse(TEMPLATE, "template.yaml", &prefix("p")).expect("template parses");
        let relay = spec.function("StreamRelayFunction").expect("relay function");
        assert_eq!(relay.binary.as_deref(), Some("stream-relay"));
        assert_eq!(relay.timeout_secs, 30, "from Globals");
        assert_eq!(
            relay.environment.get("USERS_TABLE"),
            Some(&EnvValue::ResourceRef("UsersTable".into()))
        );
        assert_eq!(
            relay.environment.get("INVALIDATION_TOPIC_ARN"),
            Some(&EnvValue::ResourceRef("InvalidationTopic".into()))
        );
        assert_eq!(
            relay.environment.get("RELAY_IGNORED_ATTRIBUTES"),
            Some(&EnvValue::Text("lastLoginAt".into())),
            "a parameter's default"
        );
        let text = "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Timeout: 9\n      Environment:\n        Variables:\n          N: 7\n          S: !Sub \"${AWS::NoValue}\"\n";
        let message = parse(text, "t.yaml", &BTreeMap::new())
            .expect_err("unresolvable")
            .to_string();
        assert!(message.contains("AWS::NoValue"), "{message}");
        let text = "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Environment:\n        Variables:\n          N: 7\n";
        let spec = parse(text, "t.yaml", &BTreeMap::new()).expect("parses");
        let function = spec.function("F").expect("F");
        assert_eq!(
            (function.timeout_secs, function.binary.as_deref()),
            (3, None),
            "Lambda's default"
        );
        assert_eq!(function.environment.get("N"), Some(&EnvValue::Text("7".into())));
    }

    #[test]
    fn a_stream_event_must_name_a_table_stream() {
        let text = "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Events:\n        E:\n          Type: DynamoDB\n          Properties:\n            Stream: !GetAtt T.Arn\n";
        let message = parse(text, "t.yaml", &BTreeMap::new())
            .expect_err("not a stream")
            .to_string();
        assert!(
            message.contains("event E") && message.contains("StreamArn"),
            "{message}"
        );
    }

    #[test]
    fn a_prefix_renames_everything() {
        let spec = parse(TEMPLATE, "template.yaml", &prefix("t-abc")).expect("template parses");
        assert!(spec.tables.iter().all(|table| table.name.starts_with("t-abc-")));
        assert!(spec.topics.iter().all(|topic| topic.name.starts_with("t-abc-")));
        assert!(spec.queues.iter().all(|queue| queue.name.starts_with("t-abc-")));
    }

    #[test]
    fn malformed_yaml_names_the_file_and_line() {
        let err = parse("Resources:\n  Users: [unclosed\n", "broken.yaml", &BTreeMap::new()).expect_err("bad yaml");
        let message = err.to_string();
        assert!(message.contains("broken.yaml"), "{message}");
        assert!(message.contains("line"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn a_table_without_keys_names_the_resource() {
        let text = "Resources:\n  UsersTable:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      TableName: x\n";
        let message = parse(text, "t.yaml", &BTreeMap::new())
            .expect_err("no keys")
            .to_string();
        assert!(
            message.contains("t.yaml") && message.contains("AttributeDefinitions"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_parameter_in_a_name_is_an_error() {
        let text =
            "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: !Sub \"${Nope}-x\"\n";
        let message = parse(text, "t.yaml", &BTreeMap::new())
            .expect_err("unknown")
            .to_string();
        assert!(message.contains("Topic") && message.contains("Nope"), "{message}");
    }

    /// The queues API tasks create, as the policy names them.
    const TASK_QUEUES: &str = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${NamePrefix}-task-*";
    /// The owner tag equals the caller's own id.
    const CALLER: &str = "${aws:userid}";
    const OWNER_ON_QUEUE: &str = "aws:ResourceTag/staleless:owner";
    const OWNER_IN_REQUEST: &str = "aws:RequestTag/staleless:owner";
    /// Every SQS action that reads, changes or deletes a queue or its messages.
    const QUEUE_ACTIONS: [&str; 13] = [
        "sqs:CreateQueue",
        "sqs:TagQueue",
        "sqs:UntagQueue",
        "sqs:GetQueueAttributes",
        "sqs:SetQueueAttributes",
        "sqs:AddPermission",
        "sqs:RemovePermission",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:PurgeQueue",
        "sqs:DeleteQueue",
    ];
    /// What a task never needs: the orphan sweep belongs to the fleet sweeper.
    const NEVER_GRANTED: [&str; 5] = [
        "sqs:UntagQueue",
        "sqs:ListQueues",
        "sqs:ListQueueTags",
        "sqs:GetQueueUrl",
        "sns:ListSubscriptionsByTopic",
    ];
    const ITEM_ACTIONS: [&str; 8] = [
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
    ];

    /// IAM's action matching: case-insensitive, `*` for any run of characters, `?` for one.
    fn action_matches(pattern: &str, action: &str) -> bool {
        fn glob(pattern: &[u8], text: &[u8]) -> bool {
            match (pattern.split_first(), text.split_first()) {
                (None, None) => true,
                (Some((b'*', rest)), _) => glob(rest, text) || (!text.is_empty() && glob(pattern, &text[1..])),
                (Some((p, rest)), Some((t, tail))) if *p == b'?' || p.eq_ignore_ascii_case(t) => glob(rest, tail),
                _ => false,
            }
        }
        glob(pattern.as_bytes(), action.as_bytes())
    }

    fn grants(statement: &PolicyStatement, action: &str) -> bool {
        statement.effect == "Allow" && statement.actions.iter().any(|pattern| action_matches(pattern, action))
    }

    fn condition<'a>(statement: &'a PolicyStatement, operator: &str, key: &str) -> Option<&'a [String]> {
        statement.conditions.get(operator)?.get(key).map(Vec::as_slice)
    }

    /// Whether the statement compares `key` with `value` alone.
    fn condition_is(statement: &PolicyStatement, operator: &str, key: &str, value: &str) -> bool {
        condition(statement, operator, key).is_some_and(|values| values == [value])
    }

    fn name(statement: &PolicyStatement) -> &str {
        statement.sid.as_deref().unwrap_or("a statement without Sid")
    }

    /// Where `ApiTaskPolicy` grants more than the API needs or lets a task touch another task's
    /// queue, one sentence per finding.
    fn api_task_policy_problems(spec: &TemplateSpec) -> Vec<String> {
        use staleless_protocol::keys::{ROLE_DEFINITION_INDEX, ROLE_PK_PREFIX, USER_PK_PREFIX};

        let Some(policy) = spec.policy("ApiTaskPolicy") else {
            return vec!["no ApiTaskPolicy".to_owned()];
        };
        let role_index = format!("${{AppRolesTable.Arn}}/index/{ROLE_DEFINITION_INDEX}");
        let mut problems = Vec::new();
        for statement in &policy.statements {
            let sid = name(statement);
            for action in NEVER_GRANTED.into_iter().filter(|action| grants(statement, action)) {
                problems.push(format!("{sid} grants {action}"));
            }

            let owned = condition_is(statement, "StringEquals", OWNER_ON_QUEUE, CALLER);
            let created = condition_is(statement, "StringEquals", OWNER_IN_REQUEST, CALLER);
            for action in QUEUE_ACTIONS.into_iter().filter(|action| grants(statement, action)) {
                if statement.resources.iter().any(|resource| resource != TASK_QUEUES) {
                    problems.push(format!("{sid} grants {action} beyond the task queues"));
                }
                if !owned && !created {
                    problems.push(format!(
                        "{sid} grants {action} without the owner tag equal to the caller"
                    ));
                }
                if action == "sqs:CreateQueue" && !created {
                    problems.push(format!(
                        "{sid} grants sqs:CreateQueue without the caller as the owner tag"
                    ));
                }
                let only_unowned_or_own = condition_is(statement, "StringEqualsIfExists", OWNER_ON_QUEUE, CALLER)
                    || condition_is(statement, "Null", OWNER_ON_QUEUE, "true");
                if action == "sqs:TagQueue" && created && !only_unowned_or_own {
                    problems.push(format!(
                        "{sid} grants sqs:TagQueue that can re-tag another task's queue"
                    ));
                }
                let keys = condition(statement, "ForAllValues:StringEquals", "aws:TagKeys");
                let owner_key = keys.is_none_or(|keys| keys.iter().any(|key| key == "staleless:owner"));
                if action == "sqs:TagQueue" && owned && owner_key {
                    problems.push(format!("{sid} grants sqs:TagQueue that can change the owner tag"));
                }
            }

            let on_users = |resource: &String| resource == "*" || resource.starts_with("${UsersTable.Arn}");
            if statement.resources.iter().any(on_users) {
                for action in ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"] {
                    if grants(statement, action) {
                        problems.push(format!("{sid} grants {action} on the users table"));
                    }
                }
                if statement.actions.iter().any(|action| action.starts_with("dynamodb:"))
                    && statement
                        .resources
                        .iter()
                        .any(|resource| resource.starts_with("${UsersTable.Arn}/"))
                {
                    problems.push(format!("{sid} grants access to an index or stream of the users table"));
                }
            }
            for (table, prefix) in [
                ("${UsersTable.Arn}", USER_PK_PREFIX),
                ("${AppRolesTable.Arn}", ROLE_PK_PREFIX),
            ] {
                let leading = format!("{prefix}*");
                if statement
                    .resources
                    .iter()
                    .any(|resource| resource == table || resource == "*")
                    && ITEM_ACTIONS.iter().any(|action| grants(statement, action))
                    && !condition_is(statement, "ForAllValues:StringLike", "dynamodb:LeadingKeys", &leading)
                {
                    problems.push(format!("{sid} reaches items of {table} outside {prefix}"));
                }
            }
            if grants(statement, "dynamodb:Scan") && statement.resources != [role_index.as_str()] {
                problems.push(format!("{sid} grants dynamodb:Scan beyond {role_index}"));
            }

            if grants(statement, "sns:Subscribe")
                && !(condition_is(statement, "StringEquals", "sns:Protocol", "sqs")
                    && condition_is(statement, "StringLike", "sns:Endpoint", TASK_QUEUES))
            {
                problems.push(format!(
                    "{sid} grants sns:Subscribe for endpoints other than the task queues"
                ));
            }
        }
        problems
    }

    #[test]
    fn the_api_task_policy_keeps_each_task_to_its_own_queue_and_items() {
        let spec = parse(TEMPLATE, "template.yaml", &BTreeMap::new()).expect("template parses");
        assert_eq!(api_task_policy_problems(&spec), Vec::<String>::new());
        let statements = &spec.policy("ApiTaskPolicy").expect("policy").statements;
        let receive = statements
            .iter()
            .find(|s| grants(s, "sqs:ReceiveMessage"))
            .expect("a task can receive");
        assert_eq!(receive.resources, [TASK_QUEUES]);
        assert!(
            statements.iter().any(|s| grants(s, "dynamodb:Scan")),
            "the role catalogue is listed"
        );
    }

    #[test]
    fn the_policy_check_catches_each_weakening() {
        let cases = [
            (
                "receive from any task's queue",
                "StringEquals:\n                aws:ResourceTag/staleless:owner",
                "StringLike:\n                aws:ResourceTag/staleless:owner",
                "UseOwnQueue grants sqs:ReceiveMessage without the owner tag",
            ),
            (
                "create a queue for someone else",
                r#"aws:RequestTag/staleless:owner: "${aws:userid}""#,
                r#"aws:RequestTag/staleless:owner: "anyone""#,
                "CreateOwnQueue grants sqs:CreateQueue without the caller",
            ),
            (
                "re-tag another task's queue",
                "StringEqualsIfExists:",
                "StringNotEqualsIfExists:",
                "CreateOwnQueue grants sqs:TagQueue that can re-tag another task's queue",
            ),
            (
                "rewrite the owner tag with the heartbeat",
                "aws:TagKeys:\n                  - staleless:heartbeat",
                "aws:TagKeys:\n                  - staleless:owner",
                "HeartbeatOwnQueue grants sqs:TagQueue that can change the owner tag",
            ),
            (
                "list every queue",
                "- sqs:DeleteMessage\n              - sqs:DeleteQueue\n",
                "- sqs:DeleteMessage\n              - sqs:DeleteQueue\n              - sqs:ListQueues\n",
                "UseOwnQueue grants sqs:ListQueues",
            ),
            (
                "delete any queue",
                "          - Sid: UseOwnQueue\n",
                "          - Sid: Sweep\n            Effect: Allow\n            Action: sqs:DeleteQueue\n            Resource: \"*\"\n          - Sid: UseOwnQueue\n",
                "Sweep grants sqs:DeleteQueue without the owner tag",
            ),
            (
                "overwrite profiles",
                "              - dynamodb:UpdateItem\n            Resource: !GetAtt UsersTable.Arn",
                "              - dynamodb:UpdateItem\n              - dynamodb:PutItem\n            Resource: !GetAtt UsersTable.Arn",
                "UserProfiles grants dynamodb:PutItem on the users table",
            ),
            (
                "read the users GSIs",
                "            Resource: !GetAtt UsersTable.Arn\n",
                "            Resource:\n              - !GetAtt UsersTable.Arn\n              - !Sub \"${UsersTable.Arn}/index/*\"\n",
                "UserProfiles grants access to an index or stream of the users table",
            ),
            (
                "read any item of the users table",
                r#"- "USER#*""#,
                r#"- "*""#,
                "UserProfiles reaches items of ${UsersTable.Arn} outside USER#",
            ),
            (
                "scan the roles table",
                r#"Resource: !Sub "${AppRolesTable.Arn}/index/RoleDefinitionIndex""#,
                "Resource: !GetAtt AppRolesTable.Arn",
                "ListRoleDefinitions grants dynamodb:Scan beyond",
            ),
            (
                "subscribe a web hook",
                "sns:Protocol: sqs",
                "sns:Protocol: https",
                "SubscribeTaskQueues grants sns:Subscribe for endpoints other",
            ),
        ];
        for (what, from, to, expected) in cases {
            let broken = TEMPLATE.replacen(from, to, 1);
            assert_ne!(broken, TEMPLATE, "{what}: {from:?} is not in the template");
            let spec = parse(&broken, "broken.yaml", &BTreeMap::new()).expect("still parses");
            let problems = api_task_policy_problems(&spec);
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{what}: {problems:?}"
            );
        }
    }

    #[test]
    fn policy_intrinsics_read_as_sub_patterns() {
        let text = "Resources:\n  P:\n    Type: AWS::IAM::ManagedPolicy\n    Properties:\n      PolicyDocument:\n        Statement:\n          - Effect: Allow\n            Action: sns:Publish\n            Resource: [!Ref Topic, !GetAtt [Table, Arn], !GetAtt Queue.Arn, !Sub \"${Table.Arn}/index/*\"]\n            Condition:\n              Bool:\n                aws:SecureTransport: true\n";
        let spec = parse(text, "t.yaml", &BTreeMap::new()).expect("parses");
        let statement = &spec.policy("P").expect("policy").statements[0];
        assert_eq!(statement.actions, ["sns:Publish"]);
        assert_eq!(
            statement.resources,
            ["${Topic}", "${Table.Arn}", "${Queue.Arn}", "${Table.Arn}/index/*"]
        );
        assert!(condition_is(statement, "Bool", "aws:SecureTransport", "true"));
        assert!(action_matches("sqs:*", "sqs:ListQueues") && action_matches("SQS:list?ueues", "sqs:ListQueues"));
        assert!(!action_matches("sqs:Get*", "sqs:ListQueues"));

        let unreadable = text.replace("!Ref Topic", "!ImportValue Topic");
        let message = parse(&unreadable, "t.yaml", &BTreeMap::new())
            .expect_err("unreadable")
            .to_string();
        assert!(
            message.contains("resource P") && message.contains("!ImportValue"),
            "{message}"
        );
    }
}
