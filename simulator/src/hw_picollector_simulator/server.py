"""A simulated HomeWizard device: API v1 over HTTP or API v2 over HTTPS, plus test controls.

Faithful to docs/homewizard-api.md where the behaviour is documented. Choices where it is not:

- One simulator serves one API (real devices serve v1 on :80 and v2 on :443 side by side).
- The v2 port speaks TLS only; a plain HTTP request gets the connection closed.
- v2 answers 401 before routing: without a valid token even an unknown path gives 401.
- Unknown paths (and known paths with the wrong method) give ``404`` ``404 Not Found``.
- The pairing window stays open for its 30 s; every POST /api/user inside it gets a token.
- ``disabled`` on v2 answers 403 ``{"error":"request:api-disabled"}`` (v2 has no documented
  disabled state; v1 gives the documented 403 with error id 202).
- ``flaky`` fails about 30 % of data requests (measurement, telegram), alternating between
  HTTP 500 and a connection closed without an answer; the sequence is fixed per serial.
- ``garbage`` answers data requests with 200 and a truncated JSON body.
- ``nulls`` sends old-firmware payloads: ``null`` phases 2/3 and gas, integers as ``12.000``.
- Hostile devices (data requests only; ``GET /api`` still answers, so a client gets as far as
  the measurement):
  - ``continue-flood``: ``100 Continue`` interim answers, endlessly, never a final answer;
  - ``chunk-ext-flood``: a chunked 200 whose chunks carry one byte each behind a 1 kB chunk
    extension, endlessly;
  - ``trickle``: the right answer, one byte every ``trickle_s`` (1.5 s);
  - ``huge-body``: a chunked 200 whose body never ends (64 KiB chunks);
  - ``deep-json``: 200 with 100,000 nested JSON arrays;
  - ``junk-error``: 500 with an error text of 100 kB full of control characters (terminal
    escapes, NUL, CR LF, bidirectional overrides).
- ``many-extras``: measurements carry ``MANY_EXTRAS`` more numeric fields nobody knows
  (``sim_extra_0000_w``, ...), as firmware that dumps its internals would.
- The socket's power_on/brightness do not change the simulated power.

mDNS (``mdns=True``, ``hwpc simulate --mdns``): the device advertises the service of the API
it serves, ``_hwenergy._tcp`` (v1) or ``_homewizard._tcp`` (v2), with a real device's instance
name and TXT record (``discovery.Advertisement``), IPv4 only, on ``mdns_interface`` only
(127.0.0.1 by default: meant for a network namespace of its own, never a real network). A real
v2 meter also advertises ``_hwenergy._tcp`` for its v1 API on port 80; a simulator serves one
API, so it advertises that one. A serial change re-advertises; ``disabled`` sets the v1 TXT
``api_enabled=0``.

Control endpoints (no auth, both APIs): ``POST /_sim/button`` (open the pairing window),
``POST /_sim/fault`` ``{"fault": F}``, ``POST /_sim/serial`` ``{"serial": S}`` (become another
device at this address; open connections are closed), ``GET /_sim/stats``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import logging
import random
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, Api, ProductType
from hw_picollector_simulator import dsmr, product_types, tls
from hw_picollector_simulator.model import DeviceModel
from hw_picollector_simulator.payloads import dumps, nullify, to_v1

log = logging.getLogger(__name__)

HOSTILE_FAULTS = ("continue-flood", "chunk-ext-flood", "trickle", "huge-body", "deep-json",
                  "junk-error")
FAULTS = ("none", "disabled", "slow", "flaky", "garbage", "nulls", *HOSTILE_FAULTS,
          "many-extras")
MANY_EXTRAS = 5000  # the many-extras fault's additional numeric fields
API_V2_VERSION = "2.2.0"
PAIRING_WINDOW_S = 30.0
SLOW_DELAY_S = 12.0
TRICKLE_S = 1.5
DEEP_JSON_LEVELS = 100_000
JUNK_ERROR = ("\x1b[2J\x1b[31mdevice on fire\x07\r\nX-Injected: yes\x00\u202egnp.exe\x9b"
              + "\x1b[0m" + "A" * 100_000)
FLAKY_SHARE = 0.3
USER_NAME = re.compile(r"local/[a-zA-Z0-9\-_/\\# ]{1,40}")  # with fullmatch only
SERIAL = re.compile(r"[0-9a-f]{12}")
# The firmware the simulator reports by default (5.0203 for any other product).
FIRMWARE: dict[str, str] = {ProductType.P1: "6.0503", ProductType.SKT: "4.07",
                            ProductType.WTR: "2.03", ProductType.BAT: "6.00"}
IDENTIFY_V1 = (ProductType.P1, ProductType.SKT, ProductType.WTR)  # the library: not on kWh meters
IDENTIFY_V2 = (ProductType.P1, ProductType.BAT)
DATA_PATHS = ("/api/v1/data", "/api/v1/telegram", "/api/measurement", "/api/telegram")
GARBAGE = b'{"active_power_w":203.000,"total_power_import_kwh":18664.9'


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    drop: bool = False  # hang up without answering
    after: Callable[[], None] | None = None  # run once the answer is sent
    # writes the whole answer on the wire itself (hostile faults); the connection then closes
    stream: Callable[[Callable[[bytes], None]], None] | None = None


def _json(status: int, value: Any, all_floats: bool = False) -> Response:
    return Response(status, dumps(value, all_floats).encode())


def _v1_error(status: int, error_id: int, description: str) -> Response:
    return _json(status, {"error": {"id": error_id, "description": description}})


def _v2_error(status: int, code: str) -> Response:
    return _json(status, {"error": code})


NOT_FOUND = Response(404, b"404 Not Found", "text/plain")
NO_CONTENT = Response(204)


def default_serial(product_type: str, port: int) -> str:
    """A stable MAC-like serial for a simulator: HomeWizard's 5c2faf prefix + a hash."""
    return "5c2faf" + hashlib.sha256(f"{product_type}:{port}".encode()).hexdigest()[:6]


def flaky_fails(serial: str, n: int) -> bool:
    """Whether the ``flaky`` fault fails a device's n-th data request (a fixed sequence)."""
    return random.Random(f"{serial}:{n}").random() < FLAKY_SHARE


class SimulatedDevice:
    """One simulated device, served from a background thread: ``start()``, ``url``, ``stop()``."""

    def __init__(
        self,
        product_type: str,
        api: str = Api.V1.value,
        serial: str | None = None,
        port: int = 0,
        *,
        bind: str = "127.0.0.1",
        tls_dir: Path | str | None = None,
        token: str | None = None,
        fault: str | None = None,
        firmware: str | None = None,
        role: str | None = None,
        first_telegram_s: float = 1.0,
        verbose: bool = False,
        mdns: bool = False,
        mdns_interface: str = "127.0.0.1",
    ) -> None:
        product = catalog.get(product_type)
        if product is None or product_type not in product_types():
            raise ValueError(
                f"unknown product type {product_type!r}; known: {', '.join(product_types())}"
            )
        if api not in API_NAMES:
            raise ValueError(f"api must be v1 or v2, not {api!r}")
        if api not in product.apis:
            raise ValueError(f"{product_type} has no API {api}")
        if api == Api.V2 and tls_dir is None:
            raise ValueError("API v2 needs a tls_dir for its CA and certificate")
        self.product_type, self.api, self.port, self.bind = product_type, api, port, bind
        self.product_name = product.name
        self.tls_dir = Path(tls_dir) if tls_dir is not None else None
        self.firmware = firmware or FIRMWARE.get(product_type, "5.0203")
        self.role, self.first_telegram_s, self.verbose = role, first_telegram_s, verbose
        self.slow_delay_s = SLOW_DELAY_S
        self.trickle_s = TRICKLE_S
        self.mdns, self.mdns_interface = mdns, mdns_interface
        self._advert: Any = None  # discovery.Advertisement while advertising
        self._advert_lock = threading.Lock()
        self.fault = "none"
        self.set_fault(fault or "none")
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stats: Counter[str] = Counter()
        self._connections = 0
        self._data_requests = 0
        self._users: dict[str, str] = {"local/hwpc-simulator": token} if token else {}
        self._pairing_until = 0.0
        self._booted = time.monotonic()
        self._socket_state: dict[str, Any] = {
            "power_on": True,
            "switch_lock": False,
            "brightness": 255,
        }
        self._system: dict[str, Any] = {
            "cloud_enabled": True,
            "status_led_brightness_pct": 100,
            "api_v1_enabled": True,
        }
        self._batteries: dict[str, Any] = {
            "mode": "zero",
            "permissions": ["charge_allowed", "discharge_allowed"],
        }
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self._set_serial(serial or default_serial(product_type, port))

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> SimulatedDevice:
        self._httpd = _Server(self, (self.bind, self.port))
        self.port = self._httpd.server_address[1]
        self._booted = time.monotonic()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"sim-{self.serial}", daemon=True
        )
        self._thread.start()
        if self.mdns:
            try:
                self.advertise()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        self.unadvertise()
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SimulatedDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{'https' if self.api == 'v2' else 'http'}://{host}:{self.port}"

    @property
    def hostname(self) -> str:
        """The TLS name to verify (API v2): ``appliance/<cert-id>/<serial>``."""
        return tls.hostname(self.product_type, self.serial)

    @property
    def ca_file(self) -> Path | None:
        return self.tls_dir / "ca.pem" if self.tls_dir is not None else None

    # --- state changes -------------------------------------------------------------------
    def set_fault(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        was_enabled = self.fault != "disabled"
        self.fault = fault
        if self._advert is not None and self.api == Api.V1 and was_enabled != (fault != "disabled"):
            self._readvertise()  # the v1 TXT record carries api_enabled

    def press_button(self, window_s: float = PAIRING_WINDOW_S) -> None:
        """Open the window (30 s) in which POST /api/user hands out tokens."""
        self._pairing_until = time.monotonic() + window_s

    def _set_serial(self, serial: str) -> None:
        if not SERIAL.fullmatch(serial):
            raise ValueError(f"serial must be 12 lowercase hex characters, not {serial!r}")
        model = DeviceModel(serial, self.product_type, self.role, start_ts=time.time())
        context = None
        if self.api == Api.V2 and self.tls_dir is not None:
            cert, key = tls.device_cert(self.tls_dir, self.product_type, serial)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        with self._lock:
            self.serial, self.model, self.ssl_context = serial, model, context
        if self._advert is not None:
            self._readvertise()  # another device now: its own instance name and TXT record

    # --- mDNS ------------------------------------------------------------------------------
    @property
    def advertisement(self) -> Any:
        """The ``discovery.Advertisement`` being published, or None."""
        return self._advert

    def advertise(self) -> None:
        """Publish the device over mDNS on ``mdns_interface`` (see the module docstring)."""
        from hw_picollector.discovery import Advertisement  # zeroconf only when asked for

        bind = ipaddress.ip_address(self.bind) if _is_ipv4(self.bind) else None
        address = self.bind if bind is not None and not bind.is_unspecified \
            else self.mdns_interface
        advert = Advertisement(
            self.serial, self.product_type, self.port, address, api=self.api,
            interfaces=[self.mdns_interface], product_name=self.product_name,
            api_enabled=self.fault != "disabled", api_version=API_V2_VERSION,
        )  # fmt: skip
        with self._advert_lock:
            advert.__enter__()
            self._advert = advert

    def unadvertise(self) -> None:
        with self._advert_lock:
            advert, self._advert = self._advert, None
        if advert is not None:
            advert.__exit__(None, None, None)

    def _readvertise(self) -> None:
        self.unadvertise()
        self.advertise()

    def measurement(self) -> dict[str, Any]:
        with self._lock:
            return self.model.measurement(time.time())

    def _wifi_strength(self) -> int:
        h = int(hashlib.sha256(self.serial.encode()).hexdigest()[:4], 16)
        return 60 + h % 30 + int(3 * (time.time() // 60 % 3))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "serial": self.serial,
                "fault": self.fault,
                "requests": dict(self._stats),
                "total": sum(self._stats.values()),
                "connections": self._connections,
            }

    # --- requests ------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str] | Message, body: bytes
    ) -> Response:
        """Answer one request (called from the server's threads)."""
        path = urlsplit(target).path
        headers = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            self._stats[path] += 1
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        fault = self.fault
        if fault == "slow":
            self._stopping.wait(self.slow_delay_s)
        if fault == "disabled" and path.startswith("/api"):
            if self.api == Api.V1:
                return _v1_error(403, 202, "API not enabled")
            return _v2_error(403, "request:api-disabled")
        if path in DATA_PATHS and fault in ("flaky", "garbage"):
            failure = self._data_fault(fault)
            if failure is not None:
                return failure
        if path in DATA_PATHS and fault in HOSTILE_FAULTS:
            return self._hostile(fault, method, path, headers, body)
        if fault == "many-extras" and path in ("/api/v1/data", "/api/measurement"):
            return self._many_extras(method, path, headers, body)
        if self.api == Api.V1:
            return self._v1(method, path, body)
        return self._v2(method, path, headers, body)

    def _hostile(self, fault: str, method: str, path: str, headers: Mapping[str, str],
                 body: bytes) -> Response:
        """The answer of a hostile device to a data request (see the module docstring)."""
        if fault == "deep-json":
            return Response(200, b"[" * DEEP_JSON_LEVELS + b"]" * DEEP_JSON_LEVELS)
        if fault == "junk-error":
            if self.api == Api.V1:
                return _v1_error(500, 901, JUNK_ERROR)
            return _v2_error(500, JUNK_ERROR)
        if fault == "trickle":
            answer = self._v1(method, path, body) if self.api == Api.V1 else \
                self._v2(method, path, headers, body)
            extra = f"X-Api-Version: {API_V2_VERSION}\r\n" if self.api == Api.V2 else ""
            raw = (f"HTTP/1.1 {answer.status} OK\r\nContent-Type: {answer.content_type}\r\n"
                   f"{extra}Content-Length: {len(answer.body)}\r\n\r\n").encode() + answer.body
            return Response(answer.status, stream=lambda send: self._trickle(send, raw))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if fault == "continue-flood":
            burst = b"HTTP/1.1 100 Continue\r\n\r\n" * 512
            return Response(200, stream=lambda send: self._flood(send, b"", burst))
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        if fault == "chunk-ext-flood":
            burst = (b"1;ext=" + b"x" * 1000 + b"\r\n \r\n") * 64
        else:  # huge-body
            burst = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        return Response(200, stream=lambda send: self._flood(send, head, burst))

    def _flood(self, send: Callable[[bytes], None], head: bytes, burst: bytes) -> None:
        """``head``, then ``burst`` again and again until the client hangs up."""
        send(head)
        while not self._stopping.is_set():
            send(burst)

    def _trickle(self, send: Callable[[bytes], None], raw: bytes) -> None:
        for i in range(len(raw)):
            if self._stopping.wait(self.trickle_s if i else 0):
                return
            send(raw[i:i + 1])

    def _many_extras(self, method: str, path: str, headers: Mapping[str, str],
                     body: bytes) -> Response:
        """The usual measurement plus ``MANY_EXTRAS`` unknown numeric fields."""
        answer = self._v1(method, path, body) if self.api == Api.V1 else \
            self._v2(method, path, headers, body)
        if answer.status != 200:
            return answer
        payload = json.loads(answer.body)
        payload.update({f"sim_extra_{i:04d}_w": i + 0.5 for i in range(MANY_EXTRAS)})
        return _json(200, payload)

    def _data_fault(self, fault: str) -> Response | None:
        if fault == "garbage":
            return Response(200, GARBAGE)
        with self._lock:
            n = self._data_requests
            self._data_requests += 1
        if not flaky_fails(self.serial, n):
            return None
        if n % 2:
            return Response(0, drop=True)
        if self.api == Api.V1:
            return _v1_error(500, 901, "Internal error")
        return _v2_error(500, "request:internal-server-error")

    def _control(self, method: str, path: str, body: bytes) -> Response:
        if (method, path) == ("GET", "/_sim/stats"):
            return _json(200, self.stats())
        if (method, path) == ("POST", "/_sim/button"):
            self.press_button()
            return _json(200, {"pairing_window_s": PAIRING_WINDOW_S})
        if method != "POST" or path not in ("/_sim/fault", "/_sim/serial"):
            return NOT_FOUND
        data = _parse(body)
        if not isinstance(data, dict):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            if path == "/_sim/fault":
                self.set_fault(str(data.get("fault")))
                return _json(200, {"fault": self.fault})
            self._set_serial(str(data.get("serial")))
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        hang_up = self._httpd.close_connections if self._httpd else None
        return Response(200, dumps({"serial": self.serial}).encode(), after=hang_up)

    def _info(self, api_version: str) -> dict[str, Any]:
        return {
            "product_name": self.product_name,
            "product_type": self.product_type,
            "serial": self.serial,
            "firmware_version": self.firmware,
            "api_version": api_version,
        }

    # --- API v1 ----------------------------------------------------------------------------
    def _v1(self, method: str, path: str, body: bytes) -> Response:
        kind = self.product_type
        if (method, path) == ("GET", "/api"):
            return _json(200, self._info("v1"))
        if (method, path) == ("GET", "/api/v1/data"):
            payload = to_v1(self.measurement(), kind, self._wifi_strength())
            old = self.fault == "nulls"
            return _json(200, nullify(payload) if old else payload, all_floats=old)
        if (method, path) == ("GET", "/api/v1/telegram") and kind == ProductType.P1:
            return Response(200, dsmr.telegram(self.measurement()).encode(), "text/plain")
        if path == "/api/v1/state" and kind == ProductType.SKT and method in ("GET", "PUT"):
            return self._v1_state(method, body)
        if (method, path) == ("PUT", "/api/v1/identify") and kind in IDENTIFY_V1:
            return _json(200, {"identify": "ok"})
        if path == "/api/v1/system" and method in ("GET", "PUT"):
            if method == "PUT":
                data = _parse(body)
                if not isinstance(data, dict):
                    return _v1_error(400, 2, "Invalid JSON")
                if not isinstance(data.get("cloud_enabled"), bool):
                    return _v1_error(400, 7, "cloud_enabled must be a boolean")
                self._system["cloud_enabled"] = data["cloud_enabled"]
            return _json(200, {"cloud_enabled": self._system["cloud_enabled"]})
        return NOT_FOUND

    def _v1_state(self, method: str, body: bytes) -> Response:
        if method == "GET":
            return _json(200, self._socket_state)
        data = _parse(body)
        if not isinstance(data, dict):
            return _v1_error(400, 2, "Invalid JSON")
        sent = {k: v for k, v in data.items() if k in self._socket_state}
        for key in ("power_on", "switch_lock"):
            if key in sent and not isinstance(sent[key], bool):
                return _v1_error(400, 7, f"{key} must be a boolean")
        brightness = sent.get("brightness", 0)
        if type(brightness) is not int or not 0 <= brightness <= 255:
            return _v1_error(400, 7, "brightness value limited to 0-255")
        new = {**self._socket_state, **sent}
        if new["switch_lock"] and not new["power_on"]:
            return _v1_error(400, 8, "power_on cannot be turned off when switch_lock is on")
        self._socket_state = new
        return _json(200, sent)

    # --- API v2 ----------------------------------------------------------------------------
    def _v2(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        version = headers.get("x-api-version")
        if version is not None and version.strip() != "2":
            return _v2_error(400, "request:api-version-not-supported")
        if (method, path) == ("POST", "/api/user"):
            return self._create_user(body)
        user = self._authorized(headers.get("authorization", ""))
        if user is None:
            return _v2_error(401, "user:unauthorized")
        kind = self.product_type
        if (method, path) == ("GET", "/api"):
            return _json(200, self._info(API_V2_VERSION))
        if (method, path) == ("GET", "/api/measurement"):
            m = self.measurement()
            old = self.fault == "nulls"
            return _json(200, nullify(m) if old else m, all_floats=old)
        if (method, path) == ("GET", "/api/telegram") and kind == ProductType.P1:
            if time.monotonic() - self._booted < self.first_telegram_s:
                return _v2_error(503, "telegram:no-telegram-received")
            return Response(200, dsmr.telegram(self.measurement()).encode(), "text/plain")
        if path == "/api/system" and method in ("GET", "PUT"):
            return self._v2_system(method, body)
        if (method, path) == ("PUT", "/api/system/identify") and kind in IDENTIFY_V2:
            return NO_CONTENT
        if (method, path) == ("PUT", "/api/system/reboot") and kind != ProductType.BAT:
            self._booted = time.monotonic()
            return NO_CONTENT
        if path == "/api/batteries" and method in ("GET", "PUT") and kind != ProductType.BAT:
            return self._v2_batteries(method, body)
        if path == "/api/user" and method in ("GET", "DELETE"):
            return self._v2_users(method, body, user)
        return NOT_FOUND

    def _authorized(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        with self._lock:
            for name, known in self._users.items():
                if secrets.compare_digest(known.encode(), token.strip().encode()):
                    return name
        return None

    def _create_user(self, body: bytes) -> Response:
        data = _parse(body)
        if not isinstance(data, dict):
            return _v2_error(400, "request:invalid-json")
        name = data.get("name")
        if name is None:
            return _v2_error(400, "json:parameter-missing:name")
        if not isinstance(name, str):
            return _v2_error(400, "json:parameter-invalid-type:name")
        if not name.startswith("local/"):
            return _v2_error(400, "user:invalid-prefix")
        rest = name.removeprefix("local/")
        if not rest:
            return _v2_error(400, "user:name-empty")
        if len(rest) > 40:
            return _v2_error(400, "user:name-too-long")
        if not USER_NAME.fullmatch(name):
            return _v2_error(400, "user:name-invalid")
        with self._lock:
            if time.monotonic() > self._pairing_until:
                return _v2_error(403, "user:creation-not-enabled")
            token = secrets.token_hex(16).upper()
            self._users[name] = token  # a re-used name gets a new token; the old one dies
        return _json(200, {"token": token, "name": name})

    def _v2_users(self, method: str, body: bytes, user: str) -> Response:
        if method == "GET":
            with self._lock:
                names = list(self._users)
            users = [{"name": n, "current": True} if n == user else {"name": n} for n in names]
            return _json(200, users)
        data = _parse(body)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return _v2_error(400, "json:parameter-missing:name")
        with self._lock:
            if self._users.pop(data["name"], None) is None:
                return _v2_error(404, "user:not-found")
        return NO_CONTENT

    def _v2_system(self, method: str, body: bytes) -> Response:
        battery = self.product_type == ProductType.BAT
        writable: dict[str, type] = {"cloud_enabled": bool, "api_v1_enabled": bool}
        if battery:
            writable = {}  # the battery's cloud_enabled is read-only; it has no v1
        if self.product_type in (ProductType.P1, ProductType.BAT):
            writable["status_led_brightness_pct"] = int
        if method == "PUT":
            data = _parse(body)
            if not isinstance(data, dict):
                return _v2_error(400, "request:invalid-json")
            known = {k: v for k, v in data.items() if k in writable}
            if not known:
                return _v2_error(400, "json:no-parameters-recognized")
            for key, value in known.items():
                ok = type(value) is writable[key]
                if key == "status_led_brightness_pct":
                    ok = ok and 0 <= value <= 100
                if not ok:
                    return _v2_error(400, f"json:parameter-invalid-type:{key}")
            self._system.update(known)
        out = {
            "wifi_ssid": "Simulated Wi-Fi",
            "wifi_rssi_db": self._wifi_strength() // 2 - 100,
            "cloud_enabled": True if battery else self._system["cloud_enabled"],
            "uptime_s": int(time.monotonic() - self._booted),
        }
        if "status_led_brightness_pct" in writable:
            out["status_led_brightness_pct"] = self._system["status_led_brightness_pct"]
        if not battery:
            out["api_v1_enabled"] = self._system["api_v1_enabled"]
        return _json(200, out)

    def _v2_batteries(self, method: str, body: bytes) -> Response:
        if method == "PUT":
            data = _parse(body)
            if not isinstance(data, dict):
                return _v2_error(400, "request:invalid-json")
            mode, permissions = data.get("mode", self._batteries["mode"]), data.get("permissions")
            if "mode" not in data and "permissions" not in data:
                return _v2_error(400, "json:no-parameters-recognized")
            if mode not in ("zero", "to_full", "standby"):
                return _v2_error(400, "json:parameter-invalid-type:mode")
            allowed = {"charge_allowed", "discharge_allowed"}
            if permissions is not None and (
                not isinstance(permissions, list) or not set(permissions) <= allowed
            ):
                return _v2_error(400, "json:parameter-invalid-type:permissions")
            if mode == "standby":
                permissions = []
            elif permissions is None or mode == "to_full":  # to_full: permissions read-only
                permissions = self._batteries["permissions"] or sorted(allowed)
            if mode == "zero" and not permissions:
                mode = "standby"  # the device normalises zero without permissions to standby
            self._batteries = {"mode": mode, "permissions": sorted(permissions)}
        return _json(
            200,
            {
                **self._batteries,
                "battery_count": 0,
                "power_w": 0,
                "target_power_w": 0,
                "max_consumption_w": 0,
                "max_production_w": 0,
            },
        )


_INVALID = object()


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return _INVALID


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, device: SimulatedDevice, address: tuple[str, int]) -> None:
        self.device = device
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: the TLS handshake happens here, not in accept()."""
        with self.device._lock:
            self.device._connections += 1
        conn = request
        context = self.device.ssl_context
        if context is not None:
            request.settimeout(10)
            try:
                conn = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # plain HTTP on the HTTPS port, or a failed handshake: hang up
            conn.settimeout(None)
        with self._open_lock:
            self._open.add(conn)
        try:
            super().finish_request(conn, client_address)
        except (ssl.SSLError, OSError):
            pass  # the client went away
        finally:
            with self._open_lock:
                self._open.discard(conn)
            if conn is not request:
                conn.close()

    def close_connections(self) -> None:
        """Hang up every open connection (the device disappeared or changed identity)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):  # the socket's own method, also for TLS sockets
                socket.socket.shutdown(conn, socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hw-picollector-simulator"
    timeout = 120  # idle keep-alive connections
    server: _Server

    def _serve(self) -> None:
        device = self.server.device
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = device.handle(self.command, self.path, self.headers, body)
        if response.drop:
            self.close_connection = True
            return
        if response.stream is not None:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client hung up: the usual end of a flood
                response.stream(self._send)
            return
        self.send_response(response.status)
        if device.api == Api.V2 and not self.path.startswith("/_sim/"):
            self.send_header("X-Api-Version", API_V2_VERSION)
        if response.body or response.status != 204:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if response.after is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()
        if response.after is not None:
            response.after()

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.device.verbose:
            log.info("%s %s", self.server.device.serial, format % args)


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """``hwpc simulate``: serve until SIGTERM or SIGINT; exit 0, 1 on failure, 2 on bad usage."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if not _is_loopback(args.bind) and not args.allow_non_loopback:
        print(f"hwpc simulate: error: --bind {args.bind} is not a loopback address "
              "(add --allow-non-loopback to serve on a network)", file=sys.stderr)  # fmt: skip
        return 2
    mdns = getattr(args, "mdns", False)
    mdns_interface = getattr(args, "mdns_interface", "127.0.0.1")
    if mdns and not _is_ipv4(mdns_interface):
        print(f"hwpc simulate: error: --mdns-interface {mdns_interface} is not an IPv4 address",
              file=sys.stderr)  # fmt: skip
        return 2
    if mdns and not _is_loopback(mdns_interface) and not args.allow_non_loopback:
        print(f"hwpc simulate: error: --mdns-interface {mdns_interface} is not a loopback "
              "address (add --allow-non-loopback to advertise on a network)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        device = SimulatedDevice(
            args.type, api=args.api, serial=args.serial, port=args.port, bind=args.bind,
            tls_dir=args.tls_dir, token=args.token, fault=args.fault, firmware=args.firmware,
            role=args.role, verbose=args.verbose, mdns_interface=mdns_interface,
        )  # fmt: skip
    except ValueError as exc:
        print(f"hwpc simulate: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # openssl failed
        print(f"hwpc simulate: error: {exc}", file=sys.stderr)
        return 1
    try:
        device.start()
    except OSError as exc:
        print(f"hwpc simulate: error: cannot listen on {args.bind}:{args.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    if mdns:
        try:
            device.advertise()
        except OSError as exc:
            device.stop()
            print(f"hwpc simulate: error: cannot advertise over mDNS on {mdns_interface}: "
                  f"{exc}", file=sys.stderr)  # fmt: skip
            return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"simulating {device.product_type} {device.serial} api {device.api} on {device.url}",
          file=sys.stderr, flush=True)  # fmt: skip
    if device.advertisement is not None:
        advert = device.advertisement
        print(f"advertising {advert.instance}.{advert.service} via mDNS on {mdns_interface}",
              file=sys.stderr, flush=True)  # fmt: skip
    while not stop.wait(1.0):
        pass
    device.stop()
    return 0
