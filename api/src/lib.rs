//! The staleless API: an axum service whose in-memory caches are kept fresh by its own
//! invalidation queue (`docs/design.md`).
//!
//! - [`config`]: typed configuration from environment variables, with defaults.
//! - [`error`]: [`AppError`], the one error enum, mapped to JSON responses once.
//! - [`model`]: profiles and AppRoles as stored, and validation of admin input.
//! - [`permissions`]: permission resolution, a pure function.
//! - [`auth`]: RS256 JWT verification against a JWKS, with the verified-claims cache.
//! - [`store`]: the DynamoDB stores behind narrow traits, and in-memory ones for tests.
//! - [`directory`]: the store layer routes use: its caches (`staleless_consumer::TrustedCache`),
//!   read-your-writes, the role-write rules.
//! - [`task_id`]: this task's id, which names its queue.
//! - [`state`]: [`AppState`], shared by requests and background tasks.
//! - [`routes`]: [`router`] and the handlers of every route.
//! - [`server`]: [`run`] (serve until shutdown, with the JWKS reload and the invalidation
//!   subscriber) and [`server::shutdown_signal`].
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`telemetry`]: JSON logs.
//!
//! The freshness guarantee itself — trust by ticks, trusted caches, the task's queue — is the
//! `staleless-consumer` crate's; this crate is its reference user. The `staleless-api` binary
//! only reads the configuration, sets up logging, binds and calls [`run`].

pub mod auth;
pub mod config;
pub mod directory;
pub mod error;
pub mod metrics;
/// The data model, shared with the operator tools: `staleless-model`.
pub use staleless_model as model;
pub mod permissions;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
pub mod task_id;
pub mod telemetry;

pub use config::{CacheMode, Config};
pub use error::AppError;
pub use routes::router;
pub use server::run;
pub use state::AppState;

pub use staleless_consumer::unix_now_secs;

/// The current time as stored in items: ISO-8601 UTC with milliseconds.
#[must_use]
pub fn now_iso8601() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
