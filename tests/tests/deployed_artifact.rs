//! The relay that `sam deploy` ships is the relay that is tested: the `bootstrap` that
//! `sam build` made from `template.yaml` (arm64, `provided.al2023`) serves the local Lambda's
//! invocations, and a change written to the table reaches both API tasks through it.
//!
//! `scripts/test` runs `sam build` and names the artifact in `STALELESS_DEPLOYED_RELAY`; on an
//! x86-64 machine it runs under qemu's user-mode emulation (`STALELESS_ARM64_LAUNCHER`, installed
//! by `scripts/test` from Debian's packages where it can). Every other end-to-end test runs the
//! same `main.rs` built for this machine (`target/debug/stream-relay`).

use staleless_tests::{LocalSystem, SystemOptions};

#[tokio::test]
async fn the_sam_built_bootstrap_relays_changes_to_both_tasks() -> anyhow::Result<()> {
    let Some(artifact) = std::env::var_os("STALELESS_DEPLOYED_RELAY") else {
        eprintln!(
            "not run: STALELESS_DEPLOYED_RELAY names no artifact; scripts/test builds it with `sam build` and sets it"
        );
        return Ok(());
    };
    let artifact = std::path::PathBuf::from(artifact);
    anyhow::ensure!(
        artifact.exists(),
        "{} is missing: `sam build` did not produce it",
        artifact.display()
    );
    let launcher = match std::env::var("STALELESS_ARM64_LAUNCHER") {
        Ok(launcher) => launcher,
        Err(_) if std::env::consts::ARCH == "aarch64" => String::new(),
        Err(_) => {
            eprintln!(
                "not run: {} is an arm64 binary and this {} machine has no qemu-aarch64-static to run it",
                artifact.display(),
                std::env::consts::ARCH
            );
            return Ok(());
        }
    };
    let system = LocalSystem::start(SystemOptions {
        relay_env: vec![
            ("RELAY_FUNCTION_BINARY".into(), artifact.to_string_lossy().into_owned()),
            ("RELAY_FUNCTION_LAUNCHER".into(), launcher),
        ],
        ..SystemOptions::default()
    })
    .await?;
    let result = async {
        // `start` returned once ticks written after the seed reached both tasks: through it.
        let alice = system.token("alice", &["Staff"]);
        for task in 0..2 {
            let (status, body) = system.get(task, "/users/me", &alice).await?;
            anyhow::ensure!(status == 200 && body["name"] == "Alice", "task {task}: {status} {body}");
        }
        system
            .rename_everywhere("alice", &alice, "Alice Through The Artifact")
            .await?;
        let ready = system.relay_ready_line()?;
        let users = format!("users={} ", system.stack.users_table);
        anyhow::ensure!(
            ready["sources"]
                .as_str()
                .is_some_and(|sources| sources.starts_with(&users)),
            "{ready}"
        );
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("logs: {}", system.logs_dir().display());
    }
    system.stop().await;
    result
}
