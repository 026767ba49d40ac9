"""JSON bodies as the devices write them: v1 names, number formats, old-firmware nulls.

Floats are written with three decimals (``"active_power_w":203.000``), integers as integers.
On v1, newer firmware also writes counts as floats (``"voltage_sag_l1_count":12.000``) and
keeps identifiers integral (``wifi_strength``, ``smr_version``, ``active_tariff``, timestamps).
Old firmware (the ``nulls`` fault) sends ``null`` for absent phases, voltage and gas, and here
writes every number, integers included, as ``12.000``: clients must parse numbers as floats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hw_picollector.catalog import ProductType

_V1_RENAMES = {
    "protocol_version": "smr_version",
    "tariff": "active_tariff",
    "average_power_15m_w": "active_power_average_w",
    "monthly_power_peak_w": "montly_power_peak_w",  # sic: the typo is part of v1
    "monthly_power_peak_timestamp": "montly_power_peak_timestamp",
}
_ACTIVE = ("power", "voltage", "current", "apparent_", "reactive_", "frequency")
_V1_INTEGERS = ("wifi_strength", "smr_version", "active_tariff", "cycles")
_OLD_FIRMWARE_NULLS = ("voltage_v", "active_voltage_v", "total_gas_m3", "gas_timestamp")
_SKT_V1_MISSING = ("active_apparent_current_a", "active_reactive_current_a")


def dumps(value: Any, all_floats: bool = False) -> str:
    """Compact JSON; floats (and with ``all_floats`` integers too) as ``12.000``."""
    if isinstance(value, Mapping):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k))}:{dumps(v, all_floats)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v, all_floats) for v in value) + "]"
    if isinstance(value, float) or (all_floats and type(value) is int):
        return f"{value:.3f}"
    return json.dumps(value)


def v1_stamp(iso: str) -> int:
    """``2024-06-28T14:12:34`` -> ``240628141234`` (v1 meter-local timestamps)."""
    return int(iso[2:4] + iso[5:7] + iso[8:10] + iso[11:13] + iso[14:16] + iso[17:19])


def v1_name(name: str) -> str:
    """The v1 ``/api/v1/data`` name of a v2 measurement field."""
    if name in _V1_RENAMES:
        return _V1_RENAMES[name]
    if name.startswith("energy_"):
        return "total_power_" + name.removeprefix("energy_")
    if name.startswith(_ACTIVE) and not name.endswith("_count"):  # sag/swell counts keep theirs
        return "active_" + name
    return name


def to_v1(m: Mapping[str, Any], product_type: str, wifi_strength: int) -> dict[str, Any]:
    """The v1 ``/api/v1/data`` payload for the v2-style measurement ``m``."""
    out: dict[str, Any] = {"wifi_ssid": "Simulated Wi-Fi", "wifi_strength": wifi_strength}
    kwh_like = "energy_import_kwh" in m and "energy_import_t1_kwh" not in m  # kWh, socket
    for key, value in m.items():
        if key in ("timestamp", "external"):  # v1 has no telegram time; gas comes below
            continue
        name = v1_name(key)
        if name in _SKT_V1_MISSING and product_type == ProductType.SKT:
            continue
        out[name] = float(value) if type(value) is int and name not in _V1_INTEGERS else value
        if kwh_like and key in ("energy_import_kwh", "energy_export_kwh"):
            out[name.replace("_kwh", "_t1_kwh")] = value  # repeated as T1
        if kwh_like and key == "power_w" and "power_l1_w" not in m:
            out["active_power_l1_w"] = value  # and a single phase as L1
    externals = m.get("external") or []
    gas = next((e for e in externals if e.get("type") == "gas_meter"), None)
    if gas is not None:
        out["total_gas_m3"] = gas["value"]
        out["gas_timestamp"] = v1_stamp(gas["timestamp"])
        out["gas_unique_id"] = gas["unique_id"]
    if externals:
        out["external"] = [{**e, "timestamp": v1_stamp(e["timestamp"])} for e in externals]
    if "total_liter_m3" in m:
        out["total_liter_offset_m3"] = 0.0
    return out


def nullify(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Old firmware: ``null`` for phases 2 and 3, single-phase voltage, and gas."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if "_l2" in key or "_l3" in key or key in _OLD_FIRMWARE_NULLS:
            out[key] = None
        elif key == "external":
            out[key] = [{**e, "value": None, "timestamp": None} for e in value]
        elif key != "gas_unique_id":
            out[key] = value
        if key.endswith("power_l1_w"):  # a 1-phase meter still names the other phases
            for n in (2, 3):
                out.setdefault(key.replace("_l1_", f"_l{n}_"), None)
    return out
