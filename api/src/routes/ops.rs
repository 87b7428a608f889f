//! Operational routes: liveness, readiness, Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: the process is up. Says nothing else: anyone can call it.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 while this task can serve — from a trusted cache, or by reading through to
/// DynamoDB while a cache is past the freshness bound — so a pipeline outage degrades the fleet
/// instead of emptying the load balancer. 503 only while starting (before its queue is set up)
/// and while stopping. Anyone can call it, so the body is the status alone; which caches are
/// served or bypassed is in `/admin/cache/stats` and `/metrics`.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.channel.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "not_ready", "message": "starting or stopping"})),
        )
    }
}

/// Whether each cache is served (`cache`) or read through (`bypass`: untrusted, or `off` mode),
/// by the rule every read follows.
pub(crate) fn read_modes(state: &AppState) -> serde_json::Value {
    let paths: serde_json::Map<String, serde_json::Value> = state
        .directory
        .read_paths()
        .into_iter()
        .map(|(cache, path)| (cache.to_owned(), json!(path)))
        .collect();
    serde_json::Value::Object(paths)
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Without the exporter's HTTP listener nothing runs upkeep (histogram housekeeping): do it
    // on scrape.
    state.metrics.run_upkeep();
    state.channel.publish_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
