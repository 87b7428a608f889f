//! The local AWS for staleless, one source of truth with `template.yaml`.
//!
//! - [`emulator`]: installs moto server into the project's virtualenv and runs it on loopback.
//! - [`template`]: reads the tables, topic and queue that `template.yaml` deploys.
//! - [`provision`]: creates them in the emulator (idempotently), under a name prefix.
//! - [`operator`]: changes made the way operators make them, straight to the tables with the SDK.
//! - [`consistency`]: compares what every API task serves with DynamoDB, and measures staleness.
//! - [`system`]: the relay and the API tasks as supervised processes with their own logs.
//! - [`proxy`]: a loopback TCP proxy with an off switch, to take one AWS service away from one component.
//! - [`local_aws`]: the one harness — an emulator, a (uniquely named) seeded stack, SDK clients.
//! - [`event_source`]: the local DynamoDB event source mapping — streams → stream relay → topic.
//! - [`heartbeat`]: the heartbeat writer whose items come back to every task as ticks.
//! - [`jwt`]: the local identity provider — an RSA key pair, its `jwks.json`, and minted RS256 tokens.
//!
//! The `infra` binary wraps these for the README's run command.

pub mod consistency;
pub mod emulator;
pub mod event_source;
pub mod heartbeat;
pub mod jwt;
pub mod local_aws;
pub mod operator;
pub mod provision;
pub mod proxy;
pub mod runtime_api;
pub mod system;
pub mod template;

pub use emulator::Emulator;
pub use local_aws::{LocalAws, LocalStack, sdk_config_for};
pub use provision::Provisioned;
