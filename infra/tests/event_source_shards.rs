//! The local event source mapping over a fake stream: shard splits (which moto never does),
//! checkpoints across restarts, batch item failures re-read from the reported record, and a
//! failing function's batches bisected down to the record given up to the on-failure destination.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::primitives::DateTime;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord, StreamViewType};
use infra::event_source::checkpoint::{Checkpoint, CheckpointFile};
use infra::event_source::failure::FailurePolicy;
use infra::event_source::filter::FilterPattern;
use infra::event_source::invoke::{Invocation, Invoker};
use infra::event_source::memory::MemoryStream;
use infra::event_source::reader::{Position, RecordPage, ShardInfo, StreamError, StreamReader};
use infra::event_source::{EventSourceOptions, FailureDestination, StreamSource, Target, run_with};
use staleless_protocol::Invalidation;
use stream_relay::{Mapper, MemoryPublisher, PublishError, Relay};
use tokio_util::sync::CancellationToken;

const STREAM: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/fake-users/stream/2024-11-25T00:00:00.000";

/// A user INSERT with sequence number `seq` for user `u-<seq>`.
fn record(seq: u64) -> Record {
    let keys = HashMap::from([
        ("PK".to_owned(), AttributeValue::S(format!("USER#u-{seq}"))),
        ("SK".to_owned(), AttributeValue::S("PROFILE".into())),
    ]);
    Record::builder()
        .event_id(format!("e{seq}"))
        .event_name(OperationType::Insert)
        .event_version("1.1")
        .event_source("aws:dynamodb")
        .aws_region("us-east-1")
        .dynamodb(
            StreamRecord::builder()
                .approximate_creation_date_time(DateTime::from_secs(1_732_500_000))
                .set_keys(Some(keys.clone()))
                .set_new_image(Some(keys))
                .sequence_number(format!("{seq:021}"))
                .size_bytes(60)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build(),
        )
        .build()
}

/// An in-memory stream whose shards hold the user records of the given sequence numbers.
#[derive(Debug, Default)]
struct FakeStream(MemoryStream);

impl FakeStream {
    fn with_shard(&self, id: &str, parent: Option<&str>, seqs: impl IntoIterator<Item = u64>) {
        self.0.with_shard(id, parent, seqs.into_iter().map(record));
    }

    fn append(&self, id: &str, seqs: impl IntoIterator<Item = u64>) {
        self.0.append(id, seqs.into_iter().map(record));
    }

    fn close(&self, id: &str) {
        self.0.close(id);
    }
}

#[async_trait]
impl StreamReader for FakeStream {
    async fn shards(&self, stream_arn: &str) -> Result<Vec<ShardInfo>, StreamError> {
        self.0.shards(stream_arn).await
    }

    async fn iterator(&self, stream_arn: &str, shard_id: &str, position: &Position) -> Result<String, StreamError> {
        self.0.iterator(stream_arn, shard_id, position).await
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordPage, StreamError> {
        self.0.records(iterator, limit).await
    }
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("staleless-esm-{}", uuid::Uuid::new_v4().simple()))
}

fn options(dir: &Path) -> EventSourceOptions {
    let mut options = EventSourceOptions::new(dir);
    options.poll_interval = Duration::from_millis(5);
    options.shard_refresh_interval = Duration::from_millis(20);
    options.retry_initial_backoff = Duration::from_millis(10);
    options.retry_max_backoff = Duration::from_millis(40);
    options
}

fn source(batch_size: u32) -> StreamSource {
    StreamSource {
        table: "fake-users".into(),
        stream_arn: STREAM.into(),
        batch_size,
        filters: vec![
            FilterPattern::compile(r#"{"dynamodb":{"Keys":{"PK":{"S":[{"prefix":"USER#"}]}}}}"#).expect("pattern"),
        ],
        policy: FailurePolicy::default(),
        on_failure: false,
    }
}

fn relay(publisher: &Arc<MemoryPublisher>) -> Arc<Relay> {
    Arc::new(Relay::new(
        Mapper::new("fake-users", "fake-roles", Vec::new()),
        publisher.clone(),
    ))
}

/// Published user ids, in publish order (repeats kept).
fn published(publisher: &MemoryPublisher) -> Vec<String> {
    publisher
        .accepted_messages()
        .into_iter()
        .flat_map(|(_, message)| match message {
            Invalidation::Invalidate { keys, .. } => keys.into_iter().map(|key| key.id).collect(),
            Invalidation::FlushAll { .. } | Invalidation::Tick { .. } => Vec::new(),
        })
        .collect()
}

async fn wait_for(publisher: &MemoryPublisher, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: BTreeSet<String> = published(publisher).into_iter().collect();
        if ids.iter().all(|id| seen.contains(*id)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {ids:?}, published {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the mapping over `stream` into `relay` until the returned token is cancelled.
fn start(
    stream: &Arc<FakeStream>,
    relay: Arc<Relay>,
    dir: &Path,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), infra::event_source::EventSourceError>>,
) {
    let shutdown = CancellationToken::new();
    let (stream, options, token) = (stream.clone(), options(dir), shutdown.clone());
    let target = Arc::new(Target::in_process(relay));
    let task = tokio::spawn(async move { run_with(stream, target, vec![source(100)], &options, token).await });
    (shutdown, task)
}

#[tokio::test]
async fn children_of_a_split_are_read_after_their_parent_and_restarts_resume() {
    let dir = scratch_dir();
    let stream = Arc::new(FakeStream::default());
    stream.with_shard("shard-0", None, 1..=3);

    let publisher = Arc::new(MemoryPublisher::new());
    let (shutdown, task) = start(&stream, relay(&publisher), &dir);
    wait_for(&publisher, &["u-1", "u-2", "u-3"]).await;

    // The shard splits: its last record, then two children with records of their own.
    stream.with_shard("shard-1", Some("shard-0"), 5..=6);
    stream.with_shard("shard-2", Some("shard-0"), [7]);
    stream.append("shard-0", [4]);
    stream.close("shard-0");
    wait_for(&publisher, &["u-4", "u-5", "u-6", "u-7"]).await;
    shutdown.cancel();
    task.await.expect("join").expect("run");

    let order = published(&publisher);
    let position = |id: &str| order.iter().position(|seen| seen == id).expect("published");
    assert!(
        position("u-4") < position("u-5") && position("u-4") < position("u-7"),
        "{order:?}"
    );
    assert_eq!(order.len(), 7, "each record delivered once: {order:?}");

    let checkpoint: Checkpoint = CheckpointFile::new(&dir, "fake-users")
        .load(STREAM)
        .await
        .expect("checkpoint");
    assert!(checkpoint.shards["shard-0"].finished);
    assert_eq!(
        checkpoint.shards["shard-1"].sequence_number.as_deref(),
        Some(format!("{:021}", 6).as_str())
    );

    // A restart resumes after the checkpoint: only the new records are delivered.
    stream.append("shard-1", [8]);
    stream.append("shard-2", [9]);
    let publisher = Arc::new(MemoryPublisher::new());
    let (shutdown, task) = start(&stream, relay(&publisher), &dir);
    wait_for(&publisher, &["u-8", "u-9"]).await;
    shutdown.cancel();
    task.await.expect("join").expect("run");
    let mut resumed = published(&publisher);
    resumed.sort();
    assert_eq!(resumed, ["u-8", "u-9"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_batch_item_failure_is_re_read_from_the_reported_record() {
    let dir = scratch_dir();
    let stream = Arc::new(FakeStream::default());
    stream.with_shard("shard-0", None, 1..=30);

    // Small messages: 30 keys need two PublishBatch calls; the second one fails once.
    let publisher = Arc::new(MemoryPublisher::new());
    publisher.script([Ok(()), Err(PublishError::Rejected("topic gone".into()))]);
    let relay = Arc::new(
        Relay::new(Mapper::new("fake-users", "fake-roles", Vec::new()), publisher.clone()).with_max_message_bytes(200),
    );
    let (shutdown, task) = start(&stream, relay, &dir);
    let all: Vec<String> = (1..=30).map(|n| format!("u-{n}")).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_for(&publisher, &all_refs).await;
    shutdown.cancel();
    task.await.expect("join").expect("run");

    let order = published(&publisher);
    assert_eq!(
        order.len(),
        30,
        "the retry starts at the failed record, nothing before it again: {order:?}"
    );
    assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), 30);
    assert_eq!(publisher.calls(), 3, "ok, failed, then the re-read remainder");
    let checkpoint = CheckpointFile::new(&dir, "fake-users")
        .load(STREAM)
        .await
        .expect("checkpoint");
    assert_eq!(
        checkpoint.shards["shard-0"].sequence_number.as_deref(),
        Some(format!("{:021}", 30).as_str())
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A relay function that fails (as a raised error would) every invocation whose batch holds the
/// poison user, and records the batch sizes it was invoked with.
struct PoisonedFunction {
    poison: String,
    invocations: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl Invoker for PoisonedFunction {
    async fn invoke(&self, records: Vec<aws_lambda_events::event::dynamodb::EventRecord>) -> Invocation {
        let users: Vec<String> = records
            .iter()
            .filter_map(|record| record.change.keys.get("PK"))
            .filter_map(|pk| match pk {
                serde_dynamo::AttributeValue::S(text) => Some(text.trim_start_matches("USER#").to_owned()),
                _ => None,
            })
            .collect();
        let poisoned = users.contains(&self.poison);
        self.invocations.lock().expect("lock").push(users);
        if poisoned {
            Invocation::FunctionError("Unhandled: poison".into())
        } else {
            Invocation::Returned(aws_lambda_events::event::streams::DynamoDbEventResponse::default())
        }
    }
}

/// Messages sent to the on-failure destination.
#[derive(Default)]
struct MemoryDestination(Mutex<Vec<serde_json::Value>>);

#[async_trait]
impl FailureDestination for MemoryDestination {
    async fn send(&self, message: String) -> Result<(), String> {
        let value = serde_json::from_str(&message).map_err(|err| err.to_string())?;
        self.0.lock().expect("lock").push(value);
        Ok(())
    }
}

/// A mapping running over `stream` into a [`PoisonedFunction`], discarding to memory.
struct Poisoned {
    function: Arc<PoisonedFunction>,
    destination: Arc<MemoryDestination>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), infra::event_source::EventSourceError>>,
}

fn start_poisoned(stream: &Arc<FakeStream>, dir: &Path, poison: &str, policy: FailurePolicy) -> Poisoned {
    let function = Arc::new(PoisonedFunction {
        poison: poison.into(),
        invocations: Mutex::new(Vec::new()),
    });
    let destination = Arc::new(MemoryDestination::default());
    let target = Arc::new(Target {
        invoker: function.clone(),
        function_arn: "arn:aws:lambda:us-east-1:123456789012:function:relay".into(),
        on_failure: Some(destination.clone()),
    });
    let mut source = source(100);
    source.policy = policy;
    source.on_failure = true;
    let shutdown = CancellationToken::new();
    let (reader, options, token) = (stream.clone(), options(dir), shutdown.clone());
    let task = tokio::spawn(async move { run_with(reader, target, vec![source], &options, token).await });
    Poisoned {
        function,
        destination,
        shutdown,
        task,
    }
}

#[tokio::test]
async fn a_failing_batch_is_bisected_to_the_poison_record_which_alone_goes_to_the_destination() {
    let dir = scratch_dir();
    let stream = Arc::new(FakeStream::default());
    stream.with_shard("shard-0", None, 1..=40);
    let policy = FailurePolicy {
        max_retry_attempts: Some(2),
        max_record_age: None,
        bisect_on_function_error: true,
    };
    let Poisoned {
        function,
        destination,
        shutdown,
        task,
    } = start_poisoned(&stream, &dir, "u-23", policy);

    // Every other record is delivered in a batch that succeeded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let delivered: BTreeSet<String> = {
            let invocations = function.invocations.lock().expect("lock");
            invocations
                .iter()
                .filter(|batch| !batch.contains(&"u-23".to_owned()))
                .flatten()
                .cloned()
                .collect()
        };
        if delivered.len() == 39 && !destination.0.lock().expect("lock").is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "delivered {delivered:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    task.await.expect("join").expect("run");

    let invocations = function.invocations.lock().expect("lock").clone();
    let sizes: Vec<usize> = invocations.iter().map(Vec::len).collect();
    assert_eq!(&sizes[..3], [40, 20, 20], "halves, the good one first: {sizes:?}");
    for pair in invocations.windows(2) {
        if pair[0].contains(&"u-23".to_owned()) && pair[0].len() > 1 {
            assert_eq!(
                pair[1].len(),
                pair[0].len() / 2,
                "halved after a function error: {sizes:?}"
            );
            assert_eq!(pair[1][0], pair[0][0], "from the same record: {invocations:?}");
        }
    }
    let poison_alone = invocations.iter().filter(|batch| batch.as_slice() == ["u-23"]).count();
    assert_eq!(
        poison_alone, 3,
        "the record alone: the first try and two retries: {sizes:?}"
    );

    let messages = destination.0.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(message["responseContext"]["functionError"], "Unhandled");
    let batch = &message["DDBStreamBatchInfo"];
    assert_eq!(batch["batchSize"], 1);
    assert_eq!(batch["shardId"], "shard-0");
    assert_eq!(batch["streamArn"], STREAM);
    assert_eq!(batch["startSequenceNumber"], format!("{:021}", 23));
    assert_eq!(batch["endSequenceNumber"], format!("{:021}", 23));

    let checkpoint = CheckpointFile::new(&dir, "fake-users")
        .load(STREAM)
        .await
        .expect("checkpoint");
    assert_eq!(
        checkpoint.shards["shard-0"].sequence_number.as_deref(),
        Some(format!("{:021}", 40).as_str()),
        "the shard moved past the parked record"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn records_older_than_the_maximum_age_are_discarded_unprocessed() {
    let dir = scratch_dir();
    let stream = Arc::new(FakeStream::default());
    // The fake records were written in November 2024: far older than an hour.
    stream.with_shard("shard-0", None, 1..=5);
    let policy = FailurePolicy {
        max_record_age: Some(Duration::from_secs(3600)),
        ..FailurePolicy::default()
    };
    let Poisoned {
        function,
        destination,
        shutdown,
        task,
    } = start_poisoned(&stream, &dir, "none", policy);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while destination.0.lock().expect("lock").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing discarded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    task.await.expect("join").expect("run");
    let messages = destination.0.lock().expect("lock").clone();
    assert_eq!(messages[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(messages[0]["DDBStreamBatchInfo"]["batchSize"], 5);
    assert_eq!(messages[0]["responseContext"].get("functionError"), None);
    assert!(function.invocations.lock().expect("lock").is_empty(), "never invoked");
    let _ = std::fs::remove_dir_all(dir);
}
