#!/usr/bin/env python3
"""Generate the example sites workbooks (the committed .xlsx files are built from this source).

    .venv/bin/python files/make_example_workbooks.py [OUTDIR]     # default: this folder

- ``users_config.example.xlsx``: the two-sheet workbook (``sites``, ``devices``) for the demo
  fleet: three active homes on hosts pi1..pi3 whose meters are simulators on 127.0.0.1, plus
  one inactive home to show that it is skipped.
- ``users_config.legacy.example.xlsx``: the same three active homes in the original study's
  single sheet (``user_id``, ``has_pv``, ``configurations``), each ``configurations`` cell in
  one of the spellings ``hwpc sites`` reads (see hw_picollector/sites/legacy.py).

The output is deterministic: fixed document properties and zip timestamps, so re-running on
the same machine gives byte-identical files. Check them with ``hwpc sites check FILE``.
"""

from __future__ import annotations

import io
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.writer.excel import ExcelWriter

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, ROLE_NAMES

HERE = Path(__file__).resolve().parent
EXAMPLE = "users_config.example.xlsx"
LEGACY = "users_config.legacy.example.xlsx"
FIXED_TIME = datetime(2025, 1, 1, 0, 0, 0)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

SITES: list[list[Any]] = [
    ["site_id", "host", "timezone", "active", "notes"],
    ["CDB001", "pi1", "Europe/Amsterdam", True, "demo home with PV: P1 meter and kWh meter"],
    ["CDB002", "pi2", "Europe/Amsterdam", True, "demo home without PV"],
    ["ECH003", "pi3", "Europe/Amsterdam", True, "demo home with PV: 3-phase kWh meter on API v2"],
    ["vde004", "pi4", "Europe/Amsterdam", False, "left the study: inactive sites are not imported"],
]

DEVICES: list[list[Any]] = [
    ["site_id", "serial", "product_type", "role", "address", "api", "label"],
    ["CDB001", "3c39e7a10001", "HWE-P1", "grid", "127.0.0.1:18101", "v1", "meter cupboard"],
    ["CDB001", "3c39e7a10002", "HWE-KWH1", "production", "127.0.0.1:18102", "v1", "PV inverter"],
    ["CDB002", "3c39e7a20001", "HWE-P1", "grid", "127.0.0.1:18103", "v1", None],
    ["ECH003", "3c39e7a30001", "HWE-P1", "grid", "127.0.0.1:18104", "v1", None],
    ["ECH003", "5c2fafa30002", "HWE-KWH3", "production", "127.0.0.1:18105", "v2",
     "PV inverter, 3-phase"],
    ["vde004", "3c39e7a40001", "HWE-P1", "grid", None, "v1", None],
]

LEGACY_ROWS: list[list[Any]] = [
    ["user_id", "has_pv", "configurations"],
    ["CDB001", True, "p1:3c39e7a10001; pv:3c39e7a10002"],
    ["CDB002", False, "['p1:3c39e7a20001']"],
    ["ECH003", True, '[{"serial": "3c39e7a30001", "product_type": "HWE-P1"}, '
                     '{"serial": "5c2fafa30002", "product_type": "HWE-KWH3", "api": "v2", '
                     '"label": "PV inverter, 3-phase"}]'],
]



def _fill(ws: Any, rows: list[list[Any]], widths: list[int]) -> None:
    for row in rows:
        ws.append(row)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for index, width in enumerate(widths):
        ws.column_dimensions[chr(ord("A") + index)].width = width
    ws.freeze_panes = "A2"


def _choices(ws: Any, column: str, values: tuple[str, ...]) -> None:
    """An in-cell drop-down, so a spreadsheet user picks a valid value."""
    rule = DataValidation(type="list", formula1='"' + ",".join(values) + '"', allow_blank=True)
    ws.add_data_validation(rule)
    rule.add(f"{column}2:{column}1000")


def _workbook() -> Workbook:
    wb = Workbook()
    wb.properties.creator = "hw-picollector (files/make_example_workbooks.py)"
    wb.properties.created = FIXED_TIME
    wb.properties.modified = FIXED_TIME
    return wb


def build_example() -> Workbook:
    wb = _workbook()
    sites = wb.active
    sites.title = "sites"
    _fill(sites, SITES, [10, 8, 18, 8, 52])
    _choices(sites, "D", ("TRUE", "FALSE"))
    devices = wb.create_sheet("devices")
    _fill(devices, DEVICES, [10, 15, 14, 12, 17, 5, 22])
    _choices(devices, "C", catalog.product_types())
    _choices(devices, "D", ROLE_NAMES)
    _choices(devices, "F", API_NAMES)
    return wb


def build_legacy() -> Workbook:
    wb = _workbook()
    ws = wb.active
    ws.title = "users"
    _fill(ws, LEGACY_ROWS, [10, 8, 120])
    return wb


def save_deterministic(wb: Workbook, path: Path) -> None:
    """Save with fixed properties and zip timestamps.

    ``Workbook.save`` stamps ``modified`` and every zip member with the current time, so the
    workbook is written through openpyxl's ``ExcelWriter`` and then re-zipped.
    """
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            dst.writestr(member, src.read(info.filename))
    path.write_bytes(out.getvalue())


def main(argv: list[str]) -> int:
    outdir = Path(argv[0]) if argv else HERE
    outdir.mkdir(parents=True, exist_ok=True)
    for name, build in ((EXAMPLE, build_example), (LEGACY, build_legacy)):
        save_deterministic(build(), outdir / name)
        print(f"wrote {outdir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
