//! The Lambda functions `template.yaml` deploys, one binary each, built from this one package:
//!
//! - `stream-relay` turns DynamoDB stream batches into invalidations (`stream_relay`);
//! - `heartbeat` writes the heartbeat items the tasks' trust rests on (`stream_relay::heartbeat`);
//! - `queue-sweeper` removes the queues and subscriptions of crashed API tasks
//!   (`staleless_consumer::sweeper`).
//!
//! Each function's `run` reads its configuration and hands over to its library, which holds the
//! logic and its tests; the binaries only call `run`, so what they instantiate is compiled once,
//! here, and not once per binary. None depends on the API crate, so the release build compiles no web
//! framework. The local stack runs the same binaries from `target/debug`.

pub mod heartbeat;
pub mod queue_sweeper;
pub mod relay;
