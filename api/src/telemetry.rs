//! Logging: `tracing` as JSON lines on stdout, filtered by `RUST_LOG` (default `info`); the one
//! set-up every staleless process shares, in `staleless_consumer::telemetry`.

pub use staleless_consumer::telemetry::init;
