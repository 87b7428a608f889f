//! The invalidation channel: this task's own SQS queue, subscribed to the relay's topic.
//!
//! - [`ChannelHealth`] (here): may the caches be trusted right now? Read on every request.
//! - [`queue`]: pure naming, the queue policy, the heartbeat rule and the task id.
//! - [`listener`]: creates and subscribes the queue, long-polls and applies messages, recreates a
//!   queue deleted out of band, and removes it all on shutdown.
//! - [`sweeper`]: removes queues left by crashed tasks, and subscriptions whose queue is gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub mod listener;
pub mod queue;
pub mod sweeper;

/// Whether a channel whose last successful receive was `since_last_receive` ago (`None`:
/// never) can vouch for the cache: it must be subscribed and have heard from SQS within `bound`.
#[must_use]
pub fn is_trusted(subscribed: bool, since_last_receive: Option<Duration>, bound: Duration) -> bool {
    subscribed && since_last_receive.is_some_and(|since| since <= bound)
}

/// Sentinel for "no receive yet" in [`ChannelHealth::last_receive_ms`].
const NEVER: u64 = u64::MAX;

/// The health of the invalidation channel, shared by the listener (writer) and every request
/// (reader). Lock-free: a request reads two atomics and the clock.
#[derive(Debug)]
pub struct ChannelHealth {
    /// Whether this process runs a channel at all (`CACHE_MODE=event`); without one `/ready`
    /// does not depend on it.
    required: bool,
    /// The staleness bound.
    bound: Duration,
    /// Time base for the timestamps below.
    origin: Instant,
    /// Milliseconds after `origin` of the last successful receive, or [`NEVER`].
    last_receive_ms: AtomicU64,
    /// Whether the queue exists and is subscribed to the topic.
    subscribed: AtomicBool,
    /// The queue's name, for stats and logs.
    queue: std::sync::RwLock<Option<String>>,
}

/// The channel as reported by `/admin/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelReport {
    /// Whether a channel is expected (`event` mode).
    pub required: bool,
    /// The queue, once created.
    pub queue: Option<String>,
    /// Whether it is subscribed.
    pub subscribed: bool,
    /// Whether caches are trusted now (subscribed and heard from within the bound).
    pub healthy: bool,
    /// Milliseconds since the last successful receive.
    pub ms_since_last_receive: Option<u64>,
    /// The staleness bound in seconds.
    pub staleness_bound_secs: u64,
}

impl ChannelHealth {
    /// A channel that must be alive for caches to be trusted, within `bound`.
    #[must_use]
    pub fn new(bound: Duration) -> Self {
        Self {
            required: true,
            bound,
            origin: Instant::now(),
            last_receive_ms: AtomicU64::new(NEVER),
            subscribed: AtomicBool::new(false),
            queue: std::sync::RwLock::new(None),
        }
    }

    /// No channel (`ttl` and `off` modes): never trusted for invalidation, never blocks `/ready`.
    #[must_use]
    pub fn not_required() -> Self {
        Self {
            required: false,
            ..Self::new(Duration::ZERO)
        }
    }

    fn since_last_receive(&self) -> Option<Duration> {
        let last = self.last_receive_ms.load(Ordering::Acquire);
        (last != NEVER).then(|| {
            let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            Duration::from_millis(now.saturating_sub(last))
        })
    }

    /// Whether the caches may be served from now (see [`is_trusted`]).
    #[must_use]
    pub fn is_trusted(&self) -> bool {
        is_trusted(self.subscribed.load(Ordering::Acquire), self.since_last_receive(), self.bound)
    }

    /// Whether `/ready` answers 200.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        !self.required || self.is_trusted()
    }

    /// Records a successful receive (or subscription). The listener flushes the caches *before*
    /// calling this when the channel was not trusted, so nothing cached while invalidations could
    /// have been lost is served once trust returns.
    pub fn record_receive(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_receive_ms.store(now, Ordering::Release);
    }

    /// The queue is created and subscribed.
    pub fn mark_subscribed(&self, queue: &str) {
        if let Ok(mut name) = self.queue.write() {
            *name = Some(queue.to_owned());
        }
        self.subscribed.store(true, Ordering::Release);
    }

    /// The queue is gone or being removed: stop trusting the caches at once.
    pub fn mark_unsubscribed(&self) {
        self.subscribed.store(false, Ordering::Release);
    }

    /// How long the caches have not been trusted beyond the bound, for the bypass-time metric.
    #[must_use]
    pub fn time_beyond_bound(&self) -> Duration {
        self.since_last_receive().map_or(Duration::ZERO, |since| since.saturating_sub(self.bound))
    }

    /// The report for operators.
    #[must_use]
    pub fn report(&self) -> ChannelReport {
        ChannelReport {
            required: self.required,
            queue: self.queue.read().ok().and_then(|name| name.clone()),
            subscribed: self.subscribed.load(Ordering::Acquire),
            healthy: self.is_trusted(),
            ms_since_last_receive: self
                .since_last_receive()
                .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            staleness_bound_secs: self.bound.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_a_subscription_and_a_recent_receive() {
        let bound = Duration::from_secs(45);
        assert!(is_trusted(true, Some(Duration::from_secs(10)), bound));
        assert!(is_trusted(true, Some(bound), bound));
        assert!(!is_trusted(true, Some(bound + Duration::from_millis(1)), bound));
        assert!(!is_trusted(true, None, bound));
        assert!(!is_trusted(false, Some(Duration::ZERO), bound));
    }

    #[test]
    fn a_new_channel_is_not_ready_until_subscribed_and_heard_from() {
        let health = ChannelHealth::new(Duration::from_secs(45));
        assert!(!health.is_ready());
        health.mark_subscribed("q");
        assert!(!health.is_ready());
        health.record_receive();
        assert!(health.is_ready());
        health.mark_unsubscribed();
        assert!(!health.is_ready() && !health.is_trusted());
        assert!(ChannelHealth::not_required().is_ready());
    }
}
