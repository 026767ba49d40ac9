"""``load(path)``: a workbook file to its checked ``Fleet``, every problem in it found.

A file too big to load is refused first, on its XML (bounds.py); then openpyxl (the
``controller`` extra, imported only here and only when a workbook is loaded, so ``hwpc`` on a
Pi never needs it) reads it, and ``parse_workbook`` picks the layout: the ``sites`` and
``devices`` sheets (check.py) or, when the workbook has neither, the legacy sheet (legacy.py).
An unreadable file is one problem naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from hw_picollector_controller.sites.bounds import _size_problems
from hw_picollector_controller.sites.check import (
    DEVICES_SHEET,
    SITES_SHEET,
    _suggest,
    _two_sheets,
    _zones,
)
from hw_picollector_controller.sites.fleet import Fleet
from hw_picollector_controller.sites.legacy import _legacy, _looks_legacy


def _sheet_map(wb: Any) -> dict[str, str]:
    return {str(name).strip().lower(): str(name) for name in wb.sheetnames}


def parse_workbook(wb: Any, zones: frozenset[str] | None = None) -> Fleet:
    """An openpyxl workbook (loaded with ``data_only=False``) → its fleet and every problem."""
    fleet = Fleet()
    if zones is None:
        zones = _zones()
        if not zones:
            fleet.warnings.append("no time zone database (neither the system's nor the tzdata "
                                  "package): timezones not checked; pip install tzdata")
    sheets = _sheet_map(wb)
    if SITES_SHEET in sheets or DEVICES_SHEET in sheets:
        _two_sheets(wb, sheets, fleet, zones)
    else:
        legacy = [name for name in wb.sheetnames if _looks_legacy(wb[name])]
        if legacy:
            if len(legacy) > 1:
                fleet.warnings.append(f"several legacy sheets ({', '.join(map(repr, legacy))}): "
                                      f"reading {legacy[0]!r} only")
            _legacy(wb[legacy[0]], fleet, zones)
        else:
            present = ", ".join(repr(s) for s in wb.sheetnames)
            fleet.problems.append(
                f"sheets {SITES_SHEET!r} and {DEVICES_SHEET!r}: missing, and no legacy sheet "
                f"(columns user_id, has_pv, configurations) either; the workbook has {present}"
                f"{_suggest(wb.sheetnames[0], [SITES_SHEET, DEVICES_SHEET], cutoff=0.7)}")
    if not fleet.problems:
        with_devices = {d.site_id for d in fleet.devices}
        for site in fleet.active_sites():
            if site.site_id not in with_devices:
                fleet.warnings.append(f"{site.where}: active site {site.site_id!r} has no device")
    return fleet


def _not_a_workbook(path: str, exc: Exception) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        what = ("an old .xls workbook or a password-protected one: save it as an unprotected "
                "Excel Workbook (.xlsx)")
    elif head.startswith(b"PK"):
        what = f"a zip file but not an Excel workbook ({type(exc).__name__}): save it as .xlsx"
    else:
        what = "save it as an Excel Workbook (.xlsx)"
    return f"not an .xlsx workbook: {what}"


def load(path: str | Path) -> Fleet:
    """Read and check a workbook file; an unreadable file is one problem naming it."""
    try:
        import openpyxl
    except ImportError:
        return Fleet(problems=["hwpc sites needs openpyxl: pip install "
                               "'hw-picollector[controller]'"])
    path = str(path)
    too_big = _size_problems(path)
    if too_big:
        return Fleet(problems=too_big)
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wb = openpyxl.load_workbook(fh, data_only=False)
    except OSError as exc:
        return Fleet(problems=[f"cannot read: {exc.strerror or exc}"])
    except Exception as exc:  # openpyxl raises zip, KeyError, XML and value errors alike
        return Fleet(problems=[_not_a_workbook(path, exc)])
    try:
        return parse_workbook(wb)
    finally:
        wb.close()
