//! Token verification through the router: every way a token can be wrong is a 401 JSON error.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, access_token_claims, assert_error, jwt};
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
