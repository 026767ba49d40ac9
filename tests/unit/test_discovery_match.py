"""mDNS records → devices, matched by serial (pure: no sockets, no multicast)."""

from __future__ import annotations

import subprocess
import sys

from hw_picollector.discovery import (
    V1_SERVICE,
    V2_SERVICE,
    Advertisement,
    DiscoveredDevice,
    Record,
    advertisement_txt,
    instance_name,
    match_serial,
    records_to_devices,
)

P1 = "5c2fafaabbcc"
SKT = "3c39e727ff1e"


def v1(serial: str, addresses: list[str], port: int = 80, *, enabled: str = "1",
       product_type: str = "HWE-P1", product_name: str = "P1 meter") -> Record:
    txt = {"api_enabled": enabled, "path": "/api/v1", "serial": serial,
           "product_name": product_name, "product_type": product_type}
    return (V1_SERVICE, txt, addresses, port)


def v2(serial: str, addresses: list[str], port: int = 443, *, cert_id: str = "p1dongle",
       product_type: str = "HWE-P1") -> Record:
    txt = {"api_version": "2.0.0", "id": f"appliance/{cert_id}/{serial}", "serial": serial,
           "product_name": "P1 Meter", "product_type": product_type}
    return (V2_SERVICE, txt, addresses, port)


def test_real_socket_txt_record() -> None:
    # PTR _hwenergy._tcp.local -> energysocket-27FF1E._hwenergy._tcp.local (homewizard-api.md §3)
    (dev,) = records_to_devices([v1(SKT, ["192.0.2.7"], product_type="HWE-SKT",
                                    product_name="Energy Socket")])
    assert dev == DiscoveredDevice(
        serial=SKT, product_type="HWE-SKT", product_name="Energy Socket", address="192.0.2.7",
        port=80, api_versions=("v1",), api_enabled=True, cert_id="energysocket")
    assert dev.address_for("v1") == "192.0.2.7:80"
    assert dev.address_for("v2") is None


def test_v1_and_v2_services_of_one_device_merge_by_serial() -> None:
    devices = records_to_devices([
        v2(P1, ["fe80::1", "192.0.2.10"], port=8443),
        v1(SKT, ["192.0.2.7"], enabled="0", product_type="HWE-SKT"),
        v1(P1, ["192.0.2.10"], port=8080),
    ])
    assert [d.serial for d in devices] == [SKT, P1]  # sorted by serial
    p1 = match_serial(devices, P1.upper())
    assert p1 is not None
    assert p1.api_versions == ("v1", "v2")
    assert (p1.address, p1.port, p1.v2_port) == ("192.0.2.10", 8080, 8443)
    assert (p1.cert_id, p1.v2_api_version, p1.api_enabled) == ("p1dongle", "2.0.0", True)
    assert p1.product_name == "P1 Meter"  # first one seen wins; cosmetic anyway
    assert p1.address_for("v1") == "192.0.2.10:8080"
    assert p1.address_for("v2") == "192.0.2.10:8443"
    assert p1.address_for() == "192.0.2.10:8080"
    skt = match_serial(devices, SKT)
    assert skt is not None and skt.api_enabled is False
    assert match_serial(devices, "000000000000") is None


def test_battery_has_only_the_v2_service() -> None:
    (bat,) = records_to_devices([v2(P1, ["192.0.2.20"], cert_id="battery",
                                    product_type="HWE-BAT")])
    assert bat.api_versions == ("v2",)
    assert (bat.port, bat.v2_port, bat.api_enabled) == (443, 443, None)
    assert bat.address_for() == bat.address_for("v2") == "192.0.2.20:443"
    assert bat.address_for("v1") is None


def test_ipv4_preferred_ipv6_only_kept() -> None:
    (dev,) = records_to_devices([v1(P1, ["2001:db8::5", "not-an-ip", "192.0.2.30"])])
    assert dev.address == "192.0.2.30"
    (dev,) = records_to_devices([v1(P1, ["2001:db8::5"])])
    assert dev.address == "2001:db8::5"


def test_unusable_records_are_skipped() -> None:
    bad_serial = v1("not-a-serial", ["192.0.2.1"])
    no_address = v1(P1, [])
    other_service = ("_http._tcp.local.", {"serial": SKT}, ["192.0.2.2"], 80)
    assert records_to_devices([bad_serial, no_address, other_service]) == []


def test_serial_from_the_v2_id_and_service_name_variants() -> None:
    txt = {"api_version": "2.0.0", "id": f"appliance/energymeter/{P1.upper()}"}
    (dev,) = records_to_devices([("_homewizard._tcp", txt, ["192.0.2.3"], 443)])
    assert (dev.serial, dev.cert_id, dev.api_versions) == (P1, "energymeter", ("v2",))
    (dev,) = records_to_devices([("_HWENERGY._tcp.local", {"serial": P1}, ["192.0.2.3"], 80)])
    assert dev.api_versions == ("v1",) and dev.api_enabled is None


def test_advertisement_txt_and_names() -> None:
    assert instance_name(SKT, "HWE-SKT") == "energysocket-27FF1E"
    assert instance_name(P1, "HWE-KWH3") == "kwhmeter-AABBCC"
    assert advertisement_txt(SKT, "HWE-SKT", "v1") == {
        "api_enabled": "1", "path": "/api/v1", "serial": SKT,
        "product_type": "HWE-SKT", "product_name": "Energy Socket"}
    txt2 = advertisement_txt(P1, "HWE-P1", "v2", api_version="2.2.0")
    assert txt2["id"] == f"appliance/p1dongle/{P1}" and txt2["api_version"] == "2.2.0"
    # what we advertise is what we parse back
    (dev,) = records_to_devices([(V1_SERVICE, advertisement_txt(P1, "HWE-P1", "v1",
                                                                api_enabled=False),
                                  ["127.0.0.1"], 8080),
                                 (V2_SERVICE, txt2, ["127.0.0.1"], 8443)])
    assert (dev.product_type, dev.api_enabled, dev.cert_id) == ("HWE-P1", False, "p1dongle")
    assert dev.address_for("v2") == "127.0.0.1:8443"


def test_advertisement_is_lazy_and_defaults_to_its_own_address() -> None:
    ad = Advertisement(P1, "HWE-P1", 8443, "127.0.0.1", api="v2")  # nothing is sent before enter
    assert ad.service == V2_SERVICE and ad.interfaces == ["127.0.0.1"]
    assert ad.instance == "p1meter-AABBCC"


def test_importing_discovery_does_not_import_zeroconf() -> None:
    code = "import sys, hw_picollector.discovery; print('zeroconf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "False"
