//! `staleless-consumer`: keep a tokio service's in-memory caches fresh from the data's own
//! changes, with a bound on staleness that holds whatever breaks.
//!
//! # The guarantee
//!
//! A relay reads each table's DynamoDB stream and publishes what changed (keys and stream
//! positions, never data) to one SNS topic; every task of the service owns an SQS queue
//! subscribed to it and evicts what changed. A heartbeat writer writes an item into every table
//! every `H` seconds; the relay turns it into a *tick* of that table's source, so a tick that
//! reaches a task proves the whole path — table, stream, relay, topic, subscription, queue — up
//! to the tick's write time. A task serves a cache only while a tick of its source, from a
//! configured writer, was written and arrived within the bound `B`; past it the cache is
//! bypassed (read through) until ticks return, and flushed before it is trusted again. So no
//! task serves a value that changed more than `B` ago, whether a part of the path fails loudly,
//! silently, or is never repaired. Keep `H` at most a third of `B`.
//!
//! # What a service does
//!
//! ```text
//! let health = Arc::new(ChannelHealth::new(config.trust_rules(), &[SourceSpec::new("users", "profiles")], MetricNames::default()));
//! let profiles = TrustedCache::new(health.clone(), "users", CacheMode::Event, 100_000, ttl);
//! let caches = Caches::new().register("users", Arc::new(profiles.clone()));
//! tokio::spawn(Subscriber::new(health.clone(), caches, clients, &topic_arn, config, &task_id).run(cancel));
//! // on every read:
//! let name = profiles.get(user_id, || load_from_dynamodb(user_id)).await?;
//! ```
//!
//! To keep the guarantee, a service must: read through [`TrustedCache::get`] (never around it),
//! load with `ConsistentRead` (a read-through after an outage must see the newest write), report
//! readiness from [`ChannelHealth::is_ready`] (a broken pipeline degrades to read-through, it
//! never drains the fleet), cancel the subscriber on shutdown (it unsubscribes and deletes its
//! queue), and run the fleet [`sweeper`] for tasks that crashed.
//!
//! # Modules
//!
//! - trust rules ([`TrustRules`], [`WriterLedger`]): pure functions of the ticks and the time;
//! - [`ChannelHealth`]: the trust per source, read on every request;
//! - [`KeyedCache`] and [`TrustedCache`]: race-guarded, single-flight fills, served only while
//!   trusted;
//! - [`Subscriber`] and [`Caches`]: the task's queue and the caches it evicts from;
//! - [`Inbox`]: what each queue body does to the trust and the caches, at the channel's
//!   [`Clock`] (the part `protocol/conformance/` specifies);
//! - [`queue`] and [`sweeper`]: queue rules and the fleet sweeper (the `queue-sweeper` Lambda is
//!   a thin main over [`sweeper::Sweeper`]);
//! - [`MetricNames`]: every metric under one prefix.

#![deny(missing_docs)]

mod aws;
#[cfg(feature = "cache")]
mod cache;
mod caches;
mod config;
mod health;
mod inbox;
mod metrics;
pub mod queue;
mod subscriber;
pub mod sweeper;
pub mod telemetry;
mod trust;
#[cfg(feature = "cache")]
mod trusted;

pub use aws::{AwsTimeouts, ChannelClients};
#[cfg(feature = "cache")]
pub use cache::{CacheStats, FillAborted, KeyedCache, may_keep_fill};
pub use caches::{Caches, Evict};
pub use config::{QueueTags, SubscriberConfig, SweeperConfig};
pub use health::{
    ChannelHealth, ChannelReport, Clock, ManualClock, SlotReport, SourceReport, SourceSpec, TickAdmission,
    WriterReport, unix_now_ms,
};
pub use inbox::{Inbox, Received};
pub use metrics::MetricNames;
#[cfg(feature = "prometheus")]
pub use metrics::{SECONDS_BUCKETS, install_prometheus};
pub use subscriber::{ChannelError, Subscriber, TaskQueue};
pub use trust::{DEFAULT_FUTURE_TOLERANCE, SlotProof, TickRejection, TrustRules, WriterLedger, heartbeats_missed};
#[cfg(feature = "cache")]
pub use trusted::{CacheMode, ReadPath, TrustedCache, VerificationStats};

/// Seconds since the Unix epoch (0 if the clock is before it): token expiry and queue heartbeats.
#[must_use]
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what ECS sends before stopping a task).
///
/// The handlers are installed when this is called, not when the future is first polled: a signal
/// that arrives in between (while a caller prints its banner, say) is then delivered to the
/// future instead of killing the process with its children still running. Call it from within a
/// Tokio runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |stream: std::io::Result<tokio::signal::unix::Signal>| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(interrupt) => {}
            () = wait(terminate) => {}
        }
        tracing::info!("shutdown signal received");
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    tracing::info!("shutdown signal received");
}
