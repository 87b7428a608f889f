//! Every route and every error status, through the router with in-memory stores.

mod common;

use std::time::Duration;

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
    // Anyone may ask: the answers are the status and nothing else.
    let (status, body) = app.send("GET", "/health", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"status": "ok"})));
    let (status, body) = app.send("GET", "/ready", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"status": "ready"})));
    let (_, stats) = app.send("GET", "/admin/cache/stats", Some(&admin()), None).await;
    assert_eq!(stats["reads"]["profiles"], "cache", "{stats}");

    // A broken pipeline degrades the task to read-through; it still serves, so it stays ready.
    app.state.channel.mark_unsubscribed();
    let (status, body) = app.send("GET", "/ready", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"status": "ready"})));
    let (_, stats) = app.send("GET", "/admin/cache/stats", Some(&admin()), None).await;
    assert_eq!(
        stats["reads"],
        serde_json::json!({"profiles": "bypass", "roles": "bypass"})
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
        "staleless_tick_gaps_total",
        "staleless_subscription_healed_total",
        "staleless_jwks_refresh_failures_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // Each request's duration, by the route it matched (never the raw path) and its status.
    app.send("GET", "/admin/users/someone-else", Some(&alice()), None).await;
    app.send("GET", "/no/such/route", None, None).await;
    for series in [
        r#"staleless_http_request_duration_seconds_bucket{method="GET",route="/users/me",status="200",le="+Inf"}"#,
        r#"staleless_http_request_duration_seconds_bucket{method="GET",route="/admin/users/{user_id}",status="403",le="+Inf"}"#,
        r#"staleless_http_request_duration_seconds_bucket{method="GET",route="unmatched",status="404",le="+Inf"}"#,
    ] {
        assert!(text_after(&app).await.contains(series), "{series} missing");
    }
}

async fn text_after(app: &TestApp) -> String {
    app.send_text("/metrics").await.1
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

/// Every API write checks and bumps the role's version; `If-Match` pins it; a patch sets only
/// what it names, so an operator's edit of another field (even one that does not bump the
/// version) survives.
#[tokio::test]
async fn role_writes_are_versioned_and_patches_set_only_what_they_name() {
    let app = TestApp::new(CacheMode::Event).await;
    let admin = admin();
    let create = r#"{"roleId":"analyst","displayName":"Analyst","grantedTools":["sql"]}"#;
    let (status, body) = app.send("POST", "/admin/roles", Some(&admin), Some(create)).await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::CREATED, Some(1)),
        "{body}"
    );

    let pinned = |method: &'static str, version: &'static str, body: Option<&'static str>| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let headers = [("if-match", version)];
            app.send_with(method, "/admin/roles/analyst", Some(&admin), body, &headers)
                .await
        }
    };
    let patch = |version, body| pinned("PATCH", version, Some(body));
    let (status, body) = patch("\"1\"", r#"{"priority":5}"#).await;
    assert_eq!((status, body["version"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let stale = patch("1", r#"{"priority":6}"#).await;
    assert_error(&stale, StatusCode::CONFLICT);
    assert!(
        stale.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("version 2") && m.contains("If-Match")),
        "{}",
        stale.1
    );
    assert_error(&patch("two", r#"{"priority":6}"#).await, StatusCode::BAD_REQUEST);

    // An operator edits the description straight in the table, without bumping the version.
    let mut edited = app.store.role_directly("analyst").expect("role");
    edited.description = "edited by an operator".into();
    app.store.put_role_directly(edited);
    let (status, body) = app
        .send(
            "PATCH",
            "/admin/roles/analyst",
            Some(&admin),
            Some(r#"{"grantedTools":["sql","charts"]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = app.store.role_directly("analyst").expect("role");
    assert_eq!(stored.description, "edited by an operator", "the patch did not name it");
    assert_eq!(stored.granted_tools, ["sql", "charts"]);
    assert_eq!(stored.version, 3);

    let delete = |version| pinned("DELETE", version, None);
    assert_error(&delete("2").await, StatusCode::CONFLICT);
    assert_eq!(delete("3").await.0, StatusCode::NO_CONTENT);
    assert!(app.store.role_directly("analyst").is_none());
}

/// The `system_admin` role cannot be deleted, disabled, unmapped, made a non-system role, or
/// mapped away from the admin making the change; other edits of it are fine.
#[tokio::test]
async fn the_admin_role_cannot_be_locked_out() {
    let app = TestApp::new(CacheMode::Event).await;
    let admin = admin();
    let refused = [
        ("PATCH", Some(r#"{"enabled":false}"#)),
        ("PATCH", Some(r#"{"jwtRoleMappings":[]}"#)),
        ("PATCH", Some(r#"{"isSystemRole":false}"#)),
        ("PATCH", Some(r#"{"jwtRoleMappings":["SomeoneElse"]}"#)),
        ("DELETE", None),
    ];
    for (method, body) in refused {
        let response = app.send(method, "/admin/roles/system_admin", Some(&admin), body).await;
        assert_error(&response, StatusCode::CONFLICT);
        assert!(
            response.1["message"]
                .as_str()
                .is_some_and(|m| m.contains("lock administrators out")),
            "{}",
            response.1
        );
    }
    assert_eq!(
        app.send("GET", "/admin/roles", Some(&admin), None).await.0,
        StatusCode::OK,
        "still an admin"
    );
    let fine = r#"{"description":"everything","jwtRoleMappings":["Admin","BreakGlass"]}"#;
    let (status, body) = app
        .send("PATCH", "/admin/roles/system_admin", Some(&admin), Some(fine))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
    // One token presented twice: minting anew could cross a second and change `iat`, a new token.
    let alice = alice();
    app.send("GET", "/users/me", Some(&alice), None).await;
    app.send("GET", "/users/me", Some(&alice), None).await;
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
    assert_eq!(before["name"], "alice");

    let (status, _) = app
        .send(
            "POST",
            "/users/me/sync",
            Some(&alice_admin),
            Some(r#"{"name":"Alice Synced"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(after["name"], "Alice Synced", "no message needed");

    let mut changed = common::profile("alice", &["Staff", "Admin"], UserStatus::Suspended);
    changed.name = "Changed Behind The API".into();
    app.store.put_profile_directly(changed);
    let (_, cached) = app.send("GET", "/users/me", Some(&alice_admin), None).await;
    assert_eq!(
        cached["status"], "active",
        "served from cache until the invalidation arrives"
    );
    app.state.caches.apply(&Invalidation::Invalidate {
        source: Source::USERS,
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

/// The token's roles claim is the IdP's word: it authorizes the request and is stored, without a
/// sync; a token without the claim is authorized with the stored roles (the operator's path).
/// A token from before a demotion is still valid until its `exp`; presenting it must not undo
/// the demotion for the tokens after it, nor for those without a roles claim.
#[tokio::test]
async fn a_token_issued_before_a_demotion_cannot_undo_it() {
    let app = TestApp::new(CacheMode::Event).await;
    app.store
        .put_profile_directly(common::profile("ivy", &["Staff"], UserStatus::Active));
    let stored = |app: &TestApp| {
        let profile = app.store.profile_directly("ivy").expect("profile");
        (profile.roles, profile.roles_issued_at)
    };
    // An hour ago the IdP said Admin; a minute ago it said Staff only.
    let old_admin = common::token_issued_ago("ivy", &["Staff", "Admin"], Duration::from_secs(3_000));
    let demoted = common::token_issued_ago("ivy", &["Staff"], Duration::from_secs(60));
    // The old token first: nothing newer is stored yet, so it is the IdP's latest word.
    assert_eq!(
        app.send("GET", "/admin/roles", Some(&old_admin), None).await.0,
        StatusCode::OK
    );
    assert_eq!(stored(&app).0, ["Staff", "Admin"]);
    assert_error(
        &app.send("GET", "/admin/roles", Some(&demoted), None).await,
        StatusCode::FORBIDDEN,
    );
    let (roles, issued_at) = stored(&app);
    assert_eq!(roles, ["Staff"]);
    let demoted_at = issued_at.expect("the demoting token's iat is stored");

    // The old token again: refused, and the stored roles stay the newer word.
    assert_error(
        &app.send("GET", "/admin/roles", Some(&old_admin), None).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(stored(&app), (vec!["Staff".to_owned()], Some(demoted_at)));
    // Nor can a sync with it bring Admin back.
    let (status, body) = app.send("POST", "/users/me/sync", Some(&old_admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], serde_json::json!(["Staff"]), "{body}");
    assert_eq!(stored(&app), (vec!["Staff".to_owned()], Some(demoted_at)));
    assert_error(
        &app.send("GET", "/admin/roles", Some(&common::token_without_roles("ivy")), None)
            .await,
        StatusCode::FORBIDDEN,
    );
    // A token issued after the demotion speaks for the IdP again.
    let promoted = token("ivy", &["Staff", "Admin"]);
    assert_eq!(
        app.send("GET", "/admin/roles", Some(&promoted), None).await.0,
        StatusCode::OK
    );
    assert_eq!(stored(&app).0, ["Staff", "Admin"]);
}

#[tokio::test]
async fn the_roles_claim_of_the_token_decides_and_is_stored_without_a_sync() {
    let app = TestApp::new(CacheMode::Event).await;
    app.store
        .put_profile_directly(common::profile("ivy", &["Staff", "Admin"], UserStatus::Active));
    let (status, body) = app
        .send("GET", "/admin/roles", Some(&token("ivy", &["Admin", "Staff"])), None)
        .await;
    assert_eq!(status, StatusCode::OK, "same roles in another order: {body}");
    let writes = |app: &TestApp| app.store.profile_directly("ivy").expect("profile").roles;
    assert_eq!(
        writes(&app),
        ["Staff", "Admin"],
        "same roles in another order: nothing written"
    );

    // Demotion: the IdP dropped Admin; the next request with the new token is refused at once.
    let demoted = token("ivy", &["Staff"]);
    assert_error(
        &app.send("GET", "/admin/roles", Some(&demoted), None).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(writes(&app), ["Staff"], "stored for every task");
    let (_, me) = app.send("GET", "/users/me", Some(&demoted), None).await;
    assert_eq!(me["roles"], serde_json::json!(["Staff"]));
    assert_eq!(me["appRoles"], serde_json::json!(["staff"]));
    // Promotion works the same way, without a sync.
    let promoted = token("ivy", &["Staff", "Admin"]);
    assert_eq!(
        app.send("GET", "/admin/roles", Some(&promoted), None).await.0,
        StatusCode::OK
    );
    assert_eq!(writes(&app), ["Staff", "Admin"]);

    // No roles claim: the stored roles apply, and an operator's grant in the table is honoured.
    let plain = common::token_without_roles("ivy");
    assert_eq!(
        app.send("GET", "/admin/roles", Some(&plain), None).await.0,
        StatusCode::OK
    );
    app.store
        .put_profile_directly(common::profile("ivy", &["Staff"], UserStatus::Active));
    app.state.caches.apply(&Invalidation::Invalidate {
        source: Source::USERS,
        keys: vec![KeyVersion {
            id: "ivy".into(),
            seq: "2".into(),
            at_ms: 1,
        }],
    });
    assert_error(
        &app.send("GET", "/admin/roles", Some(&plain), None).await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(writes(&app), ["Staff"], "a token without the claim writes nothing");
    // A sync with such a token keeps the stored roles.
    let (status, body) = app.send("POST", "/users/me/sync", Some(&plain), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], serde_json::json!(["Staff"]));
}

#[tokio::test]
async fn flush_all_clears_every_cache() {
    let app = TestApp::new(CacheMode::Event).await;
    app.send("GET", "/users/me", Some(&alice()), None).await;
    let reads = app.store.profile_reads();
    app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_eq!(app.store.profile_reads(), reads, "cached");
    app.state.caches.apply(&Invalidation::FlushAll {
        source: None,
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

    async fn align_roles(
        &self,
        _user_id: &str,
        _roles: &[String],
        _issued_at: Option<i64>,
    ) -> Result<bool, StoreError> {
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
async fn store_failures_are_503_and_corrupt_items_500_naming_the_attribute_not_the_value() {
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
    assert_eq!(response.1["error"], "corrupt_item");
    let message = response.1["message"].as_str().unwrap_or_default();
    assert!(message.contains("USER#alice") && message.contains("email"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_request_that_hangs_is_answered_408() {
    // `NotFound` makes the broken store hang; paused time lets the 1 s timeout pass at once.
    let app = broken_app(StoreError::NotFound(String::new())).await;
    let response = app.send("GET", "/users/me", Some(&alice()), None).await;
    assert_error(&response, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.1["error"], "timeout");
}
