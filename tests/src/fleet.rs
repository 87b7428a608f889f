//! What each API task costs as the fleet grows, measured on the local stack: the SQS and SNS
//! calls of `N` real task processes through counting proxies (steady state and start-up), the
//! fleet sweeper's calls per sweep, and staleness under one write load at two fleet sizes.
//!
//! Used by the `bench` binary (`scripts/bench`, or `scripts/bench fleet` for this part alone).

use std::time::{Duration, Instant};

use staleless_api::state::ChannelClients;
use staleless_consumer::sweeper::Sweeper;

use crate::bench::{self, StalenessOptions, StalenessReport};
use crate::bench_proxy::{CountingProxy, Counts};
use crate::{LocalSystem, SystemOptions};

/// The fleet sweeper's schedule on AWS (`QueueSweeperFunction`, `rate(5 minutes)`).
pub const SWEEPS_PER_HOUR: f64 = 12.0;

/// Calls that are neither a receive nor a delete of a received message: the management calls.
#[must_use]
pub fn is_management(action: &str) -> bool {
    !matches!(action, "ReceiveMessage" | "DeleteMessage" | "DeleteMessageBatch")
}

/// Calls of one fleet size.
#[derive(Debug, Clone)]
pub struct FleetCalls {
    /// API tasks running.
    pub tasks: usize,
    /// The steady-state window measured.
    pub window: Duration,
    /// SQS and SNS calls of all tasks during `window`, by action.
    pub steady: Counts,
    /// SQS and SNS calls of all tasks while they started (queue, policy, subscription), by action.
    pub startup: Counts,
    /// The fleet sweeper's SQS and SNS calls in one sweep of this fleet, by action.
    pub sweep: Counts,
}

impl FleetCalls {
    /// `action`'s calls per task per hour in the steady state.
    #[must_use]
    pub fn per_task_hour(&self, action: &str) -> f64 {
        self.rate(self.steady.get(action).copied().unwrap_or(0))
    }

    /// Calls matching `select` per task per hour in the steady state.
    #[must_use]
    pub fn per_task_hour_where(&self, select: impl Fn(&str) -> bool) -> f64 {
        self.rate(
            self.steady
                .iter()
                .filter(|(action, _)| select(action))
                .map(|(_, count)| count)
                .sum(),
        )
    }

    /// The fleet sweeper's calls per task per hour, at its schedule.
    #[must_use]
    pub fn sweeper_per_task_hour(&self) -> f64 {
        self.sweep.values().sum::<u64>() as f64 * SWEEPS_PER_HOUR / self.tasks.max(1) as f64
    }

    /// Start-up management calls per task (once per task lifetime): the receives of tasks
    /// already running while the others start are not start-up work.
    #[must_use]
    pub fn startup_management_per_task(&self) -> f64 {
        self.startup
            .iter()
            .filter(|(action, _)| is_management(action))
            .map(|(_, count)| count)
            .sum::<u64>() as f64
            / self.tasks.max(1) as f64
    }

    fn rate(&self, calls: u64) -> f64 {
        calls as f64 / self.tasks.max(1) as f64 * 3_600.0 / self.window.as_secs_f64().max(f64::EPSILON)
    }
}

/// What the fleet measurement does.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Fleet sizes whose calls are counted (e.g. 2, 10, 30).
    pub sizes: Vec<usize>,
    /// Steady-state window per size: long enough for several heartbeat tags (60 s apart).
    pub window: Duration,
    /// Fleet sizes whose staleness is measured under the same write load (e.g. 3, 30).
    pub staleness_sizes: Vec<usize>,
    /// The write load of each staleness run.
    pub staleness: StalenessOptions,
    /// Users behind the staleness writes.
    pub users: usize,
    /// The freshness settings of the systems (the product's defaults).
    pub system: SystemOptions,
}

/// Both measures.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Calls by fleet size.
    pub calls: Vec<FleetCalls>,
    /// Staleness by fleet size.
    pub staleness: Vec<(usize, StalenessReport)>,
}

/// The sum of two proxies' counts.
fn merged(first: &Counts, second: &Counts) -> Counts {
    let mut all = first.clone();
    for (action, count) in second {
        *all.entry(action.clone()).or_default() += count;
    }
    all
}

/// `after − before`, by action.
fn difference(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(action, count)| {
            (
                action.clone(),
                count.saturating_sub(before.get(action).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// A system of `tasks` tasks whose SQS and SNS calls go through the two counting proxies.
async fn counted_system(
    options: &FleetOptions,
    tasks: usize,
) -> anyhow::Result<(LocalSystem, CountingProxy, CountingProxy, Counts)> {
    let mut system = LocalSystem::start(SystemOptions {
        tasks: 0,
        ..options.system.clone()
    })
    .await?;
    let sqs = CountingProxy::start(system.aws.endpoint()).await?;
    let sns = CountingProxy::start(system.aws.endpoint()).await?;
    let env = [
        ("AWS_ENDPOINT_URL_SQS".to_owned(), sqs.url().to_owned()),
        ("AWS_ENDPOINT_URL_SNS".to_owned(), sns.url().to_owned()),
    ];
    for started in 0..tasks {
        if let Err(err) = system.add_task(&env).await {
            system.stop().await;
            return Err(err.context(format!("starting task {} of {tasks}", started + 1)));
        }
    }
    let startup = merged(&sqs.counts(), &sns.counts());
    Ok((system, sqs, sns, startup))
}

/// One sweep of the fleet sweeper against `system`, its calls counted.
async fn one_sweep(system: &LocalSystem) -> anyhow::Result<Counts> {
    let sqs = CountingProxy::start(system.aws.endpoint()).await?;
    let sns = CountingProxy::start(system.aws.endpoint()).await?;
    let clients = ChannelClients {
        sqs: aws_sdk_sqs::Client::new(&infra::sdk_config_for(sqs.url())),
        sns: aws_sdk_sns::Client::new(&infra::sdk_config_for(sns.url())),
        sts: aws_sdk_sts::Client::new(&infra::sdk_config_for(system.aws.endpoint())),
    };
    let sweeper = Sweeper::new(
        clients,
        system.stack.topic_arn.clone(),
        system.stack.task_queue_prefix.clone(),
        Duration::from_secs(600),
    );
    let report = sweeper.sweep_once().await.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        report.stale_queues == 0,
        "the sweeper removed {} live task queues",
        report.stale_queues
    );
    Ok(merged(&sqs.counts(), &sns.counts()))
}

/// Counts the calls of each fleet size, then measures staleness at each staleness size.
///
/// # Errors
/// When a system does not start or a measure fails.
pub async fn measure(options: &FleetOptions, http: &reqwest::Client) -> anyhow::Result<FleetReport> {
    let mut report = FleetReport::default();
    for &tasks in &options.sizes {
        eprintln!("fleet: {tasks} tasks, calls over {:.0} s", options.window.as_secs_f64());
        let (system, sqs, sns, startup) = counted_system(options, tasks).await?;
        let outcome = async {
            // Every start-up and seed invalidation has reached every task: what follows is the
            // steady state.
            system.until_quiescent().await?;
            let before = merged(&sqs.counts(), &sns.counts());
            let started = Instant::now();
            tokio::time::sleep(options.window).await;
            let steady = difference(&before, &merged(&sqs.counts(), &sns.counts()));
            let window = started.elapsed();
            let sweep = one_sweep(&system).await?;
            anyhow::Ok(FleetCalls {
                tasks,
                window,
                steady,
                startup,
                sweep,
            })
        }
        .await;
        system.stop().await;
        report.calls.push(outcome?);
    }
    for &tasks in &options.staleness_sizes {
        eprintln!(
            "fleet: {tasks} tasks, staleness over {} writes",
            options.staleness.writes
        );
        let (system, _sqs, _sns, _) = counted_system(options, tasks).await?;
        let outcome = async {
            let users = bench::bench_users(&system, options.users).await?;
            system.until_quiescent().await?;
            bench::staleness(&system, http, &users, options.staleness).await
        }
        .await;
        system.stop().await;
        report.staleness.push((tasks, outcome?));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_task_and_hour_and_management_excludes_receives_and_deletes() {
        let calls = FleetCalls {
            tasks: 10,
            window: Duration::from_secs(360),
            steady: Counts::from([
                ("ReceiveMessage".to_owned(), 1_000),
                ("DeleteMessageBatch".to_owned(), 500),
                ("TagQueue".to_owned(), 60),
            ]),
            startup: Counts::from([
                ("CreateQueue".to_owned(), 10),
                ("Subscribe".to_owned(), 10),
                ("ReceiveMessage".to_owned(), 7),
            ]),
            sweep: Counts::from([("ListQueues".to_owned(), 1), ("ListQueueTags".to_owned(), 10)]),
        };
        assert!((calls.per_task_hour("ReceiveMessage") - 1_000.0).abs() < 1e-9);
        assert!((calls.per_task_hour_where(is_management) - 60.0).abs() < 1e-9);
        assert!((calls.startup_management_per_task() - 2.0).abs() < 1e-9);
        assert!((calls.sweeper_per_task_hour() - 11.0 * 12.0 / 10.0).abs() < 1e-9);
        assert_eq!(
            difference(&calls.startup, &merged(&calls.startup, &calls.sweep)),
            calls.sweep
        );
    }
}
