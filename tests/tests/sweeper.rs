//! The fleet sweeper as deployed: the real `queue-sweeper` process beside real API tasks. A task
//! killed without its shutdown loses its queue and subscription once its heartbeat tag is stale;
//! a live task's queue survives every sweep and keeps delivering.

use std::time::{Duration, Instant};

use staleless_consumer::sweeper::{LOG_TARGET, NOTHING_TO_SWEEP};
use staleless_tests::{LocalSystem, SystemOptions};

/// How often the sweeper sweeps here (300 s as shipped).
const SWEEP_EVERY_SECS: &str = "1";
/// A heartbeat tag older than this is a dead task's (600 s as shipped); the tasks here re-tag
/// every second, so a live one is never near it.
const STALE_AFTER_SECS: u64 = 5;

/// Sweeps that must find nothing after the dead task's leftovers are gone: each one lists the
/// live task's queue and leaves it.
const MORE_SWEEPS: usize = 3;

/// The topic's subscription endpoints of task queues (queue ARNs).
async fn subscribed_queues(system: &LocalSystem) -> anyhow::Result<Vec<String>> {
    let output = system
        .aws
        .sns()
        .list_subscriptions_by_topic()
        .topic_arn(&system.stack.topic_arn)
        .send()
        .await?;
    Ok(output
        .subscriptions
        .unwrap_or_default()
        .into_iter()
        .filter_map(|subscription| subscription.endpoint)
        .filter(|endpoint| system.stack.is_task_queue(endpoint))
        .collect())
}

/// The queue name of a URL or ARN (its last segment).
fn queue_name(url_or_arn: &str) -> &str {
    url_or_arn.rsplit(['/', ':']).next().unwrap_or_default()
}

#[tokio::test]
async fn a_killed_task_is_swept_and_a_live_one_never_is() -> anyhow::Result<()> {
    let mut system = LocalSystem::start(SystemOptions {
        task_env: vec![("QUEUE_HEARTBEAT_INTERVAL_SECS".into(), "1".into())],
        ..SystemOptions::default()
    })
    .await?;
    let queues = system.task_queues().await?;
    anyhow::ensure!(queues.len() == 2, "one queue per task: {queues:?}");

    let mut env = infra::system::stack_env(system.aws.endpoint(), &system.stack);
    env.extend([
        ("SWEEP_INTERVAL_SECS".to_owned(), SWEEP_EVERY_SECS.to_owned()),
        ("QUEUE_STALE_AFTER_SECS".to_owned(), STALE_AFTER_SECS.to_string()),
        ("RUST_LOG".to_owned(), format!("info,{LOG_TARGET}=debug")),
    ]);
    let sweeper_log = system.logs_dir().join("queue-sweeper.log");
    let mut sweeper = infra::system::start_queue_sweeper(&infra::system::binaries_dir(), &env, &sweeper_log)?;

    // Task 1 dies without its shutdown: its queue and subscription stay behind.
    let killed = system.tasks[1].as_mut().map(|task| task.process.kill());
    anyhow::ensure!(killed.is_some(), "task 1 was running");
    let killed_at = Instant::now();
    let outcome = async {
        let live_queue = {
            let (_, stats) = system.get(0, "/admin/cache/stats", &system.admin_token()).await?;
            stats["channel"]["queue"].as_str().unwrap_or_default().to_owned()
        };
        anyhow::ensure!(!live_queue.is_empty(), "task 0 names its queue in its stats");
        // Until the dead task's leftovers are gone, the live task's queue must be there at every look.
        loop {
            let queues = system.task_queues().await?;
            let subscribed = subscribed_queues(&system).await?;
            anyhow::ensure!(
                queues.iter().any(|url| queue_name(url) == live_queue)
                    && subscribed.iter().any(|arn| queue_name(arn) == live_queue),
                "the live task's queue or subscription was swept: {queues:?} {subscribed:?}"
            );
            if queues.len() == 1 && subscribed.len() == 1 {
                break;
            }
            anyhow::ensure!(
                killed_at.elapsed() < Duration::from_secs(60),
                "the dead task's queue is still there after 60 s: {queues:?} {subscribed:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::ensure!(
            killed_at.elapsed() >= Duration::from_secs(STALE_AFTER_SECS - 1),
            "swept before its heartbeat tag could be stale"
        );
        // More sweeps pass (counted in the sweeper's log, not slept for); the live task keeps its
        // queue and still hears every change.
        let empty_sweeps = || {
            std::fs::read_to_string(&sweeper_log)
                .map(|log| log.matches(NOTHING_TO_SWEEP).count())
                .unwrap_or_default()
        };
        let before = empty_sweeps();
        let deadline = Instant::now() + Duration::from_secs(30);
        while empty_sweeps() < before + MORE_SWEEPS {
            anyhow::ensure!(
                Instant::now() < deadline,
                "fewer than {MORE_SWEEPS} sweeps in 30 s after the dead task's were gone"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let queues = system.task_queues().await?;
        anyhow::ensure!(
            queues.len() == 1 && queue_name(&queues[0]) == live_queue,
            "after more sweeps: {queues:?}"
        );
        let token = system.token_without_roles("alice");
        let change = infra::operator::UserChange {
            name: Some("Alice After Sweeps".into()),
            ..infra::operator::UserChange::default()
        };
        infra::operator::put_user(&system.aws.dynamodb(), &system.stack.users_table, "alice", &change).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = system.get(0, "/users/me", &token).await?;
            if status == 200 && body["name"] == "Alice After Sweeps" {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the live task no longer hears changes: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    }
    .await;
    sweeper.stop().await;
    system.stop().await;
    outcome
}
