//! What Lambda's event source mapping does with a batch that did not succeed, as pure rules: when
//! to retry, when to bisect, when to give a batch up to the on-failure destination, and the
//! message that destination receives. The poller applies them; tests call them directly.
//!
//! The template sets the parameters (`MaximumRetryAttempts`, `MaximumRecordAgeInSeconds`,
//! `BisectBatchOnFunctionError`, `DestinationConfig.OnFailure`); their meaning is AWS's:
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html>,
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::template::StreamEventSpec;

/// How one event source retries, from its template properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Retries of a failing batch before it is discarded; `None`: until the records expire.
    pub max_retry_attempts: Option<u32>,
    /// Records older than this are discarded unprocessed; `None`: never.
    pub max_record_age: Option<Duration>,
    /// A batch whose invocation fails is split in two before it is retried.
    pub bisect_on_function_error: bool,
}

impl FailurePolicy {
    /// The policy of `event` (`-1` and unset both mean "no limit", as for Lambda).
    #[must_use]
    pub fn of(event: &StreamEventSpec) -> Self {
        Self {
            max_retry_attempts: event.maximum_retry_attempts.and_then(|max| u32::try_from(max).ok()),
            max_record_age: event
                .maximum_record_age_secs
                .and_then(|secs| u64::try_from(secs).ok())
                .map(Duration::from_secs),
            bisect_on_function_error: event.bisect_on_function_error,
        }
    }
}

impl Default for FailurePolicy {
    /// Lambda's defaults: retry until the records expire, never bisect.
    fn default() -> Self {
        Self {
            max_retry_attempts: None,
            max_record_age: None,
            bisect_on_function_error: false,
        }
    }
}

/// A shard's standing with the record at its head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Failed invocations of the record now at the head.
    pub attempts: u32,
    /// Records per invocation while a bisected batch is retried; `None`: the batch size.
    pub limit: Option<usize>,
}

/// What one invocation of `delivered` records came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every record is done.
    Done,
    /// The record at `position` and those after it must be retried: reported by the function
    /// (`function_error: false`), or the invocation failed (`position` 0, `function_error: true`).
    Failed {
        /// Index of the first record not done.
        position: usize,
        /// The function raised, crashed or timed out.
        function_error: bool,
    },
    /// Lambda did not run the function.
    NotInvoked,
}

/// Why a batch went to the on-failure destination (the message's `requestContext.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Failed `MaximumRetryAttempts + 1` times.
    RetryAttemptsExhausted,
    /// Older than `MaximumRecordAgeInSeconds`.
    RecordAgeExceeded,
}

impl Condition {
    /// The name AWS writes.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Self::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// What the mapping does next with the delivered records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// All done: move past them.
    Done,
    /// Acknowledge the first `acknowledged`, then read again from the next one — after a pause
    /// unless the batch was just bisected (Lambda retries a half at once).
    Retry {
        /// Records before the retried one.
        acknowledged: usize,
        /// Back off first.
        pause: bool,
    },
    /// Acknowledge the first `acknowledged`, give records `acknowledged..end` to the on-failure
    /// destination, acknowledge those too and go on.
    Discard {
        /// Records before the discarded ones.
        acknowledged: usize,
        /// One past the last discarded record.
        end: usize,
        /// Why.
        condition: Condition,
        /// Invocations the discarded records had.
        invoke_count: u32,
    },
}

/// Applies `policy` to the outcome of invoking `delivered` records, updating `state`.
#[must_use]
pub fn decide(policy: &FailurePolicy, state: &mut RetryState, delivered: usize, outcome: Outcome) -> Decision {
    match outcome {
        Outcome::Done => {
            *state = RetryState::default();
            Decision::Done
        }
        // Not the function's failure: retried as is until the records expire, never counted.
        Outcome::NotInvoked => Decision::Retry {
            acknowledged: 0,
            pause: true,
        },
        Outcome::Failed {
            position,
            function_error,
        } => {
            let position = position.min(delivered.saturating_sub(1));
            let remaining = delivered - position;
            if function_error && policy.bisect_on_function_error && remaining > 1 {
                state.limit = Some(remaining / 2);
                return Decision::Retry {
                    acknowledged: position,
                    pause: false,
                };
            }
            if position > 0 {
                // Progress: the record now at the head has failed once.
                state.attempts = 0;
            }
            state.attempts = state.attempts.saturating_add(1);
            match policy.max_retry_attempts {
                Some(max) if state.attempts > max => {
                    let invoke_count = state.attempts;
                    *state = RetryState::default();
                    Decision::Discard {
                        acknowledged: position,
                        end: delivered,
                        condition: Condition::RetryAttemptsExhausted,
                        invoke_count,
                    }
                }
                _ => Decision::Retry {
                    acknowledged: position,
                    pause: true,
                },
            }
        }
    }
}

/// How many of `arrivals` (the records' `ApproximateCreationDateTime`, in stream order) are
/// older than the policy allows at `now`: they are discarded before any invocation.
#[must_use]
pub fn expired_prefix(policy: &FailurePolicy, arrivals: &[DateTime<Utc>], now: DateTime<Utc>) -> usize {
    let Some(max_age) = policy
        .max_record_age
        .and_then(|age| chrono::Duration::from_std(age).ok())
    else {
        return 0;
    };
    arrivals.iter().take_while(|arrival| now - **arrival > max_age).count()
}

/// The records a discard covers, as the on-failure message describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscardedBatch {
    /// The shard read.
    pub shard_id: String,
    /// Its stream (the records' `eventSourceARN`).
    pub stream_arn: String,
    /// Sequence number of the first discarded record.
    pub start_sequence_number: String,
    /// Sequence number of the last.
    pub end_sequence_number: String,
    /// When the first was written.
    pub first_arrival: DateTime<Utc>,
    /// When the last was written.
    pub last_arrival: DateTime<Utc>,
    /// How many records.
    pub batch_size: usize,
}

/// What went wrong, for the message's `requestContext` and `responseContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscardContext {
    /// The function's ARN.
    pub function_arn: String,
    /// Why the batch is given up.
    pub condition: Condition,
    /// Invocations it had.
    pub invoke_count: u32,
    /// `Some("Unhandled")` when the last invocation failed, `None` when the function returned
    /// and named a failed record.
    pub function_error: Option<String>,
    /// An id for this discard.
    pub request_id: String,
}

/// The message Lambda sends to a stream event source's on-failure destination: metadata of the
/// discarded records (never the records), from which an operator can re-read them while the
/// stream retains them.
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>
#[must_use]
pub fn on_failure_message(batch: &DiscardedBatch, context: &DiscardContext, now: DateTime<Utc>) -> Value {
    let seconds = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut response = json!({
        "statusCode": 200,
        "executedVersion": "$LATEST",
    });
    if let Some(error) = &context.function_error {
        response["functionError"] = json!(error);
    }
    json!({
        "requestContext": {
            "requestId": context.request_id,
            "functionArn": context.function_arn,
            "condition": context.condition.as_str(),
            "approximateInvokeCount": context.invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "DDBStreamBatchInfo": {
            "shardId": batch.shard_id,
            "startSequenceNumber": batch.start_sequence_number,
            "endSequenceNumber": batch.end_sequence_number,
            "approximateArrivalOfFirstRecord": seconds(&batch.first_arrival),
            "approximateArrivalOfLastRecord": seconds(&batch.last_arrival),
            "batchSize": batch.batch_size,
            "streamArn": batch.stream_arn,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template_policy() -> FailurePolicy {
        FailurePolicy {
            max_retry_attempts: Some(10),
            max_record_age: Some(Duration::from_secs(3600)),
            bisect_on_function_error: true,
        }
    }

    #[test]
    fn a_function_error_bisects_down_to_one_record_then_counts_retries_then_discards() {
        let policy = template_policy();
        let mut state = RetryState::default();
        let mut delivered = 100;
        let mut invocations = 0;
        loop {
            invocations += 1;
            let failed = Outcome::Failed {
                position: 0,
                function_error: true,
            };
            match decide(&policy, &mut state, delivered, failed) {
                Decision::Retry { pause, .. } => {
                    assert_eq!(pause, delivered == 1, "a bisected half is retried at once");
                    delivered = state.limit.unwrap_or(delivered).min(delivered);
                }
                Decision::Discard {
                    acknowledged,
                    end,
                    condition,
                    invoke_count,
                } => {
                    assert_eq!((acknowledged, end), (0, 1), "only the poison record is parked");
                    assert_eq!(condition, Condition::RetryAttemptsExhausted);
                    assert_eq!(invoke_count, 11, "the first try and ten retries");
                    break;
                }
                Decision::Done => panic!("failed invocations are never done"),
            }
        }
        // 100 → 50 → 25 → 12 → 6 → 3 → 1 (six halvings), then eleven invocations of the record.
        assert_eq!(invocations, 6 + 11);
        assert_eq!(state, RetryState::default(), "the next record starts afresh");
    }

    #[test]
    fn a_reported_record_is_retried_from_and_progress_resets_the_count() {
        let policy = template_policy();
        let mut state = RetryState::default();
        let reported = |position| Outcome::Failed {
            position,
            function_error: false,
        };
        assert_eq!(
            decide(&policy, &mut state, 10, reported(4)),
            Decision::Retry {
                acknowledged: 4,
                pause: true
            }
        );
        assert_eq!(state.attempts, 1);
        assert_eq!(state.limit, None, "a reported failure is not bisected");
        let _ = decide(&policy, &mut state, 6, reported(0));
        assert_eq!(state.attempts, 2, "the same head failed again");
        let _ = decide(&policy, &mut state, 6, reported(2));
        assert_eq!(state.attempts, 1, "a new head");
        assert_eq!(decide(&policy, &mut state, 4, Outcome::Done), Decision::Done);
        assert_eq!(state, RetryState::default());
    }

    #[test]
    fn lambda_not_running_the_function_is_retried_forever_uncounted() {
        let policy = template_policy();
        let mut state = RetryState::default();
        for _ in 0..1_000 {
            assert_eq!(
                decide(&policy, &mut state, 100, Outcome::NotInvoked),
                Decision::Retry {
                    acknowledged: 0,
                    pause: true
                }
            );
        }
        assert_eq!(state, RetryState::default());
    }

    #[test]
    fn without_a_limit_retries_never_discard() {
        let policy = FailurePolicy::default();
        let mut state = RetryState::default();
        for _ in 0..10_000 {
            let decision = decide(
                &policy,
                &mut state,
                3,
                Outcome::Failed {
                    position: 0,
                    function_error: true,
                },
            );
            assert!(matches!(decision, Decision::Retry { pause: true, .. }), "{decision:?}");
        }
        assert_eq!(state.limit, None, "no bisection unless asked");
    }

    #[test]
    fn records_past_the_maximum_age_lead_the_discard() {
        let policy = template_policy();
        let now = Utc::now();
        let ages = [7_200, 3_601, 3_599, 7_200].map(|secs| now - chrono::Duration::seconds(secs));
        assert_eq!(
            expired_prefix(&policy, &ages, now),
            2,
            "stops at the first young record"
        );
        assert_eq!(expired_prefix(&FailurePolicy::default(), &ages, now), 0);
    }

    #[test]
    fn the_on_failure_message_has_the_shape_aws_documents() {
        let at = DateTime::parse_from_rfc3339("2026-11-14T00:13:19.5Z")
            .expect("time")
            .with_timezone(&Utc);
        let message = on_failure_message(
            &DiscardedBatch {
                shard_id: "shardId-1".into(),
                stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x".into(),
                start_sequence_number: "100".into(),
                end_sequence_number: "100".into(),
                first_arrival: at,
                last_arrival: at,
                batch_size: 1,
            },
            &DiscardContext {
                function_arn: "arn:aws:lambda:us-east-1:123456789012:function:relay".into(),
                condition: Condition::RetryAttemptsExhausted,
                invoke_count: 11,
                function_error: Some("Unhandled".into()),
                request_id: "r-1".into(),
            },
            at,
        );
        assert_eq!(
            message,
            json!({
                "requestContext": {
                    "requestId": "r-1",
                    "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:relay",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 11
                },
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "version": "1.0",
                "timestamp": "2026-11-14T00:13:19.500Z",
                "DDBStreamBatchInfo": {
                    "shardId": "shardId-1",
                    "startSequenceNumber": "100",
                    "endSequenceNumber": "100",
                    "approximateArrivalOfFirstRecord": "2026-11-14T00:13:19Z",
                    "approximateArrivalOfLastRecord": "2026-11-14T00:13:19Z",
                    "batchSize": 1,
                    "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
                }
            })
        );
    }
}
