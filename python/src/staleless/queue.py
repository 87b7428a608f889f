"""Pure pieces of a task's queue: its name, its tags, its access policy, the heartbeat rule that
tells a live task's queue from a dead one's, and the error codes that say a queue is gone.

A port of ``consumer/src/queue.rs``: the same names, tags and policy, so that a Python task's
queue is swept, policed and recognised exactly as a Rust task's is.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HEARTBEAT_TAG",
    "MAX_QUEUE_NAME_CHARS",
    "OWNER_TAG",
    "heartbeat_is_stale",
    "is_queue_missing",
    "local_task_id",
    "queue_arn_beside",
    "queue_name",
    "queue_name_from_arn",
    "queue_policy",
    "queue_policy_json",
    "recreated_name",
    "sanitize",
    "subscription_problem",
]

#: SQS queue names are at most 80 characters of letters, digits, ``-`` and ``_``.
#: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html
MAX_QUEUE_NAME_CHARS = 80

#: Tag naming the task that created the queue: its ``aws:userid`` (from ``GetCallerIdentity``).
#: The task policy lets a task change, read from and delete only queues whose owner tag is its
#: own id, and set that tag only to its own id.
OWNER_TAG = "staleless:owner"

#: Tag holding the Unix time (seconds) of the owner's last heartbeat.
HEARTBEAT_TAG = "staleless:heartbeat"

#: The error codes of a queue that does not exist (the query and JSON protocols name it
#: differently).
_QUEUE_MISSING_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _allowed(char: str) -> bool:
    return (char.isascii() and char.isalnum()) or char in "-_"


def sanitize(text: str) -> str:
    """Keeps what SQS allows in a name and replaces the rest with ``-``."""
    return "".join(char if _allowed(char) else "-" for char in text)


def queue_name(prefix: str, task_id: str) -> str:
    """``<prefix>-<task id>``, the task id cut so that the name fits SQS's limit."""
    prefix = sanitize(prefix)
    room = max(MAX_QUEUE_NAME_CHARS - (len(prefix) + 1), 0)
    return f"{prefix}-{sanitize(task_id)[:room]}"


def recreated_name(name: str, generation: int) -> str:
    """A variant of ``name`` for a recreation, when SQS refuses the same name for 60 s after a
    delete."""
    suffix = f"-r{generation}"
    keep = max(MAX_QUEUE_NAME_CHARS - len(suffix), 0)
    return f"{name[:keep]}{suffix}"


def queue_policy(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    """The queue policy: only the invalidation topic may send, and only to this queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyTheInvalidationTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


def queue_policy_json(queue_arn: str, topic_arn: str) -> str:
    """:func:`queue_policy` as the ``Policy`` attribute's text, byte for byte as the Rust
    subscriber writes it (``serde_json``: compact, keys sorted)."""
    return json.dumps(queue_policy(queue_arn, topic_arn), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def queue_arn_beside(topic_arn: str, name: str) -> str | None:
    """The ARN a queue named ``name`` gets in the topic's partition, region and account
    (``arn:<partition>:sqs:<region>:<account>:<name>``), so its policy can be part of
    ``CreateQueue``; ``None`` when ``topic_arn`` is not an SNS ARN."""
    parts = topic_arn.split(":", 5)
    if len(parts) < 5 or parts[0] != "arn" or parts[2] != "sns":
        return None
    partition, region, account = parts[1], parts[3], parts[4]
    if not partition or not region or not account:
        return None
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


def subscription_problem(attributes: Mapping[str, str], queue_arn: str, topic_arn: str) -> str | None:
    """What is wrong with a subscription whose ``GetSubscriptionAttributes`` returned
    ``attributes``, if anything: it must deliver the whole topic, raw, to this task's queue. A
    filter policy added out of band (even one that matches everything today) is refused: the
    subscriber re-creates the subscription as it made it."""
    endpoint = attributes.get("Endpoint")
    if endpoint is not None and endpoint != queue_arn:
        return f"endpoint is {endpoint!r}, not this task's queue"
    topic = attributes.get("TopicArn")
    if topic is not None and topic != topic_arn:
        return "subscribed to another topic"
    if attributes.get("RawMessageDelivery") != "true":
        return "raw message delivery is off"
    policy = attributes.get("FilterPolicy")
    if policy is not None and policy.strip():
        return "a filter policy was added"
    return None


def heartbeat_is_stale(heartbeat: str | None, now_secs: int, stale_after_secs: int) -> bool:
    """Whether a queue whose heartbeat tag reads ``heartbeat`` belongs to a task that is gone. A
    missing or unreadable tag is not ours to judge: only queues this service tagged are swept."""
    if heartbeat is None or not heartbeat.isascii() or not heartbeat.isdigit():
        return False
    return max(now_secs - int(heartbeat), 0) > stale_after_secs


def queue_name_from_arn(arn: str) -> str | None:
    """The queue name at the end of an SQS ARN (``arn:aws:sqs:<region>:<account>:<name>``)."""
    if not arn.startswith("arn:"):
        return None
    name = arn.rsplit(":", 1)[-1]
    return name or None


def is_queue_missing(code: str | None) -> bool:
    """Whether an SQS error code says the queue does not exist."""
    return code in _QUEUE_MISSING_CODES


def local_task_id() -> str:
    """A task id unique to this process: ``<host>-<pid>-<random>`` (unique even for two processes
    on one host), for services that have no better one (an ECS task id, say)."""
    host = os.environ.get("HOSTNAME", "").strip()
    if not host:
        try:
            with open("/etc/hostname", encoding="utf-8") as file:
                host = file.read().strip()
        except OSError:
            host = ""
    host = host or "host"
    return f"{host[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
