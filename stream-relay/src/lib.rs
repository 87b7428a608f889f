//! The stream relay: the Lambda that turns DynamoDB stream records of the users and app-roles
//! tables into invalidation messages on the SNS topic.
//!
//! - [`config`]: `USERS_TABLE`, `ROLES_TABLE`, `INVALIDATION_TOPIC_ARN`, `RELAY_IGNORED_ATTRIBUTES`.
//! - [`mapping`]: pure — which key a record invalidates, the no-op filter, coalescing per key.
//! - [`publish`]: the one-method [`Publisher`], its SNS implementation and an in-memory one.
//! - [`relay`]: one invocation — map, pack, publish with retries, report partial batch failures,
//!   log a summary.
//!
//! `main.rs` only wires these to the Lambda runtime; `infra`'s local event source mapping calls
//! [`Relay::handle_records`] in-process, so both paths run the same code.

pub mod config;
pub mod mapping;
pub mod publish;
pub mod relay;

pub use config::RelayConfig;
pub use mapping::Mapper;
pub use publish::{MemoryPublisher, PublishEntry, PublishError, Publisher, SnsPublisher};
pub use relay::{InvocationSummary, LenientEvent, Relay, RelayOutcome, RetryPolicy, function_handler};
