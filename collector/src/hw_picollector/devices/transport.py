"""One keep-alive HTTP/1.1 connection to a device, over TCP (API v1) or pinned TLS (API v2).

The collector sends one small GET per device per second, so the cost of a request is the
cost of the collector. This is the subset of HTTP/1.1 a HomeWizard device speaks, on a plain
socket: one request at a time, bodies framed by ``Content-Length``, ``chunked`` or the end of
the connection, interim ``1xx`` answers skipped. ``http.client`` does the same with about
four times the Python work per request (its header parsing goes through the ``email``
package), which at 1 Hz per device was the largest share of the collector's CPU time.

Exactly one attempt per exchange; every failure closes the connection, and the next
exchange opens a new one. An exchange has one absolute deadline (the request timeout, from
its start to the last byte of the answer: bytes trickling in do not extend it) and one byte
budget for all it receives; the answer is parsed by ``ResponseParser`` as it arrives, work
linear in the bytes received, so a hostile device costs bounded time, memory and CPU.

An idle connection the device has closed is noticed before it is reused (as urllib3 does), so
that is not an error. ``request`` blocks; ``begin`` and ``advance`` run the same exchange
without blocking, for one thread that drives many devices with a selector (the collector).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw_picollector import __version__
from hw_picollector.catalog import Api, DeviceState
from hw_picollector.config import split_address
from hw_picollector.devices.errors import DeviceError, InvalidResponse, TlsError, Unreachable

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CHUNK_LINES",
    "MAX_EXCHANGE_BYTES",
    "MAX_INTERIM_ANSWERS",
    "READ",
    "WRITE",
    "Connection",
    "NestedTooDeeply",
    "ProtocolError",
    "Response",
    "ResponseParser",
    "base_url",
]

USER_AGENT = f"hw-picollector/{__version__}"
# Everything one exchange may receive: interim answers, headers, chunk metadata, body. A
# measurement is ~2 kB; more is a broken or hostile device, not data.
MAX_EXCHANGE_BYTES = 1 << 20
MAX_BODY_BYTES = MAX_EXCHANGE_BYTES
MAX_HEADER_BYTES = 1 << 16  # one header block, chunk line or trailer line
MAX_INTERIM_ANSWERS = 8  # 1xx answers before the final one
# Chunk size and trailer lines of one answer: a device's JSON comes in a few chunks at most;
# a flood of tiny ones would cost CPU per line long before it reached the byte budget.
MAX_CHUNK_LINES = 4096
_RECV = 65536
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_CONNECTING = frozenset({"resolve", "connect", "handshake"})


def base_url(address: str, api: str) -> str:
    """``host[:port]`` → ``http://host`` (v1) or ``https://host:port`` (v2), no default port."""
    scheme, default = ("https", 443) if api == Api.V2 else ("http", 80)
    host, port = split_address(address)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


class NestedTooDeeply(ValueError):
    """A JSON body nested deeper than the decoder's recursion limit."""


@dataclass(frozen=True)
class Response:
    """One complete answer: status, body (read in full) and the URL asked."""

    status: int
    body: bytes
    url: str

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not (``NestedTooDeeply`` included)."""
        try:
            return json.loads(self.body)
        except RecursionError:  # the decoder recurses once per level: a device can nest 100,000
            raise NestedTooDeeply("JSON nested too deeply") from None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Lookup:
    """A host name lookup on a short-lived daemon thread (``getaddrinfo`` can block)."""

    def __init__(self, host: str, port: int, wake: Callable[[], None] | None) -> None:
        self.info: tuple[Any, ...] = ()
        self.error: Exception | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
                # IPv4 first: devices are reached over IPv4 (IPv6 breaks some clients)
                self.info = min(infos, key=lambda info: info[0] != socket.AF_INET)
            except Exception as exc:
                self.error = exc
            self.done.set()
            if wake is not None:
                wake()

        threading.Thread(target=run, name=f"lookup-{host}", daemon=True).start()


class Connection:
    """A persistent connection to ``address`` (``host[:port]``); not thread-safe.

    With ``tls_hostname``, HTTPS verified against the HomeWizard CA (or ``ca_file``) for that
    certificate name, ``appliance/<id>/<serial>`` (API v2): the TCP connection goes to the
    address, SNI and the (CN) name check use ``tls_hostname``. Without it, plain HTTP.
    Raises ``OSError`` (``ssl.SSLError`` included) when ``ca_file`` cannot be loaded.
    """

    def __init__(self, address: str, tls_hostname: str | None = None,
                 ca_file: str | None = None) -> None:
        host, port = split_address(address)
        tls = tls_hostname is not None
        self.host, self.port = host, port or (443 if tls else 80)
        self.tls_hostname = tls_hostname
        self.base_url = base_url(address, Api.V2 if tls else Api.V1)
        self._context = None
        if tls:
            from hw_picollector.devices.tls import client_context  # ssl: API v2 only

            self._context = client_context(ca_file)
        netloc = f"[{host}]" if ":" in host else host
        self._host_header = netloc if port is None else f"{netloc}:{port}"
        self._sock: socket.socket | None = None
        self._poller: Any = None
        self._timeout: float | None = None
        self._requests: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}
        self.sockets = 0  # sockets opened so far: tells a new socket from a reused descriptor
        # the exchange driven by begin()/advance(), if any
        self._phase: str | None = None
        self._want = 0
        self._lookup: _Lookup | None = None
        self._out = b""
        self._sent = 0
        self._parser: ResponseParser | None = None
        self._serial = self._url = ""
        self._limit = 0.0
        self.deadline = 0.0

    def close(self) -> None:
        sock, self._sock, self._poller = self._sock, None, None
        self._phase, self._lookup, self._out, self._parser = None, None, b"", None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int:
        """The socket's descriptor, -1 when there is none (yet)."""
        return self._sock.fileno() if self._sock is not None else -1

    # --- the request --------------------------------------------------------------------------

    def request(self, method: str, path: str, serial: str, timeout_s: float, *,
                headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
        """One HTTP exchange; transport failures raise ``Unreachable``/``TlsError``, a broken
        answer ``InvalidResponse``, each naming ``serial`` and the URL."""
        url = self.base_url + path
        data = self._request_bytes(method, path, headers, body)
        if self._phase is not None:
            raise RuntimeError("an exchange started with begin() is in progress")
        deadline = time.monotonic() + timeout_s
        sock = self._sock
        if sock is not None and self._dropped():
            self.close()  # the device hung up on the idle connection: open a fresh one
            sock = None
        if sock is None:
            sock = self._connect(timeout_s, serial, url, deadline)
        parser = ResponseParser(method)
        try:
            self._settimeout(sock, deadline)
            sock.sendall(data)
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            while True:
                self._settimeout(sock, deadline)
                chunk = sock.recv(_RECV)
                if not chunk:
                    parser.feed_eof()
                    break
                if parser.feed(chunk):
                    break
        except Exception as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                raise _timeout(serial, url, timeout_s, parser.received) from exc
            raise _device_error(exc, serial, url, timeout_s, "connection lost") from exc
        except BaseException:
            self.close()
            raise
        if not parser.keep_alive or parser.rest:
            self.close()  # the device ends the connection, or sent more than it announced
        return Response(parser.status, parser.body, url)

    def _settimeout(self, sock: socket.socket, deadline: float) -> None:
        """Block at most until the exchange's deadline (``TimeoutError`` once it passed)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        sock.settimeout(remaining)
        self._timeout = remaining

    # --- non-blocking use: one thread drives many connections with a selector ----------------

    def begin(self, method: str, path: str, serial: str, timeout_s: float, now: float, *,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              wake: Callable[[], None] | None = None, watched: bool = False) -> None:
        """Start one exchange without blocking (same rules as ``request``).

        Then call ``advance`` whenever ``fileno()`` is ready for ``want()`` (while
        ``want()`` is 0, a host name is being looked up: ``wake`` is called when it is done),
        and ``expire`` once ``now`` passes ``deadline``: ``now + timeout_s``, fixed for the
        whole exchange (look-up, connect, TLS handshake, request and answer).
        ``watched``: the caller watches the idle connection for readability itself (see
        ``idle_ready``), so it is not polled here for being closed.
        """
        if self._phase is not None:
            raise RuntimeError("an exchange is already in progress")
        data = self._request_bytes(method, path, headers, body)
        if self._sock is not None and not watched and self._dropped():
            self.close()  # the device hung up on the idle connection: open a fresh one
        self._out, self._sent, self._parser = data, 0, ResponseParser(method)
        self._serial, self._url = serial, self.base_url + path
        self._limit = timeout_s
        self.deadline = now + timeout_s
        try:
            if self._sock is not None:
                if self._timeout is not None:
                    self._sock.setblocking(False)
                    self._timeout = None
                self._phase = "send"
                self._want = WRITE
                self._step(now)  # a request fits the send buffer: usually sent right here
                return
            self._phase = "resolve"
            try:
                info = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM, 0,
                                          socket.AI_NUMERICHOST)[0]
            except socket.gaierror:  # a host name: looked up off this thread
                self._lookup = _Lookup(self.host, self.port, wake)
                self._want = 0
                return
            self._open(info)
        except Exception as exc:
            self._fail(exc)

    def idle_ready(self) -> None:
        """The idle connection turned readable: the device closed it (or sent stray bytes).
        Closed, so the next exchange opens a fresh one."""
        if self._phase is None:
            self.close()

    def want(self) -> int:
        """``READ`` or ``WRITE`` (selector events) the exchange waits for; 0: none (a lookup)."""
        return self._want if self._phase is not None else 0

    @property
    def busy(self) -> bool:
        return self._phase is not None

    def advance(self, now: float) -> Response | None:
        """Make what progress the socket allows; the Response once complete, else None."""
        if self._phase is None:
            return None
        try:
            return self._step(now)
        except Exception as exc:
            self._fail(exc)
        return None  # not reached: _fail raises

    def expire(self) -> Unreachable:
        """The exchange ran out of time: closes the connection, returns the timeout error."""
        received = self._parser.received if self._parser is not None else 0
        self.close()
        return _timeout(self._serial, self._url, self._limit, received)

    def _fail(self, exc: Exception) -> None:
        what = "cannot connect" if self._phase in _CONNECTING else "connection lost"
        self.close()
        raise _device_error(exc, self._serial, self._url, self._limit, what) from exc

    def _open(self, info: tuple[Any, ...]) -> None:
        family, kind, proto, _, sockaddr = info
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                raise OSError(err, os.strerror(err))
        except BaseException:
            sock.close()
            raise
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        self._sock, self._poller, self._timeout = sock, poller, None
        self.sockets += 1
        self._phase, self._want = "connect", WRITE

    def _step(self, now: float) -> Response | None:
        if self._phase == "resolve":
            lookup = self._lookup
            if lookup is None or not lookup.done.is_set():
                return None
            self._lookup = None
            if lookup.error is not None:
                raise lookup.error
            self._open(lookup.info)
            return None
        sock = self._sock
        assert sock is not None
        if self._phase == "connect":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            if self._context is not None:
                self._sock = sock = self._context.wrap_socket(
                    sock, server_hostname=self.tls_hostname, do_handshake_on_connect=False)
                self._phase = "handshake"
            else:
                self._phase = "send"
        ssl = sys.modules.get("ssl")
        if self._phase == "handshake":
            assert ssl is not None
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                self._want = READ
                return None
            except ssl.SSLWantWriteError:
                self._want = WRITE
                return None
            self._phase = "send"
        if self._phase == "send":
            try:
                sent = sock.send(memoryview(self._out)[self._sent:])
            except BlockingIOError:
                self._want = WRITE
                return None
            except Exception as exc:
                if ssl is None or not isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                    raise
                self._want = READ if isinstance(exc, ssl.SSLWantReadError) else WRITE
                return None
            self._sent += sent
            if self._sent < len(self._out):
                self._want = WRITE
                return None
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            self._phase, self._want = "recv", READ
            return None  # the answer comes with a later readiness
        parser = self._parser
        assert parser is not None
        done = False
        try:
            chunk = sock.recv(_RECV)
            if not chunk:
                parser.feed_eof()
                done = True
            else:
                done = parser.feed(chunk)
                # TLS: a record already decrypted raises no readiness: take it now
                while not done and ssl is not None and isinstance(sock, ssl.SSLSocket) \
                        and sock.pending():
                    done = parser.feed(sock.recv(sock.pending()))
        except BlockingIOError:
            return None
        except Exception as exc:
            if ssl is not None and isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                return None
            raise
        if not done:
            return None
        url = self._url
        self._phase, self._out, self._parser = None, b"", None
        if not parser.keep_alive or parser.rest:
            self.close()  # the device ends the connection, or sent more than it announced
        return Response(parser.status, parser.body, url)

    def _request_bytes(self, method: str, path: str, headers: dict[str, str] | None,
                       body: bytes | None) -> bytes:
        """The request on the wire; a body-less one is built once and reused (every poll)."""
        key = (method, path, tuple(headers.items()) if headers else ()) if body is None else None
        if key is not None and (cached := self._requests.get(key)) is not None:
            return cached
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}",
                 f"User-Agent: {USER_AGENT}", "Accept: */*"]
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r}: line breaks are not allowed")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        if key is not None:
            if len(self._requests) >= 8:
                self._requests.clear()
            self._requests[key] = data
        return data

    def _connect(self, timeout_s: float, serial: str, url: str, deadline: float) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=max(0.001, deadline - time.monotonic()))
        except Exception as exc:
            raise _device_error(exc, serial, url, timeout_s, "cannot connect") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                self._settimeout(sock, deadline)
                sock = self._context.wrap_socket(sock, server_hostname=self.tls_hostname)
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, Exception):
                raise
            raise _device_error(exc, serial, url, timeout_s, "cannot connect") from exc
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        self._sock, self._poller, self._timeout = sock, poller, timeout_s
        self.sockets += 1
        return sock

    def _dropped(self) -> bool:
        """An idle connection is readable only if the device closed it (or sent stray bytes)."""
        try:
            return bool(self._poller.poll(0))
        except (OSError, ValueError):
            return True


class ProtocolError(Exception):
    """The device broke the protocol (or a limit); becomes ``InvalidResponse`` (``Unreachable``
    when it closed the connection without sending anything)."""

    def __init__(self, detail: str, *, nothing_received: bool = False) -> None:
        super().__init__(detail)
        self.nothing_received = nothing_received


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_EOF, _DONE = range(7)
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ResponseParser:
    """The answer to one request, parsed as its bytes arrive: the HTTP/1.1 codec that every way
    of driving a connection shares (the blocking ``request``, the selector's ``advance``).

    ``feed`` the bytes as they come (any split), ``feed_eof`` when the device closed the
    connection; once ``done``: ``status``, ``keep_alive``, ``body`` and ``rest`` (bytes after
    the answer). Interim ``1xx`` answers are skipped, at most ``MAX_INTERIM_ANSWERS``; the
    body is framed by ``Content-Length``, ``chunked`` or the end of the connection.

    Bounded: everything received (interim answers, headers, chunk sizes and extensions,
    trailers, the body) counts against one byte budget, ``MAX_EXCHANGE_BYTES``; a header
    block or chunk line longer than ``MAX_HEADER_BYTES`` is refused before it is complete;
    at most ``MAX_CHUNK_LINES`` chunk size and trailer lines.
    Linear: every byte is looked at a bounded number of times whatever the split (the search
    for the end of a header block or line resumes where the last one stopped; consumed bytes
    are dropped). Violations raise ``ProtocolError``.
    """

    __slots__ = ("_body", "_budget", "_buf", "_chunk", "_interim", "_lines", "_method", "_pos",
                 "_scan", "_state", "body", "keep_alive", "received", "rest", "status")

    def __init__(self, method: str = "GET", budget: int = MAX_EXCHANGE_BYTES) -> None:
        self._method, self._budget = method, budget
        self._buf = bytearray()
        self._pos = 0  # start of what is not parsed yet
        self._scan = 0  # where the search for the end of the current line or block resumes
        self._state = _HEAD
        self._interim = 0
        self._lines = 0  # chunk size and trailer lines so far
        self._chunk = 0  # Content-Length left, or the size of the current chunk
        self._body: list[bytes] = []
        self.received = 0
        self.status, self.keep_alive, self.body, self.rest = 0, False, b"", b""

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        """Take received bytes; True once the final answer is complete."""
        if self._state == _DONE:
            self.rest += data
            return True
        self.received += len(data)
        if self.received > self._budget:
            raise ProtocolError(f"answer larger than {self._budget} bytes")
        buf: bytes | bytearray
        if self._buf:  # an unfinished element waits: add to it
            buf = self._buf
            buf += data
        else:  # the usual case: parsed straight from what was received, no copy
            buf = data
        while self._state != _DONE and self._step(buf):
            pass
        pos = self._pos
        if self._state == _DONE:
            self.rest = bytes(buf[pos:])
            self._buf = bytearray()
            return True
        if buf is data:
            self._buf = bytearray(data[pos:])
        elif pos:
            del self._buf[:pos]  # what is parsed goes: the buffer holds one unfinished element
        self._scan -= pos
        self._pos = 0
        return False

    def feed_eof(self) -> None:
        """The device closed the connection: the end of an unframed body, else an error."""
        if self._state == _UNTIL_EOF:
            self.body = bytes(self._buf[self._pos:])
            self.keep_alive = False
            self._state, self._buf = _DONE, bytearray()
        elif self._state != _DONE:
            if not self.received:
                raise ProtocolError("Remote end closed connection without response",
                                    nothing_received=True)
            raise ProtocolError("the device closed the connection in the middle of its answer")

    def _line_end(self, buf: bytes | bytearray, marker: bytes, limit: int, what: str) -> int:
        """Where ``marker`` starts after the parse position; -1 while not received yet."""
        end = buf.find(marker, max(self._pos, self._scan))
        if end < 0:
            if len(buf) - self._pos > limit:
                raise ProtocolError(what)
            self._scan = max(self._pos, len(buf) - len(marker) + 1)
        return end

    def _step(self, buf: bytes | bytearray) -> bool:
        """Parse one element (a header block, a chunk, ...); False when more bytes are needed."""
        state, pos = self._state, self._pos
        if state == _HEAD:
            end = self._line_end(buf, b"\r\n\r\n", MAX_HEADER_BYTES,
                                 f"header block larger than {MAX_HEADER_BYTES} bytes")
            if end < 0:
                return False
            self._pos = self._scan = end + 4
            self._head(buf[pos:end].decode("latin-1"), len(buf) - self._pos)
            return True
        if state == _LENGTH:
            if len(buf) - pos < self._chunk:
                return False
            self.body = bytes(buf[pos:pos + self._chunk])
            self._pos += self._chunk
            self._state = _DONE
            return True
        if state in (_CHUNK_SIZE, _TRAILER):
            end = self._line_end(buf, b"\r\n", MAX_HEADER_BYTES,
                                 "chunk size line too long" if state == _CHUNK_SIZE
                                 else "trailer too long")
            if end < 0:
                return False
            line = bytes(buf[pos:end])
            self._pos = self._scan = end + 2
            self._lines += 1
            if self._lines > MAX_CHUNK_LINES:
                raise ProtocolError(f"more than {MAX_CHUNK_LINES} chunk or trailer lines")
            if state == _TRAILER:
                if not line:  # the blank line after the trailer fields
                    self.body = b"".join(self._body)
                    self._body, self._state = [], _DONE
                return True
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 16 or not _HEX.issuperset(size):
                raise ProtocolError(f"bad chunk size {line[:20]!r}")
            self._chunk = int(size, 16)
            if self._chunk == 0:
                self._state = _TRAILER
            elif self._chunk > self._budget:
                raise ProtocolError(f"answer larger than {self._budget} bytes")
            else:
                self._state = _CHUNK_DATA
            return True
        if state == _CHUNK_DATA:
            if len(buf) - pos < self._chunk + 2:
                return False
            end = pos + self._chunk
            if buf[end:end + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._body.append(bytes(buf[pos:end]))
            self._pos = self._scan = end + 2
            self._state = _CHUNK_SIZE
            return True
        return False  # _UNTIL_EOF: the body ends with the connection (feed_eof)

    def _head(self, head: str, unparsed: int) -> None:
        """A complete header block: an interim answer, or the final one and its framing."""
        status_line, *header_lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
        status = int(code)
        if 100 <= status < 200:  # an interim answer (100 Continue): the final one follows
            self._interim += 1
            if self._interim > MAX_INTERIM_ANSWERS:
                raise ProtocolError(f"more than {MAX_INTERIM_ANSWERS} interim (1xx) answers")
            return
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        connection = headers.get("connection", "").lower()
        self.status = status
        self.keep_alive = "close" not in connection if version != "HTTP/1.0" else \
            "keep-alive" in connection
        if self._method == "HEAD" or status in (204, 304):
            self._state = _DONE
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit() or len(raw) > 16:
                raise ProtocolError(f"bad Content-Length {raw[:20]!r}")
            self._chunk = int(raw)
            if self._chunk > self._budget - self.received + unparsed:
                raise ProtocolError(f"answer larger than {self._budget} bytes")
            self._state = _LENGTH
        else:
            self._state = _UNTIL_EOF


def _device_error(exc: Exception, serial: str, url: str, timeout_s: float,
                  what: str) -> DeviceError:
    """A socket, TLS or protocol failure → the DeviceError naming device and URL."""
    if isinstance(exc, DeviceError):
        return exc
    ssl = sys.modules.get("ssl")  # loaded with the first TLS connection; none, no TLS error
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return TlsError(serial, url, "TLS failed: certificate verify failed: "
                                     f"{exc.verify_message or exc.reason}")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return TlsError(serial, url, f"TLS failed: {exc.strerror or exc}")
    if isinstance(exc, TimeoutError):
        return Unreachable(serial, url, f"no answer within {timeout_s:g} s", DeviceState.TIMEOUT)
    if isinstance(exc, ProtocolError):
        if exc.nothing_received:
            return Unreachable(serial, url, f"{what}: {exc}")
        return InvalidResponse(serial, url, f"broken response: {exc}")
    if isinstance(exc, OSError):
        return Unreachable(serial, url, f"{what}: {exc.strerror or exc or type(exc).__name__}")
    return InvalidResponse(serial, url, f"broken response: {type(exc).__name__}: {exc}")


def _timeout(serial: str, url: str, timeout_s: float, received: int) -> Unreachable:
    """The exchange's deadline passed: with nothing received, or in the middle of the answer."""
    if not received:
        return Unreachable(serial, url, f"no answer within {timeout_s:g} s", DeviceState.TIMEOUT)
    return Unreachable(serial, url, f"answer not complete within {timeout_s:g} s "
                       f"({received} bytes received)", DeviceState.TIMEOUT)
