//! Metric names (the first four are a contract, `docs/design.md`) and the Prometheus recorder.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so two API
//! instances in one test process share it; per-instance numbers are in `/admin/cache/stats`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Reads answered from a cache, by `cache` (contract).
pub const CACHE_HITS: &str = "staleless_cache_hits_total";
/// Reads not answered from a cache, by `cache` (contract).
pub const CACHE_MISSES: &str = "staleless_cache_misses_total";
/// Keys evicted by invalidation messages, by `source` (`users`, `roles`, `all`) (contract).
pub const INVALIDATIONS_APPLIED: &str = "staleless_invalidations_applied_total";
/// Seconds from the change (stream record time) to its eviction here (contract, histogram).
pub const INVALIDATION_LAG: &str = "staleless_invalidation_lag_seconds";
/// Loads from DynamoDB into a cache, by `cache`.
pub const CACHE_FILLS: &str = "staleless_cache_fills_total";
/// Loads not stored because an invalidation raced them, by `cache`.
pub const CACHE_FILLS_DISCARDED: &str = "staleless_cache_fills_discarded_total";
/// Keys evicted from a cache by any invalidation (queue or local write), by `cache`.
pub const CACHE_INVALIDATIONS: &str = "staleless_cache_invalidations_total";
/// Duration of a cache fill, by `cache` (histogram).
pub const CACHE_FILL_SECONDS: &str = "staleless_cache_fill_seconds";
/// Reads that skipped the cache because the invalidation channel was not trusted, by `cache`.
pub const CACHE_BYPASSED_READS: &str = "staleless_cache_bypassed_reads_total";
/// Seconds a cache was bypassed because its source's ticks were past the bound (added when
/// trust returns), by `cache`.
pub const CHANNEL_BYPASS_SECONDS: &str = "staleless_channel_bypass_seconds_total";
/// 1 while every cache is trusted (its source's ticks are within the bound), else 0.
pub const CHANNEL_HEALTHY: &str = "staleless_channel_healthy";
/// The staleness bound `B` in seconds (gauge).
pub const STALENESS_BOUND: &str = "staleless_staleness_bound_seconds";
/// 1 while a cache is served, 0 while it is bypassed, by `cache` (gauge).
pub const CACHE_TRUSTED: &str = "staleless_cache_trusted";
/// Now minus the write time of the newest tick, by `source` (gauge, seconds).
pub const TICK_LAG: &str = "staleless_tick_lag_seconds";
/// Seconds since a tick last arrived, by `source` (gauge).
pub const SINCE_TICK: &str = "staleless_seconds_since_tick";
/// Write time of the newest tick, Unix seconds, by `source` (gauge).
pub const TICK_WRITTEN_TIMESTAMP: &str = "staleless_tick_written_timestamp_seconds";
/// Ticks received, by `source`.
pub const TICKS: &str = "staleless_ticks_total";
/// Ticks refused, by `source` and `reason` (`unknown_writer`: not a configured heartbeat writer;
/// `future`: written further ahead than the tolerance). A refused tick changes nothing.
pub const TICKS_REJECTED: &str = "staleless_ticks_rejected_total";
/// Flushes because the event source mapping gave up records of a table (their invalidations are
/// lost), by `source` (`users`, `roles`, `all` for a stream of no table of this task).
pub const GIVE_UP_FLUSHES: &str = "staleless_give_up_flushes_total";
/// Items read from a table that do not fit the data model, by `table` (`users`, `roles`):
/// counted once per change of the item, which is left out (roles) or refused (profiles).
pub const CORRUPT_ITEMS: &str = "staleless_corrupt_items_total";
/// Ticks showing that heartbeats went missing on the way (each flushed that cache), by `source`.
pub const TICK_GAPS: &str = "staleless_tick_gaps_total";
/// Times this task found its subscription gone or altered and re-created it.
pub const SUBSCRIPTION_HEALED: &str = "staleless_subscription_healed_total";
/// Successful `ReceiveMessage` calls, by `outcome` (`empty`, `messages`): the idle cost of a
/// task is its rate of empty receives.
pub const QUEUE_RECEIVES: &str = "staleless_queue_receives_total";
/// Failed `ReceiveMessage` calls.
pub const QUEUE_RECEIVE_ERRORS: &str = "staleless_queue_receive_errors_total";
/// Queue messages handled, by `outcome` (`applied`, `malformed`).
pub const QUEUE_MESSAGES: &str = "staleless_queue_messages_total";
/// Times this task's queue was found deleted and recreated.
pub const QUEUE_RECREATED: &str = "staleless_queue_recreated_total";
/// Stale queues and orphaned subscriptions removed by the sweeper, by `kind`.
pub use staleless_consumer::sweeper::SWEPT;
/// Token verifications (RS256) performed, i.e. claims-cache misses that verified.
pub const TOKENS_VERIFIED: &str = "staleless_tokens_verified_total";
/// Tokens refused, by `reason`.
pub const TOKENS_REJECTED: &str = "staleless_tokens_rejected_total";
/// RS256 keys in the JWKS in use.
pub const JWKS_KEYS: &str = "staleless_jwks_keys";
/// JWKS reloads refused (the last good set kept), by `reason` (`unreachable`, `unparsable`, `empty`).
pub const JWKS_REFRESH_FAILURES: &str = "staleless_jwks_refresh_failures_total";
/// Keys that left the JWKS (or changed under their `kid`) at a reload.
pub const JWKS_KEYS_REMOVED: &str = "staleless_jwks_keys_removed_total";
/// Role writes that lost a race to another write and were re-read and re-applied.
pub const ROLE_WRITE_RETRIES: &str = "staleless_role_write_retries_total";
/// Stored profile roles brought in line with a token's roles claim, by `outcome`
/// (`written`, `already_current`, `failed`).
pub const PROFILE_ROLES_ALIGNED: &str = "staleless_profile_roles_aligned_total";

/// Buckets for the latency histograms: invalidation lag is tens of milliseconds when healthy
/// and seconds when something is wrong; fills are milliseconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder on first use and returns its handle.
///
/// Call before anything records metrics: handles registered earlier are bound to the no-op
/// recorder. If another recorder is already installed (an embedding program's), a detached
/// recorder is used so `/metrics` still answers, with only what this crate renders itself.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = recorder();
            describe();
            handle
        })
        .clone()
}

fn recorder() -> PrometheusHandle {
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

/// Describes the contract metrics and registers them at zero, so a scrape shows them before
/// the first invalidation arrives.
fn describe() {
    metrics::describe_counter!(CACHE_HITS, "Reads answered from a cache");
    metrics::describe_counter!(CACHE_MISSES, "Reads not answered from a cache");
    metrics::describe_counter!(INVALIDATIONS_APPLIED, "Keys evicted by invalidation messages");
    metrics::describe_histogram!(
        INVALIDATION_LAG,
        metrics::Unit::Seconds,
        "From the change to its eviction here"
    );
    for cache in ["profiles", "roles"] {
        metrics::counter!(CACHE_HITS, "cache" => cache).increment(0);
        metrics::counter!(CACHE_MISSES, "cache" => cache).increment(0);
    }
    for source in ["users", "roles", "all"] {
        metrics::counter!(INVALIDATIONS_APPLIED, "source" => source).increment(0);
    }
    // Hostile data is counted from zero, so an alert on its rate sees the first one.
    metrics::describe_counter!(
        TICKS_REJECTED,
        "Ticks refused: unknown writer, or written in the future"
    );
    metrics::describe_counter!(CORRUPT_ITEMS, "Items that do not fit the data model, once per change");
    metrics::describe_counter!(GIVE_UP_FLUSHES, "Flushes because records of a table were given up");
    for source in ["users", "roles"] {
        for reason in ["unknown_writer", "future"] {
            metrics::counter!(TICKS_REJECTED, "source" => source, "reason" => reason).increment(0);
        }
        metrics::counter!(CORRUPT_ITEMS, "table" => source).increment(0);
        metrics::counter!(GIVE_UP_FLUSHES, "source" => source).increment(0);
    }
}
