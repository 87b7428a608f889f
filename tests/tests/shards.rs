//! The bound on every shard of a stream, where moto cannot go (its streams have one shard that
//! never splits): the local event source mapping runs the relay over a stream in memory with
//! four shards, heartbeat items are written as the writer writes them (one slot per shard), and
//! a consumer applies what the relay publishes with the tasks' own trust rules.
//!
//! Each row changes a user on a shard that stops delivering, and measures the worst staleness
//! the consumer's rules would allow: the latest moment it would still serve the cached value
//! while the change has reached it neither as an invalidation nor as a flush. Each row also runs
//! a control with only one heartbeat item (the writer before slots), or without give-up
//! flushes, to show the row fails without the mechanism it checks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::primitives::DateTime;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord, StreamViewType};
use infra::event_source::failure::FailurePolicy;
use infra::event_source::invoke::{Invocation, Invoker};
use infra::event_source::memory::MemoryStream;
use infra::event_source::{EventSourceOptions, FailureDestination, StreamSource, Target, run_with};
use staleless_consumer::{ChannelHealth, MetricNames, SlotProof, SourceSpec, TrustRules, unix_now_ms};
use staleless_protocol::{Invalidation, Source, decode_give_up};
use stream_relay::{Mapper, MemoryPublisher, Relay};
use tokio_util::sync::CancellationToken;

const TABLE: &str = "shard-users";
const STREAM: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/shard-users/stream/2026-01-01T00:00:00.000";
/// The consumer's bound: short, so a row takes seconds.
const BOUND: Duration = Duration::from_secs(2);
/// Time between heartbeats.
const BEAT: Duration = Duration::from_millis(100);
/// How long a row watches the consumer after the change.
const WATCH: Duration = Duration::from_secs(5);

fn text(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn stream_record(
    seq: u64,
    keys: std::collections::HashMap<String, AttributeValue>,
    image: std::collections::HashMap<String, AttributeValue>,
) -> Record {
    Record::builder()
        .event_id(format!("e{seq}"))
        .event_name(OperationType::Modify)
        .event_version("1.1")
        .event_source("aws:dynamodb")
        .aws_region("us-east-1")
        .dynamodb(
            StreamRecord::builder()
                .approximate_creation_date_time(DateTime::from_millis(unix_now_ms()))
                .set_keys(Some(keys))
                .set_new_image(Some(image))
                .sequence_number(format!("{seq:021}"))
                .size_bytes(100)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build(),
        )
        .build()
}

/// A user's profile changed.
fn user_record(seq: u64, user: &str) -> Record {
    let keys = std::collections::HashMap::from([
        ("PK".to_owned(), text(&format!("USER#{user}"))),
        ("SK".to_owned(), text("PROFILE")),
    ]);
    let mut image = keys.clone();
    image.insert("name".to_owned(), text(&format!("{user} at {seq}")));
    stream_record(seq, keys, image)
}

/// The heartbeat item of `slot`, announcing `slots` and `covered`.
fn heartbeat_record(seq: u64, slot: &str, slots: &[String], covered: bool) -> Record {
    let pk = staleless_protocol::keys::heartbeat_slot_pk("staleless", slot);
    let keys = std::collections::HashMap::from([("PK".to_owned(), text(&pk)), ("SK".to_owned(), text("HEARTBEAT"))]);
    let mut image = keys.clone();
    image.insert("writtenAtMs".to_owned(), AttributeValue::N(unix_now_ms().to_string()));
    image.insert("intervalMs".to_owned(), AttributeValue::N(BEAT.as_millis().to_string()));
    image.insert(
        "slots".to_owned(),
        AttributeValue::L(slots.iter().map(|slot| text(slot)).collect()),
    );
    image.insert("covered".to_owned(), AttributeValue::Bool(covered));
    stream_record(seq, keys, image)
}

/// The relay in-process, failing (as a raised error would) every batch that holds a record of
/// a user in `stuck`: that shard stops delivering while the others flow.
struct StuckShardFunction {
    relay: Arc<Relay>,
    stuck: Mutex<HashSet<String>>,
}

#[async_trait]
impl Invoker for StuckShardFunction {
    async fn invoke(&self, records: Vec<aws_lambda_events::event::dynamodb::EventRecord>) -> Invocation {
        let stuck = self.stuck.lock().expect("lock").clone();
        let blocked = records.iter().any(|record| match record.change.keys.get("PK") {
            Some(serde_dynamo::AttributeValue::S(pk)) => stuck.contains(pk),
            _ => false,
        });
        if blocked {
            return Invocation::FunctionError("Unhandled: the shard's batches keep failing".into());
        }
        Invocation::Returned(self.relay.handle_records(&records, 0).await.response)
    }
}

/// What the on-failure destination receives: the consumer reads it as the tasks read it from the
/// topic.
#[derive(Default)]
struct Destination(Mutex<Vec<String>>);

#[async_trait]
impl FailureDestination for Destination {
    async fn send(&self, message: String) -> Result<(), String> {
        self.0.lock().expect("lock").push(message);
        Ok(())
    }
}

/// One running row: the stream, the mapping and relay over it, and the writer's state.
struct Row {
    stream: Arc<MemoryStream>,
    function: Arc<StuckShardFunction>,
    publisher: Arc<MemoryPublisher>,
    destination: Arc<Destination>,
    seq: AtomicU64,
    shutdown: CancellationToken,
    dir: std::path::PathBuf,
}

impl Row {
    fn start(shards: &[&str], policy: FailurePolicy) -> Arc<Self> {
        let stream = Arc::new(MemoryStream::default());
        for shard in shards {
            stream.with_shard(shard, None, []);
        }
        let publisher = Arc::new(MemoryPublisher::new());
        let relay = Arc::new(Relay::new(
            Mapper::new(TABLE, "shard-roles", Vec::new()),
            publisher.clone(),
        ));
        let function = Arc::new(StuckShardFunction {
            relay,
            stuck: Mutex::new(HashSet::new()),
        });
        let destination = Arc::new(Destination::default());
        let target = Arc::new(Target {
            invoker: function.clone(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:relay".into(),
            on_failure: Some(destination.clone()),
        });
        let source = StreamSource {
            table: TABLE.into(),
            stream_arn: STREAM.into(),
            batch_size: 100,
            filters: Vec::new(),
            policy,
            on_failure: true,
        };
        let dir = std::env::temp_dir().join(format!("staleless-shards-{}", uuid::Uuid::new_v4().simple()));
        let mut options = EventSourceOptions::new(&dir);
        options.poll_interval = Duration::from_millis(5);
        options.shard_refresh_interval = Duration::from_millis(20);
        options.retry_initial_backoff = Duration::from_millis(10);
        options.retry_max_backoff = Duration::from_millis(40);
        let shutdown = CancellationToken::new();
        let reader: Arc<dyn infra::event_source::reader::StreamReader> = stream.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { run_with(reader, target, vec![source], &options, token).await });
        Arc::new(Self {
            stream,
            function,
            publisher,
            destination,
            seq: AtomicU64::new(1),
            shutdown,
            dir,
        })
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn write_user(&self, shard: &str, user: &str) {
        self.stream.append(shard, [user_record(self.next_seq(), user)]);
    }

    fn beat(&self, placement: &[(&str, &str)], slots: &[String], covered: bool) {
        for (slot, shard) in placement {
            self.stream
                .append(shard, [heartbeat_record(self.next_seq(), slot, slots, covered)]);
        }
    }

    fn stop(&self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tasks' trust rules over what the relay published (and what the on-failure destination
/// received, when `give_ups_flush`), applied as a task's listener applies them.
struct Consumer {
    health: ChannelHealth,
    give_ups_flush: bool,
    applied: usize,
    given_up: usize,
    /// When `user` was last evicted (invalidated or flushed), this consumer's clock.
    evicted: Option<Instant>,
}

impl Consumer {
    fn new(give_ups_flush: bool) -> Self {
        let health = ChannelHealth::new(
            TrustRules::new(BOUND, Duration::from_millis(200), &["staleless".to_owned()]),
            &[SourceSpec::new(Source::USERS.as_str(), "profiles")],
            MetricNames::default(),
        );
        health.mark_subscribed("memory");
        Self {
            health,
            give_ups_flush,
            applied: 0,
            given_up: 0,
            evicted: None,
        }
    }

    fn apply(&mut self, row: &Row, user: &str) {
        let messages = row.publisher.accepted_messages();
        for (_, message) in messages.iter().skip(self.applied) {
            match message {
                Invalidation::Tick {
                    source,
                    written_at_ms,
                    writer,
                    slot,
                    slots,
                    covered,
                    ..
                } => {
                    let proof = SlotProof::of(slot.as_deref(), slots.as_deref(), *covered);
                    if let Ok(admission) =
                        self.health
                            .admit_tick(source.as_str(), writer.as_deref(), *written_at_ms, &proof)
                    {
                        if admission.restores_trust {
                            self.evicted = Some(Instant::now());
                        }
                        self.health.record_tick(&admission, *written_at_ms, &proof);
                    }
                }
                Invalidation::Invalidate { keys, .. } if keys.iter().any(|key| key.id == user) => {
                    self.evicted = Some(Instant::now());
                }
                Invalidation::FlushAll { .. } => self.evicted = Some(Instant::now()),
                Invalidation::Invalidate { .. } => {}
            }
        }
        self.applied = messages.len();
        let give_ups = row.destination.0.lock().expect("lock").clone();
        for message in give_ups.iter().skip(self.given_up) {
            if self.give_ups_flush && decode_give_up(message).is_some_and(|give_up| give_up.table() == Some(TABLE)) {
                self.evicted = Some(Instant::now());
            }
        }
        self.given_up = give_ups.len();
    }

    fn trusted(&self) -> bool {
        self.health.is_trusted(Source::USERS.as_str())
    }
}

/// Beats on `placement()` every [`BEAT`] while watching `consumer` for [`WATCH`] after the
/// change to `user` made at `changed`: the worst staleness its rules allow (how long after the
/// change it would still serve the old value), and whether it trusts its cache at the end.
async fn watch(
    row: &Row,
    consumer: &mut Consumer,
    user: &str,
    changed: Instant,
    mut placement: impl FnMut(Duration) -> (Vec<(&'static str, &'static str)>, Vec<String>, bool),
) -> (Duration, bool) {
    let mut worst = Duration::ZERO;
    let mut next_beat = Instant::now();
    while changed.elapsed() < WATCH {
        if Instant::now() >= next_beat {
            let (slots_on, announced, covered) = placement(changed.elapsed());
            row.beat(&slots_on, &announced, covered);
            next_beat += BEAT;
        }
        consumer.apply(row, user);
        let stale = consumer.evicted.is_none_or(|at| at < changed);
        if stale && consumer.trusted() {
            worst = changed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (worst, consumer.trusted())
}

fn slots(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// A heartbeat slot and the shard its item lands on.
type Placement = (&'static str, &'static str);

const FOUR: [(&str, &str); 4] = [("0", "shard-0"), ("1", "shard-1"), ("2", "shard-2"), ("3", "shard-3")];

/// Warms the consumer: every shard flows, it trusts its cache.
async fn warm(row: &Row, consumer: &mut Consumer, placement: &[(&'static str, &'static str)], announced: &[String]) {
    let started = Instant::now();
    while !consumer.trusted() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the consumer never trusted its cache"
        );
        row.beat(placement, announced, true);
        tokio::time::sleep(BEAT).await;
        consumer.apply(row, "");
    }
}

/// Four shards, the heartbeat on every one; shard 2's batches fail from the change on and are
/// retried forever while the other three flow.
async fn one_stuck_shard_of_four(
    announced: Vec<String>,
    placement: Vec<(&'static str, &'static str)>,
) -> (Duration, bool) {
    let row = Row::start(&["shard-0", "shard-1", "shard-2", "shard-3"], FailurePolicy::default());
    let mut consumer = Consumer::new(true);
    warm(&row, &mut consumer, &placement, &announced).await;
    row.function
        .stuck
        .lock()
        .expect("lock")
        .insert("USER#u-stuck".to_owned());
    row.write_user("shard-2", "u-stuck");
    let changed = Instant::now();
    let result = watch(&row, &mut consumer, "u-stuck", changed, |_| {
        (placement.clone(), announced.clone(), true)
    })
    .await;
    row.stop();
    result
}

#[tokio::test]
async fn one_stuck_shard_of_four_stops_trust_within_the_bound() {
    let (worst, trusted_at_the_end) = one_stuck_shard_of_four(slots(&["0", "1", "2", "3"]), FOUR.to_vec()).await;
    println!("one stuck shard of four: worst staleness allowed {worst:?} (bound {BOUND:?})");
    assert!(
        worst <= BOUND,
        "a stuck shard's change was trusted {worst:?} after it, past {BOUND:?}"
    );
    assert!(!trusted_at_the_end, "still trusted while a shard is stuck");

    // The control: one heartbeat item (the writer before slots) proves only its own shard, and
    // the change in the stuck shard is trusted as long as the row watches.
    let (control, _) = one_stuck_shard_of_four(slots(&["0"]), vec![("0", "shard-0")]).await;
    println!("control, one heartbeat item: worst staleness allowed {control:?}");
    assert!(control > BOUND, "the control should break the bound: {control:?}");
}

/// Shard 0 splits during ticks: slot 0's item now lands on child shard-4; child shard-5 holds no
/// slot until the writer finds one (slot 4), 300 ms later, and its batches fail until 4 s in.
/// With `per_shard` false the writer is the one before slots: one item, on shard 0 then shard-4.
async fn a_split_during_ticks(per_shard: bool) -> (Duration, bool) {
    let row = Row::start(&["shard-0", "shard-1", "shard-2", "shard-3"], FailurePolicy::default());
    let mut consumer = Consumer::new(true);
    let (before, after_split): (Vec<Placement>, Vec<Placement>) = if per_shard {
        (
            FOUR.to_vec(),
            vec![("0", "shard-4"), ("1", "shard-1"), ("2", "shard-2"), ("3", "shard-3")],
        )
    } else {
        (vec![("0", "shard-0")], vec![("0", "shard-4")])
    };
    let announced_before = slots(&before.iter().map(|(slot, _)| *slot).collect::<Vec<_>>());
    warm(&row, &mut consumer, &before, &announced_before).await;

    row.stream.with_shard("shard-4", Some("shard-0"), []);
    row.stream.with_shard("shard-5", Some("shard-0"), []);
    row.stream.close("shard-0");
    row.function.stuck.lock().expect("lock").insert("USER#u-new".to_owned());
    row.write_user("shard-5", "u-new");
    let changed = Instant::now();
    let function = row.function.clone();
    let result = watch(&row, &mut consumer, "u-new", changed, |elapsed| {
        if elapsed >= Duration::from_secs(4) {
            function.stuck.lock().expect("lock").clear();
        }
        if !per_shard {
            (after_split.clone(), announced_before.clone(), true)
        } else if elapsed < Duration::from_millis(300) {
            (after_split.clone(), announced_before.clone(), false)
        } else {
            let mut placement = after_split.clone();
            placement.push(("4", "shard-5"));
            (placement, slots(&["0", "1", "2", "3", "4"]), true)
        }
    })
    .await;
    row.stop();
    result
}

#[tokio::test]
async fn a_shard_split_during_ticks_leaves_no_child_unproven_and_trust_returns() {
    let (worst, trusted_at_the_end) = a_split_during_ticks(true).await;
    println!("shard split: worst staleness allowed {worst:?} (bound {BOUND:?})");
    assert!(
        worst <= BOUND,
        "a change on the new shard was trusted {worst:?} after it"
    );
    assert!(trusted_at_the_end, "trust never came back after the split was covered");

    // The control: one heartbeat item proves one child; the other child's change, held back
    // for 4 s, is trusted all along.
    let (control, _) = a_split_during_ticks(false).await;
    println!("control, one heartbeat item: worst staleness allowed {control:?}");
    assert!(control > BOUND, "the control should break the bound: {control:?}");
}

/// A batch given up to the on-failure destination (retries exhausted), after which the shard
/// flows again: without a flush, its invalidation is lost for good.
async fn a_given_up_batch(give_ups_flush: bool) -> (Duration, bool) {
    let policy = FailurePolicy {
        max_retry_attempts: Some(2),
        max_record_age: None,
        bisect_on_function_error: true,
    };
    let row = Row::start(&["shard-0", "shard-1", "shard-2", "shard-3"], policy);
    let mut consumer = Consumer::new(give_ups_flush);
    let four = slots(&["0", "1", "2", "3"]);
    warm(&row, &mut consumer, &FOUR, &four).await;
    row.function
        .stuck
        .lock()
        .expect("lock")
        .insert("USER#u-lost".to_owned());
    row.write_user("shard-2", "u-lost");
    let changed = Instant::now();
    let result = watch(&row, &mut consumer, "u-lost", changed, |_| {
        (FOUR.to_vec(), four.clone(), true)
    })
    .await;
    let given_up = row.destination.0.lock().expect("lock").len();
    row.stop();
    assert!(given_up > 0, "the poison batch was never given up");
    result
}

#[tokio::test]
async fn a_batch_given_up_to_the_on_failure_destination_is_a_flush() {
    let (worst, trusted_at_the_end) = a_given_up_batch(true).await;
    println!("batch given up: worst staleness allowed {worst:?} (bound {BOUND:?})");
    assert!(worst <= BOUND, "a given-up change was trusted {worst:?} after it");
    assert!(
        trusted_at_the_end,
        "the shard flows again after the give-up: trust returns"
    );

    let (control, _) = a_given_up_batch(false).await;
    println!("control, give-ups not flushed: worst staleness allowed {control:?}");
    assert!(control > BOUND, "the control should break the bound: {control:?}");
}
