"""The subscriber end to end against moto server: it creates its queue (policy, encryption,
retention, owner and heartbeat tags) and subscribes it raw; messages published to the topic as
the relay publishes them reach the caches; a malformed one is counted, deleted and the loop goes
on; a queue deleted out of band is recreated; a subscription removed or filtered out of band is
re-created; set-up that keeps failing past the bound still lets the task serve; stop removes the
subscription and the queue. And, against stubbed clients, what moto does not emulate: a name SQS
refuses after a delete, a queue whose ARN is not the one guessed from the topic's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from moto_support import PATIENCE_S, Moto, eventually_async, unique
from staleless.cache import CacheMode, TrustedCache
from staleless.caches import Caches
from staleless.config import SubscriberConfig
from staleless.health import ChannelHealth, SourceSpec
from staleless.inbox import Inbox
from staleless.metrics import Metrics, sample_sum
from staleless.queue import HEARTBEAT_TAG, OWNER_TAG, queue_name, queue_policy_json
from staleless.subscriber import ChannelClients, ChannelError, Subscriber, backoff_s

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

pytest_plugins = ("conftest_moto",)

ALICE_CHANGED = '{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"alice","seq":"1","at_ms":0}]}'


def tick_body(written_at_ms: int | None = None) -> str:
    """A tick of the users source, as the relay publishes one."""
    written = int(time.time() * 1000) if written_at_ms is None else written_at_ms
    return json.dumps({"v": 1, "kind": "tick", "source": "users", "written_at_ms": written, "writer": "staleless"})


@dataclass
class Task:
    """One subscriber with one trusted cache, running."""

    subscriber: Subscriber
    health: ChannelHealth
    names: TrustedCache[str, str]
    metrics: Metrics
    topic_arn: str
    sqs: SQSClient
    sns: SNSClient
    stop: asyncio.Event
    running: asyncio.Task[None]
    prefix: str
    task_id: str

    def metric(self, name: str, **labels: str) -> float:
        return sample_sum(self.metrics.render().decode(), f"staleless_{name}", **labels) or 0.0

    async def publish(self, body: str) -> None:
        """Publishes ``body`` to the topic (retried: moto refuses while a deleted queue is still
        subscribed)."""

        async def published() -> bool:
            try:
                await asyncio.to_thread(self.sns.publish, TopicArn=self.topic_arn, Message=body)
            except ClientError:
                return False
            return True

        await eventually_async("the topic to take a message", published)

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        async def check() -> bool:
            return condition()

        await eventually_async(what, check)

    async def trusted(self) -> None:
        """Ticks until the cache is trusted."""

        async def ticked() -> bool:
            if self.health.is_trusted("users"):
                return True
            await self.publish(tick_body())
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not self.health.is_trusted("users"):
                await asyncio.sleep(0.05)
            return self.health.is_trusted("users")

        await eventually_async("the users cache to be trusted", ticked)

    async def cached(self, key: str, value: str) -> None:
        """Reads ``key`` until the cache holds ``value`` for it (trusting it first)."""

        async def load() -> str:
            return value

        async def stored() -> bool:
            await self.trusted()
            assert await self.names.get(key, load) == value
            return self.names.peek(key) == value

        await eventually_async(f"{key} to be cached", stored)

    def queue_url(self) -> str:
        queue = self.subscriber.queue
        assert queue is not None, "no queue set up"
        return queue.url


def environment(moto: Moto, topic_arn: str, prefix: str, **overrides: str) -> dict[str, str]:
    return {
        **moto.env(),
        "INVALIDATION_TOPIC_ARN": topic_arn,
        "QUEUE_NAME_PREFIX": prefix,
        "POLL_WAIT_SECS": "1",
        "STALENESS_BOUND_SECS": "30",
        "QUEUE_HEARTBEAT_INTERVAL_SECS": "1",
        # Generous: a loaded machine answers slowly, and a hung call is not what these test.
        "AWS_ATTEMPT_TIMEOUT_MS": "20000",
        "AWS_CALL_TIMEOUT_MS": "60000",
        **overrides,
    }


@pytest.fixture
def aws_credentials(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in moto.env().items():
        monkeypatch.setenv(variable, value)


@contextlib.asynccontextmanager
async def running_task(moto: Moto, **overrides: str) -> AsyncIterator[Task]:
    sns, sqs = moto.sns(), moto.sqs()
    topic_arn = sns.create_topic(Name=unique("invalidations"))["TopicArn"]
    prefix, task_id = unique("staleless-task"), unique("task")
    config = SubscriberConfig.from_env(environment(moto, topic_arn, prefix, **overrides))
    health = ChannelHealth(config.trust_rules(), [SourceSpec("users", "profiles")])
    metrics = Metrics().watch(health)
    names: TrustedCache[str, str] = TrustedCache(health, "users", CacheMode.EVENT, observer=metrics)
    inbox = Inbox(health, Caches().register("users", names), {"staleless-users": "users"}, observer=metrics)
    subscriber = Subscriber(inbox, config, task_id, observer=metrics)
    stop = asyncio.Event()
    running = asyncio.create_task(subscriber.run(stop))
    task = Task(subscriber, health, names, metrics, topic_arn, sqs, sns, stop, running, prefix, task_id)
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(running, PATIENCE_S)


async def subscribed(task: Task) -> None:
    await task.until("the queue to be subscribed", lambda: task.health.subscribed)


def subscriptions_of(task: Task) -> list[str]:
    listed = task.sns.list_subscriptions_by_topic(TopicArn=task.topic_arn)["Subscriptions"]
    return [entry.get("Endpoint", "") for entry in listed]


def queue_exists(sqs: SQSClient, name: str) -> bool:
    try:
        sqs.get_queue_url(QueueName=name)
    except ClientError:
        return False
    return True


@pytest.mark.usefixtures("aws_credentials")
async def test_the_queue_is_created_tagged_and_subscribed_and_an_invalidation_evicts(moto: Moto) -> None:
    async with running_task(moto) as task:
        await subscribed(task)
        assert task.health.is_ready()
        queue = task.subscriber.queue
        assert queue is not None
        assert queue.name == task.subscriber.queue_name == queue_name(task.prefix, task.task_id)
        tags = task.sqs.list_queue_tags(QueueUrl=queue.url)["Tags"]
        owner = moto.sts().get_caller_identity()["UserId"]
        assert tags[OWNER_TAG] == owner
        assert int(tags[HEARTBEAT_TAG]) <= time.time() + 1
        attributes = task.sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
        assert attributes["MessageRetentionPeriod"] == "300"
        policy = json.loads(attributes["Policy"])
        [statement] = policy["Statement"]
        assert statement["Resource"] == queue.arn
        assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == task.topic_arn
        assert subscriptions_of(task) == [queue.arn]
        subscription = task.sns.get_subscription_attributes(SubscriptionArn=queue.subscription_arn)["Attributes"]
        assert subscription["RawMessageDelivery"] == "true"

        await task.cached("alice", "Alice")
        await task.publish(ALICE_CHANGED)
        await task.until("alice to be evicted", lambda: task.names.peek("alice") is None)
        await task.until("the eviction to be counted", lambda: task.metric("invalidations_applied_total") >= 1)
        assert task.metric("queue_messages_total", outcome="applied") >= 2  # a tick and the invalidation
        assert task.metric("ticks_total", source="users") >= 1
        assert task.metric("queue_receives_total", outcome="messages") >= 1
        # The heartbeat tag is refreshed every second here.
        first = int(tags[HEARTBEAT_TAG])
        await task.until(
            "the heartbeat tag to move",
            lambda: int(task.sqs.list_queue_tags(QueueUrl=queue.url)["Tags"][HEARTBEAT_TAG]) > first,
        )


@pytest.mark.usefixtures("aws_credentials")
async def test_a_malformed_message_is_counted_deleted_and_the_loop_goes_on(moto: Moto) -> None:
    async with running_task(moto) as task:
        await subscribed(task)
        await task.publish("this is not an invalidation")
        await task.publish('{"v":2,"kind":"invalidate"}')
        await task.until("both to be counted", lambda: task.metric("queue_messages_total", outcome="malformed") == 2)

        def drained() -> bool:
            counts = task.sqs.get_queue_attributes(
                QueueUrl=task.queue_url(),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            return (
                counts["ApproximateNumberOfMessages"] == "0" and counts["ApproximateNumberOfMessagesNotVisible"] == "0"
            )

        await task.until("the malformed messages to be deleted", drained)
        await task.cached("alice", "Alice")
        await task.publish(ALICE_CHANGED)
        await task.until("alice to be evicted after the bad messages", lambda: task.names.peek("alice") is None)
        assert not task.running.done()


@pytest.mark.usefixtures("aws_credentials")
async def test_a_queue_deleted_out_of_band_is_recreated_and_resubscribed(moto: Moto) -> None:
    async with running_task(moto) as task:
        await subscribed(task)
        await task.cached("alice", "Alice")
        old = task.subscriber.queue
        assert old is not None
        task.sqs.delete_queue(QueueUrl=old.url)
        await task.until("the queue to be recreated", lambda: task.metric("queue_recreated_total") == 1)
        await task.until(
            "a new subscription",
            lambda: (
                task.health.subscribed
                and task.subscriber.queue is not None
                and task.subscriber.queue.subscription_arn != old.subscription_arn
            ),
        )
        new = task.subscriber.queue
        assert new is not None
        assert task.names.peek("alice") is None, "a new subscription flushes what may have missed messages"
        assert subscriptions_of(task) == [new.arn], "the old subscription was removed"
        await task.cached("alice", "Alice")
        await task.publish(ALICE_CHANGED)
        await task.until("alice to be evicted through the new queue", lambda: task.names.peek("alice") is None)


@pytest.mark.usefixtures("aws_credentials")
@pytest.mark.parametrize("alteration", ["removed", "filtered", "not_raw"])
async def test_a_subscription_gone_or_altered_is_recreated(moto: Moto, alteration: str) -> None:
    # No ticks flow: with B = 2 s, the subscription is checked every second.
    async with running_task(moto, STALENESS_BOUND_SECS="2") as task:
        await subscribed(task)
        queue = task.subscriber.queue
        assert queue is not None
        old = queue.subscription_arn
        if alteration == "removed":
            task.sns.unsubscribe(SubscriptionArn=old)
        elif alteration == "filtered":
            task.sns.set_subscription_attributes(
                SubscriptionArn=old, AttributeName="FilterPolicy", AttributeValue='{"source":["roles"]}'
            )
        else:
            task.sns.set_subscription_attributes(
                SubscriptionArn=old, AttributeName="RawMessageDelivery", AttributeValue="false"
            )
        await task.until("the subscription to be healed", lambda: task.metric("subscription_healed_total") == 1)
        await task.until("it to count as subscribed again", lambda: task.health.subscribed)
        assert queue.subscription_arn != old
        assert subscriptions_of(task) == [queue.arn]
        attributes = task.sns.get_subscription_attributes(SubscriptionArn=queue.subscription_arn)["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        assert not attributes.get("FilterPolicy")


@pytest.mark.usefixtures("aws_credentials")
async def test_stop_unsubscribes_and_deletes_the_queue(moto: Moto) -> None:
    async with running_task(moto) as task:
        await subscribed(task)
        queue = task.subscriber.queue
        assert queue is not None
        task.stop.set()
        await asyncio.wait_for(task.running, PATIENCE_S)
        assert not task.health.subscribed
        assert not queue_exists(task.sqs, queue.name)
        assert subscriptions_of(task) == []


@pytest.mark.usefixtures("aws_credentials")
async def test_set_up_failing_past_the_bound_serves_by_reading_through(moto: Moto) -> None:
    # Nothing listens on a port just freed: every call is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    async with running_task(
        moto, STALENESS_BOUND_SECS="1", AWS_ENDPOINT_URL=closed, AWS_ATTEMPT_TIMEOUT_MS="2000"
    ) as task:
        assert not task.health.is_ready()
        await task.until("the task to serve anyway", task.health.is_ready)
        assert not task.health.subscribed
        assert not task.health.is_trusted("users")

        async def load() -> str:
            return "Alice"

        assert await task.names.get("alice", load) == "Alice"
        assert task.names.peek("alice") is None, "read through, nothing stored"
        assert task.metric("cache_bypassed_reads_total", cache="profiles") == 1


# The set-up's rules that moto does not exercise, against stubbed clients.


def stubbed_subscriber(topic_arn: str) -> tuple[Subscriber, dict[str, Stubber]]:
    config = SubscriberConfig.from_env(
        {"INVALIDATION_TOPIC_ARN": topic_arn, "QUEUE_RETENTION_SECS": "5", "AWS_REGION": "us-east-1"}
    )
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    clients = ChannelClients(
        sqs=session.client("sqs", region_name="us-east-1"),
        sns=session.client("sns", region_name="us-east-1"),
        sts=session.client("sts", region_name="us-east-1"),
    )
    stubs = {"sqs": Stubber(clients.sqs), "sns": Stubber(clients.sns), "sts": Stubber(clients.sts)}
    for stub in stubs.values():
        stub.activate()
    health = ChannelHealth(config.trust_rules(), [SourceSpec("users", "profiles")])
    return Subscriber(Inbox(health, Caches()), config, "t1", clients=clients), stubs


async def test_a_name_deleted_recently_is_replaced_by_a_generation_name_and_the_owner_asked_once() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:invalidations"
    subscriber, stubs = stubbed_subscriber(topic)
    sqs, sns, sts = stubs["sqs"], stubs["sns"], stubs["sts"]
    sts.add_response("get_caller_identity", {"UserId": "AROAEXAMPLE:task-1", "Account": "123456789012"})
    sqs.add_client_error(
        "create_queue", service_error_code="AWS.SimpleQueueService.QueueDeletedRecently", http_status_code=400
    )
    expected = "arn:aws:sqs:us-east-1:123456789012:staleless-task-t1-r1"
    sqs.add_response(
        "create_queue",
        {"QueueUrl": "https://sqs/q-r1"},
        {
            "QueueName": "staleless-task-t1-r1",
            "Attributes": {
                "MessageRetentionPeriod": "60",
                "SqsManagedSseEnabled": "true",
                "Policy": queue_policy_json(expected, topic),
            },
            "tags": {HEARTBEAT_TAG: ANY, OWNER_TAG: "AROAEXAMPLE:task-1"},
        },
    )
    # The queue lives elsewhere than guessed: the policy is set for its real ARN.
    actual = "arn:aws:sqs:us-east-1:999999999999:staleless-task-t1-r1"
    sqs.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": actual}},
        {"QueueUrl": "https://sqs/q-r1", "AttributeNames": ["QueueArn"]},
    )
    sqs.add_response(
        "set_queue_attributes",
        {},
        {"QueueUrl": "https://sqs/q-r1", "Attributes": {"Policy": queue_policy_json(actual, topic)}},
    )
    sns.add_response(
        "subscribe",
        {"SubscriptionArn": f"{topic}:sub-1"},
        {
            "TopicArn": topic,
            "Protocol": "sqs",
            "Endpoint": actual,
            "Attributes": {"RawMessageDelivery": "true"},
            "ReturnSubscriptionArn": True,
        },
    )
    created = await subscriber.create_and_subscribe()
    assert (created.name, created.arn, created.subscription_arn) == ("staleless-task-t1-r1", actual, f"{topic}:sub-1")
    # A second set-up (after the queue was lost) keeps the generation and does not ask STS again.
    sqs.add_client_error("create_queue", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(ChannelError, match="CreateQueue"):
        await subscriber.create_and_subscribe()
    for stub in stubs.values():
        stub.assert_no_pending_responses()


def test_the_backoff_doubles_from_a_quarter_second_to_five() -> None:
    assert [backoff_s(failures) for failures in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert backoff_s(40) == 5.0
