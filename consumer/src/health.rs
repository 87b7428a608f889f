//! Trust by ticks, per source: may each cache be served right now? Read on every request.
//!
//! **The bound.** A successful receive proves only that the task's queue answers. What proves
//! the whole path — table, stream, event source mapping, relay, topic, subscription, queue — is a
//! *tick*: a heartbeat item written into a table that came back through all of it. A cache is
//! trusted only while a tick of its source from a configured writer arrived within the bound `B`
//! and was written within `B` (less the skew tolerance; see [`crate::TrustRules`]). Past the
//! bound that cache is bypassed (read-through); when a fresh tick arrives, the cache is flushed
//! first and trusted again. So no change older than `B` can be missing from what a task serves,
//! whatever part of the path fails, silently or not — and whatever is written into the
//! heartbeat items, since a tick from an unknown writer or from the future is refused and the
//! state is kept per writer.
//!
//! A source is a name (`users`, `roles`, or any table the relay is configured to read), each
//! vouching for one cache. Every method ending in `_at` takes the time (`now_ms`: Unix ms on the
//! task's wall clock; `mono_ms`: ms after the channel's origin on its monotonic clock), so the
//! rules are tested without waiting; the others read the channel's [`Clock`]: the system's
//! clocks, or a [`ManualClock`] that a test (or a conformance vector) moves by hand, so that the
//! caches, the subscriber's message handling and the trust all follow one time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::MetricNames;
use crate::trust::{SlotProof, TickRejection, TrustRules, WriterLedger};

/// Sentinel for "never" in the millisecond atomics below.
const NEVER: u64 = u64::MAX;

/// "Not trusted" in [`ChannelHealth::trusted_until`].
const NO_TRUST: i64 = -1;

/// Milliseconds since the Unix epoch (this task's clock).
#[must_use]
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// Where a channel reads the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The task's wall clock, and its monotonic clock from the given origin.
    System(Instant),
    /// A clock moved by hand (tests, conformance vectors).
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// The system's clocks, the monotonic one starting now.
    #[must_use]
    pub fn system() -> Self {
        Self::System(Instant::now())
    }

    /// The wall clock, Unix ms.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System(_) => unix_now_ms(),
            Self::Manual(clock) => clock.now_ms.load(Ordering::Acquire),
        }
    }

    /// Milliseconds since the origin, on the monotonic clock.
    #[must_use]
    pub fn mono_ms(&self) -> u64 {
        match self {
            Self::System(origin) => u64::try_from(origin.elapsed().as_millis()).unwrap_or(NEVER - 1),
            Self::Manual(clock) => clock.mono_ms.load(Ordering::Acquire),
        }
    }
}

/// A wall clock and a monotonic clock that move only when told.
#[derive(Debug)]
pub struct ManualClock {
    /// Unix ms.
    now_ms: AtomicI64,
    /// Ms since the origin.
    mono_ms: AtomicU64,
}

impl ManualClock {
    /// Clocks reading `now_ms` (wall, Unix ms) and 0 (monotonic).
    #[must_use]
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicI64::new(now_ms),
            mono_ms: AtomicU64::new(0),
        })
    }

    /// Time passes: both clocks move `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.mono_ms.fetch_add(ms, Ordering::AcqRel);
        self.now_ms
            .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    /// The wall clock alone jumps `ms` (an NTP step; negative goes back).
    pub fn step_wall(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::AcqRel);
    }
}

/// A source of invalidations and ticks, and the cache it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The source's name as messages carry it (`users`).
    pub source: String,
    /// The cache it vouches for, as metrics and stats name it (`profiles`).
    pub cache: String,
}

impl SourceSpec {
    /// Source `source` vouching for the cache `cache`.
    #[must_use]
    pub fn new(source: &str, cache: &str) -> Self {
        Self {
            source: source.to_owned(),
            cache: cache.to_owned(),
        }
    }
}

/// One slot of a writer, as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotReport {
    /// The heartbeat item (one per shard of the stream).
    pub slot: String,
    /// Now minus its newest tick's write time, in ms; `None` before its first tick.
    pub lag_ms: Option<i64>,
    /// Milliseconds since one of its ticks arrived.
    pub ms_since_tick: Option<u64>,
}

/// One writer's ticks of one source, as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterReport {
    /// The heartbeat writer.
    pub writer: String,
    /// Whether its ticks vouch for the cache now.
    pub vouches: bool,
    /// Whether its newest tick says its slots cover every shard of the stream.
    pub covered: bool,
    /// Now minus its newest tick's write time, in ms (writer's clock against this task's).
    pub lag_ms: Option<i64>,
    /// Milliseconds since one of its ticks last arrived.
    pub ms_since_tick: Option<u64>,
    /// The slots required now, each of which must be fresh.
    pub slots: Vec<SlotReport>,
}

/// One source's freshness, as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// The cache this source vouches for (`profiles`, `roles`).
    pub cache: String,
    /// Whether that cache is served now; `false` means reads go through to the table.
    pub trusted: bool,
    /// Now minus the newest admitted tick's write time, in ms (writer's clock against this
    /// task's), over every writer and slot.
    pub lag_ms: Option<i64>,
    /// Milliseconds since an admitted tick of this source last arrived.
    pub ms_since_tick: Option<u64>,
    /// The newest admitted tick's write time, Unix ms.
    pub last_tick_written_at_ms: Option<i64>,
    /// Per configured writer.
    pub writers: Vec<WriterReport>,
}

/// The channel as reported to operators (the API's `/admin/cache/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelReport {
    /// Whether a channel is expected (the task caches by events).
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
    /// Per source, by name (`users`: the profile cache, `roles`: the role catalogue).
    #[serde(flatten)]
    pub sources: BTreeMap<String, SourceReport>,
}

/// What admitting a tick changes, decided before it is recorded (see
/// [`ChannelHealth::admit_tick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickAdmission {
    /// Which configured writer (its index in [`TrustRules::writers`]) the tick is of; not to be
    /// confused with the heartbeat slot, which is the proof's.
    pub writer_index: usize,
    /// The source's index in [`ChannelHealth::sources`].
    pub source_index: usize,
    /// The newest tick of the same writer and heartbeat slot before this one, for the gap test.
    pub previous_ms: Option<i64>,
    /// The cache is not trusted now and will be once the tick is recorded: flush it first.
    pub restores_trust: bool,
}

/// The health of the invalidation channel and the trust in each cache, shared by the subscriber
/// (writer) and every read (reader). A read checks an atomic and the monotonic clock: the
/// subscriber works out, at each tick, until when each cache is trusted.
#[derive(Debug)]
pub struct ChannelHealth {
    /// Whether this process runs a channel at all; without one readiness does not depend on it.
    required: bool,
    /// The bound, the writers and the skew tolerance.
    rules: TrustRules,
    /// The sources, in the order of every per-source vector below.
    sources: Vec<SourceSpec>,
    /// The names of the gauges [`Self::publish_gauges`] sets.
    names: MetricNames,
    /// The clocks; the monotonic timestamps below are ms after its origin.
    clock: Clock,
    /// Milliseconds after `origin` of the last successful receive, or [`NEVER`].
    last_receive_ms: AtomicU64,
    /// Whether the queue exists and is subscribed to the topic.
    subscribed: AtomicBool,
    /// Whether the task has finished starting (its queue was set up once, or setting it up kept
    /// failing for longer than the bound): from then on it serves, from cache or read-through.
    started: AtomicBool,
    /// Set on shutdown: readiness turns false so the load balancer drains the task.
    stopping: AtomicBool,
    /// Per configured writer (in [`TrustRules::writers`] order), per source: its ticks per
    /// slot. Written by the subscriber only; one writer's clock cannot move another's state.
    ledgers: std::sync::Mutex<Vec<Vec<WriterLedger>>>,
    /// Per source: the last monotonic ms at which the cache is trusted, or [`NO_TRUST`].
    trusted_until: Vec<AtomicI64>,
    /// The queue's name, for stats and logs.
    queue: std::sync::RwLock<Option<String>>,
}

impl ChannelHealth {
    /// A channel under `rules` for `sources`, that must prove itself for caches to be trusted;
    /// its gauges are named by `names`.
    #[must_use]
    pub fn new(rules: TrustRules, sources: &[SourceSpec], names: MetricNames) -> Self {
        let mut unique: Vec<SourceSpec> = Vec::with_capacity(sources.len());
        for spec in sources {
            if !unique.iter().any(|known| known.source == spec.source) {
                unique.push(spec.clone());
            }
        }
        let ledgers = rules
            .writers()
            .iter()
            .map(|_| vec![WriterLedger::default(); unique.len()])
            .collect();
        let trusted_until = unique.iter().map(|_| AtomicI64::new(NO_TRUST)).collect();
        Self {
            required: true,
            rules,
            sources: unique,
            names,
            clock: Clock::system(),
            last_receive_ms: AtomicU64::new(NEVER),
            subscribed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            ledgers: std::sync::Mutex::new(ledgers),
            trusted_until,
            queue: std::sync::RwLock::new(None),
        }
    }

    /// The same channel reading the time from `clock` (tests, conformance vectors). Call it
    /// before anything is recorded: earlier timestamps were taken on the old clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The wall clock, Unix ms, as this channel reads it.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// No channel (a task that caches by TTL or not at all): never trusted for invalidation,
    /// never blocks readiness.
    #[must_use]
    pub fn not_required(sources: &[SourceSpec], names: MetricNames) -> Self {
        Self {
            required: false,
            ..Self::new(TrustRules::with_bound(Duration::ZERO), sources, names)
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

    /// The sources, in configuration order.
    #[must_use]
    pub fn sources(&self) -> &[SourceSpec] {
        &self.sources
    }

    /// Whether a channel is expected at all.
    #[must_use]
    pub const fn is_required(&self) -> bool {
        self.required
    }

    /// The metric names this channel and its subscriber use.
    #[must_use]
    pub const fn metric_names(&self) -> &MetricNames {
        &self.names
    }

    /// The index of `source` in [`Self::sources`].
    #[must_use]
    pub fn source_index(&self, source: &str) -> Option<usize> {
        self.sources.iter().position(|spec| spec.source == source)
    }

    /// The cache `source` vouches for.
    #[must_use]
    pub fn cache_of(&self, source: &str) -> Option<&str> {
        self.source_index(source)
            .map(|index| self.sources[index].cache.as_str())
    }

    /// Milliseconds since the channel's origin (monotonic).
    #[must_use]
    pub fn mono_ms(&self) -> u64 {
        self.clock.mono_ms()
    }

    fn since(at: &AtomicU64, mono_ms: u64) -> Option<Duration> {
        let at = at.load(Ordering::Acquire);
        (at != NEVER).then(|| Duration::from_millis(mono_ms.saturating_sub(at)))
    }

    fn ledgers(&self) -> std::sync::MutexGuard<'_, Vec<Vec<WriterLedger>>> {
        self.ledgers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Until when (monotonic ms) some writer vouches for source `index`, over `ledgers`.
    fn trusted_until_of(&self, ledgers: &[Vec<WriterLedger>], index: usize, now_ms: i64, mono_ms: u64) -> i64 {
        ledgers
            .iter()
            .filter_map(|ledger| ledger[index].vouches_until(&self.rules, now_ms, mono_ms))
            .max()
            .map_or(NO_TRUST, |until| i64::try_from(until).unwrap_or(i64::MAX))
    }

    /// When the newest admitted tick of `source` was written (Unix ms), over every writer.
    #[must_use]
    pub fn last_tick_written_ms(&self, source: &str) -> Option<i64> {
        let index = self.source_index(source)?;
        self.ledgers()
            .iter()
            .filter_map(|ledger| ledger[index].newest_written_ms())
            .max()
    }

    /// Time since an admitted tick of `source` last arrived, from any writer.
    #[must_use]
    pub fn since_tick(&self, source: &str) -> Option<Duration> {
        let index = self.source_index(source)?;
        let mono_ms = self.mono_ms();
        self.ledgers()
            .iter()
            .filter_map(|ledger| ledger[index].last_arrival_mono_ms())
            .max()
            .map(|at| Duration::from_millis(mono_ms.saturating_sub(at)))
    }

    /// Whether the cache of `source` may be served from now: the queue is subscribed and some
    /// configured writer vouches for it ([`WriterLedger::vouches_until`]). An unknown source is
    /// never trusted.
    #[must_use]
    pub fn is_trusted(&self, source: &str) -> bool {
        self.is_trusted_at(source, self.mono_ms())
    }

    /// [`Self::is_trusted`] at the given monotonic time.
    #[must_use]
    pub fn is_trusted_at(&self, source: &str, mono_ms: u64) -> bool {
        self.source_index(source)
            .is_some_and(|index| self.index_trusted_at(index, mono_ms))
    }

    fn index_trusted_at(&self, index: usize, mono_ms: u64) -> bool {
        self.subscribed.load(Ordering::Acquire)
            && i64::try_from(mono_ms).is_ok_and(|mono| mono <= self.trusted_until[index].load(Ordering::Acquire))
    }

    /// Whether every cache is trusted.
    #[must_use]
    pub fn all_trusted(&self) -> bool {
        let mono_ms = self.mono_ms();
        (0..self.sources.len()).all(|index| self.index_trusted_at(index, mono_ms))
    }

    /// Whether the task is ready to serve: it serves (from a trusted cache or by reading
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
    /// nothing. The subscriber flushes the cache when [`TickAdmission::restores_trust`] (or when
    /// the slot's heartbeats went missing), *then* calls [`Self::record_tick`], so nothing
    /// cached while invalidations could have been lost is served once trust returns.
    ///
    /// # Errors
    /// Why the tick does not count: it then changes nothing, and must not be recorded.
    pub fn admit_tick(
        &self,
        source: &str,
        writer: Option<&str>,
        written_ms: i64,
        proof: &SlotProof<'_>,
    ) -> Result<TickAdmission, TickRejection> {
        self.admit_tick_at(source, writer, written_ms, proof, self.now_ms(), self.mono_ms())
    }

    /// [`Self::admit_tick`] at the given times.
    ///
    /// # Errors
    /// As [`Self::admit_tick`].
    pub fn admit_tick_at(
        &self,
        source: &str,
        writer: Option<&str>,
        written_ms: i64,
        proof: &SlotProof<'_>,
        now_ms: i64,
        mono_ms: u64,
    ) -> Result<TickAdmission, TickRejection> {
        let source_index = self.source_index(source).ok_or(TickRejection::UnknownSource)?;
        let writer_index = self.rules.admit(writer, written_ms, now_ms)?;
        let mut ledgers = self.ledgers().clone();
        let ledger = &mut ledgers[writer_index][source_index];
        let previous_ms = ledger.previous_ms(proof.slot);
        ledger.record(proof, written_ms, mono_ms);
        let restores_trust = self.subscribed.load(Ordering::Acquire)
            && !self.index_trusted_at(source_index, mono_ms)
            && self.trusted_until_of(&ledgers, source_index, now_ms, mono_ms)
                >= i64::try_from(mono_ms).unwrap_or(i64::MAX);
        Ok(TickAdmission {
            writer_index,
            source_index,
            previous_ms,
            restores_trust,
        })
    }

    /// Records an admitted tick (see [`Self::admit_tick`]).
    pub fn record_tick(&self, admission: &TickAdmission, written_ms: i64, proof: &SlotProof<'_>) {
        self.record_tick_at(admission, written_ms, proof, self.now_ms(), self.mono_ms());
    }

    /// [`Self::record_tick`] at the given times.
    pub fn record_tick_at(
        &self,
        admission: &TickAdmission,
        written_ms: i64,
        proof: &SlotProof<'_>,
        now_ms: i64,
        mono_ms: u64,
    ) {
        let index = admission.source_index;
        let mut ledgers = self.ledgers();
        ledgers[admission.writer_index][index].record(proof, written_ms, mono_ms);
        let until = self.trusted_until_of(&ledgers, index, now_ms, mono_ms);
        self.trusted_until[index].store(until, Ordering::Release);
    }

    /// Vouches for every source as of now, as a tick of each writer would: for benchmarks and
    /// tests that run without a heartbeat writer.
    pub fn record_ticks_now(&self) {
        let (now_ms, mono_ms) = (self.now_ms(), self.mono_ms());
        for writer_index in 0..self.rules.writers().len() {
            for source_index in 0..self.sources.len() {
                let admission = TickAdmission {
                    writer_index,
                    source_index,
                    previous_ms: None,
                    restores_trust: false,
                };
                self.record_tick_at(&admission, now_ms, &SlotProof::SINGLE, now_ms, mono_ms);
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
    /// bypass-time metric: since trust ended, or since the newest tick (written or arrived)
    /// would have let it last.
    #[must_use]
    pub fn time_beyond_bound(&self, source: &str) -> Duration {
        let Some(index) = self.source_index(source) else {
            return Duration::ZERO;
        };
        let mono_ms = self.mono_ms();
        if self.index_trusted_at(index, mono_ms) {
            return Duration::ZERO;
        }
        let until = self.trusted_until[index].load(Ordering::Acquire);
        if until == NO_TRUST {
            self.since_tick(source)
                .map_or(Duration::ZERO, |since| since.saturating_sub(self.bound()))
        } else {
            Duration::from_millis(mono_ms.saturating_sub(u64::try_from(until).unwrap_or(0)))
        }
    }

    fn source_report(&self, index: usize) -> SourceReport {
        let (now_ms, mono_ms) = (self.now_ms(), self.mono_ms());
        let since =
            |at: u64| u64::try_from(Duration::from_millis(mono_ms.saturating_sub(at)).as_millis()).unwrap_or(u64::MAX);
        let ledgers = self.ledgers();
        let writers: Vec<WriterReport> = self
            .rules
            .writers()
            .iter()
            .zip(ledgers.iter())
            .map(|(writer, ledger)| {
                let ledger = &ledger[index];
                WriterReport {
                    writer: writer.clone(),
                    vouches: ledger.vouches_until(&self.rules, now_ms, mono_ms).is_some(),
                    covered: ledger.covered(),
                    lag_ms: ledger.newest_written_ms().map(|written| now_ms.saturating_sub(written)),
                    ms_since_tick: ledger.last_arrival_mono_ms().map(since),
                    slots: ledger
                        .required_slots(&self.rules, mono_ms)
                        .into_iter()
                        .map(|(slot, ticks)| SlotReport {
                            slot,
                            lag_ms: ticks.map(|(written, _)| now_ms.saturating_sub(written)),
                            ms_since_tick: ticks.map(|(_, arrived)| since(arrived)),
                        })
                        .collect(),
                }
            })
            .collect();
        let written = ledgers
            .iter()
            .filter_map(|ledger| ledger[index].newest_written_ms())
            .max();
        let arrived = ledgers
            .iter()
            .filter_map(|ledger| ledger[index].last_arrival_mono_ms())
            .max();
        drop(ledgers);
        SourceReport {
            cache: self.sources[index].cache.clone(),
            trusted: self.index_trusted_at(index, mono_ms),
            lag_ms: written.map(|written| now_ms.saturating_sub(written)),
            ms_since_tick: arrived.map(since),
            last_tick_written_at_ms: written,
            writers,
        }
    }

    /// The report of one source; `None` for a source this channel does not know.
    #[must_use]
    pub fn report_of(&self, source: &str) -> Option<SourceReport> {
        self.source_index(source).map(|index| self.source_report(index))
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
            sources: (0..self.sources.len())
                .map(|index| (self.sources[index].source.clone(), self.source_report(index)))
                .collect(),
        }
    }

    /// Sets the freshness gauges to their values now (call it on scrape, so the lag is current
    /// even while no tick arrives).
    pub fn publish_gauges(&self) {
        let names = &self.names;
        #[allow(clippy::cast_precision_loss)] // seconds of lag and Unix seconds fit an f64
        for (index, spec) in self.sources.iter().enumerate() {
            let report = self.source_report(index);
            let label = spec.source.clone();
            metrics::gauge!(names.cache_trusted.clone(), "cache" => report.cache).set(if report.trusted {
                1.0
            } else {
                0.0
            });
            if let Some(lag) = report.lag_ms {
                metrics::gauge!(names.tick_lag.clone(), "source" => label.clone()).set(lag as f64 / 1_000.0);
            }
            if let Some(since) = report.ms_since_tick {
                metrics::gauge!(names.since_tick.clone(), "source" => label.clone()).set(since as f64 / 1_000.0);
            }
            if let Some(written) = report.last_tick_written_at_ms {
                metrics::gauge!(names.tick_written_timestamp.clone(), "source" => label).set(written as f64 / 1_000.0);
            }
        }
        metrics::gauge!(names.staleness_bound.clone()).set(self.bound().as_secs_f64());
        metrics::gauge!(names.channel_healthy.clone()).set(if self.all_trusted() { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::trust::heartbeats_missed;

    fn sources() -> Vec<SourceSpec> {
        vec![SourceSpec::new("users", "profiles"), SourceSpec::new("roles", "roles")]
    }

    const BOUND: Duration = Duration::from_secs(15);
    /// The task's wall clock at the channel's origin.
    const EPOCH_MS: i64 = 1_800_000_000_000;

    fn channel(writers: &[&str]) -> ChannelHealth {
        let writers: Vec<String> = writers.iter().map(|writer| (*writer).to_owned()).collect();
        let health = ChannelHealth::new(
            TrustRules::new(BOUND, Duration::from_millis(500), &writers),
            &sources(),
            MetricNames::default(),
        );
        health.mark_subscribed("q");
        health
    }

    /// Admits and records a tick arriving at `mono_ms` (wall clock `EPOCH_MS + mono_ms`).
    fn tick(
        health: &ChannelHealth,
        source: &str,
        writer: &str,
        written_ms: i64,
        mono_ms: u64,
    ) -> Result<TickAdmission, TickRejection> {
        tick_of(health, source, writer, written_ms, &SlotProof::SINGLE, mono_ms)
    }

    /// [`tick`] of a heartbeat slot.
    fn tick_of(
        health: &ChannelHealth,
        source: &str,
        writer: &str,
        written_ms: i64,
        proof: &SlotProof<'_>,
        mono_ms: u64,
    ) -> Result<TickAdmission, TickRejection> {
        let now_ms = EPOCH_MS + i64::try_from(mono_ms).expect("small");
        let admission = health.admit_tick_at(source, Some(writer), written_ms, proof, now_ms, mono_ms)?;
        health.record_tick_at(&admission, written_ms, proof, now_ms, mono_ms);
        Ok(admission)
    }

    fn trusted(health: &ChannelHealth, source: &str, mono_ms: u64) -> bool {
        health.is_trusted_at(source, mono_ms)
    }

    #[test]
    fn each_source_is_trusted_on_its_own_ticks() {
        let health = channel(&["staleless"]);
        assert!(
            health.is_ready(),
            "a subscribed task serves, reading through until ticks arrive"
        );
        assert!(!trusted(&health, "users", 0) && !trusted(&health, "roles", 0));
        let admission = tick(&health, "users", "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(admission.restores_trust && admission.previous_ms.is_none());
        assert!(trusted(&health, "users", 0));
        assert!(
            !trusted(&health, "roles", 0),
            "a users tick says nothing of the roles path"
        );
        tick(&health, "roles", "staleless", EPOCH_MS - 60_000, 0).expect("admitted");
        assert!(
            !trusted(&health, "roles", 0),
            "a tick written a minute ago is past the bound"
        );
        tick(&health, "roles", "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(trusted(&health, "roles", 0));
        tick(&health, "roles", "staleless", 0, 0).expect("admitted");
        assert!(
            trusted(&health, "roles", 0),
            "an older tick arriving late never moves the write time back"
        );
        assert!(!trusted(&health, "users", 15_001), "no tick for longer than the bound");
        health.mark_unsubscribed();
        assert!(!trusted(&health, "users", 0) && health.is_ready());
        health.mark_stopping();
        assert!(!health.is_ready());
    }

    #[test]
    fn a_tick_from_an_hour_ahead_is_refused_and_hides_neither_a_gap_nor_a_silence() {
        let health = channel(&["staleless"]);
        tick(&health, "users", "staleless", EPOCH_MS, 0).expect("admitted");
        assert_eq!(
            tick(&health, "users", "staleless", EPOCH_MS + 3_600_000, 1_000),
            Err(TickRejection::FromTheFuture)
        );
        assert_eq!(health.last_tick_written_ms("users"), Some(EPOCH_MS));
        // The next beat follows the last admitted one: a gap is measured against it.
        let admission = tick(&health, "users", "staleless", EPOCH_MS + 10_000, 10_000).expect("admitted");
        assert_eq!(admission.previous_ms, Some(EPOCH_MS));
        assert!(heartbeats_missed(admission.previous_ms, EPOCH_MS + 10_000, Some(5_000)));
        // Future ticks alone never keep trust alive.
        for at in (11_000..40_000).step_by(1_000) {
            let _ = tick(&health, "users", "staleless", EPOCH_MS + 3_600_000 + at as i64, at);
        }
        assert!(!trusted(&health, "users", 40_000));
    }

    #[test]
    fn a_forged_writer_vouches_for_nothing_and_writers_keep_their_own_state() {
        let health = channel(&["staleless", "backup"]);
        assert_eq!(
            tick(&health, "roles", "evil", EPOCH_MS, 0),
            Err(TickRejection::UnknownWriter)
        );
        assert!(!trusted(&health, "roles", 0));
        // One writer's clock an hour behind: its ticks never vouch, the other's still do.
        tick(&health, "roles", "backup", EPOCH_MS - 3_600_000, 0).expect("admitted");
        assert!(!trusted(&health, "roles", 0));
        tick(&health, "roles", "staleless", EPOCH_MS, 0).expect("admitted");
        assert!(trusted(&health, "roles", 0));
        let admission = tick(&health, "roles", "staleless", EPOCH_MS + 5_000, 5_000).expect("admitted");
        assert_eq!(admission.previous_ms, Some(EPOCH_MS), "not the other writer's time");
        let writers: Vec<String> = health.report().sources["roles"]
            .writers
            .iter()
            .map(|report| report.writer.clone())
            .collect();
        assert_eq!(writers, ["staleless", "backup"]);
    }

    #[test]
    fn a_stuck_shard_stops_trust_within_the_bound_while_the_others_flow() {
        let health = channel(&["staleless"]);
        let slots: Vec<String> = ["0", "1", "2", "3"].map(str::to_owned).to_vec();
        let beat = |slot: &str, at: u64| {
            let proof = SlotProof {
                slot,
                slots: Some(&slots),
                covered: true,
            };
            tick_of(&health, "users", "staleless", EPOCH_MS + at as i64, &proof, at).expect("admitted")
        };
        for slot in ["0", "1", "2", "3"] {
            beat(slot, 0);
        }
        assert!(trusted(&health, "users", 0));
        // Slot 2's shard stops; the others beat every 500 ms.
        let mut last_trusted = 0;
        for at in (500..=30_000).step_by(500) {
            for slot in ["0", "1", "3"] {
                beat(slot, at);
            }
            if trusted(&health, "users", at) {
                last_trusted = at;
            }
        }
        assert_eq!(
            last_trusted, 14_500,
            "trust ends B less T after the stuck shard's last tick"
        );
        // The shard comes back: its tick restores trust, and says the cache must be flushed first.
        assert!(beat("2", 30_500).restores_trust);
        assert!(trusted(&health, "users", 30_500));
        let report = health.report();
        assert_eq!(report.sources["users"].writers[0].slots.len(), 4);
    }

    #[test]
    fn readiness_waits_for_the_start_and_not_for_ticks() {
        let health = ChannelHealth::new(TrustRules::with_bound(BOUND), &sources(), MetricNames::default());
        assert!(!health.is_ready());
        health.mark_started();
        assert!(health.is_ready());
        assert!(ChannelHealth::not_required(&sources(), MetricNames::default()).is_ready());
        let report = health.report();
        assert!(!report.healthy && !report.sources["users"].trusted && report.sources["users"].lag_ms.is_none());
    }

    /// One step of a hostile tick sequence: time passes, then a tick arrives (or nothing).
    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: u64,
        source: &'static str,
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
                prop_oneof![Just("users"), Just("roles")],
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
            let mut arrived: Vec<(&str, &str, i64, i64)> = Vec::new();
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
                for source in ["users", "roles"] {
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

        /// With slots: whatever ticks arrive (any slot, any announcement, covering or not, any
        /// time), a cache is trusted only while, for some configured writer, every slot it
        /// announced in a covering tick within `B` has a tick written and arrived within the
        /// bound, and its newest tick says its slots cover the stream.
        #[test]
        fn no_slot_sequence_makes_trust_outlive_a_shards_proof(
            steps in proptest::collection::vec(
                (0u64..3_000, 0usize..4, -20_000i64..2_000, proptest::collection::vec(0usize..4, 0..4), any::<bool>()),
                1..150,
            )
        ) {
            let health = channel(&["staleless"]);
            let tolerance = i64::try_from(health.rules().future_tolerance().as_millis()).expect("small");
            let bound = i64::try_from(BOUND.as_millis()).expect("small");
            let names = ["0", "1", "2", "3"];
            // (slot, announced, covered, written, arrival) of every admitted tick.
            let mut log: Vec<(usize, Vec<usize>, bool, i64, i64)> = Vec::new();
            let mut mono = 0u64;
            for (advance, slot, offset, announced, covered) in steps {
                mono += advance;
                let now = EPOCH_MS + i64::try_from(mono).expect("small");
                let written = now + offset;
                let slots: Vec<String> = announced.iter().map(|index| names[*index].to_owned()).collect();
                let proof = SlotProof { slot: names[slot], slots: Some(&slots), covered };
                if tick_of(&health, "users", "staleless", written, &proof, mono).is_ok() {
                    log.push((slot, announced, covered, written, now));
                }
                let recent = |at: i64| now - at <= bound;
                let mut required: Vec<usize> = log
                    .iter()
                    .filter(|entry| recent(entry.4) && entry.2)
                    .flat_map(|entry| entry.1.iter().copied().chain([entry.0]))
                    .collect();
                required.sort_unstable();
                required.dedup();
                let proven = |slot: usize| {
                    log.iter().any(|&(of, _, _, written, at)| {
                        of == slot && recent(at) && now - written + tolerance <= bound
                    })
                };
                let newest_covers = log
                    .iter()
                    .max_by_key(|entry| entry.3)
                    .is_some_and(|entry| entry.2 || log.iter().any(|other| other.3 == entry.3 && other.2));
                let proof_holds = !required.is_empty() && required.iter().all(|slot| proven(*slot)) && newest_covers;
                prop_assert!(!trusted(&health, "users", mono) || proof_holds, "trusted without every shard's proof at {mono} ms: {log:?}");
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
                    Ok(admission) if step.source == "users" => {
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
