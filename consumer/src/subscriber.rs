//! The subscriber: one per process, owning this task's SQS queue.
//!
//! Lifecycle: create the queue (its policy admitting only the topic is part of `CreateQueue`, so
//! SNS is never refused while a later `SetQueueAttributes` propagates; server-side encryption,
//! short retention, heartbeat tag), subscribe it to the topic with raw delivery (`/ready` 200
//! from then on). Then long-poll, apply, and delete what was applied. Ticks are recorded per
//! source; a tick that brings a cache back within the bound flushes that cache first. A
//! malformed message is counted, logged and deleted.
//!
//! Healing: while the queue answers but a source's ticks stay silent, the listener checks its
//! subscription and re-creates it when it is gone or altered (endpoint, raw delivery, a filter
//! policy added out of band). A queue deleted out of band is recreated and resubscribed. Either
//! way the caches are flushed, since messages were lost. On shutdown: unsubscribe, then delete
//! the queue (in that order: moto and SNS misbehave on subscriptions whose queue is gone,
//! `docs/design.md`, "Where the local emulator differs from AWS").

use std::time::{Duration, Instant};

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, QueueAttributeName};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::caches::Caches;
use crate::config::SubscriberConfig;
use crate::health::ChannelHealth;
use crate::inbox::{Inbox, Received};
use crate::queue::{self, is_queue_missing};
use crate::{ChannelClients, unix_now_secs};

/// Messages per receive: the SQS maximum.
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html>
const MAX_MESSAGES_PER_RECEIVE: i32 = 10;
/// SQS keeps messages 60 s to 14 days.
const RETENTION_RANGE_SECS: (u64, u64) = (60, 1_209_600);
/// Extra time a receive may take beyond its long-poll wait before it counts as hung.
const RECEIVE_GRACE: Duration = Duration::from_secs(10);
/// Ceiling of the back-off between failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a channel call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The queue does not exist (deleted out of band, or by the sweeper of another task).
    #[error("queue does not exist")]
    QueueGone,
    /// Any other failure, described.
    #[error("{operation}: {detail}")]
    Call {
        /// The API call.
        operation: &'static str,
        /// What failed.
        detail: String,
    },
}

fn call_error<E>(operation: &'static str, err: &aws_sdk_sqs::error::SdkError<E>) -> ChannelError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if is_queue_missing(err.as_service_error().and_then(ProvideErrorMetadata::code)) {
        ChannelError::QueueGone
    } else {
        ChannelError::Call {
            operation,
            detail: DisplayErrorContext(err).to_string(),
        }
    }
}

/// An SNS or STS call's error, described with its whole chain.
fn described_error<E: std::error::Error + 'static>(operation: &'static str, err: &E) -> ChannelError {
    ChannelError::Call {
        operation,
        detail: DisplayErrorContext(err).to_string(),
    }
}

/// The queue this task owns while it runs.
#[derive(Debug, Clone)]
pub struct TaskQueue {
    /// Queue name.
    pub name: String,
    /// Queue URL, for every SQS call.
    pub url: String,
    /// Queue ARN, the subscription's endpoint.
    pub arn: String,
    /// The subscription, removed on shutdown.
    pub subscription_arn: String,
    /// When the heartbeat tag is next written: an interval after the last success, a quarter of
    /// one after a failure (so a throttled `TagQueue` is not retried after every receive, yet
    /// the tag is refreshed well before the sweeper's `QUEUE_STALE_AFTER_SECS`).
    next_heartbeat: Instant,
    /// When the subscription was made (or last checked): ticks can only be missed after it.
    subscription_checked: Instant,
}

/// Exponential back-off: 250 ms, 500 ms, … up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << failures.min(8))).min(MAX_BACKOFF)
}

/// Sleeps, or returns `true` at once if cancelled.
async fn cancelled_during(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// The subscriber of one process.
pub struct Subscriber {
    /// The trust it records ticks into.
    health: Arc<ChannelHealth>,
    /// What it does with each message: evictions, flushes, ticks.
    inbox: Inbox,
    /// SQS, SNS and STS.
    clients: ChannelClients,
    /// The relay's topic.
    topic_arn: String,
    /// Poll wait, retention, heartbeat.
    config: SubscriberConfig,
    /// `<prefix>-<task id>`.
    base_name: String,
    /// How many times the queue was recreated under a new name (SQS refuses a deleted name for
    /// 60 s).
    generation: u32,
    /// This task's `aws:userid`, the queue's owner tag; asked once, at the first set-up.
    owner: Option<String>,
}

impl Subscriber {
    /// A subscriber for the task `task_id` to `topic_arn`, recording ticks into `health` and
    /// evicting from `caches`.
    #[must_use]
    pub fn new(
        health: Arc<ChannelHealth>,
        caches: Caches,
        clients: ChannelClients,
        topic_arn: &str,
        config: SubscriberConfig,
        task_id: &str,
    ) -> Self {
        let base_name = queue::queue_name(&config.queue_name_prefix, task_id);
        Self {
            inbox: Inbox::new(Arc::clone(&health), caches),
            health,
            clients,
            topic_arn: topic_arn.to_owned(),
            config,
            base_name,
            generation: 0,
            owner: None,
        }
    }

    /// Names the table whose stream feeds `source`: records of it given up by the event source
    /// mapping flush that source's caches (and records of an unnamed table flush every cache).
    #[must_use]
    pub fn with_table(mut self, table: &str, source: &str) -> Self {
        self.inbox = self.inbox.with_table(table, source);
        self
    }

    /// This task's `aws:userid` (`<role id>:<session name>` for a task role), asked once.
    async fn owner(&mut self) -> Result<String, ChannelError> {
        if let Some(owner) = &self.owner {
            return Ok(owner.clone());
        }
        let owner = self
            .clients
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|err| described_error("GetCallerIdentity", &err))?
            .user_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ChannelError::Call {
                operation: "GetCallerIdentity",
                detail: "no UserId".to_owned(),
            })?;
        self.owner = Some(owner.clone());
        Ok(owner)
    }

    /// The name the queue gets (or got) first.
    #[must_use]
    pub fn queue_name(&self) -> &str {
        &self.base_name
    }

    /// Runs until `cancel`, then removes the queue and its subscription.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut queue: Option<TaskQueue> = None;
        let mut failures = 0u32;
        let started = Instant::now();
        loop {
            let Some(current) = queue.as_mut() else {
                let created = tokio::select! {
                    () = cancel.cancelled() => break,
                    created = self.create_and_subscribe() => created,
                };
                match created {
                    Ok(created) => {
                        tracing::info!(queue = %created.name, "invalidation queue subscribed");
                        // Whatever was cached before this subscription may have missed messages.
                        self.inbox.flush_all_sources("invalidation queue (re)subscribed");
                        self.health.mark_subscribed(&created.name);
                        self.health.record_receive();
                        queue = Some(created);
                        failures = 0;
                    }
                    Err(err) => {
                        failures += 1;
                        tracing::warn!(error = %err, "cannot set up the invalidation queue; retrying");
                        if started.elapsed() > self.health.bound() {
                            // Serve anyway: every read goes through to DynamoDB until ticks arrive.
                            self.health.mark_started();
                        }
                        if cancelled_during(backoff(failures), &cancel).await {
                            break;
                        }
                    }
                }
                continue;
            };
            let received = tokio::select! {
                () = cancel.cancelled() => break,
                received = self.receive(current) => received,
            };
            match received {
                Ok(messages) => {
                    failures = 0;
                    self.health.record_receive();
                    self.handle(current, messages).await;
                    self.heartbeat_if_due(current).await;
                    self.heal_if_silent(current).await;
                }
                Err(ChannelError::QueueGone) => {
                    // Messages sent meanwhile are lost: stop trusting now; the new subscription
                    // flushes before trust returns.
                    self.health.mark_unsubscribed();
                    metrics::counter!(self.health.metric_names().queue_recreated.clone()).increment(1);
                    tracing::warn!(queue = %current.name, "invalidation queue deleted out of band; recreating it");
                    self.unsubscribe(current).await;
                    queue = None;
                }
                Err(err) => {
                    failures += 1;
                    metrics::counter!(self.health.metric_names().queue_receive_errors.clone()).increment(1);
                    tracing::warn!(queue = %current.name, error = %err, "receive failed; backing off");
                    if cancelled_during(backoff(failures), &cancel).await {
                        break;
                    }
                }
            }
        }
        self.health.mark_unsubscribed();
        if let Some(queue) = queue {
            self.remove(&queue).await;
        }
    }

    /// While the queue answers but a source's ticks are silent for half the bound, checks (at
    /// most once per half bound) that the subscription still exists unaltered, and re-creates it
    /// if not. A relay or stream outage also silences ticks; then the check finds nothing to heal.
    async fn heal_if_silent(&self, queue: &mut TaskQueue) {
        let half_bound = self.health.bound() / 2;
        if queue.subscription_checked.elapsed() < half_bound {
            return;
        }
        let silent = self.health.sources().iter().any(|spec| {
            self.health
                .since_tick(&spec.source)
                .is_none_or(|since| since > half_bound)
        });
        if !silent {
            return;
        }
        queue.subscription_checked = Instant::now();
        let problem = match self
            .clients
            .sns
            .get_subscription_attributes()
            .subscription_arn(&queue.subscription_arn)
            .send()
            .await
        {
            Ok(output) => {
                queue::subscription_problem(&output.attributes.unwrap_or_default(), &queue.arn, &self.topic_arn)
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found_exception()) => {
                Some("subscription not found".to_owned())
            }
            Err(err) => {
                tracing::warn!(queue = %queue.name, error = %DisplayErrorContext(&err), "cannot check the subscription");
                None
            }
        };
        let Some(problem) = problem else {
            tracing::debug!(queue = %queue.name, "ticks silent but the subscription is intact (pipeline outage upstream?)");
            return;
        };
        tracing::warn!(queue = %queue.name, problem = %problem, "subscription gone or altered out of band; re-creating it");
        self.health.mark_unsubscribed();
        self.unsubscribe(queue).await;
        match self.subscribe(&queue.arn).await {
            Ok(subscription_arn) => {
                queue.subscription_arn = subscription_arn;
                metrics::counter!(self.health.metric_names().subscription_healed.clone()).increment(1);
                self.inbox.flush_all_sources("subscription re-created");
                self.health.mark_subscribed(&queue.name);
            }
            // Trust stays off; the next check (half a bound later) tries again.
            Err(err) => tracing::warn!(queue = %queue.name, error = %err, "cannot re-create the subscription"),
        }
    }

    /// Creates (or reuses) the queue with its policy and subscribes it.
    ///
    /// # Errors
    /// The first failing call.
    pub async fn create_and_subscribe(&mut self) -> Result<TaskQueue, ChannelError> {
        let owner = self.owner().await?;
        let sqs = &self.clients.sqs;
        let retention = self
            .config
            .queue_retention_secs
            .clamp(RETENTION_RANGE_SECS.0, RETENTION_RANGE_SECS.1);
        let (name, url, expected_arn) = loop {
            let name = if self.generation == 0 {
                self.base_name.clone()
            } else {
                queue::recreated_name(&self.base_name, self.generation)
            };
            // The policy goes into CreateQueue itself: SQS documents up to 60 s before a later
            // SetQueueAttributes applies, during which SNS deliveries can be refused.
            let expected_arn = queue::queue_arn_beside(&self.topic_arn, &name);
            let mut request = sqs
                .create_queue()
                .queue_name(&name)
                .attributes(QueueAttributeName::MessageRetentionPeriod, retention.to_string())
                .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
                .tags(&self.config.tags.heartbeat, unix_now_secs().to_string())
                .tags(&self.config.tags.owner, &owner);
            if let Some(arn) = &expected_arn {
                request = request.attributes(
                    QueueAttributeName::Policy,
                    queue::queue_policy(arn, &self.topic_arn).to_string(),
                );
            }
            match request.send().await {
                Ok(output) => break (name, output.queue_url.unwrap_or_default(), expected_arn),
                Err(err)
                    if err.as_service_error().is_some_and(|e| e.is_queue_deleted_recently())
                        && self.generation < 100 =>
                {
                    self.generation += 1;
                }
                Err(err) => return Err(call_error("CreateQueue", &err)),
            }
        };
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|err| call_error("GetQueueAttributes", &err))?
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| ChannelError::Call {
                operation: "GetQueueAttributes",
                detail: "no QueueArn".to_owned(),
            })?;
        if expected_arn.as_deref() != Some(arn.as_str()) {
            // The topic lives in another account or partition than guessed: set the policy now.
            sqs.set_queue_attributes()
                .queue_url(&url)
                .attributes(
                    QueueAttributeName::Policy,
                    queue::queue_policy(&arn, &self.topic_arn).to_string(),
                )
                .send()
                .await
                .map_err(|err| call_error("SetQueueAttributes", &err))?;
        }
        let subscription_arn = self.subscribe(&arn).await?;
        Ok(TaskQueue {
            name,
            url,
            arn,
            subscription_arn,
            next_heartbeat: Instant::now() + Duration::from_secs(self.config.queue_heartbeat_interval_secs),
            subscription_checked: Instant::now(),
        })
    }

    /// Subscribes `queue_arn` to the topic with raw delivery and no filter; returns the
    /// subscription ARN.
    async fn subscribe(&self, queue_arn: &str) -> Result<String, ChannelError> {
        Ok(self
            .clients
            .sns
            .subscribe()
            .topic_arn(&self.topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|err| described_error("Subscribe", &err))?
            .subscription_arn
            .unwrap_or_default())
    }

    async fn receive(&self, queue: &TaskQueue) -> Result<Vec<Message>, ChannelError> {
        // At most half the bound: while ticks flow they end each poll long before, and while
        // they are silent the subscription check after each receive comes soon enough to heal
        // within the bound.
        let half_bound = Duration::from_secs((self.health.bound().as_secs() / 2).max(1));
        let wait = self.config.poll_wait().min(half_bound);
        let request = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(MAX_MESSAGES_PER_RECEIVE)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20))
            .send();
        match tokio::time::timeout(wait + RECEIVE_GRACE, request).await {
            Ok(Ok(output)) => {
                let messages = output.messages.unwrap_or_default();
                let outcome = if messages.is_empty() { "empty" } else { "messages" };
                metrics::counter!(self.health.metric_names().queue_receives.clone(), "outcome" => outcome).increment(1);
                Ok(messages)
            }
            Ok(Err(err)) => Err(call_error("ReceiveMessage", &err)),
            Err(_) => Err(ChannelError::Call {
                operation: "ReceiveMessage",
                detail: "timed out".to_owned(),
            }),
        }
    }

    /// Applies each message ([`Inbox::receive`]) and deletes the batch; malformed ones are
    /// deleted too, since they will never become readable.
    async fn handle(&self, queue: &TaskQueue, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut handled = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(receipt) = message.receipt_handle else {
                continue;
            };
            if let Received::Malformed(err) = self.inbox.receive(message.body.as_deref().unwrap_or_default()) {
                tracing::warn!(queue = %queue.name, message_id = message.message_id.as_deref().unwrap_or("?"), error = %err, "malformed invalidation message deleted");
            }
            handled.push(receipt);
        }
        self.delete(queue, handled).await;
    }

    async fn delete(&self, queue: &TaskQueue, receipts: Vec<String>) {
        if receipts.is_empty() {
            return;
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
            .into_iter()
            .enumerate()
            .filter_map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        match self
            .clients
            .sqs
            .delete_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) if !output.failed.is_empty() => {
                // They will be received again and re-applied: eviction is idempotent.
                tracing::warn!(queue = %queue.name, failed = output.failed.len(), "some messages were not deleted");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(queue = %queue.name, error = %DisplayErrorContext(&err), "DeleteMessageBatch failed")
            }
        }
    }

    async fn heartbeat_if_due(&self, queue: &mut TaskQueue) {
        if Instant::now() < queue.next_heartbeat {
            return;
        }
        let interval = Duration::from_secs(self.config.queue_heartbeat_interval_secs);
        match self
            .clients
            .sqs
            .tag_queue()
            .queue_url(&queue.url)
            .tags(&self.config.tags.heartbeat, unix_now_secs().to_string())
            .send()
            .await
        {
            Ok(_) => queue.next_heartbeat = Instant::now() + interval,
            Err(err) => {
                queue.next_heartbeat = Instant::now() + interval / 4;
                tracing::warn!(queue = %queue.name, error = %DisplayErrorContext(&err), "heartbeat failed; retrying in a quarter interval");
            }
        }
    }

    async fn unsubscribe(&self, queue: &TaskQueue) {
        if queue.subscription_arn.is_empty() {
            return;
        }
        if let Err(err) = self
            .clients
            .sns
            .unsubscribe()
            .subscription_arn(&queue.subscription_arn)
            .send()
            .await
        {
            tracing::warn!(queue = %queue.name, error = %DisplayErrorContext(&err), "Unsubscribe failed");
        }
    }

    /// Unsubscribes, then deletes the queue.
    async fn remove(&self, queue: &TaskQueue) {
        self.unsubscribe(queue).await;
        match self.clients.sqs.delete_queue().queue_url(&queue.url).send().await {
            Ok(_) => tracing::info!(queue = %queue.name, "invalidation queue removed"),
            Err(err) => tracing::warn!(queue = %queue.name, error = %DisplayErrorContext(&err), "DeleteQueue failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert!(backoff(3) > backoff(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
