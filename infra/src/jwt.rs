//! The local identity provider: an RSA key pair, its JWKS file, and RS256 tokens minted with it.
//!
//! The API verifies local tokens on exactly the code path it uses for Cognito (RS256 against a
//! JWKS, issuer and audience checked), so there is no second, weaker way in. The key pair lives
//! in a directory (by default [`DEFAULT_KEY_DIR`]) so that the API, started separately, reads the
//! same `jwks.json` that signed the tokens a developer mints; tests use [`LocalJwt::generate`]
//! and write the JWKS wherever they like.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `iss` of every locally minted token, and the API's default `JWT_ISSUER`.
pub const LOCAL_ISSUER: &str = "staleless-local";
/// `aud` of every locally minted token, and the API's default `JWT_AUDIENCE`.
pub const LOCAL_AUDIENCE: &str = "staleless-api";
/// Where the local stack keeps its key pair, relative to the working directory.
pub const DEFAULT_KEY_DIR: &str = ".local/jwt";
/// File name of the private key (PKCS#1 PEM) inside the key directory.
pub const PRIVATE_KEY_FILE: &str = "private.pem";
/// File name of the public key set inside the key directory (the API's `JWT_JWKS_FILE`).
pub const JWKS_FILE: &str = "jwks.json";

/// 2048 bits: the smallest size Cognito and `jsonwebtoken` accept for RS256.
const RSA_BITS: usize = 2048;

/// Why the local key pair could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Key generation, encoding or parsing failed.
    #[error("RSA key: {0}")]
    Key(String),
}

/// An RSA key pair that signs local tokens, with the JWKS that verifies them.
pub struct LocalJwt {
    /// Signs tokens.
    encoding_key: EncodingKey,
    /// The key id in every token header and in the JWKS: a thumbprint of the public key, so a
    /// regenerated pair never reuses an id the API has cached.
    kid: String,
    /// The public key as a JWKS document.
    jwks: Value,
    /// The public key in SPKI PEM, for tests that sign with it as an HMAC secret (the classic
    /// algorithm-confusion attack the API must refuse).
    public_key_pem: String,
    /// The private key in PKCS#1 PEM, as written to [`PRIVATE_KEY_FILE`].
    private_key_pem: String,
}

impl std::fmt::Debug for LocalJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("LocalJwt")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LocalJwt {
    /// Generates a fresh key pair in memory.
    ///
    /// # Errors
    /// [`JwtError::Key`] if the system's random source or the RSA encoder fails.
    pub fn generate() -> Result<Self, JwtError> {
        let private =
            RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).map_err(|err| JwtError::Key(err.to_string()))?;
        Self::from_private_key(&private)
    }

    /// Reads the private key in PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`JwtError::Key`] if `pem` is not such a key.
    pub fn from_private_pem(pem: &str) -> Result<Self, JwtError> {
        let private = RsaPrivateKey::from_pkcs1_pem(pem).map_err(|err| JwtError::Key(err.to_string()))?;
        Self::from_private_key(&private)
    }

    /// Loads the key pair from `dir`, generating and saving one if `dir` holds none, and (re)writes
    /// `dir/jwks.json` so that it always matches the private key.
    ///
    /// # Errors
    /// [`JwtError::Io`] when the directory or files cannot be read or written, [`JwtError::Key`]
    /// when the stored key is not a valid RSA private key.
    pub fn load_or_generate(dir: &Path) -> Result<Self, JwtError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JwtError::Io { path, source }
        };
        let private_path = dir.join(PRIVATE_KEY_FILE);
        let local = match std::fs::read_to_string(&private_path) {
            Ok(pem) => Self::from_private_pem(&pem)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let local = Self::generate()?;
                write_private(&private_path, &local.private_key_pem).map_err(io(&private_path))?;
                local
            }
            Err(err) => return Err(io(&private_path)(err)),
        };
        local.write_jwks(&dir.join(JWKS_FILE))?;
        Ok(local)
    }

    fn from_private_key(private: &RsaPrivateKey) -> Result<Self, JwtError> {
        let key_error = |err: &dyn std::fmt::Display| JwtError::Key(err.to_string());
        let private_key_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|err| key_error(&err))?
            .to_string();
        let public = RsaPublicKey::from(private);
        let public_key_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|err| key_error(&err))?;
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        // RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order.
        let thumbprint = Sha256::digest(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
        let kid = URL_SAFE_NO_PAD.encode(thumbprint);
        let jwks = json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}]});
        let encoding_key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(|err| key_error(&err))?;
        let local = Self {
            encoding_key,
            kid,
            jwks,
            public_key_pem,
            private_key_pem,
        };
        // Sign once now, so that `mint` and `sign` cannot fail later on this key.
        jsonwebtoken::encode(&local.header(&local.kid), &json!({}), &local.encoding_key)
            .map_err(|err| key_error(&err))?;
        Ok(local)
    }

    /// The key id (`kid`) of the signing key.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (`{"keys":[…]}`) that verifies this pair's tokens.
    #[must_use]
    pub const fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The public key in SPKI PEM.
    #[must_use]
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// Writes the JWKS document to `path` (the API's `JWT_JWKS_FILE`).
    ///
    /// # Errors
    /// [`JwtError::Io`] if the file cannot be written.
    pub fn write_jwks(&self, path: &Path) -> Result<(), JwtError> {
        std::fs::write(path, self.jwks.to_string()).map_err(|source| JwtError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Mints a token the local API accepts: `sub`, `email`, `name`, the IdP roles as Cognito's
    /// `custom:roles` (a JSON-array string), issuer [`LOCAL_ISSUER`], audience
    /// [`LOCAL_AUDIENCE`], valid from now for `ttl`.
    #[must_use]
    pub fn mint(&self, sub: &str, roles: Option<&[&str]>, email: &str, name: &str, ttl: Duration) -> String {
        self.sign(&claims(sub, roles, email, name, ttl))
    }

    /// Signs arbitrary claims with RS256 and this pair's `kid`: for tests of expired, premature,
    /// wrongly addressed tokens.
    #[must_use]
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, &self.kid)
    }

    /// Signs arbitrary claims with RS256 under another `kid` (a key the verifier does not know).
    #[must_use]
    pub fn sign_with_kid(&self, claims: &Value, kid: &str) -> String {
        // `from_private_key` signed once already, so the key and header are known to work and
        // serialising a `Value` cannot fail: an empty string here would only ever be refused.
        jsonwebtoken::encode(&self.header(kid), claims, &self.encoding_key).unwrap_or_default()
    }

    fn header(&self, kid: &str) -> Header {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        header
    }
}

/// The claims [`LocalJwt::mint`] signs, for tests that alter one of them before signing.
#[must_use]
///
/// `roles` becomes the `custom:roles` claim (a JSON-array string, as Cognito custom attributes
/// carry it); `None` leaves the claim out, like an access token without custom attributes, so
/// the API uses the roles stored on the profile.
pub fn claims(sub: &str, roles: Option<&[&str]>, email: &str, name: &str, ttl: Duration) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "sub": sub,
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(ttl.as_secs()),
        "email": email,
        "name": name,
        "token_use": "id",
    });
    if let Some(roles) = roles {
        claims["custom:roles"] = Value::String(serde_json::to_string(roles).unwrap_or_else(|_| "[]".to_owned()));
    }
    claims
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Writes the private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(pem.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_pair_is_loaded_back_with_the_same_kid_and_jwks() {
        let dir = std::env::temp_dir().join(format!("staleless-jwt-{}", uuid::Uuid::new_v4().simple()));
        let first = LocalJwt::load_or_generate(&dir).expect("generate");
        let second = LocalJwt::load_or_generate(&dir).expect("load");
        assert_eq!(first.kid(), second.kid());
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(JWKS_FILE)).expect("jwks")).expect("json");
        assert_eq!(&written, first.jwks());
        assert_eq!(written["keys"][0]["kid"], first.kid());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn minted_tokens_carry_the_local_claims_and_kid() {
        let local = LocalJwt::generate().expect("generate");
        let token = local.mint(
            "u-1",
            Some(&["Staff", "Admin"]),
            "ada@example.com",
            "Ada",
            Duration::from_secs(60),
        );
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(local.kid()));
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).expect("claims");
        assert_eq!(claims["iss"], LOCAL_ISSUER);
        assert_eq!(claims["aud"], LOCAL_AUDIENCE);
        assert_eq!(claims["custom:roles"], r#"["Staff","Admin"]"#);
    }

    #[test]
    fn without_roles_a_token_has_no_roles_claim_at_all() {
        // What `infra token` without `--roles` mints: the stored profile's roles apply to it.
        let claims = claims("u-1", None, "ada@example.com", "Ada", Duration::from_secs(60));
        let fields = claims.as_object().expect("object");
        assert!(!fields.contains_key("custom:roles"), "{claims}");
        assert!(!fields.contains_key("cognito:groups"), "{claims}");
        assert!(fields["iat"].is_u64(), "{claims}");
    }
}
