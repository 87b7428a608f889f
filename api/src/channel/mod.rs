//! The invalidation channel: this task's own SQS queue, subscribed to the relay's topic, and the
//! freshness guarantee built on it.
//!
//! - [`ChannelHealth`] (here): may each cache be trusted right now? Read on every request.
//! - [`queue`]: pure naming, the queue policy, the heartbeat rule and the task id.
//! - [`listener`]: creates and subscribes the queue, long-polls and applies messages, records
//!   ticks, heals a subscription removed or altered out of band, recreates a queue deleted out of
//!   band, and removes it all on shutdown.
//! - [`sweeper`]: the fleet sweeper (the `queue-sweeper` binary, not run by tasks): removes queues
//!   left by crashed tasks, and subscriptions whose queue is gone.
//!
//! **The bound.** A successful receive proves only that this task's queue answers. What proves
//! the whole path — table, stream, event source mapping, relay, topic, subscription, queue — is a
//! *tick*: a heartbeat item written into a table that came back through all of it. A cache is
//! trusted only while a tick of its source arrived within the bound `B` and was written within
//! `B` (see [`is_trusted`]). Past the bound that cache is bypassed (read-through with
//! `ConsistentRead`); when a fresh tick arrives, the cache is flushed first and trusted again. So
//! no change older than `B` can be missing from what a task serves, whatever part of the path
//! fails, silently or not.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use staleless_protocol::Source;

pub mod listener;
pub mod queue;
pub mod sweeper;

/// Whether a cache may be served, given how long ago its source's last tick was written
/// (`lag`, writer's clock) and arrived (`gap`, this task's clock): both within `bound`, and the
/// queue subscribed. `None` means no tick yet.
///
/// Both ages are needed: the lag catches a backlog (ticks arriving, but late), the gap catches a
/// writer whose clock runs ahead of this task's (its ticks would look younger than they are).
#[must_use]
pub fn is_trusted(subscribed: bool, lag: Option<Duration>, gap: Option<Duration>, bound: Duration) -> bool {
    subscribed && lag.is_some_and(|lag| lag <= bound) && gap.is_some_and(|gap| gap <= bound)
}

/// Whether a tick written at `written_ms` shows that heartbeats went missing since the newest
/// one before it (written at `previous_ms`): a gap over one and a half of the writer's
/// `interval_ms`. The path then dropped messages for at least an interval — invalidations may
/// be among them — even if trust never lapsed. Unknown values say nothing.
#[must_use]
pub fn heartbeats_missed(previous_ms: Option<i64>, written_ms: i64, interval_ms: Option<u64>) -> bool {
    match (previous_ms, interval_ms.and_then(|ms| i64::try_from(ms).ok())) {
        (Some(previous), Some(interval)) if interval > 0 => {
            written_ms.saturating_sub(previous) > interval.saturating_mul(3) / 2
        }
        _ => false,
    }
}

/// Sentinel for "never" in the millisecond atomics below.
const NEVER: u64 = u64::MAX;
/// Sentinel for "no tick yet" in [`SourceFreshness::written_ms`].
const NO_TICK: i64 = i64::MIN;

/// The two sources, in the order of [`ChannelHealth::sources`].
pub const SOURCES: [Source; 2] = [Source::Users, Source::Roles];

/// The cache each source vouches for, as named in metrics and stats.
#[must_use]
pub const fn cache_of(source: Source) -> &'static str {
    match source {
        Source::Users => "profiles",
        Source::Roles => "roles",
    }
}

const fn slot(source: Source) -> usize {
    match source {
        Source::Users => 0,
        Source::Roles => 1,
    }
}

/// Milliseconds since the Unix epoch (this task's clock).
#[must_use]
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// Now minus `written_ms` (zero when the writer's clock is ahead of this task's).
fn lag_since(written_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(unix_now_ms().saturating_sub(written_ms)).unwrap_or(0))
}

/// The last tick of one source.
#[derive(Debug)]
struct SourceFreshness {
    /// When the newest tick seen was written (writer's clock, Unix ms), or [`NO_TICK`].
    written_ms: AtomicI64,
    /// Milliseconds after the channel's origin when a tick last arrived, or [`NEVER`].
    arrived_ms: AtomicU64,
}

impl SourceFreshness {
    const fn new() -> Self {
        Self {
            written_ms: AtomicI64::new(NO_TICK),
            arrived_ms: AtomicU64::new(NEVER),
        }
    }
}

/// The health of the invalidation channel and the trust in each cache, shared by the listener
/// (writer) and every request (reader). Lock-free: a request reads a few atomics and the clock.
#[derive(Debug)]
pub struct ChannelHealth {
    /// Whether this process runs a channel at all (`CACHE_MODE=event`); without one `/ready`
    /// does not depend on it.
    required: bool,
    /// The staleness bound `B`.
    bound: Duration,
    /// Time base for the monotonic timestamps below.
    origin: Instant,
    /// Milliseconds after `origin` of the last successful receive, or [`NEVER`].
    last_receive_ms: AtomicU64,
    /// Whether the queue exists and is subscribed to the topic.
    subscribed: AtomicBool,
    /// Whether the task has finished starting (its queue was set up once, or setting it up kept
    /// failing for longer than the bound): from then on it serves, from cache or read-through.
    started: AtomicBool,
    /// Set on shutdown: `/ready` turns 503 so the load balancer drains the task.
    stopping: AtomicBool,
    /// Ticks per source, in [`SOURCES`] order.
    sources: [SourceFreshness; 2],
    /// The queue's name, for stats and logs.
    queue: std::sync::RwLock<Option<String>>,
}

/// One source's freshness as reported by `/admin/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// The cache this source vouches for (`profiles`, `roles`).
    pub cache: &'static str,
    /// Whether that cache is served now; `false` means reads go through to DynamoDB.
    pub trusted: bool,
    /// Now minus the newest tick's write time, in ms (writer's clock against this task's).
    pub lag_ms: Option<i64>,
    /// Milliseconds since a tick of this source last arrived.
    pub ms_since_tick: Option<u64>,
    /// The newest tick's write time, Unix ms.
    pub last_tick_written_at_ms: Option<i64>,
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
    /// Whether every cache is trusted now.
    pub healthy: bool,
    /// Milliseconds since the last successful receive.
    pub ms_since_last_receive: Option<u64>,
    /// The staleness bound `B` in seconds.
    pub staleness_bound_secs: u64,
    /// Per source: `users` (the profile cache) and `roles` (the role catalogue).
    pub users: SourceReport,
    /// See `users`.
    pub roles: SourceReport,
}

impl ChannelHealth {
    /// A channel that must prove itself for caches to be trusted, within `bound`.
    #[must_use]
    pub fn new(bound: Duration) -> Self {
        Self {
            required: true,
            bound,
            origin: Instant::now(),
            last_receive_ms: AtomicU64::new(NEVER),
            subscribed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            sources: [SourceFreshness::new(), SourceFreshness::new()],
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

    /// The bound `B`.
    #[must_use]
    pub const fn bound(&self) -> Duration {
        self.bound
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn since(&self, at: &AtomicU64) -> Option<Duration> {
        let at = at.load(Ordering::Acquire);
        (at != NEVER).then(|| Duration::from_millis(self.now_ms().saturating_sub(at)))
    }

    /// Now minus the newest tick's write time (zero when the writer's clock is ahead).
    fn lag(&self, source: Source) -> Option<Duration> {
        self.last_tick_written_ms(source).map(lag_since)
    }

    /// Whether a tick written at `written_ms` is young enough to vouch for its cache now.
    #[must_use]
    pub fn within_bound(&self, written_ms: i64) -> bool {
        lag_since(written_ms) <= self.bound
    }

    /// When the newest tick of `source` was written (Unix ms), if any arrived.
    #[must_use]
    pub fn last_tick_written_ms(&self, source: Source) -> Option<i64> {
        let written = self.sources[slot(source)].written_ms.load(Ordering::Acquire);
        (written != NO_TICK).then_some(written)
    }

    /// Time since a tick of `source` last arrived.
    #[must_use]
    pub fn since_tick(&self, source: Source) -> Option<Duration> {
        self.since(&self.sources[slot(source)].arrived_ms)
    }

    /// Whether the cache of `source` may be served from now (see [`is_trusted`]).
    #[must_use]
    pub fn is_trusted(&self, source: Source) -> bool {
        is_trusted(
            self.subscribed.load(Ordering::Acquire),
            self.lag(source),
            self.since_tick(source),
            self.bound,
        )
    }

    /// Whether every cache is trusted.
    #[must_use]
    pub fn all_trusted(&self) -> bool {
        SOURCES.into_iter().all(|source| self.is_trusted(source))
    }

    /// Whether `/ready` answers 200: the task serves (from a trusted cache or by reading
    /// through) once it has started, until it begins to stop. A broken pipeline degrades the
    /// fleet to read-through; it never takes it out of the load balancer.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::Acquire) && (!self.required || self.started.load(Ordering::Acquire))
    }

    /// The task has started serving (see [`Self::is_ready`]).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// The task is shutting down.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Records a tick of `source` written at `written_ms` (Unix ms). The listener flushes the
    /// source's cache *before* calling this when the cache was not trusted, so nothing cached
    /// while invalidations could have been lost is served once trust returns.
    pub fn record_tick(&self, source: Source, written_ms: i64) {
        let freshness = &self.sources[slot(source)];
        freshness.written_ms.fetch_max(written_ms, Ordering::AcqRel);
        freshness.arrived_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Vouches for every source as of now, as a tick of each would: for benchmarks and tests
    /// that run without a heartbeat writer.
    pub fn record_ticks_now(&self) {
        let now = unix_now_ms();
        for source in SOURCES {
            self.record_tick(source, now);
        }
    }

    /// Records a successful receive.
    pub fn record_receive(&self) {
        self.last_receive_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Time since the last successful receive.
    #[must_use]
    pub fn since_receive(&self) -> Option<Duration> {
        self.since(&self.last_receive_ms)
    }

    /// The queue is created and subscribed.
    pub fn mark_subscribed(&self, queue: &str) {
        if let Ok(mut name) = self.queue.write() {
            *name = Some(queue.to_owned());
        }
        self.subscribed.store(true, Ordering::Release);
        self.mark_started();
    }

    /// The queue or its subscription is gone or being removed: stop trusting the caches at once.
    pub fn mark_unsubscribed(&self) {
        self.subscribed.store(false, Ordering::Release);
    }

    /// How long the cache of `source` has been past the bound (zero while trusted), for the
    /// bypass-time metric.
    #[must_use]
    pub fn time_beyond_bound(&self, source: Source) -> Duration {
        if self.is_trusted(source) {
            return Duration::ZERO;
        }
        let lag = self.lag(source).unwrap_or(Duration::ZERO);
        let gap = self.since_tick(source).unwrap_or(Duration::ZERO);
        lag.max(gap).saturating_sub(self.bound)
    }

    fn source_report(&self, source: Source) -> SourceReport {
        let written = self.sources[slot(source)].written_ms.load(Ordering::Acquire);
        let written = (written != NO_TICK).then_some(written);
        SourceReport {
            cache: cache_of(source),
            trusted: self.is_trusted(source),
            lag_ms: written.map(|written| unix_now_ms().saturating_sub(written)),
            ms_since_tick: self
                .since_tick(source)
                .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            last_tick_written_at_ms: written,
        }
    }

    /// The report for operators.
    #[must_use]
    pub fn report(&self) -> ChannelReport {
        ChannelReport {
            required: self.required,
            queue: self.queue.read().ok().and_then(|name| name.clone()),
            subscribed: self.subscribed.load(Ordering::Acquire),
            healthy: self.all_trusted(),
            ms_since_last_receive: self
                .since_receive()
                .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            staleness_bound_secs: self.bound.as_secs(),
            users: self.source_report(Source::Users),
            roles: self.source_report(Source::Roles),
        }
    }

    /// Sets the freshness gauges of `/metrics` to their values now (called on scrape, so the
    /// lag is current even while no tick arrives).
    pub fn publish_gauges(&self) {
        use crate::metrics as names;
        #[allow(clippy::cast_precision_loss)] // seconds of lag and Unix seconds fit an f64
        for source in SOURCES {
            let report = self.source_report(source);
            let label = source.as_str();
            metrics::gauge!(names::CACHE_TRUSTED, "cache" => report.cache).set(if report.trusted { 1.0 } else { 0.0 });
            if let Some(lag) = report.lag_ms {
                metrics::gauge!(names::TICK_LAG, "source" => label).set(lag as f64 / 1_000.0);
            }
            if let Some(since) = report.ms_since_tick {
                metrics::gauge!(names::SINCE_TICK, "source" => label).set(since as f64 / 1_000.0);
            }
            if let Some(written) = report.last_tick_written_at_ms {
                metrics::gauge!(names::TICK_WRITTEN_TIMESTAMP, "source" => label).set(written as f64 / 1_000.0);
            }
        }
        metrics::gauge!(names::STALENESS_BOUND).set(self.bound.as_secs_f64());
        metrics::gauge!(names::CHANNEL_HEALTHY).set(if self.all_trusted() { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_a_subscription_and_a_tick_both_written_and_arrived_within_the_bound() {
        let bound = Duration::from_secs(15);
        let fresh = Some(Duration::from_secs(1));
        let old = Some(bound + Duration::from_millis(1));
        assert!(is_trusted(true, fresh, fresh, bound));
        assert!(is_trusted(true, Some(bound), Some(bound), bound));
        assert!(
            !is_trusted(true, old, fresh, bound),
            "a backlog: the tick arrived now but was written long ago"
        );
        assert!(
            !is_trusted(true, fresh, old, bound),
            "no tick arrived for longer than the bound"
        );
        assert!(!is_trusted(true, None, None, bound), "no tick yet");
        assert!(!is_trusted(false, fresh, fresh, bound), "the queue is not subscribed");
    }

    #[test]
    fn each_source_is_trusted_on_its_own_ticks() {
        let health = ChannelHealth::new(Duration::from_secs(15));
        health.mark_subscribed("q");
        assert!(
            health.is_ready(),
            "a subscribed task serves, reading through until ticks arrive"
        );
        assert!(!health.is_trusted(Source::Users) && !health.is_trusted(Source::Roles));
        health.record_tick(Source::Users, unix_now_ms());
        assert!(health.is_trusted(Source::Users));
        assert!(
            !health.is_trusted(Source::Roles),
            "a users tick says nothing of the roles path"
        );
        health.record_tick(Source::Roles, unix_now_ms() - 60_000);
        assert!(
            !health.is_trusted(Source::Roles),
            "a tick written a minute ago is past the bound"
        );
        assert!(health.time_beyond_bound(Source::Roles) >= Duration::from_secs(44));
        health.record_tick(Source::Roles, unix_now_ms());
        assert!(health.all_trusted());
        health.record_tick(Source::Roles, 0);
        assert!(
            health.is_trusted(Source::Roles),
            "an older tick arriving late never moves the write time back"
        );
        health.mark_unsubscribed();
        assert!(!health.is_trusted(Source::Users) && health.is_ready());
        health.mark_stopping();
        assert!(!health.is_ready());
    }

    #[test]
    fn a_gap_of_more_than_one_and_a_half_intervals_means_heartbeats_went_missing() {
        assert!(!heartbeats_missed(None, 10_000, Some(5_000)), "the first tick");
        assert!(!heartbeats_missed(Some(5_000), 10_000, Some(5_000)), "the next beat");
        assert!(!heartbeats_missed(Some(5_000), 12_500, Some(5_000)), "a late beat");
        assert!(heartbeats_missed(Some(5_000), 15_000, Some(5_000)), "one beat missing");
        assert!(
            !heartbeats_missed(Some(15_000), 10_000, Some(5_000)),
            "an older tick arriving late"
        );
        assert!(
            !heartbeats_missed(Some(5_000), 60_000, None),
            "a writer that does not say its interval"
        );
        assert!(!heartbeats_missed(Some(5_000), 60_000, Some(0)));
    }

    #[test]
    fn readiness_waits_for_the_start_and_not_for_ticks() {
        let health = ChannelHealth::new(Duration::from_secs(15));
        assert!(!health.is_ready());
        health.mark_started();
        assert!(health.is_ready());
        assert!(ChannelHealth::not_required().is_ready());
        let report = health.report();
        assert!(!report.healthy && !report.users.trusted && report.users.lag_ms.is_none());
    }
}
