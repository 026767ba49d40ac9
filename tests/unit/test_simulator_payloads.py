"""v1 names and the devices' JSON number formats, as the simulator writes them."""

from __future__ import annotations

import json

import pytest

# isort: split
from hw_picollector_simulator.payloads import dumps, nullify, to_v1, v1_name, v1_stamp


@pytest.mark.parametrize(
    ("v2", "v1"),
    [
        ("protocol_version", "smr_version"),
        ("tariff", "active_tariff"),
        ("energy_import_kwh", "total_power_import_kwh"),
        ("energy_export_t2_kwh", "total_power_export_t2_kwh"),
        ("power_l3_w", "active_power_l3_w"),
        ("voltage_v", "active_voltage_v"),
        ("current_l1_a", "active_current_l1_a"),
        ("apparent_current_l2_a", "active_apparent_current_l2_a"),
        ("reactive_power_var", "active_reactive_power_var"),
        ("power_factor_l1", "active_power_factor_l1"),
        ("frequency_hz", "active_frequency_hz"),
        ("average_power_15m_w", "active_power_average_w"),
        ("monthly_power_peak_w", "montly_power_peak_w"),  # the v1 typo
        ("voltage_sag_l1_count", "voltage_sag_l1_count"),
        ("any_power_fail_count", "any_power_fail_count"),
        ("unique_id", "unique_id"),
    ],
)
def test_v1_names(v2: str, v1: str) -> None:
    assert v1_name(v2) == v1


def test_numbers_are_written_like_the_devices_write_them() -> None:
    value = {"a": 203.0, "b": 50, "c": None, "d": True, "e": [1.5, "x"], "f": -0.092}
    assert (
        dumps(value)
        == '{"a":203.000,"b":50,"c":null,"d":true,"e":[1.500,"x"],"f":-0.092}'
    )
    assert dumps(value, all_floats=True).startswith(
        '{"a":203.000,"b":50.000,"c":null,"d":true'
    )
    assert json.loads(dumps(value)) == value


def test_v1_stamp() -> None:
    assert v1_stamp("2024-11-06T09:30:06") == 241106093006


def test_p1_payload_moves_gas_to_the_legacy_fields() -> None:
    m = {
        "protocol_version": 50,
        "timestamp": "2024-06-28T14:12:34",
        "tariff": 2,
        "power_w": -543.0,
        "voltage_sag_l1_count": 1,
        "external": [
            {
                "unique_id": "AB",
                "type": "gas_meter",
                "timestamp": "2024-06-28T14:10:00",
                "value": 2569.646,
                "unit": "m3",
            }
        ],
    }
    v1 = to_v1(m, "HWE-P1", 78)
    assert (
        v1["wifi_strength"] == 78
        and v1["smr_version"] == 50
        and v1["active_tariff"] == 2
    )
    assert "timestamp" not in v1
    assert v1["voltage_sag_l1_count"] == 1.0 and isinstance(
        v1["voltage_sag_l1_count"], float
    )
    assert (v1["total_gas_m3"], v1["gas_timestamp"], v1["gas_unique_id"]) == (
        2569.646,
        240628141000,
        "AB",
    )
    assert v1["external"][0]["timestamp"] == 240628141000
    body = dumps(v1)
    assert '"voltage_sag_l1_count":1.000' in body and '"smr_version":50,' in body


def test_kwh_payload_repeats_totals_as_t1_and_l1() -> None:
    v1 = to_v1(
        {"energy_import_kwh": 1.5, "energy_export_kwh": 0.0, "power_w": 12.0},
        "HWE-KWH1",
        60,
    )
    assert list(v1)[2:] == [
        "total_power_import_kwh",
        "total_power_import_t1_kwh",
        "total_power_export_kwh",
        "total_power_export_t1_kwh",
        "active_power_w",
        "active_power_l1_w",
    ]
    assert v1["total_power_import_t1_kwh"] == 1.5 and v1["active_power_l1_w"] == 12.0


def test_nulls_mimic_old_firmware() -> None:
    old = nullify(
        {
            "active_power_w": -892.0,
            "active_power_l1_w": -892.0,
            "total_gas_m3": 1.0,
            "gas_timestamp": 220930133000,
            "gas_unique_id": "X",
            "active_voltage_l2_v": 230.0,
        }
    )
    assert old == {
        "active_power_w": -892.0,
        "active_power_l1_w": -892.0,
        "active_power_l2_w": None,
        "active_power_l3_w": None,
        "total_gas_m3": None,
        "gas_timestamp": None,
        "active_voltage_l2_v": None,
    }
