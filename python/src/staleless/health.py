"""Trust by ticks, per source: may each cache be served right now? (``consumer/src/health.rs``)

A successful receive proves only that the task's queue answers. What proves the whole path
(table, stream, relay, topic, subscription, queue) is a *tick*: a heartbeat item written into a
table that came back through all of it. A cache is trusted only while a tick of its source from
a configured writer arrived within the bound ``B`` and was written within ``B`` less the skew
tolerance (see :class:`~staleless.trust.TrustRules`). Past the bound the cache is bypassed
(read through); when a fresh tick arrives it is flushed first and trusted again.

Every method ending in ``_at`` takes the time (``now_ms``: Unix ms on the task's wall clock;
``mono_ms``: ms after the channel's origin on its monotonic clock); the others read the
channel's :class:`Clock`, the system's or a :class:`ManualClock` moved by hand (tests,
conformance vectors). Everything runs on the event loop's thread: no locks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from staleless._json import I64_MAX, I64_MIN
from staleless.trust import SlotProof, TickRejection, TrustRules, WriterLedger

__all__ = [
    "ChannelHealth",
    "Clock",
    "ManualClock",
    "SourceSpec",
    "SystemClock",
    "TickAdmission",
    "unix_now_ms",
]

#: "Not trusted" in the per-source deadlines.
_NO_TRUST = -1


def _saturating_i64(value: int) -> int:
    return max(I64_MIN, min(I64_MAX, value))


def unix_now_ms() -> int:
    """Milliseconds since the Unix epoch (this task's clock)."""
    return max(0, time.time_ns() // 1_000_000)


@runtime_checkable
class Clock(Protocol):
    """Where a channel reads the time."""

    def now_ms(self) -> int:
        """The wall clock, Unix ms."""
        ...

    def mono_ms(self) -> int:
        """Milliseconds since the clock's origin, on a monotonic clock."""
        ...


class SystemClock:
    """The task's wall clock, and its monotonic clock from the moment this clock was made."""

    __slots__ = ("_origin_ns",)

    def __init__(self) -> None:
        self._origin_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        return unix_now_ms()

    def mono_ms(self) -> int:
        return (time.monotonic_ns() - self._origin_ns) // 1_000_000


class ManualClock:
    """A wall clock and a monotonic clock that move only when told."""

    __slots__ = ("_mono_ms", "_now_ms")

    def __init__(self, now_ms: int, mono_ms: int = 0) -> None:
        self._now_ms = now_ms
        self._mono_ms = mono_ms

    def now_ms(self) -> int:
        return self._now_ms

    def mono_ms(self) -> int:
        return self._mono_ms

    def advance(self, ms: int) -> None:
        """Time passes: both clocks move ``ms`` (>= 0) forward."""
        if ms < 0:
            raise ValueError(f"time does not run backwards: advance({ms})")
        self._mono_ms += ms
        self._now_ms += ms

    def step_wall(self, ms: int) -> None:
        """The wall clock alone jumps ``ms`` (an NTP step; negative goes back)."""
        self._now_ms += ms

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self._now_ms}, mono_ms={self._mono_ms})"


@dataclass(frozen=True)
class SourceSpec:
    """A source of invalidations and ticks, and the cache it vouches for."""

    #: The source's name as messages carry it (``users``).
    source: str
    #: The cache it vouches for, as metrics and stats name it (``profiles``).
    cache: str


@dataclass(frozen=True)
class TickAdmission:
    """What admitting a tick changes, decided before it is recorded (see
    :meth:`ChannelHealth.admit_tick`)."""

    #: Which configured writer (its index in :attr:`TrustRules.writers`) the tick is of.
    writer_index: int
    #: The source's index in :attr:`ChannelHealth.sources`.
    source_index: int
    #: The newest tick of the same writer and slot before this one, for the gap test.
    previous_ms: int | None
    #: The cache is not trusted now and will be once the tick is recorded: flush it first.
    restores_trust: bool


class ChannelHealth:
    """The health of the invalidation channel and the trust in each cache, shared by the
    subscriber (writer) and every read (reader)."""

    def __init__(
        self,
        rules: TrustRules,
        sources: Sequence[SourceSpec],
        clock: Clock | None = None,
        required: bool = True,
    ) -> None:
        unique: list[SourceSpec] = []
        for spec in sources:
            if not any(known.source == spec.source for known in unique):
                unique.append(spec)
        self._rules = rules
        self._sources = tuple(unique)
        self._clock: Clock = SystemClock() if clock is None else clock
        self._required = required
        self._last_receive_mono_ms: int | None = None
        self._subscribed = False
        self._started = False
        self._stopping = False
        self._queue: str | None = None
        #: Per configured writer, per source.
        self._ledgers: list[list[WriterLedger]] = [[WriterLedger() for _ in unique] for _ in rules.writers]
        #: Per source: the last monotonic ms at which its cache is trusted, or ``_NO_TRUST``.
        self._trusted_until: list[int] = [_NO_TRUST for _ in unique]

    @classmethod
    def not_required(cls, sources: Sequence[SourceSpec], clock: Clock | None = None) -> ChannelHealth:
        """No channel (a task that caches by TTL or not at all): never trusted for invalidation,
        never blocks readiness."""
        return cls(TrustRules.with_bound(0), sources, clock=clock, required=False)

    # The configuration.

    @property
    def rules(self) -> TrustRules:
        """The bound, the writers and the skew tolerance."""
        return self._rules

    @property
    def bound_ms(self) -> int:
        """The bound ``B``, ms."""
        return self._rules.bound_ms

    @property
    def sources(self) -> tuple[SourceSpec, ...]:
        """The sources, in configuration order (the first of a name repeated)."""
        return self._sources

    @property
    def required(self) -> bool:
        """Whether a channel is expected at all."""
        return self._required

    @property
    def clock(self) -> Clock:
        """Where this channel reads the time."""
        return self._clock

    @property
    def queue(self) -> str | None:
        """The queue's name, once subscribed."""
        return self._queue

    @property
    def subscribed(self) -> bool:
        """Whether the queue is subscribed to the topic."""
        return self._subscribed

    def source_index(self, source: str) -> int | None:
        """The index of ``source`` in :attr:`sources`."""
        for index, spec in enumerate(self._sources):
            if spec.source == source:
                return index
        return None

    def cache_of(self, source: str) -> str | None:
        """The cache ``source`` vouches for."""
        index = self.source_index(source)
        return None if index is None else self._sources[index].cache

    # The time.

    def now_ms(self) -> int:
        """The wall clock, Unix ms, as this channel reads it."""
        return self._clock.now_ms()

    def mono_ms(self) -> int:
        """Milliseconds since the channel's origin (monotonic)."""
        return self._clock.mono_ms()

    # Trust and readiness.

    def _index_trusted_at(self, index: int, mono_ms: int) -> bool:
        return self._subscribed and mono_ms <= self._trusted_until[index]

    def is_trusted(self, source: str) -> bool:
        """Whether the cache of ``source`` may be served now: the queue is subscribed and some
        configured writer vouches for it. An unknown source is never trusted."""
        return self.is_trusted_at(source, self.mono_ms())

    def is_trusted_at(self, source: str, mono_ms: int) -> bool:
        """:meth:`is_trusted` at the given monotonic time."""
        index = self.source_index(source)
        return index is not None and self._index_trusted_at(index, mono_ms)

    def all_trusted(self) -> bool:
        """Whether every cache is trusted."""
        mono_ms = self.mono_ms()
        return all(self._index_trusted_at(index, mono_ms) for index in range(len(self._sources)))

    def is_ready(self) -> bool:
        """Whether the task is ready to serve: once it has started, until it begins to stop. A
        broken pipeline degrades the fleet to read-through; it never takes it out of service."""
        return not self._stopping and (not self._required or self._started)

    def mark_started(self) -> None:
        """The task has started serving (see :meth:`is_ready`)."""
        self._started = True

    def mark_stopping(self) -> None:
        """The task is shutting down: readiness turns false."""
        self._stopping = True

    def mark_subscribed(self, queue: str) -> None:
        """The queue is created and subscribed (flush the caches *before* calling this)."""
        self._queue = queue
        self._subscribed = True
        self.mark_started()

    def mark_unsubscribed(self) -> None:
        """The queue or its subscription is gone or being removed: stop trusting the caches."""
        self._subscribed = False

    def record_receive(self) -> None:
        """Records a successful receive."""
        self._last_receive_mono_ms = self.mono_ms()

    def since_receive_ms(self) -> int | None:
        """Milliseconds since the last successful receive."""
        if self._last_receive_mono_ms is None:
            return None
        return max(0, self.mono_ms() - self._last_receive_mono_ms)

    # Ticks.

    def _trusted_until_of(self, ledgers: Sequence[WriterLedger], now_ms: int, mono_ms: int) -> int:
        """Until when (monotonic ms) some writer of ``ledgers`` (one per writer) vouches."""
        deadlines = [
            until
            for until in (ledger.vouches_until(self._rules, now_ms, mono_ms) for ledger in ledgers)
            if until is not None
        ]
        return min(max(deadlines), I64_MAX) if deadlines else _NO_TRUST

    def _ledgers_of(self, index: int) -> list[WriterLedger]:
        return [per_source[index] for per_source in self._ledgers]

    def last_tick_written_ms(self, source: str) -> int | None:
        """When the newest admitted tick of ``source`` was written (Unix ms), over every writer."""
        index = self.source_index(source)
        if index is None:
            return None
        written = [ledger.newest_written_ms() for ledger in self._ledgers_of(index)]
        return max((ms for ms in written if ms is not None), default=None)

    def since_tick_ms(self, source: str) -> int | None:
        """Milliseconds since an admitted tick of ``source`` last arrived, from any writer."""
        index = self.source_index(source)
        if index is None:
            return None
        arrived = [ledger.last_arrival_mono_ms() for ledger in self._ledgers_of(index)]
        last = max((ms for ms in arrived if ms is not None), default=None)
        return None if last is None else max(0, self.mono_ms() - last)

    def admit_tick(
        self,
        source: str,
        writer: str | None,
        written_ms: int,
        proof: SlotProof = SlotProof.SINGLE,
    ) -> TickAdmission | TickRejection:
        """Decides on a tick of ``source`` by ``writer``, written at ``written_ms``, arriving now;
        records nothing. The caller flushes the cache when :attr:`TickAdmission.restores_trust`
        (or when the slot's heartbeats went missing), *then* calls :meth:`record_tick`. A
        :class:`TickRejection` says why the tick does not count: it must not be recorded."""
        return self.admit_tick_at(source, writer, written_ms, proof, self.now_ms(), self.mono_ms())

    def admit_tick_at(
        self,
        source: str,
        writer: str | None,
        written_ms: int,
        proof: SlotProof,
        now_ms: int,
        mono_ms: int,
    ) -> TickAdmission | TickRejection:
        """:meth:`admit_tick` at the given times."""
        source_index = self.source_index(source)
        if source_index is None:
            return TickRejection.UNKNOWN_SOURCE
        writer_index = self._rules.admit(writer, written_ms, now_ms)
        if isinstance(writer_index, TickRejection):
            return writer_index
        ledgers = self._ledgers_of(source_index)
        trial = ledgers[writer_index].copy()
        previous_ms = trial.previous_ms(proof.slot)
        trial.record(proof, written_ms, mono_ms)
        ledgers[writer_index] = trial
        restores_trust = (
            self._subscribed
            and not self._index_trusted_at(source_index, mono_ms)
            and self._trusted_until_of(ledgers, now_ms, mono_ms) >= min(mono_ms, I64_MAX)
        )
        return TickAdmission(
            writer_index=writer_index,
            source_index=source_index,
            previous_ms=previous_ms,
            restores_trust=restores_trust,
        )

    def record_tick(self, admission: TickAdmission, written_ms: int, proof: SlotProof = SlotProof.SINGLE) -> None:
        """Records an admitted tick (see :meth:`admit_tick`)."""
        self.record_tick_at(admission, written_ms, proof, self.now_ms(), self.mono_ms())

    def record_tick_at(
        self,
        admission: TickAdmission,
        written_ms: int,
        proof: SlotProof,
        now_ms: int,
        mono_ms: int,
    ) -> None:
        """:meth:`record_tick` at the given times."""
        index = admission.source_index
        self._ledgers[admission.writer_index][index].record(proof, written_ms, mono_ms)
        self._trusted_until[index] = self._trusted_until_of(self._ledgers_of(index), now_ms, mono_ms)

    def record_ticks_now(self) -> None:
        """Vouches for every source as of now, as a tick of each writer would: for benchmarks and
        tests that run without a heartbeat writer."""
        now_ms, mono_ms = self.now_ms(), self.mono_ms()
        for writer_index in range(len(self._rules.writers)):
            for source_index in range(len(self._sources)):
                admission = TickAdmission(
                    writer_index=writer_index,
                    source_index=source_index,
                    previous_ms=None,
                    restores_trust=False,
                )
                self.record_tick_at(admission, now_ms, SlotProof.SINGLE, now_ms, mono_ms)

    def time_beyond_bound_ms(self, source: str) -> int:
        """How long the cache of ``source`` has been past the bound, ms (zero while trusted): since
        trust ended, or since the newest tick would have let it last."""
        index = self.source_index(source)
        if index is None:
            return 0
        mono_ms = self.mono_ms()
        if self._index_trusted_at(index, mono_ms):
            return 0
        until = self._trusted_until[index]
        if until == _NO_TRUST:
            since = self.since_tick_ms(source)
            return 0 if since is None else max(0, since - self.bound_ms)
        return max(0, mono_ms - max(0, until))

    # Reports.

    def _source_report(self, index: int) -> dict[str, Any]:
        now_ms, mono_ms = self.now_ms(), self.mono_ms()

        def since(at: int) -> int:
            return max(0, mono_ms - at)

        ledgers = self._ledgers_of(index)
        writers: list[dict[str, Any]] = []
        for writer, ledger in zip(self._rules.writers, ledgers, strict=True):
            newest = ledger.newest_written_ms()
            arrival = ledger.last_arrival_mono_ms()
            writers.append(
                {
                    "writer": writer,
                    "vouches": ledger.vouches_until(self._rules, now_ms, mono_ms) is not None,
                    "covered": ledger.covered,
                    "lagMs": None if newest is None else _saturating_i64(now_ms - newest),
                    "msSinceTick": None if arrival is None else since(arrival),
                    "slots": [
                        {
                            "slot": slot,
                            "lagMs": None if ticks is None else _saturating_i64(now_ms - ticks[0]),
                            "msSinceTick": None if ticks is None else since(ticks[1]),
                        }
                        for slot, ticks in ledger.required_slots(self._rules, mono_ms)
                    ],
                }
            )
        written = max((ms for ms in (ledger.newest_written_ms() for ledger in ledgers) if ms is not None), default=None)
        arrived = max(
            (ms for ms in (ledger.last_arrival_mono_ms() for ledger in ledgers) if ms is not None), default=None
        )
        return {
            "cache": self._sources[index].cache,
            "trusted": self._index_trusted_at(index, mono_ms),
            "lagMs": None if written is None else _saturating_i64(now_ms - written),
            "msSinceTick": None if arrived is None else since(arrived),
            "lastTickWrittenAtMs": written,
            "writers": writers,
        }

    def report_of(self, source: str) -> dict[str, Any] | None:
        """The report of one source (as in :meth:`report`); ``None`` for an unknown source."""
        index = self.source_index(source)
        return None if index is None else self._source_report(index)

    def report(self) -> dict[str, Any]:
        """The report for operators, shaped as the Rust ``ChannelReport`` serialises: camelCase
        keys, then one entry per source by name (sorted)."""
        report: dict[str, Any] = {
            "required": self._required,
            "queue": self._queue,
            "subscribed": self._subscribed,
            "healthy": self.all_trusted(),
            "msSinceLastReceive": self.since_receive_ms(),
            "stalenessBoundSecs": self.bound_ms // 1000,
            "tickFutureToleranceMs": self._rules.future_tolerance_ms,
        }
        for index in sorted(range(len(self._sources)), key=lambda index: self._sources[index].source):
            report[self._sources[index].source] = self._source_report(index)
        return report

    def __repr__(self) -> str:
        sources = ", ".join(spec.source for spec in self._sources)
        return f"ChannelHealth(sources=[{sources}], subscribed={self._subscribed}, rules={self._rules!r})"
