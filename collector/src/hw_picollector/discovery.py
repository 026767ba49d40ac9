"""mDNS discovery of HomeWizard devices (``_hwenergy._tcp`` = API v1, ``_homewizard._tcp`` = v2).

A device is known by its serial, never by its address: ``records_to_devices`` (pure) merges the
services one device advertises into one ``DiscoveredDevice``; ``browse``/``resolve_serial`` do
the multicast part (IPv4 only); ``Advertisement`` publishes a simulated device. ``zeroconf`` is
imported inside the functions, so importing this module stays cheap. Product names, instance
name prefixes and certificate ids come from the catalog.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, GENERIC_MDNS_PREFIX, Api
from hw_picollector.devices.tls import cert_hostname, parse_cert_hostname

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

V1_SERVICE = "_hwenergy._tcp.local."
V2_SERVICE = "_homewizard._tcp.local."
SERVICE_APIS: Mapping[str, str] = MappingProxyType({V1_SERVICE: Api.V1, V2_SERVICE: Api.V2})

Record = tuple[str, dict[str, str], list[str], int]
"""(service type, TXT key → value, addresses, port) of one resolved service instance."""

_SERIAL_RE = re.compile(r"[0-9a-f]{12}")  # with fullmatch only


@dataclass(frozen=True)
class DiscoveredDevice:
    """One device, merged from its v1 and/or v2 service. ``port`` is the v1 port when v1 is
    advertised, else the v2 port; ``v2_port`` is the v2 (HTTPS) port when advertised."""

    serial: str
    product_type: str
    product_name: str
    address: str
    port: int
    api_versions: tuple[str, ...]
    api_enabled: bool | None
    cert_id: str | None
    v2_port: int | None = None
    v2_api_version: str | None = None

    def address_for(self, api: str | None = None) -> str | None:
        """``ip:port`` for API ``"v1"``/``"v2"`` (None: ``port``); None if not advertised."""
        if api is None:
            return f"{self.address}:{self.port}"
        if api == Api.V2:
            return f"{self.address}:{self.v2_port}" if self.v2_port is not None else None
        return f"{self.address}:{self.port}" if Api.V1 in self.api_versions else None


@dataclass
class _Partial:
    addresses: list[str] = field(default_factory=list)
    txt: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    api_enabled: bool | None = None
    cert_id: str | None = None
    v2_api_version: str | None = None


def _service_api(service: str) -> str | None:
    name = service.lower().rstrip(".")
    return SERVICE_APIS.get(name + ("." if name.endswith(".local") else ".local."))


def _pick_address(addresses: Iterable[str]) -> str | None:
    """The first IPv4 address, else the first valid address (IPv6 breaks some clients)."""
    valid = []
    for addr in addresses:
        try:
            valid.append(ipaddress.ip_address(addr))
        except ValueError:
            continue
    best = next((a for a in valid if a.version == 4), valid[0] if valid else None)
    return str(best) if best is not None else None


def records_to_devices(records: list[Record]) -> list[DiscoveredDevice]:
    """Merge resolved service records into devices, by serial (sorted by serial).

    The serial comes from TXT ``serial`` (or the v2 TXT ``id``); records without a valid
    serial, an address or a known service type are skipped.
    """
    partials: dict[str, _Partial] = {}
    for service, raw_txt, addresses, port in records:
        api = _service_api(service)
        txt = {k.lower(): v for k, v in raw_txt.items()}
        ident = parse_cert_hostname(txt.get("id", ""))
        serial = (txt.get("serial") or (ident[1] if ident else "")).lower()
        if api is None or not _SERIAL_RE.fullmatch(serial):
            continue
        part = partials.setdefault(serial, _Partial())
        part.addresses.extend(addresses)
        for key in ("product_type", "product_name"):
            if txt.get(key) and key not in part.txt:
                part.txt[key] = txt[key]
        part.ports.setdefault(api, port)
        if api == Api.V1:
            part.api_enabled = {"1": True, "0": False}.get(txt.get("api_enabled", ""))
        else:
            part.cert_id = ident[0] if ident else part.cert_id
            part.v2_api_version = txt.get("api_version") or part.v2_api_version
    devices = []
    for serial, part in sorted(partials.items()):
        address = _pick_address(part.addresses)
        if address is None:
            continue
        apis = tuple(a.value for a in Api if a in part.ports)
        product = _product(part.txt.get("product_type", ""), part.cert_id)
        devices.append(DiscoveredDevice(
            serial=serial,
            product_type=part.txt.get("product_type") or (
                str(product.product_type) if product else ""),
            product_name=part.txt.get("product_name") or (product.name if product else ""),
            address=address, port=part.ports[apis[0]], api_versions=apis,
            api_enabled=part.api_enabled,
            cert_id=part.cert_id or (product.cert_id if product else None),
            v2_port=part.ports.get(Api.V2), v2_api_version=part.v2_api_version,
        ))
    return devices


def _product(product_type: str, cert_id: str | None) -> catalog.Product | None:
    """The catalog's product of a device: by its TXT ``product_type``, else by the v2 TXT
    ``id``'s certificate id when exactly one product has that id (not ``energymeter``)."""
    if product_type:
        return catalog.get(product_type)
    matches = catalog.by_cert_id(cert_id) if cert_id else ()
    return matches[0] if len(matches) == 1 else None


def match_serial(devices: Iterable[DiscoveredDevice], serial: str) -> DiscoveredDevice | None:
    """The device with this serial (case-insensitive), or None."""
    return next((d for d in devices if d.serial == serial.lower()), None)


def _decode_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")
            for k, v in properties.items()}


def _scan(timeout_s: float, interfaces: list[str] | None,
          done: Callable[[list[DiscoveredDevice]], bool] | None = None) -> list[DiscoveredDevice]:
    """Browse both services for up to ``timeout_s`` (less once ``done`` says so)."""
    from zeroconf import (  # lazy: keeps `import hw_picollector.discovery` cheap
        InterfaceChoice,
        IPVersion,
        ServiceBrowser,
        ServiceStateChange,
        Zeroconf,
    )

    names: queue.Queue[tuple[str, str]] = queue.Queue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put((service_type, name))

    records: dict[tuple[str, str], Record] = {}
    deadline = time.monotonic() + timeout_s
    zc = Zeroconf(interfaces=interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, [V1_SERVICE, V2_SERVICE], handlers=[on_change])
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    service, name = names.get(timeout=remaining)
                except queue.Empty:
                    break
                info = zc.get_service_info(service, name, timeout=int(max(remaining, 0.5) * 1000))
                if info is None or not info.port:
                    continue
                records[(service, name)] = (service, _decode_txt(info.properties),
                                            info.parsed_addresses(IPVersion.V4Only), info.port)
                if done is not None and done(records_to_devices(list(records.values()))):
                    break
        finally:
            browser.cancel()
    finally:
        zc.close()
    return records_to_devices(list(records.values()))


def browse(timeout_s: float, interfaces: list[str] | None = None) -> list[DiscoveredDevice]:
    """Every HomeWizard device answering within ``timeout_s`` (``interfaces``: IPv4 addresses)."""
    return _scan(timeout_s, interfaces)


def resolve_serial(serial: str, timeout_s: float, interfaces: list[str] | None = None,
                   api: str | None = None) -> str | None:
    """``ip:port`` of the device with this serial, for API ``api`` (pass the configured one:
    a dual-stack device has port 80 for v1 and 443 for v2); None when not found in time."""
    def found(devices: list[DiscoveredDevice]) -> bool:
        dev = match_serial(devices, serial)
        return dev is not None and dev.address_for(api) is not None

    dev = match_serial(_scan(timeout_s, interfaces, found), serial)
    return dev.address_for(api) if dev is not None else None


def instance_name(serial: str, product_type: str) -> str:
    """The device's mDNS instance name, e.g. ``p1meter-AABBCC`` (last 6 hex of the serial)."""
    product = catalog.get(product_type)
    prefix = product.mdns_prefix if product is not None else None
    return f"{prefix or GENERIC_MDNS_PREFIX}-{serial[-6:].upper()}"


def advertisement_txt(serial: str, product_type: str, api: str, *, product_name: str | None = None,
                      api_enabled: bool = True, api_version: str = "2.0.0") -> dict[str, str]:
    """The TXT record a real device publishes for its v1 or v2 service."""
    product = catalog.get(product_type)
    txt = {"serial": serial, "product_type": str(product_type),
           "product_name": product_name or (product.name if product else str(product_type))}
    if api == Api.V2:
        return {"api_version": api_version, "id": cert_hostname(product_type, serial), **txt}
    return {"api_enabled": "1" if api_enabled else "0", "path": "/api/v1", **txt}


class Advertisement:
    """Context manager publishing one simulated device service (v1 or v2) over mDNS.

    It publishes on ``interfaces`` (default: only ``address``'s interface), IPv4 only: run it
    inside a network namespace in tests, never on a machine's real network.
    """

    def __init__(self, serial: str, product_type: str, port: int, address: str = "127.0.0.1", *,
                 api: str = Api.V1.value, interfaces: list[str] | None = None,
                 product_name: str | None = None, api_enabled: bool = True,
                 api_version: str = "2.0.0") -> None:
        if api not in API_NAMES:
            raise ValueError(f"api must be v1 or v2, not {api!r}")
        self.service = V2_SERVICE if api == Api.V2 else V1_SERVICE
        self.instance = instance_name(serial, product_type)
        self.address, self.port = address, port
        self.interfaces = interfaces or [address]
        self.txt = advertisement_txt(serial, product_type, api, product_name=product_name,
                                     api_enabled=api_enabled, api_version=api_version)
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None

    def __enter__(self) -> Advertisement:
        from zeroconf import IPVersion, ServiceInfo, Zeroconf

        info = ServiceInfo(self.service, f"{self.instance}.{self.service}", port=self.port,
                           properties=dict(self.txt), server=f"{self.instance}.local.",
                           addresses=[socket.inet_aton(self.address)])
        zc = Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        try:
            zc.register_service(info)
        except BaseException:
            zc.close()
            raise
        self._zc, self._info = zc, info
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        zc, info, self._zc, self._info = self._zc, self._info, None, None
        if zc is None:
            return
        try:
            if info is not None:
                zc.unregister_service(info)
        finally:
            zc.close()


def advertise(serial: str, product_type: str, port: int, address: str = "127.0.0.1",
              **kwargs: Any) -> Advertisement:
    """``with advertise(serial, "HWE-P1", 8080, api="v2"): ...`` — see ``Advertisement``."""
    return Advertisement(serial, product_type, port, address, **kwargs)
