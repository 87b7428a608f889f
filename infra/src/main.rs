//! `infra`: runs and provisions the local AWS for staleless.
//!
//! `infra up` starts moto server, provisions the stack from `template.yaml` and runs until
//! Ctrl-C; `infra provision` provisions into an emulator that is already running;
//! `infra check-template` reads the template and lists what the local stack would create.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use infra::provision::Provisioned;
use infra::{Emulator, sdk_config_for, template};

#[derive(Parser)]
#[command(name = "infra", about = "The local AWS for staleless")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the emulator, provision the stack and run until Ctrl-C.
    Up {
        /// Loopback port of the emulator.
        #[arg(long, env = "EMULATOR_PORT", default_value_t = 4566)]
        port: u16,
        /// `NamePrefix` of every table, topic and queue.
        #[arg(long, env = "NAME_PREFIX", default_value = "staleless")]
        prefix: String,
        /// Where logs and `stack.env` go (default: `.local/` in the repository).
        #[arg(long, env = "STALELESS_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Provision the stack into an emulator that is already running.
    Provision {
        /// The emulator's endpoint.
        #[arg(long, env = "AWS_ENDPOINT_URL", default_value = "http://127.0.0.1:4566")]
        endpoint: String,
        /// `NamePrefix` of every table, topic and queue.
        #[arg(long, env = "NAME_PREFIX", default_value = "staleless")]
        prefix: String,
    },
    /// Read the template and print what the local stack would create.
    CheckTemplate {
        /// The template to read (default: the repository's template.yaml).
        #[arg(long)]
        template: Option<PathBuf>,
        /// `NamePrefix` of every table, topic and queue.
        #[arg(long, env = "NAME_PREFIX", default_value = "staleless")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,infra=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming the problem: the chain of causes joined, no backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn parameters(prefix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("NamePrefix".to_owned(), prefix.to_owned())])
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckTemplate { template: path, prefix } => {
            let path = path.unwrap_or_else(template::default_template_path);
            let spec = template::load(&path, &parameters(&prefix))?;
            for table in &spec.tables {
                println!(
                    "table {} ({}): stream {}, indexes [{}]",
                    table.name,
                    table.logical_id,
                    table.stream_view_type.as_deref().unwrap_or("none"),
                    table.indexes.iter().map(|index| index.name.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            for topic in &spec.topics {
                println!("topic {} ({})", topic.name, topic.logical_id);
            }
            for queue in &spec.queues {
                println!("queue {} ({})", queue.name, queue.logical_id);
            }
            Ok(())
        }
        Command::Provision { endpoint, prefix } => {
            let stack = provision(&endpoint, &prefix).await?;
            print_stack(&endpoint, &stack);
            Ok(())
        }
        Command::Up { port, prefix, state_dir } => {
            let state_dir = state_dir.unwrap_or_else(|| infra::emulator::project_root().join(".local"));
            up(port, &prefix, &state_dir).await
        }
    }
}

async fn provision(endpoint: &str, prefix: &str) -> anyhow::Result<Provisioned> {
    let spec = template::load(&template::default_template_path(), &parameters(prefix))?;
    Ok(infra::provision::provision(&sdk_config_for(endpoint), &spec, prefix).await?)
}

fn print_stack(endpoint: &str, stack: &Provisioned) {
    println!("AWS_ENDPOINT_URL={endpoint}");
    println!("AWS_REGION={}", infra::local_aws::LOCAL_REGION);
    println!("USERS_TABLE={}", stack.users_table);
    println!("ROLES_TABLE={}", stack.roles_table);
    println!("INVALIDATION_TOPIC_ARN={}", stack.topic_arn);
    println!("QUEUE_NAME_PREFIX={}", stack.task_queue_prefix);
}

async fn up(port: u16, prefix: &str, state_dir: &std::path::Path) -> anyhow::Result<()> {
    let logs = state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log = logs.join("emulator.log");
    let mut emulator = tokio::task::spawn_blocking(move || Emulator::start(port, Some(&log)))
        .await
        .context("emulator start was interrupted")??;
    let endpoint = emulator.endpoint();
    let stack = provision(&endpoint, prefix).await?;

    let env_file = state_dir.join("stack.env");
    let exports = format!(
        "export AWS_ENDPOINT_URL={endpoint}\nexport AWS_REGION={}\nexport AWS_ACCESS_KEY_ID=staleless\nexport AWS_SECRET_ACCESS_KEY=staleless\nexport USERS_TABLE={}\nexport ROLES_TABLE={}\nexport INVALIDATION_TOPIC_ARN={}\nexport QUEUE_NAME_PREFIX={}\n",
        infra::local_aws::LOCAL_REGION,
        stack.users_table,
        stack.roles_table,
        stack.topic_arn,
        stack.task_queue_prefix
    );
    std::fs::write(&env_file, exports).with_context(|| format!("cannot write {}", env_file.display()))?;

    println!("staleless local stack is up");
    println!("  emulator   {endpoint}  (moto server, log: {})", logs.join("emulator.log").display());
    println!("  tables     {} (stream {})", stack.users_table, stack.users_stream_arn);
    println!("             {} (stream {})", stack.roles_table, stack.roles_stream_arn);
    println!("  topic      {}", stack.topic_arn);
    println!("  env        source {}  to point the AWS CLI or SDK at it", env_file.display());
    println!("Press Ctrl-C to stop.");

    shutdown_signal().await;
    emulator.stop();
    println!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
