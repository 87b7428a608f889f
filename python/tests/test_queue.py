"""The queue rules, as ``consumer/src/queue.rs`` has them (its tests, ported), and the constants
read from the Rust source so that the two cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from staleless.queue import (
    HEARTBEAT_TAG,
    MAX_QUEUE_NAME_CHARS,
    OWNER_TAG,
    heartbeat_is_stale,
    is_queue_missing,
    local_task_id,
    queue_arn_beside,
    queue_name,
    queue_name_from_arn,
    queue_policy,
    queue_policy_json,
    recreated_name,
    sanitize,
    subscription_problem,
)

QUEUE_RS = Path(__file__).resolve().parents[2] / "consumer" / "src" / "queue.rs"


def test_names_fit_sqs_rules() -> None:
    assert (
        queue_name("staleless-task", "ip-10-0-0-1.ec2.internal-42-ab12")
        == "staleless-task-ip-10-0-0-1-ec2-internal-42-ab12"
    )
    long = queue_name("staleless-task", "x" * 200)
    assert len(long) == MAX_QUEUE_NAME_CHARS
    assert long.startswith("staleless-task-")
    again = recreated_name(long, 2)
    assert len(again) == MAX_QUEUE_NAME_CHARS
    assert again.endswith("-r2")
    assert recreated_name("q", 1) == "q-r1"


def test_only_what_sqs_allows_is_kept() -> None:
    assert sanitize("a.b/c d_e-f9") == "a-b-c-d_e-f9"
    assert sanitize("é") == "-", "only ASCII letters and digits"
    assert queue_name("my prefix", "tâsk") == "my-prefix-t-sk"


def test_names_from_arns_and_local_ids() -> None:
    assert queue_name_from_arn("arn:aws:sqs:us-east-1:123:staleless-task-a") == "staleless-task-a"
    assert queue_name_from_arn("https://example.com") is None
    assert queue_name_from_arn("arn:aws:sqs:us-east-1:123:") is None
    first, second = local_task_id(), local_task_id()
    assert first != second, "two subscribers in one process get two queues"
    assert len(queue_name("staleless-task", first)) <= MAX_QUEUE_NAME_CHARS


def test_a_local_task_id_names_the_host_and_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "h" * 40)
    host, pid, random = local_task_id().rsplit("-", 2)
    assert host == "h" * 24
    assert pid.isdigit()
    assert len(random) == 8


def test_the_policy_admits_only_the_topic() -> None:
    policy = queue_policy("arn:aws:sqs:us-east-1:123:q", "arn:aws:sns:us-east-1:123:t")
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Resource"] == "arn:aws:sqs:us-east-1:123:q"
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == "arn:aws:sns:us-east-1:123:t"


def test_the_policy_text_is_the_rust_subscribers_byte_for_byte() -> None:
    # serde_json without `preserve_order`: compact, keys sorted.
    assert queue_policy_json("arn:aws:sqs:us-east-1:123:q", "arn:aws:sns:us-east-1:123:t") == (
        '{"Statement":[{"Action":"sqs:SendMessage","Condition":{"ArnEquals":'
        '{"aws:SourceArn":"arn:aws:sns:us-east-1:123:t"}},"Effect":"Allow","Principal":'
        '{"Service":"sns.amazonaws.com"},"Resource":"arn:aws:sqs:us-east-1:123:q",'
        '"Sid":"OnlyTheInvalidationTopic"}],"Version":"2012-10-17"}'
    )


def test_the_queue_arn_is_derived_from_the_topic_arn() -> None:
    assert (
        queue_arn_beside("arn:aws:sns:eu-west-1:123456789012:staleless-invalidations", "staleless-task-a")
        == "arn:aws:sqs:eu-west-1:123456789012:staleless-task-a"
    )
    assert queue_arn_beside("arn:aws-cn:sns:cn-north-1:1:t", "q") == "arn:aws-cn:sqs:cn-north-1:1:q"
    assert queue_arn_beside("not-an-arn", "q") is None
    assert queue_arn_beside("arn:aws:sqs:us-east-1:1:q", "q") is None, "not a topic"
    assert queue_arn_beside("arn:aws:sns::1:t", "q") is None, "no region"
    assert queue_arn_beside("arn:aws:sns:us-east-1", "q") is None


def test_a_subscription_must_deliver_everything_raw_to_this_queue() -> None:
    good = {"Endpoint": "arn:q", "TopicArn": "arn:t", "RawMessageDelivery": "true"}
    assert subscription_problem(good, "arn:q", "arn:t") is None
    assert subscription_problem({**good, "FilterPolicy": '{"source":["nothing"]}'}, "arn:q", "arn:t") is not None
    assert subscription_problem({**good, "FilterPolicy": "  "}, "arn:q", "arn:t") is None, "an empty policy"
    assert subscription_problem({**good, "RawMessageDelivery": "false"}, "arn:q", "arn:t") is not None
    assert subscription_problem({"Endpoint": "arn:q", "TopicArn": "arn:t"}, "arn:q", "arn:t") is not None
    assert subscription_problem(good, "arn:other", "arn:t") is not None
    assert subscription_problem(good, "arn:q", "arn:other") == "subscribed to another topic"


def test_only_tagged_queues_with_an_old_heartbeat_are_stale() -> None:
    assert heartbeat_is_stale("1000", 2_000, 600)
    assert not heartbeat_is_stale("1500", 2_000, 600)
    assert not heartbeat_is_stale(None, 2_000, 600)
    assert not heartbeat_is_stale("yesterday", 2_000, 600)
    assert not heartbeat_is_stale("-5", 2_000, 600)
    assert not heartbeat_is_stale("3000", 2_000, 600), "a clock behind the tag is not stale"


def test_both_spellings_of_a_missing_queue_are_recognised() -> None:
    assert is_queue_missing("AWS.SimpleQueueService.NonExistentQueue")
    assert is_queue_missing("QueueDoesNotExist")
    assert not is_queue_missing("ThrottlingException")
    assert not is_queue_missing(None)


@pytest.mark.skipif(not QUEUE_RS.exists(), reason="the Rust consumer's source is not beside this package")
def test_the_tags_and_limits_are_the_rust_subscribers() -> None:
    source = QUEUE_RS.read_text()

    def constant(name: str) -> str:
        found = re.search(rf"pub const {name}: [^=]+= ([^;]+);", source)
        assert found is not None, name
        return found.group(1).strip().strip('"')

    assert constant("OWNER_TAG") == OWNER_TAG
    assert constant("HEARTBEAT_TAG") == HEARTBEAT_TAG
    assert int(constant("MAX_QUEUE_NAME_CHARS")) == MAX_QUEUE_NAME_CHARS
