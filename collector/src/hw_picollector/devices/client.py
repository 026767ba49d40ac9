"""HTTP(S) client for one HomeWizard device: API v1 (HTTP, no auth) or v2 (HTTPS, Bearer token).

One persistent connection per device (the devices dislike concurrent clients; see
``transport``), exactly one HTTP attempt per call: the caller owns the retry schedule (see
``backoff_s``). Before the first
measurement, after any error or re-targeting, whenever a measurement came over a connection
other than the one last checked, and at least every ``IDENTITY_RECHECK_S``, the client asks
``GET /api`` and refuses to return a sample when the serial is not the configured one.

Why the connection matters: a device that leaves the network closes its keep-alive
connection, and the transport quietly opens a new one for the next request. If another device
has taken the address meanwhile (a DHCP shuffle), that new connection reaches *it*; a sample
is only returned once ``GET /api`` on that same connection named the configured serial.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hw_picollector.catalog import Api
from hw_picollector.config import DeviceConfig
from hw_picollector.devices.canonical import Sample, to_sample
from hw_picollector.devices.errors import (
    ApiDisabled,
    DeviceError,
    InvalidResponse,
    SerialMismatch,
    TlsError,
    Unauthorized,
    Unreachable,
    printable,
)
from hw_picollector.devices.transport import Connection, NestedTooDeeply, Response, base_url

__all__ = [  # the errors too: callers catch them from here
    "IDENTITY_RECHECK_S",
    "ApiDisabled",
    "Connection",
    "DeviceClient",
    "DeviceError",
    "DeviceInfo",
    "InvalidResponse",
    "Response",
    "SerialMismatch",
    "TlsError",
    "Unauthorized",
    "Unreachable",
    "backoff_s",
    "base_url",
    "error_code",
    "parse_info",
]

log = logging.getLogger(__name__)

IDENTITY_RECHECK_S = 300.0
BACKOFF_CAP_S = 30.0
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces (fullmatch)
PAIR_HINT = "pair again with `hwpc pair` and update the token file"
T = TypeVar("T")
Request = tuple[str, dict[str, str]]
"""A GET to make: (path, headers)."""


@dataclass(frozen=True)
class DeviceInfo:
    """``GET /api``: what the device says it is."""

    product_type: str
    serial: str
    firmware_version: str
    api_version: str


def parse_info(payload: Any) -> DeviceInfo | None:
    """A ``GET /api`` body → DeviceInfo; None unless serial and product_type are strings."""
    if not isinstance(payload, dict):
        return None
    serial, ptype = payload.get("serial"), payload.get("product_type")
    if not isinstance(serial, str) or not isinstance(ptype, str):
        return None
    text = {k: v if isinstance(v := payload.get(k), str) else "" for k in
            ("firmware_version", "api_version")}
    # what the device says goes into messages and the journal: short, printable
    return DeviceInfo(printable(ptype, 64), printable(serial.lower(), 64),
                      printable(text["firmware_version"], 64), printable(text["api_version"], 64))


def backoff_s(consecutive_failures: int) -> float:
    """Delay before the next attempt: 0 after a success, then 1, 2, 4, ... capped at 30 s."""
    if consecutive_failures <= 0:
        return 0.0
    return min(BACKOFF_CAP_S, 2.0 ** min(consecutive_failures - 1, 16))


def error_code(resp: Response) -> str | None:
    """The device's error: v2 ``"user:unauthorized"``, v1 ``"202 API not enabled"``, or None."""
    try:
        body = resp.json()
    except ValueError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, str):
        return err
    if isinstance(err, dict):  # only text and numbers: a device can send anything there
        ident, text = err.get("id"), err.get("description")
        parts = [str(v) for v in (ident, text)
                 if isinstance(v, str | int) and not isinstance(v, bool)]
        return " ".join(parts).strip() or None
    return None


def _decode(resp: Response, serial: str, api: str) -> Any:
    url, status = resp.url, resp.status
    if status == 401:
        raise Unauthorized(serial, url, f"token missing or invalid (HTTP 401); {PAIR_HINT}")
    if status == 403 and api == Api.V1:  # the documented body is {"error":{"id":202,...}}
        raise ApiDisabled(serial, url)
    if not 200 <= status < 300:
        code = error_code(resp)
        raise InvalidResponse(serial, url, f"HTTP {status}" + (f" ({code})" if code else ""),
                              f"http_{status}")
    try:
        return resp.json()
    except ValueError as exc:
        snippet = resp.body[:40].decode("utf-8", "replace").strip()
        why = " (nested too deeply)" if isinstance(exc, NestedTooDeeply) else ""
        raise InvalidResponse(serial, url, f"not JSON{why}: {snippet!r}") from None


class DeviceClient:
    """Talks to one configured device; not thread-safe (use one client per polling thread)."""

    def __init__(self, dev: DeviceConfig, timeout_s: float, address: str | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dev = dev
        self.timeout_s = timeout_s
        self._clock = clock
        self._address = address or dev.address
        self._token: str | None = None
        self._verified_at: float | None = None
        self._verified_socket = 0  # Connection.sockets when the identity was last checked
        self._conn: Connection | None = None  # opened on first use

    def _connection(self) -> Connection:
        if self._conn is None:
            assert self._address is not None
            if self.dev.api != Api.V2:
                self._conn = Connection(self._address)
            else:
                from hw_picollector.devices.tls import cert_hostname  # ssl: v2 only

                hostname = cert_hostname(self.dev.product_type, self.dev.serial)
                try:
                    self._conn = Connection(self._address, hostname, self.dev.ca_file)
                except OSError as exc:  # ssl.SSLError included: not a PEM certificate
                    raise TlsError(self.dev.serial, self.url,
                                   f"cannot load CA file {self.dev.ca_file}: {exc}") from exc
        return self._conn

    @property
    def address(self) -> str | None:
        return self._address

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://192.168.1.59``; ``(no address)`` until one is known."""
        return base_url(self._address, self.dev.api) if self._address else "(no address)"

    def set_address(self, address: str) -> None:
        """Re-target (after mDNS re-resolution): drops the connection, re-checks identity."""
        if address == self._address:
            return
        log.info("%s: address %s -> %s", self.dev.serial, self._address, address)
        self._address = address
        self._reset()

    def _reset(self) -> None:
        self._verified_at = None
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        if self.dev.api != Api.V2:
            return {}
        if self._token is None:
            path = self.dev.token_file
            if not path:
                raise Unauthorized(self.dev.serial, self.url,
                                   f"no token_file configured; {PAIR_HINT}")
            try:
                token = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or "unreadable"
                raise Unauthorized(self.dev.serial, self.url,
                                   f"cannot read token file {path}: {why}; {PAIR_HINT}") from None
            if not _TOKEN_RE.fullmatch(token):
                raise Unauthorized(self.dev.serial, self.url,
                                   f"token file {path} holds no token; {PAIR_HINT}")
            self._token = token
        return {"Authorization": f"Bearer {self._token}", "X-Api-Version": "2"}

    # Each call is written once, as the GETs it needs: a generator that yields (path, headers),
    # is sent each Response (or thrown the transport's DeviceError) and returns the result.
    # The methods below drive it with blocking requests; the collector drives measure_steps()
    # from its selector loop (see Connection.begin).

    def _get(self, path: str) -> Generator[Request, Response, Any]:
        """One GET, decoded; any error forgets the identity check (and a refused token)."""
        try:
            if not self._address:
                raise Unreachable(self.dev.serial, self.url, "set `address` in the config "
                                  "or let mDNS discovery find the device")
            resp = yield path, self._headers()
            return _decode(resp, self.dev.serial, self.dev.api)
        except DeviceError as exc:
            self._verified_at = None
            if isinstance(exc, Unauthorized):
                self._token = None  # re-read the file: it may have been re-deployed
            raise

    def _info(self) -> Generator[Request, Response, DeviceInfo]:
        info = parse_info((yield from self._get("/api")))
        if info is None:
            self._verified_at = None
            raise InvalidResponse(self.dev.serial, self.url + "/api",
                                  "GET /api gave no serial/product_type")
        return info

    def _check_identity(self) -> Generator[Request, Response, DeviceInfo]:
        info = yield from self._info()
        if info.serial != self.dev.serial.lower():
            self._reset()
            raise SerialMismatch(self.dev.serial, self.url + "/api", info.serial,
                                 info.product_type)
        if self._verified_at is None:
            log.debug("%s at %s: identity checked (%s, firmware %s, API %s)", info.serial,
                      self.url, info.product_type, info.firmware_version, info.api_version)
        self._verified_at = self._clock()
        self._verified_socket = self._socket()
        return info

    def _socket(self) -> int:
        """Which socket the last answer came over (0: none yet)."""
        return self._conn.sockets if self._conn is not None else 0

    def measure_steps(self) -> Generator[Request, Response, Sample]:
        """``measure`` for a caller that does the requests itself (see the note above)."""
        if self._verified_at is None or self._clock() - self._verified_at >= IDENTITY_RECHECK_S:
            yield from self._check_identity()
        path = "/api/measurement" if self.dev.api == Api.V2 else "/api/v1/data"
        payload = yield from self._get(path)
        if not isinstance(payload, dict):
            self._verified_at = None
            raise InvalidResponse(self.dev.serial, self.url + path,
                                  f"expected a JSON object, got {type(payload).__name__}")
        answered_on = self._socket()
        if answered_on != self._verified_socket:  # a new connection: who answered on it?
            yield from self._check_identity()
            if self._verified_socket != answered_on:  # re-opened yet again in between
                self._verified_at = None
                raise Unreachable(self.dev.serial, self.url + path, "connection re-opened "
                                  "twice in one poll; sample not recorded")
        return to_sample(self.dev.product_type, payload)

    def connection(self) -> Connection:
        """The device's connection (opened on first use; ``TlsError`` for an unusable CA)."""
        return self._connection()

    def _run(self, steps: Generator[Request, Response, T]) -> T:
        """Drive ``steps`` with blocking requests."""
        try:
            path, headers = next(steps)
            while True:
                try:
                    resp = self._connection().request("GET", path, self.dev.serial,
                                                      self.timeout_s, headers=headers)
                except DeviceError as exc:
                    path, headers = steps.throw(exc)
                else:
                    path, headers = steps.send(resp)
        except StopIteration as done:
            result: T = done.value
            return result

    def info(self) -> DeviceInfo:
        """``GET /api``: product type, serial, firmware and API version."""
        return self._run(self._info())

    def check_identity(self) -> DeviceInfo:
        """``GET /api`` and require the configured serial (``SerialMismatch`` otherwise)."""
        return self._run(self._check_identity())

    def measure(self) -> Sample:
        """One measurement as a canonical Sample (identity re-checked when due)."""
        return self._run(self.measure_steps())
