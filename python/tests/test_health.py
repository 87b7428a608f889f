"""Trust per source by ticks, on a controlled clock (``consumer/src/health.rs``'s tests)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from staleless.health import ChannelHealth, ManualClock, SourceSpec, SystemClock, TickAdmission
from staleless.trust import SlotProof, TickRejection, TrustRules, heartbeats_missed

BOUND_MS = 15_000
EPOCH_MS = 1_800_000_000_000
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

SOURCES = [SourceSpec("users", "profiles"), SourceSpec("roles", "roles")]


def channel(writers: list[str], clock: ManualClock | None = None) -> ChannelHealth:
    health = ChannelHealth(TrustRules(BOUND_MS, 500, writers), SOURCES, clock=clock or ManualClock(EPOCH_MS))
    health.mark_subscribed("q")
    return health


def tick(
    health: ChannelHealth,
    source: str,
    writer: str,
    written_ms: int,
    mono_ms: int,
    proof: SlotProof = SlotProof.SINGLE,
) -> TickAdmission | TickRejection:
    """Admits and records a tick arriving at ``mono_ms`` (wall clock ``EPOCH_MS + mono_ms``)."""
    now_ms = EPOCH_MS + mono_ms
    admission = health.admit_tick_at(source, writer, written_ms, proof, now_ms, mono_ms)
    if isinstance(admission, TickAdmission):
        health.record_tick_at(admission, written_ms, proof, now_ms, mono_ms)
    return admission


def admitted(result: TickAdmission | TickRejection) -> TickAdmission:
    assert isinstance(result, TickAdmission), result
    return result


def trusted(health: ChannelHealth, source: str, mono_ms: int) -> bool:
    return health.is_trusted_at(source, mono_ms)


def test_each_source_is_trusted_on_its_own_ticks() -> None:
    health = channel(["staleless"])
    assert health.is_ready(), "a subscribed task serves, reading through until ticks arrive"
    assert not trusted(health, "users", 0)
    assert not trusted(health, "roles", 0)
    admission = admitted(tick(health, "users", "staleless", EPOCH_MS, 0))
    assert admission.restores_trust
    assert admission.previous_ms is None
    assert trusted(health, "users", 0)
    assert not trusted(health, "roles", 0), "a users tick says nothing of the roles path"
    admitted(tick(health, "roles", "staleless", EPOCH_MS - 60_000, 0))
    assert not trusted(health, "roles", 0), "a tick written a minute ago is past the bound"
    admitted(tick(health, "roles", "staleless", EPOCH_MS, 0))
    assert trusted(health, "roles", 0)
    admitted(tick(health, "roles", "staleless", 0, 0))
    assert trusted(health, "roles", 0), "an older tick arriving late never moves the write time back"
    assert not trusted(health, "users", 15_001), "no tick for longer than the bound"
    assert not trusted(health, "orders", 0), "an unknown source is never trusted"
    health.mark_unsubscribed()
    assert not trusted(health, "users", 0)
    assert health.is_ready()
    health.mark_stopping()
    assert not health.is_ready()


def test_a_tick_from_an_hour_ahead_is_refused_and_hides_neither_a_gap_nor_a_silence() -> None:
    health = channel(["staleless"])
    admitted(tick(health, "users", "staleless", EPOCH_MS, 0))
    assert tick(health, "users", "staleless", EPOCH_MS + 3_600_000, 1_000) is TickRejection.FROM_THE_FUTURE
    assert health.last_tick_written_ms("users") == EPOCH_MS
    admission = admitted(tick(health, "users", "staleless", EPOCH_MS + 10_000, 10_000))
    assert admission.previous_ms == EPOCH_MS
    assert heartbeats_missed(admission.previous_ms, EPOCH_MS + 10_000, 5_000)
    for at in range(11_000, 40_000, 1_000):
        tick(health, "users", "staleless", EPOCH_MS + 3_600_000 + at, at)
    assert not trusted(health, "users", 40_000)


def test_a_forged_writer_vouches_for_nothing_and_writers_keep_their_own_state() -> None:
    health = channel(["staleless", "backup"])
    assert tick(health, "roles", "evil", EPOCH_MS, 0) is TickRejection.UNKNOWN_WRITER
    assert tick(health, "orders", "staleless", EPOCH_MS, 0) is TickRejection.UNKNOWN_SOURCE
    assert not trusted(health, "roles", 0)
    admitted(tick(health, "roles", "backup", EPOCH_MS - 3_600_000, 0))
    assert not trusted(health, "roles", 0)
    admitted(tick(health, "roles", "staleless", EPOCH_MS, 0))
    assert trusted(health, "roles", 0)
    admission = admitted(tick(health, "roles", "staleless", EPOCH_MS + 5_000, 5_000))
    assert admission.previous_ms == EPOCH_MS, "not the other writer's time"
    assert [writer["writer"] for writer in health.report()["roles"]["writers"]] == ["staleless", "backup"]


def test_a_stuck_shard_stops_trust_within_the_bound_while_the_others_flow() -> None:
    health = channel(["staleless"])
    slots = ("0", "1", "2", "3")

    def beat(slot: str, at: int) -> TickAdmission:
        return admitted(tick(health, "users", "staleless", EPOCH_MS + at, at, SlotProof(slot, slots, True)))

    for slot in slots:
        beat(slot, 0)
    assert trusted(health, "users", 0)
    last_trusted = 0
    for at in range(500, 30_001, 500):
        for slot in ("0", "1", "3"):
            beat(slot, at)
        if trusted(health, "users", at):
            last_trusted = at
    assert last_trusted == 14_500, "trust ends B less T after the stuck shard's last tick"
    assert beat("2", 30_500).restores_trust
    assert trusted(health, "users", 30_500)


def test_readiness_waits_for_the_start_and_not_for_ticks() -> None:
    health = ChannelHealth(TrustRules.with_bound(BOUND_MS), SOURCES, clock=ManualClock(EPOCH_MS))
    assert not health.is_ready()
    health.mark_started()
    assert health.is_ready()
    assert ChannelHealth.not_required(SOURCES).is_ready()
    report = health.report()
    assert not report["healthy"]
    assert not report["users"]["trusted"]
    assert report["users"]["lagMs"] is None


def test_sources_are_unique_by_name_and_know_their_cache() -> None:
    health = ChannelHealth(TrustRules.with_bound(BOUND_MS), [*SOURCES, SourceSpec("users", "other")])
    assert [spec.cache for spec in health.sources] == ["profiles", "roles"]
    assert health.cache_of("users") == "profiles"
    assert health.cache_of("orders") is None
    assert health.source_index("roles") == 1
    assert health.source_index("orders") is None
    assert isinstance(health.clock, SystemClock)
    assert health.bound_ms == BOUND_MS


def test_the_report_has_the_rust_shape() -> None:
    clock = ManualClock(EPOCH_MS)
    health = channel(["staleless"], clock)
    health.record_receive()
    admitted(health.admit_tick("users", "staleless", EPOCH_MS - 200, SlotProof("1", ("0", "1"), True)))
    admission = health.admit_tick("users", "staleless", EPOCH_MS - 200, SlotProof("1", ("0", "1"), True))
    health.record_tick(admitted(admission), EPOCH_MS - 200, SlotProof("1", ("0", "1"), True))
    clock.advance(300)
    report = health.report()
    assert list(report) == [
        "required",
        "queue",
        "subscribed",
        "healthy",
        "msSinceLastReceive",
        "stalenessBoundSecs",
        "tickFutureToleranceMs",
        "roles",
        "users",
    ]
    assert report["queue"] == "q"
    assert report["msSinceLastReceive"] == 300
    assert report["stalenessBoundSecs"] == 15
    assert report["tickFutureToleranceMs"] == 500
    assert report["users"] == {
        "cache": "profiles",
        "trusted": False,
        "lagMs": 500,
        "msSinceTick": 300,
        "lastTickWrittenAtMs": EPOCH_MS - 200,
        "writers": [
            {
                "writer": "staleless",
                "vouches": False,
                "covered": True,
                "lagMs": 500,
                "msSinceTick": 300,
                "slots": [
                    {"slot": "0", "lagMs": None, "msSinceTick": None},
                    {"slot": "1", "lagMs": 500, "msSinceTick": 300},
                ],
            }
        ],
    }
    assert health.report_of("users") == report["users"]
    assert health.report_of("x") is None
    assert health.since_tick_ms("users") == 300
    assert health.since_tick_ms("roles") is None


def test_time_beyond_the_bound() -> None:
    clock = ManualClock(EPOCH_MS)
    health = channel(["staleless"], clock)
    assert health.time_beyond_bound_ms("users") == 0, "never ticked, never past it"
    health.record_ticks_now()
    assert health.all_trusted()
    assert health.time_beyond_bound_ms("users") == 0
    clock.advance(20_000)
    # Trust ended B less T after the tick (14.5 s): 5.5 s ago.
    assert health.time_beyond_bound_ms("users") == 5_500
    assert health.time_beyond_bound_ms("orders") == 0


def test_the_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(100, 5)
    clock.advance(10)
    clock.step_wall(-50)
    assert (clock.now_ms(), clock.mono_ms()) == (60, 15)
    system = SystemClock()
    assert system.mono_ms() >= 0
    assert system.now_ms() > EPOCH_MS - 10**12


WRITERS = ["staleless", "backup", "evil", "staleless "]

step = st.tuples(
    st.integers(0, 5_999),
    st.sampled_from(["users", "roles"]),
    st.integers(0, len(WRITERS) - 1),
    st.one_of(
        st.integers(-20_000, 19_999),
        st.integers(-7_200_000, 7_199_999),
        st.just(I64_MAX),
        st.just(I64_MIN),
    ),
    st.booleans(),
)


def _saturating(value: int) -> int:
    return max(I64_MIN, min(I64_MAX, value))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=120))
def test_no_tick_sequence_makes_trust_outlive_the_proof(steps: list[tuple[int, str, int, int, bool]]) -> None:
    configured = ["staleless", "backup"]
    health = channel(configured)
    tolerance = health.rules.future_tolerance_ms
    arrived: list[tuple[str, str, int, int]] = []
    mono = 0
    for advance_ms, source, writer_index, offset_ms, arrives in steps:
        mono += advance_ms
        now = EPOCH_MS + mono
        writer = WRITERS[writer_index]
        written = _saturating(now + offset_ms)
        if arrives:
            tick(health, source, writer, written, mono)
            arrived.append((source, writer, written, now))
        for of in ("users", "roles"):
            proof = any(
                origin == of
                and by in configured
                and now - at <= BOUND_MS
                and written <= _saturating(at + tolerance)
                and _saturating(_saturating(now - written) + tolerance) <= BOUND_MS
                for origin, by, written, at in arrived
            )
            assert not trusted(health, of, mono) or proof, f"{of} trusted without proof at {mono} ms"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2_999),
            st.integers(0, 3),
            st.integers(-20_000, 1_999),
            st.lists(st.integers(0, 3), max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=150,
    )
)
def test_no_slot_sequence_makes_trust_outlive_a_shards_proof(
    steps: list[tuple[int, int, int, list[int], bool]],
) -> None:
    health = channel(["staleless"])
    tolerance = health.rules.future_tolerance_ms
    names = ["0", "1", "2", "3"]
    log: list[tuple[int, list[int], bool, int, int]] = []
    mono = 0
    for advance, slot, offset, announced, covered in steps:
        mono += advance
        now = EPOCH_MS + mono
        written = now + offset
        proof = SlotProof(names[slot], tuple(names[index] for index in announced), covered)
        if isinstance(tick(health, "users", "staleless", written, mono, proof), TickAdmission):
            log.append((slot, announced, covered, written, now))

        def recent(at: int, now: int = now) -> bool:
            return now - at <= BOUND_MS

        required = sorted({index for entry in log if recent(entry[4]) and entry[2] for index in [*entry[1], entry[0]]})

        def proven(slot: int, now: int = now) -> bool:
            return any(
                of == slot and now - at <= BOUND_MS and now - w + tolerance <= BOUND_MS for of, _, _, w, at in log
            )

        newest = max(log, key=lambda entry: entry[3], default=None)
        newest_covers = newest is not None and (newest[2] or any(other[3] == newest[3] and other[2] for other in log))
        holds = bool(required) and all(proven(index) for index in required) and newest_covers
        assert not trusted(health, "users", mono) or holds, f"trusted without every shard's proof at {mono} ms: {log}"


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=120))
def test_hostile_ticks_never_move_a_writers_gap_baseline(steps: list[tuple[int, str, int, int, bool]]) -> None:
    health = channel(["staleless"])
    mono = 0
    honest_newest: int | None = None
    for advance_ms, source, writer_index, offset_ms, arrives in steps:
        mono += advance_ms
        now = EPOCH_MS + mono
        hostile_offset = max(min(abs(offset_ms), I64_MAX), 501)
        if arrives:
            writer, written = "staleless", now
        else:
            writer, written = WRITERS[max(writer_index, 1)], _saturating(now + hostile_offset)
        if not arrives and writer_index % 2 == 1:
            writer = "staleless"
        result = tick(health, source, writer, written, mono)
        if isinstance(result, TickAdmission):
            assert arrives, f"a hostile tick was admitted: {writer} {written}"
            if source == "users":
                assert result.previous_ms == honest_newest
                honest_newest = written if honest_newest is None else max(honest_newest, written)
        else:
            assert not arrives
