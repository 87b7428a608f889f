"""The caches a subscriber keeps fresh, registered by source through :class:`Evict`
(``consumer/src/caches.rs``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from staleless.protocol import FlushAll, Invalidate, Invalidation, KeyVersion

__all__ = ["Caches", "Evict"]


@runtime_checkable
class Evict(Protocol):
    """A cache that invalidation messages evict from."""

    def evict(self, keys: Sequence[KeyVersion]) -> int:
        """Evicts what the changed ``keys`` of the cache's source spoil; returns how many keys."""
        ...

    def flush(self) -> None:
        """Evicts everything: messages may have been lost."""
        ...


class Caches:
    """The caches of a service, each registered for the source whose changes it holds."""

    def __init__(self) -> None:
        #: ``(source, cache)``: a source may feed several caches.
        self._by_source: list[tuple[str, Evict]] = []
        #: Caches flushed only when everything is (an operator's flush of every source): derived
        #: state no single source owns, such as verified tokens.
        self._with_everything: list[Evict] = []

    def register(self, source: str, cache: Evict) -> Caches:
        """Registers ``cache`` for the changes of ``source``; returns this registry."""
        self._by_source.append((source, cache))
        return self

    def register_with_everything(self, cache: Evict) -> Caches:
        """Registers ``cache`` to be flushed when a message flushes every source; returns this
        registry."""
        self._with_everything.append(cache)
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources caches are registered for, in registration order (repeats included)."""
        return tuple(source for source, _ in self._by_source)

    def _of(self, source: str) -> Iterator[Evict]:
        return (cache for of, cache in self._by_source if of == source)

    def apply(self, invalidation: Invalidation) -> int:
        """Applies one message: evicts the keys of an invalidation from its source's caches, or
        flushes what a flush names. Returns the keys evicted (the most any one cache evicted).
        Ticks change no cache."""
        if isinstance(invalidation, Invalidate):
            return max((cache.evict(invalidation.keys) for cache in self._of(invalidation.source)), default=0)
        if isinstance(invalidation, FlushAll):
            if invalidation.source is not None:
                self.flush_source(invalidation.source)
            else:
                self.flush_sources()
                for cache in self._with_everything:
                    cache.flush()
        return 0

    def flush_source(self, source: str) -> None:
        """Flushes every cache of ``source``."""
        for cache in self._of(source):
            cache.flush()

    def flush_sources(self) -> None:
        """Flushes the caches of every source (messages may have been lost)."""
        for _, cache in self._by_source:
            cache.flush()

    def __repr__(self) -> str:
        return f"Caches(sources={list(self.sources)!r}, with_everything={len(self._with_everything)})"
