//! Logging: `tracing` as JSON lines on stdout, filtered by `RUST_LOG` (default `info`), for the
//! API tasks and the fleet sweeper alike.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber; a second call (tests) is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .try_init();
}
