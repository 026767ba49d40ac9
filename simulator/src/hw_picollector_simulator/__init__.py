"""``hwpc simulate``: a faithful HomeWizard device simulator (see docs/homewizard-api.md).

- :mod:`.model`: deterministic household values, v2 measurement names.
- :mod:`.dsmr`: DSMR 5.0 telegrams with a valid CRC16.
- :mod:`.tls`: a v1 CA and per-device certificates like HomeWizard's, via ``openssl``.
- :mod:`.payloads`: v1 names and the devices' JSON number formats.
- :mod:`.server`: :class:`~.server.SimulatedDevice`, the HTTP(S) device with test controls.

mDNS advertisement (``--mdns``) goes through ``hw_picollector.discovery.Advertisement``.
Product facts (names, certificate ids, APIs, roles, phases) come from ``hw_picollector.catalog``;
how a device behaves (payloads, endpoints, quirks) is the simulator's own.
"""

from __future__ import annotations

import argparse

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, ROLE_NAMES, Api

FAULT_CHOICES = ("none", "disabled", "slow", "flaky", "garbage", "nulls",  # = server.FAULTS
                 "continue-flood", "chunk-ext-flood", "trickle", "huge-body", "deep-json",
                 "junk-error", "many-extras")


def product_types() -> tuple[str, ...]:
    """The product types the simulator models: the catalog's, except those without
    measurements of their own (the display)."""
    return tuple(t for t in catalog.product_types() if catalog.product(t).columns)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hwpc simulate``."""
    parser.add_argument("--type", required=True, choices=product_types(), help="product type")
    parser.add_argument(
        "--api", choices=API_NAMES, default=Api.V1.value, help="v1: HTTP; v2: HTTPS + token"
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    parser.add_argument("--serial", help="12 lowercase hex (default: derived from type and port)")
    parser.add_argument("--role", choices=ROLE_NAMES,
                        help="what the device measures (default by type)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (loopback only)")
    parser.add_argument(
        "--allow-non-loopback", action="store_true", help="allow --bind on a non-loopback address"
    )
    parser.add_argument("--tls-dir", help="API v2: directory for ca.pem and the device certificate")
    parser.add_argument("--token", help="API v2: a bearer token that is valid from the start")
    parser.add_argument(
        "--fault", choices=FAULT_CHOICES, default="none", help="misbehave from the start"
    )
    parser.add_argument("--firmware", help="firmware_version to report")
    parser.add_argument(
        "--mdns", action="store_true",
        help="advertise over mDNS (_hwenergy._tcp, or _homewizard._tcp for v2) as a real device",
    )  # fmt: skip
    parser.add_argument(
        "--mdns-interface", default="127.0.0.1", metavar="IPV4",
        help="the one interface to advertise on (loopback only: use a network namespace)",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; prints ``simulating <type> <serial> api <v> on <url>``."""
    from hw_picollector_simulator.server import run as serve  # lazy: keeps `hwpc --help` fast

    return serve(args)


__all__ = ["add_arguments", "product_types", "run"]
