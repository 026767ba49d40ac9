"""HomeWizard payloads → one canonical sample (pure: no I/O).

Canonical names are the API v2 measurement names (``power_w``, ``energy_import_t1_kwh``, ...).
API v1 ``/api/v1/data`` names are mapped onto them key by key, so a v1 payload, a v2
``/api/measurement`` payload (or a mix) needs no hint about its version. Rules:

- nulls and missing keys are both "no value"; ``12.000`` is 12.0; a bool is never a number;
- identity strings and timestamps other than the gas reading's are not measurements: dropped;
- gas (v1 ``total_gas_m3``/``gas_timestamp`` or the first ``external`` gas meter) lands in
  ``gas_m3``/``gas_ts``, the first external water meter in ``water_m3``;
- a numeric field that is unknown, or known but not a column of the product type, goes to
  ``extra``; a non-numeric unknown field is dropped. The collector keeps ``extra`` within
  its caps (``cap_extra``: the first fields by name), so a device sending thousands of
  fields cannot make rows grow without bound.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from hw_picollector import catalog
from hw_picollector.catalog import Api
from hw_picollector.catalog import energy_columns as _energy
from hw_picollector.catalog import phase_columns as _lines


@dataclass(frozen=True)
class Sample:
    """One reading: canonical ``values`` (floats; ``gas_ts`` is text) and unmapped ``extra``."""

    values: dict[str, float | str] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


ALL_COLUMNS: tuple[str, ...] = (
    "tariff",
    *_energy(4),
    *_lines("power", "w"),
    *_lines("voltage", "v"),
    *_lines("current", "a"),
    *_lines("apparent_current", "a"),
    *_lines("reactive_current", "a"),
    *_lines("apparent_power", "va"),
    *_lines("reactive_power", "var"),
    *_lines("power_factor"),
    "frequency_hz",
    *(f"voltage_{kind}_l{n}_count" for kind in ("sag", "swell") for n in (1, 2, 3)),
    "any_power_fail_count",
    "long_power_fail_count",
    "average_power_15m_w",
    "monthly_power_peak_w",
    "gas_m3",
    "gas_ts",
    "water_m3",
    "water_flow_lpm",
    "water_offset_m3",
    "state_of_charge_pct",
    "cycles",
    "wifi_strength_pct",
)
"""Every canonical column, in CSV/CQL order (the union over all product types)."""

TEXT_COLUMNS: frozenset[str] = frozenset({"gas_ts"})
"""Columns holding text (naive ISO ``YYYY-MM-DDTHH:MM:SS``); every other column is a float."""

# v1 names whose v2 name is not the generic rename (total_power_ → energy_, active_ → "").
_V1_NAMES: Mapping[str, str] = MappingProxyType({
    "active_tariff": "tariff",
    "active_power_average_w": "average_power_15m_w",
    "montly_power_peak_w": "monthly_power_peak_w",
    "active_liter_lpm": "water_flow_lpm",
    "total_liter_m3": "water_m3",
    "total_liter_offset_m3": "water_offset_m3",
    "wifi_strength": "wifi_strength_pct",
})
# Identity, text and timestamps: not measurements (protocol_version is numeric, still dropped).
_NOT_MEASUREMENTS = frozenset({
    "wifi_ssid", "meter_model", "unique_id", "smr_version", "protocol_version",
    "gas_unique_id", "unique_gas_id", "timestamp",
    "monthly_power_peak_timestamp", "montly_power_peak_timestamp",
})
# Handled together: gas and water from the legacy v1 fields and the external[] list.
_GAS_AND_EXTERNAL = frozenset({"total_gas_m3", "gas_timestamp", "external"})
_V1_MARKERS = frozenset({"wifi_ssid", "wifi_strength", "smr_version"})
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S"
_ROUTES_MAX = 512  # per product type: a device sending ever new keys must not grow memory


def columns(product_type: str) -> tuple[str, ...]:
    """The fixed, ordered canonical columns of a product type (``ValueError`` if unknown).

    The catalog says which columns a product has, ``ALL_COLUMNS`` their order; a catalog
    column that is not in ``ALL_COLUMNS`` is an error (it would have no CSV or CQL column).
    """
    product = catalog.get(product_type)
    if product is None:
        known = ", ".join(catalog.product_types())
        raise ValueError(f"unknown product_type {product_type!r} (known: {known})")
    members = product.columns
    ordered = tuple(c for c in ALL_COLUMNS if c in members)
    if len(ordered) != len(members):
        unknown = ", ".join(sorted(members - set(ordered)))
        raise ValueError(f"{product_type}: columns not in ALL_COLUMNS: {unknown}")
    return ordered


def canonical_name(key: str) -> str:
    """A payload key (v1 or v2) → its canonical (v2) name; unknown keys map to themselves."""
    if key in _V1_NAMES:
        return _V1_NAMES[key]
    if key.startswith("total_power_"):
        return "energy_" + key.removeprefix("total_power_")
    return key.removeprefix("active_")


def payload_api(payload: Mapping[str, Any]) -> str:
    """``"v1"`` if a key is a v1 name (``active_``/``total_`` prefix, ``wifi_*``), else ``"v2"``."""
    v1 = any(k.startswith(("active_", "total_", "montly_")) or k in _V1_MARKERS for k in payload)
    return Api.V1 if v1 else Api.V2


def number(raw: Any) -> float | None:
    """A JSON number as a finite float; None for null, bools, strings and anything else."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        value = float(raw)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def timestamp(raw: Any) -> str | None:
    """A meter timestamp → ``YYYY-MM-DDTHH:MM:SS`` (None if invalid).

    Accepts a v1 ``YYMMDDhhmmss`` integer or a v2 naive ISO string; meter-local wall-clock
    time, kept as is.
    """
    try:
        if isinstance(raw, str):
            return datetime.fromisoformat(raw).strftime(_TS_FORMAT)
        value = number(raw)
        if value is None or not value.is_integer() or not 0 < value < 1e12:
            return None
        return datetime.strptime(f"{int(value):012d}", "%y%m%d%H%M%S").strftime(_TS_FORMAT)
    except ValueError:
        return None


@functools.lru_cache(maxsize=64, typed=True)
def _timestamp_cached(raw: str | int | float) -> str | None:
    return timestamp(raw)


def _gas_timestamp(raw: Any) -> str | None:
    """``timestamp`` for the gas reading, which repeats for minutes: parsed once per value."""
    if type(raw) in (str, int, float):
        return _timestamp_cached(raw)
    return timestamp(raw)


@functools.lru_cache(maxsize=64)
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _gas_and_water(payload: Mapping[str, Any], put: Callable[[str, float | str], None]) -> None:
    """The legacy v1 gas fields and the ``external`` meters (P1; v1 integers, v2 ISO times)."""
    seen: dict[str, int] = {}
    gas: float | None = None
    externals = payload.get("external")
    for item in externals if isinstance(externals, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            continue
        value = number(item.get("value"))
        kind = _slug(item["type"])
        if value is None or not kind:
            continue
        seen[kind] = nth = seen.get(kind, 0) + 1
        if kind == "gas_meter" and nth == 1:
            gas = value
            put("gas_m3", value)
            if (ts := _gas_timestamp(item.get("timestamp"))) is not None:
                put("gas_ts", ts)
        elif kind == "water_meter" and nth == 1:
            put("water_m3", value)
        else:
            unit = item.get("unit")
            unit_slug = _slug(unit) if isinstance(unit, str) else ""
            put(f"{kind}{f'_{nth}' if nth > 1 else ''}_{unit_slug or 'value'}", value)
    legacy = number(payload.get("total_gas_m3"))
    if legacy is None:
        return
    if gas is None:
        put("gas_m3", legacy)
        if (ts := _gas_timestamp(payload.get("gas_timestamp"))) is not None:
            put("gas_ts", ts)
    elif legacy != gas:  # two different first-gas readings: keep the legacy one as extra
        put("total_gas_m3", legacy)


Route = tuple[str, bool] | None
"""Where a payload key goes: (canonical name, is a column of the type), or None (not a value)."""

_ROUTES: dict[str, tuple[frozenset[str], dict[str, Route]]] = {}


def _route(key: str, wanted: frozenset[str]) -> Route:
    if key in _NOT_MEASUREMENTS or key in _GAS_AND_EXTERNAL:
        return None
    name = canonical_name(key)
    return name, name in wanted


def _routes(product_type: str) -> tuple[frozenset[str], dict[str, Route]]:
    plan = _ROUTES.get(product_type)
    if plan is None:
        plan = _ROUTES[product_type] = (frozenset(columns(product_type)), {})
    return plan


def to_sample(product_type: str, payload: Mapping[str, Any]) -> Sample:
    """Map a v1 ``/api/v1/data`` or v2 ``/api/measurement`` payload to a canonical Sample.

    Runs once per poll per device: each key's route (canonical name, column or extra) is
    worked out once per product type and remembered.
    """
    wanted, routes = _routes(product_type)
    values: dict[str, float | str] = {}
    extra: dict[str, float] = {}
    value: float | None
    for key, raw in payload.items():
        try:
            route = routes[key]
        except KeyError:
            route = _route(key, wanted)
            if len(routes) < _ROUTES_MAX:
                routes[key] = route
        if route is None:
            continue
        kind = type(raw)
        if kind is float:
            if raw - raw != 0.0:  # inf or nan
                continue
            value = raw
        elif kind is int:
            try:
                value = float(raw)
            except OverflowError:
                continue
        else:
            value = number(raw)  # None, bool, text, containers; subclasses of int/float
            if value is None:
                continue
        name, is_column = route
        if name == "tariff" and value not in (1.0, 2.0, 3.0, 4.0):
            continue
        if is_column:
            if name not in values:
                values[name] = value
        elif name not in extra:
            extra[name] = value
    if "external" in payload or "total_gas_m3" in payload:

        def put(name: str, value: float | str) -> None:
            if name in wanted:
                values.setdefault(name, value)
            elif isinstance(value, float):
                extra.setdefault(name, value)

        _gas_and_water(payload, put)
    return Sample(values=values, extra=extra)


_ENTRY_BOUND = 32  # at most: a comma, a colon, two quotes, a float's text (24 characters)


def cap_extra(extra: dict[str, float], max_keys: int, max_bytes: int
              ) -> tuple[dict[str, float], int]:
    """``extra`` within ``max_keys`` fields and ``max_bytes`` of compact JSON (as the store
    writes it): (the fields kept, how many were dropped). Deterministic whatever the order
    the device sent them in: the first fields by name are kept, as many as fit.

    Runs for every sample, so a small ``extra`` (the usual case) is only measured.
    """
    if len(extra) <= max_keys and \
            sum(12 * len(k) for k in extra) + _ENTRY_BOUND * len(extra) + 2 <= max_bytes:
        return extra, 0  # a character escapes to at most 12 (a surrogate pair ``\uXXXX``)
    kept: dict[str, float] = {}
    size = 2  # {}
    for key in sorted(extra)[:max_keys]:
        value = extra[key]
        size += len(json.dumps(key)) + 1 + len(json.dumps(value)) + (1 if kept else 0)
        if size > max_bytes:
            break
        kept[key] = value
    return kept, len(extra) - len(kept)
