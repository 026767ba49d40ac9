"""TLS for API v2: the HomeWizard Appliance Access CA and the ``appliance/<id>/<serial>`` name.

A device certificate carries its name in the subject CN only (no SAN) and is signed by a
self-signed X.509 v1 CA. So the client checks the CN (``hostname_checks_common_name``) and
must not run in ``VERIFY_X509_STRICT`` mode, which Python >= 3.13 turns on by default and
which rejects a v1 CA.
"""

from __future__ import annotations

import re
import socket
import ssl
from importlib import resources
from typing import Any

from hw_picollector import catalog

HOMEWIZARD_CA_PEM: str = (
    resources.files("hw_picollector.devices").joinpath("homewizard-ca.pem").read_text("ascii")
)
"""The HomeWizard "Appliance Access CA" (valid 2021-12-18 to 2031-12-16)."""

_NAME_RE = re.compile(r"appliance/([a-z0-9]+)/([0-9a-fA-F]{12})")  # with fullmatch only


def cert_hostname(product_type: str, serial: str) -> str:
    """The name a device's certificate is issued to, e.g. ``appliance/p1dongle/5c2fafaabbcc``."""
    return f"appliance/{cert_id(product_type)}/{serial.lower()}"


def cert_id(product_type: str) -> str:
    """The id in a product's certificate name (``HWE-P1`` → ``p1dongle``; also the v2 mDNS
    TXT ``id``), from the catalog; ``ValueError`` for an unknown product type."""
    product = catalog.get(product_type)
    if product is None:
        raise ValueError(f"no certificate id known for product_type {product_type!r}")
    return product.cert_id


def parse_cert_hostname(name: str) -> tuple[str, str] | None:
    """``appliance/<cert-id>/<serial>`` → (cert id, lowercase serial), or None."""
    match = _NAME_RE.fullmatch(name)
    return (match.group(1), match.group(2).lower()) if match else None


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context trusting only the HomeWizard CA, or ``ca_file``'s CA(s) instead.

    The caller passes ``server_hostname=cert_hostname(...)``; the ssl module then checks the CN.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.hostname_checks_common_name = True
    # Set explicitly (not |=): drops VERIFY_X509_STRICT, the Python 3.13+ default that refuses a
    # v1 CA, and keeps a partial chain acceptable, as the official client does.
    ctx.verify_flags = ssl.VERIFY_X509_PARTIAL_CHAIN
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_verify_locations(cadata=HOMEWIZARD_CA_PEM)
    return ctx


def peer_cert_hostname(host: str, port: int, ca_file: str | None, timeout_s: float) -> str:
    """Connect, verify the device certificate's chain (not its name) and return its subject CN.

    For pairing a device whose serial is not known yet: the CN names it, and a CA-signed CN is
    as trustworthy as the name check it replaces. Raises ``OSError`` (``ssl.SSLError`` included).
    """
    ctx = client_context(ca_file)
    ctx.check_hostname = False  # chain still verified (CERT_REQUIRED)
    with (
        socket.create_connection((host, port), timeout=timeout_s) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        cert = tls.getpeercert() or {}
    subject: Any = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ssl.SSLError(f"certificate of {host}:{port} has no subject CN")
