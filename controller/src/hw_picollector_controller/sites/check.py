"""The checker: the rules every site and device meets, and the two-sheet workbook.

``_Checker`` checks one site or device at a time and keeps what it has seen (site ids, hosts,
serials, Cassandra logins) to find duplicates across rows; what passes becomes a ``Site`` or a
``Device`` of the ``Fleet``. ``_two_sheets`` feeds it the rows of the ``sites`` and ``devices``
sheets; the legacy sheet (legacy.py) feeds it too.

The two sheets
==============

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

What any sheet refuses (secret-looking columns, formulas, template syntax ...) is the reader's
(workbook.py). Also refused, in either layout:

- Two site ids with the same Cassandra login role, ``pi_`` and the site id in lowercase with
  every character other than ``a-z``, ``0-9`` and ``_`` as ``_`` (``CDB-001`` and ``CDB.001``
  are both ``pi_cdb_001``; the rule of the collector role's ``hwpc_cassandra_username``), and
  a site id whose login would be longer than a role name may be (48 characters).
- Timezones are checked against the IANA database of the ``tzdata`` package (a dependency of
  the ``controller`` extra), so the check does not depend on the machine's own database.
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, ROLE_NAMES, Api
from hw_picollector.config import SERIAL_RE, valid_address
from hw_picollector_controller.schema import IDENT, IDENT_MAX_LEN
from hw_picollector_controller.sites.fleet import Device, Fleet, Site
from hw_picollector_controller.sites.workbook import _Row, _Table

SITES_SHEET = "sites"
DEVICES_SHEET = "devices"
SITES_COLUMNS = ("site_id", "host", "timezone", "active", "notes")
SITES_REQUIRED = ("site_id", "host")
DEVICES_COLUMNS = ("site_id", "serial", "product_type", "role", "address", "api", "label")
DEVICES_REQUIRED = ("site_id", "serial", "product_type", "role")

# Identifier patterns: always used with fullmatch (re.match and $ let a trailing newline by).
SITE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
LOGIN_PREFIX = "pi_"


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
