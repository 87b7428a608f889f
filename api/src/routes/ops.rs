//! Operational routes: liveness, readiness, Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 only while the invalidation channel is subscribed and fresh (always, in
/// `ttl` and `off` modes), else 503 — so a load balancer sends no traffic to a task whose cache
/// cannot be trusted.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let channel = state.channel.report();
    if state.channel.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready", "channel": channel})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "not_ready", "message": "invalidation channel not subscribed or stale", "channel": channel})),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Without the exporter's HTTP listener nothing runs upkeep (histogram housekeeping): do it
    // on scrape.
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
