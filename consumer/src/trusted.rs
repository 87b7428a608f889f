//! The trusted cache: a [`KeyedCache`] served only while its source's ticks vouch for it.
//!
//! One rule decides every read ([`TrustedCache::read_path`]): in `event` mode the cache answers
//! while its source is trusted and is bypassed — read through, concurrent readers of a key
//! sharing one load, nothing stored — past the bound; the subscriber flushes it before trust
//! returns. In `ttl` mode it always answers (freshness is the TTL); in `off` mode every read
//! goes to the loader. Reports of which path reads take use the same rule.
//!
//! **Sampled verification.** With [`TrustedCache::verified`], one cache hit in `n` is re-read by
//! the same loader in a task of its own (never on the caller's path) and compared with what was
//! served: `<prefix>_verified_hits_total{cache, result="fresh"|"stale"}` counts the outcomes, and
//! a stale entry is evicted and logged with its key and how long it had been cached. The ratio
//! is the cache's measured freshness ("how many nines"), not the design's promise. A re-read that
//! fails, or that an invalidation of its key overtook, says nothing and is not counted. The
//! loader must read consistently (`ConsistentRead`), or replication lag would count as stale.

use std::borrow::Borrow;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use staleless_protocol::KeyVersion;

use crate::cache::{CacheStats, FillAborted, KeyedCache, Verdict};
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

/// Compares a served value with a re-read one.
type SameValue<V> = Arc<dyn Fn(&V, &V) -> bool + Send + Sync>;

/// One hit in `one_in` re-read and compared (see the module docs).
struct Verification<V> {
    /// The sampling period, in hits.
    one_in: u64,
    /// Hits seen, for the sampling.
    hits: AtomicU64,
    /// Whether two values are the same.
    same: SameValue<V>,
    /// Verified fresh, and their counter.
    fresh: AtomicU64,
    fresh_metric: metrics::Counter,
    /// Verified stale (and evicted), and their counter.
    stale: AtomicU64,
    stale_metric: metrics::Counter,
}

impl<V> Verification<V> {
    fn sample(&self) -> bool {
        self.hits.fetch_add(1, Ordering::Relaxed) % self.one_in == self.one_in - 1
    }
}

/// Outcomes of the sampled verification of one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStats {
    /// Hits re-read and found as served.
    pub fresh: u64,
    /// Hits re-read and found changed: evicted.
    pub stale: u64,
}

/// A keyed cache of one source, served only while that source is trusted (see the module docs).
pub struct TrustedCache<K, V, E> {
    /// The entries, fills and their race guard.
    cache: KeyedCache<K, V, E>,
    /// The trust its reads follow.
    health: Arc<ChannelHealth>,
    /// The source whose ticks vouch for it.
    source: String,
    /// Its name in metrics (the cache its source vouches for).
    name: String,
    /// What it does.
    mode: CacheMode,
    /// Reads that skipped it because its source was not trusted.
    bypassed: metrics::Counter,
    /// The sampled verification of its hits, when enabled.
    verification: Option<Arc<Verification<V>>>,
}

impl<K, V, E> Clone for TrustedCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            health: Arc::clone(&self.health),
            source: self.source.clone(),
            name: self.name.clone(),
            mode: self.mode,
            bypassed: self.bypassed.clone(),
            verification: self.verification.clone(),
        }
    }
}

impl<K, V, E> TrustedCache<K, V, E>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + 'static,
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
        let bypassed = metrics::counter!(names.cache_bypassed_reads.clone(), "cache" => name.clone());
        Self {
            cache,
            health,
            source: source.to_owned(),
            name,
            mode,
            bypassed,
            verification: None,
        }
    }

    /// Re-reads one hit in `one_in` off the caller's path and compares it with `same` (see the
    /// module docs); `0` leaves verification off.
    #[must_use]
    pub fn verified(mut self, one_in: u64, same: impl Fn(&V, &V) -> bool + Send + Sync + 'static) -> Self {
        if one_in == 0 {
            self.verification = None;
            return self;
        }
        let names = self.health.metric_names();
        let counter = |result: &'static str| metrics::counter!(names.verified_hits.clone(), "cache" => self.name.clone(), "result" => result);
        self.verification = Some(Arc::new(Verification {
            one_in,
            hits: AtomicU64::new(0),
            same: Arc::new(same),
            fresh: AtomicU64::new(0),
            fresh_metric: counter("fresh"),
            stale: AtomicU64::new(0),
            stale_metric: counter("stale"),
        }));
        self
    }

    /// Outcomes of the sampled verification so far; `None` when it is off.
    #[must_use]
    pub fn verification_stats(&self) -> Option<VerificationStats> {
        self.verification.as_ref().map(|verification| VerificationStats {
            fresh: verification.fresh.load(Ordering::Relaxed),
            stale: verification.stale.load(Ordering::Relaxed),
        })
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
            (ReadPath::Cache, _) => match &self.verification {
                None => self.cache.get_or_load(key, load).await,
                Some(verification) => {
                    let (value, check) = self
                        .cache
                        .get_or_load_sampled(key, load, || verification.sample())
                        .await?;
                    if let Some((entry, reread)) = check {
                        let (cache, verification) = (self.cache.clone(), Arc::clone(verification));
                        let key = key.to_owned();
                        tokio::spawn(async move {
                            let same = Arc::clone(&verification.same);
                            let verdict = cache.verify(key.clone(), entry, reread, |a, b| same(a, b)).await;
                            match verdict {
                                Some(Verdict::Fresh) => {
                                    verification.fresh.fetch_add(1, Ordering::Relaxed);
                                    verification.fresh_metric.increment(1);
                                }
                                Some(Verdict::Stale { age }) => {
                                    verification.stale.fetch_add(1, Ordering::Relaxed);
                                    verification.stale_metric.increment(1);
                                    tracing::warn!(key = ?key, age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX), "a cache hit was stale: the store holds another value; evicted");
                                }
                                None => {}
                            }
                        });
                    }
                    Ok(value)
                }
            },
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

    /// What the cache holds for `key`, whatever the trust, counting nothing (reports and
    /// tests; reads go through [`Self::get`]).
    #[must_use]
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.peek(key)
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{MetricNames, SourceSpec, TrustRules};

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Down;

    impl From<FillAborted> for Down {
        fn from(_: FillAborted) -> Self {
            Self
        }
    }

    /// A store of one name per user, counting reads.
    #[derive(Default)]
    struct Store {
        names: Mutex<Vec<(String, String)>>,
        reads: AtomicU64,
    }

    impl Store {
        fn set(&self, user: &str, name: &str) {
            let mut names = self.names.lock().expect("lock");
            names.retain(|(known, _)| known != user);
            names.push((user.to_owned(), name.to_owned()));
        }

        fn load(self: &Arc<Self>, user: &str) -> impl Future<Output = Result<String, Down>> + Send + 'static {
            let (store, user) = (Arc::clone(self), user.to_owned());
            async move {
                store.reads.fetch_add(1, Ordering::Relaxed);
                let names = store.names.lock().expect("lock");
                names
                    .iter()
                    .find(|(known, _)| *known == user)
                    .map(|(_, name)| name.clone())
                    .ok_or(Down)
            }
        }
    }

    fn health(trusted: bool) -> Arc<ChannelHealth> {
        let health = Arc::new(ChannelHealth::new(
            TrustRules::with_bound(Duration::from_secs(60)),
            &[SourceSpec::new("users", "profiles")],
            MetricNames::default(),
        ));
        if trusted {
            health.mark_subscribed("q");
            health.record_ticks_now();
        }
        health
    }

    fn cache(health: Arc<ChannelHealth>, mode: CacheMode) -> TrustedCache<String, String, Down> {
        TrustedCache::new(health, "users", mode, 100, Duration::from_secs(3_600))
    }

    async fn until_verified(cache: &TrustedCache<String, String, Down>, total: u64) -> VerificationStats {
        for _ in 0..500 {
            let stats = cache.verification_stats().expect("verification on");
            if stats.fresh + stats.stale >= total {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("verifications did not complete");
    }

    #[test]
    fn one_rule_decides_the_read_path_in_every_mode() {
        let (trusted, untrusted) = (health(true), health(false));
        assert_eq!(
            cache(Arc::clone(&trusted), CacheMode::Event).read_path(),
            ReadPath::Cache
        );
        assert_eq!(
            cache(Arc::clone(&untrusted), CacheMode::Event).read_path(),
            ReadPath::Bypass
        );
        assert_eq!(
            cache(Arc::clone(&untrusted), CacheMode::Ttl).read_path(),
            ReadPath::Cache
        );
        assert_eq!(cache(trusted, CacheMode::Off).read_path(), ReadPath::Bypass);
    }

    #[tokio::test]
    async fn reads_follow_the_path_they_report() {
        let store = Arc::new(Store::default());
        store.set("u-1", "Ada");
        for (mode, trusted, expected_reads) in [
            (CacheMode::Event, true, 1),
            (CacheMode::Event, false, 3),
            (CacheMode::Ttl, false, 1),
            (CacheMode::Off, true, 3),
        ] {
            store.reads.store(0, Ordering::Relaxed);
            let cache = cache(health(trusted), mode);
            for _ in 0..3 {
                assert_eq!(cache.get("u-1", || store.load("u-1")).await, Ok("Ada".to_owned()));
            }
            assert_eq!(
                store.reads.load(Ordering::Relaxed),
                expected_reads,
                "{mode:?}, trusted {trusted}"
            );
        }
    }

    #[tokio::test]
    async fn a_sampled_hit_that_the_store_contradicts_is_counted_stale_and_evicted() {
        let store = Arc::new(Store::default());
        store.set("u-1", "Ada");
        let cache = cache(health(true), CacheMode::Event).verified(1, |a, b| a == b);
        assert_eq!(cache.get("u-1", || store.load("u-1")).await, Ok("Ada".to_owned()));
        // A hit, re-read in the background: the store agrees.
        assert_eq!(cache.get("u-1", || store.load("u-1")).await, Ok("Ada".to_owned()));
        assert_eq!(
            until_verified(&cache, 1).await,
            VerificationStats { fresh: 1, stale: 0 }
        );
        // The store changes and no invalidation comes (a lost message): the hit serves the old
        // value, its verification finds it out and evicts it.
        store.set("u-1", "Grace");
        assert_eq!(cache.get("u-1", || store.load("u-1")).await, Ok("Ada".to_owned()));
        assert_eq!(
            until_verified(&cache, 2).await,
            VerificationStats { fresh: 1, stale: 1 }
        );
        assert_eq!(cache.get("u-1", || store.load("u-1")).await, Ok("Grace".to_owned()));
    }

    #[tokio::test]
    async fn one_hit_in_n_is_verified_and_zero_turns_it_off() {
        let store = Arc::new(Store::default());
        store.set("u-1", "Ada");
        let cache = cache(health(true), CacheMode::Event).verified(4, |a, b| a == b);
        cache.get("u-1", || store.load("u-1")).await.expect("fill");
        for _ in 0..8 {
            cache.get("u-1", || store.load("u-1")).await.expect("hit");
        }
        assert_eq!(
            until_verified(&cache, 2).await,
            VerificationStats { fresh: 2, stale: 0 }
        );
        assert_eq!(store.reads.load(Ordering::Relaxed), 3, "one fill and two re-reads");
        let off = cache.clone().verified(0, |a, b| a == b);
        assert_eq!(off.verification_stats(), None);
    }
}
