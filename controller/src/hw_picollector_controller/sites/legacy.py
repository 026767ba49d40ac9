"""The legacy sheet of the original study: one row per home, its meters in one cell.

A workbook with neither ``sites`` nor ``devices`` is read as the original single sheet: the
first sheet whose header has ``user_id``, ``has_pv`` or ``configurations`` (``_looks_legacy``).
One row per home:

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

A problem in an entry names its cell and its place in the list,
``sheet!C3 (configurations): entry 2``. Sites and devices are checked by the same rules as in
the two sheets (check.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hw_picollector import catalog
from hw_picollector.catalog import ProductType, Role
from hw_picollector_controller.sites.check import _Checker, _DeviceIn, _suggest
from hw_picollector_controller.sites.fleet import Fleet
from hw_picollector_controller.sites.workbook import SECRET_RE, _as_text, _Table, _template_problem

LEGACY_COLUMNS = ("user_id", "has_pv", "configurations", "host", "timezone", "active", "notes")
LEGACY_REQUIRED = ("user_id", "configurations")

LEGACY_ADDRESS_KEYS = ("address", "ip", "host", "ip_address")


def _looks_legacy(ws: Any) -> bool:
    names = {(_as_text(c.value) or "").lower() for c in next(ws.iter_rows(max_row=1), ())}
    return bool(names & {"user_id", "has_pv", "configurations"})


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
