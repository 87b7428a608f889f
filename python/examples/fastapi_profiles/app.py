"""A FastAPI service that is not the staleless API, caching user display names from the users
table through the staleless Python package alone, with the same bound as every Rust task.

``GET /profiles/{user_id}`` answers ``{"userId", "name"}`` (404 JSON for an unknown user) with no
token; ``/ready`` and ``/metrics`` as the API tasks have them, with the same metric names. It is
the twin of the Rust example (``examples/profiles/src/main.rs``): same routes, same answers,
same configuration variables (but ``PY_EXAMPLE_ADDR``, default ``127.0.0.1:8084``, so both run
side by side). The lines between the two ``# staleless: wiring`` marker comments in
:func:`create_app` are all it takes to adopt the guarantee.

Run it from ``python/`` with ``PYTHONPATH=src python -m examples.fastapi_profiles``. Logs are JSON
lines on stderr, shaped as the Rust services' ``tracing`` lines; once the server accepts
connections it logs ``listening`` with its ``addr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import boto3
import uvicorn
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from staleless.cache import CacheMode, TrustedCache
from staleless.caches import Caches
from staleless.config import ConfigError, SubscriberConfig
from staleless.health import ChannelHealth, SourceSpec
from staleless.inbox import Inbox
from staleless.metrics import CONTENT_TYPE, Metrics
from staleless.queue import local_task_id
from staleless.subscriber import Subscriber

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DEFAULT_ADDR", "DEFAULT_USERS_TABLE", "ExampleConfig", "LoadError", "create_app", "main", "name_loader"]

log = logging.getLogger("staleless_example")

#: Where the server listens unless ``PY_EXAMPLE_ADDR`` says otherwise (the Rust example's is 8083).
DEFAULT_ADDR = "127.0.0.1:8084"
#: The users table's name where none is configured (``protocol/src/keys.rs``).
DEFAULT_USERS_TABLE = "staleless-users"
#: The key scheme of a profile item (``protocol/src/keys.rs``): ``USER#<id>`` / ``PROFILE``.
PARTITION_KEY, SORT_KEY, USER_PK_PREFIX, PROFILE_SK = "PK", "SK", "USER#", "PROFILE"


def _parse_addr(text: str) -> tuple[str, int]:
    """``<ip>:<port>`` (``[v6]:port`` for IPv6), as a Rust ``SocketAddr`` reads it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or int(port) > 65_535:
        raise ConfigError("PY_EXAMPLE_ADDR", f"{text!r} is not an address (<ip>:<port>)")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ConfigError("PY_EXAMPLE_ADDR", f"{text!r} is not an address (<ip>:<port>)") from None
    if ip.version == 6 and not bracketed:
        raise ConfigError("PY_EXAMPLE_ADDR", f"{text!r} is not an address ([<ipv6>]:<port>)")
    return str(ip), int(port)


@dataclass(frozen=True)
class ExampleConfig:
    """The example's configuration: its address and table, and the consumer's own settings."""

    #: ``PY_EXAMPLE_ADDR``: where the HTTP server listens.
    host: str
    port: int
    #: ``USERS_TABLE``.
    users_table: str
    #: ``INVALIDATION_TOPIC_ARN`` (required).
    topic_arn: str
    #: The subscription, the bound and the AWS clients' settings.
    channel: SubscriberConfig
    #: ``CACHE_MODE``: ``event`` (the guarantee, the default), ``ttl`` or ``off`` (every read goes
    #: to the table: the baseline the benchmark compares with).
    cache_mode: CacheMode = CacheMode.EVENT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExampleConfig:
        """The configuration from ``environ`` (default ``os.environ``); :class:`ConfigError`
        names the first missing or malformed variable."""
        env = os.environ if environ is None else environ
        host, port = _parse_addr(env.get("PY_EXAMPLE_ADDR") or DEFAULT_ADDR)
        channel = SubscriberConfig.from_env(env)
        mode = env.get("CACHE_MODE") or CacheMode.EVENT.value
        if mode not in {cache_mode.value for cache_mode in CacheMode}:
            raise ConfigError("CACHE_MODE", f"{mode!r} is not one of event, ttl, off")
        return cls(
            host=host,
            port=port,
            users_table=env.get("USERS_TABLE") or DEFAULT_USERS_TABLE,
            topic_arn=channel.require_topic_arn(),
            channel=channel,
            cache_mode=CacheMode(mode),
        )


class LoadError(Exception):
    """Why a name could not be read: ``code`` is the error's JSON ``error`` and ``status`` its
    HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def dynamodb_client(config: ExampleConfig) -> DynamoDBClient:
    """A DynamoDB client with the configured endpoint, region and timeouts."""
    aws = config.channel.aws
    return boto3.session.Session().client("dynamodb", config=aws.botocore_config(), **aws.client_kwargs("dynamodb"))


def name_loader(dynamodb: DynamoDBClient, table: str, call_timeout_s: float) -> Callable[[str], Awaitable[str | None]]:
    """Reads a user's name (``None`` when there is no such user) with ``ConsistentRead``: a
    read-through after an outage must see the newest write. Each call in a worker thread, under
    the call timeout; a failure is a :class:`LoadError` (503, or 500 for an item without a name)."""

    async def load_name(user_id: str) -> str | None:
        try:
            output = await asyncio.wait_for(
                asyncio.to_thread(
                    dynamodb.get_item,
                    TableName=table,
                    Key={PARTITION_KEY: {"S": USER_PK_PREFIX + user_id}, SORT_KEY: {"S": PROFILE_SK}},
                    ProjectionExpression="#name",
                    ExpressionAttributeNames={"#name": "name"},
                    ConsistentRead=True,
                ),
                timeout=call_timeout_s,
            )
        except asyncio.TimeoutError:
            raise LoadError(503, "unavailable", "users table unavailable: timed out") from None
        except (ClientError, BotoCoreError) as err:
            raise LoadError(503, "unavailable", f"users table unavailable: {err}") from err
        item = output.get("Item")
        if item is None:
            return None
        name = item.get("name", {}).get("S")
        if name is None:
            raise LoadError(500, "corrupt_item", f"the item of {user_id} has no readable name")
        return name

    return load_name


def create_app(config: ExampleConfig | None = None, dynamodb: DynamoDBClient | None = None) -> FastAPI:
    """The application; its lifespan runs the subscriber (started with the app, stopped, queue
    removed, when it shuts down)."""
    config = ExampleConfig.from_env() if config is None else config
    channel, table = config.channel, config.users_table
    dynamodb = dynamodb_client(config) if dynamodb is None else dynamodb

    # staleless: wiring starts
    health = ChannelHealth(channel.trust_rules(), [SourceSpec("users", "profiles")])
    metrics = Metrics().watch(health, verify=channel.verify_one_in > 0)
    # Display names by user id; None caches "no such user".
    names: TrustedCache[str, str | None] = TrustedCache(
        health, "users", config.cache_mode, max_entries=100_000, ttl_s=3_600, observer=metrics
    ).verified(channel.verify_one_in)
    inbox = Inbox(health, Caches().register("users", names), {table: "users"}, observer=metrics)
    subscriber = Subscriber(inbox, channel, local_task_id(), topic_arn=config.topic_arn, observer=metrics)
    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        running = asyncio.create_task(subscriber.run(stop), name="staleless-subscriber")
        try:
            yield
        finally:
            health.mark_stopping()
            stop.set()  # The subscriber unsubscribes and deletes its queue, then returns.
            await running

    # staleless: wiring ends

    app = FastAPI(title="staleless-example (Python)", lifespan=lifespan)
    app.state.health, app.state.names, app.state.subscriber = health, names, subscriber
    load_name = name_loader(dynamodb, table, channel.aws.call_timeout_s)

    @app.get("/profiles/{user_id}")
    async def profile(user_id: str) -> Response:
        try:
            name = await names.get(user_id, lambda: load_name(user_id))
        except LoadError as err:
            return _error(err.status, err.code, err.message)
        if name is None:
            return _error(404, "not_found", f"no user {user_id}")
        return JSONResponse({"userId": user_id, "name": name})

    @app.get("/ready")
    async def ready() -> Response:
        """200 once the subscription is set up (or kept failing past the bound), until shutdown
        begins."""
        if health.is_ready():
            return JSONResponse({"status": "ready"})
        return _error(503, "not_ready", "starting or stopping")

    @app.get("/metrics")
    async def render_metrics() -> Response:
        """Prometheus text, with the freshness gauges current."""
        return Response(metrics.render(), headers={"content-type": CONTENT_TYPE})

    return app


# Running it.


class _JsonLines(logging.Formatter):
    """Log records as JSON lines shaped as the Rust services' ``tracing`` JSON."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"message": record.getMessage()}
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        line = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.replace("WARNING", "WARN"),
            "fields": fields,
            "target": record.name,
        }
        return json.dumps(line, default=str)


def _init_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # "Found credentials in environment variables", at every client.
    logging.getLogger("botocore").setLevel(logging.WARNING)


class _Server(uvicorn.Server):
    """uvicorn's server, turning ``/ready`` to 503 as soon as a shutdown signal arrives (while
    connections drain), as the Rust example does."""

    def __init__(self, config: uvicorn.Config, health: ChannelHealth) -> None:
        super().__init__(config)
        self._health = health

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._health.mark_stopping()
        super().handle_exit(sig, frame)


async def _serve(server: _Server, sock: socket.socket) -> None:
    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("listening", extra={"fields": {"addr": addr}})

    announcing = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        announcing.cancel()


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, for uvicorn to listen on.

    Its protocol is spelled out (``IPPROTO_TCP``, not ``0``): asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on connections whose socket says it is TCP, and without that each
    keep-alive response's body waited for the client's delayed ACK of its headers, about 40 ms a
    request (``BENCHMARKS.md``, the Python section)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def main(environ: Mapping[str, str] | None = None) -> int:
    """Runs the service until SIGINT or SIGTERM; the exit status.

    Either signal turns ``/ready`` to 503, drains the connections and stops the subscriber,
    which unsubscribes and deletes the queue. Then uvicorn re-raises the signal, as it does for
    every app: SIGTERM ends the process at once (status 143); after SIGINT (Ctrl-C) the process
    waits for a long poll still in flight on its worker thread (at most the poll wait) and exits
    with 130."""
    _init_logging()
    try:
        config = ExampleConfig.from_env(environ)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    try:
        sock = _bound_socket(config.host, config.port)
    except OSError as err:
        print(f"Error: cannot bind {config.host}:{config.port} (PY_EXAMPLE_ADDR): {err}", file=sys.stderr)
        return 1
    app = create_app(config)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"), app.state.health)
    try:
        asyncio.run(_serve(server, sock))
    except KeyboardInterrupt:
        return 130
    return 0
