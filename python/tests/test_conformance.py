"""Runs every conformance vector of ``protocol/conformance/`` against this package: the real
:class:`ChannelHealth`, :class:`Inbox` and :class:`TrustedCache`, on a :class:`ManualClock`.

The Rust crate runs the same files (``consumer/tests/conformance.rs``);
``protocol/conformance/README.md`` says what each step and expectation means. A step, a
parameter or an expectation this runner does not know fails the vector, so a typo in a vector
cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from staleless import (
    CacheMode,
    Caches,
    ChannelHealth,
    Inbox,
    KeyVersion,
    ManualClock,
    ReadPath,
    SourceSpec,
    TrustedCache,
    TrustRules,
)

REPOSITORY = Path(__file__).resolve().parents[2]
VECTORS = REPOSITORY / "protocol" / "conformance"

_VECTOR_FIELDS = {"name", "description", "config", "steps"}
_CONFIG_FIELDS = {"boundMs", "futureToleranceMs", "writers", "sources", "tables", "startMs"}
_CONFIG_REQUIRED = _CONFIG_FIELDS - {"tables"}
_I64 = (-(2**63), 2**63 - 1)
_U64 = (0, 2**64 - 1)


class VectorError(Exception):
    """A vector (or a step of one) that this runner cannot run as written."""


def vector_files() -> list[Path]:
    """Every vector file, sorted."""
    return sorted(VECTORS.glob("*.json"))


def _is_int(value: object, bounds: tuple[int, int]) -> bool:
    return type(value) is int and bounds[0] <= value <= bounds[1]


@dataclass(frozen=True)
class Config:
    bound_ms: int
    future_tolerance_ms: int
    writers: tuple[str, ...]
    sources: tuple[SourceSpec, ...]
    tables: Mapping[str, str]
    start_ms: int

    @staticmethod
    def of(raw: object) -> Config:
        if not isinstance(raw, dict):
            raise VectorError("config: expected an object")
        unknown = set(raw) - _CONFIG_FIELDS
        missing = _CONFIG_REQUIRED - set(raw)
        if unknown or missing:
            raise VectorError(f"config: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        for name in ("boundMs", "futureToleranceMs"):
            if not _is_int(raw[name], _U64):
                raise VectorError(f"config.{name}: expected a non-negative integer")
        if not _is_int(raw["startMs"], _I64):
            raise VectorError("config.startMs: expected an integer")
        writers = raw["writers"]
        if not isinstance(writers, list) or not all(isinstance(writer, str) for writer in writers):
            raise VectorError("config.writers: expected a list of strings")
        sources = raw["sources"]
        if not isinstance(sources, list):
            raise VectorError("config.sources: expected a list")
        specs = []
        for source in sources:
            if (
                not isinstance(source, dict)
                or set(source) != {"source", "cache"}
                or not all(isinstance(value, str) for value in source.values())
            ):
                raise VectorError("config.sources[]: expected {source, cache} strings")
            specs.append(SourceSpec(source["source"], source["cache"]))
        tables = raw.get("tables", {})
        if not isinstance(tables, dict) or not all(isinstance(value, str) for value in tables.values()):
            raise VectorError("config.tables: expected an object of strings")
        return Config(
            bound_ms=raw["boundMs"],
            future_tolerance_ms=raw["futureToleranceMs"],
            writers=tuple(writers),
            sources=tuple(specs),
            tables=tables,
            start_ms=raw["startMs"],
        )


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    config: Config
    steps: tuple[Any, ...]

    @staticmethod
    def of(raw: object) -> Vector:
        if not isinstance(raw, dict):
            raise VectorError("a vector is an object")
        if set(raw) != _VECTOR_FIELDS:
            raise VectorError(f"a vector has exactly the fields {sorted(_VECTOR_FIELDS)}, not {sorted(raw)}")
        if not isinstance(raw["name"], str) or not isinstance(raw["description"], str):
            raise VectorError("name and description are strings")
        if not isinstance(raw["steps"], list):
            raise VectorError("steps: expected a list")
        return Vector(raw["name"], raw["description"], Config.of(raw["config"]), tuple(raw["steps"]))

    @staticmethod
    def load(path: Path) -> Vector:
        vector = Vector.of(json.loads(path.read_text(encoding="utf-8")))
        if vector.name != path.stem:
            raise VectorError(f"{path.name}: the file is named after its vector ({vector.name})")
        return vector


class FlushRecorder:
    """Registered beside each cache: whether a step flushed it."""

    def __init__(self) -> None:
        self.flushed = False

    def evict(self, keys: Sequence[KeyVersion]) -> int:
        return 0

    def flush(self) -> None:
        self.flushed = True


@dataclass
class Fill:
    """A reader in flight."""

    reader: asyncio.Task[str]
    #: Releases its held loader (when it holds one).
    release: asyncio.Future[str] | None
    #: Whether its own loader ran.
    loaded: list[bool] = field(default_factory=lambda: [False])


@dataclass
class Observed:
    """What a step observed, for its expectations."""

    outcome: str | None = None
    tick: str | None = None
    path: str | None = None
    loaded: bool | None = None
    served: str | None = None


async def settle() -> None:
    """Lets every reader and fill run until it waits on something a later step releases."""
    for _ in range(64):
        await asyncio.sleep(0)


def _text(step: Mapping[str, Any], name: str) -> str:
    value = step.get(name)
    if not isinstance(value, str):
        raise VectorError(f"missing string `{name}`")
    return value


def _only(step: Mapping[str, Any], parameters: Sequence[str]) -> None:
    for key in step:
        if key not in ("do", "expect") and key not in parameters:
            raise VectorError(f"unknown parameter {key!r}")


def _json(value: object) -> str:
    return json.dumps(value)


def _same(expected: object, actual: object) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(_same(expected[key], actual[key]) for key in expected)
    return type(expected) is type(actual) and expected == actual


class Consumer:
    """One consumer, as a task runs it, driven step by step."""

    def __init__(self, config: Config) -> None:
        self.clock = ManualClock(config.start_ms)
        rules = TrustRules(config.bound_ms, config.future_tolerance_ms, config.writers)
        self.health = ChannelHealth(rules, config.sources, clock=self.clock)
        registry = Caches()
        self.caches: dict[str, TrustedCache[str, str]] = {}
        self.flushes: dict[str, FlushRecorder] = {}
        for spec in config.sources:
            cache: TrustedCache[str, str] = TrustedCache(self.health, spec.source, CacheMode.EVENT, 10_000, 3600.0)
            recorder = FlushRecorder()
            registry.register(spec.source, cache).register(spec.source, recorder)
            self.caches[spec.source] = cache
            self.flushes[spec.source] = recorder
        self.inbox = Inbox(self.health, registry, tables=config.tables)
        self.fills: dict[str, Fill] = {}

    def cache(self, source: str) -> TrustedCache[str, str]:
        cache = self.caches.get(source)
        if cache is None:
            raise VectorError(f"no cache for source {source!r}")
        return cache

    async def run(self, step: Mapping[str, Any]) -> Observed:
        """Runs one step and returns what it observed."""
        action = _text(step, "do")
        observed = Observed()
        if action == "subscribe":
            _only(step, ())
            self.inbox.flush_all_sources("conformance: (re)subscribed")
            self.health.mark_subscribed("conformance")
        elif action == "unsubscribe":
            _only(step, ())
            self.health.mark_unsubscribed()
        elif action == "advance":
            _only(step, ("ms",))
            ms = step.get("ms")
            if not _is_int(ms, _U64):
                raise VectorError("advance needs a non-negative integer `ms`")
            assert isinstance(ms, int)
            self.clock.advance(ms)
        elif action == "stepWallClock":
            _only(step, ("ms",))
            ms = step.get("ms")
            if not _is_int(ms, _I64):
                raise VectorError("stepWallClock needs an integer `ms`")
            assert isinstance(ms, int)
            self.clock.step_wall(ms)
        elif action == "receive":
            _only(step, ("body",))
            received = self.inbox.receive(_text(step, "body"))
            observed.outcome = received.outcome
            observed.tick = received.tick
        elif action == "read":
            _only(step, ("source", "key", "loaded"))
            fill, path = self.start_read(step, hold=False)
            observed.path = path.value
            observed.served = await self.finish(fill, "read")
            observed.loaded = fill.loaded[0]
        elif action == "fillStart":
            _only(step, ("fill", "source", "key"))
            name = _text(step, "fill")
            if name in self.fills:
                raise VectorError(f"fill {name!r} started twice")
            fill, path = self.start_read(step, hold=True)
            self.fills[name] = fill
            observed.path = path.value
            await settle()
            observed.loaded = fill.loaded[0]
        elif action == "fillEnd":
            _only(step, ("fill", "loaded"))
            fill = self.take_fill(_text(step, "fill"))
            if not fill.loaded[0] or fill.release is None:
                raise VectorError("fill joined another load: use `await`")
            fill.release.set_result(_text(step, "loaded"))
            observed.served = await self.finish(fill, "fillEnd")
        elif action == "await":
            _only(step, ("fill",))
            fill = self.take_fill(_text(step, "fill"))
            if fill.loaded[0]:
                raise VectorError("fill holds its own loader: use `fillEnd`")
            observed.served = await self.finish(fill, "await")
        else:
            raise VectorError(f"unknown step {action!r}")
        await settle()
        return observed

    def take_fill(self, name: str) -> Fill:
        fill = self.fills.pop(name, None)
        if fill is None:
            raise VectorError(f"no fill {name!r}")
        return fill

    def start_read(self, step: Mapping[str, Any], hold: bool) -> tuple[Fill, ReadPath]:
        """Starts a read of the step's key; its loader answers `loaded` at once, or is held open
        until `fillEnd` when `hold`."""
        cache = self.cache(_text(step, "source"))
        key = _text(step, "key")
        answer = None if hold else _text(step, "loaded")
        release: asyncio.Future[str] | None = asyncio.get_running_loop().create_future() if hold else None
        ran = [False]

        def loader() -> Awaitable[str]:
            ran[0] = True

            async def load() -> str:
                if answer is not None:
                    return answer
                assert release is not None
                return await release

            return load()

        path = cache.read_path()
        reader = asyncio.get_running_loop().create_task(cache.get(key, loader))
        return Fill(reader=reader, release=release, loaded=ran), path

    @staticmethod
    async def finish(fill: Fill, step: str) -> str:
        """The answer of a reader that must complete now."""
        await settle()
        if not fill.reader.done():
            fill.reader.cancel()
            raise VectorError(f"{step}: the reader is still waiting (it joined a held load?)")
        if fill.reader.cancelled():
            raise VectorError(f"{step}: the reader was cancelled")
        error = fill.reader.exception()
        if error is not None:
            raise VectorError(f"{step}: the load failed: {error!r}")
        return fill.reader.result()

    def check(self, expect: Mapping[str, Any], observed: Observed) -> list[str]:
        """Checks `expect` against the consumer now and what the step observed."""
        failures: list[str] = []

        def differs(what: str, expected: object, actual: object) -> None:
            if not _same(expected, actual):
                failures.append(f"{what}: expected {_json(expected)}, got {_json(actual)}")

        for key, expected in expect.items():
            if key in ("outcome", "tick", "path", "loaded", "served"):
                differs(key, expected, getattr(observed, key))
            elif key == "ready":
                differs(key, expected, self.health.is_ready())
            elif key == "flushed":
                differs(key, expected, sorted(source for source, recorder in self.flushes.items() if recorder.flushed))
            elif key == "trusted":
                if not isinstance(expected, dict):
                    failures.append("trusted: expected an object")
                    continue
                for source, trusted in expected.items():
                    differs(f"trusted.{source}", trusted, self.health.is_trusted(source))
            elif key == "cached":
                if not isinstance(expected, dict):
                    failures.append("cached: expected an object")
                    continue
                for source, keys in expected.items():
                    cache = self.caches.get(source)
                    if cache is None or not isinstance(keys, dict):
                        failures.append(f"cached.{source}: no such cache, or not an object")
                        continue
                    for id_, value in keys.items():
                        differs(f"cached.{source}.{id_}", value, cache.peek(id_))
            else:
                failures.append(f"unknown expectation {key!r}")
        return failures

    def reset_flushes(self) -> None:
        for recorder in self.flushes.values():
            recorder.flushed = False

    async def close(self) -> None:
        """Ends what the vector left in flight, so no task outlives it."""
        for fill in self.fills.values():
            if fill.release is not None and not fill.release.done():
                fill.release.cancel()
            fill.reader.cancel()
        await settle()
        for fill in self.fills.values():
            if fill.reader.done() and not fill.reader.cancelled():
                fill.reader.exception()
        self.fills.clear()


async def run_vector(vector: Vector) -> tuple[list[str], int]:
    """Runs one vector: its failures, each naming the step, and how many steps passed."""
    consumer = Consumer(vector.config)
    failures: list[str] = []
    passed = 0
    try:
        for index, step in enumerate(vector.steps):
            name = step.get("do", "?") if isinstance(step, dict) else "?"
            if not isinstance(step, dict):
                failures.append(f"step {index}: a step is an object")
                break
            consumer.reset_flushes()
            try:
                observed = await consumer.run(step)
            except VectorError as err:
                failures.append(f"step {index} ({name}): {err}")
                break
            expect = step.get("expect")
            if expect is None:
                passed += 1
                continue
            if not isinstance(expect, dict):
                failures.append(f"step {index} ({name}): `expect` must be an object")
                break
            step_failures = consumer.check(expect, observed)
            failures.extend(f"step {index} ({name}): {failure}" for failure in step_failures)
            passed += not step_failures
    finally:
        await consumer.close()
    return failures, passed


def test_the_directory_holds_vectors() -> None:
    files = vector_files()
    assert files, f"no conformance vectors in {VECTORS}"
    names = [Vector.load(path).name for path in files]
    assert len(set(names)) == len(names), "a vector name twice"


@pytest.mark.parametrize("path", vector_files(), ids=lambda path: path.stem)
async def test_vector(path: Path) -> None:
    vector = Vector.load(path)
    failures, _ = await run_vector(vector)
    assert not failures, f"conformance vector {vector.name} failed:\n" + "\n".join(
        f"{vector.name}: {failure}" for failure in failures
    )


def _self_check(steps: list[Any]) -> Vector:
    return Vector.of(
        {
            "name": "self-check",
            "description": "",
            "config": {
                "boundMs": 15000,
                "futureToleranceMs": 500,
                "writers": ["staleless"],
                "sources": [{"source": "users", "cache": "profiles"}],
                "startMs": 1_800_000_000_000,
            },
            "steps": steps,
        }
    )


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"do": "subscribe", "expect": {"trusted": {"users": True}}}], id="wrong-expectation"),
        pytest.param([{"do": "teleport"}], id="unknown-step"),
        pytest.param([{"do": "subscribe", "expect": {"trustd": {}}}], id="unknown-expectation"),
        pytest.param([{"do": "advance", "ms": 1, "by": 2}], id="unknown-parameter"),
        pytest.param([{"do": "subscribe", "expect": {"ready": 1}}], id="a-number-is-not-a-boolean"),
        pytest.param([{"do": "fillEnd", "fill": "a", "loaded": "x"}], id="no-such-fill"),
        pytest.param(
            [
                {"do": "fillStart", "fill": "a", "source": "users", "key": "k"},
                {"do": "fillStart", "fill": "b", "source": "users", "key": "k"},
                {"do": "fillEnd", "fill": "b", "loaded": "x"},
            ],
            id="fill-end-of-a-joined-reader",
        ),
    ],
)
async def test_the_runner_fails_a_wrong_vector(steps: list[Any]) -> None:
    failures, _ = await run_vector(_self_check(steps))
    assert len(failures) == 1, failures


async def test_the_runner_passes_a_right_vector() -> None:
    vector = _self_check(
        [
            {"do": "subscribe", "expect": {"trusted": {"users": False}, "flushed": ["users"], "ready": True}},
            {
                "do": "fillStart",
                "fill": "a",
                "source": "users",
                "key": "k",
                "expect": {"path": "bypass", "loaded": True},
            },
            {"do": "fillStart", "fill": "b", "source": "users", "key": "k", "expect": {"loaded": False}},
            {"do": "fillEnd", "fill": "a", "loaded": "x", "expect": {"served": "x", "cached": {"users": {"k": None}}}},
            {"do": "await", "fill": "b", "expect": {"served": "x"}},
        ]
    )
    assert await run_vector(vector) == ([], 5)


def test_config_and_vector_fields_are_checked() -> None:
    with pytest.raises(VectorError):
        Vector.of({"name": "x", "config": {}, "steps": []})
    good = _self_check([])
    assert good.config.bound_ms == 15000
    with pytest.raises(VectorError):
        Config.of({"boundMs": 1, "futureToleranceMs": 1, "writers": [], "sources": [], "startMs": 0, "extra": 1})
    with pytest.raises(VectorError):
        Config.of({"boundMs": True, "futureToleranceMs": 1, "writers": [], "sources": [], "startMs": 0})
