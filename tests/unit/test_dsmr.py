"""DSMR 5.0 telegrams from the simulator: framing, CRC16/ARC, values that match the measurement."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

# isort: split
from hw_picollector_simulator import dsmr
from hw_picollector_simulator.model import DeviceModel

SUMMER_NOON = datetime(2026, 6, 24, 11, 40, tzinfo=UTC).timestamp()  # a Wednesday
WINTER_NIGHT = datetime(2026, 1, 14, 2, 0, tzinfo=UTC).timestamp()


def _crc16_arc_bitwise(data: bytes) -> int:
    """An independent, bit-by-bit CRC16/ARC (reflected poly 0x8005 = 0xA001, init 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _p1(pred: object = None) -> DeviceModel:
    """A P1 model whose serial gives the wanted properties (3-phase with gas by default)."""
    for n in range(500):
        model = DeviceModel(f"3c39e7{n:06x}", "HWE-P1")
        if pred is None and model.phases == 3 and model.has_gas:
            return model
        if callable(pred) and pred(model):
            return model
    raise AssertionError("no serial with the wanted properties")


def _fields(telegram: str) -> dict[str, str]:
    return dict(re.findall(r"^(\d-\d:[\d.]+)\((.*)\)\r$", telegram, re.MULTILINE))


@pytest.mark.parametrize(
    ("data", "crc"),
    [(b"123456789", 0xBB3D), (b"", 0x0000), (b"A", 0x30C0)],
)
def test_crc16_matches_the_catalogued_crc16_arc(data: bytes, crc: int) -> None:
    assert dsmr.crc16(data) == crc
    assert _crc16_arc_bitwise(data) == crc


def test_telegram_is_framed_crlf_and_its_crc_validates() -> None:
    telegram = dsmr.telegram(_p1().measurement(SUMMER_NOON))
    assert telegram.startswith("/ISK5\\2M550T-1012\r\n\r\n")
    assert "\n" not in telegram.replace("\r\n", "")
    frame, crc = telegram.rstrip("\r\n").rsplit("!", 1)
    assert re.fullmatch(r"[0-9A-F]{4}", crc)
    assert int(crc, 16) == _crc16_arc_bitwise((frame + "!").encode())
    assert dsmr.verify(telegram)


def test_verify_rejects_any_change() -> None:
    telegram = dsmr.telegram(_p1().measurement(SUMMER_NOON))
    assert not dsmr.verify(telegram.replace("1-0:1.8.1(0", "1-0:1.8.1(1"))
    assert not dsmr.verify(telegram.replace("\r\n", "\n"))
    assert not dsmr.verify(telegram.split("!")[0])
    assert not dsmr.verify("no telegram at all")


def test_values_match_the_measurement() -> None:
    model = _p1()
    m = model.measurement(SUMMER_NOON)
    f = _fields(dsmr.telegram(m))
    assert f["1-3:0.2.8"] == "50"
    assert f["0-0:96.1.1"] == m["unique_id"]
    assert float(f["1-0:1.8.1"].removesuffix("*kWh")) == m["energy_import_t1_kwh"]
    assert float(f["1-0:2.8.2"].removesuffix("*kWh")) == m["energy_export_t2_kwh"]
    assert int(f["0-0:96.14.0"]) == m["tariff"]
    net_kw = float(f["1-0:1.7.0"][:-3]) - float(f["1-0:2.7.0"][:-3])
    assert net_kw == pytest.approx(m["power_w"] / 1000, abs=1e-9)
    for n, (volt, amp, imp, exp) in {
        1: ("32", "31", "21", "22"),
        3: ("72", "71", "61", "62"),
    }.items():
        assert float(f[f"1-0:{volt}.7.0"][:-2]) == m[f"voltage_l{n}_v"]
        assert int(f[f"1-0:{amp}.7.0"][:-2]) == round(abs(m[f"current_l{n}_a"]))
        phase_kw = float(f[f"1-0:{imp}.7.0"][:-3]) - float(f[f"1-0:{exp}.7.0"][:-3])
        assert phase_kw == pytest.approx(m[f"power_l{n}_w"] / 1000, abs=1e-9)
    gas = m["external"][0]
    stamp, value = re.fullmatch(r"(\d{12}[SW])\)\((.*)\*m3", f["0-1:24.2.1"]).groups()  # type: ignore[union-attr]
    assert float(value) == gas["value"]
    assert stamp == dsmr.dsmr_timestamp(gas["timestamp"])


def test_timestamps_carry_the_dst_flag() -> None:
    assert dsmr.dsmr_timestamp("2026-06-24T13:40:00") == "260624134000S"
    assert dsmr.dsmr_timestamp("2026-01-14T03:00:00") == "260114030000W"
    f = _fields(dsmr.telegram(_p1().measurement(WINTER_NIGHT)))
    assert f["0-0:1.0.0"] == "260114030000W"  # meter-local time: UTC+1 in winter


def test_single_phase_meter_has_only_l1_lines() -> None:
    model = _p1(lambda m: m.phases == 1 and not m.has_gas)
    telegram = dsmr.telegram(model.measurement(SUMMER_NOON))
    f = _fields(telegram)
    assert "1-0:21.7.0" in f and "1-0:32.7.0" in f
    assert not {"1-0:41.7.0", "1-0:61.7.0", "1-0:52.7.0", "1-0:72.7.0"} & f.keys()
    assert "0-1:24.2.1" not in f
    assert dsmr.verify(telegram)
