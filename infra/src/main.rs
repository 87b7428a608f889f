//! `infra`: runs and provisions the local AWS for staleless.
//!
//! `infra up` runs the whole local system until Ctrl-C: moto server, the stack provisioned from
//! `template.yaml`, demo data, the relay and two API tasks. The other commands serve operators
//! and tests: `token`, `put-user`, `delete-user`, `set-role` (straight to the tables, no API),
//! `check-consistency`, `relay`, `provision` and `check-template`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infra::provision::Provisioned;
use infra::{operator, sdk_config_for, template};

mod commands;

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
        /// Where logs, the JWT key pair, checkpoints and `stack.env` go (default: `.local/`).
        #[arg(long, env = "STALELESS_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Address of API task A.
        #[arg(long, env = "API_A_ADDR", default_value = "127.0.0.1:8081")]
        api_a: String,
        /// Address of API task B.
        #[arg(long, env = "API_B_ADDR", default_value = "127.0.0.1:8082")]
        api_b: String,
        /// Address of the example service (a service on the consumer crate alone).
        #[arg(long, env = "EXAMPLE_ADDR", default_value = "127.0.0.1:8083")]
        example: String,
        /// Address of the FastAPI example (a Python service on the package in `python/`).
        #[arg(long, env = "PY_EXAMPLE_ADDR", default_value = "127.0.0.1:8084")]
        py_example: String,
    },
    /// Run the local event source mapping (what Lambda does on AWS): invoke the relay function
    /// through the local Lambda with `--invoke-endpoint`, else the relay library in-process.
    ///
    /// AWS settings come from the environment like every other binary here (`AWS_ENDPOINT_URL`,
    /// per-service `AWS_ENDPOINT_URL_SNS`…, `AWS_REGION`, credentials): `source .local/stack.env`.
    Relay {
        /// `NamePrefix` of the stack whose streams are read.
        #[arg(long, env = "NAME_PREFIX", default_value = "staleless")]
        prefix: String,
        /// Where per-shard checkpoints are kept, so a restart resumes where it stopped.
        #[arg(long, env = "RELAY_CHECKPOINT_DIR", default_value = ".local/checkpoints")]
        checkpoint_dir: PathBuf,
        /// Pause after an empty poll of a shard, in milliseconds (20: write → queue p99 under 50 ms).
        #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 20)]
        poll_interval_ms: u64,
        /// Lambda API to invoke the relay function through (the local Lambda, `cargo lambda
        /// watch`); without it the relay library runs in this process.
        #[arg(long, env = "RELAY_INVOKE_ENDPOINT")]
        invoke_endpoint: Option<String>,
        /// `FunctionName` of the invocations.
        #[arg(long, env = "RELAY_FUNCTION_NAME", default_value = infra::system::RELAY_FUNCTION_NAME)]
        function_name: String,
        /// The function's timeout in seconds, when not the template's `Timeout`.
        #[arg(long, env = "RELAY_FUNCTION_TIMEOUT_SECS")]
        function_timeout_secs: Option<u64>,
    },
    /// Write a heartbeat into both tables every interval until Ctrl-C: the same writer the
    /// scheduled Lambda runs on AWS. Its items come back to every API task as ticks.
    ///
    /// Tables come from `USERS_TABLE` and `ROLES_TABLE` (`source .local/stack.env`).
    Heartbeat {
        /// Seconds between beats (at most a third of the tasks' `STALENESS_BOUND_SECS`).
        #[arg(long, env = "HEARTBEAT_INTERVAL_SECS", default_value_t = 5.0)]
        interval_secs: f64,
    },
    /// Print a bearer token the local stack accepts.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Identity-provider roles, comma-separated, carried as the `custom:roles` claim (the
        /// IdP's word: the API authorizes with them and stores them on the profile). Without
        /// it the token has no roles claim and the API uses the profile's stored roles.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// `email` claim (default `<sub>@example.com`).
        #[arg(long)]
        email: Option<String>,
        /// `name` claim (default the user id).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_secs: u64,
        /// Where the local key pair lives (default: `.local/`).
        #[arg(long, env = "STALELESS_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Compare what every API task serves with DynamoDB (ConsistentRead) and report staleness.
    CheckConsistency {
        #[command(flatten)]
        target: Target,
        /// Base URLs of the API tasks.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "http://127.0.0.1:8081,http://127.0.0.1:8082"
        )]
        tasks: Vec<String>,
        /// A user whose profile holds the IdP role `Admin` (the demo data's `admin`).
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// How many user ids to sample (0: all).
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// How many role ids to sample (0: all).
        #[arg(long, default_value_t = 50)]
        roles: usize,
        /// How long a disagreeing task may take to agree, in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        patience_ms: u64,
        /// Where the local key pair lives (default: `.local/`).
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
    /// Create a user or change fields of their profile, straight in the users table (no API).
    PutUser {
        /// The user id (`USER#<id>` / `PROFILE`).
        user_id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Identity-provider roles, comma-separated (`Staff,Admin`).
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// `active`, `inactive` or `suspended`.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user's profile item, straight in the users table (no API).
    DeleteUser {
        /// The user id.
        user_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change fields of an AppRole definition, straight in the roles table (no API).
    SetRole {
        /// The role id (`ROLE#<id>` / `DEFINITION`).
        role_id: String,
        /// Granted tools, comma-separated (`*` = all).
        #[arg(long, value_delimiter = ',')]
        tools: Option<Vec<String>>,
        /// Granted models, comma-separated (`*` = all).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Granted skills, comma-separated (`*` = all).
        #[arg(long, value_delimiter = ',')]
        skills: Option<Vec<String>>,
        /// Priority, 0–999.
        #[arg(long)]
        priority: Option<u16>,
        /// Enable or disable the role.
        #[arg(long)]
        enabled: Option<bool>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        target: Target,
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

/// Which stack an operator command writes to.
#[derive(clap::Args)]
pub struct Target {
    /// The AWS endpoint (the local emulator by default).
    #[arg(long, env = "AWS_ENDPOINT_URL", default_value = "http://127.0.0.1:4566")]
    pub endpoint: String,
    /// The users table.
    #[arg(long, env = "USERS_TABLE", default_value = staleless_protocol::keys::DEFAULT_USERS_TABLE)]
    pub users_table: String,
    /// The app-roles table.
    #[arg(long, env = "ROLES_TABLE", default_value = staleless_protocol::keys::DEFAULT_ROLES_TABLE)]
    pub roles_table: String,
}

impl Target {
    /// A DynamoDB client for the target endpoint.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&sdk_config_for(&self.endpoint))
    }
}

/// Text logs on a terminal; JSON lines (`LOG_FORMAT=json`, as the supervised relay uses) for
/// files and log shippers.
fn init_tracing() {
    use std::io::IsTerminal as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,infra=info,stream_relay=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    init_tracing();
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckTemplate { template: path, prefix } => {
            let path = path.unwrap_or_else(template::default_template_path);
            let spec = template::load_for(&path, &prefix)?;
            for table in &spec.tables {
                println!(
                    "table {} ({}): stream {}, indexes [{}]",
                    table.name,
                    table.logical_id,
                    table.stream_view_type.as_deref().unwrap_or("none"),
                    table
                        .indexes
                        .iter()
                        .map(|index| index.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
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
            let stack = infra::LocalAws::external(&endpoint).provision(&prefix).await?;
            print_stack(&endpoint, &stack);
            Ok(())
        }
        Command::PutUser {
            user_id,
            name,
            email,
            roles,
            status,
            target,
        } => {
            let change = operator::UserChange {
                name,
                email,
                roles,
                status,
            };
            operator::put_user(&target.dynamodb(), &target.users_table, &user_id, &change).await?;
            println!("user {user_id} written to {}", target.users_table);
            Ok(())
        }
        Command::DeleteUser { user_id, target } => {
            operator::delete_user(&target.dynamodb(), &target.users_table, &user_id).await?;
            println!("user {user_id} deleted from {}", target.users_table);
            Ok(())
        }
        Command::SetRole {
            role_id,
            tools,
            models,
            skills,
            priority,
            enabled,
            description,
            target,
        } => {
            let change = operator::RolePatch {
                granted_tools: tools,
                granted_models: models,
                granted_skills: skills,
                priority,
                enabled,
                description,
                ..operator::RolePatch::default()
            };
            operator::update_role(&target.dynamodb(), &target.roles_table, &role_id, &change).await?;
            println!("role {role_id} updated in {}", target.roles_table);
            Ok(())
        }
        Command::Up {
            port,
            prefix,
            state_dir,
            api_a,
            api_b,
            example,
            py_example,
        } => {
            let options = commands::UpOptions {
                port,
                prefix,
                state_dir: state_dir_or_default(state_dir),
                api_binds: vec![("api-a".to_owned(), api_a), ("api-b".to_owned(), api_b)],
                example_bind: example,
                py_example_bind: py_example,
            };
            commands::up(options).await
        }
        Command::Relay {
            prefix,
            checkpoint_dir,
            poll_interval_ms,
            invoke_endpoint,
            function_name,
            function_timeout_secs,
        } => {
            let config = stream_relay::aws_config_with_timeouts().await;
            let spec = template::load_for(&template::default_template_path(), &prefix)?;
            // Idempotent: finds the stack's stream ARNs (and creates what is missing).
            let stack = infra::provision::provision(&config, &spec, &prefix).await?;
            let mut options = infra::event_source::EventSourceOptions::new(checkpoint_dir);
            options.poll_interval = std::time::Duration::from_millis(poll_interval_ms);
            options.lambda = invoke_endpoint.map(|endpoint| infra::event_source::LambdaTarget {
                endpoint,
                function_name,
            });
            options.function_timeout = function_timeout_secs.map(std::time::Duration::from_secs);
            commands::relay(&config, &stack, options).await
        }
        Command::Heartbeat { interval_secs } => {
            let config = stream_relay::aws_config_with_timeouts().await;
            let (mut heartbeat, _) =
                stream_relay::heartbeat::HeartbeatConfig::from_lookup(|name| std::env::var(name).ok())
                    .map_err(anyhow::Error::msg)?;
            heartbeat.interval = std::time::Duration::try_from_secs_f64(interval_secs)
                .ok()
                .filter(|interval| !interval.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--interval-secs must be a positive number of seconds"))?;
            commands::heartbeat(&config, heartbeat).await
        }
        Command::Token {
            sub,
            roles,
            email,
            name,
            ttl_secs,
            state_dir,
        } => {
            let token = commands::token(
                &state_dir_or_default(state_dir),
                &sub,
                roles.as_deref(),
                email,
                name,
                ttl_secs,
            )?;
            println!("{token}");
            Ok(())
        }
        Command::CheckConsistency {
            target,
            tasks,
            admin_user,
            users,
            roles,
            patience_ms,
            state_dir,
        } => {
            let healthy = commands::check_consistency(
                &target,
                &state_dir_or_default(state_dir),
                tasks,
                &admin_user,
                users,
                roles,
                std::time::Duration::from_millis(patience_ms),
            )
            .await?;
            if healthy {
                Ok(())
            } else {
                anyhow::bail!("some keys never became consistent")
            }
        }
    }
}

/// Provisions (or finds) the template's stack under `prefix` at `endpoint`.
fn print_stack(endpoint: &str, stack: &Provisioned) {
    println!("AWS_ENDPOINT_URL={endpoint}");
    println!("AWS_REGION={}", infra::local_aws::LOCAL_REGION);
    println!("USERS_TABLE={}", stack.users_table);
    println!("ROLES_TABLE={}", stack.roles_table);
    println!("INVALIDATION_TOPIC_ARN={}", stack.topic_arn);
    println!("QUEUE_NAME_PREFIX={}", stack.task_queue_prefix);
}

fn state_dir_or_default(state_dir: Option<PathBuf>) -> PathBuf {
    state_dir.unwrap_or_else(|| infra::emulator::project_root().join(".local"))
}
