//! The heartbeat writer: every `H` seconds it writes one heartbeat item into **each** table
//! (`HEARTBEAT#<writer>` / `HEARTBEAT`, outside the user and role key spaces). Each write travels
//! the whole invalidation path — stream, event source mapping, relay, topic, every task's queue —
//! and arrives as a `tick`, the proof of life the tasks' trust in their caches rests on.
//!
//! One writer serves the whole fleet, so its cost does not grow with the number of tasks; if it
//! dies, no ticks arrive and every task reads through (fail-safe). On AWS a scheduled Lambda
//! (`src/bin/heartbeat.rs`) runs [`HeartbeatWriter::run_for`] once a minute; locally `infra
//! heartbeat` runs the same writer until stopped.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use staleless_protocol::keys::{
    HEARTBEAT_INTERVAL_ATTRIBUTE, HEARTBEAT_SK, HEARTBEAT_WRITTEN_AT_ATTRIBUTE, PARTITION_KEY, SORT_KEY, heartbeat_pk,
};
use tokio_util::sync::CancellationToken;

/// Env var: seconds between two heartbeats.
pub const INTERVAL_VAR: &str = "HEARTBEAT_INTERVAL_SECS";
/// Env var: how long one Lambda invocation keeps writing.
pub const RUN_VAR: &str = "HEARTBEAT_RUN_SECS";
/// Env var: the writer's name (the `<writer>` of the item key).
pub const WRITER_VAR: &str = "HEARTBEAT_WRITER";
/// Default interval: a third of the default 15 s staleness bound, so two lost heartbeats in a row
/// still leave the caches trusted.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default run of one scheduled invocation: the schedule's period.
pub const DEFAULT_RUN: Duration = Duration::from_secs(60);
/// Longest a single `PutItem` may take before that beat counts as failed: a hung write must not
/// delay the next beat.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where heartbeats are written; DynamoDB in production, a recorder in unit tests.
#[async_trait]
pub trait HeartbeatSink: Send + Sync {
    /// Writes the heartbeat item of `writer` into `table`, stamped `written_at_ms` and the
    /// writer's `interval`.
    ///
    /// # Errors
    /// A description of the failure; the writer logs it and tries again at the next beat.
    async fn write(&self, table: &str, writer: &str, written_at_ms: i64, interval: Duration) -> Result<(), String>;
}

/// [`HeartbeatSink`] on DynamoDB: one `PutItem` per table and beat.
#[derive(Debug, Clone)]
pub struct DynamoHeartbeats {
    /// The SDK client (with the operation timeouts of its config).
    client: aws_sdk_dynamodb::Client,
}

impl DynamoHeartbeats {
    /// Heartbeats through `client`.
    #[must_use]
    pub const fn new(client: aws_sdk_dynamodb::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl HeartbeatSink for DynamoHeartbeats {
    async fn write(&self, table: &str, writer: &str, written_at_ms: i64, interval: Duration) -> Result<(), String> {
        let put = self
            .client
            .put_item()
            .table_name(table)
            .item(PARTITION_KEY, AttributeValue::S(heartbeat_pk(writer)))
            .item(SORT_KEY, AttributeValue::S(HEARTBEAT_SK.to_owned()))
            .item(
                HEARTBEAT_WRITTEN_AT_ATTRIBUTE,
                AttributeValue::N(written_at_ms.to_string()),
            )
            .item(
                HEARTBEAT_INTERVAL_ATTRIBUTE,
                AttributeValue::N(interval.as_millis().to_string()),
            )
            .send();
        match tokio::time::timeout(WRITE_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(DisplayErrorContext(&err).to_string()),
            Err(_) => Err(format!("PutItem did not answer within {WRITE_TIMEOUT:?}")),
        }
    }
}

/// What the writer needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// The tables to beat into (users and app-roles).
    pub tables: Vec<String>,
    /// The `<writer>` of `HEARTBEAT#<writer>`.
    pub writer: String,
    /// Time between beats.
    pub interval: Duration,
}

impl HeartbeatConfig {
    /// Reads `USERS_TABLE`, `ROLES_TABLE`, `HEARTBEAT_INTERVAL_SECS` and `HEARTBEAT_WRITER` through
    /// `lookup`, with the relay's table defaults; also returns `HEARTBEAT_RUN_SECS`.
    ///
    /// # Errors
    /// A message naming the variable that is not a positive number of seconds.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<(Self, Duration), String> {
        let secs = |var: &str, default: Duration| -> Result<Duration, String> {
            match lookup(var) {
                None => Ok(default),
                Some(text) => match text.trim().parse::<f64>() {
                    Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
                    _ => Err(format!("{var} must be a positive number of seconds, not {text:?}")),
                },
            }
        };
        let table = |var: &str, default: &str| {
            lookup(var)
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let config = Self {
            tables: vec![
                table(crate::config::USERS_TABLE_VAR, crate::config::DEFAULT_USERS_TABLE),
                table(crate::config::ROLES_TABLE_VAR, crate::config::DEFAULT_ROLES_TABLE),
            ],
            writer: lookup(WRITER_VAR)
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER.to_owned()),
            interval: secs(INTERVAL_VAR, DEFAULT_INTERVAL)?,
        };
        Ok((config, secs(RUN_VAR, DEFAULT_RUN)?))
    }
}

/// Counts of a run, for the log line and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatRun {
    /// Items written.
    pub written: usize,
    /// Writes that failed (logged one by one).
    pub failed: usize,
}

/// Writes heartbeats on a fixed beat.
pub struct HeartbeatWriter<S> {
    /// Where they go.
    sink: S,
    /// Tables, name and interval.
    config: HeartbeatConfig,
}

impl<S: HeartbeatSink> HeartbeatWriter<S> {
    /// A writer into `sink`.
    #[must_use]
    pub const fn new(sink: S, config: HeartbeatConfig) -> Self {
        Self { sink, config }
    }

    /// One beat: a heartbeat into each table, concurrently.
    pub async fn beat(&self) -> HeartbeatRun {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let writes = self.config.tables.iter().map(|table| async move {
            (
                table,
                self.sink
                    .write(table, &self.config.writer, now_ms, self.config.interval)
                    .await,
            )
        });
        let mut run = HeartbeatRun::default();
        for (table, result) in futures::future::join_all(writes).await {
            match result {
                Ok(()) => run.written += 1,
                Err(error) => {
                    run.failed += 1;
                    tracing::warn!(table = %table, error = %error, "heartbeat write failed");
                }
            }
        }
        run
    }

    /// Beats at once and then every interval (a late beat does not shift the schedule) until
    /// `cancel`, or until `run_for` has passed when given.
    pub async fn run_for(&self, run_for: Option<Duration>, cancel: &CancellationToken) -> HeartbeatRun {
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut total = HeartbeatRun::default();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if run_for.is_some_and(|limit| started.elapsed() >= limit) {
                break;
            }
            let run = self.beat().await;
            total.written += run.written;
            total.failed += run.failed;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<(String, String, i64)>>,
        failing_table: Option<String>,
    }

    #[async_trait]
    impl HeartbeatSink for &Recorder {
        async fn write(
            &self,
            table: &str,
            writer: &str,
            written_at_ms: i64,
            _interval: Duration,
        ) -> Result<(), String> {
            if self.failing_table.as_deref() == Some(table) {
                return Err("refused".into());
            }
            self.writes
                .lock()
                .expect("lock")
                .push((table.into(), writer.into(), written_at_ms));
            Ok(())
        }
    }

    fn config() -> HeartbeatConfig {
        HeartbeatConfig {
            tables: vec!["users".into(), "roles".into()],
            writer: "w".into(),
            interval: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_beats_into_every_table_each_interval_and_stops_on_time() {
        let recorder = Recorder::default();
        let writer = HeartbeatWriter::new(&recorder, config());
        let run = writer
            .run_for(Some(Duration::from_secs(60)), &CancellationToken::new())
            .await;
        // Beats at 0, 5, …, 55 s: twelve per table.
        assert_eq!(run, HeartbeatRun { written: 24, failed: 0 });
        let writes = recorder.writes.lock().expect("lock");
        assert!(writes.iter().all(|(_, writer, at)| writer == "w" && *at > 0));
        assert_eq!(writes.iter().filter(|(table, _, _)| table == "roles").count(), 12);
    }

    #[tokio::test]
    async fn a_failing_table_does_not_stop_the_other() {
        let recorder = Recorder {
            failing_table: Some("users".into()),
            ..Recorder::default()
        };
        let run = HeartbeatWriter::new(&recorder, config()).beat().await;
        assert_eq!(run, HeartbeatRun { written: 1, failed: 1 });
    }

    #[test]
    fn configuration_defaults_and_errors() {
        let vars: HashMap<&str, &str> = HashMap::from([("USERS_TABLE", "p-users"), (INTERVAL_VAR, "0.5")]);
        let (config, run) = HeartbeatConfig::from_lookup(|var| vars.get(var).map(|v| (*v).to_owned())).expect("config");
        assert_eq!(config.tables, ["p-users", "staleless-app-roles"]);
        assert_eq!(config.writer, "staleless");
        assert_eq!(config.interval, Duration::from_millis(500));
        assert_eq!(run, DEFAULT_RUN);
        let bad = HeartbeatConfig::from_lookup(|var| (var == INTERVAL_VAR).then(|| "-1".to_owned()));
        assert!(bad.expect_err("negative").contains(INTERVAL_VAR));
    }
}
