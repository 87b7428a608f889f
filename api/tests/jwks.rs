//! The key set as a security boundary: rotation, removal (cached claims included), and answers
//! that must never replace the last good set (empty, unparsable, unreachable).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use infra::jwt::LocalJwt;
use serde_json::{Value, json};
use staleless_api::CacheMode;
use staleless_api::auth::{AuthError, Authenticator, JwksLoadError, JwksSource, KeySetReload};
use tokio_util::sync::CancellationToken;

/// A JWKS file the test rewrites, in its own directory.
struct KeySetFile {
    path: PathBuf,
}

impl KeySetFile {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("staleless-jwks-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            path: dir.join("jwks.json"),
        }
    }

    /// Publishes the public keys of `pairs`.
    fn publish(&self, pairs: &[&LocalJwt]) {
        let keys: Vec<Value> = pairs.iter().flat_map(|pair| jwks_of(pair, &self.path)).collect();
        self.write(&json!({ "keys": keys }).to_string());
    }

    fn write(&self, text: &str) {
        // Write then rename, so a reload never reads a half-written file.
        let partial = self.path.with_extension("partial");
        std::fs::write(&partial, text).expect("write");
        std::fs::rename(&partial, &self.path).expect("rename");
    }
}

impl Drop for KeySetFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The JWK entries of one key pair.
fn jwks_of(pair: &LocalJwt, beside: &Path) -> Vec<Value> {
    let path = beside.with_file_name(format!("{}.json", pair.kid()));
    pair.write_jwks(&path).expect("jwks");
    let set: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    set["keys"].as_array().cloned().unwrap_or_default()
}

fn token_of(pair: &LocalJwt) -> String {
    pair.mint(
        "alice",
        Some(&["Staff"]),
        "alice@example.com",
        "Alice",
        Duration::from_secs(600),
    )
}

async fn authenticator(source: JwksSource, refresh_secs: u64) -> Authenticator {
    let mut config = common::config(CacheMode::Event);
    config.jwt.jwks_refresh_secs = refresh_secs;
    Authenticator::new(source, &config.jwt, 100)
        .await
        .expect("authenticator")
}

#[tokio::test]
async fn rotation_adds_the_new_key_and_removing_the_old_one_refuses_its_cached_tokens() {
    let (old, new) = (LocalJwt::generate().expect("key"), LocalJwt::generate().expect("key"));
    let file = KeySetFile::new("rotation");
    file.publish(&[&old]);
    let auth = authenticator(JwksSource::File(file.path.clone()), 600).await;
    let old_token = token_of(&old);
    assert!(auth.authenticate(&old_token).await.is_ok());
    assert!(auth.authenticate(&old_token).await.is_ok(), "now from the claims cache");
    assert_eq!(auth.stats().hits, 1);

    // The IdP publishes the next key beside the current one.
    file.publish(&[&old, &new]);
    assert_eq!(
        auth.reload("scheduled").await,
        KeySetReload::Replaced { keys: 2, removed: 0 }
    );
    assert!(auth.authenticate(&token_of(&new)).await.is_ok());
    assert!(
        auth.authenticate(&old_token).await.is_ok(),
        "both keys verify during a rotation"
    );

    // Then retires the old one: its tokens are refused at once, cached or not.
    file.publish(&[&new]);
    assert_eq!(
        auth.reload("scheduled").await,
        KeySetReload::Replaced { keys: 1, removed: 1 }
    );
    assert_eq!(auth.authenticate(&old_token).await, Err(AuthError::UnknownKey));
    assert!(auth.authenticate(&token_of(&new)).await.is_ok());
}

#[tokio::test]
async fn a_key_removed_from_the_set_stops_verifying_on_the_schedule() {
    let (kept, removed) = (LocalJwt::generate().expect("key"), LocalJwt::generate().expect("key"));
    let file = KeySetFile::new("schedule");
    file.publish(&[&kept, &removed]);
    let auth = std::sync::Arc::new(authenticator(JwksSource::File(file.path.clone()), 1).await);
    let token = token_of(&removed);
    assert!(auth.authenticate(&token).await.is_ok());
    let cancel = CancellationToken::new();
    let refresher = tokio::spawn(std::sync::Arc::clone(&auth).refresh_periodically(cancel.clone()));

    file.publish(&[&kept]);
    // No request asks for a reload: only the schedule can notice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while auth.authenticate(&token).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the removed key still verifies");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(auth.authenticate(&token).await, Err(AuthError::UnknownKey));
    assert_eq!(auth.key_count(), 1);
    cancel.cancel();
    refresher.await.expect("refresher stops");
}

#[tokio::test]
async fn empty_or_unparsable_answers_keep_the_last_good_set() {
    let pair = LocalJwt::generate().expect("key");
    let file = KeySetFile::new("broken");
    file.publish(&[&pair]);
    let auth = authenticator(JwksSource::File(file.path.clone()), 600).await;
    let token = token_of(&pair);
    assert!(auth.authenticate(&token).await.is_ok());

    file.write(r#"{"keys":[]}"#);
    assert_eq!(auth.reload("scheduled").await, KeySetReload::Kept(JwksLoadError::Empty));
    file.write(r#"{"keys":[{"kty":"oct","kid":"symmetric","k":"c2VjcmV0"}]}"#);
    assert_eq!(
        auth.reload("scheduled").await,
        KeySetReload::Kept(JwksLoadError::Empty),
        "no RS256 key in it"
    );
    file.write("<html>maintenance</html>");
    assert!(matches!(
        auth.reload("scheduled").await,
        KeySetReload::Kept(JwksLoadError::Unparsable(_))
    ));
    std::fs::remove_file(&file.path).expect("remove");
    assert!(matches!(
        auth.reload("scheduled").await,
        KeySetReload::Kept(JwksLoadError::Unreachable(_))
    ));
    assert_eq!(auth.key_count(), 1);
    assert!(
        auth.authenticate(&token).await.is_ok(),
        "still verifying with the last good set"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_url_keeps_the_last_good_set() {
    let pair = LocalJwt::generate().expect("key");
    let keys = json!({ "keys": jwks_of(&pair, &KeySetFile::new("url").path) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys) }
        }),
    );
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    let auth = authenticator(JwksSource::Url(url), 600).await;
    let token = token_of(&pair);
    assert!(auth.authenticate(&token).await.is_ok());
    assert_eq!(
        auth.reload("scheduled").await,
        KeySetReload::Replaced { keys: 1, removed: 0 }
    );

    stop.cancel();
    server.await.expect("join").expect("server");
    assert!(matches!(
        auth.reload("scheduled").await,
        KeySetReload::Kept(JwksLoadError::Unreachable(_))
    ));
    assert!(
        auth.authenticate(&token).await.is_ok(),
        "still verifying with the last good set"
    );
}
