//! The names of every metric the consumer records, under one configurable prefix.
//!
//! Metrics go through the `metrics` facade, so they reach whichever recorder the service installs
//! (a Prometheus exporter, typically). With the default prefix `staleless` the names are those of
//! the staleless API's `/metrics`; a service that runs two consumers, or wants its own namespace,
//! picks another prefix and keeps every suffix.

/// Buckets of the `_seconds` histograms: invalidation lag is tens of milliseconds when healthy
/// and seconds when something is wrong; fills are milliseconds.
#[cfg(feature = "prometheus")]
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder every staleless task renders on `/metrics` (histograms with
/// [`SECONDS_BUCKETS`] for every `_seconds` metric), so that any service on the library exports
/// the same series as the API tasks. Call it once, before anything records metrics; if another
/// recorder is already installed, a detached one is returned (logged), whose `/metrics` holds
/// only what the service renders itself.
#[cfg(feature = "prometheus")]
#[must_use]
pub fn install_prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    let builder = || {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
    };
    builder().install_recorder().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "a metrics recorder is already installed; /metrics will be partial");
        builder().build_recorder().handle()
    })
}

/// The names of the consumer's metrics, each `<prefix>_<suffix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    /// Reads answered from a cache, by `cache`.
    pub cache_hits: String,
    /// Reads not answered from a cache, by `cache`.
    pub cache_misses: String,
    /// Keys evicted by invalidation messages, by `source` (a source's name, or `all`).
    pub invalidations_applied: String,
    /// Seconds from the change (stream record time) to its eviction here (histogram).
    pub invalidation_lag: String,
    /// Loads from the table into a cache, by `cache`.
    pub cache_fills: String,
    /// Loads not stored because an invalidation raced them, by `cache`.
    pub cache_fills_discarded: String,
    /// Keys evicted from a cache by any invalidation (queue or local write), by `cache`.
    pub cache_invalidations: String,
    /// Duration of a cache fill, by `cache` (histogram).
    pub cache_fill_seconds: String,
    /// Reads that skipped the cache because its source was not trusted, by `cache`.
    pub cache_bypassed_reads: String,
    /// Cache hits re-read from the table and compared, by `cache` and `result` (`fresh`,
    /// `stale`).
    pub verified_hits: String,
    /// Seconds a cache was bypassed because its source's ticks were past the bound (added when
    /// trust returns), by `cache`.
    pub channel_bypass_seconds: String,
    /// 1 while every cache is trusted, else 0 (gauge).
    pub channel_healthy: String,
    /// The staleness bound `B` in seconds (gauge).
    pub staleness_bound: String,
    /// 1 while a cache is served, 0 while it is bypassed, by `cache` (gauge).
    pub cache_trusted: String,
    /// Now minus the write time of the newest tick, by `source` (gauge, seconds).
    pub tick_lag: String,
    /// Seconds since a tick last arrived, by `source` (gauge).
    pub since_tick: String,
    /// Write time of the newest tick, Unix seconds, by `source` (gauge).
    pub tick_written_timestamp: String,
    /// Ticks received, by `source`.
    pub ticks: String,
    /// Ticks refused, by `source` and `reason` (`unknown_writer`, `future`, `unknown_source`).
    pub ticks_rejected: String,
    /// Flushes because the event source mapping gave up records of a table, by `source`.
    pub give_up_flushes: String,
    /// Ticks showing that heartbeats went missing on the way (each flushed that cache), by
    /// `source`.
    pub tick_gaps: String,
    /// Times the task found its subscription gone or altered and re-created it.
    pub subscription_healed: String,
    /// Successful `ReceiveMessage` calls, by `outcome` (`empty`, `messages`).
    pub queue_receives: String,
    /// Failed `ReceiveMessage` calls.
    pub queue_receive_errors: String,
    /// Queue messages handled, by `outcome` (`applied`, `give_up`, `malformed`).
    pub queue_messages: String,
    /// Times the task's queue was found deleted and recreated.
    pub queue_recreated: String,
}

impl MetricNames {
    /// The default prefix: the staleless API's names.
    pub const DEFAULT_PREFIX: &'static str = "staleless";

    /// Every name under `prefix` (`<prefix>_cache_hits_total`, …).
    #[must_use]
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |suffix: &str| format!("{prefix}_{suffix}");
        Self {
            cache_hits: name("cache_hits_total"),
            cache_misses: name("cache_misses_total"),
            invalidations_applied: name("invalidations_applied_total"),
            invalidation_lag: name("invalidation_lag_seconds"),
            cache_fills: name("cache_fills_total"),
            cache_fills_discarded: name("cache_fills_discarded_total"),
            cache_invalidations: name("cache_invalidations_total"),
            cache_fill_seconds: name("cache_fill_seconds"),
            cache_bypassed_reads: name("cache_bypassed_reads_total"),
            verified_hits: name("verified_hits_total"),
            channel_bypass_seconds: name("channel_bypass_seconds_total"),
            channel_healthy: name("channel_healthy"),
            staleness_bound: name("staleness_bound_seconds"),
            cache_trusted: name("cache_trusted"),
            tick_lag: name("tick_lag_seconds"),
            since_tick: name("seconds_since_tick"),
            tick_written_timestamp: name("tick_written_timestamp_seconds"),
            ticks: name("ticks_total"),
            ticks_rejected: name("ticks_rejected_total"),
            give_up_flushes: name("give_up_flushes_total"),
            tick_gaps: name("tick_gaps_total"),
            subscription_healed: name("subscription_healed_total"),
            queue_receives: name("queue_receives_total"),
            queue_receive_errors: name("queue_receive_errors_total"),
            queue_messages: name("queue_messages_total"),
            queue_recreated: name("queue_recreated_total"),
        }
    }

    /// Describes the metrics and registers the ones alerts watch at zero, so a scrape shows them
    /// before the first event: hits and misses per cache, applied invalidations per source, and
    /// the hostile-data counters (an alert on their rate must see the first one).
    pub fn describe(&self, sources: &[crate::SourceSpec]) {
        metrics::describe_counter!(self.cache_hits.clone(), "Reads answered from a cache");
        metrics::describe_counter!(self.cache_misses.clone(), "Reads not answered from a cache");
        metrics::describe_counter!(
            self.invalidations_applied.clone(),
            "Keys evicted by invalidation messages"
        );
        metrics::describe_histogram!(
            self.invalidation_lag.clone(),
            metrics::Unit::Seconds,
            "From the change to its eviction here"
        );
        metrics::describe_counter!(
            self.ticks_rejected.clone(),
            "Ticks refused: unknown writer, written in the future, or of an unknown source"
        );
        metrics::describe_counter!(
            self.give_up_flushes.clone(),
            "Flushes because records of a table were given up"
        );
        metrics::describe_counter!(
            self.verified_hits.clone(),
            "Cache hits re-read from the table: fresh or stale"
        );
        for spec in sources {
            let cache = spec.cache.clone();
            metrics::counter!(self.cache_hits.clone(), "cache" => cache.clone()).increment(0);
            metrics::counter!(self.cache_misses.clone(), "cache" => cache).increment(0);
            let source = spec.source.clone();
            metrics::counter!(self.invalidations_applied.clone(), "source" => source.clone()).increment(0);
            for reason in ["unknown_writer", "future"] {
                metrics::counter!(self.ticks_rejected.clone(), "source" => source.clone(), "reason" => reason)
                    .increment(0);
            }
            metrics::counter!(self.give_up_flushes.clone(), "source" => source).increment(0);
        }
        metrics::counter!(self.invalidations_applied.clone(), "source" => "all").increment(0);
        // What the dashboards and alerts watch, from zero: the first event is then a rate.
        for spec in sources {
            let cache = spec.cache.clone();
            metrics::counter!(self.cache_bypassed_reads.clone(), "cache" => cache.clone()).increment(0);
            metrics::counter!(self.channel_bypass_seconds.clone(), "cache" => cache.clone()).increment(0);
            for result in ["fresh", "stale"] {
                metrics::counter!(self.verified_hits.clone(), "cache" => cache.clone(), "result" => result)
                    .increment(0);
            }
            metrics::counter!(self.tick_gaps.clone(), "source" => spec.source.clone()).increment(0);
        }
        metrics::counter!(self.subscription_healed.clone()).increment(0);
        metrics::counter!(self.queue_recreated.clone()).increment(0);
    }
}

impl Default for MetricNames {
    fn default() -> Self {
        Self::with_prefix(Self::DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_names_are_the_apis_and_a_prefix_replaces_only_the_namespace() {
        let names = MetricNames::default();
        assert_eq!(names.cache_hits, "staleless_cache_hits_total");
        assert_eq!(names.since_tick, "staleless_seconds_since_tick");
        let custom = MetricNames::with_prefix("orders");
        assert_eq!(custom.cache_hits, "orders_cache_hits_total");
        assert_eq!(custom.verified_hits, "orders_verified_hits_total");
    }
}
