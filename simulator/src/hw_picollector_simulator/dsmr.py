"""DSMR 5.0 P1 telegrams built from a v2-style P1 measurement, with a valid CRC16.

A telegram runs from ``/`` to ``!``, followed by the CRC16/ARC (polynomial 0xA001 reflected,
initial value 0) of every byte from ``/`` up to and including ``!`` as four uppercase hex
digits. Lines end in CRLF. Timestamps are meter-local ``YYMMDDhhmmss`` plus ``W`` (winter)
or ``S`` (summer time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

HEADER = "/ISK5\\2M550T-1012"
METER_TZ = ZoneInfo("Europe/Amsterdam")


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC16/ARC as DSMR uses it (``crc16(b"123456789") == 0xBB3D``)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def verify(telegram: str) -> bool:
    """True when ``telegram`` holds a ``/ ... !XXXX`` frame whose CRC matches."""
    match = re.search(r"/[^!]*!([0-9A-Fa-f]{4})", telegram)
    if match is None:
        return False
    frame = telegram[match.start() : match.end() - 4]
    return crc16(frame.encode("ascii", "replace")) == int(match.group(1), 16)


def dsmr_timestamp(iso_local: str) -> str:
    """``2024-06-28T14:12:34`` (meter-local, naive) -> ``240628141234S``."""
    local = datetime.fromisoformat(iso_local)
    dst = local.replace(tzinfo=METER_TZ).dst()
    return local.strftime("%y%m%d%H%M%S") + ("S" if dst else "W")


def _kw(watts: float) -> str:
    return f"{max(watts, 0.0) / 1000:06.3f}*kW"


def telegram(m: Mapping[str, Any]) -> str:
    """The DSMR 5.0 telegram an ISKRA meter would send for P1 measurement ``m``."""
    phases = [n for n in (1, 2, 3) if m.get(f"power_l{n}_w") is not None]
    obis = {1: ("32", "31", "21", "22"), 2: ("52", "51", "41", "42"), 3: ("72", "71", "61", "62")}
    power = float(m.get("power_w") or 0.0)
    lines = [
        HEADER,
        "",
        f"1-3:0.2.8({int(m.get('protocol_version', 50))})",
        f"0-0:1.0.0({dsmr_timestamp(m['timestamp'])})",
        f"0-0:96.1.1({m.get('unique_id', '')})",
        f"1-0:1.8.1({float(m['energy_import_t1_kwh']):010.3f}*kWh)",
        f"1-0:1.8.2({float(m['energy_import_t2_kwh']):010.3f}*kWh)",
        f"1-0:2.8.1({float(m['energy_export_t1_kwh']):010.3f}*kWh)",
        f"1-0:2.8.2({float(m['energy_export_t2_kwh']):010.3f}*kWh)",
        f"0-0:96.14.0({int(m.get('tariff', 1)):04d})",
        f"1-0:1.7.0({_kw(power)})",
        f"1-0:2.7.0({_kw(-power)})",
        f"0-0:96.7.21({int(m.get('any_power_fail_count', 0)):05d})",
        f"0-0:96.7.9({int(m.get('long_power_fail_count', 0)):05d})",
        "1-0:99.97.0(0)(0-0:96.7.19)",
    ]
    lines += [
        f"1-0:{obis[n][0]}.32.0({int(m.get(f'voltage_sag_l{n}_count', 0)):05d})" for n in phases
    ]
    lines += [
        f"1-0:{obis[n][0]}.36.0({int(m.get(f'voltage_swell_l{n}_count', 0)):05d})" for n in phases
    ]
    lines.append("0-0:96.13.0()")
    lines += [f"1-0:{obis[n][0]}.7.0({float(m[f'voltage_l{n}_v']):05.1f}*V)" for n in phases]
    lines += [f"1-0:{obis[n][1]}.7.0({round(abs(m[f'current_l{n}_a'])):03d}*A)" for n in phases]
    lines += [f"1-0:{obis[n][2]}.7.0({_kw(m[f'power_l{n}_w'])})" for n in phases]
    lines += [f"1-0:{obis[n][3]}.7.0({_kw(-m[f'power_l{n}_w'])})" for n in phases]
    for ext in m.get("external") or []:
        if ext.get("type") == "gas_meter" and ext.get("value") is not None:
            lines += [
                "0-1:24.1.0(003)",
                f"0-1:96.1.0({ext.get('unique_id', '')})",
                f"0-1:24.2.1({dsmr_timestamp(ext['timestamp'])})({float(ext['value']):09.3f}*m3)",
            ]
    frame = "\r\n".join(lines) + "\r\n!"
    return f"{frame}{crc16(frame.encode('ascii')):04X}\r\n"
