//! Bearer-token authentication: RS256 JWTs verified against a JWKS, then cached.
//!
//! One code path locally and on AWS: the local stack signs with its own key pair and serves a
//! JWKS file; Cognito serves a JWKS URL. The algorithm is pinned to RS256, issuer and audience
//! (or Cognito's `client_id`) are checked, `exp`/`nbf` with a small leeway. A token whose `kid`
//! is unknown reloads the key set, at most once per `JWKS_REFRESH_MIN_SECS`.
//!
//! Verified claims are cached by the SHA-256 of the token until the token's `exp`, so a request
//! with a token seen before costs a hash and a map look-up, not an RSA verification. No token
//! content is ever logged; every failure is one of a few fixed messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::config::JwtConfig;
use crate::metrics as names;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub user_id: String,
    /// `email`, lower-cased, when present.
    pub email: Option<String>,
    /// `name`, when present.
    pub name: Option<String>,
    /// IdP roles from `custom:roles`, else `cognito:groups`.
    pub idp_roles: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token was refused; each maps to a fixed 401 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a JWT, a bad signature, a wrong algorithm, a claim of the wrong type or an empty `sub`.
    #[error("invalid token")]
    Invalid,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// Neither `aud` nor `client_id` is the configured audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// The header's `kid` is in no key of the set, even after a refresh.
    #[error("token signed by an unknown key")]
    UnknownKey,
}

impl AuthError {
    /// The metric label.
    const fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::UnknownKey => "unknown_key",
        }
    }
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The JWKS could not be fetched or read.
    #[error("cannot load the JWKS from {source_name}: {detail}")]
    Jwks {
        /// The URL or file.
        source_name: String,
        /// What failed.
        detail: String,
    },
}

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// An HTTPS URL (Cognito).
    Url(String),
    /// A file (the local stack).
    File(PathBuf),
    /// A fixed set (tests): refreshing changes nothing.
    Fixed(JwkSet),
}

impl JwksSource {
    /// The source the configuration names (URL over file).
    #[must_use]
    pub fn from_config(config: &JwtConfig) -> Self {
        config
            .jwks_url
            .as_ref()
            .map_or_else(|| Self::File(config.jwks_file.clone()), |url| Self::Url(url.clone()))
    }

    fn name(&self) -> String {
        match self {
            Self::Url(url) => url.clone(),
            Self::File(path) => path.display().to_string(),
            Self::Fixed(_) => "a fixed key set".to_owned(),
        }
    }

    async fn load(&self) -> Result<JwkSet, AuthSetupError> {
        let fail = |detail: String| AuthSetupError::Jwks {
            source_name: self.name(),
            detail,
        };
        match self {
            Self::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|err| fail(err.to_string()))?;
                client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|err| fail(err.to_string()))?
                    .json()
                    .await
                    .map_err(|err| fail(err.to_string()))
            }
            Self::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|err| fail(err.to_string()))?;
                serde_json::from_str(&text).map_err(|err| fail(err.to_string()))
            }
            Self::Fixed(set) => Ok(set.clone()),
        }
    }
}

/// The RS256 keys of a set, by `kid`; keys of other types are ignored.
fn rsa_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            (key.family() == jsonwebtoken::AlgorithmFamily::Rsa).then_some((kid, key))
        })
        .collect()
}

/// `aud` may be a string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims this service reads (the registered ones are checked by `jsonwebtoken`).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "custom:roles")]
    custom_roles: Option<String>,
    #[serde(default, rename = "cognito:groups")]
    groups: Option<Vec<String>>,
}

/// Whether `aud` (ID tokens) or `client_id` (Cognito access tokens, which have no `aud`) is
/// the expected audience.
fn audience_matches(aud: Option<&Audience>, client_id: Option<&str>, expected: &str) -> bool {
    match aud {
        Some(Audience::One(aud)) => aud == expected,
        Some(Audience::Many(auds)) => auds.iter().any(|aud| aud == expected),
        None => client_id == Some(expected),
    }
}

/// IdP roles: `custom:roles` as a JSON-array string or a comma list, else `cognito:groups`.
#[must_use]
pub fn idp_roles(custom_roles: Option<&str>, groups: Option<&[String]>) -> Vec<String> {
    let Some(custom) = custom_roles.map(str::trim) else {
        return groups.map(<[String]>::to_vec).unwrap_or_default();
    };
    if custom.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(custom)
    {
        return list.into_iter().map(|role| role.trim().to_owned()).filter(|role| !role.is_empty()).collect();
    }
    custom
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Keeps each verified identity until its token's `exp`.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Identity>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        identity: &Arc<Identity>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(identity.expires_at.saturating_sub(crate::unix_now_secs())))
    }
}

/// Verifies tokens and caches what they say.
pub struct Authenticator {
    /// Where keys are (re)loaded from.
    source: JwksSource,
    /// Current keys by `kid`.
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the key set was last loaded, to rate-limit refreshes on unknown `kid`s.
    last_refresh: tokio::sync::Mutex<Instant>,
    /// Minimum time between two refreshes.
    refresh_min: Duration,
    /// RS256 only; `iss`, `exp`, `nbf` checked with the leeway; `aud` checked by us.
    validation: Validation,
    /// The accepted `aud` / `client_id`.
    audience: String,
    /// Verified identities by SHA-256 of the token.
    verified: moka::sync::Cache<[u8; 32], Arc<Identity>>,
    /// Claims-cache hits and misses, per instance.
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hits, misses and entries of the verified-token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TokenCacheStats {
    /// Tokens held.
    pub entries: u64,
    /// Requests whose token was already verified.
    pub hits: u64,
    /// Requests whose token had to be verified (or was refused).
    pub misses: u64,
}

impl Authenticator {
    /// Loads the key set and builds the verifier.
    ///
    /// # Errors
    /// [`AuthSetupError`] when the key set cannot be loaded.
    pub async fn new(source: JwksSource, config: &JwtConfig, max_tokens: u64) -> Result<Self, AuthSetupError> {
        let keys = rsa_keys(&source.load().await?);
        if keys.is_empty() {
            tracing::warn!(jwks = %source.name(), "the key set holds no RS256 key with a kid; every token will be refused");
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = config.leeway_secs;
        Ok(Self {
            source,
            keys: RwLock::new(keys),
            last_refresh: tokio::sync::Mutex::new(Instant::now()),
            refresh_min: Duration::from_secs(config.jwks_refresh_min_secs),
            validation,
            audience: config.audience.clone(),
            verified: moka::sync::Cache::builder().max_capacity(max_tokens).expire_after(UntilExpiry).build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The identity of a bearer token, from the cache or by verifying it.
    ///
    /// # Errors
    /// [`AuthError`] naming why the token is refused.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.verified.get(&digest)
            && identity.expires_at > crate::unix_now_secs()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(identity);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match self.verify(token).await {
            Ok(identity) => {
                metrics::counter!(names::TOKENS_VERIFIED).increment(1);
                let identity = Arc::new(identity);
                self.verified.insert(digest, Arc::clone(&identity));
                Ok(identity)
            }
            Err(err) => {
                metrics::counter!(names::TOKENS_REJECTED, "reason" => err.reason()).increment(1);
                Err(err)
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh().await;
                self.key(&kid).ok_or(AuthError::UnknownKey)?
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                    _ => AuthError::Invalid,
                }
            })?
            .claims;
        if !audience_matches(claims.aud.as_ref(), claims.client_id.as_deref(), &self.audience) {
            return Err(AuthError::WrongAudience);
        }
        // An empty `sub` would be cached and written under a bare `USER#`, a key the stream relay
        // cannot map back to a user: that profile would never be invalidated.
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(Identity {
            idp_roles: idp_roles(claims.custom_roles.as_deref(), claims.groups.as_deref()),
            user_id: claims.sub,
            email: claims.email.map(|email| email.to_lowercase()),
            name: claims.name,
            expires_at: claims.exp,
        })
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok().and_then(|keys| keys.get(kid).cloned())
    }

    /// Reloads the key set unless that was done less than `refresh_min` ago.
    async fn refresh(&self) {
        let mut last = self.last_refresh.lock().await;
        if last.elapsed() < self.refresh_min {
            return;
        }
        *last = Instant::now();
        match self.source.load().await {
            Ok(set) => {
                let keys = rsa_keys(&set);
                tracing::info!(keys = keys.len(), "reloaded the JWKS after an unknown kid");
                if let Ok(mut current) = self.keys.write() {
                    *current = keys;
                }
            }
            Err(err) => tracing::warn!(error = %err, "JWKS refresh failed; keeping the current keys"),
        }
    }

    /// Forgets every verified token (part of `flush_all`).
    pub fn flush(&self) {
        self.verified.invalidate_all();
    }

    /// Counts for `/admin/cache/stats`.
    #[must_use]
    pub fn stats(&self) -> TokenCacheStats {
        self.verified.run_pending_tasks();
        TokenCacheStats {
            entries: self.verified.entry_count(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn roles_come_from_custom_roles_in_either_form_else_groups() {
        assert_eq!(idp_roles(Some(r#"["Staff","Admin"]"#), None), ["Staff", "Admin"]);
        assert_eq!(idp_roles(Some("Staff, Admin ,"), None), ["Staff", "Admin"]);
        let groups = strings(&["Ops"]);
        assert_eq!(idp_roles(None, Some(&groups)), ["Ops"]);
        assert_eq!(idp_roles(Some("Staff"), Some(&groups)), ["Staff"]);
        assert!(idp_roles(None, None).is_empty());
    }

    #[test]
    fn audience_is_aud_or_cognito_client_id() {
        let one = Audience::One("api".into());
        let many = Audience::Many(strings(&["other", "api"]));
        assert!(audience_matches(Some(&one), None, "api"));
        assert!(audience_matches(Some(&many), None, "api"));
        assert!(!audience_matches(Some(&Audience::One("other".into())), Some("api"), "api"));
        assert!(audience_matches(None, Some("api"), "api"));
        assert!(!audience_matches(None, None, "api"));
    }
}
