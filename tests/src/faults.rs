//! The fault matrix: each row breaks one part of the system while writes go on, heals it, and
//! ends with the consistency check — every key written during the row must read the same on every
//! task as in DynamoDB (`ConsistentRead`). Shared by `tests/tests/fault_matrix.rs`, which asserts
//! that nothing is lost, and the `fault-matrix` command, which writes `docs/fault-matrix.md`.
//!
//! Writes go straight to the users table with the SDK (the console and scripts path). Caches are
//! warmed on every task before the fault, so a lost invalidation would show as a stale read
//! rather than hide behind a first fill.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use infra::consistency::{self, CheckTarget, KeyKind};
use infra::operator::{self, UserChange};
use staleless_protocol::{Invalidation, KeyVersion, SequenceNumber, Source};

use crate::{LocalSystem, PATIENCE, SystemOptions, eventually};

/// How long a key may take to become consistent after a fault heals before it counts as lost.
/// One row needs more than [`PATIENCE`]: a task notices its queue was deleted only when its
/// current long poll (20 s) returns.
pub const CHECK_PATIENCE: Duration = Duration::from_secs(60);

/// Concurrent writers: enough to make bursts, few enough for a 2-core machine.
const WRITE_CONCURRENCY: usize = 8;

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The relay process is SIGKILLed in the middle of a burst of writes, then restarted.
    RelayKilledMidBurst,
    /// SNS refuses the relay's connections for a while, then comes back.
    SnsUnavailable,
    /// One task's queue is deleted behind its back.
    QueueDeletedOutOfBand,
    /// A task is stopped and started again while writes continue.
    TaskRestartedDuringWrites,
    /// Old invalidations are injected into every queue, duplicated and out of order.
    DuplicateAndReorderedMessages,
    /// Malformed messages are injected into every queue.
    PoisonMessages,
    /// 1,000 writes across 500 users while both tasks serve reads.
    BurstWithReads,
}

impl Row {
    /// Every row, in table order.
    pub const ALL: [Self; 7] = [
        Self::RelayKilledMidBurst,
        Self::SnsUnavailable,
        Self::QueueDeletedOutOfBand,
        Self::TaskRestartedDuringWrites,
        Self::DuplicateAndReorderedMessages,
        Self::PoisonMessages,
        Self::BurstWithReads,
    ];

    /// The row's name in the table.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::RelayKilledMidBurst => "relay killed mid-burst, restarted",
            Self::SnsUnavailable => "SNS unavailable to the relay, then back",
            Self::QueueDeletedOutOfBand => "one task's queue deleted out of band",
            Self::TaskRestartedDuringWrites => "task restarted while writes continue",
            Self::DuplicateAndReorderedMessages => "duplicate + reordered invalidations injected",
            Self::PoisonMessages => "poison messages injected",
            Self::BurstWithReads => "1,000 writes / 500 users under reads",
        }
    }
}

/// What a row measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Which row.
    pub row: Row,
    /// Writes made to the users table during the row.
    pub writes: usize,
    /// (key, task) pairs compared by the final check.
    pub checked: usize,
    /// Pairs that never agreed with DynamoDB within [`CHECK_PATIENCE`]: lost invalidations.
    pub lost: usize,
    /// From the end of the last write (and the fault's repair) until every task served every
    /// user's last written value: the slowest (user, task) pair.
    pub worst_time_to_consistency: Duration,
    /// Wall time of the whole row.
    pub elapsed: Duration,
}

/// Runs one row on a fresh system and stops it.
///
/// # Errors
/// When the system cannot start or a step fails; lost invalidations are reported, not errors.
pub async fn run(row: Row) -> anyhow::Result<RowReport> {
    let started = Instant::now();
    let options = SystemOptions {
        sns_through_proxy: row == Row::SnsUnavailable,
        ..SystemOptions::default()
    };
    let mut system = LocalSystem::start(options).await?;
    let outcome = run_on(&mut system, row).await;
    let logs = system.logs_dir();
    let report = outcome.with_context(|| format!("row {:?} (logs in {})", row, logs.display()));
    system.stop().await;
    Ok(RowReport {
        elapsed: started.elapsed(),
        ..report?
    })
}

async fn run_on(system: &mut LocalSystem, row: Row) -> anyhow::Result<RowReport> {
    let user_count = if row == Row::BurstWithReads { 500 } else { 100 };
    // Bursts are three rounds over every user: one round in is a third of the way.
    let a_third_of_the_burst = user_count;
    let users: Vec<String> = (0..user_count).map(|index| format!("fm-{index:04}")).collect();
    let mut writes = write_round(system, &users, 0).await?;
    warm(system, &users).await?;

    // Every row ends with every user renamed in its last round: that is what each task must serve.
    let final_round = match row {
        Row::RelayKilledMidBurst => {
            let written = Arc::new(AtomicUsize::new(0));
            let burst = spawn_burst(system, &users, 1..4, Arc::clone(&written));
            wait_for_writes(&written, a_third_of_the_burst).await?;
            system.kill_relay();
            writes += burst.await??;
            system.start_relay()?;
            3
        }
        Row::SnsUnavailable => {
            let proxy = system.sns_proxy.as_ref().context("row needs the SNS proxy")?;
            proxy.switch_off();
            writes += write_round(system, &users, 1).await?;
            writes += write_round(system, &users, 2).await?;
            // Long enough for several failed publish attempts and backoffs.
            tokio::time::sleep(Duration::from_secs(3)).await;
            if let Some(proxy) = system.sns_proxy.as_ref() {
                proxy.switch_on();
            }
            2
        }
        Row::QueueDeletedOutOfBand => {
            let queues = system.task_queues().await?;
            let victim = queues.first().context("no task queue to delete")?;
            system.aws.sqs().delete_queue().queue_url(victim).send().await?;
            writes += write_round(system, &users, 1).await?;
            writes += write_round(system, &users, 2).await?;
            2
        }
        Row::TaskRestartedDuringWrites => {
            let written = Arc::new(AtomicUsize::new(0));
            let burst = spawn_burst(system, &users, 1..4, Arc::clone(&written));
            wait_for_writes(&written, a_third_of_the_burst).await?;
            ensure!(system.stop_task(1).await, "task 1 did not stop gracefully");
            system.start_task(1).await?;
            writes += burst.await??;
            warm(system, &users).await?;
            writes += write_round(system, &users, 4).await?;
            4
        }
        Row::DuplicateAndReorderedMessages => {
            writes += write_round(system, &users, 1).await?;
            inject(system, &stale_replays(&users)?).await?;
            writes += write_round(system, &users, 2).await?;
            inject(system, &stale_replays(&users)?).await?;
            2
        }
        Row::PoisonMessages => {
            inject(system, &poison_bodies()).await?;
            writes += write_round(system, &users, 1).await?;
            inject(system, &poison_bodies()).await?;
            writes += write_round(system, &users, 2).await?;
            queues_drain(system).await?;
            for index in 0..system.task_urls.len() {
                let (status, _) = system.get(index, "/health", "").await?;
                ensure!(status == 200, "task {index} unhealthy after poison messages");
            }
            2
        }
        Row::BurstWithReads => {
            let stop_reading = Arc::new(AtomicBool::new(false));
            let reads = spawn_readers(system, &users, Arc::clone(&stop_reading));
            writes += write_round(system, &users, 1).await?;
            writes += write_round(system, &users, 2).await?;
            stop_reading.store(true, Ordering::SeqCst);
            let read_count = reads.await??;
            ensure!(read_count > 0, "the readers made no request");
            2
        }
    };

    let healed_at = Instant::now();
    let worst_time_to_consistency = converge(system, &users, final_round, healed_at).await?;
    let report = check(system, &users).await?;
    Ok(RowReport {
        row,
        writes,
        checked: report.checked,
        lost: report.never_consistent,
        worst_time_to_consistency,
        elapsed: Duration::ZERO,
    })
}

/// Renames every user once (`<id> r<round>`): one `UpdateItem` each (after the first round).
async fn write_round(system: &LocalSystem, users: &[String], round: usize) -> anyhow::Result<usize> {
    write_users(system.aws.dynamodb(), system.stack.users_table.clone(), users.to_vec(), round, None).await
}

async fn write_users(
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    users: Vec<String>,
    round: usize,
    written: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<usize> {
    futures::stream::iter(users)
        .map(|user| {
            let dynamodb = dynamodb.clone();
            let table = table.clone();
            let written = written.clone();
            async move {
                let change = UserChange {
                    name: Some(format!("{user} r{round}")),
                    roles: (round == 0).then(|| vec!["Staff".to_owned()]),
                    ..UserChange::default()
                };
                operator::put_user(&dynamodb, &table, &user, &change).await?;
                if let Some(written) = written {
                    written.fetch_add(1, Ordering::SeqCst);
                }
                anyhow::Ok(1)
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_fold(0, |total, one| async move { Ok(total + one) })
        .await
}

/// The time from `healed_at` until every task serves every user's `final_round` name: the
/// slowest (user, task) pair. A pair that never gets there is left to the consistency check.
async fn converge(system: &LocalSystem, users: &[String], final_round: usize, healed_at: Instant) -> anyhow::Result<Duration> {
    let admin = system.admin_token();
    let pairs: Vec<(usize, &String)> = (0..system.task_urls.len())
        .flat_map(|task| users.iter().map(move |user| (task, user)))
        .collect();
    let times: Vec<Duration> = futures::stream::iter(pairs)
        .map(|(task, user)| {
            let admin = admin.clone();
            let expected = format!("{user} r{final_round}");
            async move {
                loop {
                    let (status, body) = system.get(task, &format!("/admin/users/{user}"), &admin).await?;
                    if status == 200 && body["name"] == expected.as_str() {
                        return anyhow::Ok(healed_at.elapsed());
                    }
                    if healed_at.elapsed() > CHECK_PATIENCE {
                        return Ok(healed_at.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    Ok(times.into_iter().max().unwrap_or_default())
}

/// Several rounds of writes on a task of their own, counting as they go.
fn spawn_burst(
    system: &LocalSystem,
    users: &[String],
    rounds: std::ops::Range<usize>,
    written: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
    let dynamodb = system.aws.dynamodb();
    let table = system.stack.users_table.clone();
    let users = users.to_vec();
    tokio::spawn(async move {
        let mut total = 0;
        for round in rounds {
            total += write_users(dynamodb.clone(), table.clone(), users.clone(), round, Some(Arc::clone(&written))).await?;
        }
        Ok(total)
    })
}

/// Waits until a running burst has made `count` writes.
async fn wait_for_writes(written: &Arc<AtomicUsize>, count: usize) -> anyhow::Result<()> {
    eventually(PATIENCE, "part of the burst written", || {
        let written = Arc::clone(written);
        async move { Ok(written.load(Ordering::SeqCst) >= count) }
    })
    .await?;
    Ok(())
}

/// Reads every user on every task once, so each task caches them all.
async fn warm(system: &LocalSystem, users: &[String]) -> anyhow::Result<()> {
    let admin = system.admin_token();
    let pairs: Vec<(usize, &String)> = (0..system.task_urls.len())
        .flat_map(|task| users.iter().map(move |user| (task, user)))
        .collect();
    futures::stream::iter(pairs)
        .map(|(task, user)| {
            let admin = admin.clone();
            async move {
                let (status, body) = system.get(task, &format!("/admin/users/{user}"), &admin).await?;
                ensure!(status == 200, "warming {user} on task {task}: {status} {body}");
                Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Readers that hit both tasks with random users until told to stop; returns the request count.
fn spawn_readers(
    system: &LocalSystem,
    users: &[String],
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
    let urls = system.task_urls.clone();
    let admin = system.admin_token();
    let users = users.to_vec();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut count = 0_usize;
        let mut cursor = 0_usize;
        while !stop.load(Ordering::SeqCst) {
            // A cheap spread over users and tasks; uniformity is not the point, overlap is.
            cursor = cursor.wrapping_mul(31).wrapping_add(17);
            let user = &users[cursor % users.len()];
            let url = &urls[count % urls.len()];
            let response = http
                .get(format!("{url}/admin/users/{user}"))
                .bearer_auth(&admin)
                .send()
                .await?;
            ensure!(response.status().is_success(), "read of {user} failed: {}", response.status());
            count += 1;
        }
        Ok(count)
    })
}

/// Invalidations for every user with sequence numbers older than anything real, each sent
/// three times and in reverse order: evictions are idempotent, so these must change nothing.
fn stale_replays(users: &[String]) -> anyhow::Result<Vec<String>> {
    let mut bodies = Vec::new();
    for (index, user) in users.iter().enumerate().rev() {
        let message = Invalidation::Invalidate {
            source: Source::Users,
            keys: vec![KeyVersion {
                id: user.clone(),
                seq: SequenceNumber(format!("{}", 100 + index)),
                at_ms: 0,
            }],
        }
        .encode()?;
        bodies.extend(std::iter::repeat_n(message, 3));
    }
    Ok(bodies)
}

/// Bodies no relay writes: garbage, unknown versions, wrong shapes, a large blob.
fn poison_bodies() -> Vec<String> {
    vec![
        "not json at all".to_owned(),
        "{}".to_owned(),
        r#"{"v":99,"kind":"invalidate","source":"users","keys":[]}"#.to_owned(),
        r#"{"v":1,"kind":"invalidate","source":"groups","keys":[{"id":"x","seq":"1","at_ms":0}]}"#.to_owned(),
        r#"{"v":1,"kind":"reboot"}"#.to_owned(),
        "[1,2,3]".to_owned(),
        "x".repeat(200 * 1024),
    ]
}

/// Sends `bodies` to every task queue of the stack, as a misbehaving publisher would.
async fn inject(system: &LocalSystem, bodies: &[String]) -> anyhow::Result<()> {
    let sqs = system.aws.sqs();
    for queue in system.task_queues().await? {
        for body in bodies {
            sqs.send_message().queue_url(&queue).message_body(body).send().await?;
        }
    }
    Ok(())
}

/// Waits until every task queue is empty: poison must be deleted, not retried forever.
async fn queues_drain(system: &LocalSystem) -> anyhow::Result<()> {
    use aws_sdk_sqs::types::QueueAttributeName;

    let sqs = system.aws.sqs();
    for queue in system.task_queues().await? {
        eventually(PATIENCE * 3, &format!("{queue} drained"), || {
            let sqs = sqs.clone();
            let queue = queue.clone();
            async move {
                let attributes = sqs
                    .get_queue_attributes()
                    .queue_url(&queue)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await?
                    .attributes
                    .unwrap_or_default();
                let pending: u64 = attributes
                    .values()
                    .filter_map(|value| value.parse::<u64>().ok())
                    .sum();
                Ok(pending == 0)
            }
        })
        .await?;
    }
    Ok(())
}

/// The consistency check over `users` on every task.
async fn check(system: &LocalSystem, users: &[String]) -> anyhow::Result<consistency::Report> {
    let target = CheckTarget {
        tasks: system.task_urls.clone(),
        admin_token: system.admin_token(),
        users_table: system.stack.users_table.clone(),
        roles_table: system.stack.roles_table.clone(),
        patience: CHECK_PATIENCE,
    };
    let keys: Vec<(KeyKind, String)> = users.iter().map(|user| (KeyKind::User, user.clone())).collect();
    Ok(consistency::check(&system.aws.dynamodb(), &reqwest::Client::new(), &target, &keys).await?)
}

/// The Markdown table of `reports`.
#[must_use]
pub fn table(reports: &[RowReport]) -> String {
    let mut out = String::from(
        "| row | writes | (key, task) pairs checked | invalidations lost | worst time to consistency | row wall time |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for report in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} ms | {:.1} s |\n",
            report.row.title(),
            report.writes,
            report.checked,
            report.lost,
            report.worst_time_to_consistency.as_millis(),
            report.elapsed.as_secs_f64()
        ));
    }
    out
}
