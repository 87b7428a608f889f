//! Each Lambda main refuses to start without its configuration, or with a malformed one, and
//! says which setting is at fault, instead of panicking or serving with a default that points nowhere.

use std::process::Command;

/// Runs `binary` with an environment holding only `PATH` and `extra`, and returns its exit
/// status and stderr.
fn run_with(binary: &str, extra: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let output = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(extra.iter().copied())
        .output()
        .expect("the Lambda binary runs");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_relay_names_its_missing_topic() {
    let (status, stderr) = run_with(env!("CARGO_BIN_EXE_stream-relay"), &[]);
    assert!(!status.success(), "started without configuration: {stderr}");
    assert!(
        stderr.contains("INVALIDATION_TOPIC_ARN"),
        "stderr does not name the setting: {stderr}"
    );
}

#[test]
fn the_heartbeat_writer_names_its_malformed_interval() {
    // Every setting of the writer has a default; a malformed one is refused.
    let (status, stderr) = run_with(env!("CARGO_BIN_EXE_heartbeat"), &[("HEARTBEAT_INTERVAL_SECS", "-1")]);
    assert!(!status.success(), "started with a negative interval: {stderr}");
    assert!(
        stderr.contains("HEARTBEAT_INTERVAL_SECS"),
        "stderr does not name the setting: {stderr}"
    );
}

#[test]
fn the_sweeper_names_its_missing_topic() {
    let (status, stderr) = run_with(env!("CARGO_BIN_EXE_queue-sweeper"), &[]);
    assert!(!status.success(), "started without configuration: {stderr}");
    assert!(
        stderr.contains("INVALIDATION_TOPIC_ARN"),
        "stderr does not name the setting: {stderr}"
    );
}
