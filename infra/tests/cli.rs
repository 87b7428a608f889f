//! The `infra` binary's error messages: one line that names the problem.

use std::process::Command;

fn infra(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_infra"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("run infra");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_emulator_is_one_line_naming_the_endpoint() {
    let port = infra::emulator::free_port().expect("port");
    let endpoint = format!("http://127.0.0.1:{port}");
    let (ok, _, stderr) = infra(&["provision", "--endpoint", &endpoint, "--prefix", "unreachable"]);
    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach") && stderr.contains(&endpoint), "{stderr}");
}

#[test]
fn a_malformed_template_is_one_line_naming_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("staleless-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("template.yaml");
    std::fs::write(&path, "Resources:\n  UsersTable:\n    Type: AWS::DynamoDB::Table\n    Properties: [oops\n")
        .expect("write");
    let (ok, _, stderr) = infra(&["check-template", "--template", path.to_str().expect("utf-8 path")]);
    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("template.yaml") && stderr.contains("line"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_repository_template_lists_both_tables_and_the_topic() {
    let (ok, stdout, stderr) = infra(&["check-template", "--prefix", "demo"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("table demo-users (UsersTable): stream NEW_AND_OLD_IMAGES"), "{stdout}");
    assert!(stdout.contains("table demo-app-roles (AppRolesTable)"), "{stdout}");
    assert!(stdout.contains("topic demo-invalidations"), "{stdout}");
}
