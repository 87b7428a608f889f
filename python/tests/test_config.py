"""The subscriber's configuration: the Rust consumer's variables and defaults (read from its
source, so the two cannot drift), and an error naming the variable for a malformed value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from staleless.config import AwsSettings, ConfigError, QueueTags, SubscriberConfig
from staleless.queue import HEARTBEAT_TAG, OWNER_TAG

ROOT = Path(__file__).resolve().parents[2]
CONFIG_RS = ROOT / "consumer" / "src" / "config.rs"
AWS_RS = ROOT / "consumer" / "src" / "aws.rs"
KEYS_RS = ROOT / "protocol" / "src" / "keys.rs"

NUMBERS = {
    "POLL_WAIT_SECS": "poll_wait_secs",
    "STALENESS_BOUND_SECS": "staleness_bound_secs",
    "QUEUE_RETENTION_SECS": "queue_retention_secs",
    "QUEUE_HEARTBEAT_INTERVAL_SECS": "queue_heartbeat_interval_secs",
    "TICK_FUTURE_TOLERANCE_MS": "tick_future_tolerance_ms",
    "CACHE_VERIFY_ONE_IN": "verify_one_in",
}


def test_the_defaults() -> None:
    config = SubscriberConfig.from_env({})
    assert config.topic_arn is None
    assert config.queue_name_prefix == "staleless-task"
    assert config.poll_wait_secs == 20
    assert config.staleness_bound_secs == 15
    assert config.queue_retention_secs == 300
    assert config.queue_heartbeat_interval_secs == 60
    assert config.heartbeat_writers == ("staleless",)
    assert config.tick_future_tolerance_ms == 500
    assert config.verify_one_in == 1_000
    assert config.tags == QueueTags(owner=OWNER_TAG, heartbeat=HEARTBEAT_TAG)
    assert config.aws == AwsSettings()
    assert config == SubscriberConfig()


def test_every_variable_is_read() -> None:
    config = SubscriberConfig.from_env(
        {
            "INVALIDATION_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t",
            "QUEUE_NAME_PREFIX": "orders-task",
            "POLL_WAIT_SECS": "5",
            "STALENESS_BOUND_SECS": "30",
            "QUEUE_RETENTION_SECS": "120",
            "QUEUE_HEARTBEAT_INTERVAL_SECS": "10",
            "HEARTBEAT_WRITERS": " staleless, backup ,,backup",
            "TICK_FUTURE_TOLERANCE_MS": "250",
            "CACHE_VERIFY_ONE_IN": "0",
            "QUEUE_OWNER_TAG": "acme:owner",
            "QUEUE_HEARTBEAT_TAG": "acme:heartbeat",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_CALL_TIMEOUT_MS": "5000",
            "AWS_ATTEMPT_TIMEOUT_MS": "2000",
        }
    )
    assert config.require_topic_arn() == "arn:aws:sns:us-east-1:1:t"
    assert config.queue_name_prefix == "orders-task"
    assert (config.poll_wait_secs, config.staleness_bound_secs) == (5, 30)
    assert (config.queue_retention_secs, config.queue_heartbeat_interval_secs) == (120, 10)
    assert config.heartbeat_writers == ("staleless", "backup")
    assert (config.tick_future_tolerance_ms, config.verify_one_in) == (250, 0)
    assert config.tags == QueueTags(owner="acme:owner", heartbeat="acme:heartbeat")
    assert config.aws.endpoint_url == "http://127.0.0.1:4566"
    assert config.aws.region == "eu-west-1"
    assert (config.aws.call_timeout_s, config.aws.attempt_timeout_s) == (5.0, 2.0)
    rules = config.trust_rules()
    assert rules.bound_ms == 30_000
    assert rules.future_tolerance_ms == 250
    assert rules.writers == ("staleless", "backup")


def test_the_region_prefers_aws_region_and_empty_values_are_unset() -> None:
    both = SubscriberConfig.from_env({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert both.aws.region == "us-west-2"
    empty = SubscriberConfig.from_env({"POLL_WAIT_SECS": "", "QUEUE_NAME_PREFIX": "", "AWS_REGION": ""})
    assert (empty.poll_wait_secs, empty.queue_name_prefix, empty.aws.region) == (20, "staleless-task", None)
    assert empty.aws.client_kwargs("sqs") == {}


def test_a_service_may_have_its_own_endpoint_as_boto3_reads_them() -> None:
    aws = AwsSettings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:5000",
            "AWS_ENDPOINT_URL_SNS": "",
            "AWS_REGION": "us-east-1",
        }
    )
    assert aws.client_kwargs("dynamodb") == {"endpoint_url": "http://127.0.0.1:5000", "region_name": "us-east-1"}
    assert aws.client_kwargs("sqs") == {"endpoint_url": "http://127.0.0.1:4566", "region_name": "us-east-1"}
    assert aws.endpoint_url_for("sns") == "http://127.0.0.1:4566", "an empty variable is unset"
    ignored = AwsSettings.from_env({"AWS_ENDPOINT_URL": "http://x", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    assert ignored.endpoint_url_for("sqs") is None
    assert hash(SubscriberConfig.from_env({"AWS_ENDPOINT_URL_SQS": "http://y"})) is not None


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALENESS_BOUND_SECS", "9")
    assert SubscriberConfig.from_env().staleness_bound_secs == 9


@pytest.mark.parametrize("variable", [*NUMBERS, "AWS_CALL_TIMEOUT_MS", "AWS_ATTEMPT_TIMEOUT_MS"])
@pytest.mark.parametrize("value", ["-1", "1.5", "ten", " 5", "١٢", str(2**64)])
def test_a_malformed_number_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SubscriberConfig.from_env({variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value)
    assert repr(value) in str(raised.value)


def test_a_writer_list_naming_no_writer_is_refused() -> None:
    with pytest.raises(ConfigError, match="HEARTBEAT_WRITERS"):
        SubscriberConfig.from_env({"HEARTBEAT_WRITERS": " , ,"})


def test_a_missing_topic_is_named_when_required() -> None:
    with pytest.raises(ConfigError, match="INVALIDATION_TOPIC_ARN"):
        SubscriberConfig.from_env({}).require_topic_arn()


def test_the_poll_wait_is_clamped_to_what_sqs_allows() -> None:
    assert SubscriberConfig.from_env({"POLL_WAIT_SECS": "60"}).poll_wait_s == 20
    assert SubscriberConfig.from_env({"POLL_WAIT_SECS": "0"}).poll_wait_s == 0


def test_the_tolerance_is_capped_at_half_the_bound() -> None:
    rules = SubscriberConfig.from_env({"STALENESS_BOUND_SECS": "1", "TICK_FUTURE_TOLERANCE_MS": "900"}).trust_rules()
    assert rules.future_tolerance_ms == 500


def test_every_client_gets_timeouts_and_two_retries() -> None:
    aws = AwsSettings.from_env({"AWS_CALL_TIMEOUT_MS": "3000", "AWS_ATTEMPT_TIMEOUT_MS": "5000"})
    assert aws.attempt_timeout_s == 3.0, "an attempt never outlasts the call"
    options = vars(aws.botocore_config())
    assert (options["connect_timeout"], options["read_timeout"]) == (3.0, 3.0)
    assert options["retries"] == {"max_attempts": 2, "mode": "standard"}
    assert vars(aws.botocore_config(read_timeout_s=30.0))["read_timeout"] == 30.0


def _rust_defaults(source: str) -> dict[str, str]:
    """``env = "X"`` → its ``default_value``/``default_value_t`` in a clap ``#[arg(...)]``."""
    defaults: dict[str, str] = {}
    for attribute in re.findall(r"#\[arg\((.*?)\)\]\n", source, flags=re.DOTALL):
        env = re.search(r'env = "([A-Z_]+)"', attribute)
        default = re.search(r"default_value(?:_t)? = ([^,)]+)", attribute)
        if env and default:
            value = default.group(1).strip().strip('"')
            defaults[env.group(1)] = value.replace("_", "") if value.replace("_", "").isdigit() else value
    return defaults


@pytest.mark.skipif(not CONFIG_RS.exists(), reason="the Rust consumer's source is not beside this package")
def test_the_defaults_are_the_rust_consumers() -> None:
    rust = _rust_defaults(CONFIG_RS.read_text()) | _rust_defaults(AWS_RS.read_text())
    writer = re.search(r'DEFAULT_HEARTBEAT_WRITER: &str = "([^"]+)"', KEYS_RS.read_text())
    assert writer is not None
    config = SubscriberConfig.from_env({})
    python = {
        "QUEUE_NAME_PREFIX": config.queue_name_prefix,
        **{variable: str(getattr(config, attribute)) for variable, attribute in NUMBERS.items()},
        "AWS_CALL_TIMEOUT_MS": str(config.aws.call_timeout_ms),
        "AWS_ATTEMPT_TIMEOUT_MS": str(config.aws.attempt_timeout_ms),
    }
    for variable, value in python.items():
        assert rust[variable] == value, variable
    assert rust["HEARTBEAT_WRITERS"] == "staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER"
    assert config.heartbeat_writers == (writer.group(1),)
    assert rust["QUEUE_OWNER_TAG"] == "crate::queue::OWNER_TAG"
    assert rust["QUEUE_HEARTBEAT_TAG"] == "crate::queue::HEARTBEAT_TAG"
