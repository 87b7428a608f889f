//! The invalidation path against moto with real SDK clients: writes of every kind on both
//! tables → streams → local event source mapping → stream relay → SNS → a subscribed SQS queue.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, WriteRequest};
use infra::event_source::failure::FailurePolicy;
use infra::event_source::reader::SdkStreamReader;
use infra::event_source::{self, EventSourceError, EventSourceOptions, Target};
use infra::local_aws::SubscribedQueue;
use infra::{LocalAws, Provisioned, template};
use staleless_protocol::{Invalidation, SOURCE_ATTRIBUTE, Source};
use stream_relay::{Mapper, PublishEntry, PublishError, Publisher, Relay, SnsPublisher};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One test's stack: its own moto, tables and topic, a queue subscribed to the topic, and the
/// local event source mapping running until dropped.
struct Harness {
    aws: LocalAws,
    stack: Provisioned,
    queue: SubscribedQueue,
    checkpoint_dir: PathBuf,
    shutdown: CancellationToken,
    mapping: Option<JoinHandle<Result<(), EventSourceError>>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.checkpoint_dir);
    }
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

impl Harness {
    /// A stack with a subscribed queue, without the event source mapping.
    async fn provision() -> Self {
        let aws = LocalAws::start().expect("emulator");
        let stack = aws.provision_unique().await.expect("provision");
        let queue = aws
            .create_subscribed_queue(&stack.topic_arn, &format!("{}-test", stack.task_queue_prefix))
            .await
            .expect("subscribed queue");
        let checkpoint_dir = std::env::temp_dir().join(format!("staleless-relay-it-{}", stack.prefix));
        Self {
            aws,
            stack,
            queue,
            checkpoint_dir,
            shutdown: CancellationToken::new(),
            mapping: None,
        }
    }

    /// A stack with a subscribed queue and the event source mapping running.
    async fn start() -> Self {
        let mut harness = Self::provision().await;
        harness.mapping = Some(event_source::spawn(
            harness.aws.sdk_config(),
            &harness.stack,
            harness.options(),
            harness.shutdown.clone(),
        ));
        harness
    }

    fn options(&self) -> EventSourceOptions {
        let mut options = EventSourceOptions::new(&self.checkpoint_dir);
        options.retry_initial_backoff = Duration::from_millis(50);
        options.retry_max_backoff = Duration::from_millis(400);
        options
    }

    async fn subscribe(&self) {
        self.aws
            .subscribe_queue(&self.stack.topic_arn, &self.queue.arn)
            .await
            .expect("subscribe");
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(mapping) = self.mapping.take() {
            mapping.await.expect("join").expect("event source mapping");
        }
    }

    fn table(&self, source: &Source) -> &str {
        if *source == Source::USERS {
            &self.stack.users_table
        } else {
            &self.stack.roles_table
        }
    }

    async fn put(&self, source: &Source, pk: &str, sk: &str, extra: &[(&str, &str)]) {
        let mut request = self
            .aws
            .dynamodb()
            .put_item()
            .table_name(self.table(source))
            .item("PK", s(pk))
            .item("SK", s(sk));
        for (name, value) in extra {
            request = request.item(*name, s(value));
        }
        request.send().await.expect("put item");
    }

    /// Receives until every `expected` key has arrived; returns every key received, in order.
    async fn receive_until(&self, expected: &[(Source, &str)]) -> Vec<(Source, String)> {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen: BTreeSet<(Source, &str)> = received
                .iter()
                .map(|(source, id): &(Source, String)| (source.clone(), id.as_str()))
                .collect();
            if expected.iter().all(|key| seen.contains(key)) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiting for {expected:?}, received {received:?}"
            );
            received.extend(self.receive_once().await);
        }
    }

    async fn receive_once(&self) -> Vec<(Source, String)> {
        let output = self
            .aws
            .sqs()
            .receive_message()
            .queue_url(&self.queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let mut keys = Vec::new();
        for message in output.messages.unwrap_or_default() {
            let body = message.body.as_deref().expect("body");
            let Invalidation::Invalidate { source, keys: changed } = staleless_protocol::decode(body).expect("decode")
            else {
                panic!("unexpected message {body}");
            };
            let attribute = message
                .message_attributes
                .as_ref()
                .and_then(|attributes| attributes.get(SOURCE_ATTRIBUTE))
                .and_then(|attribute| attribute.string_value.clone());
            assert_eq!(
                attribute.as_deref(),
                Some(source.as_str()),
                "the source attribute is delivered"
            );
            keys.extend(changed.into_iter().map(|key| (source.clone(), key.id)));
            self.aws
                .sqs()
                .delete_message()
                .queue_url(&self.queue.url)
                .receipt_handle(message.receipt_handle.expect("receipt"))
                .send()
                .await
                .expect("delete message");
        }
        keys
    }
}

#[tokio::test]
async fn every_kind_of_write_on_both_tables_reaches_the_queue() {
    let harness = Harness::start().await;
    let dynamodb = harness.aws.dynamodb();
    // Items to delete, created (and their invalidations consumed) first, so that their keys
    // arriving again below can only come from the DeleteItem's REMOVE records.
    harness.put(&Source::USERS, "USER#delete", "PROFILE", &[]).await;
    harness.put(&Source::ROLES, "ROLE#delete", "DEFINITION", &[]).await;
    harness
        .receive_until(&[(Source::USERS, "delete"), (Source::ROLES, "delete")])
        .await;

    let mut expected = Vec::new();
    for (source, prefix, sk) in [
        (Source::USERS, "USER#", "PROFILE"),
        (Source::ROLES, "ROLE#", "DEFINITION"),
    ] {
        let table = harness.table(&source).to_owned();
        let pk = |id: &str| format!("{prefix}{id}");

        // Not for any cache: filtered out by the template's FilterCriteria (roles) or by the
        // relay (users), and written first so that everything after it proves it was passed.
        harness.put(&source, "TOOL#search", "DEFINITION", &[]).await;

        harness.put(&source, &pk("put"), sk, &[("name", "Ada")]).await;
        dynamodb
            .update_item()
            .table_name(&table)
            .key("PK", s(&pk("update")))
            .key("SK", s(sk))
            .update_expression("SET #n = :n")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":n", s("Grace"))
            .send()
            .await
            .expect("update item");
        dynamodb
            .delete_item()
            .table_name(&table)
            .key("PK", s(&pk("delete")))
            .key("SK", s(sk))
            .send()
            .await
            .expect("delete item");
        let batch: Vec<WriteRequest> = ["batch-1", "batch-2"]
            .iter()
            .map(|id| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .item("PK", s(&pk(id)))
                            .item("SK", s(sk))
                            .build()
                            .expect("put request"),
                    )
                    .build()
            })
            .collect();
        dynamodb
            .batch_write_item()
            .request_items(&table, batch)
            .send()
            .await
            .expect("batch write");
        dynamodb
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&table)
                            .item("PK", s(&pk("tx")))
                            .item("SK", s(sk))
                            .build()
                            .expect("put"),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("transact write");
        dynamodb
            .execute_statement()
            .statement(format!(
                r#"INSERT INTO "{table}" VALUE {{'PK': '{}', 'SK': '{sk}'}}"#,
                pk("sql")
            ))
            .send()
            .await
            .expect("PartiQL insert");
        for id in ["put", "update", "delete", "batch-1", "batch-2", "tx", "sql"] {
            expected.push((source.clone(), id));
        }
    }

    let received = harness.receive_until(&expected).await;
    assert!(
        received.iter().all(|(_, id)| !id.starts_with("TOOL") && id != "search"),
        "items no cache holds are never published: {received:?}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_last_login_only_update_sends_nothing() {
    let harness = Harness::start().await;
    let users = harness.stack.users_table.clone();
    let profile = [
        ("userId", "u-1"),
        ("name", "Ada"),
        ("lastLoginAt", "2024-11-25T00:00:00Z"),
    ];
    harness.put(&Source::USERS, "USER#u-1", "PROFILE", &profile).await;
    let first = harness.receive_until(&[(Source::USERS, "u-1")]).await;
    assert_eq!(first, [(Source::USERS, "u-1".to_owned())]);

    harness
        .aws
        .dynamodb()
        .update_item()
        .table_name(&users)
        .key("PK", s("USER#u-1"))
        .key("SK", s("PROFILE"))
        .update_expression("SET lastLoginAt = :now")
        .expression_attribute_values(":now", s("2024-11-25T09:30:00Z"))
        .send()
        .await
        .expect("update lastLoginAt");
    // moto emits a MODIFY for an identical rewrite (AWS emits none): the no-op filter covers it.
    let rewritten = [
        ("userId", "u-1"),
        ("name", "Ada"),
        ("lastLoginAt", "2024-11-25T09:30:00Z"),
    ];
    harness.put(&Source::USERS, "USER#u-1", "PROFILE", &rewritten).await;
    // A later write to another user: once it arrives, the records before it were handled.
    harness.put(&Source::USERS, "USER#marker", "PROFILE", &[]).await;

    let after = harness.receive_until(&[(Source::USERS, "marker")]).await;
    assert_eq!(
        after,
        [(Source::USERS, "marker".to_owned())],
        "nothing for the lastLoginAt-only changes"
    );
    harness.stop().await;
}

/// Counts the publish failures of the real SNS publisher, so the test can see the batch fail.
/// While `held`, publishes are refused before they reach SNS, as if the topic were still gone:
/// SNS drops what reaches a topic with no subscriber, and the topic's return is two calls (the
/// topic, then its subscription), between which the relay must not publish.
struct CountingPublisher {
    inner: SnsPublisher,
    failures: AtomicUsize,
    held: AtomicBool,
}

#[async_trait]
impl Publisher for CountingPublisher {
    async fn publish_batch(&self, entries: &[PublishEntry]) -> Result<(), PublishError> {
        let result = if self.held.load(Ordering::SeqCst) {
            Err(PublishError::Rejected("the topic is not back yet".to_owned()))
        } else {
            self.inner.publish_batch(entries).await
        };
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

#[tokio::test]
async fn with_the_topic_gone_batches_fail_and_every_key_arrives_once_it_is_back() {
    let harness = Harness::provision().await;
    let publisher = Arc::new(CountingPublisher {
        inner: SnsPublisher::new(
            harness.aws.sns(),
            &harness.stack.topic_arn,
            vec![Source::USERS, Source::ROLES],
        ),
        failures: AtomicUsize::new(0),
        held: AtomicBool::new(false),
    });
    let relay = Arc::new(Relay::new(
        Mapper::new(
            &harness.stack.users_table,
            &harness.stack.roles_table,
            vec!["lastLoginAt".into()],
        ),
        publisher.clone(),
    ));
    let spec = template::load_for(&template::default_template_path(), &harness.stack.prefix).expect("template");
    let mut sources = event_source::stream_sources(&spec, &harness.stack, None).expect("sources");
    for source in &mut sources {
        // Lambda's default, retrying until the records expire: this test is about what the
        // mapping keeps, not about the template's limits (tests/tests/lambda.rs covers those).
        source.policy = FailurePolicy::default();
    }
    let reader = Arc::new(SdkStreamReader::new(harness.aws.streams()));
    let options = harness.options();
    let shutdown = harness.shutdown.clone();
    let target = Arc::new(Target::in_process(relay));
    let mapping =
        tokio::spawn(async move { event_source::run_with(reader, target, sources, &options, shutdown).await });

    harness.put(&Source::USERS, "USER#before", "PROFILE", &[]).await;
    harness.receive_until(&[(Source::USERS, "before")]).await;

    // The topic disappears; writes keep coming.
    harness
        .aws
        .sns()
        .delete_topic()
        .topic_arn(&harness.stack.topic_arn)
        .send()
        .await
        .expect("delete topic");
    let mut expected = Vec::new();
    for n in 0..5 {
        let id = format!("during-{n}");
        harness.put(&Source::USERS, &format!("USER#{id}"), "PROFILE", &[]).await;
        harness
            .put(&Source::ROLES, &format!("ROLE#{id}"), "DEFINITION", &[])
            .await;
        expected.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while publisher.failures.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never reported a failure"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Back: same name, same ARN; the queue subscribes again, and only then may the relay publish.
    publisher.held.store(true, Ordering::SeqCst);
    let arn = harness
        .aws
        .sns()
        .create_topic()
        .name(harness.stack.topic_arn.rsplit(':').next().expect("topic name"))
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("arn");
    assert_eq!(arn, harness.stack.topic_arn);
    harness.subscribe().await;
    publisher.held.store(false, Ordering::SeqCst);

    let keys: Vec<(Source, &str)> = expected
        .iter()
        .flat_map(|id| [(Source::USERS, id.as_str()), (Source::ROLES, id.as_str())])
        .collect();
    harness.receive_until(&keys).await;
    harness.shutdown.cancel();
    mapping.await.expect("join").expect("event source mapping");
}
