//! Token verification through the router: every way a token can be wrong is a 401 JSON error.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, access_token_claims, assert_error, jwt, token};
use infra::jwt::{LOCAL_ISSUER, claims, unix_now};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use staleless_api::CacheMode;

fn alice_claims() -> Value {
    claims(
        "alice",
        Some(&["Staff"]),
        "alice@example.com",
        "Alice",
        Duration::from_secs(600),
    )
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

async fn status_of(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.send("GET", "/users/me", Some(token), None).await
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_then_served_from_the_claims_cache() {
    let app = TestApp::new(CacheMode::Event).await;
    let token = jwt().sign(&alice_claims());
    assert_eq!(status_of(&app, &token).await.0, StatusCode::OK);
    assert_eq!(status_of(&app, &token).await.0, StatusCode::OK);
    let stats = app.state.auth.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1));
}

#[tokio::test]
async fn refused_tokens_are_401_with_a_fixed_message() {
    let app = TestApp::new(CacheMode::Event).await;
    let now = unix_now();
    let signed = |claims: Value| jwt().sign(&claims);
    let header_none = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": jwt().kid()}).to_string());
    let body = URL_SAFE_NO_PAD.encode(alice_claims().to_string());
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(jwt().kid().to_owned());
    let hs256_with_public_key = jsonwebtoken::encode(
        &hs256,
        &alice_claims(),
        &EncodingKey::from_secret(jwt().public_key_pem().as_bytes()),
    )
    .expect("hs256");
    let valid = signed(alice_claims());
    let (head, rest) = valid.split_once('.').expect("jwt");
    let (_, signature) = rest.split_once('.').expect("jwt");
    let tampered_body = URL_SAFE_NO_PAD.encode(with(alice_claims(), "sub", json!("admin")).to_string());

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            signed(with(alice_claims(), "exp", json!(now - 600))),
            "token expired",
        ),
        (
            "not yet valid",
            signed(with(alice_claims(), "nbf", json!(now + 600))),
            "token not yet valid",
        ),
        (
            "wrong issuer",
            signed(with(alice_claims(), "iss", json!("someone-else"))),
            "token issuer not accepted",
        ),
        (
            "no issuer",
            signed({
                let mut claims = alice_claims();
                claims.as_object_mut().expect("object").remove("iss");
                claims
            }),
            "token issuer not accepted",
        ),
        (
            "wrong audience",
            signed(with(alice_claims(), "aud", json!("another-api"))),
            "token audience not accepted",
        ),
        (
            "empty sub",
            signed(with(alice_claims(), "sub", json!(""))),
            "invalid token",
        ),
        ("alg none", format!("{header_none}.{body}."), "invalid token"),
        ("HS256 with the public key", hs256_with_public_key, "invalid token"),
        (
            "unknown kid",
            jwt().sign_with_kid(&alice_claims(), "rotated-away"),
            "token signed by an unknown key",
        ),
        (
            "tampered claims",
            format!("{head}.{tampered_body}.{signature}"),
            "invalid token",
        ),
        ("garbage", "not.a.jwt".to_owned(), "invalid token"),
        ("empty segments", "..".to_owned(), "invalid token"),
    ];
    for (case, token, message) in cases {
        let response = status_of(&app, &token).await;
        assert_error(&response, StatusCode::UNAUTHORIZED);
        assert_eq!(response.1["message"], message, "{case}");
        assert!(!response.1.to_string().contains(&token), "{case}: token echoed");
    }
    for header in ["Basic abc", "Bearer", "Bearer "] {
        let request = axum::http::Request::builder()
            .uri("/users/me")
            .header("authorization", header)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = tower::ServiceExt::oneshot(staleless_api::router(app.state.clone()), request)
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
}

#[tokio::test]
async fn cognito_access_tokens_use_client_id_and_groups() {
    let app = TestApp::new(CacheMode::Event).await;
    let access = access_token_claims(alice_claims());
    assert_eq!(access["iss"], LOCAL_ISSUER);
    assert_eq!(status_of(&app, &jwt().sign(&access)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_small_clock_skew_is_tolerated() {
    let app = TestApp::new(CacheMode::Event).await;
    let now = unix_now();
    let skewed = with(alice_claims(), "nbf", json!(now + 5));
    assert_eq!(status_of(&app, &jwt().sign(&skewed)).await.0, StatusCode::OK);
}

/// `count` distinct role names of `chars` characters each.
fn roles(count: usize, chars: usize) -> Vec<String> {
    (0..count)
        .map(|at| format!("R{at:0>width$}", width = chars - 1))
        .collect()
}

fn with_custom_roles(roles: &[String]) -> Value {
    with(alice_claims(), "custom:roles", json!(json!(roles).to_string()))
}

#[tokio::test]
async fn a_roles_claim_over_a_cap_is_refused_every_time_and_never_stored() {
    let app = TestApp::new(CacheMode::Event).await;
    let mut over_in_groups = access_token_claims(alice_claims());
    over_in_groups["cognito:groups"] = json!(roles(65, 8));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "65 roles",
            with_custom_roles(&roles(65, 8)),
            "the token's roles claim carries more than 64 roles",
        ),
        (
            "a 129-character role",
            with_custom_roles(&["Staff".to_owned(), "r".repeat(129)]),
            "a role name in the token's roles claim is longer than 128 characters",
        ),
        (
            "65 cognito:groups",
            over_in_groups,
            "the token's roles claim carries more than 64 roles",
        ),
        (
            "over 8 KiB",
            with(
                alice_claims(),
                "custom:roles",
                json!(format!("Staff,{}", "r".repeat(8 * 1024))),
            ),
            "the token's roles claim is larger than 8192 bytes",
        ),
    ];
    for (case, claims, message) in cases {
        let token = jwt().sign(&claims);
        // Refusals are not cached: the second request is verified, and refused, again.
        for attempt in ["first", "second"] {
            let response = status_of(&app, &token).await;
            assert_error(&response, StatusCode::UNAUTHORIZED);
            assert_eq!(response.1["message"], message, "{case}, {attempt} request");
        }
        let response = app.send("POST", "/users/me/sync", Some(&token), Some("{}")).await;
        assert_error(&response, StatusCode::UNAUTHORIZED);
        let stored = app.store.profile_directly("alice").expect("alice");
        assert_eq!(stored.roles, ["Staff"], "{case}: roles written");
    }
    assert_eq!(app.state.auth.stats().entries, 0);
    // A user without a profile is not created either.
    let newcomer = jwt().sign(&with(with_custom_roles(&roles(65, 8)), "sub", json!("newcomer")));
    let response = app.send("POST", "/users/me/sync", Some(&newcomer), Some("{}")).await;
    assert_error(&response, StatusCode::UNAUTHORIZED);
    assert_eq!(app.store.profile_directly("newcomer"), None);
}

#[tokio::test]
async fn a_roles_claim_at_the_caps_is_accepted_and_stored_as_it_is() {
    let app = TestApp::new(CacheMode::Event).await;
    // 64 names of 120 characters: at the count cap and under 8 KiB as a JSON array.
    let mut at_caps = roles(64, 120);
    at_caps[0] = "r".repeat(128);
    let claims = with_custom_roles(&at_caps);
    assert!(claims["custom:roles"].as_str().expect("string").len() <= 8 * 1024);
    let response = status_of(&app, &jwt().sign(&claims)).await;
    assert_eq!(response.0, StatusCode::OK, "{}", response.1);
    assert_eq!(app.store.profile_directly("alice").expect("alice").roles, at_caps);

    let mut groups = access_token_claims(alice_claims());
    groups["cognito:groups"] = json!(roles(64, 8));
    assert_eq!(status_of(&app, &jwt().sign(&groups)).await.0, StatusCode::OK);
    // Still within the caps: a roles claim as common tokens carry it.
    assert_eq!(status_of(&app, &token("alice", &["Staff"])).await.0, StatusCode::OK);
}
