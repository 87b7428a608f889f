//! The trusted cache: a [`KeyedCache`] served only while its source's ticks vouch for it.
//!
//! One rule decides every read ([`TrustedCache::read_path`]): in `event` mode the cache answers
//! while its source is trusted and is bypassed — read through, concurrent readers of a key
//! sharing one load, nothing stored — past the bound; the subscriber flushes it before trust
//! returns. In `ttl` mode it always answers (freshness is the TTL); in `off` mode every read
//! goes to the loader. Reports of which path reads take use the same rule.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use staleless_protocol::KeyVersion;

use crate::cache::{CacheStats, FillAborted, KeyedCache};
use crate::caches::Evict;
use crate::health::ChannelHealth;

/// How a service's caches are kept fresh (`CACHE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Invalidated by the data's own changes, trusted only while ticks prove the path (the
    /// guarantee).
    Event,
    /// Kept until the TTL: freshness is the TTL (the baseline it is measured against).
    Ttl,
    /// No cache: every read goes to the table.
    Off,
}

impl CacheMode {
    /// The mode as configured.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Ttl => "ttl",
            Self::Off => "off",
        }
    }
}

/// Which path a read takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPath {
    /// Answered from the cache (filled on a miss).
    Cache,
    /// Read from the table, not stored.
    Bypass,
}

/// A keyed cache of one source, served only while that source is trusted (see the module docs).
pub struct TrustedCache<K, V, E> {
    /// The entries, fills and their race guard.
    cache: KeyedCache<K, V, E>,
    /// The trust its reads follow.
    health: Arc<ChannelHealth>,
    /// The source whose ticks vouch for it.
    source: String,
    /// What it does.
    mode: CacheMode,
    /// Reads that skipped it because its source was not trusted.
    bypassed: metrics::Counter,
}

impl<K, V, E> Clone for TrustedCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            health: Arc::clone(&self.health),
            source: self.source.clone(),
            mode: self.mode,
            bypassed: self.bypassed.clone(),
        }
    }
}

impl<K, V, E> TrustedCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<FillAborted> + 'static,
{
    /// A cache of `source` (named in metrics as the cache `health` says the source vouches for)
    /// holding at most `max_entries`, each at most `ttl`.
    #[must_use]
    pub fn new(health: Arc<ChannelHealth>, source: &str, mode: CacheMode, max_entries: u64, ttl: Duration) -> Self {
        let name = health.cache_of(source).unwrap_or(source).to_owned();
        let names = health.metric_names();
        let cache = KeyedCache::new(&name, max_entries, ttl, names);
        let bypassed = metrics::counter!(names.cache_bypassed_reads.clone(), "cache" => name);
        Self {
            cache,
            health,
            source: source.to_owned(),
            mode,
            bypassed,
        }
    }

    /// The path reads take now: the one rule of the module docs.
    #[must_use]
    pub fn read_path(&self) -> ReadPath {
        let served = match self.mode {
            CacheMode::Event => self.health.is_trusted(&self.source),
            CacheMode::Ttl => true,
            CacheMode::Off => false,
        };
        if served { ReadPath::Cache } else { ReadPath::Bypass }
    }

    /// The value of `key`: from the cache when [`Self::read_path`] says so (filling it through
    /// `load` on a miss), else from `load`.
    ///
    /// # Errors
    /// The load's error; nothing is cached then.
    pub async fn get<Q, F, Fut>(&self, key: &Q, load: F) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        match (self.read_path(), self.mode) {
            (ReadPath::Cache, _) => self.cache.get_or_load(key, load).await,
            (ReadPath::Bypass, CacheMode::Event) => {
                self.bypassed.increment(1);
                self.cache.load_uncached(key, load).await
            }
            (ReadPath::Bypass, _) => load().await,
        }
    }

    /// Evicts `key` (a write made by this task: it reads its own write next).
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.cache.invalidate(key);
    }

    /// Evicts everything.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// The mode.
    #[must_use]
    pub const fn mode(&self) -> CacheMode {
        self.mode
    }

    /// The source.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Entries, hits, misses and fills.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// A cache keyed by the ids messages carry evicts each changed id.
impl<V, E> Evict for TrustedCache<String, V, E>
where
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<FillAborted> + 'static,
{
    fn evict(&self, keys: &[KeyVersion]) -> usize {
        for key in keys {
            self.cache.invalidate(key.id.as_str());
        }
        keys.len()
    }

    fn flush(&self) {
        self.cache.invalidate_all();
    }
}
