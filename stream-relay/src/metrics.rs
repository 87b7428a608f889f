//! The relay's metrics: each invocation's counts as one CloudWatch embedded-metric-format (EMF)
//! log line on Lambda, which CloudWatch turns into metrics with no `PutMetricData` call, no
//! permission and no latency on the invocation.
//!
//! `template.yaml` alarms on three of them: `TicksRelayed` (per `Source`: no tick for two minutes
//! means every API task is reading through), `MalformedRecords` (records read only in part) and
//! `UnreadableRecordFlushes` (caches flushed because records of a watched table named no key).
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{Value, json};

use crate::relay::InvocationSummary;

/// The CloudWatch namespace of every staleless metric.
pub const NAMESPACE: &str = "Staleless";
/// Ticks published, per `Source` dimension.
pub const TICKS_RELAYED: &str = "TicksRelayed";
/// Records read only in part, whatever they published (their key, a flush, or nothing).
pub const MALFORMED_RECORDS: &str = "MalformedRecords";
/// Flushes published because records of a watched table named no key.
pub const UNREADABLE_RECORD_FLUSHES: &str = "UnreadableRecordFlushes";
/// Keys published.
pub const KEYS_PUBLISHED: &str = "KeysPublished";
/// Invocations that reported a batch item failure.
pub const PUBLISH_FAILURES: &str = "PublishFailures";

/// Where an invocation's counts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSink {
    /// Nowhere (the local event source mapping, tests): the summary log line has the counts.
    None,
    /// EMF lines on standard output, which Lambda sends to CloudWatch Logs.
    EmbeddedMetricFormat,
}

impl MetricsSink {
    /// Emits the counts of one invocation.
    pub fn record(self, summary: &InvocationSummary) {
        if self == Self::EmbeddedMetricFormat {
            let now_ms = chrono::Utc::now().timestamp_millis();
            for line in emf_lines(summary, now_ms) {
                println!("{line}");
            }
        }
    }
}

/// The EMF documents of one invocation: one without dimensions, and one per source that relayed
/// ticks (a source without ticks emits nothing, so the alarm sees missing data, i.e. breaching).
#[must_use]
pub fn emf_lines(summary: &InvocationSummary, now_ms: i64) -> Vec<Value> {
    let mut lines = vec![json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": MALFORMED_RECORDS, "Unit": "Count"},
                    {"Name": UNREADABLE_RECORD_FLUSHES, "Unit": "Count"},
                    {"Name": KEYS_PUBLISHED, "Unit": "Count"},
                    {"Name": PUBLISH_FAILURES, "Unit": "Count"},
                ],
            }],
        },
        MALFORMED_RECORDS: summary.records_malformed,
        UNREADABLE_RECORD_FLUSHES: summary.flushes_published,
        KEYS_PUBLISHED: summary.keys_published,
        PUBLISH_FAILURES: usize::from(summary.failed_from.is_some()),
    })];
    for (source, &ticks) in &summary.ticks_published {
        if ticks > 0 {
            lines.push(json!({
                "_aws": {
                    "Timestamp": now_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": [["Source"]],
                        "Metrics": [{"Name": TICKS_RELAYED, "Unit": "Count"}],
                    }],
                },
                "Source": source.as_str(),
                TICKS_RELAYED: ticks,
            }));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_become_emf_documents_with_the_alarmed_names() {
        let summary = InvocationSummary {
            records_malformed: 2,
            flushes_published: 1,
            keys_published: 5,
            ticks_published: [(staleless_protocol::Source::USERS, 1)].into(),
            ..InvocationSummary::default()
        };
        let lines = emf_lines(&summary, 1_000);
        assert_eq!(lines.len(), 2, "no roles document without roles ticks");
        assert_eq!(lines[0][MALFORMED_RECORDS], 2);
        assert_eq!(lines[0][UNREADABLE_RECORD_FLUSHES], 1);
        let names: Vec<&Value> = lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|metric| &metric["Name"])
            .collect();
        assert!(names.contains(&&json!(UNREADABLE_RECORD_FLUSHES)), "{names:?}");
        assert_eq!(lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(lines[1]["Source"], "users");
        assert_eq!(lines[1][TICKS_RELAYED], 1);
        assert_eq!(lines[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "Source");
    }
}
