//! The `infra` commands that run things: the whole local system (`up`), the relay process
//! (`relay`), tokens (`token`) and the consistency check (`check-consistency`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use infra::consistency::{self, CheckTarget, KeyKind};
use infra::event_source::{self, EventSourceOptions};
use infra::jwt::LocalJwt;
use infra::provision::Provisioned;
use infra::system::{self, ApiTask, Component};
use infra::{LocalAws, LocalStack};
use staleless_consumer::shutdown_signal;
use staleless_protocol::keys;
use tokio_util::sync::CancellationToken;

use crate::Target;

/// A cold API task loads its JWKS, creates its queue and subscribes it before `/ready`.
const API_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What `infra up` runs.
pub struct UpOptions {
    /// Emulator port.
    pub port: u16,
    /// `NamePrefix`.
    pub prefix: String,
    /// Logs, key pair, checkpoints, `stack.env`.
    pub state_dir: PathBuf,
    /// (name, bind address) of each API task.
    pub api_binds: Vec<(String, String)>,
    /// Where the example service binds.
    pub example_bind: String,
    /// Where the FastAPI example (the Python package's) binds.
    pub py_example_bind: String,
}

/// Runs the whole local system until Ctrl-C or SIGTERM, then stops it in order: API tasks first
/// (they unsubscribe and delete their queues), then the heartbeat writer and the relay, then the
/// emulator.
pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    // Handlers first: a Ctrl-C at any moment from here on stops the stack in order.
    let shutdown = shutdown_signal();
    let logs = options.state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let emulator_log = logs.join("emulator.log");
    let port = options.port;
    let aws = tokio::task::spawn_blocking(move || LocalAws::start_on(port, Some(&emulator_log)))
        .await
        .context("emulator start was interrupted")??;
    let mut local = LocalStack::seeded(aws, None, Some(&options.prefix), Some(options.state_dir.clone())).await?;
    let (endpoint, stack) = (local.aws.endpoint().to_owned(), local.stack.clone());

    let local_jwt = LocalJwt::load_or_generate(&local.key_dir()).context("cannot prepare the local JWT key pair")?;
    let env_file = options.state_dir.join("stack.env");
    system::write_stack_env(&env_file, &endpoint, &stack)
        .with_context(|| format!("cannot write {}", env_file.display()))?;

    let bin_dir = system::binaries_dir();
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let env = local.component_env(&rust_log);

    let checkpoint_dir = options.state_dir.join("checkpoints").join(&stack.prefix);
    let template = infra::template::default_template_path();
    let relay = system::start_relay(system::RelaySetup {
        bin_dir: &bin_dir,
        template: &template,
        stack: &stack,
        env: &env,
        checkpoint_dir: &checkpoint_dir,
        logs: &logs,
        function: system::FunctionProgram::from_env(&bin_dir),
    })
    .await?;
    let spawner = relay.spawner.clone();
    // Serves the function until this command ends.
    let _runtime_api = relay.runtime_api;
    // Stopped in reverse: the mapping stops invoking before the function and Lambda go.
    let mut pipeline = vec![relay.lambda, relay.function, relay.event_source];
    let others = [
        system::start_heartbeat(&bin_dir, &template, &stack, &env, &logs.join("heartbeat.log")),
        system::start_queue_sweeper(&bin_dir, &env, &logs.join("queue-sweeper.log")),
    ];
    for component in others {
        match component {
            Ok(component) => pipeline.push(component),
            Err(err) => {
                stop_all(&mut [], &mut pipeline, &mut local.aws).await;
                return Err(err.into());
            }
        }
    }
    let mut tasks = Vec::new();
    for (name, bind) in &options.api_binds {
        let log = logs.join(format!("{name}.log"));
        match ApiTask::start(name, &bin_dir, bind, &env, &log, API_READY_TIMEOUT).await {
            Ok(task) => tasks.push(task),
            Err(err) => {
                stop_all(&mut tasks, &mut pipeline, &mut local.aws).await;
                return Err(err.into());
            }
        }
    }

    let example_log = logs.join(format!("{}.log", system::EXAMPLE_NAME));
    let py_example_log = logs.join(format!("{}.log", system::PY_EXAMPLE_NAME));
    let examples = [
        ApiTask::start_example(&bin_dir, &options.example_bind, &env, &example_log, API_READY_TIMEOUT).await,
        ApiTask::start_py_example(&options.py_example_bind, &env, &py_example_log, API_READY_TIMEOUT).await,
    ];
    for example in examples {
        match example {
            Ok(example) => tasks.push(example),
            Err(err) => {
                stop_all(&mut tasks, &mut pipeline, &mut local.aws).await;
                return Err(err.into());
            }
        }
    }

    print_banner(&endpoint, &stack, &tasks, &pipeline, &logs, &env_file, &local_jwt);

    tokio::select! {
        () = shutdown => {}
        failed = watch_children(&mut tasks, &mut pipeline, &spawner) => {
            eprintln!("error: {failed}; stopping the local stack");
        }
    }
    println!(
        "stopping: API tasks (deleting their queues), queue sweeper, heartbeat writer, relay (event source, function, Lambda), emulator"
    );
    stop_all(&mut tasks, &mut pipeline, &mut local.aws).await;
    println!("stopped");
    Ok(())
}

/// Resolves when a child exits on its own, naming it. A relay function that exits (killed, or
/// crashed) is replaced by a new one, as Lambda starts a new execution environment.
async fn watch_children(
    tasks: &mut [ApiTask],
    pipeline: &mut [Component],
    spawner: &system::FunctionSpawner,
) -> String {
    loop {
        for component in pipeline.iter_mut() {
            if component.name() == "relay"
                && let Some(status) = component.exited()
            {
                eprintln!("the relay function exited ({status}); starting a new execution environment");
                match spawner.start() {
                    Ok(function) => *component = function,
                    Err(err) => return format!("cannot restart the relay function: {err}"),
                }
                continue;
            }
            if let Some(status) = component.exited() {
                return format!(
                    "the {} exited ({status}), see {}",
                    component.name(),
                    component.log().display()
                );
            }
        }
        for task in tasks.iter_mut() {
            if let Some(status) = task.process.exited() {
                return format!(
                    "{} exited ({status}), see {}",
                    task.process.name(),
                    task.process.log().display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops the API tasks (they unsubscribe and delete their queues), then the pipeline's processes
/// in reverse start order, then the emulator.
async fn stop_all(tasks: &mut [ApiTask], pipeline: &mut [Component], emulator: &mut LocalAws) {
    futures::future::join_all(tasks.iter_mut().map(|task| task.process.stop())).await;
    for component in pipeline.iter_mut().rev() {
        component.stop().await;
    }
    emulator.stop();
}

fn print_banner(
    endpoint: &str,
    stack: &Provisioned,
    tasks: &[ApiTask],
    pipeline: &[Component],
    logs: &Path,
    env_file: &Path,
    local_jwt: &LocalJwt,
) {
    let token = local_jwt.mint(
        "alice",
        Some(&["Staff"]),
        "alice@example.com",
        "Alice",
        Duration::from_secs(12 * 3600),
    );
    println!();
    println!("staleless local stack is up");
    println!(
        "  emulator      {endpoint}  (moto server; log {})",
        logs.join("emulator.log").display()
    );
    println!("  tables        {}, {}", stack.users_table, stack.roles_table);
    println!("  topic         {}", stack.topic_arn);
    for component in pipeline {
        let role = match component.name() {
            "lambda" => "the local Lambda (cargo lambda watch): Runtime and Invoke APIs",
            "relay" => "the stream-relay Lambda binary, invoked by the event source",
            "event source" => {
                "streams -> Invoke(stream-relay) as Lambda's event source mapping; give-ups -> the topic (and the DLQ)"
            }
            "heartbeat" => "a heartbeat into each table every HEARTBEAT_INTERVAL_SECS; back to every task as ticks",
            _ => "removes queues and subscriptions of crashed tasks every SWEEP_INTERVAL_SECS",
        };
        println!("  {:<13} {role}  (log {})", component.name(), component.log().display());
    }
    for task in tasks {
        let what = match task.process.name() {
            system::EXAMPLE_NAME => "  GET /profiles/{user_id}: a service on the consumer crate alone",
            system::PY_EXAMPLE_NAME => "  GET /profiles/{user_id}: a FastAPI service on the Python package (python/)",
            _ => "",
        };
        println!(
            "  {:<13} {}{what}  (log {})",
            task.process.name(),
            task.base_url,
            task.process.log().display()
        );
    }
    println!(
        "  env           source {}  points the AWS CLI or SDK at the emulator",
        env_file.display()
    );
    println!("  demo data     roles system_admin (IdP Admin), staff (IdP Staff), default; users alice, admin");
    println!();
    println!("Watch a change made outside the API reach both tasks:");
    println!();
    println!("  export TOKEN={token}");
    let url_of = |name: &str| {
        tasks
            .iter()
            .find(|task| task.process.name() == name)
            .map_or("", |task| task.base_url.as_str())
    };
    let (example, py_example) = (url_of(system::EXAMPLE_NAME), url_of(system::PY_EXAMPLE_NAME));
    let tasks: Vec<&ApiTask> = tasks
        .iter()
        .filter(|task| ![system::EXAMPLE_NAME, system::PY_EXAMPLE_NAME].contains(&task.process.name()))
        .collect();
    let (first, second) = match tasks.as_slice() {
        [first, second, ..] => (first.base_url.as_str(), second.base_url.as_str()),
        [only] => (only.base_url.as_str(), only.base_url.as_str()),
        [] => ("", ""),
    };
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {first}/users/me; echo; curl -s -H \"Authorization: Bearer $TOKEN\" {second}/users/me; echo"
    );
    println!(
        "  target/debug/infra put-user alice --name \"Alice Liddell\" --endpoint {endpoint} --users-table {}",
        stack.users_table
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" {first}/users/me; echo; curl -s -H \"Authorization: Bearer $TOKEN\" {second}/users/me; echo"
    );
    println!("  curl -s {example}/profiles/alice; echo; curl -s {py_example}/profiles/alice; echo");
    println!();
    println!("More tokens: target/debug/infra token --sub admin --roles Admin");
    println!("  (--roles is the IdP's word: it is authorized and stored on the profile; without it the");
    println!("  token has no roles claim and the roles stored on the profile apply)");
    println!("Press Ctrl-C to stop.");
}

/// Runs the local event source mapping with the relay until Ctrl-C or SIGTERM.
pub async fn relay(
    config: &aws_config::SdkConfig,
    stack: &Provisioned,
    options: EventSourceOptions,
) -> anyhow::Result<()> {
    let options_lambda = options.lambda.as_ref().map(|lambda| lambda.endpoint.clone());
    let shutdown = CancellationToken::new();
    let mut mapping = event_source::spawn(config, stack, options, shutdown.clone());
    tracing::info!(users = %stack.users_table, roles = %stack.roles_table, topic = %stack.topic_arn,
        lambda = options_lambda.as_deref().unwrap_or("in-process"), "event source mapping running");
    tokio::select! {
        () = shutdown_signal() => shutdown.cancel(),
        // The mapping only returns early when it cannot start (template, checkpoint directory).
        finished = &mut mapping => {
            finished.context("the event source mapping panicked")??;
            return Ok(());
        }
    }
    mapping.await.context("the event source mapping panicked")??;
    Ok(())
}

/// Runs the heartbeat writer until Ctrl-C or SIGTERM.
pub async fn heartbeat(
    config: &aws_config::SdkConfig,
    heartbeat: stream_relay::heartbeat::HeartbeatConfig,
) -> anyhow::Result<()> {
    tracing::info!(tables = ?heartbeat.tables, interval_ms = heartbeat.interval.as_millis(), "heartbeat writer running");
    let writer = stream_relay::heartbeat::HeartbeatWriter::on_aws(config, heartbeat);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    let run = writer.run_for(None, &shutdown).await;
    tracing::info!(written = run.written, failed = run.failed, "heartbeat writer stopped");
    Ok(())
}

/// Mints a token with the local key pair (generated on first use).
pub fn token(
    state_dir: &Path,
    sub: &str,
    roles: Option<&[String]>,
    email: Option<String>,
    name: Option<String>,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let local_jwt =
        LocalJwt::load_or_generate(&state_dir.join("jwt")).context("cannot prepare the local JWT key pair")?;
    let roles: Option<Vec<&str>> = roles.map(|roles| {
        roles
            .iter()
            .map(String::as_str)
            .filter(|role| !role.is_empty())
            .collect()
    });
    let email = email.unwrap_or_else(|| format!("{sub}@example.com"));
    let name = name.unwrap_or_else(|| sub.to_owned());
    Ok(local_jwt.mint(sub, roles.as_deref(), &email, &name, Duration::from_secs(ttl_secs)))
}

/// Samples user and role ids from the tables, checks them on every task and prints the report.
/// Returns whether every key became consistent within the patience.
pub async fn check_consistency(
    target: &Target,
    state_dir: &Path,
    tasks: Vec<String>,
    admin_user: &str,
    users: usize,
    roles: usize,
    patience: Duration,
) -> anyhow::Result<bool> {
    let dynamodb = target.dynamodb();
    let mut keys = Vec::new();
    keys.extend(
        sample_ids(
            &dynamodb,
            &target.users_table,
            keys::USER_PK_PREFIX,
            keys::PROFILE_SK,
            users,
        )
        .await?
        .into_iter()
        .map(|id| (KeyKind::User, id)),
    );
    keys.extend(
        sample_ids(
            &dynamodb,
            &target.roles_table,
            keys::ROLE_PK_PREFIX,
            keys::DEFINITION_SK,
            roles,
        )
        .await?
        .into_iter()
        .map(|id| (KeyKind::Role, id)),
    );
    // No roles claim: the check must not change the data it checks (a claim would be stored on
    // the profile), so admin rights come from the stored roles of a real admin.
    let admin_token = token(state_dir, admin_user, None, None, None, 3600)?;
    let check_target = CheckTarget {
        tasks,
        admin_token,
        users_table: target.users_table.clone(),
        roles_table: target.roles_table.clone(),
        patience,
    };
    let report = consistency::check(&dynamodb, &reqwest::Client::new(), &check_target, &keys).await?;
    println!(
        "checked {} (key, task) pairs over {} tasks: inconsistent at first read {} (ratio {:.4}), never consistent {}, worst staleness {} ms",
        report.checked,
        check_target.tasks.len(),
        report.inconsistent_at_first,
        report.inconsistency_ratio(),
        report.never_consistent,
        report.worst_staleness.as_millis()
    );
    for stale in &report.stale {
        println!(
            "  {:?} {} on {}: {} ms{}",
            stale.kind,
            stale.id,
            stale.task,
            stale.staleness.as_millis(),
            if stale.never_consistent {
                " (never consistent)"
            } else {
                ""
            }
        );
    }
    Ok(report.never_consistent == 0)
}

/// Up to `limit` ids (0: all) of items whose `PK` starts with `prefix` and whose `SK` is `sort_key`.
async fn sample_ids(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    sort_key: &str,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    use aws_sdk_dynamodb::types::AttributeValue;

    let mut ids = Vec::new();
    let mut pages = dynamodb
        .scan()
        .table_name(table)
        .filter_expression("begins_with(PK, :prefix) AND SK = :sk")
        .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
        .expression_attribute_values(":sk", AttributeValue::S(sort_key.to_owned()))
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.with_context(|| format!("cannot scan {table}"))?;
        if let Some(id) = item
            .get("PK")
            .and_then(|pk| pk.as_s().ok())
            .and_then(|pk| pk.strip_prefix(prefix))
        {
            ids.push(id.to_owned());
        }
        if limit > 0 && ids.len() >= limit {
            break;
        }
    }
    Ok(ids)
}
