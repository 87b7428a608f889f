"""The FastAPI example against moto, as ``tests/tests/example.rs`` holds the Rust one: profiles
and their error shapes, ``/ready``, ``/metrics`` with the API tasks' names, a rename made
straight to the table reaching it through the topic, its queue removed on shutdown; and as a
process, as ``examples/profiles/tests/main.rs`` holds the Rust binary: it refuses to start
without its topic or with a malformed address, naming the setting, logs ``listening`` once it
serves, and removes its queue on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from examples.fastapi_profiles.app import ExampleConfig, _bound_socket, create_app
from moto_support import PATIENCE_S, Moto, eventually, eventually_async, unique
from staleless.cache import CacheMode, ReadPath
from staleless.metrics import sample_sum

PYTHON_DIR = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytest_plugins = ("conftest_moto",)

APP = PYTHON_DIR / "examples" / "fastapi_profiles" / "app.py"
#: The names the Rust end-to-end test requires of the Rust example, and the contract of
#: ``docs/design.md`` ("The HTTP surface and its metrics").
EXPORTED = [
    "staleless_cache_hits_total",
    "staleless_cache_misses_total",
    "staleless_invalidations_applied_total",
    "staleless_invalidation_lag_seconds_bucket",
    "staleless_cache_trusted",
    "staleless_ticks_total",
    "staleless_staleness_bound_seconds",
    "staleless_seconds_since_tick",
    "staleless_queue_receives_total",
    "staleless_cache_fill_seconds_bucket",
]


@dataclass
class Stack:
    """A users table and a topic in moto, and the environment that points the example at them."""

    moto: Moto
    table: str
    topic_arn: str
    prefix: str
    env: dict[str, str]
    dynamodb: DynamoDBClient

    def put_user(self, user_id: str, name: str | None) -> None:
        item: dict[str, Any] = {"PK": {"S": f"USER#{user_id}"}, "SK": {"S": "PROFILE"}, "userId": {"S": user_id}}
        if name is not None:
            item["name"] = {"S": name}
        self.dynamodb.put_item(TableName=self.table, Item=item)

    def publish(self, body: str) -> None:
        self.moto.sns().publish(TopicArn=self.topic_arn, Message=body)

    def tick(self) -> None:
        now = int(time.time() * 1000)
        self.publish(
            json.dumps({"v": 1, "kind": "tick", "source": "users", "written_at_ms": now, "writer": "staleless"})
        )

    def queues(self) -> list[str]:
        return self.moto.sqs().list_queues(QueueNamePrefix=self.prefix).get("QueueUrls", [])

    def subscriptions(self) -> list[str]:
        listed = self.moto.sns().list_subscriptions_by_topic(TopicArn=self.topic_arn)["Subscriptions"]
        return [entry.get("Endpoint", "") for entry in listed]


@pytest.fixture
def stack(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for variable, value in moto.env().items():
        monkeypatch.setenv(variable, value)
    dynamodb = moto.dynamodb()
    table = unique("staleless-users")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    topic_arn = moto.sns().create_topic(Name=unique("invalidations"))["TopicArn"]
    prefix = unique("py-example")
    env = {
        **moto.env(),
        "INVALIDATION_TOPIC_ARN": topic_arn,
        "USERS_TABLE": table,
        "QUEUE_NAME_PREFIX": prefix,
        "POLL_WAIT_SECS": "1",
        "STALENESS_BOUND_SECS": "30",
        # Every hit re-read: the verification is observed within the test.
        "CACHE_VERIFY_ONE_IN": "1",
        "AWS_ATTEMPT_TIMEOUT_MS": "20000",
        "AWS_CALL_TIMEOUT_MS": "60000",
    }
    stack = Stack(moto, table, topic_arn, prefix, env, dynamodb)
    stack.put_user("alice", "Alice")
    stack.put_user("broken", None)
    return stack


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (the subscriber started, then stopped), and a client."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example") as client,
    ):
        yield client


async def get(client: httpx.AsyncClient, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    return response.status_code, response.json()


async def metrics_text(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def test_profiles_ready_metrics_and_a_rename_through_the_topic(stack: Stack) -> None:
    app = create_app(ExampleConfig.from_env(stack.env))
    async with serving(app) as client:

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await eventually_async("the example to be ready", ready)
        assert await get(client, "/ready") == (200, {"status": "ready"})
        assert await get(client, "/profiles/alice") == (200, {"userId": "alice", "name": "Alice"})
        assert await get(client, "/profiles/nobody") == (404, {"error": "not_found", "message": "no user nobody"})
        assert await get(client, "/profiles/broken") == (
            500,
            {"error": "corrupt_item", "message": "the item of broken has no readable name"},
        )

        # Trusted by its ticks, the example answers from its cache: hits grow, each verified.
        async def trusted() -> bool:
            if sample_sum(await metrics_text(client), "staleless_cache_trusted", cache="profiles") == 1:
                return True
            await asyncio.to_thread(stack.tick)
            await asyncio.sleep(0.2)
            return False

        await eventually_async("the example to trust its cache", trusted)

        def hits(text: str) -> float:
            return sample_sum(text, "staleless_cache_hits_total", cache="profiles") or 0.0

        before = hits(await metrics_text(client))

        async def hit_twice() -> bool:
            await eventually_async("a trusted cache", trusted)
            assert (await get(client, "/profiles/alice"))[0] == 200
            return hits(await metrics_text(client)) >= before + 2

        await eventually_async("two hits", hit_twice)
        await eventually_async(
            "a hit verified fresh",
            lambda: _metric_at_least(client, "staleless_verified_hits_total", 1, cache="profiles", result="fresh"),
        )

        # A rename made straight to the table, announced on the topic as the relay would.
        await asyncio.to_thread(stack.put_user, "alice", "Alice Liddell")
        await asyncio.to_thread(
            stack.publish,
            '{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"alice","seq":"2","at_ms":0}]}',
        )

        async def renamed() -> bool:
            return await get(client, "/profiles/alice") == (200, {"userId": "alice", "name": "Alice Liddell"})

        await eventually_async("the new name", renamed)
        await eventually_async(
            "the eviction to be counted",
            lambda: _metric_at_least(client, "staleless_invalidations_applied_total", 1, source="users"),
        )

        response = await client.get("/metrics")
        assert response.headers["content-type"] == "text/plain; version=0.0.4"
        for name in EXPORTED:
            assert f"\n{name}" in response.text, f"the example does not export {name}"
        assert sample_sum(response.text, "staleless_staleness_bound_seconds") == 30
        queue_urls = await asyncio.to_thread(stack.queues)
        assert len(queue_urls) == 1
    # Shut down: not ready any more, and the queue and its subscription are gone.
    assert await _ready_after_shutdown(app) == (503, {"error": "not_ready", "message": "starting or stopping"})
    assert stack.queues() == []
    assert stack.subscriptions() == []


async def _metric_at_least(client: httpx.AsyncClient, name: str, least: float, **labels: str) -> bool:
    return (sample_sum(await metrics_text(client), name, **labels) or 0.0) >= least


async def _ready_after_shutdown(app: FastAPI) -> tuple[int, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example") as client:
        return await get(client, "/ready")


async def test_an_unavailable_table_is_a_503(stack: Stack) -> None:
    app = create_app(ExampleConfig.from_env({**stack.env, "USERS_TABLE": unique("missing")}))
    # Without the lifespan: nothing is trusted, every read goes to the table.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example") as client:
        status, body = await get(client, "/profiles/alice")
        assert status == 503
        assert body["error"] == "unavailable"
        assert body["message"].startswith("users table unavailable")
        assert await get(client, "/ready") == (503, {"error": "not_ready", "message": "starting or stopping"})


def test_cache_mode_is_read_and_off_reads_the_table_every_time() -> None:
    env = {"INVALIDATION_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "AWS_DEFAULT_REGION": "us-east-1"}
    assert ExampleConfig.from_env(env).cache_mode is CacheMode.EVENT
    assert ExampleConfig.from_env({**env, "CACHE_MODE": "off"}).cache_mode is CacheMode.OFF
    app = create_app(ExampleConfig.from_env({**env, "CACHE_MODE": "off"}))
    app.state.health.record_ticks_now()  # trusted or not, `off` never serves the cache
    assert app.state.names.read_path() is ReadPath.BYPASS


def test_the_wiring_is_marked_and_short() -> None:
    lines = APP.read_text().splitlines()
    starts = [index for index, line in enumerate(lines) if line.strip() == "# staleless: wiring starts"]
    ends = [index for index, line in enumerate(lines) if line.strip() == "# staleless: wiring ends"]
    assert len(starts) == len(ends) == 1
    wiring = [line for line in lines[starts[0] + 1 : ends[0]] if line.strip()]
    assert len(wiring) <= 20, f"the wiring takes {len(wiring)} lines"


# As a process.


def _command() -> list[str]:
    return [sys.executable, "-m", "examples.fastapi_profiles"]


def _process_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR / "src"), str(PYTHON_DIR)])
    return {**env, **extra}


async def test_the_listening_socket_turns_nagle_off_on_each_connection() -> None:
    """asyncio sets ``TCP_NODELAY`` on a connection only when its socket says it is TCP; without
    it each keep-alive response's body waited for the client's delayed ACK (about 40 ms)."""
    sock = _bound_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            connection: socket.socket = transport.get_extra_info("socket")
            accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            assert await asyncio.wait_for(accepted, PATIENCE_S) != 0, "Nagle's algorithm is on"
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ({}, "INVALIDATION_TOPIC_ARN"),
        (
            {"INVALIDATION_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "PY_EXAMPLE_ADDR": "not an address"},
            "PY_EXAMPLE_ADDR",
        ),
        (
            {"INVALIDATION_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "STALENESS_BOUND_SECS": "soon"},
            "STALENESS_BOUND_SECS",
        ),
        ({"INVALIDATION_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "CACHE_MODE": "sometimes"}, "CACHE_MODE"),
    ],
)
def test_the_example_refuses_to_start_naming_the_setting(extra: dict[str, str], setting: str) -> None:
    done = subprocess.run(
        _command(), env=_process_env(extra), capture_output=True, text=True, timeout=PATIENCE_S, check=False
    )
    assert done.returncode != 0, f"started without a valid {setting}: {done.stderr}"
    assert setting in done.stderr, f"stderr does not name {setting}: {done.stderr}"


@contextlib.contextmanager
def _running(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    process = subprocess.Popen(
        _command(), env=_process_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=PATIENCE_S)
        reader.join(timeout=PATIENCE_S)


def _listening(process: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    """The address of the ``listening`` line, once the process logs it."""
    deadline = time.monotonic() + PATIENCE_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        record = json.loads(line)
        if record["fields"]["message"] == "listening":
            return str(record["fields"]["addr"])
    pytest.fail("no listening line:\n" + "".join(seen))


def test_the_process_logs_listening_serves_and_removes_its_queue_on_sigterm(stack: Stack) -> None:
    with _running({**stack.env, "PY_EXAMPLE_ADDR": "127.0.0.1:0"}) as (process, lines):
        addr = _listening(process, lines)
        base = f"http://{addr}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/ready", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        eventually("the process to be ready", ready)
        answer = httpx.get(f"{base}/profiles/alice", timeout=30)
        assert (answer.status_code, answer.json()) == (200, {"userId": "alice", "name": "Alice"})
        assert len(stack.queues()) == 1
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=PATIENCE_S)
        assert stack.queues() == [], "the queue is deleted before the process ends"
        assert stack.subscriptions() == []
        logged: list[str] = []

        def removal_logged() -> bool:
            while not lines.empty():
                logged.append(json.loads(lines.get())["fields"]["message"])
            return any(message.startswith("invalidation queue removed") for message in logged)

        eventually("the removal to be logged", removal_logged)
