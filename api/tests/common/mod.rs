//! Shared test support: one local key pair, seed data, an in-memory app and a request helper.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use infra::jwt::LocalJwt;
use serde_json::{Value, json};
use staleless_api::auth::{Authenticator, JwksSource};
use staleless_api::model::{Profile, RoleDefinition, UserStatus};
use staleless_api::store::MemoryStore;
use staleless_api::{AppState, CacheMode, Config};
use tower::ServiceExt as _;

/// One key pair per test binary: RSA generation is the slow part of setting up.
pub fn jwt() -> &'static LocalJwt {
    static JWT: OnceLock<LocalJwt> = OnceLock::new();
    JWT.get_or_init(|| LocalJwt::generate().expect("key pair"))
}

/// A token for `sub` whose roles claim names these IdP roles, valid for an hour.
pub fn token(sub: &str, roles: &[&str]) -> String {
    jwt().mint(
        sub,
        Some(roles),
        &format!("{sub}@Example.com"),
        sub,
        Duration::from_secs(3_600),
    )
}

/// A token for `sub` with these IdP roles, issued `age` ago (its `iat`), valid for an hour from now.
pub fn token_issued_ago(sub: &str, roles: &[&str], age: Duration) -> String {
    let mut claims = infra::jwt::claims(
        sub,
        Some(roles),
        &format!("{sub}@Example.com"),
        sub,
        Duration::from_secs(3_600),
    );
    let now = infra::jwt::unix_now();
    claims["iat"] = json!(now.saturating_sub(age.as_secs()));
    claims["nbf"] = claims["iat"].clone();
    jwt().sign(&claims)
}

/// A token for `sub` without a roles claim (the stored profile's roles apply), valid for an hour.
pub fn token_without_roles(sub: &str) -> String {
    jwt().mint(
        sub,
        None,
        &format!("{sub}@Example.com"),
        sub,
        Duration::from_secs(3_600),
    )
}

/// `id_token` (claims as [`infra::jwt::claims`] makes them) as a Cognito access token has them:
/// `client_id` instead of `aud`, `cognito:groups` (`Staff`) instead of `custom:roles`.
pub fn access_token_claims(mut id_token: Value) -> Value {
    if let Some(fields) = id_token.as_object_mut() {
        fields.remove("aud");
        fields.remove("custom:roles");
        fields.insert("client_id".into(), json!(infra::jwt::LOCAL_AUDIENCE));
        fields.insert("cognito:groups".into(), json!(["Staff"]));
        fields.insert("token_use".into(), json!("access"));
    }
    id_token
}

/// The configuration tests start from.
pub fn config(mode: CacheMode) -> Config {
    let mut config = Config::from_env().expect("config");
    config.cache.cache_mode = mode;
    // Router tests vouch for the caches once (no heartbeat writer runs): keep that for the test.
    config.channel.staleness_bound_secs = 3_600;
    config.jwt.issuer = infra::jwt::LOCAL_ISSUER.to_owned();
    config.jwt.audience = infra::jwt::LOCAL_AUDIENCE.to_owned();
    config.body_limit_bytes = 4 * 1024;
    config
}

/// A verifier that knows the test key pair.
pub async fn authenticator(config: &Config) -> Authenticator {
    let set = serde_json::from_value(jwt().jwks().clone()).expect("jwks");
    Authenticator::new(JwksSource::Fixed(set), &config.jwt, 1_000)
        .await
        .expect("authenticator")
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// A role as the demo data has them.
pub fn role(id: &str, mappings: &[&str], tools: &[&str], priority: u16, system: bool) -> RoleDefinition {
    RoleDefinition {
        role_id: id.to_owned(),
        display_name: id.to_owned(),
        description: String::new(),
        jwt_role_mappings: strings(mappings),
        granted_tools: strings(tools),
        granted_models: strings(&["standard"]),
        granted_skills: Vec::new(),
        priority,
        enabled: true,
        is_system_role: system,
        quota_tier: None,
        created_at: "2026-01-01T00:00:00.000Z".to_owned(),
        updated_at: "2026-01-01T00:00:00.000Z".to_owned(),
        version: 0,
    }
}

/// A profile.
pub fn profile(user_id: &str, roles: &[&str], status: UserStatus) -> Profile {
    Profile {
        user_id: user_id.to_owned(),
        email: format!("{user_id}@example.com"),
        name: user_id.to_owned(),
        roles: strings(roles),
        picture: None,
        status,
        created_at: "2026-01-01T00:00:00.000Z".to_owned(),
        roles_issued_at: None,
    }
}

/// An in-memory app: roles `system_admin`, `staff`, `default`; users `alice` (Staff), `admin`
/// (Admin), `sam` (Staff, suspended), `ivan` (Admin, inactive).
pub struct TestApp {
    /// The state the router serves.
    pub state: AppState,
    /// The store behind it.
    pub store: Arc<MemoryStore>,
}

impl TestApp {
    /// Seeded, with a trusted channel.
    pub async fn new(mode: CacheMode) -> Self {
        Self::with_config(config(mode)).await
    }

    /// Seeded, with this configuration and a trusted channel.
    pub async fn with_config(config: Config) -> Self {
        let store = Arc::new(MemoryStore::new());
        store.put_role_directly(role("system_admin", &["Admin"], &["*"], 900, true));
        store.put_role_directly(role("staff", &["Staff"], &["search", "calendar"], 100, true));
        store.put_role_directly(role("default", &[], &["search"], 0, true));
        store.put_profile_directly(profile("alice", &["Staff"], UserStatus::Active));
        store.put_profile_directly(profile("admin", &["Admin"], UserStatus::Active));
        store.put_profile_directly(profile("sam", &["Staff"], UserStatus::Suspended));
        store.put_profile_directly(profile("ivan", &["Admin"], UserStatus::Inactive));
        let auth = authenticator(&config).await;
        let state = AppState::new(config, store.clone(), store.clone(), auth, None);
        state.channel.mark_subscribed("test-queue");
        state.channel.record_ticks_now();
        Self { state, store }
    }

    /// Sends one request through the router and returns the status and JSON body (`Null` when
    /// the body is empty or not JSON).
    pub async fn send(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        self.send_with(method, uri, token, body, &[]).await
    }

    /// Like [`TestApp::send`], with extra request headers.
    pub async fn send_with(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_owned())))
            .expect("request");
        let response = staleless_api::router(self.state.clone())
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Like [`TestApp::send`], returning the raw text.
    pub async fn send_text(&self, uri: &str) -> (StatusCode, String) {
        let request = Request::builder().uri(uri).body(Body::empty()).expect("request");
        let response = staleless_api::router(self.state.clone())
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Asserts an error response has the contract shape and the expected status.
pub fn assert_error(actual: &(StatusCode, Value), status: StatusCode) {
    assert_eq!(actual.0, status, "{}", actual.1);
    assert!(actual.1["error"].is_string(), "no error field: {}", actual.1);
    assert!(actual.1["message"].is_string(), "no message field: {}", actual.1);
}
