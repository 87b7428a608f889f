"""Configuration read from the environment, with the Rust consumer's names and defaults.

:class:`SubscriberConfig` is ``consumer/src/config.rs``'s ``SubscriberConfig`` (and its
``QueueTags``); :class:`AwsSettings` is ``consumer/src/aws.rs``'s ``AwsTimeouts`` plus where the
clients go (``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
as boto3 and the Rust SDK read them). A
Python task and a Rust task given the same environment subscribe, bound and tag alike.

As with the Rust side (clap), a variable set to the empty string counts as unset; a value that
is not what the variable takes raises :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from staleless import queue as _queue
from staleless.trust import TrustRules

if TYPE_CHECKING:
    import botocore.config

__all__ = [
    "DEFAULT_HEARTBEAT_WRITER",
    "MAX_POLL_WAIT_SECS",
    "AwsSettings",
    "ConfigError",
    "QueueTags",
    "SubscriberConfig",
]

#: The heartbeat writer's name when none is configured (``protocol/src/keys.rs``).
DEFAULT_HEARTBEAT_WRITER = "staleless"
#: The SQS maximum long-poll wait.
#: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html
MAX_POLL_WAIT_SECS = 20
#: The prefix of a service's own endpoint variable (``AWS_ENDPOINT_URL_SQS``).
_SERVICE_ENDPOINT = "AWS_ENDPOINT_URL_"
#: The largest value an unsigned setting takes (a Rust ``u64``).
_U64_MAX = 2**64 - 1


class ConfigError(ValueError):
    """A setting is missing or malformed; ``variable`` names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def _get(environ: Mapping[str, str], variable: str) -> str | None:
    value = environ.get(variable)
    return value if value else None


def _unsigned(environ: Mapping[str, str], variable: str, default: int) -> int:
    value = _get(environ, variable)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) > _U64_MAX:
        raise ConfigError(variable, f"{value!r} is not a non-negative whole number")
    return int(value)


def _text(environ: Mapping[str, str], variable: str, default: str) -> str:
    value = _get(environ, variable)
    return default if value is None else value


@dataclass(frozen=True)
class QueueTags:
    """The names of the two tags on a task's queue. The task policy's conditions name the owner
    tag (``template.yaml``'s ``ApiTaskPolicy``), so a deployment that renames it renames it there
    too."""

    #: The tag naming the task that created the queue (its ``aws:userid``): ``QUEUE_OWNER_TAG``.
    owner: str = _queue.OWNER_TAG
    #: The tag holding the Unix time of the owner's last heartbeat, which the fleet sweeper
    #: reads: ``QUEUE_HEARTBEAT_TAG``.
    heartbeat: str = _queue.HEARTBEAT_TAG

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QueueTags:
        """The tags' names from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        return cls(
            owner=_text(env, "QUEUE_OWNER_TAG", _queue.OWNER_TAG),
            heartbeat=_text(env, "QUEUE_HEARTBEAT_TAG", _queue.HEARTBEAT_TAG),
        )


@dataclass(frozen=True)
class AwsSettings:
    """Where the AWS clients go and the timeouts of every call, so that no hung dependency holds a
    request or the subscriber."""

    #: ``AWS_ENDPOINT_URL`` (moto locally): every service's endpoint unless it has its own.
    endpoint_url: str | None = None
    #: ``AWS_ENDPOINT_URL_<SERVICE>`` (``AWS_ENDPOINT_URL_SNS``, ...), by boto3 service name
    #: (``sns``): one service through a proxy, as the fault tests route them.
    service_endpoint_urls: tuple[tuple[str, str], ...] = ()
    #: ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``: the endpoint variables are ignored, as boto3 does.
    ignore_configured_endpoints: bool = False
    #: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; ``None`` lets boto3 resolve it.
    region: str | None = None
    #: ``AWS_CALL_TIMEOUT_MS``: the longest one DynamoDB, SNS or STS call may take, retries
    #: included.
    call_timeout_ms: int = 3_000
    #: ``AWS_ATTEMPT_TIMEOUT_MS``: the longest one attempt may take (botocore's connect and read
    #: timeouts) before it is retried.
    attempt_timeout_ms: int = 1_000
    #: Retries after the first attempt (botocore's ``max_attempts``).
    max_retries: int = 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        """The settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        services = tuple(
            sorted(
                (variable.removeprefix(_SERVICE_ENDPOINT).lower(), value)
                for variable, value in env.items()
                if variable.startswith(_SERVICE_ENDPOINT) and len(variable) > len(_SERVICE_ENDPOINT) and value
            )
        )
        return cls(
            endpoint_url=_get(env, "AWS_ENDPOINT_URL"),
            service_endpoint_urls=services,
            ignore_configured_endpoints=(_get(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or "").lower() == "true",
            region=_get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION"),
            call_timeout_ms=max(_unsigned(env, "AWS_CALL_TIMEOUT_MS", 3_000), 1),
            attempt_timeout_ms=max(_unsigned(env, "AWS_ATTEMPT_TIMEOUT_MS", 1_000), 1),
        )

    @property
    def call_timeout_s(self) -> float:
        """:attr:`call_timeout_ms` in seconds."""
        return self.call_timeout_ms / 1_000

    @property
    def attempt_timeout_s(self) -> float:
        """:attr:`attempt_timeout_ms` in seconds, at most the call timeout."""
        return min(self.attempt_timeout_ms, self.call_timeout_ms) / 1_000

    def botocore_config(self, read_timeout_s: float | None = None) -> botocore.config.Config:
        """The client configuration of one call's timeouts: connect within the attempt timeout,
        read within ``read_timeout_s`` (default: the attempt timeout; SQS's allows for a long
        poll), two retries."""
        import botocore.config

        return botocore.config.Config(
            connect_timeout=self.attempt_timeout_s,
            read_timeout=self.attempt_timeout_s if read_timeout_s is None else read_timeout_s,
            retries={"max_attempts": self.max_retries, "mode": "standard"},
        )

    def endpoint_url_for(self, service: str) -> str | None:
        """The endpoint of ``service`` (a boto3 service name: ``sqs``, ``dynamodb``), resolved from
        the environment as boto3 resolves it: ``AWS_ENDPOINT_URL_<SERVICE>``, else
        ``AWS_ENDPOINT_URL``; ``None`` leaves it to boto3 (its config file, AWS itself)."""
        if self.ignore_configured_endpoints:
            return None
        return dict(self.service_endpoint_urls).get(service.replace(" ", "_").lower(), self.endpoint_url)

    def client_kwargs(self, service: str) -> dict[str, Any]:
        """``endpoint_url`` and ``region_name`` for a boto3 client of ``service``, where
        configured."""
        kwargs: dict[str, Any] = {}
        endpoint_url = self.endpoint_url_for(service)
        if endpoint_url is not None:
            kwargs["endpoint_url"] = endpoint_url
        if self.region is not None:
            kwargs["region_name"] = self.region
        return kwargs


@dataclass(frozen=True)
class SubscriberConfig:
    """The task's own invalidation queue and its freshness bound, from the environment with
    defaults (``consumer/src/config.rs``)."""

    #: ``INVALIDATION_TOPIC_ARN``: the topic the stream relay publishes to.
    topic_arn: str | None = None
    #: ``QUEUE_NAME_PREFIX``: this task's queue is ``<prefix>-<task id>``; the sweeper only
    #: touches queues of the prefix.
    queue_name_prefix: str = "staleless-task"
    #: ``POLL_WAIT_SECS``: long-poll wait per receive, at most 20 s (the SQS maximum).
    poll_wait_secs: int = 20
    #: ``STALENESS_BOUND_SECS``: the freshness bound ``B``. Keep the heartbeat interval at most a
    #: third of it.
    staleness_bound_secs: int = 15
    #: ``QUEUE_RETENTION_SECS``: messages older than this are dropped by SQS.
    queue_retention_secs: int = 300
    #: ``QUEUE_HEARTBEAT_INTERVAL_SECS``: how often the queue's heartbeat tag is refreshed.
    queue_heartbeat_interval_secs: int = 60
    #: ``HEARTBEAT_WRITERS`` (comma-separated): the heartbeat writers whose ticks count.
    heartbeat_writers: tuple[str, ...] = (DEFAULT_HEARTBEAT_WRITER,)
    #: ``TICK_FUTURE_TOLERANCE_MS``: how far ahead of this task's clock a tick may be written.
    tick_future_tolerance_ms: int = 500
    #: ``CACHE_VERIFY_ONE_IN``: one cache hit in this many is re-read and compared; ``0`` is off.
    verify_one_in: int = 1_000
    #: ``QUEUE_OWNER_TAG``, ``QUEUE_HEARTBEAT_TAG``.
    tags: QueueTags = field(default_factory=QueueTags)
    #: Where the AWS clients go, and their timeouts.
    aws: AwsSettings = field(default_factory=AwsSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SubscriberConfig:
        """The configuration from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigError` naming the first malformed variable.
        """
        env = os.environ if environ is None else environ
        writers_text = _get(env, "HEARTBEAT_WRITERS")
        writers: tuple[str, ...] = (DEFAULT_HEARTBEAT_WRITER,)
        if writers_text is not None:
            named = tuple(writer.strip() for writer in writers_text.split(",") if writer.strip())
            if not named:
                raise ConfigError("HEARTBEAT_WRITERS", f"{writers_text!r} names no writer")
            writers = tuple(dict.fromkeys(named))
        return cls(
            topic_arn=_get(env, "INVALIDATION_TOPIC_ARN"),
            queue_name_prefix=_text(env, "QUEUE_NAME_PREFIX", "staleless-task"),
            poll_wait_secs=_unsigned(env, "POLL_WAIT_SECS", 20),
            staleness_bound_secs=_unsigned(env, "STALENESS_BOUND_SECS", 15),
            queue_retention_secs=_unsigned(env, "QUEUE_RETENTION_SECS", 300),
            queue_heartbeat_interval_secs=_unsigned(env, "QUEUE_HEARTBEAT_INTERVAL_SECS", 60),
            heartbeat_writers=writers,
            tick_future_tolerance_ms=_unsigned(env, "TICK_FUTURE_TOLERANCE_MS", 500),
            verify_one_in=_unsigned(env, "CACHE_VERIFY_ONE_IN", 1_000),
            tags=QueueTags.from_env(env),
            aws=AwsSettings.from_env(env),
        )

    def require_topic_arn(self) -> str:
        """The topic, or :class:`ConfigError` naming ``INVALIDATION_TOPIC_ARN`` when unset."""
        if self.topic_arn is None:
            raise ConfigError("INVALIDATION_TOPIC_ARN", "is required")
        return self.topic_arn

    @property
    def poll_wait_s(self) -> int:
        """The long-poll wait, clamped to what SQS allows (0 to 20 s)."""
        return min(self.poll_wait_secs, MAX_POLL_WAIT_SECS)

    @property
    def staleness_bound_ms(self) -> int:
        """The bound ``B`` in milliseconds."""
        return self.staleness_bound_secs * 1_000

    def trust_rules(self) -> TrustRules:
        """The trust rules of the configured bound, writers and tolerance."""
        return TrustRules(
            bound_ms=self.staleness_bound_ms,
            future_tolerance_ms=self.tick_future_tolerance_ms,
            writers=self.heartbeat_writers,
        )
