//! `staleless-consumer`: what a task that consumes staleless invalidations shares with the fleet
//! around it, without a web framework: its queue's rules (names, tags, policy, the heartbeat tag
//! that tells a live task from a dead one), the AWS clients and timeouts of its queue, and the
//! fleet's sweeper of queues and subscriptions left by crashed tasks (the `queue-sweeper`
//! Lambda is a thin main over [`sweeper::Sweeper`]).
//!
//! The API (`staleless-api`) is its user; so is the `lambdas` package, which therefore builds
//! without the API's HTTP stack.

mod aws;
mod config;
pub mod queue;
pub mod sweeper;
pub mod telemetry;

pub use aws::{AwsTimeouts, ChannelClients};
pub use config::SweeperConfig;

/// Seconds since the Unix epoch (0 if the clock is before it): token expiry and queue heartbeats.
#[must_use]
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what ECS sends before stopping a task).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
