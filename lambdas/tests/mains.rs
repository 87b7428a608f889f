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

/// Asserts that `binary`, run with only `extra` set, exits unsuccessfully and names `setting`.
fn assert_refused_naming(binary: &str, extra: &[(&str, &str)], setting: &str) {
    let (status, stderr) = run_with(binary, extra);
    assert!(!status.success(), "started without a valid {setting}: {stderr}");
    assert!(stderr.contains(setting), "stderr does not name {setting}: {stderr}");
}

#[test]
fn the_relay_names_its_missing_topic() {
    assert_refused_naming(env!("CARGO_BIN_EXE_stream-relay"), &[], "INVALIDATION_TOPIC_ARN");
}

#[test]
fn the_heartbeat_writer_names_its_malformed_interval() {
    // Every setting of the writer has a default; a malformed one is refused.
    assert_refused_naming(
        env!("CARGO_BIN_EXE_heartbeat"),
        &[("HEARTBEAT_INTERVAL_SECS", "-1")],
        "HEARTBEAT_INTERVAL_SECS",
    );
}

#[test]
fn the_sweeper_names_its_missing_topic() {
    assert_refused_naming(env!("CARGO_BIN_EXE_queue-sweeper"), &[], "INVALIDATION_TOPIC_ARN");
}
