"""The inbox: what a task does with each body its queue delivers, at the channel's time, and
nothing else (no AWS call). The subscriber feeds it from SQS; the conformance vectors
(``protocol/conformance/``) feed it by hand with a :class:`~staleless.health.ManualClock`
(``consumer/src/inbox.rs``).

An invalidation evicts its keys from its source's caches; a flush clears what it names; a tick
is admitted or refused by the trust rules, flushing its cache first when it restores trust or
shows that heartbeats went missing; AWS's on-failure message of a stream flushes that table's
caches (every cache, for a table this task does not know). Anything else is malformed: counted
and skipped. :meth:`Inbox.receive` never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from staleless.caches import Caches
from staleless.health import ChannelHealth
from staleless.protocol import DecodeError, FlushAll, GiveUp, Invalidate, Invalidation, Tick, decode, decode_give_up
from staleless.trust import SlotProof, TickRejection, heartbeats_missed

__all__ = ["Inbox", "InboxObserver", "NoopInboxObserver", "Outcome", "Received"]

log = logging.getLogger("staleless")

#: The ``outcome`` label of ``staleless_queue_messages_total``.
Outcome = Literal["applied", "give_up", "malformed"]


@dataclass(frozen=True)
class Received:
    """What became of one body."""

    #: ``applied`` (an invalidation, a flush or a tick, counted or not), ``give_up`` (AWS's
    #: on-failure message: the caches of the stream's table were flushed) or ``malformed``.
    outcome: Outcome
    #: For a tick: ``admitted``, or why it was refused (``unknown_writer``, ``future``,
    #: ``unknown_source``); ``None`` for anything else.
    tick: str | None = None
    #: For a malformed body: why.
    error: str | None = None


class InboxObserver(Protocol):
    """What the inbox reports as it works (the metrics module records it with the Rust names)."""

    def message(self, outcome: str) -> None:
        """A body was handled: ``applied``, ``give_up`` or ``malformed``."""
        ...

    def tick(self, source: str) -> None:
        """A tick of ``source`` was admitted and recorded."""
        ...

    def tick_rejected(self, source: str, reason: str) -> None:
        """A tick of ``source`` was refused (``unknown_writer``, ``future``, ``unknown_source``)."""
        ...

    def tick_gap(self, source: str) -> None:
        """A tick showed that heartbeats of ``source`` went missing: its caches were flushed."""
        ...

    def invalidations_applied(self, source: str, n: int) -> None:
        """``n`` keys of ``source`` were evicted (``n`` is 1 for a flush; ``source`` is ``all``
        for a flush of every source)."""
        ...

    def invalidation_lag(self, seconds: float) -> None:
        """A key was evicted ``seconds`` after its change (stream record time)."""
        ...

    def give_up_flush(self, source_label: str) -> None:
        """Records of a table were given up: the caches of ``source_label`` (or ``all``) were
        flushed."""
        ...

    def bypass_seconds(self, cache: str, seconds: float) -> None:
        """``cache`` was bypassed for ``seconds`` past the bound before a tick brought it back."""
        ...


class NoopInboxObserver:
    """An :class:`InboxObserver` that records nothing (the default); subclass it to record some."""

    def message(self, outcome: str) -> None:
        return None

    def tick(self, source: str) -> None:
        return None

    def tick_rejected(self, source: str, reason: str) -> None:
        return None

    def tick_gap(self, source: str) -> None:
        return None

    def invalidations_applied(self, source: str, n: int) -> None:
        return None

    def invalidation_lag(self, seconds: float) -> None:
        return None

    def give_up_flush(self, source_label: str) -> None:
        return None

    def bypass_seconds(self, cache: str, seconds: float) -> None:
        return None


def _notify(hook: Callable[..., object], *args: object) -> None:
    """Calls an observer hook; a failing observer never stops a message from being applied."""
    try:
        hook(*args)
    except Exception:
        log.exception("inbox observer %s failed", getattr(hook, "__name__", hook))


class Inbox:
    """Applies queue bodies to the trust and the caches of one task."""

    def __init__(
        self,
        health: ChannelHealth,
        caches: Caches,
        tables: Mapping[str, str] | None = None,
        observer: InboxObserver | None = None,
    ) -> None:
        self._health = health
        self._caches = caches
        #: Table name -> source, for the event source mapping's give-up messages, which name a
        #: table's stream and not a source.
        self._tables: dict[str, str] = dict(tables or {})
        self.observer: InboxObserver = NoopInboxObserver() if observer is None else observer

    @property
    def health(self) -> ChannelHealth:
        """The trust this inbox records into; its clock is the time messages arrive at."""
        return self._health

    @property
    def caches(self) -> Caches:
        """The caches it evicts from, by source."""
        return self._caches

    @property
    def tables(self) -> Mapping[str, str]:
        """Table name -> source."""
        return dict(self._tables)

    def with_table(self, table: str, source: str) -> Inbox:
        """Names the table whose stream feeds ``source``; returns this inbox."""
        self._tables[table] = source
        return self

    def receive(self, body: str) -> Received:
        """Applies one queue body now (the channel's clock), and counts it. Never raises: anything
        unexpected is counted as malformed."""
        try:
            received = self._receive(body)
        except Exception as err:
            log.exception("applying a queue message failed; counted as malformed")
            received = Received("malformed", error=f"{type(err).__name__}: {err}")
        _notify(self.observer.message, received.outcome)
        return received

    def _receive(self, body: str) -> Received:
        try:
            invalidation = decode(body)
        except DecodeError as err:
            give_up = decode_give_up(body)
            if give_up is not None:
                self._flush_given_up(give_up)
                return Received("give_up")
            log.debug("malformed queue message: %s", err)
            return Received("malformed", error=str(err))
        return self._apply(invalidation, self._health.now_ms())

    def flush_all_sources(self, reason: str) -> None:
        """Flushes every cache: the channel lost messages (a new queue or subscription)."""
        log.info("flushing caches: %s", reason)
        self._caches.flush_sources()

    def _record_tick(self, tick: Tick) -> str:
        """A tick arrived: admitted (``admitted``) or refused (the reason). One that restores
        trust flushes its source's caches *before* it is recorded; one that shows its writer's
        heartbeats went missing flushes them too."""
        health = self._health
        source = tick.source
        proof = SlotProof.of(tick.slot, tick.slots, tick.covered)
        admission = health.admit_tick(source, tick.writer, tick.written_at_ms, proof)
        if isinstance(admission, TickRejection):
            _notify(self.observer.tick_rejected, source, admission.value)
            log.warning(
                "tick refused, it vouches for nothing: source=%s writer=%s written_at_ms=%d lead_ms=%d reason=%s",
                source,
                tick.writer or "",
                tick.written_at_ms,
                tick.written_at_ms - health.now_ms(),
                admission.value,
            )
            return admission.value
        if admission.restores_trust:
            beyond_ms = health.time_beyond_bound_ms(source)
            cache = health.cache_of(source) or source
            _notify(self.observer.bypass_seconds, cache, beyond_ms / 1000)
            self._caches.flush_source(source)
            log.info(
                "ticks of %s back within the bound after %d ms past it; cache flushed and trusted again",
                source,
                beyond_ms,
            )
        elif heartbeats_missed(admission.previous_ms, tick.written_at_ms, tick.interval_ms):
            _notify(self.observer.tick_gap, source)
            self._caches.flush_source(source)
            previous = tick.written_at_ms if admission.previous_ms is None else admission.previous_ms
            log.warning(
                "heartbeats went missing on the way here; cache flushed: source=%s writer=%s slot=%s gap_ms=%d",
                source,
                tick.writer or "",
                proof.slot,
                tick.written_at_ms - previous,
            )
        health.record_tick(admission, tick.written_at_ms, proof)
        _notify(self.observer.tick, source)
        return "admitted"

    def _flush_given_up(self, give_up: GiveUp) -> None:
        """The event source mapping gave up records of a table: their invalidations will never
        arrive, so that table's caches are flushed (every cache when the table is not one of this
        task's: a renamed table must not be missed)."""
        table = give_up.table()
        source = None if table is None else self._tables.get(table)
        if source is not None:
            self._caches.flush_source(source)
        else:
            self.flush_all_sources("records of an unknown stream given up")
        label = source or "all"
        _notify(self.observer.give_up_flush, label)
        log.warning(
            "the event source mapping gave up records, their invalidations are lost; cache flushed: "
            "source=%s stream=%s shard=%s first=%s last=%s records=%d",
            label,
            give_up.stream_arn,
            give_up.shard_id or "",
            give_up.start_sequence_number or "",
            give_up.end_sequence_number or "",
            give_up.batch_size or 0,
        )

    def _apply(self, invalidation: Invalidation, now_ms: int) -> Received:
        if isinstance(invalidation, Tick):
            return Received("applied", tick=self._record_tick(invalidation))
        evicted = self._caches.apply(invalidation)
        if isinstance(invalidation, Invalidate):
            _notify(self.observer.invalidations_applied, invalidation.source, evicted)
            for key in invalidation.keys:
                if key.at_ms > 0:
                    _notify(self.observer.invalidation_lag, max(0, now_ms - key.at_ms) / 1000)
            log.debug("invalidation applied: source=%s keys=%d", invalidation.source, len(invalidation.keys))
        elif isinstance(invalidation, FlushAll):
            label = invalidation.source or "all"
            _notify(self.observer.invalidations_applied, label, 1)
            log.info("flush applied: source=%s reason=%s", label, invalidation.reason or "")
        return Received("applied")

    def __repr__(self) -> str:
        return f"Inbox(caches={self._caches!r}, tables={self._tables!r})"
