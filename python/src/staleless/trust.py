"""The trust rules of the freshness guarantee, as pure functions of the tick, the writer and the
time (``consumer/src/trust.rs``): which ticks count, and when a cache may be served.

A tick counts only when its writer is one of the configured heartbeat writers and it was not
written further in the future than the skew tolerance ``T``; and the tolerance is charged
against the bound ``B``: a tick vouches only while its lag plus ``T`` is within ``B``.

**Every shard.** A writer writes one heartbeat item per open shard (a *slot*); each tick names
its slot and every slot the writer writes, and a :class:`WriterLedger` vouches only while every
slot announced within the bound has a recent tick and the writer says its slots cover the
stream. A slot announced once is required for a whole bound after its last announcement.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from staleless._json import I64_MAX, I64_MIN, U64_MAX
from staleless.protocol import DEFAULT_HEARTBEAT_WRITER, FIRST_HEARTBEAT_SLOT

__all__ = [
    "DEFAULT_FUTURE_TOLERANCE_MS",
    "SlotProof",
    "TickRejection",
    "TrustRules",
    "WriterLedger",
    "heartbeats_missed",
]

#: The tolerance of a writer's clock running ahead of a task's, unless configured.
DEFAULT_FUTURE_TOLERANCE_MS = 500

#: What Rust's ``str::trim`` removes (Unicode ``White_Space``).
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _saturating_i64(value: int) -> int:
    return max(I64_MIN, min(I64_MAX, value))


class TickRejection(str, enum.Enum):
    """Why a tick was refused (the ``reason`` label of ``staleless_ticks_rejected_total``)."""

    #: Its writer is not a configured heartbeat writer (or the tick names none).
    UNKNOWN_WRITER = "unknown_writer"
    #: It was written further in the future than the tolerance.
    FROM_THE_FUTURE = "future"
    #: Its source is not one this task caches.
    UNKNOWN_SOURCE = "unknown_source"

    def __str__(self) -> str:
        return self.value


class TrustRules:
    """The rules of one task: its bound ``B``, its writers and the skew ``T`` it tolerates.

    Writers are trimmed, empty names dropped and consecutive duplicates removed; none means the
    default writer. The tolerance is capped at half the bound, so a tick always has room to vouch.
    """

    __slots__ = ("_bound_ms", "_future_tolerance_ms", "_writers")

    def __init__(
        self,
        bound_ms: int,
        future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
        writers: Iterable[str] = (),
    ) -> None:
        if isinstance(bound_ms, bool) or not isinstance(bound_ms, int) or bound_ms < 0:
            raise ValueError(f"bound_ms must be a non-negative int, not {bound_ms!r}")
        if isinstance(future_tolerance_ms, bool) or not isinstance(future_tolerance_ms, int) or future_tolerance_ms < 0:
            raise ValueError(f"future_tolerance_ms must be a non-negative int, not {future_tolerance_ms!r}")
        names = [writers] if isinstance(writers, str) else list(writers)
        kept: list[str] = []
        for name in names:
            trimmed = name.strip(_WHITE_SPACE)
            if trimmed and (not kept or kept[-1] != trimmed):
                kept.append(trimmed)
        if not kept:
            kept.append(DEFAULT_HEARTBEAT_WRITER)
        self._bound_ms = bound_ms
        # Rust halves the Duration (to the nanosecond) and reads whole milliseconds: a floor.
        self._future_tolerance_ms = min(future_tolerance_ms, bound_ms // 2)
        self._writers = tuple(kept)

    @classmethod
    def with_bound(cls, bound_ms: int) -> TrustRules:
        """The default writer and tolerance."""
        return cls(bound_ms)

    @property
    def bound_ms(self) -> int:
        """The bound ``B``, ms."""
        return self._bound_ms

    @property
    def future_tolerance_ms(self) -> int:
        """The tolerance ``T`` in effect, ms."""
        return self._future_tolerance_ms

    @property
    def writers(self) -> tuple[str, ...]:
        """The configured writers, in state order."""
        return self._writers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustRules):
            return NotImplemented
        return (self._bound_ms, self._future_tolerance_ms, self._writers) == (
            other._bound_ms,
            other._future_tolerance_ms,
            other._writers,
        )

    def __hash__(self) -> int:
        return hash((self._bound_ms, self._future_tolerance_ms, self._writers))

    def __repr__(self) -> str:
        return (
            f"TrustRules(bound_ms={self._bound_ms}, future_tolerance_ms={self._future_tolerance_ms}, "
            f"writers={self._writers!r})"
        )

    def admit(self, writer: str | None, written_ms: int, now_ms: int) -> int | TickRejection:
        """The index of the writer whose state a tick written by ``writer`` at ``written_ms``
        (writer's clock, Unix ms) and arriving at ``now_ms`` (this task's clock) goes into, or why
        it does not count."""
        if writer is None or writer not in self._writers:
            return TickRejection.UNKNOWN_WRITER
        if _saturating_i64(written_ms - now_ms) > self._future_tolerance_ms:
            return TickRejection.FROM_THE_FUTURE
        return self._writers.index(writer)

    def slot_deadline(self, written_ms: int, arrived_mono_ms: int, now_ms: int, mono_ms: int) -> int:
        """The last monotonic ms at which a slot's ticks vouch, computed at (``now_ms``,
        ``mono_ms``): its newest tick must be younger than ``B - T`` (its lag carried onto the
        monotonic clock) and one must have arrived within ``B``. Negative when that has passed."""
        lag_left = written_ms + self._bound_ms - self._future_tolerance_ms - now_ms
        by_lag = mono_ms + lag_left
        by_arrival = arrived_mono_ms + self._bound_ms
        return min(by_lag, by_arrival)


@dataclass(frozen=True)
class SlotProof:
    """What a tick says besides its writer and time: its slot, and the writer's announcement."""

    #: The heartbeat item the tick came from.
    slot: str = FIRST_HEARTBEAT_SLOT
    #: Every slot the writer writes into the table; ``None`` means only this one.
    slots: tuple[str, ...] | None = None
    #: Whether they cover every open shard of the stream.
    covered: bool = True

    #: The proof of a writer that predates slots: slot ``0``, alone, covering the stream.
    SINGLE: ClassVar[SlotProof]

    @staticmethod
    def of(slot: str | None, slots: Sequence[str] | None, covered: bool | None) -> SlotProof:
        """The proof of a tick's fields (absent ones as a writer that predates slots means them)."""
        return SlotProof(
            slot=FIRST_HEARTBEAT_SLOT if slot is None else slot,
            slots=None if slots is None else tuple(slots),
            covered=True if covered is None else covered,
        )


SlotProof.SINGLE = SlotProof()


class WriterLedger:
    """One writer's admitted ticks of one source, per slot, and what it announced."""

    __slots__ = ("_announced", "_covered", "_newest_ms", "_slots")

    def __init__(self) -> None:
        #: Slot -> (newest write time, Unix ms; arrival of its last tick, monotonic ms).
        self._slots: dict[str, tuple[int, int]] = {}
        #: Slot -> when (monotonic ms) a covering tick last announced it.
        self._announced: dict[str, int] = {}
        #: Write time of the newest tick, whose ``covered`` flag stands.
        self._newest_ms: int | None = None
        self._covered = False

    def copy(self) -> WriterLedger:
        """An independent copy."""
        other = WriterLedger()
        other._slots = dict(self._slots)
        other._announced = dict(self._announced)
        other._newest_ms = self._newest_ms
        other._covered = self._covered
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WriterLedger):
            return NotImplemented
        return (self._slots, self._announced, self._newest_ms, self._covered) == (
            other._slots,
            other._announced,
            other._newest_ms,
            other._covered,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"WriterLedger(slots={self._slots!r}, announced={self._announced!r}, "
            f"newest_ms={self._newest_ms!r}, covered={self._covered!r})"
        )

    def previous_ms(self, slot: str) -> int | None:
        """The newest write time of ``slot`` so far: what a gap of that slot is measured against."""
        ticks = self._slots.get(slot)
        return None if ticks is None else ticks[0]

    def newest_written_ms(self) -> int | None:
        """The newest write time over every slot."""
        return max((ticks[0] for ticks in self._slots.values()), default=None)

    def last_arrival_mono_ms(self) -> int | None:
        """When a tick of any slot last arrived (monotonic ms)."""
        return max((ticks[1] for ticks in self._slots.values()), default=None)

    @property
    def covered(self) -> bool:
        """Whether the newest tick said the slots cover the stream."""
        return self._covered

    def record(self, proof: SlotProof, written_ms: int, mono_ms: int) -> None:
        """Records an admitted tick written at ``written_ms``, arriving at ``mono_ms``."""
        ticks = self._slots.get(proof.slot)
        # An older tick arriving late proves the path works now, not that later changes were
        # sent: the write time only grows.
        newest = written_ms if ticks is None else max(ticks[0], written_ms)
        self._slots[proof.slot] = (newest, mono_ms)
        # Only a covering announcement sets what is required.
        if proof.covered:
            announced = proof.slots if proof.slots is not None else (proof.slot,)
            for slot in (*announced, proof.slot):
                self._announced[slot] = mono_ms
        if self._newest_ms is None or written_ms >= self._newest_ms:
            self._newest_ms = written_ms
            self._covered = proof.covered

    def vouches_until(self, rules: TrustRules, now_ms: int, mono_ms: int) -> int | None:
        """The last monotonic ms at which this writer vouches, computed at (``now_ms``,
        ``mono_ms``); ``None`` when it vouches for nothing (no slot, a required slot without a
        tick, a slot past its deadline, or not covering the stream)."""
        if not self._covered:
            return None
        until: int | None = None
        for slot, announced in self._announced.items():
            if max(0, mono_ms - announced) > rules.bound_ms:
                continue
            ticks = self._slots.get(slot)
            if ticks is None:
                return None
            slot_until = rules.slot_deadline(ticks[0], ticks[1], now_ms, mono_ms)
            if slot_until < 0:
                return None
            slot_until = min(slot_until, U64_MAX)
            until = slot_until if until is None else min(until, slot_until)
        if until is None or until < mono_ms:
            return None
        return until

    def required_slots(self, rules: TrustRules, mono_ms: int) -> list[tuple[str, tuple[int, int] | None]]:
        """The slots required now, sorted, each with its newest write time and arrival
        (monotonic ms), for the operators' report."""
        required = [
            (slot, self._slots.get(slot))
            for slot, announced in self._announced.items()
            if max(0, mono_ms - announced) <= rules.bound_ms
        ]
        required.sort(key=lambda entry: entry[0])
        return required


def heartbeats_missed(previous_ms: int | None, written_ms: int, interval_ms: int | None) -> bool:
    """Whether a tick written at ``written_ms`` shows that heartbeats of its writer went missing
    since that writer's newest tick of the slot before it (written at ``previous_ms``): a gap over
    one and a half of the writer's ``interval_ms``. Unknown values say nothing."""
    if previous_ms is None or interval_ms is None or not 0 < interval_ms <= I64_MAX:
        return False
    return _saturating_i64(written_ms - previous_ms) > _saturating_i64(interval_ms * 3) // 2
