//! The whole local system as separate processes, each with its own log file, all pointed at one
//! emulator and one provisioned stack:
//!
//! - the relay as Lambda runs it: the local Lambda service ([`start_lambda_service`]:
//!   `cargo lambda watch --only-lambda-apis`, Lambda's Runtime and Invoke APIs), the relay's
//!   Lambda binary polling it ([`start_relay_function`], configured from the template's
//!   `Environment`), and the event source mapping invoking it ([`start_event_source`]:
//!   `infra relay --invoke-endpoint`);
//! - the heartbeat writer (`infra heartbeat`), the fleet's queue sweeper (`queue-sweeper`);
//! - any number of API tasks (`staleless-api`).
//!
//! `infra up` uses this for the README's run command and the end-to-end tests use it to run the
//! real binaries, so both exercise exactly the same wiring. Children run in their own process
//! groups: a Ctrl-C in the terminal reaches only the supervisor, which then stops the API tasks
//! first (so they can unsubscribe and delete their queues while the emulator is still up).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::local_aws::LOCAL_REGION;
use crate::provision::Provisioned;

/// How long a stopping process may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Why a process could not be started or did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The binary is missing or could not be executed.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// The component.
        name: String,
        /// The executable.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be created.
    #[error("cannot create log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited or never answered `/ready`.
    #[error("{name} did not become ready: {reason} (log: {log})")]
    NotReady {
        /// The component.
        name: String,
        /// What was seen.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
}

/// The directory holding the workspace's binaries (`target/debug`), found from the running
/// executable: a binary lives there itself, a test binary one level down in `deps/`.
#[must_use]
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The environment every component needs to reach the stack: the standard AWS variables (so
/// `aws-config` finds the emulator) and the names from the template's outputs.
#[must_use]
pub fn stack_env(endpoint: &str, stack: &Provisioned) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", LOCAL_REGION),
        // boto3 and the AWS CLI read this one, not AWS_REGION.
        ("AWS_DEFAULT_REGION", LOCAL_REGION),
        ("AWS_ACCESS_KEY_ID", "staleless"),
        ("AWS_SECRET_ACCESS_KEY", "staleless"),
        ("USERS_TABLE", &stack.users_table),
        ("ROLES_TABLE", &stack.roles_table),
        ("INVALIDATION_TOPIC_ARN", &stack.topic_arn),
        ("QUEUE_NAME_PREFIX", &stack.task_queue_prefix),
        ("NAME_PREFIX", &stack.prefix),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The environment every process of the local system gets: [`stack_env`], the local JWT issuer
/// (its key set in `key_dir`, as [`crate::jwt::LocalJwt`] writes it) and `RUST_LOG`. `infra up`
/// and the end-to-end tests both start their components with it.
#[must_use]
pub fn component_env(endpoint: &str, stack: &Provisioned, key_dir: &Path, rust_log: &str) -> Vec<(String, String)> {
    let mut env = stack_env(endpoint, stack);
    env.extend(
        [
            (
                "JWT_JWKS_FILE",
                key_dir.join(crate::jwt::JWKS_FILE).to_string_lossy().into_owned(),
            ),
            ("JWT_ISSUER", crate::jwt::LOCAL_ISSUER.to_owned()),
            ("JWT_AUDIENCE", crate::jwt::LOCAL_AUDIENCE.to_owned()),
            ("RUST_LOG", rust_log.to_owned()),
        ]
        .map(|(key, value)| (key.to_owned(), value)),
    );
    env
}

/// Writes `.local/stack.env`: [`stack_env`] as `export` lines, so that `source`-ing it points any
/// AWS client at the local stack (the Rust SDK and the AWS CLI v2 read `AWS_REGION` and
/// `AWS_ENDPOINT_URL`; boto3 and the AWS CLI read `AWS_DEFAULT_REGION`).
///
/// # Errors
/// When the file cannot be written.
pub fn write_stack_env(path: &Path, endpoint: &str, stack: &Provisioned) -> std::io::Result<()> {
    let exports: String = stack_env(endpoint, stack)
        .into_iter()
        .map(|(key, value)| format!("export {key}={value}\n"))
        .collect();
    std::fs::write(path, exports)
}

/// A child process of the local system, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Component {
    /// Name in logs and errors (`api-a`, `relay`).
    name: String,
    /// The process; `None` once stopped.
    child: Option<Child>,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

impl Component {
    /// Starts `program` with `args` and `env` (added to this process's environment, minus any
    /// `AWS_PROFILE` that could point it at a real account), output appended to `log`.
    ///
    /// # Errors
    /// [`SystemError::Log`] or [`SystemError::Spawn`].
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, SystemError> {
        use std::os::unix::process::CommandExt as _;

        let log_error = |source| SystemError::Log {
            path: log.to_path_buf(),
            source,
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(log_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(log_error)?;
        let copy = file.try_clone().map_err(log_error)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(copy))
            .process_group(0)
            .spawn()
            .map_err(|source| SystemError::Spawn {
                name: name.to_owned(),
                program: program.to_path_buf(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The component's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    #[must_use]
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The OS process id while running.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(err)) => Some(err.to_string()),
            None => Some("stopped".to_owned()),
        }
    }

    /// Pauses the process (SIGSTOP), as a hung process would be: alive, silent.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.as_ref().and_then(|child| i32::try_from(child.id()).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Asks the process to stop (SIGTERM; SIGCONT first, in case it is paused) and waits for
    /// it, killing it after a grace period. Returns whether it exited on its own.
    pub async fn stop(&mut self) -> bool {
        self.resume();
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        // Drop cannot wait asynchronously: a process still running here is killed outright.
        self.kill();
    }
}

/// The example service's name among the tasks.
pub const EXAMPLE_NAME: &str = "example";

/// The FastAPI example's name among the tasks (a Python service on `python/`).
pub const PY_EXAMPLE_NAME: &str = "py-example";

/// The Python that runs the FastAPI example: `STALELESS_PYTHON`, else the project virtualenv's
/// (`scripts/run` and `scripts/test` install the package's requirements into it), else
/// `python3` on `PATH`.
#[must_use]
pub fn python_program() -> PathBuf {
    if let Some(explicit) = std::env::var_os("STALELESS_PYTHON") {
        return PathBuf::from(explicit);
    }
    let venv = crate::emulator::project_root().join(".venv").join("bin").join("python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// One API task (or the example service): its process and where it serves.
#[derive(Debug)]
pub struct ApiTask {
    /// The process.
    pub process: Component,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

impl ApiTask {
    /// Starts `<bin_dir>/staleless-api` bound to `bind`, with the stack's environment plus
    /// `extra_env` (JWT settings, cache mode…), and waits until `/ready` answers 200.
    ///
    /// # Errors
    /// [`SystemError`] when it cannot start or is not ready within `ready_timeout`.
    pub async fn start(
        name: &str,
        bin_dir: &Path,
        bind: &str,
        env: &[(String, String)],
        log: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, SystemError> {
        Self::start_program(
            name,
            &bin_dir.join("staleless-api"),
            &[],
            ("BIND_ADDR", bind),
            env,
            log,
            ready_timeout,
        )
        .await
    }

    /// Starts `<bin_dir>/staleless-example` (a service that uses the consumer crate alone) bound
    /// to `bind` (`EXAMPLE_ADDR`), with the stack's environment, and waits until `/ready`
    /// answers 200.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_example(
        bin_dir: &Path,
        bind: &str,
        env: &[(String, String)],
        log: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, SystemError> {
        let program = bin_dir.join("staleless-example");
        Self::start_program(
            EXAMPLE_NAME,
            &program,
            &[],
            ("EXAMPLE_ADDR", bind),
            env,
            log,
            ready_timeout,
        )
        .await
    }

    /// Starts the FastAPI example (`python -m examples.fastapi_profiles`, the package and the example
    /// from this repository's `python/`) bound to `bind` (`PY_EXAMPLE_ADDR`), with the stack's
    /// environment, and waits until `/ready` answers 200.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_py_example(
        bind: &str,
        env: &[(String, String)],
        log: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, SystemError> {
        let python = crate::emulator::project_root().join("python");
        let path = std::env::join_paths([python.join("src"), python.clone()])
            .map_or_else(|_| String::new(), |path| path.to_string_lossy().into_owned());
        let mut env = env.to_vec();
        env.push(("PYTHONPATH".to_owned(), path));
        env.push(("PYTHONUNBUFFERED".to_owned(), "1".to_owned()));
        Self::start_program(
            PY_EXAMPLE_NAME,
            &python_program(),
            &["-m", "examples.fastapi_profiles"],
            ("PY_EXAMPLE_ADDR", bind),
            &env,
            log,
            ready_timeout,
        )
        .await
    }

    async fn start_program(
        name: &str,
        program: &Path,
        args: &[&str],
        (bind_variable, bind): (&str, &str),
        env: &[(String, String)],
        log: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, SystemError> {
        let mut env = env.to_vec();
        env.push((bind_variable.to_owned(), bind.to_owned()));
        let process = Component::spawn(name, program, args, &env, log)?;
        let mut task = Self {
            process,
            base_url: format!("http://{bind}"),
        };
        task.wait_ready(ready_timeout).await?;
        Ok(task)
    }

    /// Waits until `/ready` answers 200.
    ///
    /// # Errors
    /// [`SystemError::NotReady`] when the process exits or the timeout passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), SystemError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/ready", self.base_url);
        loop {
            if let Some(status) = self.process.exited() {
                return Err(self.not_ready(format!("exited with {status}")));
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("{url} not 200 after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn not_ready(&self, reason: String) -> SystemError {
        SystemError::NotReady {
            name: self.process.name().to_owned(),
            reason,
            log: self.process.log().to_path_buf(),
        }
    }
}

/// Name of the relay function in the local Lambda: its binary, which `cargo lambda watch` serves
/// under `/2015-03-31/functions/stream-relay/invocations`.
pub const RELAY_FUNCTION_NAME: &str = "stream-relay";

/// How long a local Lambda service may take to listen.
const LAMBDA_SERVICE_START: Duration = Duration::from_secs(30);

/// The relay's Lambda binary and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProgram {
    /// The executable: `target/debug/stream-relay`, or a `bootstrap` built for Lambda.
    pub program: PathBuf,
    /// Runs it through this first (e.g. `qemu-aarch64-static -L <sysroot>` for an arm64
    /// `bootstrap` on an x86-64 machine); empty to run it directly.
    pub launcher: Vec<String>,
}

impl FunctionProgram {
    /// `RELAY_FUNCTION_BINARY` when set (with `RELAY_FUNCTION_LAUNCHER`, space-separated), else
    /// `<bin_dir>/stream-relay`: the same `main.rs` the deployed `bootstrap` is built from.
    #[must_use]
    pub fn from_env(bin_dir: &Path) -> Self {
        let program =
            std::env::var_os("RELAY_FUNCTION_BINARY").map_or_else(|| bin_dir.join("stream-relay"), PathBuf::from);
        let launcher = std::env::var("RELAY_FUNCTION_LAUNCHER")
            .map(|text| text.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Self { program, launcher }
    }
}

/// The `cargo-lambda` executable: `CARGO_LAMBDA`, else the project virtualenv's (installed by
/// `scripts/run` and `scripts/test`), else the one on `PATH`.
#[must_use]
pub fn cargo_lambda_program() -> PathBuf {
    if let Some(explicit) = std::env::var_os("CARGO_LAMBDA") {
        return PathBuf::from(explicit);
    }
    let venv = crate::emulator::project_root()
        .join(".venv")
        .join("bin")
        .join("cargo-lambda");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("cargo-lambda")
    }
}

/// Starts the local Lambda service: `cargo lambda watch --only-lambda-apis` on `127.0.0.1:port`,
/// serving Lambda's Runtime API to the function process and its `Invoke` API to the event source
/// mapping; an invocation not answered within `function_timeout` fails as a timeout, as on
/// Lambda. Waits until it listens.
///
/// # Errors
/// [`SystemError`] when it cannot start or does not listen in time.
pub async fn start_lambda_service(port: u16, function_timeout: Duration, log: &Path) -> Result<Component, SystemError> {
    // `watch` reads the manifest only to know the function names (the Lambda package's
    // binaries); with `--only-lambda-apis` it never builds or starts anything itself.
    let manifest = crate::emulator::project_root().join("lambdas").join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let port_text = port.to_string();
    let timeout = function_timeout.as_secs().max(1).to_string();
    let args = [
        "lambda",
        "watch",
        "--only-lambda-apis",
        "--manifest-path",
        &manifest,
        "--invoke-address",
        "127.0.0.1",
        "--invoke-port",
        &port_text,
        "--timeout",
        &timeout,
    ];
    let mut service = Component::spawn("lambda", &cargo_lambda_program(), &args, &[], log)?;
    let deadline = Instant::now() + LAMBDA_SERVICE_START;
    loop {
        if let Some(status) = service.exited() {
            return Err(SystemError::NotReady {
                name: "lambda".into(),
                reason: format!("exited with {status}"),
                log: log.to_path_buf(),
            });
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(service);
        }
        if Instant::now() > deadline {
            service.kill();
            return Err(SystemError::NotReady {
                name: "lambda".into(),
                reason: format!("not listening on port {port} after {LAMBDA_SERVICE_START:?}"),
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The relay function's environment as Lambda sets it: `base` (the AWS endpoint, region and
/// credentials a local process needs; on AWS the role and the runtime provide them), then the
/// template's `Environment.Variables` resolved against `stack`, then the variables Lambda's
/// runtime reads (`AWS_LAMBDA_RUNTIME_API` pointing at the runtime API on `port`: the local
/// Lambda's, or [`crate::runtime_api::RuntimeApi`] in front of it).
///
/// # Errors
/// When the template has no relay function, or refers to a resource the local stack lacks.
pub fn relay_function_env(
    spec: &crate::template::TemplateSpec,
    stack: &Provisioned,
    base: &[(String, String)],
    port: u16,
) -> Result<Vec<(String, String)>, String> {
    let mut env = base.to_vec();
    env.extend(function_template_env(spec, stack, crate::event_source::RELAY_FUNCTION)?);
    let runtime_api = format!("http://127.0.0.1:{port}/.rt/{RELAY_FUNCTION_NAME}");
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", RELAY_FUNCTION_NAME),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    Ok(env)
}

/// The logical id of the heartbeat writer's function in the template.
pub const HEARTBEAT_FUNCTION: &str = "HeartbeatFunction";

/// A function's `Environment` in the template, each `!Ref` resolved against `stack`: how the
/// local components are configured exactly as the template configures them on AWS.
///
/// # Errors
/// When the template has no such function, or a variable refers to a resource the stack does
/// not have.
pub fn function_template_env(
    spec: &crate::template::TemplateSpec,
    stack: &Provisioned,
    function: &str,
) -> Result<Vec<(String, String)>, String> {
    use crate::template::EnvValue;

    let function = spec
        .function(function)
        .ok_or_else(|| format!("the template has no {function}"))?;
    function
        .environment
        .iter()
        .map(|(key, value)| {
            let value = match value {
                EnvValue::Text(text) => text.clone(),
                EnvValue::ResourceRef(resource) => match stack.tables.get(resource) {
                    Some(table) => table.name.clone(),
                    None if resource == "InvalidationTopic" => stack.topic_arn.clone(),
                    None => return Err(format!("{key}: !Ref {resource} is not provisioned locally")),
                },
            };
            Ok((key.clone(), value))
        })
        .collect()
}

/// The relay's configuration as the template deploys it for `stack`: what the function reads
/// from its environment, read the same way.
///
/// # Errors
/// As [`function_template_env`], or the configuration the relay would refuse.
pub fn relay_config(
    spec: &crate::template::TemplateSpec,
    stack: &Provisioned,
) -> Result<stream_relay::RelayConfig, String> {
    let env = function_template_env(spec, stack, crate::event_source::RELAY_FUNCTION)?;
    stream_relay::RelayConfig::from_lookup(|var| {
        env.iter()
            .rev()
            .find(|(key, _)| key == var)
            .map(|(_, value)| value.clone())
    })
    .map_err(|err| err.to_string())
}

/// Starts one execution environment of the relay function: its Lambda binary, polling the local
/// Lambda for invocations with `env` (see [`relay_function_env`]). A killed one is replaced by
/// starting another, as Lambda starts a new environment.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_relay_function(
    function: &FunctionProgram,
    env: &[(String, String)],
    log: &Path,
) -> Result<Component, SystemError> {
    let program_text = function.program.to_string_lossy().into_owned();
    match function.launcher.split_first() {
        Some((launcher, launcher_args)) => {
            let mut args: Vec<&str> = launcher_args.iter().map(String::as_str).collect();
            args.push(&program_text);
            Component::spawn("relay", Path::new(launcher), &args, env, log)
        }
        None => Component::spawn("relay", &function.program, &[], env, log),
    }
}

/// Starts the local event source mapping as its own process: `<bin_dir>/infra relay`, invoking
/// the relay function through the local Lambda at `lambda_endpoint` (in-process when `None`),
/// with checkpoints in `checkpoint_dir` so that a restart resumes where it stopped.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_event_source(
    bin_dir: &Path,
    env: &[(String, String)],
    checkpoint_dir: &Path,
    lambda_endpoint: Option<&str>,
    log: &Path,
) -> Result<Component, SystemError> {
    let checkpoint = checkpoint_dir.to_string_lossy();
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT".to_owned(), "json".to_owned()));
    let mut args = vec!["relay", "--checkpoint-dir", &checkpoint];
    if let Some(endpoint) = lambda_endpoint {
        args.extend(["--invoke-endpoint", endpoint, "--function-name", RELAY_FUNCTION_NAME]);
    }
    Component::spawn("event source", &bin_dir.join("infra"), &args, &env, log)
}

/// The variable of [`RelaySetup::env`] that only the function takes.
const FUNCTION_ONLY_SNS_ENDPOINT: &str = "AWS_ENDPOINT_URL_SNS";

/// What the relay's three processes are started with.
#[derive(Debug, Clone)]
pub struct RelaySetup<'a> {
    /// `target/debug` (for `infra`).
    pub bin_dir: &'a Path,
    /// The template the stack was provisioned from (`STALELESS_TEMPLATE` of the mapping).
    pub template: &'a Path,
    /// The stack whose streams are read and whose topic is published to.
    pub stack: &'a Provisioned,
    /// Environment of the event source mapping and, under the template's own variables, of the
    /// function (the stack's AWS endpoint and credentials; `AWS_ENDPOINT_URL_SNS` to route the
    /// function's publishes through a proxy, which the mapping does not take: see
    /// [`start_relay`]).
    pub env: &'a [(String, String)],
    /// Where the event source mapping keeps its checkpoints.
    pub checkpoint_dir: &'a Path,
    /// Where the three log files go (`lambda.log`, `relay.log`, `event-source.log`).
    pub logs: &'a Path,
    /// The function's binary. Its timeout is `RELAY_FUNCTION_TIMEOUT_SECS` of `env`, else the
    /// template's `Timeout`.
    pub function: FunctionProgram,
}

/// The relay running as Lambda runs it.
#[derive(Debug)]
pub struct RelayProcesses {
    /// The local Lambda service (`cargo lambda watch --only-lambda-apis`).
    pub lambda: Component,
    /// The relay function's execution environment (its Lambda binary).
    pub function: Component,
    /// The event source mapping invoking it (`infra relay --invoke-endpoint`).
    pub event_source: Component,
    /// Starts further execution environments of the function.
    pub spawner: FunctionSpawner,
    /// The runtime API the function (and every one the spawner starts) polls; keep it as long
    /// as the function runs.
    pub runtime_api: crate::runtime_api::RuntimeApi,
}

/// Starts execution environments of the relay function, each as [`start_relay_function`] does.
#[derive(Debug, Clone)]
pub struct FunctionSpawner {
    /// The binary.
    program: FunctionProgram,
    /// Its environment.
    env: Vec<(String, String)>,
    /// Its log file.
    log: PathBuf,
}

/// Starts the relay as Lambda runs it: the local Lambda service on a free port, the relay
/// function configured from the template, and the event source mapping invoking it.
///
/// # Errors
/// [`SystemError`] when a process cannot start or the template cannot be read.
pub async fn start_relay(setup: RelaySetup<'_>) -> Result<RelayProcesses, SystemError> {
    let template_error = |reason: String| SystemError::NotReady {
        name: "relay".into(),
        reason,
        log: setup.logs.join("relay.log"),
    };
    let spec = crate::template::load_for(setup.template, &setup.stack.prefix)
        .map_err(|err| template_error(err.to_string()))?;
    let from_env = setup
        .env
        .iter()
        .rev()
        .find(|(key, _)| key == "RELAY_FUNCTION_TIMEOUT_SECS")
        .and_then(|(_, value)| value.parse().ok());
    let timeout_secs = from_env.unwrap_or_else(|| spec.function_timeout(crate::event_source::RELAY_FUNCTION).as_secs());
    let timeout = Duration::from_secs(timeout_secs);
    let port = crate::emulator::free_port().map_err(|err| template_error(format!("no free port: {err}")))?;
    let lambda = start_lambda_service(port, timeout, &setup.logs.join("lambda.log")).await?;
    let runtime_api = crate::runtime_api::RuntimeApi::start(port)
        .await
        .map_err(|err| template_error(format!("no runtime API: {err}")))?;
    let function_env = relay_function_env(&spec, setup.stack, setup.env, runtime_api.port()).map_err(template_error)?;
    let function_log = setup.logs.join("relay.log");
    let function = start_relay_function(&setup.function, &function_env, &function_log)?;
    // The mapping stands for Lambda's own service, whose network is not the function's: an SNS
    // endpoint meant for the function (a proxy that fails its publishes) would also fail the
    // mapping's on-failure messages to the topic, which on AWS still arrive.
    let mut event_source_env: Vec<(String, String)> = setup
        .env
        .iter()
        .filter(|(key, _)| key != FUNCTION_ONLY_SNS_ENDPOINT)
        .cloned()
        .collect();
    event_source_env.push(("RELAY_FUNCTION_TIMEOUT_SECS".to_owned(), timeout_secs.to_string()));
    event_source_env.push((
        "STALELESS_TEMPLATE".to_owned(),
        setup.template.to_string_lossy().into_owned(),
    ));
    let endpoint = format!("http://127.0.0.1:{port}");
    let event_source = start_event_source(
        setup.bin_dir,
        &event_source_env,
        setup.checkpoint_dir,
        Some(&endpoint),
        &setup.logs.join("event-source.log"),
    )?;
    Ok(RelayProcesses {
        lambda,
        function,
        event_source,
        spawner: FunctionSpawner {
            program: setup.function,
            env: function_env,
            log: function_log,
        },
        runtime_api,
    })
}

impl FunctionSpawner {
    /// Starts a new execution environment of the function (after a kill or a crash).
    ///
    /// # Errors
    /// [`SystemError`] when it cannot start.
    pub fn start(&self) -> Result<Component, SystemError> {
        start_relay_function(&self.program, &self.env, &self.log)
    }
}

/// Starts the fleet's queue sweeper as its own process: `<bin_dir>/queue-sweeper` (the binary
/// that runs as the scheduled `QueueSweeperFunction` on AWS), sweeping every
/// `SWEEP_INTERVAL_SECS` of `env` (default 300 s) the queues left by crashed tasks.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_queue_sweeper(bin_dir: &Path, env: &[(String, String)], log: &Path) -> Result<Component, SystemError> {
    Component::spawn("queue sweeper", &bin_dir.join("queue-sweeper"), &[], env, log)
}

/// Starts the heartbeat writer as its own process: `<bin_dir>/infra heartbeat`, beating every
/// `HEARTBEAT_INTERVAL_SECS` of `base` (default 5 s) into the tables the template's
/// `HeartbeatFunction` environment names (every source's table), `base` on top of it.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_heartbeat(
    bin_dir: &Path,
    template: &Path,
    stack: &Provisioned,
    base: &[(String, String)],
    log: &Path,
) -> Result<Component, SystemError> {
    let not_ready = |reason: String| SystemError::NotReady {
        name: "heartbeat".into(),
        reason,
        log: log.to_path_buf(),
    };
    let spec = crate::template::load_for(template, &stack.prefix).map_err(|err| not_ready(err.to_string()))?;
    // The tables and sources as the template configures the function; its schedule is the
    // scheduled Lambda's, not this process's, which beats until stopped at `env`'s interval.
    let mut env: Vec<(String, String)> = function_template_env(&spec, stack, HEARTBEAT_FUNCTION)
        .map_err(not_ready)?
        .into_iter()
        .filter(|(key, _)| !matches!(key.as_str(), "HEARTBEAT_RUN_SECS" | "HEARTBEAT_INTERVAL_SECS"))
        .collect();
    env.extend(base.iter().cloned());
    env.push(("LOG_FORMAT".to_owned(), "json".to_owned()));
    Component::spawn("heartbeat", &bin_dir.join("infra"), &["heartbeat"], &env, log)
}
