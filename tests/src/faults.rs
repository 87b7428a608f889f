//! The fault matrix: each row breaks one part of the system while writes go on, heals it, and
//! ends with the consistency check — every key written during the row must read the same on every
//! task as in DynamoDB (`ConsistentRead`). Shared by `tests/tests/fault_matrix.rs`, which asserts
//! that nothing is lost and that the freshness bound holds, and the `fault-matrix` command, which
//! writes `docs/fault-matrix.md`.
//!
//! Writes go straight to the users table with the SDK (the console and scripts path). Caches are
//! warmed on every task before the fault, so a lost invalidation would show as a stale read
//! rather than hide behind a first fill.
//!
//! The silent rows (and the deleted queue) also **measure during the fault**, which is not
//! repaired while measured: a [`probe`] renames a set of users and reads every (user, task) pair
//! until each serves the new name, recording for every read answered with the old name how long
//! after the write's acknowledgement that read was made. The worst such age must stay within the
//! bound `B` — the promise the ticks keep whatever breaks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use infra::consistency::{self, CheckTarget, KeyKind};
use infra::operator::{self, UserChange};
use staleless_protocol::{Invalidation, KeyVersion, SequenceNumber, Source};

use infra::proxy::SwitchableProxy;

use crate::{LocalSystem, PATIENCE, SystemOptions, eventually};

/// How long a key may take to become consistent after a fault heals before it counts as lost.
/// One row needs more than [`PATIENCE`]: a task notices its queue was deleted only when its
/// current long poll (20 s) returns.
pub const CHECK_PATIENCE: Duration = Duration::from_secs(60);

/// Concurrent writers: enough to make bursts, few enough for a 2-core machine.
const WRITE_CONCURRENCY: usize = 8;

/// Publish attempts the relay must see refused before the SNS row brings SNS back: enough to
/// span its retries and backoffs.
const FAILED_PUBLISHES_BEFORE_SNS_RETURNS: u64 = 4;

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
    /// The relay process is paused (SIGSTOP): alive, silent, every queue still answers.
    RelayHung,
    /// SNS refuses every call of the relay.
    RelayCannotPublish,
    /// One task's SNS subscription is removed out of band; its queue stays.
    SubscriptionRemoved,
    /// A filter policy matching nothing is added to one task's subscription.
    SubscriptionFilteredToNothing,
    /// The heartbeat writer is paused (SIGSTOP).
    HeartbeatWriterStopped,
    /// DynamoDB accepts one task's connections and never answers.
    DynamoHangsForOneTask,
    /// Hostile data: a role definition whose `enabled` is the string `"yes"`, mapped to `Staff`
    /// and granting every tool.
    CorruptRoleItem,
    /// Hostile data: a profile whose `roles` is a string instead of a list.
    CorruptProfile,
    /// Hostile data: the heartbeat items of both tables written an hour ahead, then a silent
    /// outage shorter than the bound with renames inside it.
    HeartbeatsFromTheFuture,
    /// Hostile data: the heartbeat items of both tables written an hour behind, then the same
    /// outage.
    HeartbeatsFromThePast,
    /// Hostile data: heartbeat items under a writer name no task trusts, an hour ahead, then the
    /// same outage.
    ForgedWriter,
    /// Hostile data: the heartbeat writer's clock jumps an hour ahead (and stays there).
    WriterClockAhead,
    /// Hostile data: the heartbeat writer's clock jumps an hour back (and stays there).
    WriterClockBehind,
    /// Hostile data: a users-table item whose stream record names no key.
    UnreadableRecord,
}

impl Row {
    /// A file-name-safe name: `relay-hung` for [`Self::RelayHung`].
    #[must_use]
    pub fn slug(self) -> String {
        let mut slug = String::new();
        for character in format!("{self:?}").chars() {
            if character.is_ascii_uppercase() && !slug.is_empty() {
                slug.push('-');
            }
            slug.push(character.to_ascii_lowercase());
        }
        slug
    }

    /// Every row, in table order.
    pub const ALL: [Self; 13] = [
        Self::RelayKilledMidBurst,
        Self::SnsUnavailable,
        Self::QueueDeletedOutOfBand,
        Self::TaskRestartedDuringWrites,
        Self::DuplicateAndReorderedMessages,
        Self::PoisonMessages,
        Self::BurstWithReads,
        Self::RelayHung,
        Self::RelayCannotPublish,
        Self::SubscriptionRemoved,
        Self::SubscriptionFilteredToNothing,
        Self::HeartbeatWriterStopped,
        Self::DynamoHangsForOneTask,
    ];

    /// The hostile-data rows: what anyone with write access to a table can write.
    pub const HOSTILE: [Self; 8] = [
        Self::CorruptRoleItem,
        Self::CorruptProfile,
        Self::HeartbeatsFromTheFuture,
        Self::HeartbeatsFromThePast,
        Self::ForgedWriter,
        Self::WriterClockAhead,
        Self::WriterClockBehind,
        Self::UnreadableRecord,
    ];

    /// Whether the row is one of [`Self::HOSTILE`].
    #[must_use]
    pub const fn is_hostile(self) -> bool {
        matches!(
            self,
            Self::CorruptRoleItem
                | Self::CorruptProfile
                | Self::HeartbeatsFromTheFuture
                | Self::HeartbeatsFromThePast
                | Self::ForgedWriter
                | Self::WriterClockAhead
                | Self::WriterClockBehind
                | Self::UnreadableRecord
        )
    }

    /// Whether the row measures staleness during its fault with a [`probe`].
    #[must_use]
    pub const fn probes_during_fault(self) -> bool {
        matches!(
            self,
            Self::QueueDeletedOutOfBand
                | Self::RelayHung
                | Self::RelayCannotPublish
                | Self::SubscriptionRemoved
                | Self::SubscriptionFilteredToNothing
                | Self::HeartbeatWriterStopped
                | Self::DynamoHangsForOneTask
        ) || self.is_hostile()
    }

    /// Whether the row runs the example services beside the tasks — the Rust one (on the
    /// consumer crate alone) and the FastAPI one (on the Python package) — and holds them to the
    /// same bound: the silent faults of the pipeline and of their own subscriptions.
    #[must_use]
    pub const fn covers_the_example(self) -> bool {
        matches!(
            self,
            Self::RelayHung
                | Self::RelayCannotPublish
                | Self::HeartbeatWriterStopped
                | Self::SubscriptionRemoved
                | Self::SubscriptionFilteredToNothing
        )
    }

    /// Whether a task is expected to repair the fault by itself (no operator, no restart).
    #[must_use]
    pub const fn heals_itself(self) -> bool {
        matches!(
            self,
            Self::QueueDeletedOutOfBand
                | Self::SubscriptionRemoved
                | Self::SubscriptionFilteredToNothing
                | Self::DynamoHangsForOneTask
        )
    }

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
            Self::RelayHung => "relay hung (SIGSTOP), never healed while measured",
            Self::RelayCannotPublish => "relay cannot publish (SNS refuses), never healed while measured",
            Self::SubscriptionRemoved => "one task's subscription removed out of band",
            Self::SubscriptionFilteredToNothing => "one subscription filtered to nothing",
            Self::HeartbeatWriterStopped => "heartbeat writer stopped (SIGSTOP), never healed while measured",
            Self::DynamoHangsForOneTask => "DynamoDB reads hang for one task",
            Self::CorruptRoleItem => "corrupt role item (`enabled` = \"yes\", maps Staff, grants `*`)",
            Self::CorruptProfile => "corrupt profile (`roles` = \"Staff\", a string)",
            Self::HeartbeatsFromTheFuture => "heartbeats 1 h in the future in both tables, then a 1.2 s silent outage",
            Self::HeartbeatsFromThePast => "heartbeats 1 h in the past in both tables, then a 1.2 s silent outage",
            Self::ForgedWriter => "heartbeats of a forged writer id, 1 h ahead, then a 1.2 s silent outage",
            Self::WriterClockAhead => "heartbeat writer's clock jumps 1 h ahead",
            Self::WriterClockBehind => "heartbeat writer's clock jumps 1 h back",
            Self::UnreadableRecord => "unreadable stream record of a watched table (`PK` = `USER#`)",
        }
    }
}

/// A service a probe reads users from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reader {
    /// An API task, by index (`GET /admin/users/{id}`).
    Task(usize),
    /// The Rust example service (`GET /profiles/{id}`).
    Example,
    /// The FastAPI example (`GET /profiles/{id}`).
    PyExample,
}

impl Reader {
    /// Every API task, then each example service that runs.
    fn every(system: &LocalSystem) -> Vec<Self> {
        (0..system.task_urls.len())
            .map(Self::Task)
            .chain(system.example.is_some().then_some(Self::Example))
            .chain(system.py_example.is_some().then_some(Self::PyExample))
            .collect()
    }

    /// The status and the name this reader serves for `user` (`admin`: a token for the tasks).
    async fn name_of(self, system: &LocalSystem, user: &str, admin: &str) -> anyhow::Result<(u16, Option<String>)> {
        match self {
            Self::Task(task) => {
                let (status, body) = system.get(task, &format!("/admin/users/{user}"), admin).await?;
                Ok((status, body["name"].as_str().map(str::to_owned)))
            }
            Self::Example => system.example_name(user).await,
            Self::PyExample => system.py_example_name(user).await,
        }
    }
}

impl std::fmt::Display for Reader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Task(task) => write!(formatter, "task {task}"),
            Self::Example => formatter.write_str("the example"),
            Self::PyExample => formatter.write_str("the FastAPI example"),
        }
    }
}

/// What one read of a [`probe`] was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The old name: the rename it missed had been acknowledged this long before the read.
    Stale(Duration),
    /// The new name.
    Fresh,
    /// An error status.
    Failed,
}

/// One read a [`probe`] made: the staleness-over-time plots are drawn from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRead {
    /// Who answered.
    pub reader: Reader,
    /// When the read was made, from the probe's first rename (the fault already in place).
    pub at: Duration,
    /// What it was answered with.
    pub answer: Answer,
}

/// What a [`probe`] saw while a fault lasted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Users renamed.
    pub writes: usize,
    /// From the acknowledgement of a rename until every task served it, the slowest pair.
    pub worst_time_to_new_value: Duration,
    /// Reads the tasks answered by reading through past a bypassed cache, during the probe.
    pub bypassed_reads: u64,
    /// Every read, in no particular order.
    pub reads: Vec<ProbeRead>,
}

impl Probe {
    /// The oldest change a task still served: for each read answered with the old name, how long
    /// after the rename was acknowledged that read was made; the worst of them (zero if none).
    #[must_use]
    pub fn worst_staleness(&self) -> Duration {
        self.reads
            .iter()
            .filter_map(|read| match read.answer {
                Answer::Stale(age) => Some(age),
                Answer::Fresh | Answer::Failed => None,
            })
            .max()
            .unwrap_or_default()
    }

    /// Reads answered with an error (a task whose DynamoDB hangs answers 503 rather than wait).
    #[must_use]
    pub fn failed_reads(&self) -> usize {
        self.reads.iter().filter(|read| read.answer == Answer::Failed).count()
    }

    /// Staleness served over time: per reader, for each `slot` from the first rename in which
    /// it made a read, the worst staleness it served in that slot (zero when every read in it
    /// served the new name or failed), in time order.
    #[must_use]
    pub fn staleness_over_time(&self, slot: Duration) -> Vec<(Reader, Vec<(Duration, Duration)>)> {
        let slot_nanos = slot.as_nanos().max(1);
        let mut worst: BTreeMap<Reader, BTreeMap<u128, Duration>> = BTreeMap::new();
        for read in &self.reads {
            let served = match read.answer {
                Answer::Stale(age) => age,
                Answer::Fresh | Answer::Failed => Duration::ZERO,
            };
            let entry = worst
                .entry(read.reader)
                .or_default()
                .entry(read.at.as_nanos() / slot_nanos)
                .or_default();
            *entry = (*entry).max(served);
        }
        worst
            .into_iter()
            .map(|(reader, slots)| {
                let points = slots
                    .into_iter()
                    .map(|(index, stale)| {
                        let start = u64::try_from(index * slot_nanos).unwrap_or(u64::MAX);
                        (Duration::from_nanos(start), stale)
                    })
                    .collect();
                (reader, points)
            })
            .collect()
    }
}

// By hand: a failed row prints its report, and thousands of reads would bury the figures.
impl std::fmt::Debug for Probe {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Probe")
            .field("writes", &self.writes)
            .field("worst_staleness", &self.worst_staleness())
            .field("worst_time_to_new_value", &self.worst_time_to_new_value)
            .field("failed_reads", &self.failed_reads())
            .field("bypassed_reads", &self.bypassed_reads)
            .field("reads", &self.reads.len())
            .finish()
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
    /// What the probe saw during the fault, for the rows that probe.
    pub during_fault: Option<Probe>,
    /// For the rows a task repairs by itself: whether it did (re-created its subscription or
    /// queue, or read DynamoDB again) and trusted its caches again, with no help.
    pub healed_itself: Option<bool>,
    /// For the hostile rows: the requests that failed, for whom, and what an operator sees.
    pub observed: Option<String>,
}

/// Runs one row on a fresh system and stops it.
///
/// # Errors
/// When the system cannot start or a step fails; lost invalidations are reported, not errors.
pub async fn run(row: Row) -> anyhow::Result<RowReport> {
    let started = Instant::now();
    let options = SystemOptions {
        sns_through_proxy: matches!(row, Row::SnsUnavailable | Row::RelayCannotPublish),
        example: row.covers_the_example(),
        py_example: row.covers_the_example(),
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
    // A task whose DynamoDB goes through a proxy that can hang: the row's victim.
    let dynamodb_proxy = if row == Row::DynamoHangsForOneTask {
        let proxy = SwitchableProxy::start(system.aws.endpoint()).await?;
        system
            .add_task(&[("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), proxy.url().to_owned())])
            .await?;
        Some(proxy)
    } else {
        None
    };
    let mut writes = write_round(system, &users, 0).await?;
    system.until_quiescent().await?;
    warm(system, &users).await?;
    let mut during_fault = None;
    let mut healed_itself = None;
    let mut observed = None;
    // The probe renames a tenth of the users in round 1 while the fault lasts.
    let probed = &users[..users.len() / 10];

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
            let refused_before = proxy.refused();
            proxy.switch_off();
            writes += write_round(system, &users, 1).await?;
            writes += write_round(system, &users, 2).await?;
            // Several failed publish attempts and backoffs, counted at the proxy, not slept for.
            let deadline = Instant::now() + Duration::from_secs(30);
            while proxy.refused() < refused_before + FAILED_PUBLISHES_BEFORE_SNS_RETURNS {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the relay made no publish attempts while SNS was off"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(proxy) = system.sns_proxy.as_ref() {
                proxy.switch_on();
            }
            2
        }
        Row::QueueDeletedOutOfBand => {
            let queues = system.task_queues().await?;
            let victim = queues.first().context("no task queue to delete")?;
            system.aws.sqs().delete_queue().queue_url(victim).send().await?;
            let probe = probe(system, probed, 1, false).await?;
            writes += probe.writes;
            during_fault = Some(probe);
            healed_itself = Some(all_trusted_again(system).await?);
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
        Row::RelayHung
        | Row::RelayCannotPublish
        | Row::SubscriptionRemoved
        | Row::SubscriptionFilteredToNothing
        | Row::HeartbeatWriterStopped
        | Row::DynamoHangsForOneTask => {
            inject_silent_fault(system, row, dynamodb_proxy.as_ref()).await?;
            if row == Row::HeartbeatWriterStopped {
                // Invalidations still flow; what the row proves is that without ticks no task
                // trusts its caches (fail-safe): probe once the bound has passed.
                every_task_bypassing(system).await?;
            }
            let probe = probe(system, probed, 1, row == Row::DynamoHangsForOneTask).await?;
            writes += probe.writes;
            during_fault = Some(probe);
            if row.heals_itself() {
                if let Some(proxy) = &dynamodb_proxy {
                    // DynamoDB answers again; nothing else is done for the task.
                    proxy.switch_on();
                }
                healed_itself = Some(all_trusted_again(system).await?);
            } else {
                repair_silent_fault(system, row);
            }
            writes += write_round(system, &users, 2).await?;
            2
        }
        hostile_row => {
            let (probe, seen) = hostile_fault(system, hostile_row, probed, &users).await?;
            writes += probe.writes;
            during_fault = Some(probe);
            observed = Some(seen);
            writes += write_round(system, &users, 2).await?;
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
        during_fault,
        healed_itself,
        observed,
    })
}

/// Writes the hostile data of `row`, probes while it stays, then removes it (an operator's part):
/// the probe, and what failed and what an operator sees meanwhile.
async fn hostile_fault(
    system: &LocalSystem,
    row: Row,
    probed: &[String],
    users: &[String],
) -> anyhow::Result<(Probe, String)> {
    use crate::hostile::{self, AN_HOUR_MS, FORGED_WRITER, now_ms};
    use staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER;

    const OUTAGE: Duration = Duration::from_millis(1_200);
    const RENAME_INTO_THE_OUTAGE: Duration = Duration::from_millis(300);
    let metric = |name: &'static str, labels: &'static [(&'static str, &'static str)]| async move {
        hostile::metric_on_every_task(system, name, labels).await
    };
    match row {
        Row::CorruptRoleItem => {
            hostile::put_corrupt_role(system).await?;
            // The admin reads of the probe resolve permissions through the catalogue that holds it.
            let probe = probe(system, probed, 1, false).await?;
            let admin = system.admin_token();
            let staff = system.token(&users[0], &["Staff"]);
            let mut failed = 0;
            let mut granted = 0;
            for task in 0..system.task_urls.len() {
                let (status, body) = system.get(task, "/admin/roles", &admin).await?;
                failed += usize::from(status != 200);
                ensure!(
                    body["corrupt"][0]["roleId"] == hostile::CORRUPT_ROLE,
                    "task {task} does not list the corrupt role: {body}"
                );
                let (status, body) = system.get(task, "/users/me", &staff).await?;
                failed += usize::from(status != 200);
                granted += usize::from(body["appRoles"].to_string().contains(hostile::CORRUPT_ROLE));
            }
            ensure!(granted == 0, "a corrupt role's grants were given");
            let counted = metric("staleless_corrupt_items_total", &[("table", "roles")]).await?;
            hostile::delete_corrupt_role(system).await?;
            Ok((
                probe,
                format!(
                    "{failed} failed (`/users/me` of a Staff user and `/admin/roles` on both tasks); its grants not given; \
                     `/admin/roles` lists it under `corrupt` with the attribute at fault; \
                     `staleless_corrupt_items_total{{table=\"roles\"}}` = {counted} over both tasks (once per task)"
                ),
            ))
        }
        Row::CorruptProfile => {
            let victim = users.last().context("no users")?;
            hostile::put_corrupt_profile(system, victim).await?;
            let probe = probe(system, probed, 1, false).await?;
            let admin = system.admin_token();
            let mut refused = Vec::new();
            for task in 0..system.task_urls.len() {
                let (status, body) = system.get(task, &format!("/admin/users/{victim}"), &admin).await?;
                ensure!(
                    status == 500 && body["error"] == "corrupt_item" && body["message"].to_string().contains("roles"),
                    "task {task} answered {status} {body} for the corrupt profile"
                );
                refused.push(status);
            }
            let counted = metric("staleless_corrupt_items_total", &[("table", "users")]).await?;
            operator::put_user(
                &system.aws.dynamodb(),
                &system.stack.users_table,
                victim,
                &UserChange {
                    roles: Some(vec!["Staff".to_owned()]),
                    ..UserChange::default()
                },
            )
            .await?;
            Ok((
                probe,
                format!(
                    "only the corrupt user's: {} on both tasks, `corrupt_item` naming `roles`; every other user 0; \
                     `staleless_corrupt_items_total{{table=\"users\"}}` = {counted} over both tasks",
                    refused.first().copied().unwrap_or_default()
                ),
            ))
        }
        Row::HeartbeatsFromTheFuture | Row::HeartbeatsFromThePast | Row::ForgedWriter => {
            let (writer, offset) = match row {
                Row::HeartbeatsFromTheFuture => (DEFAULT_HEARTBEAT_WRITER, AN_HOUR_MS),
                Row::HeartbeatsFromThePast => (DEFAULT_HEARTBEAT_WRITER, -AN_HOUR_MS),
                _ => (FORGED_WRITER, AN_HOUR_MS),
            };
            // The real writer pauses while the hostile items travel, so the relay cannot fold
            // them into a later beat of the same item in one batch.
            let real = system.heartbeat.as_ref().context("no heartbeat writer")?;
            let (counter, reason) = if offset > 0 {
                (
                    "staleless_ticks_rejected_total",
                    if writer == FORGED_WRITER {
                        "unknown_writer"
                    } else {
                        "future"
                    },
                )
            } else {
                ("staleless_ticks_total", "")
            };
            let labels: &[(&str, &str)] = if offset > 0 { &[("reason", reason)] } else { &[] };
            let before = hostile::metric_on_every_task(system, counter, labels).await?;
            real.pause();
            hostile::put_heartbeats(system, writer, now_ms() + offset).await?;
            // A liveness wait (four hops of a busy machine's local pipeline), not a measure.
            let arrived = eventually(CHECK_PATIENCE, "the hostile ticks reaching every task", || async {
                Ok(hostile::metric_on_every_task(system, counter, labels).await? - before >= 4.0)
            })
            .await;
            real.resume();
            arrived?;
            let rejected = hostile::metric_on_every_task(system, counter, labels).await? - before;
            system.until_ticks_after(now_ms()).await?;
            let restore = hostile::filter_every_subscription_for(system, OUTAGE).await?;
            tokio::time::sleep(RENAME_INTO_THE_OUTAGE).await;
            let gaps_before = metric("staleless_tick_gaps_total", &[]).await?;
            let probe = probe(system, probed, 1, false).await?;
            restore.await??;
            let gaps = metric("staleless_tick_gaps_total", &[]).await? - gaps_before;
            Ok((
                probe,
                if offset > 0 {
                    format!(
                        "0 failed; `{counter}{{reason=\"{reason}\"}}` +{rejected} over both tasks; the outage after it \
                         caught by `staleless_tick_gaps_total` +{gaps} (caches flushed)"
                    )
                } else {
                    format!(
                        "0 failed; the {rejected} past ticks admitted but vouching for nothing; the outage after them \
                         caught by `staleless_tick_gaps_total` +{gaps} (caches flushed)"
                    )
                },
            ))
        }
        Row::WriterClockAhead | Row::WriterClockBehind => {
            let offset = if row == Row::WriterClockAhead {
                AN_HOUR_MS
            } else {
                -AN_HOUR_MS
            };
            let real = system.heartbeat.as_ref().context("no heartbeat writer")?;
            real.pause();
            let skewed = hostile::skewed_writer(system, offset);
            every_task_bypassing(system).await?;
            let probe = probe(system, probed, 1, false).await;
            skewed.abort();
            if let Some(real) = &system.heartbeat {
                real.resume();
            }
            let rejected = metric("staleless_ticks_rejected_total", &[("reason", "future")]).await?;
            Ok((
                probe?,
                format!(
                    "0 failed; both tasks read through (`staleless_cache_trusted` 0, `/admin/cache/stats` \
                     `reads: bypass`, {}); `staleless_ticks_rejected_total{{reason=\"future\"}}` = {rejected}",
                    if offset > 0 {
                        "the writer's ticks refused, its lag growing from its last beat before the jump"
                    } else {
                        "the writer's ticks admitted but an hour old: its lag an hour"
                    }
                ),
            ))
        }
        Row::UnreadableRecord => {
            let flushes_before = metric("staleless_invalidations_applied_total", &[("source", "users")]).await?;
            hostile::put_unreadable_user_item(system).await?;
            system.until_ticks_after(now_ms()).await?;
            let flushes =
                metric("staleless_invalidations_applied_total", &[("source", "users")]).await? - flushes_before;
            ensure!(
                flushes >= 2.0,
                "the unreadable record did not flush the users caches of both tasks ({flushes})"
            );
            let probe = probe(system, probed, 1, false).await?;
            Ok((
                probe,
                format!(
                    "0 failed; the relay publishes a flush of the users caches (its `UnreadableRecords` metric and alarm), \
                     applied by both tasks (`staleless_invalidations_applied_total{{source=\"users\"}}` +{flushes})"
                ),
            ))
        }
        other => anyhow::bail!("{other:?} is not a hostile row"),
    }
}

/// Breaks what `row` names and leaves it broken.
async fn inject_silent_fault(
    system: &LocalSystem,
    row: Row,
    dynamodb_proxy: Option<&SwitchableProxy>,
) -> anyhow::Result<()> {
    match row {
        Row::RelayHung => system.relay.as_ref().context("no relay")?.pause(),
        Row::HeartbeatWriterStopped => system.heartbeat.as_ref().context("no heartbeat writer")?.pause(),
        Row::RelayCannotPublish => system
            .sns_proxy
            .as_ref()
            .context("row needs the SNS proxy")?
            .switch_off(),
        Row::DynamoHangsForOneTask => dynamodb_proxy.context("row needs the DynamoDB proxy")?.hang(),
        Row::SubscriptionRemoved | Row::SubscriptionFilteredToNothing => {
            let sns = system.aws.sns();
            let subscriptions = sns
                .list_subscriptions_by_topic()
                .topic_arn(&system.stack.topic_arn)
                .send()
                .await?
                .subscriptions
                .unwrap_or_default();
            // The first task's subscription (the dead-letter queue's is not a task's), and the
            // examples': the queues of no API task.
            let api_queues = api_task_queue_names(system).await?;
            let task_subscriptions: Vec<(String, String)> = subscriptions
                .iter()
                .filter_map(|subscription| {
                    let endpoint = subscription.endpoint.as_deref()?;
                    system.stack.is_task_queue(endpoint).then(|| {
                        (
                            endpoint.to_owned(),
                            subscription.subscription_arn.clone().unwrap_or_default(),
                        )
                    })
                })
                .collect();
            let first_task = task_subscriptions
                .iter()
                .find(|(endpoint, _)| api_queues.iter().any(|queue| endpoint.ends_with(&format!(":{queue}"))))
                .context("no task subscription")?;
            let mut victims = vec![first_task.1.clone()];
            let examples: Vec<String> = task_subscriptions
                .iter()
                .filter(|(endpoint, _)| !api_queues.iter().any(|queue| endpoint.ends_with(&format!(":{queue}"))))
                .map(|(_, subscription)| subscription.clone())
                .collect();
            let running = usize::from(system.example.is_some()) + usize::from(system.py_example.is_some());
            ensure!(
                examples.len() == running,
                "{running} example services run, {} subscriptions of theirs",
                examples.len()
            );
            victims.extend(examples);
            for victim in victims {
                if row == Row::SubscriptionRemoved {
                    sns.unsubscribe().subscription_arn(victim).send().await?;
                } else {
                    sns.set_subscription_attributes()
                        .subscription_arn(victim)
                        .attribute_name("FilterPolicy")
                        .attribute_value(r#"{"source":["nothing-matches-this"]}"#)
                        .send()
                        .await?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The queue names of the running API tasks, from their stats.
async fn api_task_queue_names(system: &LocalSystem) -> anyhow::Result<Vec<String>> {
    let admin = system.admin_token();
    let mut names = Vec::new();
    for index in 0..system.task_urls.len() {
        let (_, body) = system.get(index, "/admin/cache/stats", &admin).await?;
        if let Some(queue) = body["channel"]["queue"].as_str() {
            names.push(queue.to_owned());
        }
    }
    Ok(names)
}

/// Undoes a fault no task can repair by itself (an operator's part).
fn repair_silent_fault(system: &LocalSystem, row: Row) {
    match row {
        Row::RelayHung => {
            if let Some(relay) = &system.relay {
                relay.resume();
            }
        }
        Row::HeartbeatWriterStopped => {
            if let Some(heartbeat) = &system.heartbeat {
                heartbeat.resume();
            }
        }
        Row::RelayCannotPublish => {
            if let Some(proxy) = &system.sns_proxy {
                proxy.switch_on();
            }
        }
        _ => {}
    }
}

/// Waits until every task reads past both caches.
async fn every_task_bypassing(system: &LocalSystem) -> anyhow::Result<()> {
    let admin = system.admin_token();
    eventually(PATIENCE, "every task bypassing its caches", || async {
        for index in 0..system.task_urls.len() {
            let (_, body) = system.get(index, "/admin/cache/stats", &admin).await?;
            if body["reads"] != serde_json::json!({"profiles": "bypass", "roles": "bypass"}) {
                return Ok(false);
            }
        }
        if system.examples_trusting().await?.contains(&true) {
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    Ok(())
}

/// Whether every task trusts both caches again and answers reads within [`CHECK_PATIENCE`]:
/// fresh ticks arrive through its queue and DynamoDB answers it, after whatever it had to repair.
async fn all_trusted_again(system: &LocalSystem) -> anyhow::Result<bool> {
    let admin = system.admin_token();
    let trusted = eventually(CHECK_PATIENCE, "every task trusting its caches again", || async {
        for index in 0..system.task_urls.len() {
            let (status, body) = system.get(index, "/admin/cache/stats", &admin).await?;
            if status != 200 || body["reads"] != serde_json::json!({"profiles": "cache", "roles": "cache"}) {
                return Ok(false);
            }
            if system.get(index, "/users/me", &admin).await?.0 != 200 {
                return Ok(false);
            }
        }
        if system.examples_trusting().await?.contains(&false) {
            return Ok(false);
        }
        Ok(true)
    })
    .await;
    Ok(trusted.is_ok())
}

/// Renames `users` (round `round`) straight in the table while a fault lasts, then reads every
/// (user, task) pair until each serves the new name (see [`Probe`]) — or, with `errors_settle`
/// (a task that cannot read DynamoDB), until it answers an error instead of the old name.
///
/// # Errors
/// When a write or a request fails outright, or a pair never settles within [`CHECK_PATIENCE`]
/// (the bound would then be broken beyond measure).
pub async fn probe(system: &LocalSystem, users: &[String], round: usize, errors_settle: bool) -> anyhow::Result<Probe> {
    let bypassed_before = system.bypassed_reads().await?;
    let began = Instant::now();
    let dynamodb = system.aws.dynamodb();
    let acknowledged: Vec<(String, Instant)> = futures::stream::iter(users.iter().cloned())
        .map(|user| {
            let dynamodb = dynamodb.clone();
            let table = system.stack.users_table.clone();
            async move {
                let change = UserChange {
                    name: Some(format!("{user} r{round}")),
                    ..UserChange::default()
                };
                operator::put_user(&dynamodb, &table, &user, &change).await?;
                anyhow::Ok((user, Instant::now()))
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    let admin = system.admin_token();
    let readers = Reader::every(system);
    let pairs: Vec<(Reader, &(String, Instant))> = readers
        .into_iter()
        .flat_map(|task| acknowledged.iter().map(move |pair| (task, pair)))
        .collect();
    // Per pair: how long until it settled, and every read it took.
    let outcomes: Vec<(Duration, Vec<ProbeRead>)> = futures::stream::iter(pairs)
        .map(|(task, (user, written_at))| {
            let admin = admin.clone();
            let expected = format!("{user} r{round}");
            async move {
                let mut reads = Vec::new();
                loop {
                    let asked_at = Instant::now();
                    let (status, name) = task.name_of(system, user, &admin).await?;
                    let waited = asked_at.saturating_duration_since(*written_at);
                    let answer = match (status, name.as_deref() == Some(expected.as_str())) {
                        (200, true) => Answer::Fresh,
                        (200, false) => Answer::Stale(waited),
                        _ => Answer::Failed,
                    };
                    reads.push(ProbeRead {
                        reader: task,
                        at: asked_at.saturating_duration_since(began),
                        answer,
                    });
                    if answer == Answer::Fresh || (answer == Answer::Failed && errors_settle) {
                        return anyhow::Ok((waited, reads));
                    }
                    ensure!(
                        written_at.elapsed() <= CHECK_PATIENCE,
                        "{task} still serves {user} without round {round} after {CHECK_PATIENCE:?}: {status} {name:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    Ok(Probe {
        writes: users.len(),
        worst_time_to_new_value: outcomes.iter().map(|outcome| outcome.0).max().unwrap_or_default(),
        bypassed_reads: system.bypassed_reads().await?.saturating_sub(bypassed_before),
        reads: outcomes.into_iter().flat_map(|outcome| outcome.1).collect(),
    })
}

/// Renames every user once (`<id> r<round>`): one `UpdateItem` each (after the first round).
async fn write_round(system: &LocalSystem, users: &[String], round: usize) -> anyhow::Result<usize> {
    write_users(
        system.aws.dynamodb(),
        system.stack.users_table.clone(),
        users.to_vec(),
        round,
        None,
    )
    .await
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
async fn converge(
    system: &LocalSystem,
    users: &[String],
    final_round: usize,
    healed_at: Instant,
) -> anyhow::Result<Duration> {
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
            total += write_users(
                dynamodb.clone(),
                table.clone(),
                users.clone(),
                round,
                Some(Arc::clone(&written)),
            )
            .await?;
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
                // Before any fault: a 503 is a DynamoDB call past the task's timeout on a busy
                // machine, which the next read retries as a client would.
                let mut last = (0, serde_json::Value::Null);
                let started = Instant::now();
                while started.elapsed() < PATIENCE {
                    last = system.get(task, &format!("/admin/users/{user}"), &admin).await?;
                    if last.0 != 503 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let (status, body) = last;
                ensure!(status == 200, "warming {user} on task {task}: {status} {body}");
                Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let examples = Reader::every(system)
        .into_iter()
        .filter(|reader| !matches!(reader, Reader::Task(_)));
    for example in examples {
        futures::stream::iter(users)
            .map(|user| async move {
                let (status, name) = example.name_of(system, user, "").await?;
                ensure!(status == 200, "warming {user} on {example}: {status} {name:?}");
                Ok(())
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
    }
    Ok(())
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
            ensure!(
                response.status().is_success(),
                "read of {user} failed: {}",
                response.status()
            );
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
            source: Source::USERS,
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
                let pending: u64 = attributes.values().filter_map(|value| value.parse::<u64>().ok()).sum();
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

/// The Markdown table of hostile-data `reports`: the worst staleness served while the data
/// stayed, the requests that failed and for whom, and what an operator sees.
#[must_use]
pub fn hostile_table(reports: &[RowReport]) -> String {
    let mut out = String::from(
        "| hostile data | worst staleness served | time to the new value | bypassed reads | failed requests, for whom, and what the operator sees | invalidations lost | row wall time |\n|---|---:|---:|---:|---|---:|---:|\n",
    );
    for report in reports {
        let probe = report.during_fault.clone().unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} ms | {} ms | {} | {} | {} | {:.1} s |\n",
            report.row.title(),
            probe.worst_staleness().as_millis(),
            probe.worst_time_to_new_value.as_millis(),
            probe.bypassed_reads,
            report.observed.as_deref().unwrap_or("—"),
            report.lost,
            report.elapsed.as_secs_f64()
        ));
    }
    out
}

/// The Markdown table of `reports`.
#[must_use]
pub fn table(reports: &[RowReport]) -> String {
    let mut out = String::from(
        "| row | writes | (key, task) pairs checked | invalidations lost | worst staleness served during the fault | time to the new value during the fault | bypassed reads | failed reads | healed itself | worst time to consistency after repair | row wall time |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for report in reports {
        let probe = report.during_fault.as_ref().map_or_else(
            || "— | — | — | —".to_owned(),
            |probe| {
                format!(
                    "{} ms | {} ms | {} | {}",
                    probe.worst_staleness().as_millis(),
                    probe.worst_time_to_new_value.as_millis(),
                    probe.bypassed_reads,
                    probe.failed_reads()
                )
            },
        );
        let healed = match report.healed_itself {
            None => "—",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {probe} | {healed} | {} ms | {:.1} s |\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_over_time_keeps_the_worst_read_of_each_slot_per_reader() {
        let read = |reader, at_ms, answer| ProbeRead {
            reader,
            at: Duration::from_millis(at_ms),
            answer,
        };
        let ms = Duration::from_millis;
        let probe = Probe {
            reads: vec![
                read(Reader::Task(1), 10, Answer::Stale(ms(5))),
                read(Reader::Task(0), 30, Answer::Stale(ms(25))),
                read(Reader::Task(0), 10, Answer::Stale(ms(5))),
                read(Reader::Task(0), 120, Answer::Fresh),
                read(Reader::Task(0), 150, Answer::Stale(ms(145))),
                read(Reader::Task(0), 260, Answer::Failed),
                read(Reader::PyExample, 210, Answer::Fresh),
            ],
            ..Probe::default()
        };
        assert_eq!(
            probe.staleness_over_time(ms(100)),
            vec![
                (
                    Reader::Task(0),
                    vec![(ms(0), ms(25)), (ms(100), ms(145)), (ms(200), ms(0))]
                ),
                (Reader::Task(1), vec![(ms(0), ms(5))]),
                (Reader::PyExample, vec![(ms(200), ms(0))]),
            ]
        );
    }

    #[test]
    fn slugs_are_kebab_case_and_distinct() {
        assert_eq!(Row::RelayHung.slug(), "relay-hung");
        assert_eq!(Row::DynamoHangsForOneTask.slug(), "dynamo-hangs-for-one-task");
        let slugs: std::collections::BTreeSet<String> =
            Row::ALL.iter().chain(&Row::HOSTILE).map(|row| row.slug()).collect();
        assert_eq!(slugs.len(), Row::ALL.len() + Row::HOSTILE.len());
    }
}
