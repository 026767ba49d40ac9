"""Shared test helpers: deadlines instead of sleeps, free loopback ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
CASSANDRA_TESTS = Path(__file__).resolve().parent / "cassandra"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of tests/cassandra needs the node: mark it so the lanes can select it."""
    for item in items:
        if CASSANDRA_TESTS in item.path.parents:
            item.add_marker(pytest.mark.node)


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll until check() returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
        last = check()
    return last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
