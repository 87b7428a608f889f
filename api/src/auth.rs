//! Bearer-token authentication: RS256 JWTs verified against a JWKS, then cached.
//!
//! One code path locally and on AWS: the local stack signs with its own key pair and serves a
//! JWKS file; Cognito serves a JWKS URL. The algorithm is pinned to RS256, issuer and audience
//! (or Cognito's `client_id`) are checked, `exp`/`nbf` with a small leeway.
//!
//! The key set is a security boundary: it is reloaded every `JWKS_REFRESH_SECS` and, at most
//! once per `JWKS_REFRESH_MIN_SECS`, for a token whose `kid` is unknown. A key that leaves the
//! set stops verifying at that reload, and the claims it vouched for leave the claims cache with
//! it. An answer that is empty, unparsable or unreachable never replaces the last good set: it
//! is logged and counted (`staleless_jwks_refresh_failures_total{reason}`).
//!
//! The roles claim is capped (see [`idp_roles`]): its roles end up on the user's profile item, and
//! a claim too big to store would make every request of its token fail on the write instead.
//!
//! Verified claims are cached by the SHA-256 of the token until the token's `exp`, so a request
//! with a token seen before costs a hash and a map look-up, not an RSA verification. Refusals are
//! not cached: a refused token is verified, and refused, again on every request. No token
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
use crate::model::MAX_LIST_ENTRIES;

/// Longest role name a roles claim may carry, in characters (after trimming). With at most
/// [`MAX_LIST_ENTRIES`] of them, the roles a token can write onto a profile stay far below
/// DynamoDB's 400 KB item size:
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items>
pub const MAX_ROLE_NAME_CHARS: usize = 128;

/// Largest `custom:roles` claim, in bytes of its text: checked before the text is split or
/// parsed, so a huge claim costs a length comparison and nothing more.
pub const MAX_ROLES_CLAIM_BYTES: usize = 8 * 1024;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub user_id: String,
    /// `email`, lower-cased, when present.
    pub email: Option<String>,
    /// `name`, when present.
    pub name: Option<String>,
    /// IdP roles from `custom:roles`, else `cognito:groups`, within the caps of [`idp_roles`];
    /// `None` when the token carries neither (then the stored profile's roles apply).
    pub idp_roles: Option<Vec<String>>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `iat`, seconds since the Unix epoch, when present: orders two tokens' roles claims.
    pub issued_at: Option<i64>,
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
    /// The roles claim is over a cap. Refused rather than cut short: a shortened list would
    /// authorize with roles other than the ones the IdP named.
    #[error("{0}")]
    RolesClaimOverLimit(RolesClaimLimit),
}

/// The cap a token's roles claim is over; the message never echoes the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RolesClaimLimit {
    /// The `custom:roles` text is longer than [`MAX_ROLES_CLAIM_BYTES`].
    #[error("the token's roles claim is larger than {max} bytes", max = MAX_ROLES_CLAIM_BYTES)]
    Bytes,
    /// The claim names more than [`MAX_LIST_ENTRIES`] roles (empty entries not counted).
    #[error("the token's roles claim carries more than {max} roles", max = MAX_LIST_ENTRIES)]
    Roles,
    /// A role name is longer than [`MAX_ROLE_NAME_CHARS`].
    #[error(
        "a role name in the token's roles claim is longer than {max} characters",
        max = MAX_ROLE_NAME_CHARS
    )]
    RoleName,
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
            Self::RolesClaimOverLimit(RolesClaimLimit::Bytes) => "roles_claim_too_large",
            Self::RolesClaimOverLimit(RolesClaimLimit::Roles) => "too_many_roles",
            Self::RolesClaimOverLimit(RolesClaimLimit::RoleName) => "role_name_too_long",
        }
    }
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The JWKS could not be fetched or read.
    #[error("cannot load the JWKS from {source_name}: {cause}")]
    Jwks {
        /// The URL or file.
        source_name: String,
        /// What failed.
        cause: JwksLoadError,
    },
}

/// Why a key set could not be loaded; the label of `staleless_jwks_refresh_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksLoadError {
    /// The URL or file could not be read (network, HTTP status, missing file).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The answer is not a JWKS document.
    #[error("unparsable: {0}")]
    Unparsable(String),
    /// The document holds no RS256 key with a `kid`: taken as a broken answer, never as "revoke
    /// every key", so it cannot lock every user out.
    #[error("the key set holds no RS256 key with a kid")]
    Empty,
}

impl JwksLoadError {
    /// The metric label.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Unparsable(_) => "unparsable",
            Self::Empty => "empty",
        }
    }
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

    /// The RS256 keys of the set, by `kid`.
    async fn load(&self) -> Result<KeySet, JwksLoadError> {
        let set: JwkSet = match self {
            Self::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .build()
                    .map_err(|err| JwksLoadError::Unreachable(err.to_string()))?;
                let body = client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|err| JwksLoadError::Unreachable(err.to_string()))?
                    .bytes()
                    .await
                    .map_err(|err| JwksLoadError::Unreachable(err.to_string()))?;
                serde_json::from_slice(&body).map_err(|err| JwksLoadError::Unparsable(err.to_string()))?
            }
            Self::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|err| JwksLoadError::Unreachable(err.to_string()))?;
                serde_json::from_str(&text).map_err(|err| JwksLoadError::Unparsable(err.to_string()))?
            }
            Self::Fixed(set) => set.clone(),
        };
        let keys = rsa_keys(&set);
        if keys.is_empty() {
            Err(JwksLoadError::Empty)
        } else {
            Ok(keys)
        }
    }
}

/// How long one JWKS fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A usable key and what it was made from, so a key replaced under the same `kid` counts as
/// removed.
#[derive(Clone)]
struct VerifyingKey {
    /// The JWK as JSON: equal JSON, same key.
    fingerprint: String,
    /// The key.
    key: DecodingKey,
}

/// RS256 keys by `kid`.
type KeySet = HashMap<String, VerifyingKey>;

/// The RS256 keys of a set, by `kid`; keys of other types are ignored.
fn rsa_keys(set: &JwkSet) -> KeySet {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let fingerprint = serde_json::to_string(jwk).ok()?;
            (key.family() == jsonwebtoken::AlgorithmFamily::Rsa).then_some((kid, VerifyingKey { fingerprint, key }))
        })
        .collect()
}

/// The `kid`s of `old` that `new` no longer holds, or holds as a different key.
fn removed_kids<'a>(old: &'a KeySet, new: &KeySet) -> Vec<&'a str> {
    old.iter()
        .filter(|(kid, key)| new.get(*kid).is_none_or(|now| now.fingerprint != key.fingerprint))
        .map(|(kid, _)| kid.as_str())
        .collect()
}

/// The `staleless_jwks_keys` gauge: the keys in use.
fn record_key_count(keys: usize) {
    metrics::gauge!(names::JWKS_KEYS).set(u32::try_from(keys).unwrap_or(u32::MAX));
}

/// What one reload of the key set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetReload {
    /// The new set is in use.
    Replaced {
        /// Keys in the new set.
        keys: usize,
        /// Keys that left the set (or changed under their `kid`); their cached claims are gone.
        removed: usize,
    },
    /// The answer was refused; the last good set stays.
    Kept(JwksLoadError),
    /// An unknown-`kid` reload asked too soon after the last one.
    RateLimited,
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
    /// A NumericDate: an integer from Cognito, but fractions are allowed.
    #[serde(default)]
    iat: Option<f64>,
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

/// IdP roles: `custom:roles` as a JSON-array string or a comma list (entries trimmed, empty ones
/// dropped), else `cognito:groups`; `None` when the token carries neither claim.
///
/// # Errors
/// [`RolesClaimLimit`], checked in this order: a `custom:roles` text over
/// [`MAX_ROLES_CLAIM_BYTES`] (before it is parsed), more than [`MAX_LIST_ENTRIES`] roles, a role
/// name over [`MAX_ROLE_NAME_CHARS`]. Only the claim the roles are taken from is checked.
pub fn idp_roles(
    custom_roles: Option<&str>,
    groups: Option<&[String]>,
) -> Result<Option<Vec<String>>, RolesClaimLimit> {
    let Some(custom) = custom_roles else {
        return groups
            .map(|groups| within_limits(groups).map(|()| groups.to_vec()))
            .transpose();
    };
    if custom.len() > MAX_ROLES_CLAIM_BYTES {
        return Err(RolesClaimLimit::Bytes);
    }
    let custom = custom.trim();
    let roles: Vec<String> = if custom.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(custom)
    {
        list.into_iter()
            .map(|role| role.trim().to_owned())
            .filter(|role| !role.is_empty())
            .collect()
    } else {
        custom
            .split(',')
            .map(str::trim)
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect()
    };
    within_limits(&roles).map(|()| Some(roles))
}

/// The first cap a list of roles is over: the count, then the length of a name.
fn within_limits(roles: &[String]) -> Result<(), RolesClaimLimit> {
    if roles.len() > MAX_LIST_ENTRIES {
        return Err(RolesClaimLimit::Roles);
    }
    if roles.iter().any(|role| role.chars().count() > MAX_ROLE_NAME_CHARS) {
        return Err(RolesClaimLimit::RoleName);
    }
    Ok(())
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
        Some(Duration::from_secs(
            identity.expires_at.saturating_sub(crate::unix_now_secs()),
        ))
    }
}

/// Verifies tokens and caches what they say.
pub struct Authenticator {
    /// Where keys are (re)loaded from.
    source: JwksSource,
    /// Current keys by `kid`: the last good set.
    keys: RwLock<KeySet>,
    /// When the key set was last loaded, to rate-limit reloads on unknown `kid`s.
    last_refresh: tokio::sync::Mutex<Instant>,
    /// Minimum time between two unknown-`kid` reloads.
    refresh_min: Duration,
    /// Time between two scheduled reloads (`JWKS_REFRESH_SECS`).
    refresh_every: Duration,
    /// RS256 only; `iss`, `exp`, `nbf` checked with the leeway; `aud` checked by us.
    validation: Validation,
    /// The accepted `aud` / `client_id`.
    audience: String,
    /// Verified identities by SHA-256 of the token.
    verified: moka::sync::Cache<[u8; 32], Arc<Identity>>,
    /// Bumped whenever a key leaves the set: a verification that started before the bump is
    /// not cached, so a token verified by a key in the moment it was removed is not kept.
    key_removals: AtomicU64,
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
        let keys = match source.load().await {
            Ok(keys) => keys,
            // An empty set at start-up refuses every token until a reload brings keys; a set
            // that cannot be read at all is a configuration error.
            Err(JwksLoadError::Empty) => {
                tracing::warn!(jwks = %source.name(), "the key set holds no RS256 key with a kid; every token will be refused");
                KeySet::new()
            }
            Err(cause) => {
                return Err(AuthSetupError::Jwks {
                    source_name: source.name(),
                    cause,
                });
            }
        };
        record_key_count(keys.len());
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
            refresh_every: Duration::from_secs(config.jwks_refresh_secs.max(1)),
            validation,
            audience: config.audience.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(max_tokens)
                .expire_after(UntilExpiry)
                .build(),
            key_removals: AtomicU64::new(0),
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
        let removals_before = self.key_removals.load(Ordering::Acquire);
        match self.verify(token).await {
            Ok(identity) => {
                metrics::counter!(names::TOKENS_VERIFIED).increment(1);
                let identity = Arc::new(identity);
                if self.key_removals.load(Ordering::Acquire) == removals_before {
                    self.verified.insert(digest, Arc::clone(&identity));
                }
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
                self.reload_for_unknown_kid().await;
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
        // Over a cap, the roles could not be stored: the token is refused here, before any
        // request could write them onto the profile.
        let idp_roles = idp_roles(claims.custom_roles.as_deref(), claims.groups.as_deref())
            .map_err(AuthError::RolesClaimOverLimit)?;
        Ok(Identity {
            idp_roles,
            user_id: claims.sub,
            email: claims.email.map(|email| email.to_lowercase()),
            name: claims.name,
            expires_at: claims.exp,
            // Whole seconds, saturating: the order of two claims is all it is used for.
            #[allow(clippy::cast_possible_truncation)]
            issued_at: claims.iat.map(|iat| iat.floor() as i64),
        })
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .ok()
            .and_then(|keys| keys.get(kid).map(|key| key.key.clone()))
    }

    /// Reloads the key set for a token with an unknown `kid`, unless that was done less than
    /// `refresh_min` ago: garbage tokens cannot make the service hammer the IdP.
    async fn reload_for_unknown_kid(&self) -> KeySetReload {
        let mut last = self.last_refresh.lock().await;
        if last.elapsed() < self.refresh_min {
            return KeySetReload::RateLimited;
        }
        *last = Instant::now();
        self.reload("unknown_kid").await
    }

    /// Loads the key set now and puts it in use, unless the answer is empty or broken (then the
    /// last good set stays). Keys that left the set stop verifying, and every cached claim goes
    /// with them: the cache does not know which key signed which token, and a removal is rare.
    pub async fn reload(&self, trigger: &'static str) -> KeySetReload {
        let fresh = match self.source.load().await {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::warn!(jwks = %self.source.name(), trigger, error = %err, "JWKS reload refused; keeping the last good key set");
                metrics::counter!(names::JWKS_REFRESH_FAILURES, "reason" => err.reason()).increment(1);
                return KeySetReload::Kept(err);
            }
        };
        let mut current = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = removed_kids(&current, &fresh);
        let fresh_keys = fresh.len();
        let outcome = KeySetReload::Replaced {
            keys: fresh_keys,
            removed: removed.len(),
        };
        if !removed.is_empty() {
            tracing::info!(trigger, removed = ?removed, "keys left the JWKS; their tokens are refused from now on");
            metrics::counter!(names::JWKS_KEYS_REMOVED).increment(removed.len() as u64);
            // Bumped before the new set is visible: a verification that read an old key and
            // finishes after this point is not cached.
            self.key_removals.fetch_add(1, Ordering::AcqRel);
            *current = fresh;
            drop(current);
            self.verified.invalidate_all();
        } else {
            *current = fresh;
        }
        record_key_count(fresh_keys);
        tracing::debug!(trigger, ?outcome, "JWKS reloaded");
        outcome
    }

    /// Keys in use.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.read().map_or(0, |keys| keys.len())
    }

    /// Reloads the key set every `JWKS_REFRESH_SECS` until `cancel`.
    pub async fn refresh_periodically(self: std::sync::Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.refresh_every) => {}
            }
            self.reload("scheduled").await;
        }
    }

    /// Forgets every verified token (on a flush of every source).
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

/// Verified tokens hold no key of any source; a flush of everything (an operator's) drops them.
impl staleless_consumer::Evict for Authenticator {
    fn evict(&self, _keys: &[staleless_protocol::KeyVersion]) -> usize {
        0
    }

    fn flush(&self) {
        Self::flush(self);
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
        assert_eq!(
            idp_roles(Some(r#"["Staff","Admin"]"#), None),
            Ok(Some(strings(&["Staff", "Admin"])))
        );
        assert_eq!(
            idp_roles(Some("Staff, Admin ,"), None),
            Ok(Some(strings(&["Staff", "Admin"])))
        );
        let groups = strings(&["Ops"]);
        assert_eq!(idp_roles(None, Some(&groups)), Ok(Some(groups.clone())));
        assert_eq!(idp_roles(Some("Staff"), Some(&groups)), Ok(Some(strings(&["Staff"]))));
        // A claim that names no role says "no roles"; no claim at all says nothing.
        assert_eq!(idp_roles(Some("[]"), None), Ok(Some(Vec::new())));
        assert_eq!(idp_roles(None, None), Ok(None));
    }

    /// `count` distinct role names of `chars` characters each.
    fn names(count: usize, chars: usize) -> Vec<String> {
        (0..count).map(|at| format!("{at:0>chars$}")).collect()
    }

    #[test]
    fn a_roles_claim_carries_at_most_64_roles_in_any_form() {
        for (count, expected) in [
            (MAX_LIST_ENTRIES, Ok(())),
            (MAX_LIST_ENTRIES + 1, Err(RolesClaimLimit::Roles)),
        ] {
            let roles = names(count, 3);
            let expected = expected.map(|()| Some(roles.clone()));
            let json = serde_json::to_string(&roles).expect("json");
            assert_eq!(idp_roles(Some(&json), None), expected, "{count} as a JSON array");
            assert_eq!(
                idp_roles(Some(&roles.join(",")), None),
                expected,
                "{count} as a comma list"
            );
            assert_eq!(idp_roles(None, Some(&roles)), expected, "{count} as groups");
        }
        // Empty entries are dropped, not counted.
        let roles = names(MAX_LIST_ENTRIES, 3);
        let padded = format!(",, {} ,,", roles.join(" , ,"));
        assert_eq!(idp_roles(Some(&padded), None), Ok(Some(roles)));
    }

    #[test]
    fn a_role_name_has_at_most_128_characters_not_bytes() {
        let longest = "é".repeat(MAX_ROLE_NAME_CHARS);
        assert_eq!(
            idp_roles(Some(&format!(" {longest} ")), None),
            Ok(Some(vec![longest.clone()]))
        );
        let over = format!("{longest}e");
        assert_eq!(idp_roles(Some(&over), None), Err(RolesClaimLimit::RoleName));
        assert_eq!(
            idp_roles(Some(&serde_json::to_string(&[&over]).expect("json")), None),
            Err(RolesClaimLimit::RoleName)
        );
        assert_eq!(idp_roles(None, Some(&[over])), Err(RolesClaimLimit::RoleName));
    }

    #[test]
    fn the_roles_claim_text_is_capped_before_it_is_parsed() {
        let at_cap = format!("Staff{}", " ".repeat(MAX_ROLES_CLAIM_BYTES - "Staff".len()));
        assert_eq!(idp_roles(Some(&at_cap), None), Ok(Some(strings(&["Staff"]))));
        // One byte more refuses it, though it would trim down to one short role.
        assert_eq!(
            idp_roles(Some(&format!("{at_cap} ")), None),
            Err(RolesClaimLimit::Bytes)
        );
        // The byte cap comes first: a huge list is refused for its size, not its count.
        let huge = names(5_000, 3).join(",");
        assert_eq!(idp_roles(Some(&huge), None), Err(RolesClaimLimit::Bytes));
        // Only the claim the roles come from is checked.
        assert_eq!(
            idp_roles(Some("Staff"), Some(&names(5_000, 3))),
            Ok(Some(strings(&["Staff"])))
        );
    }

    #[test]
    fn each_cap_has_a_fixed_message_and_metric_label() {
        let refusals = [
            (
                RolesClaimLimit::Bytes,
                "the token's roles claim is larger than 8192 bytes",
                "roles_claim_too_large",
            ),
            (
                RolesClaimLimit::Roles,
                "the token's roles claim carries more than 64 roles",
                "too_many_roles",
            ),
            (
                RolesClaimLimit::RoleName,
                "a role name in the token's roles claim is longer than 128 characters",
                "role_name_too_long",
            ),
        ];
        for (limit, message, reason) in refusals {
            let refused = AuthError::RolesClaimOverLimit(limit);
            assert_eq!(refused.to_string(), message);
            assert_eq!(refused.reason(), reason);
        }
    }

    #[test]
    fn audience_is_aud_or_cognito_client_id() {
        let one = Audience::One("api".into());
        let many = Audience::Many(strings(&["other", "api"]));
        assert!(audience_matches(Some(&one), None, "api"));
        assert!(audience_matches(Some(&many), None, "api"));
        assert!(!audience_matches(
            Some(&Audience::One("other".into())),
            Some("api"),
            "api"
        ));
        assert!(audience_matches(None, Some("api"), "api"));
        assert!(!audience_matches(None, None, "api"));
    }
}
