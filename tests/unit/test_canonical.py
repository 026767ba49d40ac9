"""Payload → canonical sample, replaying every payload of homewizard-api.md §5."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hw_picollector.catalog import product_types
from hw_picollector.devices.canonical import (
    ALL_COLUMNS,
    TEXT_COLUMNS,
    Sample,
    canonical_name,
    columns,
    payload_api,
    timestamp,
    to_sample,
)
from hw_picollector.devices.client import parse_info

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"

# measurement fixture → product type
MEASUREMENTS = {
    "v1/HWE-P1-real-2024": "HWE-P1",
    "v1/HWE-P1-real-2022-nulls": "HWE-P1",
    "v1/HWE-P1-all-fields": "HWE-P1",
    "v1/HWE-SKT-11-fw303": "HWE-SKT",
    "v1/HWE-SKT-21": "HWE-SKT",
    "v1/HWE-KWH1": "HWE-KWH1",
    "v1/HWE-KWH3": "HWE-KWH3",
    "v1/HWE-WTR": "HWE-WTR",
    "v1/HWE-WTR-doc": "HWE-WTR",
    "v2/HWE-P1-3phase-gas-water": "HWE-P1",
    "v2/HWE-P1-1phase": "HWE-P1",
    "v2/HWE-KWH1": "HWE-KWH1",
    "v2/HWE-KWH3": "HWE-KWH3",
    "v2/HWE-BAT": "HWE-BAT",
}
# Non-measurement payloads of §5 (GET /api is checked below; the rest are other endpoints).
OTHER = {
    "v1/api-HWE-P1", "v1/api-HWE-SKT", "v1/api-HWE-KWH3", "v1/api-HWE-WTR",
    "v1/state-get", "v1/state-put-response", "v1/system", "v1/identify",
    "v1/error-api-disabled", "v2/api-HWE-P1", "v2/api-HWE-KWH3", "v2/api-HWE-BAT",
    "v2/system-HWE-P1", "v2/system-HWE-BAT", "v2/batteries-2.1.0", "v2/batteries-2.2.0",
    "v2/batteries-2.3.0", "v2/user-creation-not-enabled", "v2/user-token",
    "v2/user-unauthorized", "v2/user-list",
}


def load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def sample(name: str) -> Sample:
    return to_sample(MEASUREMENTS[name], load(name))


def test_every_fixture_is_accounted_for() -> None:
    on_disk = {str(p.relative_to(PAYLOADS).with_suffix("")) for p in PAYLOADS.rglob("*.json")}
    assert on_disk == set(MEASUREMENTS) | OTHER
    assert len(on_disk) == 35  # every JSON block of §5


def test_floats_and_nulls_are_kept_verbatim_in_the_fixtures() -> None:
    raw = (PAYLOADS / "v1/HWE-P1-real-2024.json").read_text()
    assert '"active_power_w":203.000' in raw and '"voltage_sag_l1_count":12.000' in raw
    assert '"active_power_l2_w":null' in (PAYLOADS / "v1/HWE-P1-real-2022-nulls.json").read_text()


# --- columns ---------------------------------------------------------------------------------


def test_all_columns_is_the_ordered_union() -> None:
    assert len(set(ALL_COLUMNS)) == len(ALL_COLUMNS)
    union = {c for ptype in product_types() for c in columns(ptype)}
    assert union == set(ALL_COLUMNS)
    for ptype in product_types():
        cols = columns(ptype)
        assert list(cols) == sorted(cols, key=ALL_COLUMNS.index)
    assert {"gas_ts"} == TEXT_COLUMNS


def test_columns_per_type() -> None:
    p1 = columns("HWE-P1")
    assert p1[:2] == ("tariff", "energy_import_kwh")
    assert {"energy_import_t4_kwh", "energy_export_t4_kwh", "voltage_l3_v", "gas_m3", "gas_ts",
            "water_m3", "monthly_power_peak_w", "average_power_15m_w",
            "wifi_strength_pct", "long_power_fail_count"} <= set(p1)
    assert "voltage_v" not in p1 and "state_of_charge_pct" not in p1
    assert columns("HWE-KWH1") == columns("SDM230-wifi")
    assert columns("HWE-KWH3") == columns("SDM630-wifi")
    assert {"power_factor_l3", "reactive_power_l2_var", "apparent_current_l1_a"} <= set(
        columns("HWE-KWH3"))
    assert "power_factor" not in columns("HWE-KWH3")
    assert columns("HWE-WTR") == ("water_m3", "water_flow_lpm", "water_offset_m3",
                                  "wifi_strength_pct")
    assert {"state_of_charge_pct", "cycles"} <= set(columns("HWE-BAT"))
    assert "wifi_strength_pct" not in columns("HWE-BAT")  # v2 only: not in the measurement
    with pytest.raises(ValueError, match="HWE-XYZ"):
        columns("HWE-XYZ")


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_every_measurement_maps_onto_its_columns(name: str) -> None:
    result = sample(name)
    assert result.values, name
    assert set(result.values) <= set(columns(MEASUREMENTS[name]))
    for column, value in result.values.items():
        assert isinstance(value, str if column in TEXT_COLUMNS else float), (column, value)
    assert all(type(v) is float for v in result.extra.values())


# --- v1 payloads -------------------------------------------------------------------------------


def test_p1_real_capture_2024() -> None:
    s = sample("v1/HWE-P1-real-2024")
    v = s.values
    assert v["power_w"] == 203.0
    assert v["energy_import_kwh"] == 18664.997
    assert v["energy_import_t2_kwh"] == 7755.273
    assert v["energy_export_t1_kwh"] == 4243.981
    assert v["gas_m3"] == 5175.363
    assert v["gas_ts"] == "2024-11-06T09:30:06"
    assert v["tariff"] == 2.0
    assert v["current_l1_a"] == -0.092
    assert v["voltage_l3_v"] == 225.0
    assert v["voltage_swell_l1_count"] == 5055.0
    assert v["wifi_strength_pct"] == 78.0
    assert s.extra == {}  # legacy gas and external gas agree: nothing left over
    for dropped in ("wifi_ssid", "meter_model", "unique_id", "smr_version", "protocol_version"):
        assert dropped not in v and dropped not in s.extra


def test_p1_real_capture_2022_nulls_are_absent() -> None:
    s = sample("v1/HWE-P1-real-2022-nulls")
    assert s.values["power_w"] == -892.0
    assert s.values["power_l1_w"] == -892.0
    assert "power_l2_w" not in s.values and "power_l3_w" not in s.values
    assert "energy_import_kwh" not in s.values  # not sent at all
    assert s.values["energy_import_t2_kwh"] == 6114.19
    assert s.values["gas_m3"] == 6937.601
    assert s.values["gas_ts"] == "2022-09-30T13:30:00"
    assert s.extra == {}


def test_p1_all_fields_with_externals() -> None:
    s = sample("v1/HWE-P1-all-fields")
    assert s.values["average_power_15m_w"] == 123.0
    assert s.values["monthly_power_peak_w"] == 1111.0  # from the montly_ typo
    assert s.values["frequency_hz"] == 50.0
    assert s.values["energy_export_kwh"] == 0.0
    # first external gas meter wins (as in v2); the differing legacy reading is kept as extra
    assert s.values["gas_m3"] == 111.111
    assert s.values["gas_ts"] == "2021-06-06T14:00:10"
    assert s.values["water_m3"] == 444.444
    assert s.extra == {
        "heat_meter_m3": 222.222,
        "warm_water_meter_m3": 333.333,
        "inlet_heat_meter_m3": 555.555,
        "total_gas_m3": 2569.646,
    }
    assert "monthly_power_peak_timestamp" not in s.values


def test_socket_old_firmware_and_skt21() -> None:
    old = sample("v1/HWE-SKT-11-fw303")
    assert old.values == {"wifi_strength_pct": 94.0, "energy_import_t1_kwh": 63.651,
                          "energy_export_t1_kwh": 0.0, "power_w": 1457.277,
                          "power_l1_w": 1457.277}
    new = sample("v1/HWE-SKT-21")
    assert new.values["voltage_v"] == 231.539
    assert new.values["power_factor"] == 0.81688
    assert new.values["apparent_power_va"] == 666.768
    assert new.values["reactive_power_var"] == 123.456
    assert new.values["frequency_hz"] == 50.005
    assert new.extra == {}


def test_kwh_meters_v1() -> None:
    one = sample("v1/HWE-KWH1")
    assert one.values["reactive_power_var"] == -58.612
    assert one.values["apparent_current_a"] == 0.447
    assert one.values["power_factor"] == 0.611
    assert one.extra == {}
    three = sample("v1/HWE-KWH3")
    assert three.values["power_l2_w"] == 3547.015
    assert three.values["reactive_current_l3_a"] == 1.143
    assert three.values["reactive_power_l3_var"] == -262.35
    assert three.values["power_factor_l1"] == 1.0
    assert three.values["frequency_hz"] == 49.926
    assert three.extra == {}


def test_watermeter_v1() -> None:
    assert sample("v1/HWE-WTR").values == {
        "wifi_strength_pct": 100.0, "water_flow_lpm": 13.12, "water_m3": 8129.123}
    assert sample("v1/HWE-WTR-doc").values == {
        "wifi_strength_pct": 100.0, "water_m3": 123.456, "water_flow_lpm": 7.2,
        "water_offset_m3": 0.0}


# --- v2 payloads -------------------------------------------------------------------------------


def test_p1_v2_with_gas_and_water() -> None:
    s = sample("v2/HWE-P1-3phase-gas-water")
    assert s.values["tariff"] == 2.0
    assert s.values["power_w"] == -543.0
    assert s.values["current_a"] == 6.0
    assert s.values["gas_m3"] == 2569.646
    assert s.values["gas_ts"] == "2024-06-28T14:00:00"
    assert s.values["water_m3"] == 123.456
    assert s.values["monthly_power_peak_w"] == 1111.0
    assert s.extra == {}
    for dropped in ("timestamp", "protocol_version", "monthly_power_peak_timestamp"):
        assert dropped not in s.values and dropped not in s.extra


def test_v1_and_v2_of_the_same_meter_agree() -> None:
    v1, v2 = sample("v1/HWE-P1-all-fields"), sample("v2/HWE-P1-3phase-gas-water")
    same = ("tariff", "energy_import_kwh", "energy_import_t1_kwh", "power_w", "power_l1_w",
            "current_l1_a", "voltage_sag_l1_count", "any_power_fail_count",
            "average_power_15m_w", "monthly_power_peak_w")
    assert {k: v1.values[k] for k in same} == {k: v2.values[k] for k in same}


def test_other_v2_devices() -> None:
    assert sample("v2/HWE-P1-1phase").values["energy_export_t2_kwh"] == 2876.51
    assert sample("v2/HWE-KWH1").values["energy_export_kwh"] == 78.91
    kwh3 = sample("v2/HWE-KWH3")
    assert kwh3.values["power_factor_l2"] == 0.9
    assert kwh3.values["reactive_current_l1_a"] == -0.2
    bat = sample("v2/HWE-BAT")
    assert bat.values == {
        "energy_import_kwh": 123.456, "energy_export_kwh": 321.654, "power_w": 1234.0,
        "voltage_v": 230.123, "current_a": 5.678, "frequency_hz": 50.123, "cycles": 123.0,
        "state_of_charge_pct": 50.123}


def test_get_api_payloads() -> None:
    infos = {name: parse_info(load(name)) for name in OTHER if "/api-" in name}
    assert len(infos) == 7
    p1 = infos["v1/api-HWE-P1"]
    assert p1 is not None and (p1.serial, p1.product_type, p1.firmware_version,
                               p1.api_version) == ("3c39e7aabbcc", "HWE-P1", "5.18", "v1")
    bat = infos["v2/api-HWE-BAT"]
    assert bat is not None and (bat.product_type, bat.api_version) == ("HWE-BAT", "2.0.0")
    assert all(info is not None and len(info.serial) == 12 for info in infos.values())
    assert parse_info(load("v2/user-unauthorized")) is None
    assert parse_info(load("v2/user-list")) is None


# --- edge cases --------------------------------------------------------------------------------


def test_unknown_numeric_goes_to_extra_bools_and_text_never_numbers() -> None:
    s = to_sample("HWE-P1", {
        "power_w": 12.000, "foo_w": 1.5, "active_bar_w": 2, "flag": True, "power_l1_w": False,
        "note": "hello", "total_power_import_kwh": None, "voltage_l1_v": "230",
    })
    assert s.values == {"power_w": 12.0}
    assert s.extra == {"foo_w": 1.5, "bar_w": 2.0}


def test_known_column_of_another_type_goes_to_extra() -> None:
    s = to_sample("HWE-KWH1", {"power_w": 5, "tariff": 2, "state_of_charge_pct": 40.0})
    assert s.values == {"power_w": 5.0}
    assert s.extra == {"tariff": 2.0, "state_of_charge_pct": 40.0}


@pytest.mark.parametrize("tariff", [0, 5, 7, -1, 2.5, True, "2", None])
def test_tariff_outside_1_to_4_is_ignored(tariff: Any) -> None:
    s = to_sample("HWE-P1", {"active_tariff": tariff, "active_power_w": 1})
    assert "tariff" not in s.values and "tariff" not in s.extra


@pytest.mark.parametrize("tariff", [1, 2, 3, 4.0])
def test_tariff_1_to_4_is_kept(tariff: Any) -> None:
    assert to_sample("HWE-P1", {"tariff": tariff}).values == {"tariff": float(tariff)}


def test_non_finite_and_huge_numbers_are_no_value() -> None:
    s = to_sample("HWE-P1", {"power_w": float("nan"), "power_l1_w": float("inf"),
                             "power_l2_w": 10**400})
    assert s.values == {} and s.extra == {}


def test_gas_edge_cases() -> None:
    no_ts = to_sample("HWE-P1", {"total_gas_m3": 1.5, "gas_timestamp": None})
    assert no_ts.values == {"gas_m3": 1.5}
    bad_ts = to_sample("HWE-P1", {"total_gas_m3": 1.5, "gas_timestamp": 991399999999})
    assert bad_ts.values == {"gas_m3": 1.5}
    no_gas = to_sample("HWE-P1", {"total_gas_m3": None, "gas_timestamp": 241106093006})
    assert no_gas.values == {}
    externals = to_sample("HWE-P1", {"external": [
        "junk", {"type": "gas_meter", "value": None}, {"type": 5, "value": 1},
        {"type": "gas_meter", "timestamp": "2024-06-28T14:00:00", "value": 1.0, "unit": "m3"},
        {"type": "gas_meter", "timestamp": "2024-06-28T14:00:00", "value": 2.0, "unit": "m3"},
        {"type": "heat_meter", "value": 3.0, "unit": "GJ"},
        {"type": "new-meter", "value": 4},
        {"type": "water_meter", "value": True},
    ]})
    assert externals.values == {"gas_m3": 1.0, "gas_ts": "2024-06-28T14:00:00"}
    assert externals.extra == {"gas_meter_2_m3": 2.0, "heat_meter_gj": 3.0,
                               "new_meter_value": 4.0}
    assert to_sample("HWE-P1", {"external": None}).values == {}


def test_water_on_a_kwh_meter_is_extra_and_gas_ts_dropped() -> None:
    s = to_sample("HWE-KWH1", {"external": [
        {"type": "water_meter", "value": 1.0}, {"type": "gas_meter", "value": 2.0,
                                                "timestamp": 241106093006}]})
    assert s.values == {}
    assert s.extra == {"water_m3": 1.0, "gas_m3": 2.0}


@pytest.mark.parametrize(("raw", "expected"), [
    (241106093006, "2024-11-06T09:30:06"),
    (241106093006.0, "2024-11-06T09:30:06"),
    (10101000000, "2001-01-01T00:00:00"),
    ("2024-06-28T14:12:34", "2024-06-28T14:12:34"),
    ("2024-06-28T14:12:34.500", "2024-06-28T14:12:34"),
    (0, None), (-1, None), (241306093006, None), (1e13, None), (2.5, None), (True, None),
    ("yesterday", None), (None, None), ([], None),
])
def test_timestamp(raw: Any, expected: str | None) -> None:
    assert timestamp(raw) == expected


def test_names_and_version_detection() -> None:
    assert canonical_name("total_power_export_t3_kwh") == "energy_export_t3_kwh"
    assert canonical_name("active_reactive_power_l2_var") == "reactive_power_l2_var"
    assert canonical_name("active_power_average_w") == "average_power_15m_w"
    assert canonical_name("montly_power_peak_w") == "monthly_power_peak_w"
    assert canonical_name("active_liter_lpm") == "water_flow_lpm"
    assert canonical_name("power_w") == "power_w"
    for name, ptype in MEASUREMENTS.items():
        assert payload_api(load(name)) == name[:2], (name, ptype)


def test_sample_is_immutable() -> None:
    s = to_sample("HWE-BAT", {"power_w": 1})
    with pytest.raises(AttributeError):
        s.values = {}  # type: ignore[misc]


def test_key_routes_are_remembered_per_type_and_bounded() -> None:
    """to_sample remembers where each payload key goes; the answer never depends on it."""
    payload = load("v1/HWE-P1-real-2024")
    first, again = to_sample("HWE-P1", payload), to_sample("HWE-P1", payload)
    assert first == again
    # the same key is a column for one type and extra for another
    assert to_sample("HWE-KWH1", {"tariff": 2}).extra == {"tariff": 2.0}
    assert to_sample("HWE-P1", {"tariff": 2}).values == {"tariff": 2.0}
    # a device inventing keys forever does not grow memory without bound
    for n in range(2000):
        assert to_sample("HWE-WTR", {f"made_up_{n}_w": 1}).extra == {f"made_up_{n}_w": 1.0}
    from hw_picollector.devices import canonical

    assert len(canonical._ROUTES["HWE-WTR"][1]) <= canonical._ROUTES_MAX
