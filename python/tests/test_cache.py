"""Race-guarded, single-flight fills and the trusted read path (``consumer/src/cache.rs`` and
``trusted.rs``'s tests), on the event loop with loads held open by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from staleless.cache import (
    CacheMode,
    CacheStats,
    KeyedCache,
    NoopCacheObserver,
    ReadPath,
    TrustedCache,
    VerificationStats,
    may_keep_fill,
)
from staleless.caches import Caches, Evict
from staleless.health import ChannelHealth, ManualClock, SourceSpec
from staleless.protocol import KeyVersion
from staleless.trust import TrustRules


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def cache() -> KeyedCache[str, str]:
    return KeyedCache(100, 3600.0, name="test")


@dataclass
class Held:
    """A load held open until released: the interleaving every race test needs."""

    release: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    runs: int = 0

    def loader(self) -> Awaitable[str]:
        self.runs += 1
        return self.release


def constant(value: str) -> Callable[[], Awaitable[str]]:
    async def load() -> str:
        return value

    return lambda: load()


def test_the_keep_rule() -> None:
    assert may_keep_fill(5, None, 0)
    assert may_keep_fill(5, 5, 5), "invalidated before the fill started"
    assert not may_keep_fill(5, 6, 0), "invalidated while the fill ran"
    assert not may_keep_fill(5, None, 6), "flushed while the fill ran"


async def test_a_fill_that_raced_an_invalidation_is_not_kept() -> None:
    keyed = cache()
    held = Held()
    reader = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    keyed.invalidate("u-1")
    held.release.set_result("old")
    assert await reader == "old", "the caller still gets what it read"
    assert keyed.peek("u-1") is None, "the raced fill must not be cached"
    stats = keyed.stats()
    assert (stats.fills, stats.discarded_fills, stats.entries) == (1, 1, 0)
    assert await keyed.get_or_load("u-1", constant("new")) == "new"
    assert keyed.get("u-1") == "new"
    assert keyed._tracked_invalidations() == 0, "bookkeeping drains when no fill runs"


async def test_a_flush_during_a_fill_also_discards_it() -> None:
    keyed = cache()
    held = Held()
    reader = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    keyed.invalidate_all()
    held.release.set_result("old")
    await reader
    assert keyed.peek("u-1") is None
    assert keyed.stats().flushes == 1


async def test_an_invalidation_of_another_key_does_not_discard_the_fill() -> None:
    keyed = cache()
    held = Held()
    reader = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    keyed.invalidate("u-2")
    held.release.set_result("value")
    await reader
    assert keyed.peek("u-1") == "value"


async def test_readers_after_an_invalidation_do_not_join_the_old_fill() -> None:
    keyed = cache()
    held = Held()
    old_reader = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    keyed.invalidate("u-1")
    assert await keyed.get_or_load("u-1", constant("new")) == "new"
    held.release.set_result("old")
    assert await old_reader == "old"
    assert keyed.peek("u-1") == "new", "the old fill must not overwrite the new one"


async def test_concurrent_misses_share_one_load() -> None:
    keyed = cache()
    held = Held()
    readers = [asyncio.create_task(keyed.get_or_load("u-1", held.loader)) for _ in range(16)]
    await settle()
    assert keyed.stats().misses == 16
    held.release.set_result("value")
    assert await asyncio.gather(*readers) == ["value"] * 16
    assert held.runs == 1
    assert keyed.stats().hits == 0
    assert await keyed.get_or_load("u-1", constant("other")) == "value", "a hit never loads"


async def test_uncached_reads_share_one_load_and_store_nothing() -> None:
    keyed = cache()
    held = Held()
    readers = [asyncio.create_task(keyed.load_uncached("u-1", held.loader)) for _ in range(8)]
    await settle()
    held.release.set_result("value")
    assert await asyncio.gather(*readers) == ["value"] * 8
    assert held.runs == 1, "one store read for every concurrent reader"
    assert keyed.peek("u-1") is None, "a read-through is never stored"
    assert keyed.stats().fills == 1


async def test_a_cache_reader_joining_a_read_through_does_not_make_it_stored() -> None:
    keyed = cache()
    held = Held()
    through = asyncio.create_task(keyed.load_uncached("u-1", held.loader))
    await settle()
    joined = asyncio.create_task(keyed.get_or_load("u-1", constant("never")))
    await settle()
    held.release.set_result("value")
    assert list(await asyncio.gather(through, joined)) == ["value", "value"]
    assert held.runs == 1
    assert keyed.peek("u-1") is None


async def test_a_failed_load_is_shared_and_not_cached() -> None:
    keyed = cache()
    held = Held()
    readers = [asyncio.create_task(keyed.get_or_load("u-1", held.loader)) for _ in range(3)]
    await settle()
    held.release.set_exception(LookupError("down"))
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results)
    assert keyed.peek("u-1") is None
    assert keyed.stats().fills == 1
    assert await keyed.get_or_load("u-1", constant("up")) == "up"


async def test_a_cancelled_reader_does_not_cancel_the_shared_load() -> None:
    keyed = cache()
    held = Held()
    first = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    second = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    held.release.set_result("value")
    assert await second == "value"
    assert keyed.peek("u-1") == "value", "the load completed and was stored"


async def test_a_load_whose_readers_all_left_still_settles() -> None:
    keyed = cache()
    held = Held()
    reader = asyncio.create_task(keyed.get_or_load("u-1", held.loader))
    await settle()
    reader.cancel()
    await settle()
    held.release.set_exception(LookupError("down"))
    await settle()
    assert keyed.peek("u-1") is None
    assert keyed._flights == {}
    assert keyed._running == {}


async def test_entries_expire_after_the_ttl_and_the_bound_evicts_the_least_recent() -> None:
    now = [0.0]
    keyed: KeyedCache[str, str] = KeyedCache(2, 10.0, name="small", clock=lambda: now[0])
    for key in ("a", "b"):
        await keyed.get_or_load(key, constant(key.upper()))
    assert keyed.get("a") == "A"  # "a" is now the most recent
    await keyed.get_or_load("c", constant("C"))
    assert (keyed.peek("a"), keyed.peek("b"), keyed.peek("c")) == ("A", None, "C")
    now[0] = 10.0
    assert keyed.peek("a") is None
    assert keyed.stats().entries == 0
    assert await keyed.get_or_load("a", constant("A2")) == "A2"
    assert KeyedCache[str, str](0).peek("x") is None


def health(trusted: bool, clock: ManualClock | None = None) -> ChannelHealth:
    channel = ChannelHealth(
        TrustRules.with_bound(60_000),
        [SourceSpec("users", "profiles")],
        clock=clock or ManualClock(1_800_000_000_000),
    )
    if trusted:
        channel.mark_subscribed("q")
        channel.record_ticks_now()
    return channel


class Store:
    """A store of one name per user, counting reads."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.reads = 0

    def load(self, user: str) -> Callable[[], Awaitable[str]]:
        async def read() -> str:
            self.reads += 1
            return self.names[user]

        return read


def test_one_rule_decides_the_read_path_in_every_mode() -> None:
    trusted, untrusted = health(True), health(False)
    assert TrustedCache[str, str](trusted, "users", CacheMode.EVENT).read_path() is ReadPath.CACHE
    assert TrustedCache[str, str](untrusted, "users", CacheMode.EVENT).read_path() is ReadPath.BYPASS
    assert TrustedCache[str, str](untrusted, "users", CacheMode.TTL).read_path() is ReadPath.CACHE
    assert TrustedCache[str, str](trusted, "users", "off").read_path() is ReadPath.BYPASS
    assert TrustedCache[str, str](trusted, "orders").name == "orders"
    assert TrustedCache[str, str](trusted, "users").name == "profiles"


@pytest.mark.parametrize(
    ("mode", "trusted", "reads"),
    [(CacheMode.EVENT, True, 1), (CacheMode.EVENT, False, 3), (CacheMode.TTL, False, 1), (CacheMode.OFF, True, 3)],
)
async def test_reads_follow_the_path_they_report(mode: CacheMode, trusted: bool, reads: int) -> None:
    store = Store()
    store.names["u-1"] = "Ada"
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(trusted), "users", mode)
    for _ in range(3):
        assert await trusted_cache.get("u-1", store.load("u-1")) == "Ada"
    assert store.reads == reads
    assert trusted_cache.stats().bypassed == (3 if (mode, trusted) == (CacheMode.EVENT, False) else 0)


async def test_past_the_bound_reads_go_through_and_store_nothing() -> None:
    clock = ManualClock(1_800_000_000_000)
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True, clock), "users")
    assert await trusted_cache.get("u-1", constant("cached")) == "cached"
    clock.advance(60_001)
    assert trusted_cache.read_path() is ReadPath.BYPASS
    assert await trusted_cache.get("u-1", constant("fresh")) == "fresh"
    assert trusted_cache.peek("u-1") == "cached", "the bypass neither served nor replaced the entry"
    assert await trusted_cache.get("u-2", constant("two")) == "two"
    assert trusted_cache.peek("u-2") is None


async def test_a_sampled_hit_that_the_store_contradicts_is_counted_stale_and_evicted() -> None:
    store = Store()
    store.names["u-1"] = "Ada"
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True), "users").verified(1, lambda a, b: a == b)
    assert await trusted_cache.get("u-1", store.load("u-1")) == "Ada"
    assert await trusted_cache.get("u-1", store.load("u-1")) == "Ada"
    await trusted_cache.drain()
    assert trusted_cache.verification_stats() == VerificationStats(fresh=1, stale=0)
    # The store changes and no invalidation comes (a lost message): the hit serves the old value,
    # its verification finds it out and evicts it.
    store.names["u-1"] = "Grace"
    assert await trusted_cache.get("u-1", store.load("u-1")) == "Ada"
    await trusted_cache.drain()
    assert trusted_cache.verification_stats() == VerificationStats(fresh=1, stale=1)
    assert await trusted_cache.get("u-1", store.load("u-1")) == "Grace"


async def test_one_hit_in_n_is_verified_and_zero_turns_it_off() -> None:
    store = Store()
    store.names["u-1"] = "Ada"
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True), "users").verified(4)
    await trusted_cache.get("u-1", store.load("u-1"))
    for _ in range(8):
        await trusted_cache.get("u-1", store.load("u-1"))
    await trusted_cache.drain()
    assert trusted_cache.verification_stats() == VerificationStats(fresh=2, stale=0)
    assert store.reads == 3, "one fill and two re-reads"
    assert trusted_cache.verified(0).verification_stats() is None


async def test_a_verification_that_an_invalidation_overtook_says_nothing() -> None:
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True), "users").verified(1)
    await trusted_cache.get("u-1", constant("Ada"))
    held = Held()
    assert await trusted_cache.get("u-1", held.loader) == "Ada"
    await settle()
    trusted_cache.invalidate("u-1")
    held.release.set_result("Grace")
    await trusted_cache.drain()
    assert trusted_cache.verification_stats() == VerificationStats(fresh=0, stale=0)
    failing = Held()
    await trusted_cache.get("u-1", constant("Ada"))
    await trusted_cache.get("u-1", failing.loader)
    failing.release.set_exception(LookupError("down"))
    await trusted_cache.drain()
    assert trusted_cache.verification_stats() == VerificationStats(fresh=0, stale=0)
    assert trusted_cache.keyed._running == {}


@dataclass
class Recorder(NoopCacheObserver):
    events: list[tuple[str, ...]] = field(default_factory=list)

    def hit(self, cache: str) -> None:
        self.events.append(("hit", cache))

    def miss(self, cache: str) -> None:
        self.events.append(("miss", cache))

    def fill(self, cache: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("fill", cache))

    def fill_discarded(self, cache: str) -> None:
        self.events.append(("discarded", cache))

    def bypassed(self, cache: str) -> None:
        self.events.append(("bypassed", cache))

    def invalidated(self, cache: str, n: int) -> None:
        self.events.append(("invalidated", cache, str(n)))

    def verified(self, cache: str, result: str) -> None:
        self.events.append(("verified", cache, result))


async def test_the_observer_hears_every_count() -> None:
    clock = ManualClock(1_800_000_000_000)
    recorder = Recorder()
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True, clock), "users", observer=recorder).verified(1)
    await trusted_cache.get("u-1", constant("Ada"))
    await trusted_cache.get("u-1", constant("Ada"))
    await trusted_cache.drain()
    assert trusted_cache.evict([KeyVersion("u-1", "1", 0)]) == 1
    clock.advance(60_001)
    await trusted_cache.get("u-1", constant("Ada"))
    assert recorder.events == [
        ("miss", "profiles"),
        ("fill", "profiles"),
        ("hit", "profiles"),
        ("verified", "profiles", "fresh"),
        ("invalidated", "profiles", "1"),
        ("bypassed", "profiles"),
        ("fill", "profiles"),
    ]
    assert trusted_cache.stats() == CacheStats(
        entries=0, hits=1, misses=1, fills=2, discarded_fills=0, invalidations=1, flushes=0, bypassed=1
    )
    assert trusted_cache.stats().as_dict()["discardedFills"] == 0


async def test_a_failing_observer_breaks_nothing() -> None:
    class Broken(NoopCacheObserver):
        def miss(self, cache: str) -> None:
            raise RuntimeError("metrics down")

    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True), "users")
    trusted_cache.observer = Broken()
    assert await trusted_cache.get("u-1", constant("Ada")) == "Ada"
    assert trusted_cache.peek("u-1") == "Ada"


async def test_a_trusted_cache_is_evicted_by_the_ids_of_messages() -> None:
    trusted_cache: TrustedCache[str, str] = TrustedCache(health(True), "users")
    assert isinstance(trusted_cache, Evict)
    caches = Caches().register("users", trusted_cache)
    for user in ("a", "b"):
        await trusted_cache.get(user, constant(user))
    assert trusted_cache.evict([KeyVersion("a", "1", 0), KeyVersion("z", "2", 0)]) == 2
    assert (trusted_cache.peek("a"), trusted_cache.peek("b")) == (None, "b")
    caches.flush_source("users")
    assert trusted_cache.peek("b") is None
    trusted_cache.invalidate_all()
    assert trusted_cache.stats().flushes == 2
