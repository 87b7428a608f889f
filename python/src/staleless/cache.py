"""Keyed caches whose fills cannot outlive an invalidation that raced them, and the trusted cache
served only while its source's ticks vouch for it (``consumer/src/cache.rs``, ``trusted.rs``).

**The race guard.** Request A misses, reads the old item, the item changes, the invalidation
arrives and evicts nothing (A has not stored yet), then A stores the old value. :class:`KeyedCache`
closes it with a per-key generation (memcache leases):

- every invalidation bumps an epoch and, while fills are running, records it for the key;
- a fill notes the epoch when it starts, and is stored only if :func:`may_keep_fill` says no
  invalidation of its key (and no flush) came after that;
- an invalidation also detaches the key's in-flight fill, so readers arriving after it start a
  new read instead of joining one that may have read the old item.

Concurrent misses for one key share one load (single flight). The load runs as its own asyncio
task, so a reader that gives up (cancelled) does not cancel the others' load.

**The trusted cache.** :class:`TrustedCache` decides every read by one rule
(:meth:`TrustedCache.read_path`): in ``event`` mode the cache answers while its source is trusted
and is bypassed (read through, concurrent readers of a key sharing one load, nothing stored) past
the bound; in ``ttl`` mode it always answers; in ``off`` mode every read goes to the loader.
With :meth:`TrustedCache.verified`, one hit in ``n`` is re-read off the caller's path and
compared with what was served (fresh or stale; a stale entry is evicted).

Everything runs on the event loop's thread: the race guard needs no lock because nothing yields
between a check and the change it guards.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from staleless.health import ChannelHealth
from staleless.protocol import KeyVersion

__all__ = [
    "CacheMode",
    "CacheObserver",
    "CacheStats",
    "KeyedCache",
    "NoopCacheObserver",
    "ReadPath",
    "TrustedCache",
    "VerificationStats",
    "may_keep_fill",
]

log = logging.getLogger("staleless")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def may_keep_fill(fill_started: int, key_invalidated_at: int | None, flushed_at: int) -> bool:
    """Whether a fill that started at epoch ``fill_started`` may be stored, given the epoch of the
    last invalidation of its key (if one is still recorded) and of the last flush. Epochs only
    grow; an invalidation at epoch ``e`` happened after a fill that started at ``s`` exactly when
    ``e > s``."""
    return flushed_at <= fill_started and (key_invalidated_at is None or key_invalidated_at <= fill_started)


class CacheMode(str, enum.Enum):
    """How a service's caches are kept fresh (``CACHE_MODE``)."""

    #: Invalidated by the data's own changes, trusted only while ticks prove the path.
    EVENT = "event"
    #: Kept until the TTL: freshness is the TTL.
    TTL = "ttl"
    #: No cache: every read goes to the loader.
    OFF = "off"

    def __str__(self) -> str:
        return self.value


class ReadPath(str, enum.Enum):
    """Which path a read takes now."""

    #: Answered from the cache (filled on a miss).
    CACHE = "cache"
    #: Read through the loader, not stored.
    BYPASS = "bypass"

    def __str__(self) -> str:
        return self.value


class CacheObserver(Protocol):
    """What a cache reports as it works (the metrics module records it; ``cache`` is the cache's
    name, the ``cache`` label)."""

    def hit(self, cache: str) -> None:
        """A read was answered from the cache."""
        ...

    def miss(self, cache: str) -> None:
        """A read on the cache path was not (including one that joined another reader's fill)."""
        ...

    def fill(self, cache: str, seconds: float) -> None:
        """A load from the store completed (or failed) after ``seconds``."""
        ...

    def fill_discarded(self, cache: str) -> None:
        """A load was not stored because an invalidation or a flush raced it."""
        ...

    def bypassed(self, cache: str) -> None:
        """A read skipped the cache because its source was not trusted."""
        ...

    def invalidated(self, cache: str, n: int) -> None:
        """``n`` keys were evicted by invalidations (queue messages or the task's own writes)."""
        ...

    def verified(self, cache: str, result: str) -> None:
        """A sampled hit was re-read: ``result`` is ``fresh`` or ``stale``."""
        ...


class NoopCacheObserver:
    """A :class:`CacheObserver` that records nothing (the default); subclass it to record some."""

    def hit(self, cache: str) -> None:
        return None

    def miss(self, cache: str) -> None:
        return None

    def fill(self, cache: str, seconds: float) -> None:
        return None

    def fill_discarded(self, cache: str) -> None:
        return None

    def bypassed(self, cache: str) -> None:
        return None

    def invalidated(self, cache: str, n: int) -> None:
        return None

    def verified(self, cache: str, result: str) -> None:
        return None


def _notify(hook: Callable[..., object], *args: object) -> None:
    """Calls an observer hook; a failing observer never breaks a read or the race guard."""
    try:
        hook(*args)
    except Exception:
        log.exception("cache observer %s failed", getattr(hook, "__name__", hook))


@dataclass(frozen=True)
class CacheStats:
    """Entries and counts of one cache (``GET /admin/cache/stats``)."""

    #: Entries held now.
    entries: int
    #: Reads answered from the cache.
    hits: int
    #: Reads on the cache path that were not (including those that joined another's fill).
    misses: int
    #: Loads from the store (completed or failed).
    fills: int
    #: Loads not stored because an invalidation or flush raced them.
    discarded_fills: int
    #: Keys evicted by invalidations.
    invalidations: int
    #: Whole-cache flushes.
    flushes: int
    #: Reads that skipped the cache because its source was not trusted.
    bypassed: int

    def as_dict(self) -> dict[str, int]:
        """The stats with camelCase keys, as the Rust ``CacheStats`` serialises (plus ``bypassed``)."""
        return {
            "entries": self.entries,
            "hits": self.hits,
            "misses": self.misses,
            "fills": self.fills,
            "discardedFills": self.discarded_fills,
            "invalidations": self.invalidations,
            "flushes": self.flushes,
            "bypassed": self.bypassed,
        }


@dataclass(frozen=True)
class VerificationStats:
    """Outcomes of the sampled verification of one cache."""

    #: Hits re-read and found as served.
    fresh: int = 0
    #: Hits re-read and found changed (evicted).
    stale: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"fresh": self.fresh, "stale": self.stale}


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    fills: int = 0
    discarded_fills: int = 0
    invalidations: int = 0
    flushes: int = 0
    bypassed: int = 0


@dataclass(frozen=True)
class _Entry(Generic[V]):
    """A cached value and when it was stored (on the cache's clock, seconds)."""

    value: V
    stored_at: float


@dataclass(frozen=True)
class _Flight(Generic[V]):
    """A load in progress that new readers of its key may join."""

    #: Tells this flight apart from a later one for the same key.
    id: int
    #: The load, shared by every reader that joined.
    task: asyncio.Task[V]


@dataclass(frozen=True)
class _Verdict:
    """What re-reading a cache hit found."""

    fresh: bool
    #: How long a stale entry had been cached, seconds.
    age_s: float = 0.0


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a finished load's outcome as seen: its readers may all have gone."""
    if not task.cancelled():
        task.exception()


class KeyedCache(Generic[K, V]):
    """A cache of ``V`` by ``K`` with single-flight loads and race-safe fills (see the module
    docs), of at most ``max_entries`` (least recently used out first), each kept at most
    ``ttl_s`` seconds on ``clock`` (a safety net); ``name`` is its ``cache`` label."""

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_s: float = 3600.0,
        *,
        name: str = "cache",
        observer: CacheObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self.observer: CacheObserver = NoopCacheObserver() if observer is None else observer
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._counters = _Counters()
        #: Bumped by every invalidation and flush.
        self._epoch = 0
        #: The epoch of the last flush.
        self._flushed_at = 0
        #: Epoch of each key's last invalidation, kept only while a fill that started before it
        #: may still complete.
        self._invalidated: dict[K, int] = {}
        #: Start epochs of running fills (a multiset).
        self._running: dict[int, int] = {}
        #: The flight each key's new readers join.
        self._flights: dict[K, _Flight[V]] = {}
        self._next_flight = 0

    @property
    def name(self) -> str:
        """The cache's name in metrics and stats."""
        return self._name

    # Entries.

    def _expired(self, entry: _Entry[V]) -> bool:
        return self._clock() - entry.stored_at >= self._ttl_s

    def _lookup(self, key: K) -> _Entry[V] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: K, value: V) -> None:
        if self._max_entries <= 0:
            return
        self._entries[key] = _Entry(value, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def peek(self, key: K) -> V | None:
        """The cached value, counting nothing (reports and tests)."""
        entry = self._entries.get(key)
        return None if entry is None or self._expired(entry) else entry.value

    def _hit(self, key: K) -> _Entry[V] | None:
        """The cached entry, counting a hit or a miss."""
        entry = self._lookup(key)
        if entry is not None:
            self._counters.hits += 1
            _notify(self.observer.hit, self._name)
        else:
            self._counters.misses += 1
            _notify(self.observer.miss, self._name)
        return entry

    def get(self, key: K) -> V | None:
        """The cached value, counting a hit or a miss."""
        entry = self._hit(key)
        return None if entry is None else entry.value

    # Loads.

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of ``load`` (shared with concurrent readers of
        ``key``), stored unless an invalidation of ``key`` or a flush happened after the load
        started. A failed load's exception reaches every reader that joined it; nothing is
        cached then."""
        entry = self._hit(key)
        if entry is not None:
            return entry.value
        return await self._fill(key, load)

    async def _get_or_load_sampled(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        sample: Callable[[], bool],
    ) -> tuple[V, tuple[_Entry[V], Awaitable[V]] | None]:
        """:meth:`get_or_load`, and for a hit that ``sample`` picks, a re-read of it by ``load``
        to compare off the caller's path."""
        entry = self._hit(key)
        if entry is not None:
            if not sample():
                return entry.value, None
            try:
                reread = load()
            except Exception:
                log.exception("cache %s: the loader failed to start a verification re-read", self._name)
                return entry.value, None
            return entry.value, (entry, reread)
        return await self._fill(key, load), None

    async def _fill(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The miss path: join the key's flight or start one."""
        flight = self._flights.get(key)
        if flight is not None:
            task = flight.task
        else:
            entry = self._lookup(key)
            if entry is not None:
                return entry.value
            task = self._start_flight(key, load, keep=True)
        return await asyncio.shield(task)

    async def load_uncached(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """Reads through, for a cache that must not be served now: the result of ``load``,
        shared with concurrent readers of ``key`` (one store read however many wait), never
        stored. Any flight of the key started after its last invalidation (invalidations detach
        flights), so joining one is as fresh as a new read."""
        flight = self._flights.get(key)
        task = flight.task if flight is not None else self._start_flight(key, load, keep=False)
        return await asyncio.shield(task)

    def _start_flight(self, key: K, load: Callable[[], Awaitable[V]], keep: bool) -> asyncio.Task[V]:
        """Starts a load of ``key`` that new readers join; ``keep`` says whether its result may be
        stored (subject to :func:`may_keep_fill`)."""
        awaitable = load()
        started = self._epoch
        self._running[started] = self._running.get(started, 0) + 1
        self._next_flight += 1
        flight_id = self._next_flight
        task = asyncio.get_running_loop().create_task(
            self._run_fill(key, flight_id, started, awaitable, keep),
            name=f"staleless-fill-{self._name}",
        )
        task.add_done_callback(_retrieve)
        self._flights[key] = _Flight(flight_id, task)
        return task

    def _count_fill(self, began: float) -> None:
        self._counters.fills += 1
        _notify(self.observer.fill, self._name, time.perf_counter() - began)

    async def _run_fill(self, key: K, flight_id: int, started: int, awaitable: Awaitable[V], keep: bool) -> V:
        """Runs one load and settles it: stored (if ``keep`` and no invalidation raced it) or
        discarded, flight retired."""
        began = time.perf_counter()
        try:
            try:
                value = await awaitable
            except Exception:
                self._count_fill(began)
                raise
            self._count_fill(began)
            if keep:
                if may_keep_fill(started, self._invalidated.get(key), self._flushed_at):
                    self._store(key, value)
                else:
                    self._counters.discarded_fills += 1
                    _notify(self.observer.fill_discarded, self._name)
                    log.debug("cache %s: a fill raced an invalidation and was not kept", self._name)
            return value
        finally:
            flight = self._flights.get(key)
            if flight is not None and flight.id == flight_id:
                del self._flights[key]
            self._finish(started)

    def _finish(self, started: int) -> None:
        count = self._running.get(started)
        if count is not None:
            if count <= 1:
                del self._running[started]
            else:
                self._running[started] = count - 1
        self._prune()

    def _prune(self) -> None:
        """Forgets invalidations no running fill can be affected by: those at or before the
        oldest running fill's start (and every one when nothing runs)."""
        if not self._running:
            self._invalidated.clear()
            return
        oldest = min(self._running)
        self._invalidated = {key: at for key, at in self._invalidated.items() if at > oldest}

    async def _verify(
        self,
        key: K,
        cached: _Entry[V],
        reread: Awaitable[V],
        same: Callable[[V, V], bool],
    ) -> _Verdict | None:
        """Re-reads the entry ``cached`` of ``key`` and compares: a stale entry is evicted (as an
        invalidation would). ``None`` when the re-read failed, or an invalidation or flush of
        the key came while it ran (it then says nothing about what was served)."""
        started = self._epoch
        self._running[started] = self._running.get(started, 0) + 1
        try:
            try:
                current = await reread
            except Exception:
                log.debug("cache %s: a verification re-read failed", self._name, exc_info=True)
                return None
            undisturbed = may_keep_fill(started, self._invalidated.get(key), self._flushed_at)
        finally:
            self._finish(started)
        if not undisturbed:
            return None
        if same(cached.value, current):
            return _Verdict(fresh=True)
        self.invalidate(key)
        return _Verdict(fresh=False, age_s=max(0.0, self._clock() - cached.stored_at))

    # Invalidation.

    def invalidate(self, key: K) -> None:
        """Evicts ``key``, makes any running fill of it unkeepable and detaches that fill from new
        readers."""
        self._epoch += 1
        if self._running:
            self._invalidated[key] = self._epoch
        self._flights.pop(key, None)
        self._entries.pop(key, None)
        self._counters.invalidations += 1
        _notify(self.observer.invalidated, self._name, 1)

    def invalidate_all(self) -> None:
        """Evicts everything and makes every running fill unkeepable."""
        self._epoch += 1
        self._flushed_at = self._epoch
        self._invalidated.clear()
        self._flights.clear()
        self._entries.clear()
        self._counters.flushes += 1

    def _count_bypass(self) -> None:
        self._counters.bypassed += 1
        _notify(self.observer.bypassed, self._name)

    def stats(self) -> CacheStats:
        """Current counts (expired entries are dropped first, so ``entries`` is exact)."""
        for key in [key for key, entry in self._entries.items() if self._expired(entry)]:
            del self._entries[key]
        counters = self._counters
        return CacheStats(
            entries=len(self._entries),
            hits=counters.hits,
            misses=counters.misses,
            fills=counters.fills,
            discarded_fills=counters.discarded_fills,
            invalidations=counters.invalidations,
            flushes=counters.flushes,
            bypassed=counters.bypassed,
        )

    def _tracked_invalidations(self) -> int:
        """Bookkeeping entries held for running fills (for tests: it must drain to zero)."""
        return len(self._invalidated)

    def __repr__(self) -> str:
        return f"KeyedCache(name={self._name!r}, entries={len(self._entries)}, flights={len(self._flights)})"


class _Verification(Generic[V]):
    """One hit in ``one_in`` re-read and compared."""

    __slots__ = ("fresh", "hits", "one_in", "same", "stale")

    def __init__(self, one_in: int, same: Callable[[V, V], bool]) -> None:
        self.one_in = one_in
        self.same = same
        self.hits = 0
        self.fresh = 0
        self.stale = 0

    def sample(self) -> bool:
        picked = self.hits % self.one_in == self.one_in - 1
        self.hits += 1
        return picked


def _equal(left: object, right: object) -> bool:
    return bool(left == right)


class TrustedCache(Generic[K, V]):
    """A keyed cache of one source, served only while that source is trusted (see the module
    docs). It is an :class:`~staleless.caches.Evict`: register it for its source so that
    invalidation messages evict their keys (``KeyVersion.id``) from it."""

    def __init__(
        self,
        health: ChannelHealth,
        source: str,
        mode: CacheMode | str = CacheMode.EVENT,
        max_entries: int = 100_000,
        ttl_s: float = 3600.0,
        *,
        observer: CacheObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health = health
        self._source = source
        self._mode = CacheMode(mode)
        name = health.cache_of(source)
        self._name = source if name is None else name
        self._cache: KeyedCache[K, V] = KeyedCache(max_entries, ttl_s, name=self._name, observer=observer, clock=clock)
        self._verification: _Verification[V] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def health(self) -> ChannelHealth:
        """The trust its reads follow."""
        return self._health

    @property
    def source(self) -> str:
        """The source whose ticks vouch for it."""
        return self._source

    @property
    def name(self) -> str:
        """Its name in metrics and stats (the cache its source vouches for)."""
        return self._name

    @property
    def mode(self) -> CacheMode:
        """What it does."""
        return self._mode

    @property
    def observer(self) -> CacheObserver:
        """What it reports to (no-op unless set)."""
        return self._cache.observer

    @observer.setter
    def observer(self, observer: CacheObserver) -> None:
        self._cache.observer = observer

    @property
    def keyed(self) -> KeyedCache[K, V]:
        """The cache underneath (entries, fills and their race guard)."""
        return self._cache

    def verified(self, one_in: int, same: Callable[[V, V], bool] | None = None) -> TrustedCache[K, V]:
        """Re-reads one hit in ``one_in`` off the caller's path and compares it with ``same``
        (equality by default); ``0`` turns verification off. Returns this cache."""
        if one_in < 0:
            raise ValueError(f"one_in must be >= 0, not {one_in}")
        self._verification = None if one_in == 0 else _Verification(one_in, _equal if same is None else same)
        return self

    def verification_stats(self) -> VerificationStats | None:
        """Outcomes of the sampled verification so far; ``None`` when it is off."""
        verification = self._verification
        if verification is None:
            return None
        return VerificationStats(fresh=verification.fresh, stale=verification.stale)

    def read_path(self) -> ReadPath:
        """The path reads take now: the one rule of the module docs."""
        if self._mode is CacheMode.EVENT:
            return ReadPath.CACHE if self._health.is_trusted(self._source) else ReadPath.BYPASS
        return ReadPath.CACHE if self._mode is CacheMode.TTL else ReadPath.BYPASS

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value of ``key``: from the cache when :meth:`read_path` says so (filling it through
        ``load`` on a miss), else from ``load``. A failed load's exception propagates; nothing is
        cached then."""
        if self.read_path() is ReadPath.CACHE:
            verification = self._verification
            if verification is None:
                return await self._cache.get_or_load(key, load)
            value, check = await self._cache._get_or_load_sampled(key, load, verification.sample)
            if check is not None:
                entry, reread = check
                task = asyncio.get_running_loop().create_task(
                    self._verify(verification, key, entry, reread),
                    name=f"staleless-verify-{self._name}",
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return value
        if self._mode is CacheMode.EVENT:
            self._cache._count_bypass()
            return await self._cache.load_uncached(key, load)
        return await load()

    async def _verify(
        self,
        verification: _Verification[V],
        key: K,
        entry: _Entry[V],
        reread: Awaitable[V],
    ) -> None:
        try:
            verdict = await self._cache._verify(key, entry, reread, verification.same)
        except Exception:
            log.exception("cache %s: verifying a hit failed", self._name)
            return
        if verdict is None:
            return
        if verdict.fresh:
            verification.fresh += 1
            _notify(self._cache.observer.verified, self._name, "fresh")
        else:
            verification.stale += 1
            _notify(self._cache.observer.verified, self._name, "stale")
            log.warning(
                "cache %s: a cache hit was stale (key %r, cached %d ms ago): the store holds another value; evicted",
                self._name,
                key,
                int(verdict.age_s * 1000),
            )

    async def drain(self) -> None:
        """Waits for the verifications running now (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def invalidate(self, key: K) -> None:
        """Evicts ``key`` (a write made by this task: it reads its own write next)."""
        self._cache.invalidate(key)

    def invalidate_all(self) -> None:
        """Evicts everything."""
        self._cache.invalidate_all()

    def peek(self, key: K) -> V | None:
        """What the cache holds for ``key``, whatever the trust, counting nothing."""
        return self._cache.peek(key)

    def stats(self) -> CacheStats:
        """Entries, hits, misses, fills and the rest."""
        return self._cache.stats()

    # Evict: a cache keyed by the ids messages carry evicts each changed id.

    def evict(self, keys: Sequence[KeyVersion]) -> int:
        """Evicts each key's ``id``; returns how many keys."""
        for key in keys:
            self._cache.invalidate(cast(K, key.id))
        return len(keys)

    def flush(self) -> None:
        """Evicts everything."""
        self._cache.invalidate_all()

    def __repr__(self) -> str:
        return f"TrustedCache(source={self._source!r}, name={self._name!r}, mode={self._mode.value!r})"
