"""The simulator's household model: deterministic, physically consistent, restart-safe counters."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

# isort: split
from hw_picollector_simulator.model import DeviceModel

# Wednesday 24 June 2026, 00:00 local (22:00 UTC the day before).
SUMMER_DAY = int(datetime(2026, 6, 23, 22, 0, tzinfo=UTC).timestamp())
SUMMER_NOON = int(datetime(2026, 6, 24, 11, 40, tzinfo=UTC).timestamp())
WINTER_NOON = int(datetime(2026, 12, 16, 11, 40, tzinfo=UTC).timestamp())
SATURDAY = int(datetime(2026, 6, 27, 8, 0, tzinfo=UTC).timestamp())
COUNTERS = (
    "energy_import_t1_kwh",
    "energy_import_t2_kwh",
    "energy_export_t1_kwh",
    "energy_export_t2_kwh",
)


def model_where(
    product_type: str, pred: Callable[[DeviceModel], bool], **kw: Any
) -> DeviceModel:
    """The first model (serials 3c39e7000000, ...) with the wanted properties."""
    for n in range(500):
        model = DeviceModel(f"3c39e7{n:06x}", product_type, **kw)
        if pred(model):
            return model
    raise AssertionError("no serial with the wanted properties")


def run(
    model: DeviceModel, start: float, seconds: int, step: int = 1
) -> list[dict[str, Any]]:
    return [model.measurement(start + s) for s in range(0, seconds, step)]


@pytest.fixture(scope="module")
def pv_day() -> tuple[DeviceModel, list[dict[str, Any]]]:
    """A 3-phase P1 with gas and PV, every second of a sunny-enough summer weekday."""

    def exports(m: DeviceModel) -> bool:
        return (
            m.phases == 3
            and m.has_gas
            and min(x["power_w"] for x in run(m, SUMMER_NOON - 1800, 3600, 60)) < -500
        )

    model = model_where("HWE-P1", exports)
    return model, run(model, SUMMER_DAY, 86400)


def test_values_depend_on_serial_type_and_second_only() -> None:
    a = DeviceModel("5c2fafaabbcc", "HWE-P1", start_ts=SUMMER_NOON - 86400)
    b = DeviceModel("5c2fafaabbcc", "HWE-P1", start_ts=SUMMER_NOON - 7200)
    a.measurement(SUMMER_NOON - 5)
    ma, mb = a.measurement(SUMMER_NOON + 0.2), b.measurement(SUMMER_NOON + 0.9)
    instantaneous = [k for k in ma if not k.startswith(("energy_", "external"))]
    assert {k: ma[k] for k in instantaneous} == {k: mb[k] for k in instantaneous}
    assert DeviceModel("5c2fafaabbcd", "HWE-P1").measurement(SUMMER_NOON) != mb


def test_runs_started_in_the_same_hour_agree_exactly() -> None:
    hour = SUMMER_NOON - SUMMER_NOON % 3600
    a = DeviceModel("5c2fafaabbcc", "HWE-KWH3", start_ts=hour + 10)
    b = DeviceModel("5c2fafaabbcc", "HWE-KWH3", start_ts=hour + 3000)
    run(a, hour + 10, 3000)
    for t in (hour + 3000, hour + 3599, hour + 4000):
        assert a.measurement(t) == b.measurement(t)


def test_counters_only_grow_and_integrate_the_reported_power(pv_day: Any) -> None:
    _, day = pv_day
    for key in (*COUNTERS, "energy_import_kwh", "energy_export_kwh"):
        values = [m[key] for m in day]
        assert all(b >= a for a, b in itertools.pairwise(values)), key
    first, last = day[0], day[-1]
    net_kwh = sum(m["power_w"] for m in day[:-1]) / 3600 / 1000
    growth = (last["energy_import_kwh"] - first["energy_import_kwh"]) - (
        last["energy_export_kwh"] - first["energy_export_kwh"]
    )
    assert growth == pytest.approx(net_kwh, abs=0.004)
    assert min(m["power_w"] for m in day) < 0 < max(m["power_w"] for m in day)
    for m in day[::97]:
        assert m["energy_import_kwh"] == pytest.approx(
            m["energy_import_t1_kwh"] + m["energy_import_t2_kwh"], abs=1e-9
        )


def test_tariff_1_at_night_and_weekends_2_by_day(pv_day: Any) -> None:
    _, day = pv_day
    assert [m["tariff"] for m in day[::3600]] == [1] * 7 + [2] * 16 + [1]
    for a, b in itertools.pairwise(day):
        if a["tariff"] == 1:
            assert b["energy_import_t2_kwh"] == a["energy_import_t2_kwh"]
            assert b["energy_export_t2_kwh"] == a["energy_export_t2_kwh"]
        else:
            assert b["energy_import_t1_kwh"] == a["energy_import_t1_kwh"]
    weekend = run(DeviceModel("5c2fafaabbcc", "HWE-P1"), SATURDAY, 3600, 60)
    assert {m["tariff"] for m in weekend} == {1}


def test_phases_add_up(pv_day: Any) -> None:
    _, day = pv_day
    kwh3 = run(
        DeviceModel("5c2fafaabbcc", "HWE-KWH3", "consumption"), SUMMER_NOON, 3600
    )
    for m in day[::7] + kwh3:
        phases = [m[f"power_l{n}_w"] for n in (1, 2, 3)]
        assert m["power_w"] == pytest.approx(sum(phases), abs=1e-6)
        currents = [m[f"current_l{n}_a"] for n in (1, 2, 3)]
        assert m["current_a"] == pytest.approx(sum(abs(c) for c in currents), abs=1e-6)
        assert all(
            (c < 0) == (p < 0) for c, p in zip(currents, phases, strict=True) if c
        )
    assert all(m["power_w"] == int(m["power_w"]) for m in day)  # P1: whole watts


def test_values_stay_physical(pv_day: Any) -> None:
    _, day = pv_day
    for m in day[::13]:
        assert all(220 < m[f"voltage_l{n}_v"] < 240 for n in (1, 2, 3))
        assert m["timestamp"][:10] == "2026-06-24"
    kwh1 = run(DeviceModel("5c2fafaabbcc", "HWE-KWH1"), SUMMER_NOON, 600)
    assert all(49.9 < m["frequency_hz"] < 50.1 for m in kwh1)
    assert all(0 < m["power_factor"] <= 1 for m in kwh1)


def test_power_stays_within_the_counter_anchor_bounds(pv_day: Any) -> None:
    """The restart guarantee rests on these bounds (see test_a_restart_never_goes_backwards)."""
    model, day = pv_day
    for s in range(0, 86400, 3):
        imp, exp = model.max_rates(SUMMER_DAY + s)
        assert -exp <= day[s]["power_w"] <= imp
    for kind, role in [
        ("HWE-SKT", None),
        ("HWE-KWH3", "consumption"),
        ("HWE-BAT", None),
    ]:
        other = DeviceModel("5c2fafaabbcc", kind, role)
        for s in range(0, 86400, 17):
            imp, exp = other.max_rates(SUMMER_DAY + s)
            assert -exp <= other.measurement(SUMMER_DAY + s)["power_w"] <= imp


@pytest.mark.parametrize(
    "kind", ["HWE-P1", "HWE-KWH1", "HWE-SKT", "HWE-BAT", "HWE-WTR"]
)
def test_a_restart_never_goes_backwards(kind: str) -> None:
    start, stop = SUMMER_DAY + 17 * 3600, SUMMER_DAY + 22 * 3600 + 1234
    first = DeviceModel("5c2fafaabbcc", kind, start_ts=start)
    run(first, start, stop - start, 10)
    restarted = DeviceModel("5c2fafaabbcc", kind, start_ts=stop)
    keys = [k for k in first.measurement(stop) if k.startswith(("energy_", "total_"))]
    for t in range(stop, stop + 3600, 30):
        before, after = first.measurement(t), restarted.measurement(t)
        assert all(after[k] >= before[k] for k in keys), (t, keys)


def test_production_meter_is_zero_at_night_and_negative_at_noon() -> None:
    for kind in ("HWE-KWH1", "HWE-KWH3", "SDM230-wifi"):
        pv = DeviceModel("5c2fafaabbcc", kind)
        assert pv.role == "production"
        night = run(pv, SUMMER_DAY, 3 * 3600, 5)  # 00:00-03:00 local
        assert {m["power_w"] for m in night} == {0.0}
        assert len({m["energy_export_kwh"] for m in night}) == 1
        for noon in (SUMMER_NOON, WINTER_NOON):
            m = pv.measurement(noon)
            assert m["power_w"] < 0
            later = pv.measurement(noon + 600)
            assert later["energy_export_kwh"] > m["energy_export_kwh"]
            assert later["energy_import_kwh"] == m["energy_import_kwh"]


def test_gas_changes_only_on_5_minute_boundaries(pv_day: Any) -> None:
    _, day = pv_day
    winter = DeviceModel(pv_day[0].serial, "HWE-P1")
    samples = day[: 2 * 3600] + run(winter, WINTER_NOON - 7200, 4 * 3600)
    changes = 0
    for a, b in itertools.pairwise(samples):
        ga, gb = a["external"][0], b["external"][0]
        assert gb["timestamp"][-4:] in ("0:00", "5:00")
        assert gb["timestamp"] <= b["timestamp"]
        if gb != ga and a["timestamp"][:10] == b["timestamp"][:10]:
            changes += 1
            assert (
                b["timestamp"][-4:] in ("0:00", "5:00")
                and gb["timestamp"] == b["timestamp"]
            )
            assert gb["value"] >= ga["value"]
    assert changes >= 20


def test_battery_charges_by_day_and_discharges_in_the_evening() -> None:
    bat = DeviceModel("5c2fafaabbcc", "HWE-BAT")
    day = run(bat, SUMMER_DAY, 86400, 60)
    socs = [m["state_of_charge_pct"] for m in day]
    assert all(10 <= s <= 100 for s in socs)
    noon = day[12 * 60]  # 12:00 local: charging
    evening = day[20 * 60]
    assert noon["power_w"] > 0 and evening["power_w"] < 0
    for a, b in itertools.pairwise(day):
        assert b["energy_import_kwh"] >= a["energy_import_kwh"]
        assert b["cycles"] >= a["cycles"]
        if a["power_w"] > 10 and b["power_w"] > 10:
            assert b["state_of_charge_pct"] > a["state_of_charge_pct"]


def test_water_meter_total_integrates_the_flow() -> None:
    water = model_where("HWE-WTR", lambda m: True)
    morning = run(water, SUMMER_DAY + 6 * 3600, 3 * 3600)  # 06:00-09:00 local
    assert max(m["active_liter_lpm"] for m in morning) > 0
    liters = sum(m["active_liter_lpm"] for m in morning[:-1]) / 60
    growth = morning[-1]["total_liter_m3"] - morning[0]["total_liter_m3"]
    assert growth * 1000 == pytest.approx(liters, abs=1.0)


def test_payload_names_match_the_v2_documentation() -> None:
    doc_kwh1 = {
        "energy_import_kwh",
        "energy_export_kwh",
        "power_w",
        "voltage_v",
        "current_a",
        "apparent_current_a",
        "reactive_current_a",
        "apparent_power_va",
        "reactive_power_var",
        "power_factor",
        "frequency_hz",
    }
    doc_bat = {
        "energy_import_kwh",
        "energy_export_kwh",
        "power_w",
        "voltage_v",
        "current_a",
        "frequency_hz",
        "cycles",
        "state_of_charge_pct",
    }
    assert (
        set(DeviceModel("5c2fafaabbcc", "HWE-KWH1").measurement(SUMMER_NOON))
        == doc_kwh1
    )
    assert (
        set(DeviceModel("5c2fafaabbcc", "HWE-BAT").measurement(SUMMER_NOON)) == doc_bat
    )
    kwh3 = set(DeviceModel("5c2fafaabbcc", "HWE-KWH3").measurement(SUMMER_NOON))
    assert {
        "power_l3_w",
        "voltage_l2_v",
        "apparent_power_l1_va",
        "power_factor_l3",
    } <= kwh3
    assert "power_factor" not in kwh3 and "voltage_v" not in kwh3
    p1 = model_where("HWE-P1", lambda m: m.phases == 1 and m.has_gas).measurement(
        SUMMER_NOON
    )
    assert {
        "protocol_version",
        "timestamp",
        "tariff",
        "energy_import_t2_kwh",
        "power_l1_w",
        "voltage_l1_v",
        "current_a",
        "voltage_sag_l1_count",
        "external",
    } <= set(p1)
    assert "power_l2_w" not in p1
    assert (
        p1["external"][0]["type"] == "gas_meter" and p1["external"][0]["unit"] == "m3"
    )


def test_clock_jumps_reanchor_deterministically() -> None:
    model = DeviceModel("5c2fafaabbcc", "HWE-SKT")
    model.measurement(SUMMER_NOON)
    back = model.measurement(SUMMER_NOON - 100)  # the clock went back
    assert back == DeviceModel("5c2fafaabbcc", "HWE-SKT").measurement(SUMMER_NOON - 100)
    later = model.measurement(
        SUMMER_NOON + 5 * 3600
    )  # a long pause: jump, never backwards
    assert later == DeviceModel("5c2fafaabbcc", "HWE-SKT").measurement(
        SUMMER_NOON + 5 * 3600
    )
    assert later["energy_import_kwh"] >= back["energy_import_kwh"]


def test_roles_are_checked() -> None:
    with pytest.raises(ValueError, match="cannot have role"):
        DeviceModel("5c2fafaabbcc", "HWE-P1", "production")
    with pytest.raises(ValueError, match="unknown product type"):
        DeviceModel("5c2fafaabbcc", "HWE-XYZ")
    assert (
        DeviceModel("5c2fafaabbcc", "HWE-KWH1", "consumption").measurement(SUMMER_NOON)[
            "power_w"
        ]
        > 0
    )
