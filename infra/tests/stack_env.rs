//! `source .local/stack.env` is all any AWS client needs to reach the local stack: tried with
//! boto3 (the Python SDK, which reads `AWS_DEFAULT_REGION`, not `AWS_REGION`) in a shell that has
//! nothing else, as a new user's terminal would be.

use std::process::Command;

use infra::LocalAws;

#[tokio::test]
async fn boto3_reaches_the_stack_with_nothing_but_the_env_file() {
    let mut aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("stack");
    let dir = std::env::temp_dir().join(format!("staleless-env-{}", stack.prefix));
    std::fs::create_dir_all(&dir).expect("dir");
    let env_file = dir.join("stack.env");
    infra::system::write_stack_env(&env_file, aws.endpoint(), &stack).expect("env file");

    let python = infra::emulator::project_root().join(".venv").join("bin").join("python");
    let script = r#"
import json, os, boto3
tables = boto3.client("dynamodb").list_tables()["TableNames"]
topics = [t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"]]
print(json.dumps({"tables": tables, "topics": topics}))
"#;
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && exec '{}' -c '{}'",
            env_file.display(),
            python.display(),
            script
        ))
        // Nothing from this process's environment: no region, no endpoint, no credentials.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "boto3 failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let tables: Vec<&str> = seen["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    assert!(tables.contains(&stack.users_table.as_str()), "{seen}");
    assert!(tables.contains(&stack.roles_table.as_str()), "{seen}");
    assert!(
        seen["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|topic| topic == stack.topic_arn.as_str()),
        "{seen}"
    );
    aws.stop();
    let _ = std::fs::remove_dir_all(dir);
}
