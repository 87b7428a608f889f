//! The API's own metric names and the Prometheus recorder. The names of the freshness
//! guarantee's metrics (cache hits and misses, ticks, trust, the queue) are the consumer
//! crate's [`staleless_consumer::MetricNames`], under its default prefix `staleless`; the first
//! four of them are a contract (`docs/design.md`).
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so two API
//! instances in one test process share it; per-instance numbers are in `/admin/cache/stats`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::PrometheusHandle;

/// Items read from a table that do not fit the data model, by `table` (`users`, `roles`):
/// counted once per change of the item, which is left out (roles) or refused (profiles).
pub const CORRUPT_ITEMS: &str = "staleless_corrupt_items_total";
/// Token verifications (RS256) performed, i.e. claims-cache misses that verified.
pub const TOKENS_VERIFIED: &str = "staleless_tokens_verified_total";
/// Tokens refused, by `reason`.
pub const TOKENS_REJECTED: &str = "staleless_tokens_rejected_total";
/// RS256 keys in the JWKS in use.
pub const JWKS_KEYS: &str = "staleless_jwks_keys";
/// JWKS reloads refused (the last good set kept), by `reason` (`unreachable`, `unparsable`, `empty`).
pub const JWKS_REFRESH_FAILURES: &str = "staleless_jwks_refresh_failures_total";
/// Keys that left the JWKS (or changed under their `kid`) at a reload.
pub const JWKS_KEYS_REMOVED: &str = "staleless_jwks_keys_removed_total";
/// Role writes that lost a race to another write and were re-read and re-applied.
pub const ROLE_WRITE_RETRIES: &str = "staleless_role_write_retries_total";
/// How long each request took, by `method`, `route` (as routed: `/admin/users/{user_id}`, or
/// `unmatched`) and `status` (histogram).
pub const HTTP_REQUEST_DURATION: &str = "staleless_http_request_duration_seconds";
/// The reasons of [`JWKS_REFRESH_FAILURES`], registered at zero.
const JWKS_REFRESH_REASONS: [&str; 3] = ["unreachable", "unparsable", "empty"];
/// Stored profile roles brought in line with a token's roles claim, by `outcome`
/// (`written`, `already_current`, `failed`).
pub const PROFILE_ROLES_ALIGNED: &str = "staleless_profile_roles_aligned_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder on first use and returns its handle.
///
/// Call before anything records metrics: handles registered earlier are bound to the no-op
/// recorder. If another recorder is already installed (an embedding program's), a detached
/// recorder is used so `/metrics` still answers, with only what this crate renders itself.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = recorder();
            describe();
            handle
        })
        .clone()
}

fn recorder() -> PrometheusHandle {
    staleless_consumer::install_prometheus()
}

/// Describes the metrics and registers the ones alerts watch at zero, so a scrape shows them
/// before the first event.
fn describe() {
    let sources = crate::directory::sources();
    staleless_consumer::MetricNames::default().describe(&sources);
    // Hostile data is counted from zero, so an alert on its rate sees the first one.
    metrics::describe_counter!(CORRUPT_ITEMS, "Items that do not fit the data model, once per change");
    for spec in sources {
        metrics::counter!(CORRUPT_ITEMS, "table" => spec.source).increment(0);
    }
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Requests by method, route and status"
    );
    metrics::describe_counter!(
        JWKS_REFRESH_FAILURES,
        "JWKS reloads refused; the last good key set kept"
    );
    for reason in JWKS_REFRESH_REASONS {
        metrics::counter!(JWKS_REFRESH_FAILURES, "reason" => reason).increment(0);
    }
}

/// Records each request's duration under [`HTTP_REQUEST_DURATION`]. The route is the matched
/// pattern and the method one of the standard ones (else `other`), so a client cannot grow the
/// number of series with paths or methods of its own.
pub async fn record_request_duration(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;

    let started = std::time::Instant::now();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", axum::extract::MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    metrics::histogram!(
        HTTP_REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => response.status().as_str().to_owned()
    )
    .record(started.elapsed().as_secs_f64());
    response
}
