"""What a hostile device can send to the transport, blocking and driven by a selector: one
absolute deadline and one byte budget per exchange, a few interim answers at most."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from hw_picollector.devices.errors import InvalidResponse, Unreachable
from hw_picollector.devices.transport import Connection
from tests.unit.test_transport import call, server

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":12}"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(params=["blocking", "selector"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_trickling_answer_times_out_at_the_deadline(mode: str) -> None:
    """One byte every 0.1 s keeps the connection busy, never the exchange alive."""
    stop = threading.Event()

    def trickle(conn: socket.socket, _request: bytes) -> bool:
        for i in range(len(OK)):
            if stop.wait(0.1):
                return False
            conn.sendall(OK[i:i + 1])
        return True

    with server(trickle) as (addr, _, _), Connection(addr) as conn:
        started = time.monotonic()
        with pytest.raises(Unreachable, match=r"not complete within 0\.5 s") as err:
            call(conn, mode, "GET", "/", "x", 0.5)
        elapsed = time.monotonic() - started
        stop.set()
    assert err.value.state == "timeout"
    assert 0.45 < elapsed < 1.5, elapsed  # the trickle alone would take several seconds
    assert not conn.connected


def test_the_deadline_covers_a_slow_connect_and_send_too(mode: str) -> None:
    """A device that accepts, then answers only after the deadline: no extra time per step."""
    def late(conn: socket.socket, _request: bytes) -> bool:
        time.sleep(2.5)
        conn.sendall(OK)
        return True

    with server(late) as (addr, _, _), Connection(addr) as conn:
        started = time.monotonic()
        with pytest.raises(Unreachable, match=r"no answer within 0\.5 s"):
            call(conn, mode, "GET", "/", "x", 0.5)
        assert time.monotonic() - started < 1.5  # not the 2.5 s the device takes


def flood_then(head: bytes, burst: bytes, total: int,
               tail: bytes) -> tuple[Callable[[socket.socket, bytes], bool], threading.Event]:
    """Sends ``head``, ``burst`` until ``total`` bytes went out (or the client hung up), then
    ``tail``, then nothing."""
    stop = threading.Event()

    def script(conn: socket.socket, _request: bytes) -> bool:
        sent = 0
        try:
            conn.sendall(head)
            while sent < total and not stop.is_set():
                conn.sendall(burst)
                sent += len(burst)
            conn.sendall(tail)
        except OSError:
            return False
        stop.wait(10)  # then silence
        return False

    return script, stop


@pytest.mark.parametrize(("head", "burst", "total", "tail", "text"), [
    # endless interim answers: refused after a few, not parsed on and on
    (b"", CONTINUE * 100, 4 << 20, b"", "more than 8 interim"),
    (b"", CONTINUE * 10, 10 * len(CONTINUE), OK, "more than 8 interim"),
    # chunk extensions around one-byte chunks: the metadata counts against the byte budget
    (CHUNKED, (b"1;ext=" + b"x" * 1000 + b"\r\n \r\n") * 64, 2 << 20, b"0\r\n\r\n",
     "answer larger than 1048576 bytes"),
    # a body that never ends
    (CHUNKED, b"10000\r\n" + b" " * 0x10000 + b"\r\n", 8 << 20, b"", "larger than 1048576"),
], ids=["continue-flood", "10-interim", "chunk-ext-flood", "huge-body"])
def test_floods_end_the_exchange_early(mode: str, head: bytes, burst: bytes, total: int,
                                       tail: bytes, text: str) -> None:
    script, stop = flood_then(head, burst, total, tail)
    with server(script) as (addr, _, _), Connection(addr) as conn:
        started = time.monotonic()
        with pytest.raises(InvalidResponse, match=text):
            call(conn, mode, "GET", "/", "x", 3)
        elapsed = time.monotonic() - started
        stop.set()
        assert not conn.connected
    assert elapsed < 1.5, elapsed


def test_a_good_answer_in_one_byte_pieces(mode: str) -> None:
    body = b'{"power_w":' + b"1" * 3000 + b"}"
    raw = CHUNKED + b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                             for i in range(0, len(body), 100)) + b"0\r\n\r\n"

    def bytewise(conn: socket.socket, _request: bytes) -> bool:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw)):
            conn.sendall(raw[i:i + 1])
        return True

    with server(bytewise) as (addr, _, _), Connection(addr) as conn:
        for _ in range(2):
            assert call(conn, mode, "GET", "/", "x", 10).body == body
