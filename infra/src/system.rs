//! The whole local system as separate processes: the relay (`infra relay`: the local event source
//! mapping calling the stream relay), the heartbeat writer (`infra heartbeat`) and any number of
//! API tasks (`staleless-api`), each with its own log file, all pointed at one emulator and one
//! provisioned stack.
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

/// One API task: its process and where it serves.
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
        let mut env = env.to_vec();
        env.push(("BIND_ADDR".to_owned(), bind.to_owned()));
        let process = Component::spawn(name, &bin_dir.join("staleless-api"), &[], &env, log)?;
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

/// Starts the relay as its own process: `<bin_dir>/infra relay`, with checkpoints in
/// `checkpoint_dir` so that a restart resumes where it stopped.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_relay(
    bin_dir: &Path,
    env: &[(String, String)],
    checkpoint_dir: &Path,
    log: &Path,
) -> Result<Component, SystemError> {
    let checkpoint = checkpoint_dir.to_string_lossy();
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT".to_owned(), "json".to_owned()));
    Component::spawn(
        "relay",
        &bin_dir.join("infra"),
        &["relay", "--checkpoint-dir", &checkpoint],
        &env,
        log,
    )
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
/// `HEARTBEAT_INTERVAL_SECS` of `env` (default 5 s) into the stack's two tables.
///
/// # Errors
/// [`SystemError`] when it cannot start.
pub fn start_heartbeat(bin_dir: &Path, env: &[(String, String)], log: &Path) -> Result<Component, SystemError> {
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT".to_owned(), "json".to_owned()));
    Component::spawn("heartbeat", &bin_dir.join("infra"), &["heartbeat"], &env, log)
}
