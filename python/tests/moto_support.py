"""What the moto-backed tests share: the running server's handle, unique names, polling waits
and a reader of Prometheus text. The server itself is the ``moto`` fixture of the
``conftest_moto`` plugin."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sts import STSClient

#: How long the server may take to answer, or a condition to come true, on a loaded machine.
PATIENCE_S = 60.0
#: Dummy credentials: moto accepts any.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@dataclass(frozen=True)
class Moto:
    """A running moto server."""

    endpoint: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The variables that point boto3 (and the package's configuration) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        }

    def _kwargs(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "region_name": self.region, **CREDENTIALS}

    def sqs(self) -> SQSClient:
        """An SQS client on this server (for the tests' own calls)."""
        return boto3.client("sqs", **self._kwargs())

    def sns(self) -> SNSClient:
        """An SNS client on this server."""
        return boto3.client("sns", **self._kwargs())

    def sts(self) -> STSClient:
        """An STS client on this server."""
        return boto3.client("sts", **self._kwargs())

    def dynamodb(self) -> DynamoDBClient:
        """A DynamoDB client on this server."""
        return boto3.client("dynamodb", **self._kwargs())


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def eventually(what: str, condition: Callable[[], bool], patience_s: float = PATIENCE_S) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` after ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


async def eventually_async(what: str, condition: Callable[[], Awaitable[bool]], patience_s: float = PATIENCE_S) -> None:
    """:func:`eventually` for a condition that must be awaited (and lets the loop run)."""
    deadline = time.monotonic() + patience_s
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
