//! Typed configuration, read once from environment variables (or flags) with defaults.
//!
//! The standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) are not here: they
//! are honoured by `staleless_aws::load_from_env`, exactly as every other AWS tool honours them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

pub use staleless_consumer::CacheMode;

/// Everything the API reads from its environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "staleless-api", about = "The staleless API", version)]
pub struct Config {
    /// Address the HTTP server binds.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8081")]
    pub bind_addr: SocketAddr,
    /// Requests running longer than this are answered 408 (and shutdown waits at most this long
    /// for one request).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Request bodies larger than this are refused with 413.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// The tables.
    #[command(flatten)]
    pub tables: TablesConfig,
    /// The caches.
    #[command(flatten)]
    pub cache: CacheConfig,
    /// Token verification.
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// The invalidation queue of this task.
    #[command(flatten)]
    pub channel: ChannelConfig,
    /// Timeouts of AWS calls.
    #[command(flatten)]
    pub aws: AwsTimeouts,
}

pub use staleless_consumer::{AwsTimeouts, SweeperConfig};

/// Where profiles and roles live.
#[derive(Debug, Clone, Args)]
pub struct TablesConfig {
    /// The users table (`PK = USER#<id>`, `SK = PROFILE`).
    #[arg(long, env = "USERS_TABLE", default_value = staleless_protocol::keys::DEFAULT_USERS_TABLE)]
    pub users_table: String,
    /// The app-roles table (`PK = ROLE#<id>`, `SK = DEFINITION`, plus mapping items).
    #[arg(long, env = "ROLES_TABLE", default_value = staleless_protocol::keys::DEFAULT_ROLES_TABLE)]
    pub roles_table: String,
}

/// Cache behaviour and bounds.
#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// `event` (default), `ttl` or `off`.
    #[arg(long, env = "CACHE_MODE", value_enum, default_value = "event")]
    pub cache_mode: CacheMode,
    /// Time to live of a cached profile or role catalogue. In `event` mode a safety net only
    /// (default 3600 s); in `ttl` mode the only freshness there is (default 300 s, the old
    /// system's value).
    #[arg(long, env = "CACHE_TTL_SECS")]
    pub cache_ttl_secs: Option<u64>,
    /// Most profiles kept in memory; the least recently used go first.
    #[arg(long, env = "CACHE_MAX_PROFILES", default_value_t = 100_000)]
    pub cache_max_profiles: u64,
    /// Most verified tokens kept (each until its `exp`).
    #[arg(long, env = "CACHE_MAX_TOKENS", default_value_t = 100_000)]
    pub cache_max_tokens: u64,
}

impl CacheConfig {
    /// The TTL in effect for the configured mode.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        let default = match self.cache_mode {
            CacheMode::Ttl => 300,
            CacheMode::Event | CacheMode::Off => 3_600,
        };
        Duration::from_secs(self.cache_ttl_secs.unwrap_or(default).max(1))
    }
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// JWKS URL (Cognito: `https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json`).
    /// Takes precedence over `JWT_JWKS_FILE`.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// JWKS file, as written by the local stack.
    #[arg(long, env = "JWT_JWKS_FILE", default_value = ".local/jwt/jwks.json")]
    pub jwks_file: PathBuf,
    /// Required `iss`.
    #[arg(long, env = "JWT_ISSUER", default_value = "staleless-local")]
    pub issuer: String,
    /// Required `aud` (ID tokens) or `client_id` (Cognito access tokens).
    #[arg(long, env = "JWT_AUDIENCE", default_value = "staleless-api")]
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30)]
    pub leeway_secs: u64,
    /// A token with an unknown `kid` reloads the key set at most this often, so garbage tokens
    /// cannot make the service hammer the IdP.
    #[arg(long, env = "JWKS_REFRESH_MIN_SECS", default_value_t = 60)]
    pub jwks_refresh_min_secs: u64,
    /// The key set is reloaded this often whatever the tokens say, so a key removed from the
    /// JWKS stops verifying (cached claims included) within this time.
    #[arg(long, env = "JWKS_REFRESH_SECS", default_value_t = 600)]
    pub jwks_refresh_secs: u64,
}

pub use staleless_consumer::SubscriberConfig as ChannelConfig;

impl Config {
    /// The defaults overlaid with the environment, and no command-line flags: what tests start
    /// from before setting the fields they care about.
    ///
    /// # Errors
    /// When an environment variable holds a value of the wrong type.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_parse_from(["staleless-api"])
    }

    /// The request timeout.
    #[must_use]
    pub const fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::try_parse_from(["staleless-api"]).expect("defaults parse");
        assert_eq!(config.tables.users_table, "staleless-users");
        assert_eq!(config.tables.roles_table, "staleless-app-roles");
        assert_eq!(config.channel.queue_name_prefix, "staleless-task");
        assert_eq!(config.cache.cache_mode, CacheMode::Event);
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn ttl_default_depends_on_the_mode_and_an_explicit_value_wins() {
        let mut cache = Config::try_parse_from(["staleless-api", "--cache-mode", "ttl"])
            .expect("parse")
            .cache;
        assert_eq!(cache.ttl(), Duration::from_secs(300));
        cache.cache_mode = CacheMode::Event;
        assert_eq!(cache.ttl(), Duration::from_secs(3_600));
        cache.cache_ttl_secs = Some(5);
        assert_eq!(cache.ttl(), Duration::from_secs(5));
    }

    #[test]
    fn the_bound_defaults_to_fifteen_seconds_and_calls_have_timeouts() {
        let config = Config::try_parse_from(["staleless-api"]).expect("parse");
        assert_eq!(config.channel.staleness_bound(), Duration::from_secs(15));
        let rules = config.channel.trust_rules();
        assert_eq!(rules.writers(), ["staleless"]);
        assert_eq!(rules.future_tolerance(), Duration::from_millis(500));
        let calls = config.aws.for_calls();
        assert_eq!(calls.operation_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(calls.operation_attempt_timeout(), Some(Duration::from_secs(1)));
        let queue = config.aws.for_queue(Duration::from_secs(20));
        assert_eq!(
            queue.operation_timeout(),
            Some(Duration::from_secs(23)),
            "a long poll is not a hang"
        );
    }

    #[test]
    fn the_poll_wait_never_exceeds_the_sqs_maximum() {
        let mut channel = Config::try_parse_from(["staleless-api"]).expect("parse").channel;
        channel.poll_wait_secs = 60;
        assert_eq!(channel.poll_wait(), Duration::from_secs(20));
    }
}
