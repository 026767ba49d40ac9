"""The simulator's hostile devices: exactly what each sends on the wire (raw sockets)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# isort: split
from hw_picollector_simulator import FAULT_CHOICES
from hw_picollector_simulator.server import (
    DEEP_JSON_LEVELS,
    FAULTS,
    HOSTILE_FAULTS,
    SimulatedDevice,
)

REQUEST = b"GET /api/v1/data HTTP/1.1\r\nHost: x\r\n\r\n"
LAST_REQUEST = b"GET /api/v1/data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.fixture
def hostile() -> Iterator[SimulatedDevice]:
    with SimulatedDevice("HWE-P1", "v1") as device:
        yield device


def exchange(device: SimulatedDevice, fault: str, at_least: int,
             request: bytes = REQUEST) -> bytes:
    """Sets ``fault``, sends ``request`` and reads until ``at_least`` bytes or the end."""
    device.set_fault(fault)
    data = bytearray()
    with socket.create_connection(("127.0.0.1", device.port), timeout=10) as sock:
        sock.sendall(request)
        while len(data) < at_least:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return bytes(data)


def test_the_cli_offers_every_fault() -> None:
    assert FAULT_CHOICES == FAULTS
    assert set(HOSTILE_FAULTS) <= set(FAULTS)


def test_continue_flood_never_gives_a_final_answer(hostile: SimulatedDevice) -> None:
    data = exchange(hostile, "continue-flood", 1 << 20)
    assert len(data) >= 1 << 20
    whole = len(data) // len(CONTINUE) * len(CONTINUE)
    assert data[:whole] == CONTINUE * (whole // len(CONTINUE))


def test_chunk_extension_flood(hostile: SimulatedDevice) -> None:
    data = exchange(hostile, "chunk-ext-flood", 1 << 20)
    head, _, chunks = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    chunk = b"1;ext=" + b"x" * 1000 + b"\r\n \r\n"
    assert len(chunks) > 1000 * len(chunk)
    assert chunks.startswith(chunk * 1000)


def test_huge_body_never_ends(hostile: SimulatedDevice) -> None:
    data = exchange(hostile, "huge-body", 4 << 20)
    assert len(data) >= 4 << 20
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body.startswith(b"10000\r\n" + b" " * 0x10000 + b"\r\n10000\r\n")


def test_trickle_sends_the_right_answer_a_byte_at_a_time(hostile: SimulatedDevice) -> None:
    hostile.trickle_s = 0.001
    data = exchange(hostile, "trickle", 1 << 20)  # to the end: the connection closes after it
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert "active_power_w" in json.loads(body)
    hostile.trickle_s = 0.2
    hostile.set_fault("trickle")
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        sock.sendall(REQUEST)
        started = time.monotonic()
        got = b"".join(sock.recv(10) for _ in range(3))
        assert got == b"HTT" and time.monotonic() - started >= 0.35  # one byte per 0.2 s


def test_deep_json_and_junk_error(hostile: SimulatedDevice) -> None:
    data = exchange(hostile, "deep-json", 1 << 30, LAST_REQUEST)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"[" * DEEP_JSON_LEVELS + b"]" * DEEP_JSON_LEVELS
    data = exchange(hostile, "junk-error", 1 << 30, LAST_REQUEST)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    description = json.loads(body)["error"]["description"]
    assert len(description) > 100_000 and "\x1b[" in description and "\x00" in description


@pytest.mark.parametrize("fault", HOSTILE_FAULTS)
def test_identity_still_answers(hostile: SimulatedDevice, fault: str) -> None:
    data = exchange(hostile, fault, 1 << 30, b"GET /api HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n")
    assert json.loads(data.partition(b"\r\n\r\n")[2])["serial"] == hostile.serial


def test_v2_hostile_answers_over_tls(tmp_path: Path) -> None:
    import ssl

    with SimulatedDevice("HWE-P1", "v2", tls_dir=tmp_path, token="T" * 32,
                         fault="continue-flood") as device:
        context = ssl.create_default_context(cafile=str(device.ca_file))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", device.port), timeout=10) as raw, \
                context.wrap_socket(raw) as sock:
            sock.sendall(b"GET /api/measurement HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + b"T" * 32 + b"\r\n\r\n")
            data = b""
            while len(data) < 100_000:
                data += sock.recv(65536)
        assert data.startswith(CONTINUE * 100)
