//! The application state every request and background task shares, and how it is built.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use staleless_consumer::{Caches, ChannelHealth, MetricNames};
use staleless_protocol::Source;

use crate::auth::{AuthSetupError, Authenticator, Identity, JwksSource};
use crate::config::{CacheMode, Config};
use crate::directory::{self, Directory};
use crate::error::AppError;
use crate::metrics as names;
use crate::model::{Profile, claim_is_current};
use crate::permissions::{self, Access};
use crate::store::{DynamoProfiles, DynamoRoles, ProfileStore, RoleStore};

pub use staleless_consumer::ChannelClients;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The key set could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

/// Shared state: cheap to clone (every field is an `Arc` or a handle).
#[derive(Clone)]
pub struct AppState {
    /// Profiles and roles, cached per the mode.
    pub directory: Arc<Directory>,
    /// Token verification and the verified-claims cache.
    pub auth: Arc<Authenticator>,
    /// Whether the invalidation channel vouches for the caches.
    pub channel: Arc<ChannelHealth>,
    /// What the subscriber evicts from: the directory's caches by source, and the verified
    /// tokens with a flush of everything.
    pub caches: Caches,
    /// The configuration, read once.
    pub config: Arc<Config>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Clients for the invalidation subscriber; `None` runs no subscriber.
    pub channel_clients: Option<ChannelClients>,
}

/// A caller resolved from a token: identity, profile (if any) and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the token says.
    pub identity: Arc<Identity>,
    /// The stored profile, `None` before the first sync; its `roles` are the token's roles
    /// claim when the token has one (the IdP's word), else the stored ones.
    pub profile: Option<Arc<Profile>>,
    /// Resolved AppRoles and permissions (of those roles); `None` without a profile.
    pub access: Option<Arc<Access>>,
}

impl AppState {
    /// State over the given stores and verifier.
    #[must_use]
    pub fn new(
        config: Config,
        profiles: Arc<dyn ProfileStore>,
        roles: Arc<dyn RoleStore>,
        auth: Authenticator,
        channel_clients: Option<ChannelClients>,
    ) -> Self {
        let metrics = crate::metrics::install();
        let sources = directory::sources();
        let channel = Arc::new(match config.cache.cache_mode {
            CacheMode::Event => ChannelHealth::new(config.channel.trust_rules(), &sources, MetricNames::default()),
            CacheMode::Ttl | CacheMode::Off => ChannelHealth::not_required(&sources, MetricNames::default()),
        });
        let verify_one_in = match config.cache.cache_mode {
            CacheMode::Event => config.channel.verify_one_in,
            CacheMode::Ttl | CacheMode::Off => 0,
        };
        let directory = Arc::new(Directory::new(
            profiles,
            roles,
            config.cache.cache_mode,
            config.cache.ttl(),
            config.cache.cache_max_profiles,
            Arc::clone(&channel),
            verify_one_in,
        ));
        let auth = Arc::new(auth);
        let caches = Caches::new()
            .register(Source::USERS.as_str(), directory.profile_cache())
            .register(Source::ROLES.as_str(), directory.catalogue_cache())
            .register_with_everything(Arc::clone(&auth) as Arc<dyn staleless_consumer::Evict>);
        Self {
            directory,
            auth,
            channel,
            caches,
            config: Arc::new(config),
            metrics,
            channel_clients,
        }
    }

    /// State on AWS: DynamoDB stores, SQS/SNS clients and the configured key set.
    ///
    /// # Errors
    /// [`StartupError`] when the key set cannot be loaded, or `event` mode has no topic.
    pub async fn from_aws(config: Config, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        crate::metrics::install();
        if config.cache.cache_mode == CacheMode::Event && config.channel.topic_arn.is_none() {
            return Err(StartupError::Config(
                "CACHE_MODE=event needs INVALIDATION_TOPIC_ARN (or use CACHE_MODE=ttl or off)".to_owned(),
            ));
        }
        let auth = Authenticator::new(
            JwksSource::from_config(&config.jwt),
            &config.jwt,
            config.cache.cache_max_tokens,
        )
        .await?;
        let calls = config.aws.for_calls();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .timeout_config(calls.clone())
                .build(),
        );
        let profiles = Arc::new(DynamoProfiles::new(dynamodb.clone(), config.tables.users_table.clone()));
        let roles = Arc::new(DynamoRoles::new(dynamodb, config.tables.roles_table.clone()));
        let clients = ChannelClients::from_sdk(sdk, &config.aws, config.channel.poll_wait());
        Ok(Self::new(config, profiles, roles, auth, Some(clients)))
    }

    /// Resolves a bearer token to a caller: the hot path of every authenticated request.
    ///
    /// # Errors
    /// [`AppError::Unauthorized`] for a refused token; a store error when a read failed.
    pub async fn caller(&self, token: &str) -> Result<Caller, AppError> {
        let identity = self.auth.authenticate(token).await.map_err(AppError::Unauthorized)?;
        let mut profile = self.directory.profile(&identity.user_id).await?;
        // The token's roles claim is the IdP's word: a demotion or promotion takes effect with
        // the first request that carries it, not at the next sync — unless a token issued later
        // already said otherwise (a token from before a demotion stays valid until its `exp`, and
        // must not undo it): then the stored roles, the newer word, decide.
        if let (Some(stored), Some(token_roles)) = (&profile, identity.idp_roles.as_deref())
            && !permissions::same_roles(&stored.roles, token_roles)
        {
            if claim_is_current(stored, identity.issued_at) {
                profile = Some(
                    self.directory
                        .align_roles(stored, token_roles, identity.issued_at)
                        .await,
                );
            } else {
                metrics::counter!(names::PROFILE_ROLES_ALIGNED, "outcome" => "superseded").increment(1);
            }
        }
        let access = match &profile {
            Some(profile) => Some(self.directory.access(profile).await?),
            None => None,
        };
        Ok(Caller {
            identity,
            profile,
            access,
        })
    }
}
