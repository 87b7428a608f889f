//! Serving: the HTTP server and the background tasks, started together and stopped together.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use staleless_consumer::Subscriber;

use crate::config::CacheMode;
use crate::routes::router;
use crate::state::AppState;

/// Serves `state` on `listener` until `shutdown` completes, with the scheduled JWKS reload and (in
/// `event` mode) the invalidation subscriber running beside it; then drains requests, removes this task's queue
/// and subscription, and returns once every background task has stopped.
///
/// # Errors
/// When the server fails to accept connections.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(std::sync::Arc::clone(&state.auth).refresh_periodically(cancel.clone()));

    if state.config.cache.cache_mode == CacheMode::Event {
        match (&state.channel_clients, &state.config.channel.topic_arn) {
            (Some(clients), Some(topic_arn)) => {
                let task_id = crate::task_id::discover_task_id().await;
                let tables = &state.config.tables;
                let subscriber = Subscriber::new(
                    std::sync::Arc::clone(&state.channel),
                    state.caches.clone(),
                    clients.clone(),
                    topic_arn,
                    state.config.channel.clone(),
                    &task_id,
                )
                .with_table(&tables.users_table, staleless_protocol::Source::USERS.as_str())
                .with_table(&tables.roles_table, staleless_protocol::Source::ROLES.as_str());
                tracing::info!(queue = subscriber.queue_name(), "starting the invalidation subscriber");
                tracker.spawn(subscriber.run(cancel.clone()));
            }
            _ => {
                tracing::warn!("event mode without a topic or AWS clients: every read goes through to DynamoDB");
                state.channel.mark_started();
            }
        }
    }

    let served = {
        let cancel = cancel.clone();
        let channel = state.channel.clone();
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = cancel.cancelled() => {}
                }
                // `/ready` answers 503 to whatever arrives while requests drain.
                channel.mark_stopping();
            })
            .await
    };
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("stopped");
    served
}

pub use staleless_consumer::shutdown_signal;
