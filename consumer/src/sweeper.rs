//! The sweeper: removes what crashed tasks left behind.
//!
//! A task that dies without its shutdown leaves a queue (filling up until retention drops the
//! messages) and a subscription (every publish fans out to it). One sweeper serves the whole
//! fleet — the `queue-sweeper` binary: a scheduled Lambda on AWS, a process in the local stack —
//! so what each task costs does not grow with the number of tasks, and no task needs permission
//! to touch another task's queue. Each sweep unsubscribes and deletes the queues of the prefix
//! whose heartbeat tag is stale (a live task re-tags its own queue every
//! `QUEUE_HEARTBEAT_INTERVAL_SECS`, far more often than `QUEUE_STALE_AFTER_SECS`), and removes
//! subscriptions of the topic whose queue no longer exists — in moto such a subscription even
//! stops delivery to the subscribers after it (`docs/design.md`, "Where the local emulator differs from AWS").

use std::time::Duration;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;

use crate::queue::{self, HEARTBEAT_TAG, is_queue_missing};
use crate::{ChannelClients, unix_now_secs};

/// Stale queues and orphaned subscriptions removed by the sweeper, by `kind`.
pub const SWEPT: &str = "staleless_sweeper_removed_total";

/// What a sweep that removed nothing logs (at debug level): a test counts these lines to know
/// that sweeps went by, instead of sleeping for some.
pub const NOTHING_TO_SWEEP: &str = "sweep found nothing to remove";
/// The sweeper's log target, for a `RUST_LOG` directive that shows its debug lines.
pub const LOG_TARGET: &str = module_path!();

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Queues with a stale heartbeat, deleted (after their subscriptions).
    pub stale_queues: usize,
    /// Subscriptions whose queue was gone, removed.
    pub orphaned_subscriptions: usize,
}

/// Sweeps the queues of one prefix and the subscriptions of one topic.
pub struct Sweeper {
    /// SQS and SNS.
    clients: ChannelClients,
    /// The relay's topic.
    topic_arn: String,
    /// Only queues named `<prefix>-…` are considered.
    prefix: String,
    /// A heartbeat older than this is a crashed task's.
    stale_after: Duration,
    /// The tag holding a queue's heartbeat.
    heartbeat_tag: String,
}

fn describe<E: std::error::Error + 'static>(operation: &str, err: &E) -> String {
    format!("{operation}: {}", DisplayErrorContext(err))
}

impl Sweeper {
    /// A sweeper of `prefix`'s queues and `topic_arn`'s subscriptions.
    #[must_use]
    pub fn new(clients: ChannelClients, topic_arn: String, prefix: String, stale_after: Duration) -> Self {
        Self {
            clients,
            topic_arn,
            prefix,
            stale_after,
            heartbeat_tag: HEARTBEAT_TAG.to_owned(),
        }
    }

    /// Reads each queue's heartbeat from the tag `name` (the tasks' `QUEUE_HEARTBEAT_TAG`).
    #[must_use]
    pub fn with_heartbeat_tag(mut self, name: &str) -> Self {
        name.clone_into(&mut self.heartbeat_tag);
        self
    }

    /// Sweeps every `interval` until `cancel`. A sweep that found nothing logs [`NOTHING_TO_SWEEP`]
    /// at debug level.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.sweep_once().await {
                Ok(report) if report != SweepReport::default() => tracing::info!(?report, "sweeper removed leftovers"),
                // At debug: one line per sweep would flood an operator's log every interval.
                Ok(_) => tracing::debug!("{NOTHING_TO_SWEEP}"),
                Err(err) => tracing::warn!(error = %err, "sweep failed; will retry"),
            }
        }
    }

    /// One sweep.
    ///
    /// # Errors
    /// A description of the first listing call that failed (removals are best effort).
    pub async fn sweep_once(&self) -> Result<SweepReport, String> {
        let subscriptions = self.subscriptions().await?;
        let mut report = SweepReport::default();
        let mut removed: Vec<&str> = Vec::new();
        let name_prefix = format!("{}-", self.prefix);

        let urls = self.queue_urls(&name_prefix).await?;
        // Queues the listing shows exist; only a subscription whose queue it does not show costs
        // a GetQueueUrl (the listing is eventually consistent), so a sweep costs O(tasks) calls.
        let queue_name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut listed: std::collections::HashSet<String> = urls.iter().map(|url| queue_name(url)).collect();
        for url in &urls {
            let tags = match self.clients.sqs.list_queue_tags().queue_url(url).send().await {
                Ok(output) => output.tags.unwrap_or_default(),
                Err(_) => continue, // deleted meanwhile, or not ours to read
            };
            if !queue::heartbeat_is_stale(
                tags.get(&self.heartbeat_tag).map(String::as_str),
                unix_now_secs(),
                self.stale_after.as_secs(),
            ) {
                continue;
            }
            let arn = self
                .clients
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .ok()
                .and_then(|output| output.attributes)
                .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn));
            if let Some(arn) = &arn {
                for (subscription, _) in subscriptions.iter().filter(|(_, endpoint)| endpoint == arn) {
                    if self.unsubscribe(subscription).await {
                        report.orphaned_subscriptions += 1;
                        removed.push(subscription);
                    }
                }
            }
            match self.clients.sqs.delete_queue().queue_url(url).send().await {
                Ok(_) => {
                    listed.remove(&queue_name(url));
                    report.stale_queues += 1;
                    metrics::counter!(SWEPT, "kind" => "queue").increment(1);
                    tracing::info!(queue = %url, "deleted the queue of a task whose heartbeat stopped");
                }
                Err(err) => {
                    tracing::warn!(queue = %url, error = %DisplayErrorContext(&err), "cannot delete stale queue")
                }
            }
        }

        for (subscription, endpoint) in subscriptions.iter().filter(|(arn, _)| !removed.contains(&arn.as_str())) {
            let Some(name) = queue::queue_name_from_arn(endpoint).filter(|name| name.starts_with(&name_prefix)) else {
                continue;
            };
            if listed.contains(name) {
                continue;
            }
            let lookup = self.clients.sqs.get_queue_url().queue_name(name).send().await;
            if let Err(err) = lookup
                && is_queue_missing(err.as_service_error().and_then(ProvideErrorMetadata::code))
                && self.unsubscribe(subscription).await
            {
                report.orphaned_subscriptions += 1;
            }
        }
        Ok(report)
    }

    /// `(subscription ARN, endpoint)` of every confirmed SQS subscription of the topic.
    async fn subscriptions(&self) -> Result<Vec<(String, String)>, String> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .clients
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(&self.topic_arn)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|err| describe("ListSubscriptionsByTopic", &err))?;
            for subscription in output.subscriptions.unwrap_or_default() {
                if subscription.protocol.as_deref() != Some("sqs") {
                    continue;
                }
                if let (Some(arn), Some(endpoint)) = (subscription.subscription_arn, subscription.endpoint)
                    && arn.starts_with("arn:")
                {
                    all.push((arn, endpoint));
                }
            }
            match output.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(all),
            }
        }
    }

    async fn queue_urls(&self, name_prefix: &str) -> Result<Vec<String>, String> {
        let mut urls = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .clients
                .sqs
                .list_queues()
                .queue_name_prefix(name_prefix)
                .max_results(1_000)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|err| describe("ListQueues", &err))?;
            urls.extend(output.queue_urls.unwrap_or_default());
            match output.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(urls),
            }
        }
    }

    async fn unsubscribe(&self, subscription: &str) -> bool {
        match self
            .clients
            .sns
            .unsubscribe()
            .subscription_arn(subscription)
            .send()
            .await
        {
            Ok(_) => {
                metrics::counter!(SWEPT, "kind" => "subscription").increment(1);
                true
            }
            Err(err) => {
                tracing::warn!(subscription, error = %DisplayErrorContext(&err), "cannot remove subscription");
                false
            }
        }
    }
}
