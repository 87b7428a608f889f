//! How this task finds its id, which names its queue (`<prefix>-<task id>`).

use serde_json::Value;

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
    staleless_consumer::queue::local_task_id()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_from_metadata() {
        let metadata = json!({"TaskARN": "arn:aws:ecs:us-east-1:123:task/prod/0123abcd"});
        assert_eq!(task_id_from_metadata(&metadata).as_deref(), Some("0123abcd"));
        assert_eq!(task_id_from_metadata(&json!({})), None);
    }
}
