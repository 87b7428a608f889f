//! The local AWS for staleless, one source of truth with `template.yaml`.
//!
//! - [`emulator`]: installs moto server into the project's virtualenv and runs it on loopback.
//! - [`template`]: reads the tables, topic and queue that `template.yaml` deploys.
//! - [`provision`]: creates them in the emulator (idempotently), under a name prefix.
//! - [`local_aws`]: test support — an emulator on a free port, a uniquely named stack, SDK clients.
//!
//! The `infra` binary wraps these for the README's run command.

pub mod emulator;
pub mod local_aws;
pub mod provision;
pub mod template;

pub use emulator::Emulator;
pub use local_aws::{LocalAws, sdk_config_for};
pub use provision::Provisioned;
