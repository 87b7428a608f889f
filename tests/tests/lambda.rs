//! The relay's Lambda binary as Lambda runs it: a relay that cannot finish is retried, bisected
//! down to the record and parked on the dead-letter queue with the message AWS sends, all
//! through the real binary behind the local Lambda's `Invoke` API; and the shard moves on.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde_json::Value;
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions};

/// The deployed template with one retry instead of ten, so a parked record takes seconds.
fn template_with_one_retry(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let template = std::fs::read_to_string(infra::template::default_template_path())?;
    ensure!(
        template.matches("MaximumRetryAttempts: 10").count() == 2,
        "both stream events retry ten times"
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join("template.yaml");
    std::fs::write(
        &path,
        template.replace("MaximumRetryAttempts: 10", "MaximumRetryAttempts: 1"),
    )?;
    Ok(path)
}

/// Sequence numbers of the users stream's records, by the user id in their key.
async fn sequence_numbers(system: &LocalSystem) -> anyhow::Result<BTreeMap<String, String>> {
    let streams = system.aws.streams();
    let stream = streams
        .describe_stream()
        .stream_arn(&system.stack.users_stream_arn)
        .send()
        .await?;
    let mut found = BTreeMap::new();
    for shard in stream.stream_description().map(|d| d.shards()).unwrap_or_default() {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&system.stack.users_stream_arn)
            .shard_id(shard.shard_id().unwrap_or_default())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        while let Some(current) = iterator.take() {
            let page = streams.get_records().shard_iterator(current).send().await?;
            if page.records().is_empty() {
                break;
            }
            for record in page.records() {
                let Some(change) = record.dynamodb() else { continue };
                let pk = change
                    .keys()
                    .and_then(|keys| keys.get("PK"))
                    .and_then(|pk| pk.as_s().ok());
                if let (Some(pk), Some(seq)) = (pk, change.sequence_number()) {
                    found.insert(pk.trim_start_matches("USER#").to_owned(), seq.to_owned());
                }
            }
            iterator = page.next_shard_iterator;
        }
    }
    Ok(found)
}

#[tokio::test]
async fn a_relay_that_cannot_finish_is_retried_bisected_and_parked_on_the_dead_letter_queue() -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("staleless-lambda-{}", uuid::Uuid::new_v4().simple()));
    let template = template_with_one_retry(&scratch)?;
    let mut system = LocalSystem::start(SystemOptions {
        sns_through_proxy: true,
        template: Some(template),
        relay_env: vec![
            // SNS will hang: each invocation then ends as a function timeout, Lambda's cue to
            // bisect the batch.
            ("RELAY_FUNCTION_TIMEOUT_SECS".into(), "1".into()),
        ],
        ..SystemOptions::default()
    })
    .await?;
    let result = run(&mut system).await;
    if result.is_err() {
        eprintln!("logs: {}", system.logs_dir().display());
    }
    system.stop().await;
    let _ = std::fs::remove_dir_all(scratch);
    result
}

async fn run(system: &mut LocalSystem) -> anyhow::Result<()> {
    // Quiet: everything written so far is relayed, and no heartbeat joins the failing batch.
    system.until_quiescent().await?;
    system.heartbeat.as_ref().context("heartbeat writer")?.pause();
    let proxy = system.sns_proxy.as_ref().context("SNS proxy")?;
    proxy.hang();

    // Two records in one write, so they reach the function as one batch.
    let item = |id: &str| {
        let fields = [
            ("PK", format!("USER#{id}")),
            ("SK", "PROFILE".to_owned()),
            ("userId", id.to_owned()),
            ("email", format!("{id}@example.com")),
            ("name", id.to_owned()),
            ("status", "active".to_owned()),
        ];
        let item = fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), AttributeValue::S(value)))
            .collect();
        WriteRequest::builder()
            .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item"))
            .build()
    };
    system
        .aws
        .dynamodb()
        .batch_write_item()
        .request_items(&system.stack.users_table, vec![item("dl-1"), item("dl-2")])
        .send()
        .await?;
    let sequence_numbers = sequence_numbers(system).await?;
    let parked_ids = ["dl-1", "dl-2"];
    let wanted: Vec<&String> = parked_ids
        .iter()
        .map(|id| sequence_numbers.get(*id).context("record in the stream"))
        .collect::<anyhow::Result<_>>()?;

    let sqs = system.aws.sqs();
    let mut messages: Vec<Value> = Vec::new();
    let started = Instant::now();
    let covered = |messages: &[Value], seq: &str| {
        messages.iter().any(|message| {
            let batch = &message["DDBStreamBatchInfo"];
            batch["startSequenceNumber"] == seq && batch["endSequenceNumber"] == seq
        })
    };
    while !wanted.iter().all(|seq| covered(&messages, seq)) {
        ensure!(
            started.elapsed() < PATIENCE * 3,
            "not parked: {wanted:?}; dead-letter queue has {messages:?}"
        );
        let received = sqs
            .receive_message()
            .queue_url(&system.stack.dead_letter_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for message in received.messages() {
            messages.push(serde_json::from_str(message.body().unwrap_or_default())?);
        }
    }

    for seq in &wanted {
        let message = messages
            .iter()
            .find(|message| message["DDBStreamBatchInfo"]["startSequenceNumber"] == seq.as_str())
            .context("message")?;
        // Written as one batch of two, parked one by one: the batch was bisected to the record.
        assert_eq!(message["DDBStreamBatchInfo"]["batchSize"], 1, "{message}");
        assert_eq!(
            message["DDBStreamBatchInfo"]["streamArn"],
            system.stack.users_stream_arn.as_str()
        );
        let context = &message["requestContext"];
        assert_eq!(context["condition"], "RetryAttemptsExhausted", "{message}");
        assert_eq!(
            context["approximateInvokeCount"], 2,
            "the first try and one retry: {message}"
        );
        assert!(
            context["functionArn"]
                .as_str()
                .is_some_and(|arn| arn.starts_with("arn:aws:lambda:") && arn.ends_with(":function:stream-relay")),
            "{message}"
        );
        assert_eq!(message["responseContext"]["functionError"], "Unhandled", "{message}");
        assert_eq!(message["version"], "1.0");
    }
    let event_source_log = std::fs::read_to_string(system.logs_dir().join("event-source.log"))?;
    assert!(
        event_source_log.contains("bisecting the batch"),
        "the mapping bisected the failing batch"
    );

    // Healed: the shard moved on past the parked records, and changes flow again.
    proxy.switch_on();
    system.heartbeat.as_ref().context("heartbeat writer")?.resume();
    system.until_quiescent().await?;
    let alice = system.token("alice", &["Staff"]);
    system
        .rename_everywhere("alice", &alice, "Alice After The Park")
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_function_runs_with_the_template_environment_and_answers_lambda_s_invoke_api() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let result = async {
        // The binary read its configuration from the variables the template sets, and the seed
        // and the heartbeats reached it as invocations.
        let ready = system.relay_ready_line()?;
        let sources = ready["sources"].as_str().unwrap_or_default();
        assert_eq!(
            sources,
            format!(
                "users={} (PK USER#…, id attribute userId, ignores lastLoginAt), roles={} (PK ROLE#…, ignores lastLoginAt)",
                system.stack.users_table, system.stack.roles_table
            ),
            "the template's RELAY_SOURCES, tables and RelayIgnoredAttributes"
        );
        anyhow::Ok(())
    }
    .await;
    system.stop().await;
    result
}
