"""One keep-alive HTTP/1.1 connection to a device, over TCP (API v1) or pinned TLS (API v2).

The collector sends one small GET per device per second, so the cost of a request is the
cost of the collector. This is the subset of HTTP/1.1 a HomeWizard device speaks, on a plain
socket: one request at a time, bodies framed by ``Content-Length``, ``chunked`` or the end of
the connection, interim ``1xx`` answers skipped. ``http.client`` does the same with about
four times the Python work per request (its header parsing goes through the ``email``
package), which at 1 Hz per device was the largest share of the collector's CPU time.

Exactly one attempt per ``request``; every failure closes the connection, and the next
request opens a new one. An idle connection the device has closed is noticed before it is
reused (as urllib3 does), so that is not an error.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
from dataclasses import dataclass
from typing import Any

from hw_picollector import __version__
from hw_picollector.config import split_address
from hw_picollector.devices.errors import DeviceError, InvalidResponse, TlsError, Unreachable

__all__ = ["MAX_BODY_BYTES", "Connection", "Response", "base_url"]

USER_AGENT = f"hw-picollector/{__version__}"
MAX_BODY_BYTES = 1 << 20  # a measurement is ~2 kB; more is a broken device, not data
MAX_HEADER_BYTES = 1 << 16
_RECV = 65536


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

    def close(self) -> None:
        sock, self._sock, self._poller, self._buf = self._sock, None, None, b""
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

    # --- the request --------------------------------------------------------------------------

    def request(self, method: str, path: str, serial: str, timeout_s: float, *,
                headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
        """One HTTP exchange; transport failures raise ``Unreachable``/``TlsError``, a broken
        answer ``InvalidResponse``, each naming ``serial`` and the URL."""
        url = self.base_url + path
        data = self._request_bytes(method, path, headers, body)
        sock = self._sock
        if sock is not None and self._dropped():
            self.close()  # the device hung up on the idle connection: open a fresh one
            sock = None
        if sock is None:
            sock = self._connect(timeout_s, serial, url)
        elif timeout_s != self._timeout:
            sock.settimeout(timeout_s)
            self._timeout = timeout_s
        try:
            sock.sendall(data)
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
        return sock

    def _dropped(self) -> bool:
        """An idle connection is readable only if the device closed it (or sent stray bytes)."""
        try:
            return bool(self._poller.poll(0))
        except (OSError, ValueError):
            return True

    # --- the answer ---------------------------------------------------------------------------

    def _recv(self, sock: socket.socket, got_any: bool) -> bytes:
        chunk = sock.recv(_RECV)
        if not chunk:
            if got_any:
                raise _Broken("the device closed the connection in the middle of its answer")
            raise _Broken("Remote end closed connection without response",
                          nothing_received=True)
        return chunk

    def _read_response(self, sock: socket.socket, method: str) -> tuple[int, bool, bytes]:
        """(status, keep the connection, body) of the next final (non-1xx) answer."""
        buf = self._buf
        got_any = bool(buf)
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise _Broken(f"header block larger than {MAX_HEADER_BYTES} bytes")
                buf += self._recv(sock, got_any)
                got_any = True
                end = buf.find(b"\r\n\r\n")
            head, buf = buf[:end].decode("latin-1"), buf[end + 4:]
            status_line, *header_lines = head.split("\r\n")
            version, _, rest = status_line.partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise _Broken(f"not an HTTP/1.x status line: {status_line[:40]!r}")
            status = int(code)
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the final one follows
            headers: dict[str, str] = {}
            for line in header_lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers.setdefault(name.strip().lower(), value.strip())
            break
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version != "HTTP/1.0" else \
            "keep-alive" in connection
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, buf = self._read_chunked(sock, buf)
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit():
                raise _Broken(f"bad Content-Length {raw[:20]!r}")
            length = int(raw)
            if length > MAX_BODY_BYTES:
                raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
            while len(buf) < length:
                buf += self._recv(sock, True)
            body, buf = buf[:length], buf[length:]
        else:  # no framing: the body ends with the connection
            keep_alive = False
            parts = [buf]
            size = len(buf)
            while chunk := sock.recv(_RECV):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
                parts.append(chunk)
            body, buf = b"".join(parts), b""
        self._buf = buf
        return status, keep_alive, body

    def _read_chunked(self, sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        parts: list[bytes] = []
        size = 0
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise _Broken("chunk size line too long")
                buf += self._recv(sock, True)
            line, buf = buf[:eol], buf[eol + 2:]
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Broken(f"bad chunk size {line[:20]!r}") from None
            if length < 0:
                raise _Broken(f"bad chunk size {line[:20]!r}")
            if length == 0:
                break
            size += length
            if size > MAX_BODY_BYTES:
                raise _Broken(f"answer larger than {MAX_BODY_BYTES} bytes")
            while len(buf) < length + 2:
                buf += self._recv(sock, True)
            if buf[length:length + 2] != b"\r\n":
                raise _Broken("chunk not followed by CRLF")
            parts.append(buf[:length])
            buf = buf[length + 2:]
        while True:  # trailer fields, up to the blank line
            while (eol := buf.find(b"\r\n")) < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise _Broken("trailer too long")
                buf += self._recv(sock, True)
            line, buf = buf[:eol], buf[eol + 2:]
            if not line:
                return b"".join(parts), buf


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
