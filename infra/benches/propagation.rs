//! Local propagation latency: a DynamoDB write → stream → local event source mapping → stream
//! relay → SNS → a message on a subscribed SQS queue, over many sequential writes.
//!
//! `cargo bench -p infra --bench propagation` (1,000 measured writes after 20 warm-up ones).
//! `PROPAGATION_WRITES` changes the count, `PROPAGATION_POLL_MS` the event source's poll interval.
//! Without `--bench` (e.g. `cargo test --benches`) it only makes 10 writes, as a smoke test.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use infra::LocalAws;
use infra::event_source::{self, EventSourceOptions};
use staleless_protocol::Invalidation;
use tokio_util::sync::CancellationToken;

const WARM_UP_WRITES: usize = 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    // Nearest-rank: the smallest sample with at least `fraction` of the samples at or below it.
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let benching = std::env::args().any(|arg| arg == "--bench");
    let writes = if benching {
        env_number("PROPAGATION_WRITES", 1_000) as usize
    } else {
        10
    };
    let poll = Duration::from_millis(env_number(
        "PROPAGATION_POLL_MS",
        u64::try_from(event_source::DEFAULT_POLL_INTERVAL.as_millis())?,
    ));

    let aws = LocalAws::start()?;
    let stack = aws.provision_unique().await?;
    let sqs = aws.sqs();
    let queue_url = aws
        .create_subscribed_queue(&stack.topic_arn, &format!("{}-bench", stack.task_queue_prefix))
        .await?
        .url;

    let checkpoint_dir = std::env::temp_dir().join(format!("staleless-propagation-{}", stack.prefix));
    let mut options = EventSourceOptions::new(&checkpoint_dir);
    options.poll_interval = poll;
    let shutdown = CancellationToken::new();
    let mapping = event_source::spawn(aws.sdk_config(), &stack, options, shutdown.clone());

    let dynamodb = aws.dynamodb();
    let mut latencies = Vec::with_capacity(writes);
    let mut write_calls = Vec::with_capacity(writes);
    for n in 0..WARM_UP_WRITES + writes {
        // Alternate the tables, so both streams and both sources are measured.
        let (table, pk, sk, id) = if n % 2 == 0 {
            (
                &stack.users_table,
                format!("USER#bench-{n}"),
                "PROFILE",
                format!("bench-{n}"),
            )
        } else {
            (
                &stack.roles_table,
                format!("ROLE#bench_{n}"),
                "DEFINITION",
                format!("bench_{n}"),
            )
        };
        let started = Instant::now();
        dynamodb
            .put_item()
            .table_name(table)
            .item("PK", AttributeValue::S(pk))
            .item("SK", AttributeValue::S(sk.into()))
            .item("n", AttributeValue::N(n.to_string()))
            .send()
            .await?;
        let written = started.elapsed();

        let mut receipts = Vec::new();
        let arrived = loop {
            let output = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(5)
                .send()
                .await?;
            let now = started.elapsed();
            let mut found = false;
            for message in output.messages.unwrap_or_default() {
                if let Some(Invalidation::Invalidate { keys, .. }) = message
                    .body
                    .as_deref()
                    .and_then(|body| staleless_protocol::decode(body).ok())
                {
                    found |= keys.iter().any(|key| key.id == id);
                }
                receipts.extend(message.receipt_handle);
            }
            if found {
                break now;
            }
            anyhow::ensure!(now < Duration::from_secs(30), "write {n} never arrived");
        };
        if !receipts.is_empty() {
            let entries = receipts
                .into_iter()
                .enumerate()
                .map(|(index, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(receipt)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            sqs.delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        if n >= WARM_UP_WRITES {
            latencies.push(arrived);
            write_calls.push(written);
        }
    }
    shutdown.cancel();
    mapping.await??;
    let _ = std::fs::remove_dir_all(&checkpoint_dir);

    latencies.sort();
    write_calls.sort();
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len())?;
    println!(
        "propagation write -> SQS over {} writes (poll {} ms): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        latencies.len(),
        poll.as_millis(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.95)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        ms(mean),
    );
    println!(
        "  of which the PutItem call: p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&write_calls, 0.50)),
        ms(percentile(&write_calls, 0.99)),
    );
    Ok(())
}
