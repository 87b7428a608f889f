//! Every route and every error status, through the router with in-memory stores.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use common::{TestApp, assert_error, token};
use staleless_api::model::{Profile, UserStatus};
use staleless_api::store::{ProfileStore, ProfileSync, StoreError};
use staleless_api::{AppState, CacheMode};
use staleless_protocol::{Invalidation, KeyVersion, Source};

fn admin() -> String {
    token("admin", &["Admin"])
}

fn alice() -> String {
    token("alice", &["Staff"])
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = TestApp::new(CacheMode::Event).await;
    let (status, body) = app.send("GET", "/health", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = app.send("GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(body["reads"]["profiles"], "cache", "{body}");

    // A broken pipeline degrades the task to read-through; it still serves, so it stays ready.
    app.state.channel.mark_unsubscribed();
    let (status, body) = app.send("GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["reads"],
        serde_json::json!({"profiles": "bypass", "roles": "bypass"})
    );
    assert!(
        body.get("queue").is_none() && body.get("channel").is_none(),
        "readiness discloses no names: {body}"
    );

    // Draining: not ready, so the load balancer stops sending.
    app.state.channel.mark_stopping();
    assert_error(
        &app.send("GET", "/ready", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );

    app.send("GET", "/users/me", Some(&alice()), None).await;
    let (status, text) = app.send_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "staleless_cache_hits_total",
        "staleless_cache_misses_total",
        "staleless_invalidations_applied_total",
        "staleless_staleness_bound_seconds",
        "staleless_cache_trusted",
        "staleless_tick_lag_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test]
async fn ready_does_not_depend_on_a_channel_in_ttl_and_off_modes() {
    for mode in [CacheMode::Ttl, CacheMode::Off] {
        let app = TestApp::new(mode).await;
        app.state.channel.mark_unsubscribed();
        assert_eq!(
            app.send("GET", "/ready", None, None).await.0,
            StatusCode::OK,
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn users_me_returns_the_profile_roles_and_permissions() {
    let app = TestApp::new(CacheMode::Event).await;
    let (status, body) = app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["roles"], serde_json::json!(["Staff"]));
    assert_eq!(body["status"], "active");
    assert_eq!(body["appRoles"], serde_json::json!(["staff"]));
    assert_eq!(body["permissions"]["tools"], serde_json::json!(["calendar", "search"]));
    assert_eq!(body["permissions"]["quotaTier"], "staff");
    assert!(body["name"].is_string());
}

#[tokio::test]
async fn users_me_errors() {
    let app = TestApp::new(CacheMode::Event).await;
    assert_error(
        &app.send("GET", "/users/me", None, None).await,
        StatusCode::UNAUTHORIZED,
    );
    let nobody = token("nobody", &["Staff"]);
    assert_error(
        &app.send("GET", "/users/me", Some(&nobody), None).await,
        StatusCode::NOT_FOUND,
    );
    // A suspended user still sees the profile, and why nothing else works.
    let (status, body) = app
        .send("GET", "/users/me", Some(&token("sam", &["Staff"])), None)
        .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("suspended")));
}

#[tokio::test]
async fn sync_creates_then_updates_the_profile_from_the_token() {
    let app = TestApp::new(CacheMode::Event).await;
    let newcomer = token("newcomer", &["Staff", "Admin"]);
    let (status, body) = app.send("POST", "/users/me/sync", Some(&newcomer), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], "newcomer");
    assert_eq!(body["email"], "newcomer@example.com", "e-mail is stored lower-case");
    assert_eq!(body["roles"], serde_json::json!(["Staff", "Admin"]));
    assert_eq!(body["status"], "active");
    assert_eq!(body["appRoles"], serde_json::json!(["system_admin", "staff"]));

    let (status, body) = app
        .send(
            "POST",
            "/users/me/sync",
            Some(&newcomer),
            Some(r#"{"name":"New Comer","picture":"https://example.com/p.png"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "New Comer");
    assert_eq!(body["picture"], "https://example.com/p.png");
}

#[tokio::test]
async fn sync_errors() {
    let app = TestApp::new(CacheMode::Event).await;
    assert_error(
        &app.send("POST", "/users/me/sync", None, None).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_error(
        &app.send("POST", "/users/me/sync", Some(&alice()), Some("{not json"))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send("POST", "/users/me/sync", Some(&alice()), Some(r#"{"name":42}"#))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send("POST", "/users/me/sync", Some(&alice()), Some(r#"{"status":"active"}"#))
            .await,
        StatusCode::BAD_REQUEST,
    );
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(10_000));
    assert_error(
        &app.send("POST", "/users/me/sync", Some(&alice()), Some(&huge)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let sam = token("sam", &["Staff"]);
    assert_error(
        &app.send("POST", "/users/me/sync", Some(&sam), None).await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn admin_routes_need_an_active_system_admin() {
    let app = TestApp::new(CacheMode::Event).await;
    let routes = [
        ("GET", "/admin/users/alice", None),
        ("GET", "/admin/roles", None),
        (
            "POST",
            "/admin/roles",
            Some(r#"{"roleId":"analyst","displayName":"Analyst"}"#),
        ),
        ("GET", "/admin/roles/staff", None),
        ("PATCH", "/admin/roles/staff", Some(r#"{"priority":1}"#)),
        ("DELETE", "/admin/roles/staff", None),
        ("GET", "/admin/cache/stats", None),
    ];
    let ivan = token("ivan", &["Admin"]);
    let stranger = token("stranger", &["Admin"]);
    for (method, uri, body) in routes {
        assert_error(&app.send(method, uri, None, body).await, StatusCode::UNAUTHORIZED);
        assert_error(
            &app.send(method, uri, Some(&alice()), body).await,
            StatusCode::FORBIDDEN,
        );
        // Inactive admins and admins without a profile are refused too.
        assert_error(&app.send(method, uri, Some(&ivan), body).await, StatusCode::FORBIDDEN);
        assert_error(
            &app.send(method, uri, Some(&stranger), body).await,
            StatusCode::FORBIDDEN,
        );
    }
}

#[tokio::test]
async fn admin_reads_users() {
    let app = TestApp::new(CacheMode::Event).await;
    let (status, body) = app.send("GET", "/admin/users/alice", Some(&admin()), None).await;
    assert_eq!((status, body["userId"].as_str()), (StatusCode::OK, Some("alice")));
    assert_eq!(body["appRoles"], serde_json::json!(["staff"]));
    assert_error(
        &app.send("GET", "/admin/users/nobody", Some(&admin()), None).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn role_crud() {
    let app = TestApp::new(CacheMode::Event).await;
    let admin = admin();
    let (status, body) = app.send("GET", "/admin/roles", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["roleId"].as_str())
        .collect();
    assert_eq!(ids, ["default", "staff", "system_admin"]);

    let create = r#"{"roleId":"analyst","displayName":"Analyst","jwtRoleMappings":["Analyst"],"grantedTools":["sql"],"priority":200}"#;
    let (status, body) = app.send("POST", "/admin/roles", Some(&admin), Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["enabled"], true);
    assert_error(
        &app.send("POST", "/admin/roles", Some(&admin), Some(create)).await,
        StatusCode::CONFLICT,
    );

    let (status, body) = app.send("GET", "/admin/roles/analyst", Some(&admin), None).await;
    assert_eq!(
        (status, body["priority"].as_u64()),
        (StatusCode::OK, Some(200)),
        "read back at once on this task"
    );

    let (status, body) = app
        .send(
            "PATCH",
            "/admin/roles/analyst",
            Some(&admin),
            Some(r#"{"grantedTools":["sql","charts"],"enabled":false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["grantedTools"], serde_json::json!(["sql", "charts"]));
    let (_, body) = app.send("GET", "/admin/roles/analyst", Some(&admin), None).await;
    assert_eq!(body["enabled"], false);

    assert_eq!(
        app.send("DELETE", "/admin/roles/analyst", Some(&admin), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.send("GET", "/admin/roles/analyst", Some(&admin), None).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn role_errors() {
    let app = TestApp::new(CacheMode::Event).await;
    let admin = admin();
    let bad_bodies = [
        "{",
        r#"{"roleId":"Bad-Id","displayName":"x"}"#,
        r#"{"roleId":"analyst","displayName":"x","priority":1000}"#,
        r#"{"roleId":"analyst","displayName":"x","priority":"high"}"#,
        r#"{"roleId":"analyst","displayName":"x","grantedTools":"*"}"#,
        r#"{"roleId":"analyst","displayName":"x","enabled":"yes"}"#,
        r#"{"roleId":"analyst"}"#,
        r#"{"roleId":"analyst","displayName":"x","unknown":1}"#,
    ];
    for body in bad_bodies {
        assert_error(
            &app.send("POST", "/admin/roles", Some(&admin), Some(body)).await,
            StatusCode::BAD_REQUEST,
        );
    }
    let huge = format!(r#"{{"roleId":"analyst","displayName":"{}"}}"#, "x".repeat(10_000));
    assert_error(
        &app.send("POST", "/admin/roles", Some(&admin), Some(&huge)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    assert_error(
        &app.send("GET", "/admin/roles/Bad-Id", Some(&admin), None).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send("GET", "/admin/roles/nosuch", Some(&admin), None).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &app.send("PATCH", "/admin/roles/nosuch", Some(&admin), Some("{}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &app.send("PATCH", "/admin/roles/staff", Some(&admin), Some(r#"{"priority":-1}"#))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send(
            "PATCH",
            "/admin/roles/staff",
            Some(&admin),
            Some(r#"{"roleId":"other"}"#),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send(
            "PATCH",
            "/admin/roles/staff",
            Some(&admin),
            Some(r#"{"displayName":""}"#),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send("DELETE", "/admin/roles/nosuch", Some(&admin), None).await,
        StatusCode::NOT_FOUND,
    );
    assert_error(
        &app.send("DELETE", "/admin/roles/staff", Some(&admin), None).await,
        StatusCode::CONFLICT,
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = TestApp::new(CacheMode::Event).await;
    assert_error(&app.send("GET", "/nope", None, None).await, StatusCode::NOT_FOUND);
    assert_error(
        &app.send("DELETE", "/users/me", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
}

#[tokio::test]
async fn cache_stats_report_caches_mode_and_channel() {
    let app = TestApp::new(CacheMode::Event).await;
    app.send("GET", "/users/me", Some(&alice()), None).await;
    app.send("GET", "/users/me", Some(&alice()), None).await;
    let (status, body) = app.send("GET", "/admin/cache/stats", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "event");
    assert_eq!(body["channel"]["healthy"], true);
    assert!(body["caches"]["profiles"]["hits"].as_u64() >= Some(1), "{body}");
    assert!(body["caches"]["profiles"]["entries"].as_u64() >= Some(2), "{body}");
    assert!(body["caches"]["tokens"]["hits"].as_u64() >= Some(1), "{body}");
}

/// Read-your-writes on the task that served the write; other changes wait for their message.
#[tokio::test]
async fn a_sync_is_read_back_at_once_and_an_out_of_band_change_after_its_invalidation() {
    let app = TestApp::new(CacheMode::Event).await;
    let alice_admin = token("alice", &["Staff", "Admin"]);
    let (_, before) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(
        before["appRoles"],
        serde_json::json!(["staff"]),
        "profile roles, not token roles"
    );

    let (status, _) = app.send("POST", "/users/me/sync", Some(&alice_admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(
        after["appRoles"],
        serde_json::json!(["system_admin", "staff"]),
        "no message needed"
    );

    let mut changed = common::profile("alice", &["Staff", "Admin"], UserStatus::Suspended);
    changed.name = "Changed Behind The API".into();
    app.store.put_profile_directly(changed);
    let (_, cached) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(
        cached["status"], "active",
        "served from cache until the invalidation arrives"
    );
    app.state.apply(&Invalidation::Invalidate {
        source: Source::Users,
        keys: vec![KeyVersion {
            id: "alice".into(),
            seq: "1".into(),
            at_ms: 1,
        }],
    });
    let (_, fresh) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(fresh["status"], "suspended");
    assert_error(
        &app.send("GET", "/admin/roles", Some(&alice_admin), None).await,
        StatusCode::FORBIDDEN,
    );
}

#[tokio::test]
async fn flush_all_clears_every_cache() {
    let app = TestApp::new(CacheMode::Event).await;
    app.send("GET", "/users/me", Some(&alice()), None).await;
    let reads = app.store.profile_reads();
    app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_eq!(app.store.profile_reads(), reads, "cached");
    app.state.apply(&Invalidation::FlushAll {
        reason: Some("test".into()),
    });
    assert_eq!(app.state.auth.stats().entries, 0);
    app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_eq!(app.store.profile_reads(), reads + 1);
}

/// A store that fails or hangs, for the 500, 503 and 408 paths.
struct BrokenStore(StoreError);

#[async_trait]
impl ProfileStore for BrokenStore {
    async fn get_profile(&self, _user_id: &str) -> Result<Option<Profile>, StoreError> {
        if matches!(&self.0, StoreError::NotFound(_)) {
            std::future::pending::<()>().await;
        }
        Err(self.0.clone())
    }

    async fn sync_profile(&self, _sync: &ProfileSync) -> Result<Profile, StoreError> {
        Err(self.0.clone())
    }
}

async fn broken_app(error: StoreError) -> TestApp {
    let seeded = TestApp::new(CacheMode::Event).await;
    let mut config = common::config(CacheMode::Event);
    config.request_timeout_secs = 1;
    let auth = common::authenticator(&config).await;
    let state = AppState::new(config, Arc::new(BrokenStore(error)), seeded.store.clone(), auth, None);
    state.channel.mark_subscribed("q");
    state.channel.record_ticks_now();
    TestApp {
        state,
        store: seeded.store,
    }
}

#[tokio::test]
async fn store_failures_are_503_and_corrupt_items_500_without_details() {
    let app = broken_app(StoreError::Unavailable("connection refused to 10.0.0.1".into())).await;
    let response = app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_error(&response, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.1.to_string().contains("10.0.0.1"));

    let app = broken_app(StoreError::Corrupt {
        key: "USER#alice".into(),
        detail: "email: invalid type".into(),
    })
    .await;
    let response = app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_error(&response, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!response.1.to_string().contains("invalid type"));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_hangs_is_answered_408() {
    // `NotFound` makes the broken store hang; paused time lets the 1 s timeout pass at once.
    let app = broken_app(StoreError::NotFound(String::new())).await;
    let response = app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_error(&response, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.1["error"], "timeout");
}
