//! Logging: `tracing` as JSON lines on stdout, filtered by `RUST_LOG` (default `info`); the set-up
//! the API tasks share with the fleet sweeper, in `staleless_consumer::telemetry`.

pub use staleless_consumer::telemetry::init;
