"""The document `hwpc status --json` prints, typed and versioned; written by a Pi, read by the
fleet audit (freshness/) and the metrics (metrics.py).

Versions (the ``status_version`` key):

- 1: what hwpc printed before the key existed, so a status without it. Only what the audit
  reads must be there (``service_active``, ``poll_interval_s``, ``devices``, and per device
  ``serial`` and ``last_ts``); any other key may be missing or null.
- 2 (`STATUS_VERSION`): the same keys and values, plus ``"status_version": 2``. Every key is
  there (``coverage_hourly`` only with ``--coverage-hours``), null only where hwpc writes null.

(The key is not ``version``: that key has always held the hwpc release, ``"0.1.0"``.)

`parse_status` reads either version into the same `StatusDocument`, so a fleet in the middle
of a rolling deploy is judged alike; it rejects a newer version than it knows and any value
of the wrong kind with a `StatusError` whose message names the key, never the value (a status
comes from a machine in someone's home). Keys it does not know are ignored. `to_dict` and
`to_json` write the current version. Data and pure functions only: no file, socket or clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hw_picollector import store
from hw_picollector.documents import format_version, json_kind

__all__ = [
    "STATUS_VERSION",
    "VERSION_KEY",
    "DamagedFile",
    "DeviceStatus",
    "HourCount",
    "StatusDocument",
    "StatusError",
    "parse_iso",
    "parse_status",
    "status_version",
]

STATUS_VERSION = 2
VERSION_KEY = "status_version"


class StatusError(ValueError):
    """Not a status this code reads: the message names the key at fault, never its value."""


@dataclass(frozen=True)
class HourCount:
    """Samples stored in one UTC hour (``YYYY-MM-DDTHH``)."""
    hour: str
    samples: int


@dataclass(frozen=True)
class DamagedFile:
    """A store file with damaged lines, found when the collector started."""
    file: str | None = None
    first_offset: int | None = None
    lines: int | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """One configured device. None: not said (a version-1 status may leave a key out)."""
    serial: str
    product_type: str | None = None
    role: str | None = None
    api: str | None = None
    address: str | None = None
    last_ts: str | None = None          # the newest stored sample; None: none yet
    age_s: float | None = None
    state: str | None = None            # a catalog DeviceState, or http_<status>
    last_error: str | None = None
    last_error_ts: str | None = None
    samples_since_start: int | None = None
    extras_dropped: int | None = None
    samples_dropped: int | None = None
    damaged_lines: int | None = None
    damaged_files: tuple[DamagedFile, ...] | None = None
    coverage_hourly: tuple[HourCount, ...] | None = None   # None: not asked for


@dataclass(frozen=True)
class StatusDocument:
    """A Pi's status. None: not said (a version-1 status may leave a key out), or null where
    hwpc writes null (no pid while the collector is stopped, never synced, ...)."""
    service_active: bool
    poll_interval_s: float
    devices: tuple[DeviceStatus, ...]
    site_id: str | None = None
    host: str | None = None
    hwpc_version: str | None = None     # the hw-picollector release (JSON key "version")
    now: str | None = None
    pid: int | None = None
    started: str | None = None
    uptime_s: float | None = None
    clock_synchronised: bool | None = None
    clock: str | None = None
    disk_free_mb: float | None = None   # -1: not known
    disk_low: bool | None = None
    write_error: str | None = None
    pending_rows: int | None = None
    extras_dropped: int | None = None
    samples_dropped: int | None = None
    damaged_lines: int | None = None
    backlog_rows: int | None = None
    backlog_bytes: int | None = None
    lines_quarantined: int | None = None
    last_sync_ts: str | None = None
    last_sync: dict[str, Any] | None = None   # last-sync.json as it is

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the current version: ``status_version`` first, then the keys in
        the order hwpc has always printed them."""
        return {VERSION_KEY: STATUS_VERSION, **_dump(self, _STATUS)}

    def to_json(self) -> str:
        """The text `hwpc status --json` prints."""
        return json.dumps(self.to_dict(), indent=2)


# -- the keys -------------------------------------------------------------------------------

_kind = json_kind


def parse_iso(text: str | None) -> int | None:
    """An ISO 8601 time → milliseconds since the epoch (UTC when no zone); None if not one."""
    if not text or not isinstance(text, str):
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    except (ValueError, OverflowError):
        return None


def _finite(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (``10**400``): no number we keep
        return False


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _timestamp(value: Any) -> bool:
    ms = parse_iso(value) if isinstance(value, str) else None
    if ms is None:
        return False
    try:
        store.format_ts(ms)
    except (ValueError, OverflowError):
        return False
    return True


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


ALWAYS, V2, NEVER = "always", "v2", "never"   # when a key must be there


@dataclass(frozen=True)
class _Key:
    name: str                        # in the JSON
    want: str                        # what it must be, for messages
    check: Callable[[Any], bool]
    required: str = V2               # ALWAYS, V2 (from version 2 on) or NEVER
    nullable: bool = False           # hwpc writes null here (any optional key may be null in v1)
    attr: str = ""                   # the field, when not the name
    items: tuple[_Key, ...] | None = None   # an array of objects of these keys ...
    make: Any = None                         # ... made into this class

    @property
    def field(self) -> str:
        return self.attr or self.name


_COVERAGE = (
    _Key("hour", "a string", _text, ALWAYS),
    _Key("samples", "a whole number >= 0", _whole, ALWAYS),
)
_DAMAGED = (
    _Key("file", "a string", _text, nullable=True),
    _Key("first_offset", "a whole number >= 0", _whole, nullable=True),
    _Key("lines", "a whole number >= 0", _whole, nullable=True),
)
_DEVICE = (
    _Key("serial", "a non-empty string", lambda v: isinstance(v, str) and v != "", ALWAYS),
    _Key("product_type", "a string", _text),
    _Key("role", "a string", _text),
    _Key("api", "a string", _text),
    _Key("address", "a string", _text, nullable=True),
    _Key("last_ts", "an ISO 8601 time or null", _timestamp, ALWAYS, nullable=True),
    _Key("age_s", "a number", _finite, nullable=True),
    _Key("state", "a string", _text),
    _Key("last_error", "a string", _text, nullable=True),
    _Key("last_error_ts", "a string", _text, nullable=True),
    _Key("samples_since_start", "a whole number >= 0", _whole),
    _Key("extras_dropped", "a whole number >= 0", _whole),
    _Key("samples_dropped", "a whole number >= 0", _whole),
    _Key("damaged_lines", "a whole number >= 0", _whole),
    _Key("damaged_files", "an array", lambda v: isinstance(v, list), items=_DAMAGED,
         make=DamagedFile),
    _Key("coverage_hourly", "an array", lambda v: isinstance(v, list), NEVER, items=_COVERAGE,
         make=HourCount),
)
_STATUS = (
    _Key("site_id", "a string", _text),
    _Key("host", "a string", _text),
    _Key("version", "a string", _text, attr="hwpc_version"),
    _Key("now", "an ISO 8601 time", _timestamp),
    # (a config allows any positive interval; below a millisecond, expected counts overflow)
    _Key("poll_interval_s", "a number from 0.001 to 86400",
         lambda v: _finite(v) and 0.001 <= v <= 86400, ALWAYS),
    _Key("service_active", "a boolean", _flag, ALWAYS),
    _Key("pid", "a whole number >= 0", _whole, nullable=True),
    _Key("started", "an ISO 8601 time", _timestamp, nullable=True),
    _Key("uptime_s", "a number", _finite, nullable=True),
    _Key("clock_synchronised", "a boolean", _flag),
    _Key("clock", "a string", _text),
    _Key("disk_free_mb", "a number", _finite),
    _Key("disk_low", "a boolean", _flag),
    _Key("write_error", "a string", _text, nullable=True),
    _Key("pending_rows", "a whole number >= 0", _whole),
    _Key("devices", "an array", lambda v: isinstance(v, list), ALWAYS, items=_DEVICE,
         make=DeviceStatus),
    _Key("extras_dropped", "a whole number >= 0", _whole),
    _Key("samples_dropped", "a whole number >= 0", _whole),
    _Key("damaged_lines", "a whole number >= 0", _whole),
    _Key("backlog_rows", "a whole number >= 0", _whole),
    _Key("backlog_bytes", "a whole number >= 0", _whole),
    _Key("lines_quarantined", "a whole number >= 0", _whole),
    _Key("last_sync_ts", "an ISO 8601 time", _timestamp, nullable=True),
    _Key("last_sync", "an object", lambda v: isinstance(v, dict), nullable=True),
)


# -- reading --------------------------------------------------------------------------------

def status_version(obj: Any) -> int:
    """The format version of a status (1 when it has no ``status_version``)."""
    return format_version(obj, document="status", key=VERSION_KEY, newest=STATUS_VERSION,
                          newer="; update hwpc where the status is read", error=StatusError)


def parse_status(obj: Any) -> StatusDocument:
    """A status as `json.loads` gave it (version 1 or 2) → its `StatusDocument`; a
    `StatusError` naming the key when it is not one."""
    version = status_version(obj)
    return StatusDocument(**_fields(obj, "", _STATUS, version))


def _fields(obj: Any, where: str, keys: tuple[_Key, ...], version: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StatusError(f"{where or 'the status'}: expected an object, got {_kind(obj)}")
    prefix = f"{where}." if where else ""
    out: dict[str, Any] = {}
    for key in keys:
        if key.name not in obj:
            if key.required == ALWAYS or (key.required == V2 and version >= 2):
                raise StatusError(f"{prefix}{key.name} is missing")
            continue
        value = obj[key.name]
        if value is None and (key.nullable or (version < 2 and key.required != ALWAYS)):
            continue
        if not key.check(value):
            raise StatusError(f"{prefix}{key.name}: expected {key.want}, got {_kind(value)}")
        if key.items is not None:
            value = tuple(key.make(**_fields(item, f"{prefix}{key.name}[{i}]", key.items,
                                             version)) for i, item in enumerate(value))
        elif isinstance(value, dict):
            value = dict(value)
        out[key.field] = value
    return out


# -- writing --------------------------------------------------------------------------------

def _dump(obj: Any, keys: tuple[_Key, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        value = getattr(obj, key.field)
        if value is None and key.required == NEVER:
            continue   # (coverage_hourly: only when asked for)
        if key.items is not None and value is not None:
            value = [_dump(item, key.items) for item in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        out[key.name] = value
    return out
