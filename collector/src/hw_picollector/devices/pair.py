"""API v2 pairing: ask the device for a token, which it grants after a press on its button.

``POST /api/user {"name": "local/..."}`` answers 403 ``user:creation-not-enabled`` until the
button is pressed; for 30 s after the press the next POST returns 200 with the token. Polling
is allowed, so we POST every ``interval_s`` until the deadline.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from hw_picollector import catalog
from hw_picollector.catalog import Api
from hw_picollector.config import split_address
from hw_picollector.devices.client import error_code
from hw_picollector.devices.errors import (
    InvalidResponse,
    PairingRefused,
    PairingTimeout,
    TlsError,
    Unreachable,
)
from hw_picollector.devices.tls import (
    cert_hostname,
    client_context,
    parse_cert_hostname,
    peer_cert_hostname,
)
from hw_picollector.devices.transport import Connection, Response, base_url

log = logging.getLogger(__name__)

DEFAULT_NAME = "local/hw-picollector"
# With fullmatch only (re.match and $ let a trailing newline by).
NAME_RE = re.compile(r"local/[a-zA-Z0-9\-_/\\# ]{1,40}")
TOKEN_RE = re.compile(r"[0-9A-Fa-f]{32}")
_REFUSALS: Mapping[str, str] = MappingProxyType({
    "user:no-storage": "the device has no free user slot (user:no-storage); "
                       "delete an unused local user first",
    "user:name-invalid": "the device refused the user name {name!r} (user:name-invalid); "
                         "use local/ + 1-40 of letters, digits, '-', '_', '/', '\\', '#', ' '",
})


def _hostname(address: str, product_type: str | None, serial: str | None, ca_file: str | None,
              timeout_s: float) -> tuple[str, str]:
    """(certificate name to verify, serial): from the arguments, or read off the certificate."""
    if serial is not None:
        if product_type is None:
            raise ValueError("pair: product_type is needed to verify a known serial")
        return cert_hostname(product_type, serial), serial.lower()
    host, port = split_address(address)
    url = base_url(address, Api.V2)
    try:
        name = peer_cert_hostname(host, port or 443, ca_file, timeout_s)
    except ssl.SSLError as exc:
        raise TlsError("(unknown serial)", url, f"TLS failed: {exc}") from exc
    except OSError as exc:
        raise Unreachable("(unknown serial)", url, f"cannot connect: {exc}") from exc
    parsed = parse_cert_hostname(name)
    if parsed is None:
        raise TlsError("(unknown serial)", url, f"certificate is for {name!r}, not an appliance")
    cert_id, found = parsed
    if product_type is not None:
        known = catalog.get(product_type)
        if known is None or known.cert_id != cert_id:
            raise TlsError(found, url, f"certificate is for {name!r}, not a {product_type}")
    return name, found


def pair(  # noqa: PLR0917 (the CLI contract's argument order)
    address: str, product_type: str | None, serial: str | None,
    name: str = DEFAULT_NAME, ca_file: str | None = None, timeout_s: float = 120.0,
    interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll ``POST /api/user`` at ``address`` (``host[:port]``, default 443) and return the token.

    The certificate is verified against the HomeWizard CA (or ``ca_file``) for
    ``appliance/<cert-id>/<serial>``; with ``serial=None`` the serial is read from the
    CA-verified certificate itself. Raises ``ValueError`` for a bad ``name``,
    ``PairingTimeout`` when nobody pressed the button in time, ``PairingRefused`` on
    ``user:no-storage``/``user:name-invalid``/..., and the other ``DeviceError``s.
    """
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"pair: user name {name!r} must match {NAME_RE.pattern}")
    try:
        client_context(ca_file)
    except OSError as exc:  # ssl.SSLError included
        raise TlsError(serial or "(unknown serial)", base_url(address, Api.V2),
                       f"cannot load CA file {ca_file}: {exc}") from exc
    deadline = clock() + timeout_s
    hostname, serial = _hostname(address, product_type, serial, ca_file, min(timeout_s, 10.0))
    url = base_url(address, Api.V2) + "/api/user"
    body = json.dumps({"name": name}).encode()
    answered = False
    log.info("%s at %s: press the device button (1-3 s) within %g s", serial, url, timeout_s)
    with Connection(address, hostname, ca_file) as conn:
        while True:
            remaining = deadline - clock()
            try:
                resp = conn.request("POST", "/api/user", serial, max(1.0, min(10.0, remaining)),
                                    headers={"X-Api-Version": "2"}, body=body)
            except Unreachable:
                if not answered:  # never reached it: a wrong address, not a hiccup
                    raise
            else:
                answered = True
                code = error_code(resp)
                if resp.status == 200:
                    return _token(resp, serial, url)
                if code != "user:creation-not-enabled":
                    known = _REFUSALS.get(code or "")
                    detail = (known.format(name=name) if known
                              else f"HTTP {resp.status} ({code})")
                    state = re.sub(r"[^a-z0-9]+", "_", code or f"http_{resp.status}")
                    raise PairingRefused(serial, url, detail, state)
            if clock() >= deadline:
                raise PairingTimeout(serial, url, f"the button was not pressed within "
                                     f"{timeout_s:g} s (kWh meters: a 1-3 s press)")
            sleep(max(0.0, min(interval_s, deadline - clock())))


def _token(resp: Response, serial: str, url: str) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise InvalidResponse(serial, url, "200 without a 32-hex-digit token")
    return token
