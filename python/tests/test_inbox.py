"""What each queue body does to the trust and the caches (``consumer/src/inbox.rs`` and
``caches.rs``), on a controlled clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from staleless.caches import Caches
from staleless.health import ChannelHealth, ManualClock, SourceSpec
from staleless.inbox import Inbox, NoopInboxObserver, Received
from staleless.protocol import FlushAll, Invalidate, KeyVersion, Tick, encode
from staleless.trust import TrustRules

EPOCH_MS = 1_800_000_000_000


@dataclass
class RecordingCache:
    """An :class:`Evict` that records what it was told, and whether its source was trusted then."""

    health: ChannelHealth
    source: str
    events: list[str] = field(default_factory=list)

    def evict(self, keys: Sequence[KeyVersion]) -> int:
        self.events.extend(f"evict {key.id}" for key in keys)
        return len(keys)

    def flush(self) -> None:
        self.events.append(f"flush (trusted: {self.health.is_trusted(self.source)})")

    def take(self) -> list[str]:
        events, self.events = self.events, []
        return events


@dataclass
class Observer(NoopInboxObserver):
    events: list[tuple[object, ...]] = field(default_factory=list)

    def message(self, outcome: str) -> None:
        self.events.append(("message", outcome))

    def tick(self, source: str) -> None:
        self.events.append(("tick", source))

    def tick_rejected(self, source: str, reason: str) -> None:
        self.events.append(("tick_rejected", source, reason))

    def tick_gap(self, source: str) -> None:
        self.events.append(("tick_gap", source))

    def invalidations_applied(self, source: str, n: int) -> None:
        self.events.append(("applied", source, n))

    def invalidation_lag(self, seconds: float) -> None:
        self.events.append(("lag", seconds))

    def give_up_flush(self, source_label: str) -> None:
        self.events.append(("give_up", source_label))

    def bypass_seconds(self, cache: str, seconds: float) -> None:
        self.events.append(("bypass", cache, seconds))


@dataclass
class Task:
    clock: ManualClock
    health: ChannelHealth
    users: RecordingCache
    roles: RecordingCache
    tokens: RecordingCache
    inbox: Inbox
    observer: Observer


def task() -> Task:
    clock = ManualClock(EPOCH_MS)
    health = ChannelHealth(
        TrustRules(15_000, 500, ["staleless"]),
        [SourceSpec("users", "profiles"), SourceSpec("roles", "roles")],
        clock=clock,
    )
    users, roles, tokens = RecordingCache(health, "users"), RecordingCache(health, "roles"), RecordingCache(health, "")
    caches = Caches().register("users", users).register("roles", roles).register_with_everything(tokens)
    observer = Observer()
    inbox = Inbox(health, caches, tables={"staleless-users": "users"}, observer=observer)
    health.mark_subscribed("q")
    return Task(clock, health, users, roles, tokens, inbox, observer)


def tick(source: str = "users", written_at_ms: int = EPOCH_MS, **fields: object) -> str:
    return encode(Tick(source, written_at_ms, writer=fields.pop("writer", "staleless"), **fields))  # type: ignore[arg-type]


def give_up(table: str) -> str:
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"
    return json.dumps({"version": "1.0", "DDBStreamBatchInfo": {"streamArn": arn, "batchSize": 3}})


def test_a_tick_that_restores_trust_flushes_before_trust_returns() -> None:
    t = task()
    assert t.inbox.receive(tick()) == Received("applied", tick="admitted")
    assert t.users.take() == ["flush (trusted: False)"], "flushed while still untrusted"
    assert t.health.is_trusted("users")
    assert not t.health.is_trusted("roles")
    assert t.roles.take() == []
    t.clock.advance(1_000)
    assert t.inbox.receive(tick(written_at_ms=EPOCH_MS + 1_000)).tick == "admitted"
    assert t.users.take() == [], "a tick within the bound flushes nothing"
    t.clock.advance(20_000)
    assert not t.health.is_trusted("users")
    t.inbox.receive(tick(written_at_ms=EPOCH_MS + 21_000))
    assert t.users.take() == ["flush (trusted: False)"]
    assert ("bypass", "profiles", 5.5) in t.observer.events, "past the bound since 14.5 s after the last tick"


def test_a_tick_gap_flushes_even_while_trusted() -> None:
    t = task()
    t.inbox.receive(tick(interval_ms=5_000))
    t.users.take()
    t.clock.advance(5_000)
    t.inbox.receive(tick(written_at_ms=EPOCH_MS + 5_000, interval_ms=5_000))
    assert t.users.take() == []
    t.clock.advance(7_501)
    assert t.health.is_trusted("users")
    t.inbox.receive(tick(written_at_ms=EPOCH_MS + 12_501, interval_ms=5_000))
    assert t.users.take() == ["flush (trusted: True)"]
    assert ("tick_gap", "users") in t.observer.events


def test_refused_ticks_change_nothing() -> None:
    t = task()
    assert t.inbox.receive(tick(writer="mallory")).tick == "unknown_writer"
    assert t.inbox.receive(tick(written_at_ms=EPOCH_MS + 501)).tick == "future"
    assert t.inbox.receive(tick(source="orders")).tick == "unknown_source"
    assert t.inbox.receive(encode(Tick("users", EPOCH_MS))).tick == "unknown_writer"
    assert t.users.take() == []
    assert not t.health.is_trusted("users")
    assert ("tick_rejected", "users", "future") in t.observer.events
    assert all(event[0] != "tick" for event in t.observer.events)
    assert t.observer.events.count(("message", "applied")) == 4


def test_invalidations_and_flushes_reach_what_they_name() -> None:
    t = task()
    keys = [KeyVersion("u-1", "1", EPOCH_MS - 2_000), KeyVersion("u-2", "2", 0)]
    assert t.inbox.receive(encode(Invalidate("users", keys))) == Received("applied")
    assert t.users.take() == ["evict u-1", "evict u-2"]
    assert t.roles.take() == []
    assert ("applied", "users", 2) in t.observer.events
    assert [event for event in t.observer.events if event[0] == "lag"] == [("lag", 2.0)], "at_ms 0 has no lag"
    t.inbox.receive(encode(Invalidate("orders", keys)))
    assert ("applied", "orders", 0) in t.observer.events
    t.inbox.receive(encode(FlushAll(source="roles", reason="restore")))
    assert (t.users.take(), t.roles.take(), t.tokens.take()) == ([], ["flush (trusted: False)"], [])
    t.inbox.receive(encode(FlushAll(reason="operator")))
    assert (len(t.users.take()), len(t.roles.take()), len(t.tokens.take())) == (1, 1, 1)
    assert ("applied", "all", 1) in t.observer.events
    t.inbox.flush_all_sources("resubscribed")
    assert (len(t.users.take()), len(t.roles.take()), t.tokens.take()) == (1, 1, []), "lost messages spoil sources"


def test_give_ups_flush_their_table_or_everything() -> None:
    t = task()
    assert t.inbox.receive(give_up("staleless-users")) == Received("give_up")
    assert (len(t.users.take()), t.roles.take()) == (1, [])
    assert t.inbox.receive(give_up("renamed")) == Received("give_up")
    assert (len(t.users.take()), len(t.roles.take()), t.tokens.take()) == (1, 1, [])
    assert [event for event in t.observer.events if event[0] == "give_up"] == [("give_up", "users"), ("give_up", "all")]
    inbox = Inbox(t.health, t.inbox.caches).with_table("staleless-app-roles", "roles")
    assert inbox.tables == {"staleless-app-roles": "roles"}
    assert inbox.receive(give_up("staleless-app-roles")).outcome == "give_up"
    assert (t.users.take(), len(t.roles.take())) == ([], 1)


@pytest.mark.parametrize("body", ["", "not json", '{"v":2,"kind":"flush_all"}', '{"v":1,"kind":"explode"}', "[1]"])
def test_malformed_bodies_are_counted_and_change_nothing(body: str) -> None:
    t = task()
    received = t.inbox.receive(body)
    assert received.outcome == "malformed"
    assert received.tick is None
    assert received.error
    assert t.users.take() == []
    assert t.roles.take() == []
    assert t.tokens.take() == []
    assert t.observer.events == [("message", "malformed")]


def test_receive_never_raises() -> None:
    class Exploding(NoopInboxObserver):
        def message(self, outcome: str) -> None:
            raise RuntimeError("metrics down")

    class BrokenCache:
        def evict(self, keys: Sequence[KeyVersion]) -> int:
            raise RuntimeError("boom")

        def flush(self) -> None:
            raise RuntimeError("boom")

    t = task()
    inbox = Inbox(t.health, Caches().register("users", BrokenCache()), observer=Exploding())
    received = inbox.receive(encode(Invalidate("users", [KeyVersion("a", "1", 0)])))
    assert received.outcome == "malformed"
    assert received.error == "RuntimeError: boom"
    assert inbox.receive(None).outcome == "malformed"  # type: ignore[arg-type]
    assert inbox.receive(tick()).outcome == "malformed", "the flush before trust failed"
    assert not t.health.is_trusted("users"), "and trust did not return without it"


def test_the_caches_registry() -> None:
    t = task()
    caches = t.inbox.caches
    assert caches.sources == ("users", "roles")
    assert caches.apply(encode_free_tick()) == 0
    assert "users" in repr(caches)


def encode_free_tick() -> Tick:
    return Tick("users", EPOCH_MS, writer="staleless")
