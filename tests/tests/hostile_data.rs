//! Hostile data with the real processes, as an operator would see it with `scripts/run` up: a
//! console typo in a role definition is contained to that role and repaired through the admin
//! API, and heartbeat items written an hour ahead in both tables do not hide a later outage.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use staleless_tests::hostile::{self, AN_HOUR_MS, CORRUPT_ROLE, now_ms};
use staleless_tests::{LocalSystem, SystemOptions};

#[tokio::test]
async fn a_corrupt_role_leaves_every_other_user_and_the_admin_api_working_and_is_repaired() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let admin = system.admin_token();
    let alice = system.token("alice", &["Staff"]);
    hostile::put_corrupt_role(&system).await?;
    system.until_ticks_after(now_ms()).await?;

    for task in 0..system.task_urls.len() {
        let (status, body) = system.get(task, "/users/me", &alice).await?;
        anyhow::ensure!(status == 200, "task {task}: /users/me {status} {body}");
        anyhow::ensure!(
            !body["appRoles"].to_string().contains(CORRUPT_ROLE)
                && !body["permissions"]["tools"].to_string().contains('*'),
            "task {task}: the corrupt role's grants were given: {body}"
        );
        let (status, body) = system.get(task, "/admin/roles", &admin).await?;
        anyhow::ensure!(status == 200, "task {task}: /admin/roles {status} {body}");
        anyhow::ensure!(
            body["corrupt"][0]["roleId"] == CORRUPT_ROLE && body["corrupt"][0]["faults"][0]["attribute"] == "enabled",
            "task {task}: the corrupt role is not listed with its fault: {body}"
        );
        let (status, body) = system
            .get(task, &format!("/admin/roles/{CORRUPT_ROLE}"), &admin)
            .await?;
        anyhow::ensure!(
            status == 200 && body["faults"][0]["attribute"] == "enabled",
            "task {task}: {status} {body}"
        );
    }
    let counted =
        hostile::metric_on_every_task(&system, "staleless_corrupt_items_total", &[("table", "roles")]).await?;
    anyhow::ensure!(counted >= 2.0, "each task counts the corrupt role: {counted}");

    // A patch that leaves the fault in place is refused, naming it; one that sets it repairs it.
    let path = format!("/admin/roles/{CORRUPT_ROLE}");
    let (status, body) = system
        .send(0, Method::PATCH, &path, &admin, Some(&json!({"description": "x"})))
        .await?;
    anyhow::ensure!(
        status == 409 && body["message"].to_string().contains("enabled"),
        "{status} {body}"
    );
    let (status, body) = system
        .send(0, Method::PATCH, &path, &admin, Some(&json!({"enabled": false})))
        .await?;
    anyhow::ensure!(status == 200 && body["enabled"] == false, "{status} {body}");
    system
        .until_all_tasks("/admin/roles", &admin, |status, body| {
            status == 200 && body["corrupt"] == json!([]) && body["roles"].to_string().contains(CORRUPT_ROLE)
        })
        .await?;

    // Corrupt again, then deleted through the API.
    hostile::put_corrupt_role(&system).await?;
    system
        .until_all_tasks("/admin/roles", &admin, |_, body| {
            body["corrupt"][0]["roleId"] == CORRUPT_ROLE
        })
        .await?;
    let (status, body) = system.send(1, Method::DELETE, &path, &admin, None).await?;
    anyhow::ensure!(status == 204, "{status} {body}");
    system
        .until_all_tasks("/admin/roles", &admin, |status, body| {
            status == 200 && !body.to_string().contains(CORRUPT_ROLE)
        })
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn heartbeats_an_hour_ahead_do_not_hide_a_later_outage() -> anyhow::Result<()> {
    // The README's local stack: B = 15 s, a heartbeat every 5 s; the outage is shorter than B.
    let bound = Duration::from_secs(15);
    let system = LocalSystem::start(SystemOptions {
        staleness_bound: bound,
        heartbeat_interval: Duration::from_secs(5),
        ..SystemOptions::default()
    })
    .await?;
    let admin = system.admin_token();
    let user = "hostile-user";
    infra::operator::put_user(
        &system.aws.dynamodb(),
        &system.stack.users_table,
        user,
        &infra::operator::UserChange {
            name: Some("before".to_owned()),
            roles: Some(vec!["Staff".to_owned()]),
            ..infra::operator::UserChange::default()
        },
    )
    .await?;
    system
        .until_all_tasks(&format!("/admin/users/{user}"), &admin, |status, body| {
            status == 200 && body["name"] == "before"
        })
        .await?;

    // Both tables' heartbeat items, an hour ahead: refused by both tasks, counted. The real
    // writer pauses meanwhile, so the relay cannot fold them into its next beat of the same item.
    let rejected_label = [("reason", "future")];
    let writer = system.heartbeat.as_ref().expect("the heartbeat writer runs");
    writer.pause();
    hostile::put_heartbeats(
        &system,
        staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER,
        now_ms() + AN_HOUR_MS,
    )
    .await?;
    let refused = staleless_tests::eventually(
        staleless_tests::PATIENCE,
        "the future ticks refused on every task",
        || async {
            let mut every_task = true;
            for task in 0..system.task_urls.len() {
                every_task &= system
                    .metric(task, "staleless_ticks_rejected_total", &rejected_label)
                    .await?
                    >= 2.0;
            }
            Ok(every_task)
        },
    )
    .await;
    writer.resume();
    refused?;
    system.until_ticks_after(now_ms()).await?;

    // A 6.5 s silent outage with a rename 1 s in.
    let restore = hostile::filter_every_subscription_for(&system, Duration::from_millis(6_500)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    infra::operator::put_user(
        &system.aws.dynamodb(),
        &system.stack.users_table,
        user,
        &infra::operator::UserChange {
            name: Some("after".to_owned()),
            ..infra::operator::UserChange::default()
        },
    )
    .await?;
    let renamed_at = Instant::now();
    let mut worst_stale = Duration::ZERO;
    for task in 0..system.task_urls.len() {
        loop {
            let asked_at = Instant::now();
            let (status, body) = system.get(task, &format!("/admin/users/{user}"), &admin).await?;
            if status == 200 && body["name"] == "after" {
                break;
            }
            worst_stale = worst_stale.max(asked_at - renamed_at);
            anyhow::ensure!(
                renamed_at.elapsed() < Duration::from_secs(60),
                "task {task} still serves the old name 60 s after the rename: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    restore.await??;
    anyhow::ensure!(
        worst_stale <= bound,
        "a task served the old name {worst_stale:?} after the rename, past the bound {bound:?}"
    );
    system.stop().await;
    Ok(())
}
