"""The subscriber: one per process, owning this task's SQS queue (``consumer/src/subscriber.rs``).

Lifecycle: create the queue (its policy admitting only the topic is part of ``CreateQueue``, so
SNS is never refused while a later ``SetQueueAttributes`` propagates; server-side encryption,
short retention, heartbeat and owner tags), subscribe it to the topic with raw delivery, flush
every cache and count the channel as subscribed (``/ready`` 200 from then on). Then long-poll,
hand each body to the :class:`~staleless.inbox.Inbox` (which applies invalidations and ticks and
never raises), and delete what was handled: a malformed message too, since it will never become
readable.

Healing: while the queue answers but a source's ticks stay silent for half the bound, the
subscriber checks its subscription and re-creates it when it is gone or altered (endpoint, raw
delivery, a filter policy added out of band). A queue deleted out of band is recreated and
resubscribed. Either way the caches are flushed, since messages were lost. Set-up that keeps
failing for longer than the bound marks the task started anyway: it serves, reading through to
the table until ticks arrive. On stop: unsubscribe, then delete the queue (in that order: moto
and SNS misbehave on subscriptions whose queue is gone, ``docs/design.md``, "Where the local
emulator differs from AWS").

**Why boto3 in threads.** Every AWS call is a plain boto3 client call run through
:func:`asyncio.to_thread`, not an async SDK. A long poll blocks one worker thread for at most the
poll wait (20 s, and at most half the bound), and the subscriber makes one call at a time, so it
costs one thread of the loop's default executor; every other call is short. In exchange the
package needs only boto3, which shares the project's virtualenv with moto and the SAM CLI:
aiobotocore pins botocore to a narrow range of its own, which those tools' boto3 pins would
fight. Each client is built with timeouts (:meth:`~staleless.config.AwsSettings.botocore_config`:
connect and read within the attempt timeout, SQS's read within the poll wait plus a grace, two
retries), and each receive is also bounded on the loop's side (``wait_for``, the poll wait plus
10 s). A thread cannot be cancelled: on stop, a long poll in flight is abandoned (its thread ends
with the poll, within the poll wait) and the queue is removed without waiting for it.

**One thread owns the state.** The threads only call AWS. Everything that changes the channel's
health or the caches (the inbox, flushes, ``mark_subscribed``) runs on the event loop's thread,
after the awaited call returns, as the rest of the package assumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from staleless import queue as _queue
from staleless.config import SubscriberConfig
from staleless.health import ChannelHealth
from staleless.inbox import Inbox

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef, MessageTypeDef
    from mypy_boto3_sts import STSClient

__all__ = [
    "MAX_BACKOFF_S",
    "MAX_MESSAGES_PER_RECEIVE",
    "RECEIVE_GRACE_S",
    "ChannelClients",
    "ChannelError",
    "NoopSubscriberObserver",
    "QueueGone",
    "Subscriber",
    "SubscriberObserver",
    "TaskQueue",
    "backoff_s",
]

log = logging.getLogger("staleless")

T = TypeVar("T")
P = ParamSpec("P")

#: Messages per receive: the SQS maximum.
MAX_MESSAGES_PER_RECEIVE = 10
#: SQS keeps messages 60 s to 14 days.
RETENTION_RANGE_SECS = (60, 1_209_600)
#: Extra time a receive may take beyond its long-poll wait before it counts as hung.
RECEIVE_GRACE_S = 10.0
#: The first back-off between failed attempts, doubled per failure.
FIRST_BACKOFF_S = 0.25
#: Ceiling of the back-off.
MAX_BACKOFF_S = 5.0
#: Recreations under a new name before ``QueueDeletedRecently`` is reported as an error.
MAX_GENERATIONS = 100
#: The error codes of a name SQS refuses for 60 s after a delete.
_DELETED_RECENTLY_CODES = frozenset({"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"})


def backoff_s(failures: int) -> float:
    """Exponential back-off after ``failures`` failures in a row: 0.5 s, 1 s, ... up to
    :data:`MAX_BACKOFF_S` (the Rust ``backoff``: 250 ms doubled per failure)."""
    return min(FIRST_BACKOFF_S * (1 << min(max(failures, 0), 8)), MAX_BACKOFF_S)


class SubscriberObserver(Protocol):
    """What the subscriber reports as it works (:class:`~staleless.metrics.Metrics` records it)."""

    def receive(self, outcome: str) -> None:
        """A ``ReceiveMessage`` call succeeded: ``empty`` or ``messages``."""
        ...

    def receive_error(self) -> None:
        """A ``ReceiveMessage`` call failed (other than the queue being gone)."""
        ...

    def queue_recreated(self) -> None:
        """The queue was found deleted and is being recreated."""
        ...

    def subscription_healed(self) -> None:
        """The subscription was found gone or altered and was re-created."""
        ...


class NoopSubscriberObserver:
    """A :class:`SubscriberObserver` that records nothing (the default)."""

    def receive(self, outcome: str) -> None:
        return None

    def receive_error(self) -> None:
        return None

    def queue_recreated(self) -> None:
        return None

    def subscription_healed(self) -> None:
        return None


class ChannelError(Exception):
    """A channel call failed: ``operation`` is the API call."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"{operation}: {detail}")
        self.operation = operation
        self.detail = detail


class QueueGone(ChannelError):
    """The queue does not exist (deleted out of band, or by the sweeper of another task)."""

    def __init__(self, operation: str) -> None:
        super().__init__(operation, "queue does not exist")


def _error_codes(err: BaseException) -> tuple[str, ...]:
    """The error codes of a service error (the JSON protocol's and the query protocol's)."""
    if not isinstance(err, ClientError):
        return ()
    error: Any = err.response.get("Error", {})
    return tuple(str(error[key]) for key in ("Code", "QueryErrorCode") if error.get(key))


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _sqs_error(operation: str, err: BaseException) -> ChannelError:
    if any(_queue.is_queue_missing(code) for code in _error_codes(err)):
        return QueueGone(operation)
    return ChannelError(operation, _describe(err))


@dataclass(frozen=True)
class ChannelClients:
    """The SQS, SNS and STS clients a task's queue needs (boto3 clients are thread-safe; each is
    used from one worker thread at a time)."""

    #: For the task's queue; reads allow for a long poll.
    sqs: SQSClient
    #: For the subscription to the topic.
    sns: SNSClient
    #: For the task's own identity (``GetCallerIdentity``), the owner tag of its queue.
    sts: STSClient

    @classmethod
    def from_config(cls, config: SubscriberConfig, session: boto3.session.Session | None = None) -> ChannelClients:
        """Clients with the configured endpoint, region and timeouts: SQS's read timeout is the
        poll wait plus :data:`RECEIVE_GRACE_S`; SNS's and STS's the attempt timeout."""
        session = boto3.session.Session() if session is None else session
        aws = config.aws
        return cls(
            sqs=session.client(
                "sqs",
                config=aws.botocore_config(read_timeout_s=config.poll_wait_s + RECEIVE_GRACE_S),
                **aws.client_kwargs("sqs"),
            ),
            sns=session.client("sns", config=aws.botocore_config(), **aws.client_kwargs("sns")),
            sts=session.client("sts", config=aws.botocore_config(), **aws.client_kwargs("sts")),
        )


@dataclass
class TaskQueue:
    """The queue this task owns while it runs."""

    #: Queue name.
    name: str
    #: Queue URL, for every SQS call.
    url: str
    #: Queue ARN, the subscription's endpoint.
    arn: str
    #: The subscription, removed on shutdown.
    subscription_arn: str
    #: When (monotonic s) the heartbeat tag is next written: an interval after the last success,
    #: a quarter of one after a failure.
    next_heartbeat: float = 0.0
    #: When (monotonic s) the subscription was made or last checked: ticks can only be missed
    #: after it.
    subscription_checked: float = 0.0


@dataclass
class _Partial:
    """What a set-up that failed half-way left behind, removed on stop."""

    url: str | None = None
    name: str = ""


async def _call(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """One blocking AWS call, on a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


class _Stopped(Exception):
    """The stop event was set while waiting."""


class Subscriber:
    """The subscriber of one process: owns the task's queue, feeds the inbox (see the module
    docs)."""

    def __init__(
        self,
        inbox: Inbox,
        config: SubscriberConfig,
        task_id: str | None = None,
        *,
        topic_arn: str | None = None,
        clients: ChannelClients | None = None,
        observer: SubscriberObserver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """A subscriber of the task ``task_id`` (default :func:`staleless.queue.local_task_id`)
        to ``topic_arn`` (default the configuration's ``INVALIDATION_TOPIC_ARN``), handing bodies
        to ``inbox``. Raises :class:`~staleless.config.ConfigError` without a topic."""
        self._inbox = inbox
        self._config = config
        self._topic_arn = config.require_topic_arn() if topic_arn is None else topic_arn
        self._clients = ChannelClients.from_config(config) if clients is None else clients
        self.observer: SubscriberObserver = NoopSubscriberObserver() if observer is None else observer
        self._monotonic = monotonic
        self._base_name = _queue.queue_name(
            config.queue_name_prefix, _queue.local_task_id() if task_id is None else task_id
        )
        #: How many times the queue was recreated under a new name (SQS refuses a deleted name
        #: for 60 s).
        self._generation = 0
        #: This task's ``aws:userid``, the queue's owner tag; asked once, at the first set-up.
        self._owner: str | None = None
        self._partial = _Partial()
        #: The queue while one is set up (for tests and reports).
        self.queue: TaskQueue | None = None

    @property
    def health(self) -> ChannelHealth:
        """The trust the inbox records into."""
        return self._inbox.health

    @property
    def inbox(self) -> Inbox:
        """Where bodies go."""
        return self._inbox

    @property
    def queue_name(self) -> str:
        """The name the queue gets (or got) first."""
        return self._base_name

    @property
    def topic_arn(self) -> str:
        """The relay's topic."""
        return self._topic_arn

    @property
    def clients(self) -> ChannelClients:
        """SQS, SNS and STS."""
        return self._clients

    def _bound_s(self) -> float:
        return self.health.bound_ms / 1000

    # The loop.

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until ``stop`` is set (or the task is cancelled), then removes the queue and its
        subscription. Never raises for a failing call or a bad message: each failure is logged
        and retried after a back-off."""
        failures = 0
        started = self._monotonic()
        try:
            while not stop.is_set():
                try:
                    if self.queue is None:
                        if await self._set_up():
                            failures = 0
                            continue
                        failures += 1
                    elif await self._poll_once(self.queue, stop):
                        failures = 0
                        continue
                    else:
                        failures += 1
                except _Stopped:
                    break
                except Exception:
                    failures += 1
                    log.exception("the invalidation subscriber failed unexpectedly; backing off")
                if self.queue is None and self._monotonic() - started > self._bound_s():
                    # Set-up keeps failing: serve anyway, every read going through to the table
                    # until ticks arrive.
                    self.health.mark_started()
                if await self._sleep(backoff_s(failures), stop):
                    break
        finally:
            self.health.mark_unsubscribed()
            await self._remove()

    async def _set_up(self) -> bool:
        """Creates and subscribes the queue; whether it worked."""
        try:
            created = await self.create_and_subscribe()
        except ChannelError as err:
            log.warning("cannot set up the invalidation queue; retrying: %s", err)
            return False
        log.info("invalidation queue subscribed: queue=%s", created.name)
        # Whatever was cached before this subscription may have missed messages.
        self._inbox.flush_all_sources("invalidation queue (re)subscribed")
        self.health.mark_subscribed(created.name)
        self.health.record_receive()
        self.queue = created
        return True

    async def _poll_once(self, queue: TaskQueue, stop: asyncio.Event) -> bool:
        """One receive and what follows it; whether it succeeded (a queue found gone counts as
        handled: it is recreated at once). Raises :class:`_Stopped` when ``stop`` is set while
        waiting for messages."""
        try:
            messages = await self._until_stopped(self._receive(queue), stop)
        except QueueGone:
            # Messages sent meanwhile are lost: stop trusting now; the new subscription flushes
            # before trust returns.
            self.health.mark_unsubscribed()
            self.observer.queue_recreated()
            log.warning("invalidation queue deleted out of band; recreating it: queue=%s", queue.name)
            await self._unsubscribe(queue.subscription_arn, queue.name)
            self.queue = None
            return True
        except ChannelError as err:
            self.observer.receive_error()
            log.warning("receive failed; backing off: queue=%s error=%s", queue.name, err)
            return False
        self.health.record_receive()
        await self._handle(queue, messages)
        await self._heartbeat_if_due(queue)
        await self._heal_if_silent(queue)
        return True

    @staticmethod
    async def _until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T:
        """``work``'s result, or :class:`_Stopped` as soon as ``stop`` is set (``work`` is then
        abandoned)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            task.add_done_callback(_retrieve)
            raise
        finally:
            stopped.cancel()
        if task.done():
            return task.result()
        task.cancel()
        task.add_done_callback(_retrieve)
        raise _Stopped

    @staticmethod
    async def _sleep(delay_s: float, stop: asyncio.Event) -> bool:
        """Sleeps ``delay_s``; ``True`` at once if ``stop`` is set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay_s)
        except asyncio.TimeoutError:
            return False
        return True

    # Set-up.

    async def _owner_id(self) -> str:
        """This task's ``aws:userid`` (``<role id>:<session name>`` for a task role), asked once."""
        if self._owner is not None:
            return self._owner
        try:
            identity = await _call(self._clients.sts.get_caller_identity)
        except (ClientError, BotoCoreError) as err:
            raise ChannelError("GetCallerIdentity", _describe(err)) from err
        owner = identity.get("UserId") or ""
        if not owner:
            raise ChannelError("GetCallerIdentity", "no UserId")
        self._owner = owner
        return owner

    async def create_and_subscribe(self) -> TaskQueue:
        """Creates (or reuses) the queue with its policy and tags, and subscribes it. Raises
        :class:`ChannelError` naming the first failing call."""
        owner = await self._owner_id()
        sqs = self._clients.sqs
        retention = min(max(self._config.queue_retention_secs, RETENTION_RANGE_SECS[0]), RETENTION_RANGE_SECS[1])
        tags = self._config.tags
        while True:
            name = (
                self._base_name if self._generation == 0 else _queue.recreated_name(self._base_name, self._generation)
            )
            # The policy goes into CreateQueue itself: SQS documents up to 60 s before a later
            # SetQueueAttributes applies, during which SNS deliveries can be refused.
            expected_arn = _queue.queue_arn_beside(self._topic_arn, name)
            attributes: dict[QueueAttributeNameType, str] = {
                "MessageRetentionPeriod": str(retention),
                "SqsManagedSseEnabled": "true",
            }
            if expected_arn is not None:
                attributes["Policy"] = _queue.queue_policy_json(expected_arn, self._topic_arn)
            try:
                created = await _call(
                    sqs.create_queue,
                    QueueName=name,
                    Attributes=attributes,
                    tags={tags.heartbeat: str(int(time.time())), tags.owner: owner},
                )
            except ClientError as err:
                if _DELETED_RECENTLY_CODES.intersection(_error_codes(err)) and self._generation < MAX_GENERATIONS:
                    self._generation += 1
                    continue
                raise _sqs_error("CreateQueue", err) from err
            except BotoCoreError as err:
                raise ChannelError("CreateQueue", _describe(err)) from err
            break
        url = created.get("QueueUrl", "")
        self._partial = _Partial(url=url, name=name)
        try:
            found = await _call(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as err:
            raise _sqs_error("GetQueueAttributes", err) from err
        arn = found.get("Attributes", {}).get("QueueArn")
        if not arn:
            raise ChannelError("GetQueueAttributes", "no QueueArn")
        if expected_arn != arn:
            # The topic lives in another account or partition than guessed: set the policy now.
            try:
                await _call(
                    sqs.set_queue_attributes,
                    QueueUrl=url,
                    Attributes={"Policy": _queue.queue_policy_json(arn, self._topic_arn)},
                )
            except (ClientError, BotoCoreError) as err:
                raise _sqs_error("SetQueueAttributes", err) from err
        subscription_arn = await self._subscribe(arn)
        self._partial = _Partial()
        now = self._monotonic()
        return TaskQueue(
            name=name,
            url=url,
            arn=arn,
            subscription_arn=subscription_arn,
            next_heartbeat=now + self._config.queue_heartbeat_interval_secs,
            subscription_checked=now,
        )

    async def _subscribe(self, queue_arn: str) -> str:
        """Subscribes ``queue_arn`` to the topic with raw delivery and no filter; returns the
        subscription ARN."""
        try:
            subscribed = await _call(
                self._clients.sns.subscribe,
                TopicArn=self._topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            )
        except (ClientError, BotoCoreError) as err:
            raise ChannelError("Subscribe", _describe(err)) from err
        return subscribed.get("SubscriptionArn", "")

    # Receiving.

    def _poll_wait_s(self) -> int:
        """At most half the bound (and at least 1 s): while ticks flow they end each poll long
        before, and while they are silent the subscription check after each receive comes soon
        enough to heal within the bound."""
        half_bound_s = max(self.health.bound_ms // 1000 // 2, 1)
        return min(self._config.poll_wait_s, half_bound_s)

    async def _receive(self, queue: TaskQueue) -> list[MessageTypeDef]:
        wait_s = self._poll_wait_s()
        try:
            received = await asyncio.wait_for(
                _call(
                    self._clients.sqs.receive_message,
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=MAX_MESSAGES_PER_RECEIVE,
                    WaitTimeSeconds=wait_s,
                ),
                timeout=wait_s + RECEIVE_GRACE_S,
            )
        except asyncio.TimeoutError as err:
            raise ChannelError("ReceiveMessage", "timed out") from err
        except (ClientError, BotoCoreError) as err:
            raise _sqs_error("ReceiveMessage", err) from err
        messages = list(received.get("Messages", []))
        self.observer.receive("messages" if messages else "empty")
        return messages

    async def _handle(self, queue: TaskQueue, messages: list[MessageTypeDef]) -> None:
        """Hands each message to the inbox and deletes the batch; malformed ones are deleted too,
        since they will never become readable."""
        if not messages:
            return
        handled: list[str] = []
        for message in messages:
            receipt = message.get("ReceiptHandle")
            if receipt is None:
                continue
            received = self._inbox.receive(message.get("Body", ""))
            if received.outcome == "malformed":
                log.warning(
                    "malformed invalidation message deleted: queue=%s message_id=%s error=%s",
                    queue.name,
                    message.get("MessageId", "?"),
                    received.error,
                )
            handled.append(receipt)
        await self._delete(queue, handled)

    async def _delete(self, queue: TaskQueue, receipts: list[str]) -> None:
        if not receipts:
            return
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": receipt} for index, receipt in enumerate(receipts)
        ]
        try:
            deleted = await _call(self._clients.sqs.delete_message_batch, QueueUrl=queue.url, Entries=entries)
        except (ClientError, BotoCoreError) as err:
            log.warning("DeleteMessageBatch failed: queue=%s error=%s", queue.name, _describe(err))
            return
        failed = deleted.get("Failed", [])
        if failed:
            # They will be received again and re-applied: eviction is idempotent.
            log.warning("some messages were not deleted: queue=%s failed=%d", queue.name, len(failed))

    async def _heartbeat_if_due(self, queue: TaskQueue) -> None:
        if self._monotonic() < queue.next_heartbeat:
            return
        interval = self._config.queue_heartbeat_interval_secs
        try:
            await _call(
                self._clients.sqs.tag_queue,
                QueueUrl=queue.url,
                Tags={self._config.tags.heartbeat: str(int(time.time()))},
            )
        except (ClientError, BotoCoreError) as err:
            queue.next_heartbeat = self._monotonic() + interval / 4
            log.warning(
                "heartbeat failed; retrying in a quarter interval: queue=%s error=%s", queue.name, _describe(err)
            )
            return
        queue.next_heartbeat = self._monotonic() + interval

    # Healing.

    def _silent(self, half_bound_s: float) -> bool:
        """Whether a source's ticks have been silent for more than half the bound (or never came)."""
        for spec in self.health.sources:
            since_ms = self.health.since_tick_ms(spec.source)
            if since_ms is None or since_ms / 1000 > half_bound_s:
                return True
        return False

    async def _heal_if_silent(self, queue: TaskQueue) -> None:
        """While the queue answers but a source's ticks are silent for half the bound, checks (at
        most once per half bound) that the subscription still exists unaltered, and re-creates it
        if not. A relay or stream outage also silences ticks; then the check finds nothing to
        heal."""
        half_bound_s = self._bound_s() / 2
        if self._monotonic() - queue.subscription_checked < half_bound_s or not self._silent(half_bound_s):
            return
        queue.subscription_checked = self._monotonic()
        problem: str | None
        try:
            found = await _call(self._clients.sns.get_subscription_attributes, SubscriptionArn=queue.subscription_arn)
        except ClientError as err:
            if "NotFound" in _error_codes(err):
                problem = "subscription not found"
            else:
                log.warning("cannot check the subscription: queue=%s error=%s", queue.name, _describe(err))
                return
        except BotoCoreError as err:
            log.warning("cannot check the subscription: queue=%s error=%s", queue.name, _describe(err))
            return
        else:
            problem = _queue.subscription_problem(found.get("Attributes", {}), queue.arn, self._topic_arn)
        if problem is None:
            log.debug("ticks silent but the subscription is intact (pipeline outage upstream?): queue=%s", queue.name)
            return
        log.warning(
            "subscription gone or altered out of band; re-creating it: queue=%s problem=%s", queue.name, problem
        )
        self.health.mark_unsubscribed()
        await self._unsubscribe(queue.subscription_arn, queue.name)
        try:
            queue.subscription_arn = await self._subscribe(queue.arn)
        except ChannelError as err:
            # Trust stays off; the next check (half a bound later) finds the old subscription
            # gone and tries again.
            log.warning("cannot re-create the subscription: queue=%s error=%s", queue.name, err)
            return
        self.observer.subscription_healed()
        self._inbox.flush_all_sources("subscription re-created")
        self.health.mark_subscribed(queue.name)

    # Shutdown.

    async def _unsubscribe(self, subscription_arn: str | None, name: str) -> None:
        if not subscription_arn:
            return
        try:
            await _call(self._clients.sns.unsubscribe, SubscriptionArn=subscription_arn)
        except (ClientError, BotoCoreError) as err:
            log.warning("Unsubscribe failed: queue=%s error=%s", name, _describe(err))

    async def _delete_queue(self, url: str, name: str) -> None:
        try:
            await _call(self._clients.sqs.delete_queue, QueueUrl=url)
        except (ClientError, BotoCoreError) as err:
            log.warning("DeleteQueue failed: queue=%s error=%s", name, _describe(err))
            return
        log.info("invalidation queue removed: queue=%s", name)

    async def _remove(self) -> None:
        """Unsubscribes, then deletes the queue (or what a failed set-up left)."""
        queue, partial = self.queue, self._partial
        self.queue, self._partial = None, _Partial()
        if queue is not None:
            await self._unsubscribe(queue.subscription_arn, queue.name)
            await self._delete_queue(queue.url, queue.name)
        elif partial.url:
            # Set-up failed after CreateQueue (so before any subscription): delete what it made.
            await self._delete_queue(partial.url, partial.name)

    def __repr__(self) -> str:
        return f"Subscriber(queue={self._base_name!r}, topic={self._topic_arn!r})"


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Reads an abandoned task's outcome, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
