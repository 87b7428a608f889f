//! The example refuses to start without its topic or with a malformed address, naming the
//! setting; serving it end to end is `tests/tests/example.rs` and the fault matrix.

use std::process::Command;

fn refused_naming(extra: &[(&str, &str)], setting: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_staleless-example"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(extra.iter().copied())
        .output()
        .expect("the example runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without a valid {setting}: {stderr}");
    assert!(stderr.contains(setting), "stderr does not name {setting}: {stderr}");
}

#[test]
fn the_example_names_its_missing_topic() {
    refused_naming(&[], "INVALIDATION_TOPIC_ARN");
}

#[test]
fn the_example_names_its_malformed_address() {
    refused_naming(&[("EXAMPLE_ADDR", "not an address")], "EXAMPLE_ADDR");
}
