//! The local AWS: a moto server process on loopback, installed into the project's virtualenv.
//!
//! One moto process serves DynamoDB, DynamoDB Streams, SNS and SQS on a single port. The process
//! is owned by [`Emulator`] and killed when it is dropped, so a test or the run command never
//! leaves one behind.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fresh moto server may take to accept connections (≈ 0.5 s measured; generous for
/// a loaded 2-core CI machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the emulator could not be installed or started.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// `python3 -m venv` or `pip install` failed.
    #[error("cannot install moto server into {venv}: {reason}")]
    Install {
        /// The virtualenv being created.
        venv: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The requested port is already in use.
    #[error("port {port} on 127.0.0.1 is already in use; set a different port (e.g. EMULATOR_PORT)")]
    PortInUse {
        /// The port asked for.
        port: u16,
    },
    /// The process could not be spawned.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The moto_server executable.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited or never accepted connections.
    #[error("moto server on port {port} did not become ready: {reason} (log: {log})")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// What was seen.
        reason: String,
        /// Where its output went.
        log: String,
    },
}

/// The project root: where `template.yaml`, `.venv/` and `.local/` live.
///
/// `STALELESS_ROOT` overrides it; otherwise it is the workspace this crate was built in, which is
/// right for `cargo run`, `cargo test` and the scripts.
#[must_use]
pub fn project_root() -> PathBuf {
    std::env::var_os("STALELESS_ROOT").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        },
        PathBuf::from,
    )
}

/// The command that starts moto server (its arguments follow): `infra/moto/serve.py` run by the
/// virtualenv's Python — moto's own server with DynamoDB calls applied atomically, as on AWS —
/// installing moto into `<root>/.venv` when it is missing.
///
/// `MOTO_SERVER` names an executable to use as is instead.
///
/// # Errors
/// [`EmulatorError::Install`] when the virtualenv or the pip install fails.
pub fn moto_server_command() -> Result<Command, EmulatorError> {
    let root = project_root();
    if let Some(explicit) = std::env::var_os("MOTO_SERVER") {
        return Ok(Command::new(explicit));
    }
    ensure_moto_installed()?;
    let mut command = Command::new(root.join(".venv").join("bin").join("python"));
    command.arg(root.join("infra").join("moto").join("serve.py"));
    Ok(command)
}

/// Installs moto into `<root>/.venv` unless `moto_server` is there already.
fn ensure_moto_installed() -> Result<(), EmulatorError> {
    // Tests in one binary start emulators concurrently; only one of them may run pip.
    static INSTALL: Mutex<()> = Mutex::new(());
    let root = project_root();
    let venv = root.join(".venv");
    let program = venv.join("bin").join("moto_server");
    let _guard = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if program.exists() {
        return Ok(());
    }
    let install_error = |reason: String| EmulatorError::Install {
        venv: venv.clone(),
        reason,
    };
    if !venv.join("bin").join("pip").exists() {
        run_quietly(Command::new("python3").arg("-m").arg("venv").arg(&venv)).map_err(install_error)?;
    }
    run_quietly(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join("infra").join("requirements-emulator.txt")),
    )
    .map_err(install_error)
}

fn run_quietly(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{command:?}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last_line = stderr.lines().last().unwrap_or("no output");
        Err(format!("{command:?} exited with {}: {last_line}", output.status))
    }
}

/// A free TCP port on 127.0.0.1, as chosen by the OS.
///
/// # Errors
/// When the OS cannot bind a loopback socket.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running moto server, killed on drop.
#[derive(Debug)]
pub struct Emulator {
    /// The child process; `None` once stopped.
    child: Option<Child>,
    /// The loopback port it listens on.
    port: u16,
}

impl Emulator {
    /// Starts moto server on `port` (0 picks a free one) and waits until it accepts connections.
    ///
    /// `log` receives its output; `None` discards it.
    ///
    /// # Errors
    /// Install, port, spawn or readiness failures, each naming what went wrong.
    pub fn start(port: u16, log: Option<&Path>) -> Result<Self, EmulatorError> {
        let mut command = moto_server_command()?;
        let program = PathBuf::from(command.get_program());
        let port = if port == 0 {
            free_port().map_err(|source| EmulatorError::Spawn {
                program: program.clone(),
                source,
            })?
        } else {
            if TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
                return Err(EmulatorError::PortInUse { port });
            }
            port
        };
        let (stdout, stderr, log_name) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|source| EmulatorError::Spawn {
                    program: program.clone(),
                    source,
                })?;
                let copy = file.try_clone().map_err(|source| EmulatorError::Spawn {
                    program: program.clone(),
                    source,
                })?;
                (Stdio::from(file), Stdio::from(copy), path.display().to_string())
            }
            None => (Stdio::null(), Stdio::null(), "discarded".to_owned()),
        };
        // A group of its own: a terminal's Ctrl-C reaches `infra up` alone, which stops the
        // emulator last, after everything that reads from it (else the event source mapping
        // would log its reads refused while it stops).
        if log.is_none() {
            // Its per-request access line would be written only to be discarded.
            command.env("STALELESS_MOTO_ACCESS_LOG", "0");
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| EmulatorError::Spawn { program, source })?;
        let mut emulator = Self {
            child: Some(child),
            port,
        };
        emulator.wait_ready(&log_name)?;
        Ok(emulator)
    }

    fn wait_ready(&mut self, log: &str) -> Result<(), EmulatorError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(EmulatorError::NotReady {
                    port: self.port,
                    reason: format!("process exited with {status}"),
                    log: log.to_owned(),
                });
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmulatorError::NotReady {
                    port: self.port,
                    reason: format!("no connection after {STARTUP_TIMEOUT:?}"),
                    log: log.to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port moto listens on.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL to give the AWS SDK (`AWS_ENDPOINT_URL`).
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the process and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // moto keeps no state worth a graceful shutdown; SIGKILL cannot be ignored.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
