"""A pytest plugin: one moto server per test session, on a free loopback port.

Load it with ``pytest_plugins = ("conftest_moto",)`` in a test module (helpers are in
``moto_support``). The server is the project virtualenv's ``moto_server`` (beside the running
interpreter), started as a subprocess, waited on until it answers, and stopped (by its process
id) when the session ends. Tests keep apart by naming their own topics, queues and tables
(``moto_support.unique``), so none resets another's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from moto_support import CREDENTIALS, PATIENCE_S, Moto


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        pytest.skip("moto_server is not installed")
    return found


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _start() -> tuple[subprocess.Popen[bytes], str, IO[bytes]]:
    """Starts a server on a free port; a port taken meanwhile is retried on another."""
    program = _moto_server()
    for _ in range(5):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the fixture
        process = subprocess.Popen(
            [program, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        )
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(endpoint):
                return process, endpoint, log
            time.sleep(0.1)
        _stop(process)
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
        if "Address already in use" not in output:
            pytest.fail(f"moto_server did not answer on {endpoint}:\n{output}")
    pytest.fail("moto_server found no free port")


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """A moto server for the whole session."""
    process, endpoint, log = _start()
    try:
        yield Moto(endpoint=endpoint)
    finally:
        _stop(process)
        log.close()


__all__ = ["CREDENTIALS", "moto"]
