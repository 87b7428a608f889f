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
//! - [`trust`]: the trust rules, pure: which ticks count, and when a cache may be served.
//!
//! **The bound.** A successful receive proves only that this task's queue answers. What proves
//! the whole path — table, stream, event source mapping, relay, topic, subscription, queue — is a
//! *tick*: a heartbeat item written into a table that came back through all of it. A cache is
//! trusted only while a tick of its source from a configured writer arrived within the bound `B`
//! and was written within `B` (less the skew tolerance; see [`trust`]). Past the bound that cache
//! is bypassed (read-through with `ConsistentRead`); when a fresh tick arrives, the cache is
//! flushed first and trusted again. So no change older than `B` can be missing from what a task
//! serves, whatever part of the path fails, silently or not — and whatever is written into the
//! heartbeat items, since a tick from an unknown writer or from the future is refused and the
//! state is kept per writer.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use staleless_protocol::Source;

pub mod listener;
pub mod queue;
pub mod sweeper;
pub mod trust;

pub use trust::{TickRejection, TrustRules, heartbeats_missed};

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

/// The last admitted tick of one source from one writer.
#[derive(Debug)]
struct SourceFreshness {
    /// When the newest admitted tick was written (writer's clock, Unix ms), or [`NO_TICK`].
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
///
/// The methods ending in `_at` take the time (`now_ms`: Unix ms on this task's wall clock;
/// `mono_ms`: ms after the channel's origin on its monotonic clock), so the rules are tested
/// without waiting; the others read the clocks.
#[derive(Debug)]
pub struct ChannelHealth {
    /// Whether this process runs a channel at all (`CACHE_MODE=event`); without one `/ready`
    /// does not depend on it.
    required: bool,
    /// The bound, the writers and the skew tolerance.
    rules: TrustRules,
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
    /// Ticks per configured writer (in [`TrustRules::writers`] order), per source (in
    /// [`SOURCES`] order): one writer's clock cannot move another's state.
    writers: Box<[[SourceFreshness; 2]]>,
    /// The queue's name, for stats and logs.
    queue: std::sync::RwLock<Option<String>>,
}

/// One writer's ticks of one source, as reported by `/admin/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterReport {
    /// The heartbeat writer.
    pub writer: String,
    /// Whether its ticks vouch for the cache now.
    pub vouches: bool,
    /// Now minus its newest tick's write time, in ms (writer's clock against this task's).
    pub lag_ms: Option<i64>,
    /// Milliseconds since one of its ticks last arrived.
    pub ms_since_tick: Option<u64>,
}

/// One source's freshness as reported by `/admin/cache/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// The cache this source vouches for (`profiles`, `roles`).
    pub cache: &'static str,
    /// Whether that cache is served now; `false` means reads go through to DynamoDB.
    pub trusted: bool,
    /// Now minus the newest admitted tick's write time, in ms (writer's clock against this
    /// task's), over every writer.
    pub lag_ms: Option<i64>,
    /// Milliseconds since an admitted tick of this source last arrived.
    pub ms_since_tick: Option<u64>,
    /// The newest admitted tick's write time, Unix ms.
    pub last_tick_written_at_ms: Option<i64>,
    /// Per configured writer.
    pub writers: Vec<WriterReport>,
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
    /// How far ahead of this task's clock a tick may be written, in ms (charged against `B`).
    pub tick_future_tolerance_ms: u64,
    /// Per source: `users` (the profile cache) and `roles` (the role catalogue).
    pub users: SourceReport,
    /// See `users`.
    pub roles: SourceReport,
}

/// What admitting a tick changes, decided before it is recorded (see
/// [`ChannelHealth::admit_tick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickAdmission {
    /// The writer's state slot.
    pub slot: usize,
    /// The writer's newest tick before this one, for the gap test.
    pub previous_ms: Option<i64>,
    /// The cache is not trusted now and will be once the tick is recorded: flush it first.
    pub restores_trust: bool,
}

impl ChannelHealth {
    /// A channel with the default writer and tolerance that must prove itself for caches to be
    /// trusted, within `bound`.
    #[must_use]
    pub fn new(bound: Duration) -> Self {
        Self::with_rules(TrustRules::with_bound(bound))
    }

    /// A channel under `rules`.
    #[must_use]
    pub fn with_rules(rules: TrustRules) -> Self {
        let writers = rules
            .writers()
            .iter()
            .map(|_| [SourceFreshness::new(), SourceFreshness::new()])
            .collect();
        Self {
            required: true,
            rules,
            origin: Instant::now(),
            last_receive_ms: AtomicU64::new(NEVER),
            subscribed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            writers,
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
        self.rules.bound()
    }

    /// The trust rules.
    #[must_use]
    pub const fn rules(&self) -> &TrustRules {
        &self.rules
    }

    /// Milliseconds since the channel's origin (monotonic).
    #[must_use]
    pub fn mono_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn since(at: &AtomicU64, mono_ms: u64) -> Option<Duration> {
        let at = at.load(Ordering::Acquire);
        (at != NEVER).then(|| Duration::from_millis(mono_ms.saturating_sub(at)))
    }

    fn freshness(&self, slot: usize, source: Source) -> &SourceFreshness {
        &self.writers[slot][self::slot(source)]
    }

    fn written(freshness: &SourceFreshness) -> Option<i64> {
        let written = freshness.written_ms.load(Ordering::Acquire);
        (written != NO_TICK).then_some(written)
    }

    /// Whether the writer in `slot` vouches for `source` at the given times.
    fn vouches_at(&self, slot: usize, source: Source, now_ms: i64, mono_ms: u64) -> bool {
        let freshness = self.freshness(slot, source);
        self.rules.vouches(
            Self::written(freshness),
            Self::since(&freshness.arrived_ms, mono_ms),
            now_ms,
        )
    }

    /// When the newest admitted tick of `source` was written (Unix ms), over every writer.
    #[must_use]
    pub fn last_tick_written_ms(&self, source: Source) -> Option<i64> {
        (0..self.writers.len())
            .filter_map(|slot| Self::written(self.freshness(slot, source)))
            .max()
    }

    /// Time since an admitted tick of `source` last arrived, from any writer.
    #[must_use]
    pub fn since_tick(&self, source: Source) -> Option<Duration> {
        let mono_ms = self.mono_ms();
        (0..self.writers.len())
            .filter_map(|slot| Self::since(&self.freshness(slot, source).arrived_ms, mono_ms))
            .min()
    }

    /// Whether the cache of `source` may be served from now: the queue is subscribed and some
    /// configured writer's ticks vouch for it ([`TrustRules::vouches`]).
    #[must_use]
    pub fn is_trusted(&self, source: Source) -> bool {
        self.is_trusted_at(source, unix_now_ms(), self.mono_ms())
    }

    /// [`Self::is_trusted`] at the given times.
    #[must_use]
    pub fn is_trusted_at(&self, source: Source, now_ms: i64, mono_ms: u64) -> bool {
        self.subscribed.load(Ordering::Acquire)
            && (0..self.writers.len()).any(|slot| self.vouches_at(slot, source, now_ms, mono_ms))
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

    /// Decides on a tick of `source` by `writer`, written at `written_ms`, arriving now; records
    /// nothing. The listener flushes the cache when [`TickAdmission::restores_trust`] (or when
    /// the writer's heartbeats went missing), *then* calls [`Self::record_tick`], so nothing
    /// cached while invalidations could have been lost is served once trust returns.
    ///
    /// # Errors
    /// Why the tick does not count: it then changes nothing, and must not be recorded.
    pub fn admit_tick(
        &self,
        source: Source,
        writer: Option<&str>,
        written_ms: i64,
    ) -> Result<TickAdmission, TickRejection> {
        self.admit_tick_at(source, writer, written_ms, unix_now_ms(), self.mono_ms())
    }

    /// [`Self::admit_tick`] at the given times.
    ///
    /// # Errors
    /// As [`Self::admit_tick`].
    pub fn admit_tick_at(
        &self,
        source: Source,
        writer: Option<&str>,
        written_ms: i64,
        now_ms: i64,
        mono_ms: u64,
    ) -> Result<TickAdmission, TickRejection> {
        let slot = self.rules.admit(writer, written_ms, now_ms)?;
        let previous_ms = Self::written(self.freshness(slot, source));
        let newest = previous_ms.map_or(written_ms, |previous| previous.max(written_ms));
        let restores_trust = self.subscribed.load(Ordering::Acquire)
            && !self.is_trusted_at(source, now_ms, mono_ms)
            && self.rules.vouches(Some(newest), Some(Duration::ZERO), now_ms);
        Ok(TickAdmission {
            slot,
            previous_ms,
            restores_trust,
        })
    }

    /// Records an admitted tick of `source` (see [`Self::admit_tick`]).
    pub fn record_tick(&self, source: Source, admission: &TickAdmission, written_ms: i64) {
        self.record_tick_at(source, admission, written_ms, self.mono_ms());
    }

    /// [`Self::record_tick`] at the given monotonic time.
    pub fn record_tick_at(&self, source: Source, admission: &TickAdmission, written_ms: i64, mono_ms: u64) {
        let freshness = self.freshness(admission.slot, source);
        // The newest write time only grows: an older tick arriving late (at-least-once delivery
        // reorders) proves the path works now, not that later changes were sent.
        freshness.written_ms.fetch_max(written_ms, Ordering::AcqRel);
        freshness.arrived_ms.store(mono_ms, Ordering::Release);
    }

    /// Vouches for every source as of now, as a tick of each writer would: for benchmarks and
    /// tests that run without a heartbeat writer.
    pub fn record_ticks_now(&self) {
        let now = unix_now_ms();
        let mono_ms = self.mono_ms();
        for slot in 0..self.writers.len() {
            for source in SOURCES {
                let admission = TickAdmission {
                    slot,
                    previous_ms: None,
                    restores_trust: false,
                };
                self.record_tick_at(source, &admission, now, mono_ms);
            }
        }
    }

    /// Records a successful receive.
    pub fn record_receive(&self) {
        self.last_receive_ms.store(self.mono_ms(), Ordering::Release);
    }

    /// Time since the last successful receive.
    #[must_use]
    pub fn since_receive(&self) -> Option<Duration> {
        Self::since(&self.last_receive_ms, self.mono_ms())
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
    /// bypass-time metric: the least over the writers.
    #[must_use]
    pub fn time_beyond_bound(&self, source: Source) -> Duration {
        if self.is_trusted(source) {
            return Duration::ZERO;
        }
        let (now_ms, mono_ms) = (unix_now_ms(), self.mono_ms());
        (0..self.writers.len())
            .map(|slot| {
                let freshness = self.freshness(slot, source);
                self.rules.beyond_bound(
                    Self::written(freshness),
                    Self::since(&freshness.arrived_ms, mono_ms),
                    now_ms,
                )
            })
            .min()
            .unwrap_or(Duration::ZERO)
    }

    fn source_report(&self, source: Source) -> SourceReport {
        let (now_ms, mono_ms) = (unix_now_ms(), self.mono_ms());
        let millis = |since: Duration| u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        let writers: Vec<WriterReport> = self
            .rules
            .writers()
            .iter()
            .enumerate()
            .map(|(slot, writer)| {
                let freshness = self.freshness(slot, source);
                WriterReport {
                    writer: writer.clone(),
                    vouches: self.vouches_at(slot, source, now_ms, mono_ms),
                    lag_ms: Self::written(freshness).map(|written| now_ms.saturating_sub(written)),
                    ms_since_tick: Self::since(&freshness.arrived_ms, mono_ms).map(millis),
                }
            })
            .collect();
        let written = self.last_tick_written_ms(source);
        SourceReport {
            cache: cache_of(source),
            trusted: self.is_trusted_at(source, now_ms, mono_ms),
            lag_ms: written.map(|written| now_ms.saturating_sub(written)),
            ms_since_tick: self.since_tick(source).map(millis),
            last_tick_written_at_ms: written,
            writers,
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
            staleness_bound_secs: self.bound().as_secs(),
            tick_future_tolerance_ms: u64::try_from(self.rules.future_tolerance().as_millis()).unwrap_or(u64::MAX),
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
        metrics::gauge!(names::STALENESS_BOUND).set(self.bound().as_secs_f64());
        metrics::gauge!(names::CHANNEL_HEALTHY).set(if self.all_trusted() { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BOUND: Duration = Duration::from_secs(15);
    /// The task's wall clock at the channel's origin.
    const EPOCH_MS: i64 = 1_800_000_000_000;

    fn channel(writers: &[&str]) -> ChannelHealth {
        let writers: Vec<String> = writers.iter().map(|writer| (*writer).to_owned()).collect();
        let health = ChannelHealth::with_rules(TrustRules::new(BOUND, Duration::from_millis(500), &writers));
        health.mark_subscribed("q");
        health
    }

    /// Admits and records a tick arriving at `mono_ms` (wall clock `EPOCH_MS + mono_ms`).
    fn tick(
        health: &ChannelHealth,
        source: Source,
        writer: &str,
        written_ms: i64,
        mono_ms: u64,
    ) -> Result<TickAdmission, TickRejection> {
        let now_ms = EPOCH_MS + i64::try_from(mono_ms).expect("small");
        let admission = health.admit_tick_at(source, Some(writer), written_ms, now_ms, mono_ms)?;
        health.record_tick_at(source, &admission, written_ms, mono_ms);
        Ok(admission)
    }

    fn trusted(health: &ChannelHealth, source: Source, mono_ms: u64) -> bool {
        health.is_trusted_at(source, EPOCH_MS + i64::try_from(mono_ms).expect("small"), mono_ms)
    }

    #[test]
    fn each_source_is_trusted_on_its_own_ticks() {
        let health = channel(&["staleless"]);
        assert!(
            health.is_ready(),
            "a subscribed task serves, reading through until ticks arrive"
        );
        assert!(!trusted(&health, Source::Users, 0) && !trusted(&health, Source::Roles, 0));
        let admission = tick(&health, Source::Users, "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(admission.restores_trust && admission.previous_ms.is_none());
        assert!(trusted(&health, Source::Users, 0));
        assert!(
            !trusted(&health, Source::Roles, 0),
            "a users tick says nothing of the roles path"
        );
        tick(&health, Source::Roles, "staleless", EPOCH_MS - 60_000, 0).expect("admitted");
        assert!(
            !trusted(&health, Source::Roles, 0),
            "a tick written a minute ago is past the bound"
        );
        tick(&health, Source::Roles, "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(trusted(&health, Source::Roles, 0));
        tick(&health, Source::Roles, "staleless", 0, 0).expect("admitted");
        assert!(
            trusted(&health, Source::Roles, 0),
            "an older tick arriving late never moves the write time back"
        );
        assert!(
            !trusted(&health, Source::Users, 15_001),
            "no tick for longer than the bound"
        );
        health.mark_unsubscribed();
        assert!(!trusted(&health, Source::Users, 0) && health.is_ready());
        health.mark_stopping();
        assert!(!health.is_ready());
    }

    #[test]
    fn a_tick_from_an_hour_ahead_is_refused_and_hides_neither_a_gap_nor_a_silence() {
        let health = channel(&["staleless"]);
        tick(&health, Source::Users, "staleless", EPOCH_MS, 0).expect("admitted");
        assert_eq!(
            tick(&health, Source::Users, "staleless", EPOCH_MS + 3_600_000, 1_000),
            Err(TickRejection::FromTheFuture)
        );
        assert_eq!(health.last_tick_written_ms(Source::Users), Some(EPOCH_MS));
        // The next beat follows the last admitted one: a gap is measured against it.
        let admission = tick(&health, Source::Users, "staleless", EPOCH_MS + 10_000, 10_000).expect("admitted");
        assert_eq!(admission.previous_ms, Some(EPOCH_MS));
        assert!(heartbeats_missed(admission.previous_ms, EPOCH_MS + 10_000, Some(5_000)));
        // Future ticks alone never keep trust alive.
        for at in (11_000..40_000).step_by(1_000) {
            let _ = tick(
                &health,
                Source::Users,
                "staleless",
                EPOCH_MS + 3_600_000 + at as i64,
                at,
            );
        }
        assert!(!trusted(&health, Source::Users, 40_000));
    }

    #[test]
    fn a_forged_writer_vouches_for_nothing_and_writers_keep_their_own_state() {
        let health = channel(&["staleless", "backup"]);
        assert_eq!(
            tick(&health, Source::Roles, "evil", EPOCH_MS, 0),
            Err(TickRejection::UnknownWriter)
        );
        assert!(!trusted(&health, Source::Roles, 0));
        // One writer's clock an hour behind: its ticks never vouch, the other's still do.
        tick(&health, Source::Roles, "backup", EPOCH_MS - 3_600_000, 0).expect("admitted");
        assert!(!trusted(&health, Source::Roles, 0));
        tick(&health, Source::Roles, "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(trusted(&health, Source::Roles, 0));
        let admission = tick(&health, Source::Roles, "staleless", EPOCH_MS + 5_000, 5_000).expect("admitted");
        assert_eq!(admission.previous_ms, Some(EPOCH_MS), "not the other writer's time");
        let writers: Vec<String> = health
            .report()
            .roles
            .writers
            .into_iter()
            .map(|report| report.writer)
            .collect();
        assert_eq!(writers, ["staleless", "backup"]);
    }

    #[test]
    fn readiness_waits_for_the_start_and_not_for_ticks() {
        let health = ChannelHealth::new(BOUND);
        assert!(!health.is_ready());
        health.mark_started();
        assert!(health.is_ready());
        assert!(ChannelHealth::not_required().is_ready());
        let report = health.report();
        assert!(!report.healthy && !report.users.trusted && report.users.lag_ms.is_none());
    }

    /// One step of a hostile tick sequence: time passes, then a tick arrives (or nothing).
    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: u64,
        source: Source,
        /// Index into [`WRITERS`]; the last two are not configured.
        writer: usize,
        /// Written at the task's clock plus this (any writer clock offset, forged times).
        offset_ms: i64,
        arrives: bool,
    }

    const WRITERS: [&str; 4] = ["staleless", "backup", "evil", "staleless "];

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let offset = prop_oneof![
            -20_000i64..20_000,
            -7_200_000i64..7_200_000,
            Just(i64::MAX),
            Just(i64::MIN),
        ];
        proptest::collection::vec(
            (
                0u64..6_000,
                prop_oneof![Just(Source::Users), Just(Source::Roles)],
                0usize..WRITERS.len(),
                offset,
                any::<bool>(),
            )
                .prop_map(|(advance_ms, source, writer, offset_ms, arrives)| Step {
                    advance_ms,
                    source,
                    writer,
                    offset_ms,
                    arrives,
                }),
            1..120,
        )
    }

    proptest! {
        /// Whatever ticks arrive — times in any order, any writer ids, any clock offset — a cache
        /// is trusted only while a tick of a configured writer arrived within `B` and was written
        /// within `B` less the tolerance (and not beyond the tolerance ahead of its arrival).
        #[test]
        fn no_tick_sequence_makes_trust_outlive_the_proof(steps in steps()) {
            let configured = ["staleless", "backup"];
            let health = channel(&configured);
            let tolerance = i64::try_from(health.rules().future_tolerance().as_millis()).expect("small");
            let bound = i64::try_from(BOUND.as_millis()).expect("small");
            // (source, writer, written, arrival) of every tick that arrived.
            let mut arrived: Vec<(Source, &str, i64, i64)> = Vec::new();
            let mut mono = 0u64;
            for step in steps {
                mono += step.advance_ms;
                let now = EPOCH_MS + i64::try_from(mono).expect("small");
                let writer = WRITERS[step.writer];
                let written = now.saturating_add(step.offset_ms);
                if step.arrives {
                    let _ = tick(&health, step.source, writer, written, mono);
                    arrived.push((step.source, writer, written, now));
                }
                for source in SOURCES {
                    let proof = arrived.iter().any(|&(from, by, written, at)| {
                        from == source
                            && configured.contains(&by)
                            && now - at <= bound
                            && written <= at.saturating_add(tolerance)
                            && now.saturating_sub(written).saturating_add(tolerance) <= bound
                    });
                    prop_assert!(!trusted(&health, source, mono) || proof, "{source} trusted without proof at {mono} ms");
                }
            }
        }

        /// Ticks of other names, or from further ahead than the tolerance, never change what a
        /// configured writer's next tick is compared with: they cannot hide its gaps.
        #[test]
        fn hostile_ticks_never_move_a_writers_gap_baseline(steps in steps()) {
            let health = channel(&["staleless"]);
            let mut mono = 0u64;
            let mut honest_newest: Option<i64> = None;
            for step in steps {
                mono += step.advance_ms;
                let now = EPOCH_MS + i64::try_from(mono).expect("small");
                // The honest writer beats on time; everything else is hostile: other names, or
                // its own name with a time beyond the tolerance.
                let hostile_offset = step.offset_ms.saturating_abs().max(501);
                let (writer, written) = if step.arrives {
                    ("staleless", now)
                } else {
                    (WRITERS[step.writer.max(1)], now.saturating_add(hostile_offset))
                };
                let writer = if step.arrives || step.writer % 2 == 0 { writer } else { "staleless" };
                match tick(&health, step.source, writer, written, mono) {
                    Ok(admission) if step.source == Source::Users => {
                        prop_assert!(step.arrives, "a hostile tick was admitted: {writer} {written}");
                        prop_assert_eq!(admission.previous_ms, honest_newest);
                        honest_newest = Some(honest_newest.map_or(written, |newest| newest.max(written)));
                    }
                    Ok(_) => prop_assert!(step.arrives),
                    Err(_) => prop_assert!(!step.arrives),
                }
            }
        }
    }
}
