//! The per-task queue: its rules live in the consumer crate (`staleless_consumer::queue`, re-exported
//! here); what is left is how this task finds its id.

use serde_json::Value;

pub use staleless_consumer::queue::*;

/// The task id from an ECS task metadata document (`TaskARN` = `…:task/<cluster>/<id>`).
#[must_use]
pub fn task_id_from_metadata(metadata: &Value) -> Option<String> {
    metadata
        .get("TaskARN")
        .and_then(Value::as_str)
        .and_then(|arn| arn.rsplit('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// This task's id: the ECS task id when the container metadata endpoint answers, else
/// `<host>-<pid>-<random>` (unique even for two processes on one host).
pub async fn discover_task_id() -> String {
    if let Ok(base) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build();
        if let Ok(client) = client
            && let Ok(response) = client.get(format!("{base}/task")).send().await
            && let Ok(metadata) = response.json::<Value>().await
            && let Some(id) = task_id_from_metadata(&metadata)
        {
            return id;
        }
        tracing::warn!("ECS metadata endpoint set but unreadable; using host, pid and a random id");
    }
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
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_from_arns_and_metadata() {
        assert_eq!(
            queue_name_from_arn("arn:aws:sqs:us-east-1:123:staleless-task-a"),
            Some("staleless-task-a")
        );
        assert_eq!(queue_name_from_arn("https://example.com"), None);
        let metadata = json!({"TaskARN": "arn:aws:ecs:us-east-1:123:task/prod/0123abcd"});
        assert_eq!(task_id_from_metadata(&metadata).as_deref(), Some("0123abcd"));
        assert_eq!(task_id_from_metadata(&json!({})), None);
    }
}
