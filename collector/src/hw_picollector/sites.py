"""`hwpc sites check|import`: the sites workbook, checked and turned into an Ansible inventory.

Runs on the controller only (openpyxl is the ``controller`` extra and is imported lazily, so
``hwpc`` on a Pi never needs it).

The workbook (``.xlsx``)
========================

Two sheets; header in row 1; columns in any order; header names are compared
case-insensitively with surrounding spaces stripped; blank rows are ignored.

``sites``, one row per home (one Raspberry Pi per home):

- ``site_id`` (required): letters, digits, ``_ . -``; unique (compared case-insensitively).
- ``host`` (required for an active site): the Pi's Ansible inventory hostname
  (``pi1``, ``pi-cdb001.example.org``); unique among active sites.
- ``timezone`` (optional): an IANA name such as ``Europe/Amsterdam``.
- ``active`` (optional): TRUE/FALSE, yes/no, 1/0; blank means TRUE. Inactive sites are checked
  but left out of the inventory.
- ``notes`` (optional): free text, never exported.

``devices``, one row per meter:

- ``site_id`` (required): a site of the ``sites`` sheet.
- ``serial`` (required): 12 lowercase hex characters, unique in the workbook.
- ``product_type`` (required): a product type of the catalog (``HWE-P1``, ``HWE-KWH1`` ...)
  or another name the catalog gives it (``P1 Meter``, ``kWh Meter 1-Phase``, ``pv`` ...),
  in any case; the inventory gets the product type.
- ``role`` (required): ``grid``, ``production``, ``consumption``, ``battery`` or ``water``.
- ``api`` (optional): ``v1`` or ``v2``; blank means v1 (v2 for ``HWE-BAT``, which has no v1).
  ``HWE-SKT`` and ``HWE-WTR`` have no v2 (the catalog's ``Product.apis``).
- ``address`` (optional): ``host[:port]``; blank leaves the device to mDNS discovery.
- ``label`` (optional): free text, exported.

Anything else is refused or ignored: a column that looks like a secret (its name contains
token, password, secret, credential, api key ...) is a problem, because the inventory must
never carry one (tokens live in ``host_vars/<host>/vault.yml``, ansible-vault encrypted); a
column whose name is close to an expected one is a problem ("did you mean"); any other column
is ignored with a warning. Formula cells, error cells and merged cells in data rows are
problems: the importer reads what is typed, not what a formula would compute.

Also refused:

- Ansible template syntax (``{{``, ``{%``, ``{#``) in any cell: Ansible would evaluate it when
  it reads the inventory (and the inventory marks every string ``!unsafe`` anyway).
- Two site ids with the same Cassandra login role, ``pi_`` and the site id in lowercase with
  every character other than ``a-z``, ``0-9`` and ``_`` as ``_`` (``CDB-001`` and ``CDB.001``
  are both ``pi_cdb_001``; the rule of the collector role's ``hwpc_cassandra_username``), and
  a site id whose login would be longer than a role name may be (48 characters).
- A sheet whose cells (values, formatting, merged ranges, hyperlinks, comments) reach beyond
  row 10,000 or column 50 (AX), a workbook of more than 100,000 cells in all or 100 MB
  uncompressed: checked on the file's XML before the workbook is loaded, so a stray cell at
  row 1,000,000 costs nothing.
- Timezones are checked against the IANA database of the ``tzdata`` package (a dependency of
  the ``controller`` extra), so the check does not depend on the machine's own database.

The legacy sheet of the original study
--------------------------------------

A workbook with neither ``sites`` nor ``devices`` is read as the original single sheet: the
first sheet whose header has ``user_id``, ``has_pv`` or ``configurations``. One row per home:

- ``user_id`` (required): the site id.
- ``has_pv`` (optional column): TRUE/FALSE, yes/no, 1/0; blank means FALSE. When TRUE the home
  must have a production meter; when FALSE it must not.
- ``configurations`` (required): the home's installations. Every meter needs its serial
  (devices are identified by serial, and their addresses are left to mDNS discovery, so an
  entry without a serial cannot be imported and is reported). Accepted spellings, which may
  be mixed inside one list:

  * short entries separated by ``;``, ``,`` or line breaks, optionally written as a
    Python/JSON list of strings: ``p1:3c39e7aabbcc; pv:3c39e7aabbdd`` or
    ``['p1:3c39e7aabbcc', 'pv:3c39e7aabbdd']``. The form is ``KIND:SERIAL[:API]``, where
    ``KIND`` is ``p1`` (an HWE-P1, role grid), ``pv`` (an HWE-KWH1, role production), a
    product type (``HWE-KWH3:5c2fafaabbcc:v2``) or another name of one without spaces
    (``3-phase``), in any case; the role is the product's default role (grid for a P1
    meter, production for a kWh meter, consumption for a socket, water / battery for
    HWE-WTR / HWE-BAT);
  * a JSON or Python list of mappings, keys ``serial`` (required), ``product_type``, ``role``,
    ``api``, ``label``: ``[{"serial": "5c2fafaabbcc", "product_type": "HWE-KWH3",
    "api": "v2"}]``. A missing ``product_type`` follows the role (grid: HWE-P1, otherwise
    HWE-KWH1), a missing ``role`` follows the product type as above. Address keys
    (``address``, ``ip``, ``host``) are ignored with a warning; secret-looking keys are refused.

- ``host``, ``timezone``, ``active``, ``notes`` (optional columns, as in ``sites``). Without a
  ``host`` the inventory hostname is the site id in lowercase with ``_`` and ``.`` as ``-``
  (``CDB001`` → ``cdb001``).

Output
======

Every problem is one line, ``WORKBOOK: sheet!CELL (column): what is wrong`` (a header problem
names ``sheet!1:1 (header row)``, a merged range ``sheet!A3:A4``, a legacy entry
``sheet!C3 (configurations): entry 2``); all of them are reported in one run. ``check`` prints
them on stdout, ``import`` on stderr; warnings (ignored columns) go to stderr. Exit 1 on any
problem, else 0 with ``N sites (M active), K devices: ok``.

``import`` writes ``<DIR>/hosts.yml`` and nothing else: group ``collectors``, one host per
active site (key: ``host``), with ``hwpc_site_id``, ``hwpc_timezone`` (when given) and
``hwpc_devices`` (serial, product_type, role, api, plus address and label when given; sorted
by serial). Every string value is tagged ``!unsafe``, so Ansible never evaluates one as a
template, whatever a workbook holds. The YAML is deterministic: re-importing the same workbook
gives a byte-identical file, and an unchanged file is not rewritten. It refuses to replace a
``hosts.yml`` it did not generate. Nothing is written when the workbook has any problem.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import functools
import json
import os
import re
import sys
import warnings
import xml.parsers.expat
import zipfile
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from hw_picollector import catalog, files
from hw_picollector.catalog import API_NAMES, ROLE_NAMES, Api, ProductType, Role
from hw_picollector.config import SERIAL_RE, valid_address
from hw_picollector.schema import IDENT, IDENT_MAX_LEN

SITES_SHEET = "sites"
DEVICES_SHEET = "devices"
SITES_COLUMNS = ("site_id", "host", "timezone", "active", "notes")
SITES_REQUIRED = ("site_id", "host")
DEVICES_COLUMNS = ("site_id", "serial", "product_type", "role", "address", "api", "label")
DEVICES_REQUIRED = ("site_id", "serial", "product_type", "role")
LEGACY_COLUMNS = ("user_id", "has_pv", "configurations", "host", "timezone", "active", "notes")
LEGACY_REQUIRED = ("user_id", "configurations")

LEGACY_ADDRESS_KEYS = ("address", "ip", "host", "ip_address")

HEADER_MARK = "# Generated by hwpc sites import from "
# Identifier patterns: always used with fullmatch (re.match and $ let a trailing newline by).
SITE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
TEMPLATE_RE = re.compile(r"\{[{%#]")  # what starts an Ansible (Jinja) expression, tag, comment
LOGIN_PREFIX = "pi_"
SECRET_RE = re.compile(r"token|passw|pwd|secret|credential|api[\s_-]?key|private[\s_-]?key",
                       re.IGNORECASE)
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")

# Bounds of what is loaded, checked on the file before openpyxl reads it (it builds an object
# per cell: 100,000 cells take seconds and about 80 MB). A study of households has hundreds
# of homes with a few meters each: 10,000 rows of devices are 70,000 cells.
MAX_ROWS = 10_000
MAX_COLUMNS = 50
MAX_CELLS = 100_000  # in all sheets, merged ranges counted cell by cell
MAX_UNCOMPRESSED_BYTES = 100_000_000

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Site:
    site_id: str
    host: str
    timezone: str | None
    active: bool
    where: str


@dataclass(frozen=True)
class Device:
    site_id: str
    serial: str
    product_type: str
    role: str
    api: str
    address: str | None
    label: str | None
    where: str

    def as_var(self) -> dict[str, str]:
        var = {"serial": self.serial, "product_type": self.product_type, "role": self.role,
               "api": self.api}
        if self.address:
            var["address"] = self.address
        if self.label:
            var["label"] = self.label
        return var


@dataclass
class Fleet:
    """What a workbook says, with every problem found in it (empty: importable)."""

    source: str = "workbook"
    sites: list[Site] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def active_sites(self) -> list[Site]:
        return sorted((s for s in self.sites if s.active), key=lambda s: s.host)

    def summary(self) -> str:
        active = sum(1 for s in self.sites if s.active)
        return (f"{_plural(len(self.sites), 'site')} ({active} active), "
                f"{_plural(len(self.devices), 'device')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- cells


def _col_letter(col: int) -> str:
    letters = ""
    while col > 0:
        col, rem = divmod(col - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _sheet_ref(sheet: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet):
        return sheet
    return "'" + sheet.replace("'", "''") + "'"


def _as_text(value: Any) -> str | None:
    """A cell value as the text a person typed; None for blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _suggest(value: str, choices: tuple[str, ...] | list[str], cutoff: float = 0.6) -> str:
    lower = {c.lower(): c for c in choices}
    if value.lower() in lower:
        return f"; did you mean {lower[value.lower()]!r}?"
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def _choice_problem(value: str, choices: tuple[str, ...], what: str) -> str | None:
    if value in choices:
        return None
    return (f"unknown {what} {value!r} (expected one of {', '.join(choices)})"
            f"{_suggest(value, choices)}")


def _parse_bool(text: str | None, raw: Any, default: bool) -> bool | None:
    """TRUE/FALSE, yes/no, 1/0 (any case); blank → default; anything else → None."""
    if text is None:
        return default
    if isinstance(raw, bool):
        return raw
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


class _Table:
    """One sheet: header mapping (canonical name → column), then its non-blank data rows."""

    def __init__(self, ws: Any, expected: tuple[str, ...], required: tuple[str, ...],
                 fleet: Fleet) -> None:
        self.ws, self.fleet = ws, fleet
        self.sheet = _sheet_ref(str(ws.title))
        self.columns: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.skip: set[tuple[int, int]] = set()  # (row, col) already reported or merged
        self.usable = self._read_header(expected, required)
        if self.usable:
            self._check_merged()

    def cell(self, col: int, row: int) -> str:
        return f"{self.sheet}!{_col_letter(col)}{row}"

    def at(self, name: str, row: int) -> str:
        col = self.columns.get(name)
        where = self.cell(col, row) if col else f"{self.sheet}!{row}:{row}"
        return f"{where} ({name})"

    def problem(self, text: str) -> None:
        self.fleet.problems.append(text)

    def _read_header(self, expected: tuple[str, ...], required: tuple[str, ...]) -> bool:
        ws = self.ws
        unknown: list[tuple[int, str]] = []
        seen_any = False
        for col in range(1, ws.max_column + 1):
            cell = ws.cell(row=1, column=col)
            if cell.data_type == "f":
                self.problem(f"{self.cell(col, 1)} (header): a formula; type the column name")
                seen_any = True
                continue
            raw = _as_text(cell.value)
            if raw is None:
                continue
            seen_any = True
            name = raw.lower()
            self.names[col] = name
            if name in expected:
                if name in self.columns:
                    first = _col_letter(self.columns[name])
                    self.problem(f"{self.cell(col, 1)} ({name}): column {name!r} appears twice "
                                 f"(also column {first})")
                else:
                    self.columns[name] = col
            elif SECRET_RE.search(name):
                self.problem(
                    f"{self.cell(col, 1)} ({raw}): looks like a secret column; the workbook "
                    "and the inventory never carry secrets: remove it and keep tokens and "
                    "passwords in host_vars/<host>/vault.yml (ansible-vault)")
            else:
                unknown.append((col, raw))
        if not seen_any:
            self.problem(f"{self.sheet}!1:1 (header row): empty; expected the columns "
                         f"{', '.join(expected)}")
            return False
        suggested: set[str] = set()
        for col, raw in unknown:
            missing = [e for e in expected if e not in self.columns]
            close = difflib.get_close_matches(raw.lower(), missing, n=1, cutoff=0.75)
            if close:
                suggested.add(close[0])
                need = " (a required column)" if close[0] in required else ""
                self.problem(f"{self.cell(col, 1)} ({raw}): unknown column; did you mean "
                             f"{close[0]!r}{need}?")
            else:
                self.fleet.warnings.append(
                    f"{self.cell(col, 1)} ({raw}): unknown column, ignored "
                    f"(known: {', '.join(expected)})")
        for name in required:
            if name not in self.columns and name not in suggested:
                self.problem(f"{self.sheet}!1:1 (header row): missing column {name!r} "
                             f"(required; expected columns: {', '.join(expected)})")
        return True

    def _check_merged(self) -> None:
        for rng in sorted(self.ws.merged_cells.ranges, key=lambda r: (r.min_row, r.min_col)):
            if rng.max_row < 2:
                continue
            cols = [self.names.get(c, _col_letter(c)) for c in range(rng.min_col, rng.max_col + 1)]
            self.problem(f"{self.sheet}!{rng.coord} ({', '.join(cols)}): merged cells; unmerge "
                         "them and fill in every row")
            for row in range(max(rng.min_row, 2), rng.max_row + 1):
                for col in range(rng.min_col, rng.max_col + 1):
                    if (row, col) != (rng.min_row, rng.min_col):
                        self.skip.add((row, col))

    def _data_cells(self) -> Iterator[tuple[int, list[Any]]]:
        """(row number, its cells by column) of every data row holding a cell: only the cells
        the sheet has (openpyxl's iter_rows would create every cell of the rectangle up to
        max_row by max_column first, seconds and hundreds of MB for one stray cell)."""
        by_row: dict[int, dict[int, Any]] = {}
        for (row, col), cell in self.ws._cells.items():
            if row >= 2:
                by_row.setdefault(row, {})[col] = cell
        for row, col in self.skip:
            by_row.setdefault(row, {}).setdefault(col, self.ws.cell(row=row, column=col))
        for number in sorted(by_row):
            cells = by_row[number]
            yield number, [cells[col] for col in sorted(cells)]

    def rows(self) -> Iterator[_Row]:
        if not self.usable:
            return
        wanted = {col: name for name, col in self.columns.items()}
        headerless: set[int] = set()
        for number, cells in self._data_cells():
            row = _Row(self, number)
            blank = True
            for cell in cells:
                col = int(cell.column)
                name = wanted.get(col)
                if name is None:
                    if (col not in self.names and col not in headerless
                            and _as_text(cell.value) is not None):
                        headerless.add(col)
                        self.fleet.warnings.append(
                            f"{self.cell(col, number)}: column {_col_letter(col)} has values "
                            "but no header, ignored")
                    continue
                if (number, col) in self.skip:
                    row.unreadable.add(name)
                    blank = False
                    continue
                if cell.data_type == "f":
                    self.problem(f"{self.at(name, number)}: a formula ({cell.value!s}); the "
                                 "importer reads typed values only: paste the value instead")
                    row.unreadable.add(name)
                    blank = False
                    continue
                if cell.data_type == "e":
                    self.problem(f"{self.at(name, number)}: an error value {cell.value!s}")
                    row.unreadable.add(name)
                    blank = False
                    continue
                if _as_text(cell.value) is not None:
                    blank = False
                    template = _template_problem(cell.value)
                    if template:
                        self.problem(f"{self.at(name, number)}: {template}")
                        row.unreadable.add(name)
                        continue
                    row.values[name] = cell.value
            if not blank:
                yield row


@dataclass
class _Row:
    table: _Table
    number: int
    values: dict[str, Any] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)

    def at(self, name: str) -> str:
        return self.table.at(name, self.number)

    def where(self) -> str:
        return f"{self.table.sheet}!{self.number}:{self.number}"

    def cell(self, name: str) -> str:
        col = self.table.columns.get(name)
        return self.table.cell(col, self.number) if col else self.where()

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        return _as_text(self.values.get(name))

    def required(self, name: str, why: str = "required") -> str | None:
        value = self.text(name)
        if value is None and name in self.table.columns and name not in self.unreadable:
            self.table.problem(f"{self.at(name)}: missing value ({why})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = _parse_bool(self.text(name), self.raw(name), default)
        if value is None:
            blank = "TRUE" if default else "FALSE"
            self.table.problem(f"{self.at(name)}: {self.text(name)!r} is not a yes/no value "
                               f"(use TRUE/FALSE, yes/no or 1/0; blank means {blank})")
            return default
        return value


# --------------------------------------------------------------------------- checks


def _template_problem(value: Any) -> str | None:
    """Ansible template syntax in a cell: it would be evaluated when Ansible reads it."""
    found = TEMPLATE_RE.search(value) if isinstance(value, str) else None
    if found is None:
        return None
    return (f"{found.group()!r} is Ansible template syntax, which Ansible would evaluate when "
            "it reads the inventory; remove it")


def cassandra_login(site_id: str) -> str:
    """The Cassandra login role of a site's Pi: the rule of the collector role's
    ``hwpc_cassandra_username`` (and the central_db role's), ``pi_`` + the site id in lowercase
    with every character other than a-z, 0-9 and ``_`` as ``_``."""
    return LOGIN_PREFIX + re.sub(r"[^a-z0-9_]", "_", site_id.lower())


def _site_id_problem(site_id: str) -> str | None:
    if not SITE_ID_RE.fullmatch(site_id):
        return f"site id {site_id!r}: use letters, digits, '_', '.' or '-' (at most 64)"
    login = cassandra_login(site_id)
    if not IDENT.fullmatch(login):
        return (f"site id {site_id!r}: its Cassandra login {login!r} would have {len(login)} "
                f"characters, at most {IDENT_MAX_LEN} are allowed; use a shorter site id")
    return None


def _serial_problem(text: str, raw: Any) -> str | None:
    if SERIAL_RE.fullmatch(text):
        return None
    compact = re.sub(r"[\s:.-]", "", text)
    if SERIAL_RE.fullmatch(compact.lower()):
        if compact != text:
            return (f"serial {text!r} has separators or spaces; write it as 12 lowercase hex "
                    f"characters: {compact.lower()!r}")
        return f"serial {text!r} has uppercase letters; write it in lowercase: {text.lower()!r}"
    hint = ""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        hint = " (the cell holds a number: format the column as Text to keep leading zeros)"
    return f"malformed serial {text!r}: expected 12 lowercase hex characters (0-9, a-f){hint}"


def _serial_key(serial: str) -> str:
    return re.sub(r"[\s:.-]", "", serial).lower()


def _host_problem(host: str) -> str | None:
    if len(host) <= 253 and HOSTNAME_RE.fullmatch(host):
        return None
    hint = "; '_' is not allowed in a host name, use '-'" if "_" in host else ""
    return (f"host {host!r} is not a valid host name (letters, digits and '-' in dot-separated "
            f"labels){hint}")


def _zones() -> frozenset[str]:
    """Every IANA zone name: the system's database and the tzdata package's (zoneinfo reads
    both; tzdata is a dependency of the controller extra, so this is never empty there)."""
    return frozenset(zoneinfo.available_timezones())


def _timezone_problem(tz: str, zones: frozenset[str]) -> str | None:
    if not zones or tz in zones:
        return None
    return (f"unknown timezone {tz!r} (expected an IANA name such as 'Europe/Amsterdam')"
            f"{_suggest(tz, sorted(zones), cutoff=0.8)}")


@dataclass
class _DeviceIn:
    """A device as written, before validation; ``at(field)`` names where a field came from."""

    site_id: str
    serial: str | None
    serial_raw: Any
    product_type: str | None
    role: str | None
    api: str | None
    address: str | None
    label: str | None
    at: Callable[[str], str]    # field → "sheet!B7 (serial)", for messages
    ref: Callable[[str], str]   # field → "sheet!B7", for "first at"
    where: str


class _Checker:
    """Cross-row state: ids, hosts and serials seen so far."""

    def __init__(self, fleet: Fleet, zones: frozenset[str]) -> None:
        self.fleet, self.zones = fleet, zones
        self.site_ids: dict[str, str] = {}      # lower(site_id) → where first seen
        self.site_names: dict[str, str] = {}    # lower(site_id) → site_id as written
        self.spelled: set[str] = set()          # every site_id as written
        self.active_hosts: dict[str, str] = {}  # lower(host) → where first seen
        self.serials: dict[str, str] = {}       # serial → where first seen
        self.logins: dict[str, tuple[str, str]] = {}  # Cassandra login → (site_id, where)

    def problem(self, text: str) -> None:
        self.fleet.problems.append(text)

    def site(self, row: _Row, id_col: str, host: str | None, derived_host: bool = False) -> None:
        host_at, host_ref = row.at("host"), row.cell("host")
        if derived_host:
            host_at = f"{row.at(id_col)} (host {host!r} derived from it)"
            host_ref = row.cell(id_col)
        site_id = row.required(id_col)
        active = row.flag("active", default=True)
        ok = site_id is not None
        if site_id is not None:
            bad = _site_id_problem(site_id)
            if bad:
                self.problem(f"{row.at(id_col)}: {bad}")
                ok = False
            self.spelled.add(site_id)
            first = self.site_ids.get(site_id.lower())
            if first is not None:
                same = "" if self.site_names[site_id.lower()] == site_id else \
                    f" {self.site_names[site_id.lower()]!r}; site ids are compared ignoring case"
                self.problem(f"{row.at(id_col)}: duplicate site id {site_id!r} (first at "
                             f"{first}{same})")
                ok = False
            else:
                self.site_ids[site_id.lower()] = row.cell(id_col)
                self.site_names[site_id.lower()] = site_id
                if not bad:
                    ok = self._login(row, id_col, site_id) and ok
        if host is None:
            if active and "host" in row.table.columns and "host" not in row.unreadable:
                self.problem(f"{host_at}: missing value (required for an active site)")
            ok = ok and not active
        else:
            bad = _host_problem(host)
            if bad:
                if derived_host:
                    bad = f"{bad}; add a 'host' column to name the Pi"
                self.problem(f"{host_at}: {bad}")
                ok = False
            elif active:
                first = self.active_hosts.get(host.lower())
                if first is not None:
                    self.problem(f"{host_at}: host {host!r} already serves the active site at "
                                 f"{first} (one Pi per site)")
                    ok = False
                else:
                    self.active_hosts[host.lower()] = host_ref
        tz = row.text("timezone")
        if tz is not None:
            bad = _timezone_problem(tz, self.zones)
            if bad:
                self.problem(f"{row.at('timezone')}: {bad}")
                ok = False
        if ok and site_id is not None:
            self.fleet.sites.append(Site(site_id=site_id, host=host or "", timezone=tz,
                                         active=active, where=row.where()))

    def _login(self, row: _Row, id_col: str, site_id: str) -> bool:
        """Two sites must not share a Cassandra login role (CDB-001 and CDB.001 would)."""
        login = cassandra_login(site_id)
        first = self.logins.get(login)
        if first is None:
            self.logins[login] = (site_id, row.cell(id_col))
            return True
        self.problem(f"{row.at(id_col)}: site id {site_id!r} has the same Cassandra login "
                     f"{login!r} as {first[0]!r} ({first[1]}); the login is {LOGIN_PREFIX!r} "
                     "and the site id in lowercase with any character other than a-z, 0-9 "
                     "and '_' as '_': rename one of them")
        return False

    def device(self, dev: _DeviceIn, keep: bool = True) -> None:
        """Check every field present; keep the device when ``keep`` and all is well."""
        ok = keep and None not in (dev.serial, dev.product_type, dev.role)
        if dev.serial is not None:
            bad = _serial_problem(dev.serial, dev.serial_raw)
            if bad:
                self.problem(f"{dev.at('serial')}: {bad}")
                ok = False
            key = _serial_key(dev.serial)  # duplicates found even before spellings are fixed
            if key in self.serials:
                self.problem(f"{dev.at('serial')}: duplicate serial {dev.serial!r} (first at "
                             f"{self.serials[key]}); a meter belongs to one site")
                ok = False
            else:
                self.serials[key] = dev.ref("serial")
        product = None
        if dev.product_type is not None:
            product = catalog.lookup(dev.product_type)
            if product is None:
                types = catalog.product_types()
                self.problem(f"{dev.at('product_type')}: unknown product type "
                             f"{dev.product_type!r} (expected one of {', '.join(types)})"
                             f"{_suggest(dev.product_type, types)}")
                ok = False
        if dev.role is not None:
            bad = _choice_problem(dev.role, ROLE_NAMES, "role")
            if bad:
                self.problem(f"{dev.at('role')}: {bad}")
                ok = False
        api = dev.api or (product.default_api.value if product else Api.V1.value)
        bad = _choice_problem(api, API_NAMES, "api")
        if bad:
            self.problem(f"{dev.at('api')}: {bad}")
            ok = False
        elif product is not None and api not in product.apis:
            has = " and ".join(product.apis)
            self.problem(f"{dev.at('api')}: {product.product_type} has no API {api} "
                         f"({has} only); use {product.default_api}")
            ok = False
        if dev.address is not None and not valid_address(dev.address):
            hint = "; write host[:port] without a scheme or path" if "/" in dev.address else ""
            self.problem(f"{dev.at('address')}: address {dev.address!r} is not host[:port] "
                         f"(e.g. 192.168.1.59 or 127.0.0.1:18101){hint}")
            ok = False
        if ok and dev.serial and product is not None and dev.role:
            self.fleet.devices.append(Device(
                site_id=dev.site_id, serial=dev.serial, product_type=str(product.product_type),
                role=dev.role, api=api, address=dev.address, label=dev.label, where=dev.where))


# --------------------------------------------------------------------------- two sheets


def _two_sheets(wb: Any, sheets: dict[str, str], fleet: Fleet, zones: frozenset[str]) -> None:
    checker = _Checker(fleet, zones)
    fleet.source = "workbook"
    present = ", ".join(repr(s) for s in wb.sheetnames)
    for name in (SITES_SHEET, DEVICES_SHEET):
        if name not in sheets:
            fleet.problems.append(
                f"sheet {name!r}: missing (the workbook has {present})"
                f"{_suggest(name, list(wb.sheetnames), cutoff=0.7)}")
    sites_known = False
    if SITES_SHEET in sheets:
        site_table = _Table(wb[sheets[SITES_SHEET]], SITES_COLUMNS, SITES_REQUIRED, fleet)
        for row in site_table.rows():
            checker.site(row, "site_id", row.text("host"))
        sites_known = "site_id" in site_table.columns
    if DEVICES_SHEET not in sheets:
        return
    table = _Table(wb[sheets[DEVICES_SHEET]], DEVICES_COLUMNS, DEVICES_REQUIRED, fleet)
    for row in table.rows():
        site_id = row.required("site_id")
        known = site_id is not None
        if site_id is not None and sites_known and site_id not in checker.spelled:
            same = checker.site_names.get(site_id.lower())
            hint = f"; did you mean {same!r}?" if same is not None else \
                _suggest(site_id, sorted(checker.spelled), cutoff=0.8)
            fleet.problems.append(f"{row.at('site_id')}: unknown site {site_id!r} (not in "
                                  f"sheet {SITES_SHEET!r}){hint}")
            known = False
        dev = _DeviceIn(
            site_id=site_id or "", serial=row.required("serial"), serial_raw=row.raw("serial"),
            product_type=row.required("product_type"), role=row.required("role"),
            api=row.text("api"), address=row.text("address"), label=row.text("label"),
            at=functools.partial(table.at, row=row.number), ref=row.cell, where=row.where())
        checker.device(dev, keep=known)


# --------------------------------------------------------------------------- legacy sheet


@dataclass
class _Entry:
    text: str
    kind: str | None = None          # what the entry says it is (for messages)
    serial: str | None = None
    serial_raw: Any = None
    product_type: str | None = None
    role: str | None = None
    api: str | None = None
    label: str | None = None
    problem: str | None = None


def _fixed(text: str) -> Callable[[str], str]:
    """Every field of a legacy entry lives in the same cell."""

    def at(_field: str) -> str:
        return text

    return at


def split_configurations(text: str) -> list[Any]:
    """The items of a ``configurations`` cell: a JSON/Python list, or text split on ; , newline."""
    s = text.strip()
    if s[:1] in "[{(":
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(s)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, list | tuple):
                return list(value)
            return [value]
        s = s.strip("[](){}")
    items = []
    for part in re.split(r"[;,\n]+", s):
        item = part.strip().strip("'\"").strip()
        if item:
            items.append(item)
    return items


def _legacy_kind(word: str) -> tuple[str, str] | None:
    """(product type, default role) of a catalog name (``p1``, ``pv``, ``HWE-KWH3`` ...)."""
    product = catalog.lookup(word)
    if product is None:
        return None
    return str(product.product_type), str(product.default_role)


def _legacy_kinds() -> list[str]:
    """What a legacy ``KIND`` may be, for messages: the short names, then the types."""
    return [*catalog.current().short_names(), *catalog.product_types()]


def parse_entry(item: Any, warn: Callable[[str], None]) -> _Entry:
    """One installation of the legacy ``configurations`` list."""
    if isinstance(item, dict):
        return _dict_entry(item, warn)
    if not isinstance(item, str):
        return _Entry(text=repr(item), problem=f"unrecognised entry {item!r}")
    text = item.strip()
    parts = [p for p in re.split(r"\s*[:=@\s]\s*", text) if p]
    if not parts or len(parts) > 3:
        return _Entry(text=text, problem=f"unrecognised entry {text!r} (write KIND:SERIAL, "
                      "e.g. p1:3c39e7aabbcc)")
    kind = _legacy_kind(parts[0])
    if kind is None:
        if len(parts) == 1 and re.fullmatch(r"[0-9A-Fa-f]{12}", parts[0]):
            return _Entry(text=text, problem=f"serial {text!r} without a kind: write "
                          f"p1:{text.lower()} or pv:{text.lower()}")
        kinds = _legacy_kinds()
        return _Entry(text=text, problem=f"entry {text!r}: unknown meter kind {parts[0]!r} "
                      f"(use one of {', '.join(kinds)}){_suggest(parts[0], kinds)}")
    entry = _Entry(text=text, kind=parts[0], product_type=kind[0], role=kind[1])
    if len(parts) >= 2:
        entry.serial = parts[1]
    if len(parts) == 3:
        entry.api = parts[2]
    return entry


def _dict_entry(item: dict[Any, Any], warn: Callable[[str], None]) -> _Entry:
    data = {str(k).strip().lower(): v for k, v in item.items()}
    # Never echo the values: one of them may be a secret.
    text = "{" + ", ".join(sorted(data)) + "}"
    entry = _Entry(text=text)
    for key in sorted(data):
        if SECRET_RE.search(key):
            entry.problem = (f"key {key!r} looks like a secret; the workbook never carries "
                             "secrets (keep them in host_vars/<host>/vault.yml, ansible-vault)")
            return entry
        if key in LEGACY_ADDRESS_KEYS:
            warn(f"key {key!r} ignored: in the legacy sheet addresses are left to mDNS discovery")
        elif key not in ("serial", "product_type", "role", "api", "label"):
            warn(f"unknown key {key!r} ignored")
    entry.serial = _as_text(data.get("serial"))
    entry.serial_raw = data.get("serial")
    entry.product_type = _as_text(data.get("product_type"))
    entry.role = _as_text(data.get("role"))
    entry.api = _as_text(data.get("api"))
    entry.label = _as_text(data.get("label"))
    entry.kind = entry.product_type or entry.role
    for key in ("serial", "product_type", "role", "api", "label"):
        # the cell may spell it with escapes (\u007b{ in JSON, \x7b{ in Python)
        template = _template_problem(_as_text(data.get(key)))
        if template:
            entry.problem = f"key {key!r}: {template}"
            return entry
    if entry.product_type is None and entry.role is None:
        entry.problem = f"mapping with keys {text}: give its product_type (or its role)"
        return entry
    if entry.product_type is None:
        kind = ProductType.P1 if entry.role == Role.GRID else ProductType.KWH1
        entry.product_type = kind.value
    if entry.role is None:
        match = _legacy_kind(entry.product_type)
        entry.role = match[1] if match else Role.PRODUCTION.value
    return entry


def _legacy(ws: Any, fleet: Fleet, zones: frozenset[str]) -> None:
    checker = _Checker(fleet, zones)
    table = _Table(ws, LEGACY_COLUMNS, LEGACY_REQUIRED, fleet)
    fleet.source = f"legacy sheet {str(ws.title)!r}"
    has_pv_column = "has_pv" in table.columns
    for row in table.rows():
        site_id = row.text("user_id")
        host = row.text("host")
        derived = False
        if host is None and "host" not in row.unreadable and site_id is not None:
            host = re.sub(r"[_.]", "-", site_id.lower())
            derived = True
        n_sites = len(fleet.sites)
        checker.site(row, "user_id", host, derived_host=derived)
        site = fleet.sites[-1] if len(fleet.sites) > n_sites else None
        has_pv = row.flag("has_pv", default=False)
        conf = row.required("configurations", "the home's meters, e.g. p1:3c39e7aabbcc")
        if conf is None:
            continue
        where = row.at("configurations")
        row_warnings: list[str] = []

        def warn(text: str, where: str = where, sink: list[str] = row_warnings) -> None:
            sink.append(f"{where}: {text}")

        entries = [parse_entry(item, warn) for item in split_configurations(conf)]
        fleet.warnings.extend(row_warnings)
        no_serial: list[str] = []
        roles: set[str] = set()
        reported = False
        for number, entry in enumerate(entries, start=1):
            if entry.problem:
                fleet.problems.append(f"{where}: entry {number}: {entry.problem}")
                reported = True
                continue
            if entry.role:
                roles.add(entry.role)
            if entry.serial is None:
                no_serial.append(entry.kind or entry.text)
                continue
            dev = _DeviceIn(
                site_id=site.site_id if site else "", serial=entry.serial,
                serial_raw=entry.serial_raw, product_type=entry.product_type,
                role=entry.role, api=entry.api, address=None, label=entry.label,
                at=_fixed(f"{where}: entry {number}"),
                ref=_fixed(f"{row.cell('configurations')} entry {number}"), where=row.where())
            checker.device(dev, keep=site is not None)
        if no_serial:
            fleet.problems.append(
                f"{where}: no serial for {', '.join(repr(k) for k in no_serial)}; the legacy "
                "sheet must name every meter's serial (devices are found by serial, their "
                "addresses by mDNS), e.g. p1:3c39e7aabbcc; pv:3c39e7aabbdd")
        if not entries:
            fleet.problems.append(f"{where}: empty list; a home needs at least its P1 meter, "
                                  "e.g. p1:3c39e7aabbcc")
        if not entries or reported:
            continue  # the cross-checks below would only echo what is already reported
        if Role.GRID not in roles:
            fleet.problems.append(f"{where}: no P1 meter (role grid); add p1:<serial>")
        if has_pv_column:
            if has_pv and Role.PRODUCTION not in roles:
                fleet.problems.append(f"{row.at('has_pv')}: has_pv is TRUE but configurations "
                                      "lists no PV meter; add pv:<serial>")
            if not has_pv and Role.PRODUCTION in roles:
                fleet.problems.append(f"{row.at('has_pv')}: has_pv is FALSE but configurations "
                                      "lists a PV meter (role production)")


# --------------------------------------------------------------------------- workbook


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


def _looks_legacy(ws: Any) -> bool:
    names = {(_as_text(c.value) or "").lower() for c in next(ws.iter_rows(max_row=1), ())}
    return bool(names & {"user_id", "has_pv", "configurations"})


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


_REF_RE = re.compile(r"\$?([A-Za-z]{1,3})\$?([0-9]{1,7})")


class _XmlRefused(ValueError):
    """XML the size check does not read: a DTD (entities), or a cell reference that is none."""


class _Stop(Exception):
    """Raised from an XML handler: nothing more to read in this part."""


def _col_number(letters: str) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


def _stream_xml(z: zipfile.ZipFile, member: str,
                start: Callable[[str, dict[str, str]], None]) -> None:
    """Call ``start(name without prefix, attributes)`` for every element of a zip member,
    streaming (no tree is built: memory stays flat whatever its size); a DTD is refused."""
    parser = xml.parsers.expat.ParserCreate()

    def no_dtd(*_args: Any) -> None:
        raise _XmlRefused("a DTD")

    parser.StartDoctypeDeclHandler = no_dtd
    parser.EntityDeclHandler = no_dtd
    parser.StartElementHandler = start
    with z.open(member) as fh:
        while chunk := fh.read(1 << 16):
            parser.Parse(chunk, False)
    parser.Parse(b"", True)


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _sheet_names(z: zipfile.ZipFile) -> dict[str, str]:
    """zip member → sheet name, from ``xl/workbook.xml`` and its relationships, in the
    workbook's order (best effort: a sheet it misses is named by its member)."""
    targets: dict[str, str] = {}

    def rel(tag: str, attrs: dict[str, str]) -> None:
        if _local(tag) == "Relationship" and "Id" in attrs and "Target" in attrs:
            target = attrs["Target"]
            joined = target[1:] if target.startswith("/") else f"xl/{target}"
            targets[attrs["Id"]] = os.path.normpath(joined).replace(os.sep, "/")

    names: dict[str, str] = {}

    def sheet(tag: str, attrs: dict[str, str]) -> None:
        rid = next((v for k, v in attrs.items() if k.endswith(":id")), None)
        if _local(tag) == "sheet" and rid in targets and "name" in attrs:
            names[targets[rid]] = attrs["name"]

    with contextlib.suppress(KeyError, ValueError, xml.parsers.expat.ExpatError):
        _stream_xml(z, "xl/_rels/workbook.xml.rels", rel)
        _stream_xml(z, "xl/workbook.xml", sheet)
    return names


@dataclass
class _Extent:
    """How far the cells and merged ranges of a worksheet reach, and how many cells openpyxl
    would build for them, counted from the cells themselves (``<dimension>`` may say
    anything)."""

    rows: int = 0
    cols: int = 0
    cells: int = 0
    row: int = 0     # the current <row>
    col: int = 0     # the last <c> in it
    budget: int = 0  # cells left under MAX_CELLS; the scan stops beyond
    sheet: bool = False
    at: str = ""     # what the scan read last, for messages

    def reach(self, row: int, col: int) -> None:
        self.rows, self.cols = max(self.rows, row), max(self.cols, col)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        name = _local(tag)
        if not self.sheet:
            if name not in ("worksheet", "comments"):
                raise _Stop  # another part of the workbook
            self.sheet = True
        elif name == "c":
            ref = attrs.get("r")
            if ref is None:
                self.col += 1
            else:
                self.row, self.col = _cell_ref(ref)
            self.reach(max(self.row, 1), self.col)
            self.cells += 1
            self.at = f"row {self.row}"
        elif name == "row":
            r = attrs.get("r")
            if r is None:
                self.row += 1
            elif r.isascii() and r.isdigit():
                self.row = int(r)
            else:  # openpyxl would also read "1e6" as row 1,000,000
                raise _XmlRefused(f"the row number {r[:20]!r}")
            self.col = 0
            if {k for k in attrs if not k.startswith("{")} - {"r", "spans"}:
                self.reach(self.row, 0)  # openpyxl keeps a row's formatting: one object more
                self.cells += 1
                self.at = f"row {self.row}"
        elif name in ("mergeCell", "hyperlink") and "ref" in attrs:
            # openpyxl builds every cell of a merged range, and of a hyperlink's range
            corners = [_cell_ref(corner) for corner in attrs["ref"].split(":")]
            rows, cols = [r for r, _ in corners], [c for _, c in corners]
            self.reach(max(rows), max(cols))
            self.cells += (max(rows) - min(rows) + 1) * (max(cols) - min(cols) + 1) - \
                (name == "mergeCell")
            what = "merged range" if name == "mergeCell" else "hyperlink of"
            self.at = f"the {what} {attrs['ref']}"
        elif name == "comment" and "ref" in attrs:  # openpyxl builds the cell it annotates
            self.reach(*_cell_ref(attrs["ref"]))
            self.cells += 1
            self.at = f"the comment on {attrs['ref']}"
        if self.cells > self.budget:
            raise _Stop


def _cell_ref(text: str) -> tuple[int, int]:
    found = _REF_RE.fullmatch(text)
    if found is None:
        raise _XmlRefused(f"the cell reference {text[:20]!r}")
    return int(found.group(2)), _col_number(found.group(1))


def _size_problems(path: str) -> list[str]:
    """A workbook too big to load: more than MAX_UNCOMPRESSED_BYTES or MAX_CELLS, or a
    worksheet whose cells reach beyond MAX_ROWS or MAX_COLUMNS. Read from the zip and the XML
    of every part that is a worksheet (or its comments), streaming, and never beyond MAX_CELLS
    cells; what is unreadable here is left to openpyxl to report."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            total = sum(info.file_size for info in members)
            if total > MAX_UNCOMPRESSED_BYTES:
                return [f"too big: {total:,} bytes uncompressed; the importer reads at most "
                        f"{MAX_UNCOMPRESSED_BYTES:,} (a sites workbook is far smaller)"]
            names = _sheet_names(z)
            order = {member: n for n, member in enumerate(names)}  # the workbook's order
            problems: list[str] = []
            cells = 0
            for info in sorted(members, key=lambda i: (order.get(i.filename, len(order)),
                                                       i.filename)):
                extent = _Extent(budget=MAX_CELLS - cells)
                sheet = _sheet_ref(names.get(info.filename, info.filename))
                try:
                    _stream_xml(z, info.filename, extent.start)
                except _XmlRefused as exc:
                    return [f"{info.filename}: {exc} is not read here; save the workbook again "
                            "as an Excel Workbook (.xlsx)"]
                except (_Stop, xml.parsers.expat.ExpatError):
                    if not extent.sheet:
                        continue  # another part, or not XML
                    if extent.cells > extent.budget:
                        return [*problems, (
                            f"{sheet}: more than {MAX_CELLS:,} cells in the workbook by "
                            f"{extent.at} of this sheet; the importer reads at most "
                            f"{MAX_CELLS:,} (10,000 rows of devices are 70,000): delete what a "
                            "sites workbook does not need or move it to another workbook")]
                    raise
                cells += extent.cells
                if extent.rows > MAX_ROWS or extent.cols > MAX_COLUMNS:
                    last = _col_letter(extent.cols)
                    problems.append(
                        f"{sheet}!A1:{last}{extent.rows}: the sheet's cells reach row "
                        f"{extent.rows} and column {extent.cols} ({last}); the importer reads "
                        f"at most {MAX_ROWS} rows and {MAX_COLUMNS} columns "
                        f"(A1:{_col_letter(MAX_COLUMNS)}{MAX_ROWS}): delete the cells beyond "
                        "(a stray value, formatting or merged cells) or move them to another "
                        "workbook")
            return problems
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, xml.parsers.expat.ExpatError,
            RuntimeError, NotImplementedError, EOFError):
        return []  # not a readable workbook: openpyxl says so in its own terms


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


# --------------------------------------------------------------------------- inventory


def inventory(fleet: Fleet) -> dict[str, Any]:
    """The Ansible inventory: group ``collectors``, one host per active site."""
    hosts: dict[str, Any] = {}
    for site in fleet.active_sites():
        devices = sorted((d for d in fleet.devices if d.site_id == site.site_id),
                         key=lambda d: d.serial)
        host_vars: dict[str, Any] = {"hwpc_site_id": site.site_id,
                                     "hwpc_devices": [d.as_var() for d in devices]}
        if site.timezone:
            host_vars["hwpc_timezone"] = site.timezone
        hosts[site.host] = host_vars
    return {"all": {"children": {"collectors": {"hosts": hosts}}}}


class _Unsafe(str):
    """A string Ansible must take as it is: written with the ``!unsafe`` tag."""

    __slots__ = ()


def _unsafe(value: Any) -> Any:
    """Every string value of a tree as ``_Unsafe`` (mapping keys, ours or host names, stay)."""
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, dict):
        return {key: _unsafe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unsafe(item) for item in value]
    return value


class _IndentedDumper(yaml.SafeDumper):
    """Indent list items under their key, as yamllint's default ``indent-sequences`` wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_unsafe(dumper: yaml.SafeDumper, value: _Unsafe) -> yaml.ScalarNode:
    # An explicit tag is never plain: the scalar is quoted ('...', or "..." when it must be).
    return dumper.represent_scalar("!unsafe", str(value))


_IndentedDumper.add_representer(_Unsafe, _represent_unsafe)


def render(fleet: Fleet, workbook_name: str) -> str:
    """hosts.yml: every string value ``!unsafe``, so Ansible never evaluates one as a
    template (a label of ``{{ lookup('pipe', ...) }}`` stays that text)."""
    body = yaml.dump(_unsafe(inventory(fleet)), Dumper=_IndentedDumper, sort_keys=True,
                     default_flow_style=False, allow_unicode=True, width=4096)
    name = "".join(c if c.isprintable() else "?" for c in workbook_name)  # one comment line
    return f"---\n{HEADER_MARK}{name}; do not edit, re-import instead.\n{body}"


def write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (temp file, fsync, rename); False when already identical."""
    data = text.encode("utf-8")
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # durable=True as before: written once per import, and the fleet is deployed from it
    files.replace_atomically(path, data, durable=True, mode=0o644)
    return True


def _generated_by_us(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            head = [fh.readline() for _ in range(3)]
    except FileNotFoundError:
        return True
    return any(line.startswith(HEADER_MARK) for line in head)


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    """``hwpc sites check WORKBOOK`` / ``hwpc sites import WORKBOOK --inventory DIR``."""
    workbook = str(args.workbook)
    fleet = load(workbook)
    for text in fleet.warnings:
        print(f"{workbook}: warning: {text}", file=sys.stderr)
    importing = args.sites_command == "import"
    out = sys.stderr if importing else sys.stdout
    if fleet.problems:
        for text in fleet.problems:
            print(f"{workbook}: {text}", file=out)
        if importing:
            print(f"{workbook}: {_plural(len(fleet.problems), 'problem')}; nothing written",
                  file=out)
        elif len(fleet.problems) > 1:
            print(f"{workbook}: {_plural(len(fleet.problems), 'problem')}", file=out)
        return 1
    source = "" if fleet.source == "workbook" else f"{fleet.source}: "
    if not importing:
        print(f"{workbook}: {source}{fleet.summary()}: ok")
        return 0
    target = Path(args.inventory) / "hosts.yml"
    text = render(fleet, Path(workbook).name)
    try:
        if not _generated_by_us(target):
            print(f"{target}: exists and was not generated by hwpc sites import; move it away "
                  "first (nothing written)", file=sys.stderr)
            return 1
        changed = write_atomic(target, text)
    except OSError as exc:
        print(f"{target}: cannot write: {exc.strerror or exc} (nothing written)", file=sys.stderr)
        return 1
    active = fleet.active_sites()
    n_devices = sum(1 for d in fleet.devices if d.site_id in {s.site_id for s in active})
    skipped = sorted(s.site_id for s in fleet.sites if not s.active)
    hosts = ", ".join(s.host for s in active) or "none"
    line = (f"{'wrote' if changed else 'unchanged'} {target}: {_plural(len(active), 'host')} "
            f"({hosts}), {_plural(n_devices, 'device')} from {source}{Path(workbook).name}")
    if skipped:
        line += f"; inactive sites skipped: {', '.join(skipped)}"
    print(line)
    return 0
