//! Pure pieces of a task's queue: its name, its tags, its access policy, the heartbeat rule that
//! tells a live task's queue from a dead one's, and the error codes that say a queue is gone.

use serde_json::{Value, json};

/// SQS queue names are at most 80 characters of letters, digits, `-` and `_`.
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html>
pub const MAX_QUEUE_NAME_CHARS: usize = 80;

/// Tag naming the task that created the queue: its `aws:userid` (from `GetCallerIdentity`). The
/// task policy lets a task change, read from and delete only queues whose owner tag is its own
/// id, and set that tag only to its own id.
pub const OWNER_TAG: &str = "staleless:owner";
/// Tag holding the Unix time (seconds) of the owner's last heartbeat.
pub const HEARTBEAT_TAG: &str = "staleless:heartbeat";

/// Keeps what SQS allows in a name and replaces the rest with `-`.
#[must_use]
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `<prefix>-<task id>`, the task id cut so that the name fits SQS's limit.
#[must_use]
pub fn queue_name(prefix: &str, task_id: &str) -> String {
    let prefix = sanitize(prefix);
    let room = MAX_QUEUE_NAME_CHARS.saturating_sub(prefix.len() + 1);
    let id: String = sanitize(task_id).chars().take(room).collect();
    format!("{prefix}-{id}")
}

/// A variant of `name` for a recreation, when SQS refuses the same name for 60 s after a delete.
#[must_use]
pub fn recreated_name(name: &str, generation: u32) -> String {
    let suffix = format!("-r{generation}");
    let keep = MAX_QUEUE_NAME_CHARS.saturating_sub(suffix.len());
    format!("{}{suffix}", name.chars().take(keep).collect::<String>())
}

/// The queue policy: only the invalidation topic may send, and only to this queue.
#[must_use]
pub fn queue_policy(queue_arn: &str, topic_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "OnlyTheInvalidationTopic",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
        }]
    })
}

/// The ARN a queue named `name` gets in the topic's partition, region and account
/// (`arn:<partition>:sqs:<region>:<account>:<name>`), so its policy can be part of `CreateQueue`;
/// `None` when `topic_arn` is not an SNS ARN.
#[must_use]
pub fn queue_arn_beside(topic_arn: &str, name: &str) -> Option<String> {
    let mut parts = topic_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("sns"), Some(region), Some(account)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!partition.is_empty() && !region.is_empty() && !account.is_empty())
        .then(|| format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}

/// What is wrong with a subscription whose `GetSubscriptionAttributes` returned `attributes`,
/// if anything: it must deliver the whole topic, raw, to this task's queue. A filter policy
/// added out of band (even one that matches everything today) is refused: the listener
/// re-creates the subscription as it made it.
#[must_use]
pub fn subscription_problem(
    attributes: &std::collections::HashMap<String, String>,
    queue_arn: &str,
    topic_arn: &str,
) -> Option<String> {
    let get = |name: &str| attributes.get(name).map(String::as_str);
    if get("Endpoint").is_some_and(|endpoint| endpoint != queue_arn) {
        return Some(format!("endpoint is {:?}, not this task's queue", get("Endpoint")));
    }
    if get("TopicArn").is_some_and(|topic| topic != topic_arn) {
        return Some("subscribed to another topic".to_owned());
    }
    if get("RawMessageDelivery") != Some("true") {
        return Some("raw message delivery is off".to_owned());
    }
    if get("FilterPolicy").is_some_and(|policy| !policy.trim().is_empty()) {
        return Some("a filter policy was added".to_owned());
    }
    None
}

/// Whether a queue whose heartbeat tag reads `heartbeat` belongs to a task that is gone. A
/// missing or unreadable tag is not ours to judge: only queues this service tagged are swept.
#[must_use]
pub fn heartbeat_is_stale(heartbeat: Option<&str>, now_secs: u64, stale_after_secs: u64) -> bool {
    heartbeat
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|beat| now_secs.saturating_sub(beat) > stale_after_secs)
}

/// The queue name at the end of an SQS ARN (`arn:aws:sqs:<region>:<account>:<name>`).
#[must_use]
pub fn queue_name_from_arn(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")
        .and_then(|_| arn.rsplit(':').next())
        .filter(|name| !name.is_empty())
}

/// Whether an SQS error code says the queue does not exist (the query and JSON protocols name
/// it differently).
#[must_use]
pub fn is_queue_missing(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    )
}

/// A task id unique to this process: `<host>-<pid>-<random>` (unique even for two processes on
/// one host), for services that have no better one (an ECS task id, say).
#[must_use]
pub fn local_task_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    let host: String = host.chars().take(24).collect();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_sqs_rules() {
        assert_eq!(
            queue_name("staleless-task", "ip-10-0-0-1.ec2.internal-42-ab12"),
            "staleless-task-ip-10-0-0-1-ec2-internal-42-ab12"
        );
        let long = queue_name("staleless-task", &"x".repeat(200));
        assert_eq!(long.len(), MAX_QUEUE_NAME_CHARS);
        assert!(long.starts_with("staleless-task-"));
        let again = recreated_name(&long, 2);
        assert_eq!(again.len(), MAX_QUEUE_NAME_CHARS);
        assert!(again.ends_with("-r2"));
    }

    #[test]
    fn names_from_arns_and_local_ids() {
        assert_eq!(
            queue_name_from_arn("arn:aws:sqs:us-east-1:123:staleless-task-a"),
            Some("staleless-task-a")
        );
        assert_eq!(queue_name_from_arn("https://example.com"), None);
        let (first, second) = (local_task_id(), local_task_id());
        assert_ne!(first, second, "two subscribers in one process get two queues");
        assert!(queue_name("staleless-task", &first).len() <= MAX_QUEUE_NAME_CHARS);
    }

    #[test]
    fn the_policy_admits_only_the_topic() {
        let policy = queue_policy("arn:aws:sqs:us-east-1:123:q", "arn:aws:sns:us-east-1:123:t");
        let statements = policy["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 1);
        let statement = &statements[0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(statement["Action"], "sqs:SendMessage");
        assert_eq!(statement["Resource"], "arn:aws:sqs:us-east-1:123:q");
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            "arn:aws:sns:us-east-1:123:t"
        );
    }

    #[test]
    fn the_queue_arn_is_derived_from_the_topic_arn() {
        assert_eq!(
            queue_arn_beside(
                "arn:aws:sns:eu-west-1:123456789012:staleless-invalidations",
                "staleless-task-a"
            )
            .as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:staleless-task-a")
        );
        assert_eq!(
            queue_arn_beside("arn:aws-cn:sns:cn-north-1:1:t", "q").as_deref(),
            Some("arn:aws-cn:sqs:cn-north-1:1:q")
        );
        assert_eq!(queue_arn_beside("not-an-arn", "q"), None);
        assert_eq!(queue_arn_beside("arn:aws:sqs:us-east-1:1:q", "q"), None, "not a topic");
    }

    #[test]
    fn a_subscription_must_deliver_everything_raw_to_this_queue() {
        use std::collections::HashMap;
        let good = HashMap::from([
            ("Endpoint".to_owned(), "arn:q".to_owned()),
            ("TopicArn".to_owned(), "arn:t".to_owned()),
            ("RawMessageDelivery".to_owned(), "true".to_owned()),
        ]);
        assert_eq!(subscription_problem(&good, "arn:q", "arn:t"), None);
        let mut filtered = good.clone();
        filtered.insert("FilterPolicy".to_owned(), r#"{"source":["nothing"]}"#.to_owned());
        assert!(subscription_problem(&filtered, "arn:q", "arn:t").is_some());
        let mut not_raw = good.clone();
        not_raw.insert("RawMessageDelivery".to_owned(), "false".to_owned());
        assert!(subscription_problem(&not_raw, "arn:q", "arn:t").is_some());
        assert!(subscription_problem(&good, "arn:other", "arn:t").is_some());
    }

    #[test]
    fn only_tagged_queues_with_an_old_heartbeat_are_stale() {
        assert!(heartbeat_is_stale(Some("1000"), 2_000, 600));
        assert!(!heartbeat_is_stale(Some("1500"), 2_000, 600));
        assert!(!heartbeat_is_stale(None, 2_000, 600));
        assert!(!heartbeat_is_stale(Some("yesterday"), 2_000, 600));
        assert!(
            !heartbeat_is_stale(Some("3000"), 2_000, 600),
            "a clock behind the tag is not stale"
        );
    }

    #[test]
    fn both_spellings_of_a_missing_queue_are_recognised() {
        assert!(is_queue_missing(Some("AWS.SimpleQueueService.NonExistentQueue")));
        assert!(is_queue_missing(Some("QueueDoesNotExist")));
        assert!(!is_queue_missing(Some("ThrottlingException")));
        assert!(!is_queue_missing(None));
    }
}
