"""The device catalog: complete and consistent, read by every module, one entry per product."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from openpyxl import Workbook

from hw_picollector import catalog, discovery
from hw_picollector.catalog import (
    PRODUCTS,
    Api,
    Catalog,
    DeviceState,
    Product,
    ProductType,
    Role,
    Verdict,
)
from hw_picollector.config import ConfigError, parse_config
from hw_picollector.devices import canonical, tls
from hw_picollector.devices.errors import DeviceError, InvalidResponse, Unreachable
from hw_picollector_controller import sites
from hw_picollector_simulator import model
from hw_picollector_simulator import tls as sim_tls
from hw_picollector_simulator.server import SimulatedDevice

CATALOG_PY = Path(catalog.__file__)
SERIAL = "5c2fafaabbcc"


# --------------------------------------------------------------------------- the table


def test_every_product_type_has_one_entry_keyed_by_it() -> None:
    assert list(PRODUCTS) == list(ProductType)
    for key, product in PRODUCTS.items():
        assert key == product.product_type
        assert isinstance(product.product_type, ProductType)
    assert {"HWE-DSP", "HWE-BAT", "SDM230-wifi", "SDM630-wifi"} <= set(catalog.product_types())


@pytest.mark.parametrize("product", list(PRODUCTS.values()), ids=lambda p: str(p.product_type))
def test_every_product_is_complete(product: Product) -> None:
    assert product.name and product.name == product.name.strip()
    assert re.fullmatch(r"[a-z0-9]+", product.cert_id)  # what parse_cert_hostname accepts
    assert product.mdns_prefix is None or re.fullmatch(r"[a-z0-9]+", product.mdns_prefix)
    assert isinstance(product.default_role, Role)
    assert product.roles and all(isinstance(r, Role) for r in product.roles)
    assert product.default_role in product.roles
    assert product.apis and all(isinstance(a, Api) for a in product.apis)
    assert product.default_api in product.apis
    assert product.columns <= set(canonical.ALL_COLUMNS)
    assert set(product.phases) <= {1, 3}
    assert all(a == a.strip() and a for a in product.aliases)
    assert catalog.lookup(product.product_type) is product
    for alias in product.aliases:
        assert catalog.lookup(alias) is product
        assert catalog.lookup(f"  {alias.upper()} ") is product


def test_no_name_means_two_products() -> None:
    folded = [n.strip().lower() for p in PRODUCTS.values() for n in p.names]
    assert len(folded) == len(set(folded))
    one = PRODUCTS[ProductType.KWH1]
    clash = Product(ProductType.KWH3, "x", ("PV",), "energymeter", None, Role.PRODUCTION,
                    (Role.PRODUCTION,), (Api.V1,), frozenset(), (3,))
    with pytest.raises(ValueError, match="'PV' would name both HWE-KWH1 and HWE-KWH3"):
        Catalog({one.product_type: one, clash.product_type: clash})


def test_an_inconsistent_entry_is_refused() -> None:
    base = PRODUCTS[ProductType.P1]
    with pytest.raises(ValueError, match="no API"):
        Catalog({base.product_type: _replace(base, apis=())})
    with pytest.raises(ValueError, match="default role 'water' is not one of its roles"):
        Catalog({base.product_type: _replace(base, default_role=Role.WATER)})
    with pytest.raises(ValueError, match="not its product type"):
        Catalog({"HWE-P2": base})


def test_the_enums() -> None:
    assert catalog.ROLE_NAMES == ("grid", "production", "consumption", "battery", "water")
    assert catalog.API_NAMES == ("v1", "v2")
    assert list(Verdict) == ["ok", "lagging", "stale", "down"]  # best to worst
    assert {"starting", "ok", "error", "unreachable", "timeout", "api_disabled", "unauthorized",
            "serial_mismatch", "invalid_response", "tls_error", "not_running"} <= set(DeviceState)


def test_catalog_imports_nothing_from_the_package() -> None:
    tree = ast.parse(CATALOG_PY.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_members_serialise_as_their_text() -> None:
    """Stored formats do not change: JSON, CSV and f-strings see the plain text."""
    value = {"state": DeviceState.OK, "verdict": Verdict.DOWN, Role.GRID: [Api.V2]}
    assert json.dumps(value, sort_keys=True) == json.dumps(
        {"state": "ok", "verdict": "down", "grid": ["v2"]}, sort_keys=True)
    assert json.dumps(value, indent=2) == json.dumps(
        {"state": "ok", "verdict": "down", "grid": ["v2"]}, indent=2)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([ProductType.P1, Role.GRID])
    assert out.getvalue() == "HWE-P1,grid\n"
    assert f"{ProductType.SDM230}|{Api.V1:>3}" == "SDM230-wifi| v1"
    assert type(str(Verdict.OK)) is str and Verdict.OK == "ok"
    assert {"HWE-BAT": 1}[ProductType.BAT] == 1 and {ProductType.BAT: 1}["HWE-BAT"] == 1


def test_device_errors_carry_catalog_states() -> None:
    assert DeviceError("s", "u", "d").state == DeviceState.ERROR
    assert Unreachable("s", "u", "d").state == DeviceState.UNREACHABLE
    assert InvalidResponse("s", "u", "d").state == DeviceState.INVALID_RESPONSE
    assert InvalidResponse("s", "u", "d", "http_500").state == "http_500"


# --------------------------------------------------------------------------- old disagreements


def test_kwh_meter_names_of_every_table_name_one_product() -> None:
    """discovery said ``kWh Meter 1-Phase``, the simulator ``kWh Meter 1-phase``."""
    for name in ("kWh Meter 1-Phase", "kWh Meter 1-phase", "1-phase", "HWE-KWH1", "hwe-kwh1",
                 "PV"):
        assert catalog.lookup(name) is PRODUCTS[ProductType.KWH1], name
    for name in ("kWh Meter 3-Phase", "kWh meter 3-phase", "3-phase", "hwe-kwh3"):
        assert catalog.lookup(name) is PRODUCTS[ProductType.KWH3], name
    assert catalog.lookup("p1") is PRODUCTS[ProductType.P1]
    assert catalog.lookup("1-phase-ish") is None


def test_the_advertised_name_is_the_reported_name() -> None:
    """discovery's default product name and the simulator's /api answer come from one place."""
    for product_type in ("HWE-P1", "HWE-KWH1", "SDM230-wifi", "HWE-KWH3", "SDM630-wifi",
                         "HWE-SKT", "HWE-WTR"):
        device = SimulatedDevice(product_type, "v1", port=0)
        reported = device._info("v1")["product_name"]
        assert discovery.advertisement_txt(SERIAL, product_type, "v1")["product_name"] == \
            reported == catalog.product(product_type).name


def test_the_display_is_known_everywhere(tmp_path: Path) -> None:
    """HWE-DSP had a certificate id only; config and the workbook refused it."""
    config = parse_config(_config_data("HWE-DSP", api="v2"))
    assert config.devices[0].product_type == "HWE-DSP"
    assert parse_config(_config_data("HWE-DSP")).devices[0].api == "v1"
    assert tls.cert_hostname("HWE-DSP", SERIAL) == f"appliance/display/{SERIAL}"
    assert sim_tls.hostname("HWE-DSP", SERIAL) == f"appliance/display/{SERIAL}"
    assert canonical.columns("HWE-DSP") == ()
    sample = canonical.to_sample("HWE-DSP", {"brightness_pct": 80, "wifi_ssid": "x"})
    assert (sample.values, sample.extra) == ({}, {"brightness_pct": 80.0})
    (dev,) = discovery.records_to_devices([_v2_record("display")])
    assert (dev.product_type, dev.product_name, dev.cert_id) == (
        "HWE-DSP", "Energy Display", "display")
    assert discovery.instance_name(SERIAL, "HWE-DSP") == "hwe-AABBCC"
    fleet = sites.load(_workbook(tmp_path, [["CDB001", SERIAL, "HWE-DSP", "consumption"]]))
    assert fleet.problems == []
    assert [(d.product_type, d.api) for d in fleet.devices] == [("HWE-DSP", "v1")]


def test_the_workbook_takes_every_name_in_any_case(tmp_path: Path) -> None:
    rows = [["CDB001", "3c39e7000001", "P1 METER", "grid"],
            ["CDB001", "3c39e7000002", "kWh Meter 1-Phase", "production"],
            ["CDB001", "3c39e7000003", "1-phase", "production"],
            ["CDB001", "3c39e7000004", "hwe-kwh1", "consumption"],
            ["CDB001", "3c39e7000005", "plug-in battery", "battery"]]
    fleet = sites.load(_workbook(tmp_path, rows))
    assert fleet.problems == []
    assert [(d.product_type, d.api) for d in fleet.devices] == [
        ("HWE-P1", "v1"), ("HWE-KWH1", "v1"), ("HWE-KWH1", "v1"), ("HWE-KWH1", "v1"),
        ("HWE-BAT", "v2")]
    text = sites.render(fleet, "w.xlsx")
    assert "product_type: !unsafe 'HWE-KWH1'" in text and "kWh Meter" not in text
    yaml.safe_load(text.replace("!unsafe ", ""))
    legacy = sites.parse_entry("1-Phase:3c39e7000009:v1", lambda _: None)
    assert (legacy.product_type, legacy.role, legacy.api) == ("HWE-KWH1", "production", "v1")
    unknown = sites.parse_entry("wind:3c39e7000009", lambda _: None)
    assert unknown.problem is not None and "p1, pv, 1-phase, 3-phase" in unknown.problem


def test_api_rules_follow_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HWE-BAT has no API v1"):
        parse_config(_config_data("HWE-BAT", api="v1"))
    # as before: config takes v2 for a v1-only product (the workbook refuses it)
    assert parse_config(_config_data("HWE-SKT", api="v2")).devices[0].api == "v2"
    fleet = sites.load(_workbook(tmp_path, [["CDB001", SERIAL, "Energy Socket", "consumption",
                                             None, "v2"]]))
    assert [p.split(": ", 1)[1] for p in fleet.problems] == [
        "HWE-SKT has no API v2 (v1 only); use v1"]


# --------------------------------------------------------------------------- one entry


class _NewType(StrEnum):
    ZAP = "HWE-ZAP"


ZAP = Product(
    _NewType.ZAP,  # in a real entry, a new member of ProductType
    "Zap Meter", ("Zap Meter", "zap"), "zapmeter", "zapmeter", Role.CONSUMPTION,
    (Role.CONSUMPTION, Role.PRODUCTION), (Api.V2,), frozenset({"power_w", "energy_import_kwh"}),
    (1,))


@pytest.fixture
def with_zap(monkeypatch: pytest.MonkeyPatch) -> Product:
    """The catalog with one more product: the one change adding a product makes."""
    monkeypatch.setattr(catalog, "PRODUCTS", MappingProxyType({**PRODUCTS, ZAP.product_type: ZAP}))
    return ZAP


def test_a_new_product_is_unknown_without_its_entry() -> None:
    assert catalog.get("HWE-ZAP") is None
    with pytest.raises(ConfigError, match="'HWE-ZAP' is not one of"):
        parse_config(_config_data("HWE-ZAP", api="v2"))
    with pytest.raises(ValueError, match="no certificate id"):
        tls.cert_hostname("HWE-ZAP", SERIAL)


@pytest.mark.usefixtures("with_zap")
def test_adding_a_product_is_one_entry(tmp_path: Path) -> None:
    # config validation
    dev = parse_config(_config_data("HWE-ZAP", api="v2")).devices[0]
    assert (dev.product_type, dev.api) == ("HWE-ZAP", "v2")
    with pytest.raises(ConfigError, match="HWE-ZAP has no API v1"):
        parse_config(_config_data("HWE-ZAP", api="v1"))
    # sites import: by an alias, in any case; its default API
    fleet = sites.load(_workbook(tmp_path, [["CDB001", SERIAL, "zap METER", "consumption"]]))
    assert fleet.problems == []
    assert [(d.product_type, d.api) for d in fleet.devices] == [("HWE-ZAP", "v2")]
    assert "product_type: !unsafe 'HWE-ZAP'" in sites.render(fleet, "w.xlsx")
    legacy = sites.parse_entry(f"zap:{SERIAL}", lambda _: None)
    assert (legacy.product_type, legacy.role) == ("HWE-ZAP", "consumption")
    # discovery: matched by the certificate id of a bare v2 record; its names
    (found,) = discovery.records_to_devices([_v2_record("zapmeter")])
    assert (found.product_type, found.product_name, found.api_versions) == (
        "HWE-ZAP", "Zap Meter", ("v2",))
    assert discovery.instance_name(SERIAL, "HWE-ZAP") == "zapmeter-AABBCC"
    txt = discovery.advertisement_txt(SERIAL, "HWE-ZAP", "v2")
    assert (txt["id"], txt["product_name"]) == (f"appliance/zapmeter/{SERIAL}", "Zap Meter")
    # TLS names, the collector's and the simulator's
    assert tls.cert_hostname("HWE-ZAP", SERIAL.upper()) == f"appliance/zapmeter/{SERIAL}"
    assert sim_tls.hostname("HWE-ZAP", SERIAL) == f"appliance/zapmeter/{SERIAL}"
    # canonical columns, in CSV order; the simulator models it by its default role
    assert canonical.columns("HWE-ZAP") == ("energy_import_kwh", "power_w")
    sample = canonical.to_sample("HWE-ZAP", {"active_power_w": 5, "total_power_import_kwh": 2})
    assert sample.values == {"power_w": 5.0, "energy_import_kwh": 2.0}
    assert model.DeviceModel(SERIAL, "HWE-ZAP").role == "consumption"


def test_lookups_over_a_passed_in_table() -> None:
    table = Catalog({ZAP.product_type: ZAP})
    assert table.product_types() == ("HWE-ZAP",)
    assert table.lookup("ZAP") is ZAP and table.lookup("HWE-P1") is None
    assert table.by_cert_id("zapmeter") == (ZAP,)
    with pytest.raises(ValueError, match=r"unknown product type 'HWE-P1' \(known: HWE-ZAP\)"):
        table.product("HWE-P1")


# --------------------------------------------------------------------------- helpers


def _replace(product: Product, **changes: Any) -> Product:
    return Product(**{**product.__dict__, **changes})


def _config_data(product_type: str, api: str | None = None) -> dict[str, Any]:
    device: dict[str, Any] = {"serial": SERIAL, "product_type": product_type, "role": "grid"}
    if api is not None:
        device["api"] = api
    if api == "v2":
        device["token_file"] = "/run/token"
    return {"site_id": "S1", "devices": [device]}


def _v2_record(cert_id: str) -> discovery.Record:
    txt = {"api_version": "2.0.0", "id": f"appliance/{cert_id}/{SERIAL}"}
    return (discovery.V2_SERVICE, txt, ["192.0.2.5"], 443)


def _workbook(tmp_path: Path, devices: list[list[Any]]) -> Path:
    wb = Workbook()
    sites_ws = wb.active
    assert sites_ws is not None
    sites_ws.title = "sites"
    for row in (["site_id", "host"], ["CDB001", "pi1"]):
        sites_ws.append(row)
    devices_ws = wb.create_sheet("devices")
    devices_ws.append(["site_id", "serial", "product_type", "role", "address", "api"])
    for row in devices:
        devices_ws.append(row)
    path = tmp_path / "sites.xlsx"
    wb.save(path)
    return path
