"""The device HTTP/1.1 transport against scripted servers on 127.0.0.1 (exact bytes on the wire)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hw_picollector.devices.errors import InvalidResponse, Unreachable
from hw_picollector.devices.transport import MAX_BODY_BYTES, Connection, Response, base_url

Script = Callable[[socket.socket, bytes], bool]
"""Answers one request (its raw bytes); returns False to hang up after it."""


@contextmanager
def server(script: Script) -> Iterator[tuple[str, list[bytes], list[int]]]:
    """Serves ``script`` on 127.0.0.1; yields (address, requests seen, connections opened)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    connections: list[int] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                request, buf = head + b"\r\n\r\n" + buf[:length], buf[length:]
                seen.append(request)
                if not script(conn, request):
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", seen, connections
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(5)


@pytest.fixture(params=["blocking", "selector"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def call(conn: Connection, mode: str, method: str, path: str, serial: str, timeout_s: float,
         **kwargs: Any) -> Response:
    """One exchange: ``request`` (blocking), or ``begin``/``advance`` driven by a selector."""
    if mode == "blocking":
        return conn.request(method, path, serial, timeout_s, **kwargs)
    woke = threading.Event()
    conn.begin(method, path, serial, timeout_s, time.monotonic(), wake=woke.set, **kwargs)
    with selectors.DefaultSelector() as sel:
        while True:
            want = conn.want()
            remaining = max(0.0, conn.deadline - time.monotonic())
            if want:
                sel.register(conn.fileno(), want)
                ready = bool(sel.select(remaining))
                sel.unregister(conn.fileno())
            else:  # a host name lookup
                ready = woke.wait(remaining)
            now = time.monotonic()
            if ready:
                resp = conn.advance(now)
                if resp is not None:
                    return resp
            elif now >= conn.deadline:
                raise conn.expire()


def answer(raw: bytes, keep: bool = True) -> Script:
    def script(conn: socket.socket, _request: bytes) -> bool:
        conn.sendall(raw)
        return keep
    return script


def test_request_bytes_and_keep_alive(mode: str) -> None:
    with server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")) as (addr, seen, conns):
        conn = Connection(addr)
        for _ in range(3):
            resp = call(conn, mode, "GET", "/api/v1/data", "3c39e7aabbcc", 5)
            assert (resp.status, resp.json(), resp.url) == (200, {}, f"http://{addr}/api/v1/data")
        conn.close()
    assert len(conns) == 1  # one persistent connection
    first = seen[0].decode()
    assert first.startswith("GET /api/v1/data HTTP/1.1\r\n")
    assert f"\r\nHost: {addr}\r\n" in first and "\r\nUser-Agent: hw-picollector/" in first


def test_post_body_and_extra_headers(mode: str) -> None:
    with server(answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")) as (addr, seen, _):
        with Connection(addr) as conn:
            resp = call(conn, mode, "POST", "/api/user", "x", 5, headers={"X-Api-Version": "2"},
                                body=b'{"name":"local/x"}')
        assert resp.status == 403 and resp.body == b""
    text = seen[0].decode()
    assert "\r\nX-Api-Version: 2\r\n" in text and "\r\nContent-Length: 18\r\n" in text
    assert text.endswith('\r\n\r\n{"name":"local/x"}')
    with pytest.raises(ValueError, match="line breaks"):
        call(Connection("127.0.0.1:1"), mode, "GET", "/", "x", 1, headers={"A": "b\r\nC: d"})


@pytest.mark.parametrize(("raw", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;ext=1\r\n{\"a\r\n5\r\n\":12}\r\n0\r\nX-Trailer: y\r\n\r\n", b'{"a":12}'),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ntrue", b"true"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_framing(raw: bytes, body: bytes, mode: str) -> None:
    with server(answer(raw)) as (addr, _, conns), Connection(addr) as conn:
        assert call(conn, mode, "GET", "/", "x", 5).body == body
        assert call(conn, mode, "GET", "/", "x", 5).body == body
    assert len(conns) == 1


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\n\r\n{}",  # no framing: the body ends with the connection
])
def test_a_closing_answer_reconnects(raw: bytes, mode: str) -> None:
    with server(answer(raw, keep=False)) as (addr, _, conns), Connection(addr) as conn:
        assert call(conn, mode, "GET", "/", "x", 5).body == b"{}"
        assert not conn.connected
        assert call(conn, mode, "GET", "/", "x", 5).body == b"{}"
    assert len(conns) == 2


def test_an_idle_connection_closed_by_the_device_is_not_an_error(mode: str) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    # announces keep-alive, then hangs up anyway once idle
    with server(answer(ok, keep=False)) as (addr, _, conns), Connection(addr) as conn:
        call(conn, mode, "GET", "/", "x", 5)
        assert conn.connected
        pause = threading.Event()
        for _ in range(250):  # the server closes its end right after answering
            if conn._dropped():
                break
            pause.wait(0.02)
        assert call(conn, mode, "GET", "/", "x", 5).body == b"{}"
    assert len(conns) == 2


@pytest.mark.parametrize(("raw", "error", "text"), [
    (b"", Unreachable, "Remote end closed connection without response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", InvalidResponse, "middle of its answer"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", InvalidResponse, "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", InvalidResponse, "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), InvalidResponse,
     "larger than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", InvalidResponse,
     "bad chunk size"),
])
def test_broken_answers(raw: bytes, error: type[Exception], text: str,
                        mode: str) -> None:
    with server(answer(raw, keep=False)) as (addr, _, _), Connection(addr) as conn:
        with pytest.raises(error, match=text) as err:
            call(conn, mode, "GET", "/api/v1/data", "3c39e7aabbcc", 5)
        assert str(err.value).startswith(f"3c39e7aabbcc at http://{addr}/api/v1/data: ")
        assert not conn.connected


def test_timeout_and_refused(mode: str) -> None:
    release = threading.Event()

    def silent(_conn: socket.socket, _request: bytes) -> bool:
        release.wait(5)
        return False

    with server(silent) as (addr, _, _), Connection(addr) as conn:
        with pytest.raises(Unreachable, match=r"no answer within 0\.2 s") as err:
            call(conn, mode, "GET", "/", "x", 0.2)
        assert err.value.state == "timeout"
        release.set()
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with pytest.raises(Unreachable, match="cannot connect: Connection refused"):
        call(Connection(f"127.0.0.1:{port}"), mode, "GET", "/", "x", 1)


def test_base_url() -> None:
    assert base_url("192.168.1.59", "v1") == "http://192.168.1.59"
    assert base_url("192.168.1.59:80", "v1") == "http://192.168.1.59"
    assert base_url("192.168.1.59:443", "v2") == "https://192.168.1.59"
    assert base_url("[::1]:8080", "v1") == "http://[::1]:8080"


def test_a_host_name_is_looked_up(mode: str) -> None:
    with server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")) as (addr, seen, _):
        port = addr.rsplit(":", 1)[1]
        with Connection(f"localhost:{port}") as conn:
            assert call(conn, mode, "GET", "/", "x", 5).body == b"{}"
    assert f"\r\nHost: localhost:{port}\r\n" in seen[0].decode()
    with pytest.raises(Unreachable, match="cannot connect"):
        call(Connection("no-such-host.invalid:80"), mode, "GET", "/", "x", 5)
