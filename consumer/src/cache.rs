//! A keyed cache whose fills cannot outlive an invalidation that raced them.
//!
//! The classic stale-cache race: request A misses, reads the old item, the item changes, the
//! invalidation arrives and evicts nothing (A has not stored yet), then A stores the old value,
//! which now lives until the TTL. [`KeyedCache`] closes it with a per-key generation, the
//! technique of Facebook's memcache leases:
//!
//! - every invalidation bumps an epoch and, while fills are running, records it for the key;
//! - a fill notes the epoch when it starts, and is stored only if [`may_keep_fill`] says no
//!   invalidation of its key (and no flush) came after that; the check and the insert happen
//!   under the same lock as the invalidation, so there is no window between them;
//! - an invalidation also detaches the key's in-flight fill, so requests arriving after it start
//!   a new read instead of joining one that may have read the old item.
//!
//! Concurrent misses for one key share one load (single flight). The load runs as its own task,
//! so a caller that gives up (client gone, request timeout) does not strand the others.
//! Entries live in a `moka` cache bounded by size and a TTL, which stays as a safety net.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;

use crate::metrics::MetricNames;

/// A fill's task ended without a result (it panicked or the runtime shut down): what every
/// reader that joined it gets, converted into the loader's error type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache fill did not complete: {0}")]
pub struct FillAborted(pub String);

/// Whether a fill that started at epoch `fill_started` may be stored, given the epoch of the
/// last invalidation of its key (if one is still recorded) and of the last flush.
///
/// Epochs only grow; an invalidation at epoch `e` happened after a fill that started at `s`
/// exactly when `e > s`.
#[must_use]
pub fn may_keep_fill(fill_started: u64, key_invalidated_at: Option<u64>, flushed_at: u64) -> bool {
    flushed_at <= fill_started && key_invalidated_at.is_none_or(|at| at <= fill_started)
}

/// Entries, hits and misses of one cache, for `GET /admin/cache/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Entries held now.
    pub entries: u64,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that were not (including those that joined another reader's fill).
    pub misses: u64,
    /// Loads from the store.
    pub fills: u64,
    /// Loads not stored because an invalidation or flush raced them.
    pub discarded_fills: u64,
    /// Keys evicted by invalidations.
    pub invalidations: u64,
    /// Whole-cache flushes.
    pub flushes: u64,
}

/// Atomic counters behind [`CacheStats`], with their Prometheus twins.
struct Counters {
    /// Local counts, per instance (Prometheus counts are per process).
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    discarded_fills: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    /// Registered once, so the hit path is an atomic add and not a registry lookup.
    hits_metric: metrics::Counter,
    misses_metric: metrics::Counter,
    fills_metric: metrics::Counter,
    discarded_metric: metrics::Counter,
    invalidations_metric: metrics::Counter,
    fill_seconds: metrics::Histogram,
}

impl Counters {
    fn new(names: &MetricNames, cache: &str) -> Self {
        let cache = cache.to_owned();
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            discarded_fills: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            hits_metric: metrics::counter!(names.cache_hits.clone(), "cache" => cache.clone()),
            misses_metric: metrics::counter!(names.cache_misses.clone(), "cache" => cache.clone()),
            fills_metric: metrics::counter!(names.cache_fills.clone(), "cache" => cache.clone()),
            discarded_metric: metrics::counter!(names.cache_fills_discarded.clone(), "cache" => cache.clone()),
            invalidations_metric: metrics::counter!(names.cache_invalidations.clone(), "cache" => cache.clone()),
            fill_seconds: metrics::histogram!(names.cache_fill_seconds.clone(), "cache" => cache),
        }
    }
}

type FillFuture<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

/// A load in progress that new readers of its key may join.
struct Flight<V, E> {
    /// Tells this flight apart from a later one for the same key.
    id: u64,
    /// The load's result, shared by every reader that joined.
    result: FillFuture<V, E>,
}

/// Everything a fill's keep-or-discard decision depends on; one lock, taken on misses and
/// invalidations only, never on hits.
struct FillState<K, V, E> {
    /// Bumped by every invalidation and flush.
    epoch: u64,
    /// The epoch of the last flush.
    flushed_at: u64,
    /// Epoch of each key's last invalidation, kept only while a fill that started before it
    /// may still complete (see `prune`).
    invalidated: HashMap<K, u64>,
    /// Start epochs of running fills (a multiset), so `invalidated` can be pruned.
    running: BTreeMap<u64, usize>,
    /// The flight each key's new readers join.
    flights: HashMap<K, Flight<V, E>>,
    /// Source of flight ids.
    next_flight: u64,
}

impl<K: Hash + Eq, V, E> FillState<K, V, E> {
    fn finish(&mut self, started: u64) {
        if let Some(count) = self.running.get_mut(&started) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(&started);
            }
        }
        self.prune();
    }

    /// Forgets invalidations no running fill can be affected by: those at or before the
    /// oldest running fill's start (and every one when nothing runs).
    fn prune(&mut self) {
        match self.running.keys().next() {
            None => self.invalidated.clear(),
            Some(&oldest) => self.invalidated.retain(|_, at| *at > oldest),
        }
    }
}

/// A cached value and when it was stored (for the age of a stale one).
#[derive(Clone)]
pub(crate) struct Entry<V> {
    value: V,
    stored_at: Instant,
}

/// What re-reading a cache hit found (see [`KeyedCache::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The store holds what the cache served.
    Fresh,
    /// The store holds something else: the entry, stored this long ago, was evicted.
    Stale {
        /// How long the entry had been cached.
        age: Duration,
    },
}

struct Inner<K, V, E> {
    /// Name in metrics and stats (`profiles`, `roles`).
    name: String,
    /// The entries, each with the moment its fill was stored.
    entries: moka::sync::Cache<K, Entry<V>>,
    /// Generations and flights.
    state: Mutex<FillState<K, V, E>>,
    /// Hits, misses, fills.
    counters: Counters,
}

impl<K, V, E> Inner<K, V, E> {
    fn lock(&self) -> MutexGuard<'_, FillState<K, V, E>> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing the cache, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A cache of `V` by `K` with single-flight loads and race-safe fills (see the module docs);
/// loads fail with `E`.
pub struct KeyedCache<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

impl<K, V, E> Clone for KeyedCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, E> KeyedCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + From<FillAborted> + 'static,
{
    /// A cache named `name` (the `cache` label of its metrics, named by `names`) of at most
    /// `max_entries`, each kept at most `ttl`.
    #[must_use]
    pub fn new(name: &str, max_entries: u64, ttl: Duration, names: &MetricNames) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                entries: moka::sync::Cache::builder()
                    .max_capacity(max_entries)
                    .time_to_live(ttl)
                    .build(),
                state: Mutex::new(FillState {
                    epoch: 0,
                    flushed_at: 0,
                    invalidated: HashMap::new(),
                    running: BTreeMap::new(),
                    flights: HashMap::new(),
                    next_flight: 0,
                }),
                counters: Counters::new(names, name),
            }),
        }
    }

    /// The cached value, counting nothing (reports and tests).
    #[must_use]
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.entries.get(key).map(|entry| entry.value)
    }

    /// The cached value, counting a hit or a miss.
    #[must_use]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.hit(key).map(|entry| entry.value)
    }

    /// The cached entry, counting a hit or a miss.
    fn hit<Q>(&self, key: &Q) -> Option<Entry<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let counters = &self.inner.counters;
        if let Some(entry) = self.inner.entries.get(key) {
            counters.hits.fetch_add(1, Ordering::Relaxed);
            counters.hits_metric.increment(1);
            Some(entry)
        } else {
            counters.misses.fetch_add(1, Ordering::Relaxed);
            counters.misses_metric.increment(1);
            None
        }
    }

    /// The cached value, or the result of `load` (shared with concurrent readers of `key`),
    /// stored unless an invalidation of `key` or a flush happened after the load started.
    ///
    /// # Errors
    /// The load's error, shared by every reader that joined it; nothing is cached then.
    pub async fn get_or_load<Q, F, Fut>(&self, key: &Q, load: F) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        self.fill(key, load).await
    }

    /// [`Self::get_or_load`] from a hit on: the value, and — when `sample` says so for a hit —
    /// a re-read of it by `load`, to compare off the caller's path ([`Self::verify`]).
    pub(crate) async fn get_or_load_sampled<Q, F, Fut>(
        &self,
        key: &Q,
        load: F,
        sample: impl FnOnce() -> bool,
    ) -> Result<(V, Option<(Entry<V>, Fut)>), E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(entry) = self.hit(key) {
            let check = sample().then(|| (entry.clone(), load()));
            return Ok((entry.value, check));
        }
        Ok((self.fill(key, load).await?, None))
    }

    /// The miss path of [`Self::get_or_load`]: join the key's flight or start one.
    async fn fill<Q, F, Fut>(&self, key: &Q, load: F) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let flight = {
            let mut state = self.inner.lock();
            if let Some(flight) = state.flights.get(key) {
                flight.result.clone()
            } else if let Some(entry) = self.inner.entries.get(key) {
                // A fill landed between the lock-free look-up and this lock.
                return Ok(entry.value);
            } else {
                self.start_flight(&mut state, key, load(), true)
            }
        };
        flight.await
    }

    /// Reads through, for a cache that must not be served now: the result of `load`, shared
    /// with concurrent readers of `key` (one store read however many requests wait, no
    /// stampede), and never stored.
    ///
    /// # Errors
    /// The load's error, shared by every reader that joined it.
    pub async fn load_uncached<Q, F, Fut>(&self, key: &Q, load: F) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let flight = {
            let mut state = self.inner.lock();
            match state.flights.get(key) {
                // Any flight of this key started after the last invalidation of it (invalidations
                // detach flights), so its consistent read is as fresh as a new one would be.
                Some(flight) => flight.result.clone(),
                None => self.start_flight(&mut state, key, load(), false),
            }
        };
        flight.await
    }

    /// Starts a load of `key` that new readers join; `keep` says whether its result may be
    /// stored (subject to [`may_keep_fill`]).
    fn start_flight<Q, Fut>(&self, state: &mut FillState<K, V, E>, key: &Q, load: Fut, keep: bool) -> FillFuture<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let started = state.epoch;
        *state.running.entry(started).or_insert(0) += 1;
        state.next_flight += 1;
        let id = state.next_flight;
        let result = self.spawn_fill(key.to_owned(), id, started, load, keep);
        state.flights.insert(
            key.to_owned(),
            Flight {
                id,
                result: result.clone(),
            },
        );
        result
    }

    /// Runs one load as a task and settles it: stored (if `keep` and no invalidation raced it)
    /// or discarded, flight retired.
    fn spawn_fill<Fut>(&self, key: K, id: u64, started: u64, load: Fut, keep: bool) -> FillFuture<V, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let result = load.await;
            inner.counters.fill_seconds.record(began.elapsed().as_secs_f64());
            inner.counters.fills.fetch_add(1, Ordering::Relaxed);
            inner.counters.fills_metric.increment(1);
            let mut state = inner.lock();
            if state.flights.get(&key).is_some_and(|flight| flight.id == id) {
                state.flights.remove(&key);
            }
            if let Ok(value) = &result
                && keep
            {
                if may_keep_fill(started, state.invalidated.get(&key).copied(), state.flushed_at) {
                    // Inserted under the lock an invalidation takes, so it cannot slip in between
                    // this check and this insert.
                    inner.entries.insert(
                        key,
                        Entry {
                            value: value.clone(),
                            stored_at: Instant::now(),
                        },
                    );
                } else {
                    inner.counters.discarded_fills.fetch_add(1, Ordering::Relaxed);
                    inner.counters.discarded_metric.increment(1);
                    tracing::debug!(cache = %inner.name, "fill raced an invalidation and was not kept");
                }
            }
            state.finish(started);
            result
        });
        async move {
            task.await
                .unwrap_or_else(|err| Err(E::from(FillAborted(err.to_string()))))
        }
        .boxed()
        .shared()
    }

    /// Re-reads the entry `cached` of `key` with `load` and compares it with `same`: a stale
    /// entry is evicted (as an invalidation would) and reported with its age. `None` when the
    /// re-read failed, or an invalidation or flush of the key came while it ran (it then says
    /// nothing about what was served).
    pub(crate) async fn verify<Fut>(
        &self,
        key: K,
        cached: Entry<V>,
        load: Fut,
        same: impl Fn(&V, &V) -> bool,
    ) -> Option<Verdict>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let started = {
            let mut state = self.inner.lock();
            let started = state.epoch;
            *state.running.entry(started).or_insert(0) += 1;
            started
        };
        let read = load.await;
        let undisturbed = {
            let mut state = self.inner.lock();
            let undisturbed = may_keep_fill(started, state.invalidated.get(&key).copied(), state.flushed_at);
            state.finish(started);
            undisturbed
        };
        let current = read.ok().filter(|_| undisturbed)?;
        if same(&cached.value, &current) {
            return Some(Verdict::Fresh);
        }
        self.invalidate(&key);
        Some(Verdict::Stale {
            age: cached.stored_at.elapsed(),
        })
    }

    /// Evicts `key`, makes any running fill of it unkeepable and detaches that fill from new
    /// readers.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut state = self.inner.lock();
        state.epoch += 1;
        if !state.running.is_empty() {
            let epoch = state.epoch;
            state.invalidated.insert(key.to_owned(), epoch);
        }
        state.flights.remove(key);
        self.inner.entries.invalidate(key);
        self.inner.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.invalidations_metric.increment(1);
    }

    /// Evicts everything and makes every running fill unkeepable.
    pub fn invalidate_all(&self) {
        let mut state = self.inner.lock();
        state.epoch += 1;
        state.flushed_at = state.epoch;
        state.invalidated.clear();
        state.flights.clear();
        self.inner.entries.invalidate_all();
        self.inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Current counts.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        // moka counts lazily; settle pending work so `entries` is exact for operators and tests.
        self.inner.entries.run_pending_tasks();
        let counters = &self.inner.counters;
        CacheStats {
            entries: self.inner.entries.entry_count(),
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            fills: counters.fills.load(Ordering::Relaxed),
            discarded_fills: counters.discarded_fills.load(Ordering::Relaxed),
            invalidations: counters.invalidations.load(Ordering::Relaxed),
            flushes: counters.flushes.load(Ordering::Relaxed),
        }
    }

    /// Bookkeeping entries held for running fills (for tests: it must drain to zero).
    #[cfg(test)]
    fn tracked_invalidations(&self) -> usize {
        self.inner.lock().invalidated.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    /// A loader's error, as a service would have one.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum StoreError {
        Unavailable(String),
    }

    impl From<FillAborted> for StoreError {
        fn from(aborted: FillAborted) -> Self {
            Self::Unavailable(aborted.to_string())
        }
    }

    fn cache() -> KeyedCache<String, &'static str, StoreError> {
        KeyedCache::new("test", 100, Duration::from_secs(3_600), &MetricNames::default())
    }

    fn key(id: &str) -> String {
        id.to_owned()
    }

    /// A fill of `id` that has read `value` and is held until the returned sender fires: the
    /// interleaving every race test needs. Returns once the load is running.
    async fn held_fill(
        cache: &KeyedCache<String, &'static str, StoreError>,
        id: &str,
        value: &'static str,
    ) -> (
        tokio::task::JoinHandle<Result<&'static str, StoreError>>,
        oneshot::Sender<()>,
    ) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let reader = {
            let cache = cache.clone();
            let id = key(id);
            tokio::spawn(async move {
                cache
                    .get_or_load(&id, || async move {
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok(value)
                    })
                    .await
            })
        };
        started_rx.await.expect("load started");
        (reader, release_tx)
    }

    #[test]
    fn the_keep_rule() {
        assert!(may_keep_fill(5, None, 0));
        assert!(may_keep_fill(5, Some(5), 5), "invalidated before the fill started");
        assert!(!may_keep_fill(5, Some(6), 0), "invalidated while the fill ran");
        assert!(!may_keep_fill(5, None, 6), "flushed while the fill ran");
    }

    /// The race of the module docs, made deterministic: the load reads the old value and is
    /// held; the invalidation is applied; then the load completes. The caller still gets what
    /// it read, but the cache does not keep it and the next read loads the new value.
    #[tokio::test]
    async fn a_fill_that_raced_an_invalidation_is_not_kept() {
        let cache = cache();
        let (slow_reader, release_tx) = held_fill(&cache, "u-1", "old").await;
        cache.invalidate(&key("u-1"));
        release_tx.send(()).expect("release");
        assert_eq!(slow_reader.await.expect("join").expect("load"), "old");

        assert_eq!(cache.get(&key("u-1")), None, "the raced fill must not be cached");
        let stats = cache.stats();
        assert_eq!((stats.fills, stats.discarded_fills, stats.entries), (1, 1, 0));
        let fresh = cache
            .get_or_load(&key("u-1"), || async { Ok("new") })
            .await
            .expect("load");
        assert_eq!(fresh, "new");
        assert_eq!(cache.get(&key("u-1")), Some("new"));
        assert_eq!(cache.tracked_invalidations(), 0, "bookkeeping drains when no fill runs");
    }

    #[tokio::test]
    async fn a_flush_during_a_fill_also_discards_it() {
        let cache = cache();
        let (reader, release_tx) = held_fill(&cache, "u-1", "old").await;
        cache.invalidate_all();
        release_tx.send(()).expect("release");
        reader.await.expect("join").expect("load");
        assert_eq!(cache.get(&key("u-1")), None);
    }

    #[tokio::test]
    async fn an_invalidation_of_another_key_does_not_discard_the_fill() {
        let cache = cache();
        let (reader, release_tx) = held_fill(&cache, "u-1", "value").await;
        cache.invalidate(&key("u-2"));
        release_tx.send(()).expect("release");
        reader.await.expect("join").expect("load");
        assert_eq!(cache.get(&key("u-1")), Some("value"));
    }

    #[tokio::test]
    async fn readers_after_an_invalidation_do_not_join_the_old_fill() {
        let cache = cache();
        let (old_reader, release_old_tx) = held_fill(&cache, "u-1", "old").await;
        cache.invalidate(&key("u-1"));
        // Arrives after the invalidation: must get a new read, not the old flight's result.
        let new = cache
            .get_or_load(&key("u-1"), || async { Ok("new") })
            .await
            .expect("load");
        assert_eq!(new, "new");
        release_old_tx.send(()).expect("release");
        assert_eq!(old_reader.await.expect("join").expect("load"), "old");
        assert_eq!(
            cache.get(&key("u-1")),
            Some("new"),
            "the old fill must not overwrite the new one"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let cache = cache();
        let loads = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut readers = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            let mut release = release_rx.clone();
            readers.push(tokio::spawn(async move {
                cache
                    .get_or_load(&key("u-1"), move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|go| *go).await;
                        Ok("value")
                    })
                    .await
            }));
        }
        // Every reader has registered once the first load is waiting and the rest joined it.
        while cache.stats().misses < 16 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).expect("release");
        for reader in readers {
            assert_eq!(reader.await.expect("join").expect("load"), "value");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn uncached_reads_share_one_load_and_store_nothing() {
        let cache = cache();
        let loads = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut readers = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            let mut release = release_rx.clone();
            readers.push(tokio::spawn(async move {
                cache
                    .load_uncached(&key("u-1"), move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|go| *go).await;
                        Ok("value")
                    })
                    .await
            }));
        }
        while loads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Let every reader reach the flight before it completes.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).expect("release");
        for reader in readers {
            assert_eq!(reader.await.expect("join").expect("load"), "value");
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one store read for every concurrent reader"
        );
        assert_eq!(cache.get(&key("u-1")), None, "a read-through is never stored");
        assert_eq!(cache.stats().fills, 1);
    }

    #[tokio::test]
    async fn a_failed_load_is_shared_and_not_cached() {
        let cache = cache();
        let err = cache
            .get_or_load(&key("u-1"), || async { Err(StoreError::Unavailable("down".into())) })
            .await
            .expect_err("fails");
        assert!(matches!(err, StoreError::Unavailable(_)));
        assert_eq!(
            cache
                .get_or_load(&key("u-1"), || async { Ok("up") })
                .await
                .expect("load"),
            "up"
        );
    }
}
