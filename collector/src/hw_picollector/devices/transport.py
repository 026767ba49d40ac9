"""One keep-alive HTTP/1.1 connection to a device, over TCP (API v1) or pinned TLS (API v2).

The collector sends one small GET per device per second, so the cost of a request is the
cost of the collector. This is the subset of HTTP/1.1 a HomeWizard device speaks, on a plain
socket: one request at a time, bodies framed by ``Content-Length``, ``chunked`` or the end of
the connection, interim ``1xx`` answers skipped. ``http.client`` does the same with about
four times the Python work per request (its header parsing goes through the ``email``
package), which at 1 Hz per device was the largest share of the collector's CPU time.

Exactly one attempt per exchange; every failure closes the connection, and the next
exchange opens a new one. An idle connection the device has closed is noticed before it is
reused (as urllib3 does), so that is not an error. ``request`` blocks; ``begin`` and
``advance`` run the same exchange without blocking, for one thread that drives many devices
with a selector (the collector).
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw_picollector import __version__
from hw_picollector.config import split_address
from hw_picollector.devices.errors import DeviceError, InvalidResponse, TlsError, Unreachable

__all__ = ["MAX_BODY_BYTES", "READ", "WRITE", "Connection", "Response", "base_url"]

USER_AGENT = f"hw-picollector/{__version__}"
MAX_BODY_BYTES = 1 << 20  # a measurement is ~2 kB; more is a broken device, not data
MAX_HEADER_BYTES = 1 << 16
_RECV = 65536
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_CONNECTING = frozenset({"resolve", "connect", "handshake"})


def base_url(address: str, api: str) -> str:
    """``host[:port]`` → ``http://host`` (v1) or ``https://host:port`` (v2), no default port."""
    scheme, default = ("https", 443) if api == "v2" else ("http", 80)
    host, port = split_address(address)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


@dataclass(frozen=True)
class Response:
    """One complete answer: status, body (read in full) and the URL asked."""

    status: int
    body: bytes
    url: str

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Broken(Exception):
    """The device broke the protocol; becomes ``InvalidResponse`` (or ``Unreachable``)."""

    def __init__(self, detail: str, *, nothing_received: bool = False) -> None:
        super().__init__(detail)
        self.nothing_received = nothing_received


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
        self.base_url = base_url(address, "v2" if tls else "v1")
        self._context = None
        if tls:
            from hw_picollector.devices.tls import client_context  # ssl: API v2 only

            self._context = client_context(ca_file)
        netloc = f"[{host}]" if ":" in host else host
        self._host_header = netloc if port is None else f"{netloc}:{port}"
        self._sock: socket.socket | None = None
        self._poller: Any = None
        self._timeout: float | None = None
        self._buf = b""
        self._requests: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}
        self.sockets = 0  # sockets opened so far: tells a new socket from a reused descriptor
        # the exchange driven by begin()/advance(), if any
        self._phase: str | None = None
        self._want = 0
        self._lookup: _Lookup | None = None
        self._out = b""
        self._sent = 0
        self._in = b""
        self._method = self._serial = self._url = ""
        self._limit = 0.0
        self.deadline = 0.0

    def close(self) -> None:
        sock, self._sock, self._poller, self._buf = self._sock, None, None, b""
        self._phase, self._lookup, self._out, self._in = None, None, b"", b""
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
        sock = self._sock
        if sock is not None and self._dropped():
            self.close()  # the device hung up on the idle connection: open a fresh one
            sock = None
        if sock is None:
            sock = self._connect(timeout_s, serial, url)
        elif timeout_s != self._timeout:  # also from non-blocking use (None) back to blocking
            sock.settimeout(timeout_s)
            self._timeout = timeout_s
        try:
            sock.sendall(data)
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            status, keep_alive, payload = self._read_response(sock, method)
        except Exception as exc:
            self.close()
            raise _device_error(exc, serial, url, timeout_s, "connection lost") from exc
        except BaseException:
            self.close()
            raise
        if not keep_alive or self._buf:
            self.close()  # the device ends the connection, or sent more than it announced
        return Response(status, payload, url)

    # --- non-blocking use: one thread drives many connections with a selector ----------------

    def begin(self, method: str, path: str, serial: str, timeout_s: float, now: float, *,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              wake: Callable[[], None] | None = None, watched: bool = False) -> None:
        """Start one exchange without blocking (same rules as ``request``).

        Then call ``advance`` whenever ``fileno()`` is ready for ``want()`` (while
        ``want()`` is 0, a host name is being looked up: ``wake`` is called when it is done),
        and ``expire`` once ``now`` passes ``deadline`` (which moves on with every step).
        ``watched``: the caller watches the idle connection for readability itself (see
        ``idle_ready``), so it is not polled here for being closed.
        """
        if self._phase is not None:
            raise RuntimeError("an exchange is already in progress")
        data = self._request_bytes(method, path, headers, body)
        if self._sock is not None and not watched and self._dropped():
            self.close()  # the device hung up on the idle connection: open a fresh one
        self._out, self._sent, self._in = data, 0, b""
        self._method, self._serial, self._url = method, serial, self.base_url + path
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
        self.close()
        return Unreachable(self._serial, self._url, f"no answer within {self._limit:g} s",
                           "timeout")

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
        self._sock, self._poller, self._timeout, self._buf = sock, poller, None, b""
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
            self.deadline = now + self._limit
            return None
        sock = self._sock
        assert sock is not None
        if self._phase == "connect":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            self.deadline = now + self._limit
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
            self.deadline = now + self._limit
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
            self.deadline = now + self._limit
            if self._sent < len(self._out):
                self._want = WRITE
                return None
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            self._phase, self._want = "recv", READ
            return None  # the answer comes with a later readiness
        try:
            chunk = sock.recv(_RECV)
            while chunk and ssl is not None and isinstance(sock, ssl.SSLSocket) \
                    and sock.pending():
                chunk += sock.recv(sock.pending())
        except BlockingIOError:
            return None
        except Exception as exc:
            if ssl is not None and isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                return None
            raise
        self._in += chunk
        self.deadline = now + self._limit
        parsed = _parse(self._buf + self._in, self._method, not chunk)
        if parsed is None:
            return None
        status, keep_alive, body, rest = parsed
        url = self._url
        self._phase, self._out, self._in, self._buf = None, b"", b"", rest
        if not keep_alive or rest:
            self.close()
        return Response(status, body, url)

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

    def _connect(self, timeout_s: float, serial: str, url: str) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except Exception as exc:
            raise _device_error(exc, serial, url, timeout_s, "cannot connect") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.tls_hostname)
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, Exception):
                raise
            raise _device_error(exc, serial, url, timeout_s, "cannot connect") from exc
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        self._sock, self._poller, self._timeout, self._buf = sock, poller, timeout_s, b""
        self.sockets += 1
        return sock

    def _dropped(self) -> bool:
        """An idle connection is readable only if the device closed it (or sent stray bytes)."""
        try:
            return bool(self._poller.poll(0))
        except (OSError, ValueError):
            return True

    # --- the answer ---------------------------------------------------------------------------

    def _read_response(self, sock: socket.socket, method: str) -> tuple[int, bool, bytes]:
        """(status, keep the connection, body) of the next final answer, blocking."""
        buf, eof = self._buf, False
        while (parsed := _parse(buf, method, eof)) is None:
            chunk = sock.recv(_RECV)
            eof = not chunk
            buf += chunk
        status, keep_alive, body, self._buf = parsed
        return status, keep_alive, body


def _parse(buf: bytes, method: str, eof: bool) -> tuple[int, bool, bytes, bytes] | None:
    """(status, keep the connection, body, bytes left over) of the first final (non-1xx)
    answer in ``buf``; None while it is incomplete. ``eof``: the device closed the connection
    after ``buf`` (the end of a body without framing; any other incomplete answer is broken).
    """
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buf) - start > MAX_HEADER_BYTES:
                raise _Broken(f"header block larger than {MAX_HEADER_BYTES} bytes")
            _incomplete(buf, eof)
            return None
        head = buf[start:end].decode("latin-1")
        start = end + 4
        status_line, *header_lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _Broken(f"not an HTTP/1.x status line: {status_line[:40]!r}")
        status = int(code)
        if not 100 <= status < 200:
            break  # else an interim answer (100 Continue): the final one follows
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version != "HTTP/1.0" else \
        "keep-alive" in connection
    if method == "HEAD" or status in (204, 304):
        return status, keep_alive, b"", buf[start:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunked = _parse_chunked(buf, start)
        if chunked is None:
            _incomplete(buf, eof)
            return None
        body, start = chunked
        return status, keep_alive, body, buf[start:]
    if "content-length" in headers:
        raw = headers["content-length"]
        if not raw.isdigit():
            raise _Broken(f"bad Content-Length {raw[:20]!r}")
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
        if len(buf) - start < length:
            _incomplete(buf, eof)
            return None
        return status, keep_alive, buf[start:start + length], buf[start + length:]
    if len(buf) - start > MAX_BODY_BYTES:  # no framing: the body ends with the connection
        raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
    return (status, False, buf[start:], b"") if eof else None


def _incomplete(buf: bytes, eof: bool) -> None:
    """An incomplete answer is only an error once the device has closed the connection."""
    if not eof:
        return
    if not buf:
        raise _Broken("Remote end closed connection without response", nothing_received=True)
    raise _Broken("the device closed the connection in the middle of its answer")


def _parse_chunked(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a complete chunked body from ``start``; None if incomplete."""
    parts: list[bytes] = []
    size = 0
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > MAX_HEADER_BYTES:
                raise _Broken("chunk size line too long")
            return None
        line = buf[pos:eol]
        try:
            length = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Broken(f"bad chunk size {line[:20]!r}") from None
        if length < 0:
            raise _Broken(f"bad chunk size {line[:20]!r}")
        pos = eol + 2
        if length == 0:
            break
        size += length
        if size > MAX_BODY_BYTES:
            raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
        if len(buf) < pos + length + 2:
            return None
        if buf[pos + length:pos + length + 2] != b"\r\n":
            raise _Broken("chunk not followed by CRLF")
        parts.append(buf[pos:pos + length])
        pos += length + 2
    while True:  # trailer fields, up to the blank line
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > MAX_HEADER_BYTES:
                raise _Broken("trailer too long")
            return None
        line, pos = buf[pos:eol], eol + 2
        if not line:
            return b"".join(parts), pos


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
        return Unreachable(serial, url, f"no answer within {timeout_s:g} s", "timeout")
    if isinstance(exc, _Broken):
        if exc.nothing_received:
            return Unreachable(serial, url, f"{what}: {exc}")
        return InvalidResponse(serial, url, f"broken response: {exc}")
    if isinstance(exc, OSError):
        return Unreachable(serial, url, f"{what}: {exc.strerror or exc or type(exc).__name__}")
    return InvalidResponse(serial, url, f"broken response: {type(exc).__name__}: {exc}")
