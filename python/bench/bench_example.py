"""The FastAPI example's benchmark: its cache hit path beside the same service reading DynamoDB on
every request, in one run, side by side.

1. **In process, through the package**: µs per ``TrustedCache.get`` on a hit while the cache is
   trusted (channel subscribed, ticks recorded with ``record_ticks_now()`` on the
   ``SystemClock``), over 100 keys, median of 5 repeats: bare (no observer, no verification),
   with the example's Prometheus observer, and as the example wires it (its own ``create_app``:
   the observer and one hit in 1,000 re-read). Beside them, µs per read of the example's loader
   (``GetItem`` with ``ConsistentRead=True`` through ``asyncio.to_thread``, against moto) through
   ``TrustedCache.get`` in ``CacheMode.OFF``: every read goes to the table.
2. **Through the example as a process**, one uvicorn worker: a moto server on a free port (the
   project's ``infra/moto/serve.py``, as the Rust bench runs it), the users table with 100 users
   and the topic; the example started with ``CACHE_MODE=event`` and trusted the way production
   trusts it (a ticker here publishes ``tick`` messages to the topic every 500 ms, as the relay
   publishes the heartbeat's); every user read once, then ``wrk`` with a random user per request.
   After each run the example's ``/metrics`` must show the hits grown by at least the requests
   and no read bypassed or missed, else the figure is not the cache path's and the bench fails.
   Then ``CACHE_MODE=off``; the two alternate ``--rounds`` times each.
3. Prints a markdown section and, with ``--write``, puts it between ``<!-- python-bench:start -->``
   and ``<!-- python-bench:end -->`` in ``BENCHMARKS.md`` (appended when absent: below the part
   ``target/release/bench`` rewrites, so the Rust bench keeps it).

Run it from ``python/``: ``PYTHONPATH=src:. ../.venv/bin/python bench/bench_example.py [--write]``
(``scripts/bench python`` does, with ``--write``). It needs ``wrk`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import boto3

from examples.fastapi_profiles.app import (
    PARTITION_KEY,
    PROFILE_SK,
    SORT_KEY,
    USER_PK_PREFIX,
    ExampleConfig,
    create_app,
    name_loader,
)
from staleless.cache import CacheMode, ReadPath, TrustedCache
from staleless.config import SubscriberConfig
from staleless.health import ChannelHealth, SourceSpec, SystemClock
from staleless.metrics import Metrics, sample_sum

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient

PYTHON_DIR = Path(__file__).resolve().parents[1]
ROOT = PYTHON_DIR.parent
START_MARKER = "<!-- python-bench:start -->"
END_MARKER = "<!-- python-bench:end -->"
#: How long the servers may take to start, or the example to trust its cache, on a busy machine.
PATIENCE_S = 90.0
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: The example's bound (``STALENESS_BOUND_SECS``, its default) and the ticker's interval.
BOUND_SECS = 15
TICK_INTERVAL_MS = 500
#: The writer the example trusts by default (``HEARTBEAT_WRITERS``).
WRITER = "staleless"
#: The relay's message attribute naming the source (``protocol/src/lib.rs`` ``SOURCE_ATTRIBUTE``).
SOURCE_ATTRIBUTE = "source"
CACHE = "profiles"
#: Typography of the report, spelled out for the linter (RUF001).
DASH, TIMES = "\u2013", "\u00d7"

T = TypeVar("T")


class BenchError(Exception):
    """The run cannot produce a figure it could stand behind."""


# The machine and the software.


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1_048_576:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown memory"


def nproc() -> int:
    """What ``nproc`` prints: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=30)
    first = (done.stdout or done.stderr).splitlines()
    found = re.match(r"wrk (\S+)", first[0]) if first else None
    return found.group(1) if found else "unknown"


# Processes.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout_s: float = 10.0) -> tuple[int, str]:
    """The status and body of ``GET url`` (``0`` when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError:
        return 0, ""


def wait_for(what: str, condition: Callable[[], bool], patience_s: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + patience_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {patience_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, patience_s: float = 30.0) -> None:
    """Sends ``sig`` to a process this bench started (by its id), then kills it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=patience_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=patience_s)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command's ")": state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class MotoServer:
    """The project's moto server (``infra/moto/serve.py``: DynamoDB calls applied atomically,
    no per-request access line), on a free loopback port. ``MOTO_SERVER`` names another
    executable, as for the Rust emulator."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log: IO[bytes]

    @classmethod
    def start(cls) -> MotoServer:
        explicit = os.environ.get("MOTO_SERVER")
        program = [explicit] if explicit else [sys.executable, str(ROOT / "infra" / "moto" / "serve.py")]
        for _ in range(5):
            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
            process = subprocess.Popen(
                [*program, "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **CREDENTIALS, "STALELESS_MOTO_ACCESS_LOG": "0"},
                start_new_session=True,
            )
            server = cls(process, endpoint, log)
            deadline = time.monotonic() + PATIENCE_S
            while time.monotonic() < deadline and process.poll() is None:
                if http_get(f"{endpoint}/moto-api/", timeout_s=5)[0] == 200:
                    return server
                time.sleep(0.1)
            output = server.output()
            server.stop()
            if "Address already in use" not in output:
                raise BenchError(f"moto server did not answer on {endpoint}:\n{output}")
        raise BenchError("moto server found no free port")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            self.log.close()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **CREDENTIALS,
        }

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }

    def dynamodb(self) -> DynamoDBClient:
        return boto3.session.Session().client("dynamodb", **self._client_kwargs())

    def sns(self) -> SNSClient:
        return boto3.session.Session().client("sns", **self._client_kwargs())


@dataclass(frozen=True)
class Stack:
    """The users table (``users`` users ``u-000``...) and the topic, in moto."""

    moto: MotoServer
    table: str
    topic_arn: str
    user_ids: tuple[str, ...]
    queue_prefix: str

    @classmethod
    def create(cls, moto: MotoServer, users: int) -> Stack:
        suffix = uuid.uuid4().hex[:8]
        table = f"staleless-users-bench-{suffix}"
        dynamodb = moto.dynamodb()
        dynamodb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": SORT_KEY, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        user_ids = tuple(f"u-{n:03d}" for n in range(users))
        for user_id in user_ids:
            dynamodb.put_item(
                TableName=table,
                Item={
                    PARTITION_KEY: {"S": USER_PK_PREFIX + user_id},
                    SORT_KEY: {"S": PROFILE_SK},
                    "userId": {"S": user_id},
                    "name": {"S": name_of(user_id)},
                },
            )
        topic_arn = moto.sns().create_topic(Name=f"staleless-invalidations-bench-{suffix}")["TopicArn"]
        return cls(moto, table, topic_arn, user_ids, f"py-bench-{suffix}")

    def example_env(self, mode: CacheMode) -> dict[str, str]:
        """The example's settings: this stack, ``mode``, the defaults' bound and writer."""
        return {
            **self.moto.env(),
            "USERS_TABLE": self.table,
            "INVALIDATION_TOPIC_ARN": self.topic_arn,
            "QUEUE_NAME_PREFIX": self.queue_prefix,
            "CACHE_MODE": mode.value,
            "STALENESS_BOUND_SECS": str(BOUND_SECS),
            "HEARTBEAT_WRITERS": WRITER,
        }


def name_of(user_id: str) -> str:
    return f"User {user_id}"


class Ticker:
    """Publishes a ``tick`` of the users source to the topic every 500 ms, raw, with the
    ``source`` message attribute, as the relay publishes the heartbeat writer's ticks."""

    def __init__(self, stack: Stack) -> None:
        self._sns = stack.moto.sns()
        self._topic_arn = stack.topic_arn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticker", daemon=True)
        self.published = 0
        self.failed = 0

    def tick(self) -> None:
        body = {
            "v": 1,
            "kind": "tick",
            "source": "users",
            "written_at_ms": int(time.time() * 1000),
            "writer": WRITER,
            "interval_ms": TICK_INTERVAL_MS,
        }
        self._sns.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(body, separators=(",", ":")),
            MessageAttributes={SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": "users"}},
        )

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
                self.published += 1
            except Exception:
                self.failed += 1
            next_at += TICK_INTERVAL_MS / 1000
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# Part 1: in process, through the package.


async def ns_per_read(
    cache: TrustedCache[str, str | None],
    keys: Sequence[str],
    reads: int,
    load: Callable[[str], Awaitable[str | None]],
) -> float:
    """Nanoseconds per ``cache.get``, the loop and the per-read ``lambda`` (as the example's
    handler makes one) included."""
    count = len(keys)
    started = time.perf_counter_ns()
    for n in range(reads):
        key = keys[n % count]
        await cache.get(key, lambda: load(key))  # noqa: B023 - awaited within the iteration
    return (time.perf_counter_ns() - started) / reads


@dataclass(frozen=True)
class Spread:
    """A median and the range it came from."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class InProcess:
    bare_hit_us: Spread
    observed_hit_us: Spread
    wired_hit_us: Spread
    table_read_us: Spread
    keys: int
    hit_reads: int
    table_reads: int
    repeats: int
    wired_verifications: int


async def measure_in_process(stack: Stack, hit_reads: int, table_reads: int, repeats: int) -> InProcess:
    keys = stack.user_ids
    dynamodb = stack.moto.dynamodb()
    channel = SubscriberConfig.from_env(stack.example_env(CacheMode.EVENT))
    load = name_loader(dynamodb, stack.table, channel.aws.call_timeout_s)

    # Bare: the package's cache alone.
    health = ChannelHealth(channel.trust_rules(), [SourceSpec("users", CACHE)], clock=SystemClock())
    health.mark_subscribed("bench-in-process")
    bare: TrustedCache[str, str | None] = TrustedCache(
        health, "users", CacheMode.EVENT, max_entries=100_000, ttl_s=3_600
    )
    # With the example's observer (a Prometheus counter per hit), no verification.
    observed: TrustedCache[str, str | None] = TrustedCache(
        health, "users", CacheMode.EVENT, max_entries=100_000, ttl_s=3_600, observer=Metrics().watch(health)
    )

    # As the example wires it: its own create_app (observer, verification), its subscriber not run.
    app = create_app(ExampleConfig.from_env(stack.example_env(CacheMode.EVENT)), dynamodb)
    wired_health: ChannelHealth = app.state.health
    wired: TrustedCache[str, str | None] = app.state.names
    wired_health.mark_subscribed("bench-in-process-example")

    async def hits(cache: TrustedCache[str, str | None], vouched: ChannelHealth) -> Spread:
        vouched.record_ticks_now()
        for key in keys:  # fill
            if await cache.get(key, lambda: load(key)) != name_of(key):  # noqa: B023
                raise BenchError(f"the loader read a wrong name for {key}")
        values: list[float] = []
        for _ in range(repeats):
            vouched.record_ticks_now()
            before = cache.stats()
            if cache.read_path() is not ReadPath.CACHE:
                raise BenchError("the in-process cache is not trusted")
            values.append(await ns_per_read(cache, keys, hit_reads, load) / 1000)
            after = cache.stats()
            if after.hits - before.hits != hit_reads or after.misses != before.misses or after.bypassed:
                raise BenchError(f"not every in-process read was a hit: {before} → {after}")
            await cache.drain()  # the sampled re-reads, off the timing
        return Spread(tuple(values))

    bare_us = await hits(bare, health)
    observed_us = await hits(observed, health)
    wired_us = await hits(wired, wired_health)
    verification = wired.verification_stats()
    verifications = 0 if verification is None else verification.fresh + verification.stale

    off: TrustedCache[str, str | None] = TrustedCache(health, "users", CacheMode.OFF)
    table_us: list[float] = []
    for _ in range(repeats):
        table_us.append(await ns_per_read(off, keys, table_reads, load) / 1000)
    if off.stats().hits or off.stats().entries:
        raise BenchError("CacheMode.OFF served from its cache")
    return InProcess(
        bare_hit_us=bare_us,
        observed_hit_us=observed_us,
        wired_hit_us=wired_us,
        table_read_us=Spread(tuple(table_us)),
        keys=len(keys),
        hit_reads=hit_reads,
        table_reads=table_reads,
        repeats=repeats,
        wired_verifications=verifications,
    )


# Part 2: the example as a process, under wrk.


@dataclass(frozen=True)
class CacheCounts:
    hits: float
    misses: float
    bypassed: float
    trusted: float

    @classmethod
    def parse(cls, text: str) -> CacheCounts:
        def read(name: str) -> float:
            return sample_sum(text, name, cache=CACHE) or 0.0

        return cls(
            hits=read("staleless_cache_hits_total"),
            misses=read("staleless_cache_misses_total"),
            bypassed=read("staleless_cache_bypassed_reads_total"),
            trusted=read("staleless_cache_trusted"),
        )


class Example:
    """The example as a process (one uvicorn worker), its stderr drained by a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        keep = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
        keep["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR / "src"), str(PYTHON_DIR)])
        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            [sys.executable, "-m", "examples.fastapi_profiles"],
            cwd=PYTHON_DIR,
            env={**keep, **env, "PY_EXAMPLE_ADDR": "127.0.0.1:0"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.logged: list[str] = []
        self._reader = threading.Thread(target=self._read, name="bench-example-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._lines.put(raw.decode(errors="replace"))

    def _drain(self) -> None:
        while not self._lines.empty():
            self.logged.append(self._lines.get())

    def tail(self) -> str:
        self._drain()
        return "".join(self.logged[-30:])

    def listening(self) -> str:
        """The base URL, once the process logs ``listening``."""
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.logged.append(line)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                if record["fields"]["message"] == "listening":
                    return f"http://{record['fields']['addr']}"
        raise BenchError(f"the example logged no listening line:\n{self.tail()}")

    def stop(self) -> int | None:
        """SIGTERM (it unsubscribes and deletes its queue), then its exit status."""
        stop_process(self.process)
        self._reader.join(timeout=30)
        return self.process.returncode


@contextlib.contextmanager
def running_example(env: dict[str, str]) -> Iterator[Example]:
    example = Example(env)
    try:
        yield example
    finally:
        example.stop()


_DURATION = re.compile(r"^([0-9.]+)(us|ms|s|m)$")


def milliseconds(text: str) -> float:
    found = _DURATION.match(text)
    if found is None:
        raise BenchError(f"wrk printed a latency {text!r} this bench cannot read")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found.group(2)]
    return float(found.group(1)) * scale


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        def find(pattern: str) -> re.Match[str]:
            found = re.search(pattern, output, re.MULTILINE)
            if found is None:
                raise BenchError(f"wrk's output has no {pattern!r}:\n{output}")
            return found

        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        return cls(
            requests_per_s=float(find(r"^Requests/sec:\s+([0-9.]+)").group(1)),
            requests=int(find(r"^\s*(\d+) requests in").group(1)),
            p50_ms=milliseconds(find(r"^\s+50%\s+(\S+)").group(1)),
            p99_ms=milliseconds(find(r"^\s+99%\s+(\S+)").group(1)),
            non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
            socket_errors=sum(int(group) for group in errors.groups()) if errors else 0,
        )


#: One random user per request (wrk's LuaJIT; each thread seeds its own generator).
LUA = """\
local users = {users}
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  return wrk.format("GET", string.format("/profiles/u-%03d", math.random(0, users - 1)))
end
"""


@dataclass(frozen=True)
class Round:
    mode: CacheMode
    wrk: WrkResult
    before: CacheCounts
    after: CacheCounts
    #: CPU seconds over the wrk run: the example, moto.
    example_cpu_s: float
    moto_cpu_s: float
    duration_s: float
    exit_status: int | None


@dataclass(frozen=True)
class LoadSettings:
    wrk: str
    duration_s: int
    connections: int
    script: Path


def run_round(stack: Stack, mode: CacheMode, load: LoadSettings) -> Round:
    with running_example(stack.example_env(mode)) as example:
        base = example.listening()

        def counts() -> CacheCounts:
            status, body = http_get(f"{base}/metrics")
            if status != 200:
                raise BenchError(f"/metrics answered {status}:\n{example.tail()}")
            return CacheCounts.parse(body)

        # Trusted in both modes (the same subscriber runs, hearing the same ticks); only `event`
        # serves from the cache.
        wait_for(f"the {mode} example to trust its cache (/metrics)", lambda: counts().trusted == 1)
        for user_id in stack.user_ids:
            status, body = http_get(f"{base}/profiles/{user_id}", timeout_s=30)
            if status != 200 or json.loads(body) != {"userId": user_id, "name": name_of(user_id)}:
                raise BenchError(f"GET /profiles/{user_id} answered {status} {body!r}")
        before = counts()
        example_cpu, moto_cpu = cpu_seconds(example.process.pid), cpu_seconds(stack.moto.process.pid)
        command = [
            load.wrk,
            "-t1",
            f"-c{load.connections}",
            f"-d{load.duration_s}s",
            "--latency",
            "-s",
            str(load.script),
            base,
        ]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=load.duration_s + 120)
        duration = time.monotonic() - started
        example_cpu = cpu_seconds(example.process.pid) - example_cpu
        moto_cpu = cpu_seconds(stack.moto.process.pid) - moto_cpu
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        result = WrkResult.parse(done.stdout)
        after = counts()
        check_round(mode, result, before, after, example)
        exit_status = example.stop()
    return Round(mode, result, before, after, example_cpu, moto_cpu, duration, exit_status)


def check_round(mode: CacheMode, result: WrkResult, before: CacheCounts, after: CacheCounts, example: Example) -> None:
    """Fails unless the run measured the path it names."""
    problems: list[str] = []
    if result.non_2xx or result.socket_errors:
        problems.append(f"{result.non_2xx} non-2xx responses, {result.socket_errors} socket errors")
    if mode is CacheMode.EVENT:
        if after.bypassed != before.bypassed:
            problems.append(f"bypassed reads grew {before.bypassed:.0f} → {after.bypassed:.0f}")
        if after.misses != before.misses:
            problems.append(f"misses grew {before.misses:.0f} → {after.misses:.0f}")
        if after.hits - before.hits < result.requests:
            problems.append(f"hits grew by {after.hits - before.hits:.0f}, fewer than wrk's {result.requests} requests")
        if after.trusted != 1:
            problems.append("the cache was not trusted at the end of the run")
    elif after.hits != before.hits or after.bypassed != before.bypassed:
        problems.append(f"`off` counted cache hits or bypasses: {before} → {after}")
    if problems:
        raise BenchError(f"the {mode} run is not a figure of its path: " + "; ".join(problems) + "\n" + example.tail())


# The report.


@dataclass
class Report:
    command: str
    started: datetime.datetime
    load_start: str
    load_end: str = ""
    elapsed_s: float = 0.0
    in_process: InProcess | None = None
    rounds: list[Round] = field(default_factory=list)
    load: LoadSettings | None = None
    users: int = 0
    ticks_published: int = 0
    ticks_failed: int = 0
    wrk_version: str = ""

    def of(self, mode: CacheMode) -> list[Round]:
        return [one for one in self.rounds if one.mode is mode]


def fmt_us(value: float) -> str:
    return f"{value:.2f} µs" if value < 100 else f"{value:,.0f} µs"


def fmt_spread_us(spread: Spread) -> str:
    return f"**{fmt_us(spread.median)}** ({fmt_us(spread.low)} {DASH} {fmt_us(spread.high)})"


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def spread_of(rounds: Sequence[Round], pick: Callable[[Round], float]) -> Spread:
    return Spread(tuple(pick(one) for one in rounds))


def render(report: Report) -> str:
    assert report.in_process is not None
    assert report.load is not None
    inproc = report.in_process
    event, off = report.of(CacheMode.EVENT), report.of(CacheMode.OFF)
    rps_event, rps_off = (
        spread_of(event, lambda r: r.wrk.requests_per_s),
        spread_of(off, lambda r: r.wrk.requests_per_s),
    )
    p50_event, p50_off = spread_of(event, lambda r: r.wrk.p50_ms), spread_of(off, lambda r: r.wrk.p50_ms)
    p99_event, p99_off = spread_of(event, lambda r: r.wrk.p99_ms), spread_of(off, lambda r: r.wrk.p99_ms)

    def rps(spread: Spread) -> str:
        return f"**{spread.median:,.0f}** ({spread.low:,.0f} {DASH} {spread.high:,.0f})"

    def ms(spread: Spread) -> str:
        return f"{fmt_ms(spread.median)} ({fmt_ms(spread.low)} {DASH} {fmt_ms(spread.high)})"

    def cpu_per_request(rounds: Sequence[Round], pick: Callable[[Round], float]) -> str:
        per = [pick(one) / max(one.wrk.requests, 1) * 1e6 for one in rounds]
        busy = [pick(one) / one.duration_s * 100 for one in rounds]
        return f"{statistics.median(per):,.0f} µs ({statistics.median(busy):.0f} % of a core)"

    def median_of(rounds: Sequence[Round], pick: Callable[[Round], float]) -> float:
        return float(statistics.median(pick(one) for one in rounds))

    event_cpu_us = median_of(event, lambda r: r.example_cpu_s / max(r.wrk.requests, 1) * 1e6)
    event_busy = median_of(event, lambda r: r.example_cpu_s / r.duration_s * 100)
    off_example_us = median_of(off, lambda r: r.example_cpu_s / max(r.wrk.requests, 1) * 1e6)
    off_moto_us = median_of(off, lambda r: r.moto_cpu_s / max(r.wrk.requests, 1) * 1e6)
    hit_share = inproc.wired_hit_us.median / event_cpu_us * 100 if event_cpu_us else 0.0
    hits = sum(one.after.hits - one.before.hits for one in event)
    requests = sum(one.wrk.requests for one in event)
    bypassed = sum(one.after.bypassed - one.before.bypassed for one in event)
    misses = sum(one.after.misses - one.before.misses for one in event)
    in_order = "; ".join(f"{one.mode} {one.wrk.requests_per_s:,.0f}" for one in report.rounds)
    ratio = rps_event.median / rps_off.median if rps_off.median else float("inf")
    hit_ratio = inproc.table_read_us.median / inproc.wired_hit_us.median
    load = report.load
    versions = (
        f"Python {platform.python_version()}, fastapi {version('fastapi')}, uvicorn {version('uvicorn')} "
        f"(uvloop {version('uvloop')}, httptools {version('httptools')}: the asyncio loop and h11), "
        f"starlette {version('starlette')}, boto3 {version('boto3')}, prometheus-client "
        f"{version('prometheus-client')}, moto {version('moto')}, wrk {report.wrk_version}"
    )
    date = report.started.strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = float(report.load_start.split(" / ")[0])
    if load_at_start >= 1.0:
        machine_note = (
            f"The machine is shared, and it was busy: a 1-minute load average of {load_at_start:.2f} on "
            f"{nproc()} cores before the bench started anything. Every figure here is lower, and noisier, "
            "than on an idle machine; the ranges show how much."
        )
    else:
        machine_note = "Nothing else of note ran when the bench started (1-minute load average below 1)."
    lines = [
        START_MARKER,
        "## The Python FastAPI example: the cache hit path beside DynamoDB on every request",
        "",
        f"Produced by **`scripts/bench python`**, which runs `{report.command}` (no Rust build), on "
        f"{date}, in {report.elapsed_s:.0f} s. Machine: `nproc` {nproc()} ({cpu_model()}), {memory_gib()}, "
        f"{platform.system().lower()}; load average (1 / 5 / 15 min) **{report.load_start}** at the start and "
        f"**{report.load_end}** at the end (the latter counts the bench's own processes too: wrk, the "
        f"example and moto). {machine_note}",
        "",
        f"Versions: {versions}.",
        "",
        f"**In process, through the package** ({inproc.keys} keys; median of {inproc.repeats} repeats, "
        "range in brackets; `time.perf_counter_ns` around the loop, the loop and the per-read `lambda` "
        "the example's handler makes included):",
        "",
        "| read | µs per read |",
        "|---|---|",
        f"| `TrustedCache.get` hit while trusted, bare (no observer, no verification; "
        f"{inproc.hit_reads:,} reads a repeat) | {fmt_spread_us(inproc.bare_hit_us)} |",
        "| `TrustedCache.get` hit while trusted, with the example's observer (`staleless.metrics.Metrics`: a "
        f"Prometheus counter per hit), no verification | {fmt_spread_us(inproc.observed_hit_us)} |",
        f"| `TrustedCache.get` hit as the example wires it (`create_app`'s cache: Prometheus counter per "
        f"hit, one hit in 1,000 re-read off the request's path; {inproc.hit_reads:,} reads a repeat) "
        f"| {fmt_spread_us(inproc.wired_hit_us)} |",
        f"| the example's loader on every read: `TrustedCache.get` in `CacheMode.OFF` → `GetItem` "
        f"(`ConsistentRead`) through `asyncio.to_thread` against moto, one at a time; {inproc.table_reads:,} "
        f"reads a repeat | {fmt_spread_us(inproc.table_read_us)} |",
        "",
        f"**Through the example as a process**, one uvicorn worker: `wrk -t1 -c{load.connections} "
        f"-d{load.duration_s}s --latency`, a random user of {report.users} per request (`GET /profiles/u-NNN`), "
        "after every user was read once; the example's defaults but its table, topic and `CACHE_MODE` "
        f"(`STALENESS_BOUND_SECS={BOUND_SECS}`, `CACHE_VERIFY_ONE_IN=1000`). Its cache is trusted as in "
        f"production: a ticker in the bench publishes a `tick` of `users` to the topic every {TICK_INTERVAL_MS} "
        "ms (as the relay publishes the heartbeat's, raw, with the `source` attribute), in both modes, "
        f'and each run starts once `/metrics` shows `staleless_cache_trusted{{cache="{CACHE}"}} 1`. '
        f"`event` and `off` alternate, each on a fresh example process, {len(event)} rounds each; "
        "medians, range in brackets.",
        "",
        "| measure | `CACHE_MODE=event` | `CACHE_MODE=off` |",
        "|---|---|---|",
        f"| `GET /profiles/{{id}}` requests/s | {rps(rps_event)} | {rps(rps_off)} |",
        f"| latency p50 | {ms(p50_event)} | {ms(p50_off)} |",
        f"| latency p99 | {ms(p99_event)} | {ms(p99_off)} |",
        f"| `event` ÷ `off` (medians) | {ratio:,.1f}{TIMES} | 1{TIMES} |",
        "| errors (non-2xx, socket) | "
        + f"{sum(one.wrk.non_2xx + one.wrk.socket_errors for one in event)} | "
        + f"{sum(one.wrk.non_2xx + one.wrk.socket_errors for one in off)} |",
        f"| CPU of the example per request (median round) | {cpu_per_request(event, lambda r: r.example_cpu_s)} "
        f"| {cpu_per_request(off, lambda r: r.example_cpu_s)} |",
        f"| CPU of moto per request (median round) | {cpu_per_request(event, lambda r: r.moto_cpu_s)} "
        f"| {cpu_per_request(off, lambda r: r.moto_cpu_s)} |",
        f"| the cache over the `event` runs (`/metrics`) | {hits:,.0f} hits for {requests:,} requests wrk counted, "
        f"{misses:.0f} misses, {bypassed:.0f} bypassed reads | — (no cache) |",
        "",
        f"Rounds in run order, requests/s: {in_order}. Ticks published: {report.ticks_published} "
        f"({report.ticks_failed} failed).",
        "",
        "**Reading.** "
        + f"Through the package a hit costs {fmt_us(inproc.wired_hit_us.median)} as the example wires it and "
        + f"{fmt_us(inproc.bare_hit_us.median)} bare; the Prometheus observer adds "
        + f"{fmt_us(inproc.observed_hit_us.median - inproc.bare_hit_us.median)} (one counter increment: "
        + "`Metrics.hit` keeps each cache's counter, where resolving it with `labels(cache=...)` on every hit "
        + "once doubled a hit's cost) and the verification "
        + f"{fmt_us(inproc.wired_hit_us.median - inproc.observed_hit_us.median)} (the sampled path, whose counter "
        + "runs on every hit; the re-read itself is off the request's path). The loader's `GetItem` against "
        + f"moto costs {fmt_us(inproc.table_read_us.median)}, {hit_ratio:,.0f}{TIMES} a hit. Under wrk the `event` "
        + f"worker spends {fmt_us(event_cpu_us)} of CPU per request, of which the hit is about {hit_share:.0f} %: "
        + "the rest is uvicorn's HTTP/1.1 (h11, pure Python: the example depends on plain `uvicorn`, not "
        + "`uvicorn[standard]`), Starlette's routing and FastAPI's JSON response. It used "
        + f"{event_busy:.0f} % of a core on this shared machine, so {rps_event.median:,.0f} requests/s is what the "
        + "worker got beside the other work, not the ceiling of an idle core. "
        + f"In `off` each request also costs the example {fmt_us(off_example_us)} of CPU (the worker-thread hop, "
        + f"botocore's signing and parsing) and moto {fmt_us(off_moto_us)} to answer the `GetItem`, on the same "
        + f"{nproc()} cores as the example and wrk, so the `off` figure is bound by this machine's CPU. Real "
        + "DynamoDB would take none of this machine's CPU for the read but add a network round trip (a few ms "
        + "in-region) to every `off` request; there `off` would be bound by latency and the worker's thread pool "
        + f"(asyncio's default executor: {min(32, (os.cpu_count() or 1) + 4)} threads here) instead. The "
        + f"{ratio:,.1f}{TIMES} is a figure of this machine and this emulator, not of AWS; the hit's cost and the "
        + "`event` requests/s are the package's and the example's own.",
        "",
        "Found by this bench: the example created its listening socket with protocol 0, so asyncio set no "
        "`TCP_NODELAY` on its connections and each keep-alive response's body waited for the client's delayed "
        "ACK of its headers (about 40 ms): 340 requests/s at p50 47.8 ms with 16 connections while the worker "
        "used 11 % of a core (2026-12-04, the first run of this bench). It now creates the socket with "
        "`IPPROTO_TCP` (`_bound_socket` in `app.py`; `test_the_listening_socket_turns_nagle_off_on_each_connection`).",
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end != -1 and end > start:
        text = text[:start] + section + text[end + len(END_MARKER) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# Running it.


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="the file --write changes")
    parser.add_argument("--users", type=int, default=100, help="users in the table (default 100)")
    parser.add_argument("--hit-reads", type=int, default=200_000, help="cache hits timed per repeat")
    parser.add_argument("--table-reads", type=int, default=500, help="table reads timed per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="in-process repeats (median)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per mode, alternating")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    args = parser.parse_args(argv)
    if args.users < 1 or args.users > 1000:
        parser.error("--users must be 1..1000 (ids are u-000..u-999)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: wrk is not installed (apt-get install wrk; scripts/bench python installs it)", file=sys.stderr)
        return 1
    shown = ["bench/bench_example.py", *(sys.argv[1:] if argv is None else argv)]
    report = Report(
        command="cd python && PYTHONPATH=src:. ../.venv/bin/python " + shlex.join(shown),
        started=datetime.datetime.now(datetime.timezone.utc),
        load_start=load_average(),
        users=args.users,
        wrk_version=wrk_version(wrk),
    )
    began = time.monotonic()
    print(f"==> load average at start: {report.load_start}", file=sys.stderr)
    moto = MotoServer.start()
    try:
        stack = Stack.create(moto, args.users)
        print(
            f"==> in process: {args.hit_reads} hits and {args.table_reads} table reads, x{args.repeats}",
            file=sys.stderr,
        )
        report.in_process = asyncio.run(measure_in_process(stack, args.hit_reads, args.table_reads, args.repeats))
        with tempfile.TemporaryDirectory(prefix="staleless-bench-") as scratch:
            script = Path(scratch) / "random_user.lua"
            script.write_text(LUA.replace("{users}", str(args.users)))
            report.load = LoadSettings(wrk, args.duration, args.connections, script)
            with Ticker(stack) as ticker:
                for round_number in range(args.rounds):
                    for mode in (CacheMode.EVENT, CacheMode.OFF):
                        print(f"==> round {round_number + 1}/{args.rounds}: CACHE_MODE={mode}", file=sys.stderr)
                        one = run_round(stack, mode, report.load)
                        report.rounds.append(one)
                        print(
                            f"    {one.wrk.requests_per_s:,.0f} req/s, p50 {fmt_ms(one.wrk.p50_ms)}, "
                            f"p99 {fmt_ms(one.wrk.p99_ms)}",
                            file=sys.stderr,
                        )
                report.ticks_published, report.ticks_failed = ticker.published, ticker.failed
    except BaseException:
        if moto.process.poll() is not None:
            print(f"moto ended ({moto.process.returncode}); its output (tail):\n{moto.output()}", file=sys.stderr)
        raise
    finally:
        moto.stop()
    report.load_end = load_average()
    report.elapsed_s = time.monotonic() - began
    section = render(report)
    print(section)
    if args.write:
        write_section(args.out, section)
        print(f"==> wrote the section to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
