//! The relay's cost as Lambda runs it locally (`bench lambda`): how long a new execution
//! environment of the relay's Lambda binary takes to answer its first invocation (cold start),
//! and what one invocation through Lambda's `Invoke` API costs per batch beside the relay library
//! called in-process — the same batch, the same topic on the same emulator, interleaved.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use aws_lambda_events::event::dynamodb::EventRecord;
use infra::event_source::invoke::{InProcessInvoker, Invocation, Invoker, LambdaInvoker};
use infra::system::{self, FunctionProgram};
use infra::{LocalAws, template};
use stream_relay::{Mapper, Relay, SnsPublisher};

/// A user MODIFY as Lambda delivers it (the relay's own fixture).
const MODIFY: &str = include_str!("../../stream-relay/tests/fixtures/users_modify_status.json");

/// What to measure.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    /// New execution environments started, one after the other.
    pub cold_starts: usize,
    /// Invocations per batch size and path.
    pub invocations: usize,
    /// Records per batch.
    pub batch_sizes: Vec<usize>,
}

/// One batch size, both paths.
#[derive(Debug, Clone)]
pub struct InvokeRow {
    /// Records per invocation.
    pub batch: usize,
    /// `Relay::handle_records` in this process, sorted.
    pub in_process: Vec<Duration>,
    /// `Invoke` through the local Lambda to the relay's binary, sorted.
    pub invoked: Vec<Duration>,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct InvokeReport {
    /// The binary measured.
    pub binary: String,
    /// From spawning `cargo lambda watch` to its port answering.
    pub service_start: Duration,
    /// From spawning the function to its first invocation answered, sorted.
    pub cold_starts: Vec<Duration>,
    /// Per batch size.
    pub rows: Vec<InvokeRow>,
}

/// `count` distinct user MODIFY records read from `stream_arn`.
fn records(stream_arn: &str, count: usize) -> anyhow::Result<Vec<EventRecord>> {
    let fixture: serde_json::Value = serde_json::from_str(MODIFY)?;
    let template = fixture["Records"][0].clone();
    (0..count)
        .map(|index| {
            let mut record = template.clone();
            let user = format!("bench-{index}");
            for image in ["Keys", "NewImage", "OldImage"] {
                record["dynamodb"][image]["PK"]["S"] = format!("USER#{user}").into();
            }
            record["dynamodb"]["NewImage"]["userId"]["S"] = user.clone().into();
            record["dynamodb"]["OldImage"]["userId"]["S"] = user.into();
            record["dynamodb"]["SequenceNumber"] = format!("{:021}", index + 1).into();
            record["eventSourceARN"] = stream_arn.into();
            Ok(serde_json::from_value(record)?)
        })
        .collect()
}

async fn timed(invoker: &dyn Invoker, batch: &[EventRecord]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match invoker.invoke(batch.to_vec()).await {
        Invocation::Returned(response) if response.batch_item_failures.is_empty() => Ok(started.elapsed()),
        other => anyhow::bail!("the invocation did not succeed: {other:?}"),
    }
}

/// Runs the measurement against an emulator of its own, with the function binary of
/// [`FunctionProgram::from_env`] in `bin_dir` (the release build under `scripts/bench`).
///
/// # Errors
/// When a component does not start or an invocation fails.
pub async fn measure(options: &InvokeOptions, bin_dir: &Path) -> anyhow::Result<InvokeReport> {
    let mut aws = LocalAws::start()?;
    let stack = aws.provision_unique().await?;
    let logs = std::env::temp_dir().join(format!("staleless-invoke-bench-{}", stack.prefix));
    std::fs::create_dir_all(&logs)?;
    let result = async {
        let port = infra::emulator::free_port()?;
        let started = Instant::now();
        let mut lambda = system::start_lambda_service(port, Duration::from_secs(30), &logs.join("lambda.log")).await?;
        let service_start = started.elapsed();
        let spec = template::load_for(&template::default_template_path(), &stack.prefix)?;
        let env = system::relay_function_env(&spec, &stack, &system::stack_env(aws.endpoint(), &stack), port)
            .map_err(anyhow::Error::msg)?;
        let program = FunctionProgram::from_env(bin_dir);
        let client = LambdaInvoker::client_for(
            aws.sdk_config(),
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(30),
            Duration::from_secs(5),
        );
        let invoked = LambdaInvoker::new(client, system::RELAY_FUNCTION_NAME);
        let log = logs.join("relay.log");

        let mut cold_starts = Vec::with_capacity(options.cold_starts);
        for _ in 0..options.cold_starts {
            let started = Instant::now();
            let mut function = system::start_relay_function(&program, &env, &log)?;
            let first = timed(&invoked, &[]).await;
            cold_starts.push(started.elapsed());
            function.stop().await;
            first.context("first invocation")?;
        }
        cold_starts.sort();

        let mut function = system::start_relay_function(&program, &env, &log)?;
        let mapper = Mapper::new(
            &stack.users_table,
            &stack.roles_table,
            stream_relay::config::parse_attribute_list(stream_relay::config::DEFAULT_IGNORED_ATTRIBUTES),
        );
        let publisher = SnsPublisher::new(aws.sns(), &stack.topic_arn, mapper.sources().cloned().collect());
        let in_process = InProcessInvoker(Arc::new(Relay::new(mapper, Arc::new(publisher))));
        let mut rows = Vec::new();
        for &batch_size in &options.batch_sizes {
            let batch = records(&stack.users_stream_arn, batch_size)?;
            // Warm both paths (connections, the function's first call) before timing.
            timed(&invoked, &batch).await?;
            timed(&in_process, &batch).await?;
            let mut row = InvokeRow {
                batch: batch_size,
                in_process: Vec::with_capacity(options.invocations),
                invoked: Vec::with_capacity(options.invocations),
            };
            for _ in 0..options.invocations {
                row.invoked.push(timed(&invoked, &batch).await?);
                row.in_process.push(timed(&in_process, &batch).await?);
            }
            row.invoked.sort();
            row.in_process.sort();
            rows.push(row);
        }
        function.stop().await;
        lambda.stop().await;
        ensure!(!cold_starts.is_empty(), "no cold start measured");
        anyhow::Ok(InvokeReport {
            binary: program.program.display().to_string(),
            service_start,
            cold_starts,
            rows,
        })
    }
    .await;
    aws.stop();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!("invoke bench logs: {}", logs.display());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_records_are_distinct_users_of_one_stream() {
        let batch = records("arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/s", 3).expect("records");
        let users: std::collections::BTreeSet<String> = batch
            .iter()
            .map(|record| format!("{:?}", record.change.keys.get("PK")))
            .collect();
        assert_eq!(users.len(), 3);
        assert!(batch.iter().all(|record| record.event_source_arn.as_deref()
            == Some("arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/s")));
    }
}
