"""The trust rules as pure functions of ticks and time (``consumer/src/trust.rs``'s tests)."""

from __future__ import annotations

from staleless.trust import (
    DEFAULT_FUTURE_TOLERANCE_MS,
    SlotProof,
    TickRejection,
    TrustRules,
    WriterLedger,
    heartbeats_missed,
)

NOW = 1_800_000_000_000
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


def rules() -> TrustRules:
    return TrustRules(15_000, 500, ["staleless", "backup"])


def proof(slot: str, slots: list[str], covered: bool) -> SlotProof:
    return SlotProof(slot=slot, slots=tuple(slots), covered=covered)


def test_only_configured_writers_count_each_in_its_own_state() -> None:
    trust = rules()
    assert trust.admit("staleless", NOW, NOW) == 0
    assert trust.admit("backup", NOW, NOW) == 1
    assert trust.admit("evil", NOW, NOW) is TickRejection.UNKNOWN_WRITER
    assert trust.admit(None, NOW, NOW) is TickRejection.UNKNOWN_WRITER
    assert TrustRules.with_bound(15_000).writers == ("staleless",)
    assert TrustRules.with_bound(15_000).future_tolerance_ms == DEFAULT_FUTURE_TOLERANCE_MS


def test_writers_are_trimmed_and_consecutive_repeats_dropped_as_in_rust() -> None:
    assert TrustRules(1_000, writers=[" a ", "", "a", "b", "\u3000", "a"]).writers == ("a", "b", "a")
    assert TrustRules(1_000, writers=["  ", ""]).writers == ("staleless",)
    assert TrustRules(1_000, writers="solo").writers == ("solo",)
    # Rust trims Unicode White_Space, which the ASCII separators \x1c-\x1f are not.
    assert TrustRules(1_000, writers=["\x1cw\x1c"]).writers == ("\x1cw\x1c",)
    assert TrustRules(1_000, 500, ["a"]) == TrustRules(1_000, 500, ("a",))
    assert "bound_ms=1000" in repr(TrustRules(1_000))


def test_a_tick_from_further_ahead_than_the_tolerance_is_refused() -> None:
    trust = rules()
    assert trust.admit("staleless", NOW + 500, NOW) == 0
    assert trust.admit("staleless", NOW + 501, NOW) is TickRejection.FROM_THE_FUTURE
    assert trust.admit("staleless", NOW + 3_600_000, NOW) is TickRejection.FROM_THE_FUTURE
    assert trust.admit("staleless", I64_MAX, I64_MIN) is TickRejection.FROM_THE_FUTURE
    assert trust.admit("staleless", NOW - 3_600_000, NOW) == 0, "a late tick is admitted; it vouches for nothing"
    assert str(TickRejection.FROM_THE_FUTURE) == "future"


def test_the_tolerance_is_charged_against_the_bound() -> None:
    trust = rules()
    assert trust.slot_deadline(NOW, 0, NOW, 0) == 14_500
    assert trust.slot_deadline(NOW - 14_500, 0, NOW, 1_000) == 1_000
    assert trust.slot_deadline(NOW - 14_501, 0, NOW, 1_000) < 1_000
    assert trust.slot_deadline(NOW + 500, 0, NOW, 0) == 15_000
    assert trust.slot_deadline(NOW, 0, NOW, 15_001) == 15_000
    assert trust.slot_deadline(I64_MIN, 0, I64_MAX, U64_MAX) < U64_MAX


def test_the_tolerance_never_takes_more_than_half_the_bound() -> None:
    assert TrustRules(2_000, 60_000).future_tolerance_ms == 1_000
    assert TrustRules(15_001, 7_501).future_tolerance_ms == 7_500


def test_a_writer_vouches_only_while_every_announced_slot_is_fresh() -> None:
    trust = rules()
    slots = ["0", "1", "2", "3"]
    ledger = WriterLedger()
    for slot in ["0", "1", "2"]:
        ledger.record(proof(slot, slots, True), NOW, 0)
    assert ledger.vouches_until(trust, NOW, 0) is None, "slot 3 has no tick yet"
    ledger.record(proof("3", slots, True), NOW, 0)
    assert ledger.vouches_until(trust, NOW, 0) == 14_500, "B less T"
    for second in range(1, 21):
        for slot in ["0", "1", "2"]:
            ledger.record(proof(slot, slots, True), NOW + second * 1_000, second * 1_000)
    assert ledger.vouches_until(trust, NOW + 20_000, 20_000) is None
    assert ledger.previous_ms("3") == NOW


def test_a_writer_that_does_not_cover_the_stream_vouches_for_nothing_until_it_does() -> None:
    trust = rules()
    ledger = WriterLedger()
    ledger.record(proof("0", ["0"], False), NOW, 0)
    assert ledger.vouches_until(trust, NOW, 0) is None
    ledger.record(proof("0", ["0"], True), NOW + 1, 1)
    assert ledger.vouches_until(trust, NOW + 1, 1) is not None
    ledger.record(proof("0", ["0"], False), NOW - 5_000, 2)
    assert ledger.vouches_until(trust, NOW + 2, 2) is not None, "an older tick does not take the word back"
    assert ledger.covered


def test_candidates_tried_while_not_covering_are_never_required() -> None:
    trust = rules()
    ledger = WriterLedger()
    for slot in ["1", "2"]:
        ledger.record(proof(slot, ["0", "1", "2"], False), NOW, 0)
    for slot in ["0", "1"]:
        ledger.record(proof(slot, ["0", "1"], True), NOW + 100, 100)
    assert [slot for slot, _ in ledger.required_slots(trust, 100)] == ["0", "1"]
    assert ledger.vouches_until(trust, NOW + 100, 100) is not None


def test_an_announcement_naming_fewer_slots_drops_a_slot_only_a_bound_later() -> None:
    trust = rules()
    ledger = WriterLedger()
    ledger.record(proof("0", ["0", "1"], True), NOW, 0)
    ledger.record(proof("1", ["0", "1"], True), NOW, 0)
    ledger.record(proof("0", ["0"], True), NOW + 1_000, 1_000)
    assert ledger.vouches_until(trust, NOW + 1_000, 1_000) == 14_500, "slot 1's own ticks still decide"
    ledger.record(proof("0", ["0"], True), NOW + 16_000, 16_000)
    assert ledger.vouches_until(trust, NOW + 16_000, 16_000) == 30_500
    assert ledger.required_slots(trust, 16_000) == [("0", (NOW + 16_000, 16_000))]


def test_a_ledger_copy_is_independent() -> None:
    ledger = WriterLedger()
    ledger.record(SlotProof.SINGLE, NOW, 0)
    copy = ledger.copy()
    assert copy == ledger
    copy.record(SlotProof.SINGLE, NOW + 5, 5)
    assert copy != ledger
    assert ledger.newest_written_ms() == NOW
    assert ledger.last_arrival_mono_ms() == 0
    assert WriterLedger().newest_written_ms() is None


def test_a_proof_of_absent_fields_is_slot_zero_alone_covering() -> None:
    assert SlotProof.of(None, None, None) == SlotProof.SINGLE == SlotProof("0", None, True)
    assert SlotProof.of("3", ["0", "3"], False) == SlotProof("3", ("0", "3"), False)


def test_a_gap_of_more_than_one_and_a_half_intervals_means_heartbeats_went_missing() -> None:
    assert not heartbeats_missed(None, 10_000, 5_000), "the first tick"
    assert not heartbeats_missed(5_000, 10_000, 5_000), "the next beat"
    assert not heartbeats_missed(5_000, 12_500, 5_000), "a late beat"
    assert heartbeats_missed(5_000, 15_000, 5_000), "one beat missing"
    assert not heartbeats_missed(15_000, 10_000, 5_000), "an older tick arriving late"
    assert not heartbeats_missed(5_000, 60_000, None), "a writer that does not say its interval"
    assert not heartbeats_missed(5_000, 60_000, 0)
    assert not heartbeats_missed(0, I64_MAX, I64_MAX + 1), "an interval beyond i64 says nothing"
    # Rust saturates 3 x interval at i64::MAX: a gap of 2^63 is over half of that (exact
    # arithmetic would compare it with 1.5 x i64::MAX and say no).
    assert heartbeats_missed(I64_MIN, 0, I64_MAX)
    assert heartbeats_missed(I64_MIN, I64_MAX, I64_MAX)
