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
    assert!(
        stderr.contains("cannot reach") && stderr.contains(&endpoint),
        "{stderr}"
    );
}

#[test]
fn a_malformed_template_is_one_line_naming_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("staleless-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("template.yaml");
    std::fs::write(
        &path,
        "Resources:\n  UsersTable:\n    Type: AWS::DynamoDB::Table\n    Properties: [oops\n",
    )
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
    assert!(
        stdout.contains("table demo-users (UsersTable): stream NEW_AND_OLD_IMAGES"),
        "{stdout}"
    );
    assert!(stdout.contains("table demo-app-roles (AppRolesTable)"), "{stdout}");
    assert!(stdout.contains("topic demo-invalidations"), "{stdout}");
}

#[test]
fn up_serves_the_stack_and_stops_cleanly_on_interrupt() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    let port = infra::emulator::free_port().expect("port");
    // Free ports for the tasks and the example too: the defaults may be taken (a running
    // `scripts/run`, another checkout's tests).
    let bind = || format!("127.0.0.1:{}", infra::emulator::free_port().expect("port"));
    let (api_a, api_b, example) = (bind(), bind(), bind());
    let state_dir = std::env::temp_dir().join(format!("staleless-up-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_infra"))
        .args(["up", "--port", &port.to_string(), "--prefix", "uptest"])
        .args(["--api-a", &api_a, "--api-b", &api_b, "--example", &example])
        .arg("--state-dir")
        .arg(&state_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn infra up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(
        banner.contains("uptest-users") && banner.contains("uptest-invalidations"),
        "{banner}"
    );
    let env_file = std::fs::read_to_string(state_dir.join("stack.env")).expect("stack.env");
    assert!(
        env_file.contains(&format!("AWS_ENDPOINT_URL=http://127.0.0.1:{port}")),
        "{env_file}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "emulator should be listening"
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{exit}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|line| line == "stopped"), "{rest:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "emulator must be gone after Ctrl-C"
    );
    let _ = std::fs::remove_dir_all(state_dir);
}
