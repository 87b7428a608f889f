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
