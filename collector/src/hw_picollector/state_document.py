"""The collector's state file (``<data_dir>/state/collector.json``), typed and versioned: written
by `hwpc collect` at every flush (collect/collector.py, through collect/state_file.py), read by
`hwpc status` (health.py), and through it by the sync's heartbeat and the metrics.

Versions (the ``state_version`` key):

- 1: what the collector wrote before the key existed, so a state without it. Earlier releases
  wrote fewer keys (no damage counts, no drop counters): any key may be missing or null and
  then reads as not said (None, or 0 for a counter; a device's ``serial`` is its key in
  ``devices``). An entry of ``damaged_files`` has its three keys.
- 2 (`STATE_VERSION`): the same keys and values, plus ``"state_version": 2``. Every key is
  there, null only where the collector writes null (``write_error``, and per device
  ``address``, ``last_ts``, ``last_error``, ``last_error_ts``).

(``version`` is the hw-picollector release, ``"0.1.0"``, as in the status.) A rolling upgrade
reads a version-1 file: the new release's `hwpc status` and sync run while the previous
release's collector, until it restarts, still writes it.

`parse_state` reads either version into the same `CollectorState`; it rejects a newer version
than it knows and any value of the wrong kind with a `StateError` whose message names the key,
never the value. Keys it does not know are ignored. `to_dict` and `to_json` write the current
version (`to_json`: keys sorted, the text the collector has always written plus the version
key). Data and pure functions only: no file, socket or clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from hw_picollector import store
from hw_picollector.documents import format_version, json_kind

__all__ = [
    "STATE_FILE",
    "STATE_VERSION",
    "VERSION_KEY",
    "CollectorState",
    "DamageSnapshot",
    "DeviceSnapshot",
    "StateError",
    "parse_state",
    "state_version",
]

STATE_FILE = "state/collector.json"  # under the data directory
STATE_VERSION = 2
VERSION_KEY = "state_version"


class StateError(ValueError):
    """Not a state this code reads: the message names the key at fault, never its value."""


@dataclass(frozen=True)
class DamageSnapshot:
    """A day file with damaged lines in the part the sync has not acknowledged yet."""
    file: str
    first_offset: int   # of the first damaged line
    lines: int


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device as the collector last saw it (counters since the collector started).
    None: not said (a version-1 state may leave a key out), or null where the collector
    writes null."""
    serial: str
    product_type: str | None = None
    address: str | None = None          # where it is polled (mDNS may have moved it)
    state: str | None = None            # a catalog DeviceState, or http_<status>
    last_ts: str | None = None          # the newest sample stored since the start
    last_error: str | None = None
    last_error_ts: str | None = None
    samples: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped_ticks: int = 0
    clock_refused: int = 0
    extras_dropped: int = 0             # extra fields beyond max_extra_keys/max_extra_bytes
    samples_dropped: int = 0            # held in memory beyond max_pending_rows
    damaged_lines: int = 0              # in every damaged file found at the start
    damaged_files: tuple[DamageSnapshot, ...] = ()   # the first few of them

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["damaged_files"] = [asdict(d) for d in self.damaged_files]
        return out


@dataclass(frozen=True)
class CollectorState:
    """The collector's state. None: not said (a version-1 state may leave a key out), or
    null where the collector writes null. ``CollectorState()`` is no state at all: what
    `hwpc status` reads when there is no file (the collector is not running)."""
    hwpc_version: str | None = None     # the hw-picollector release (JSON key "version")
    pid: int | None = None
    started: str | None = None
    updated: str | None = None          # when the collector wrote this state
    clock_synchronised: bool | None = None
    clock: str | None = None
    write_error: str | None = None      # why the store cannot be written; None: it can
    pending_rows: int = 0               # rows held in memory, not yet written
    disk_free_mb: int = -1              # -1: not known
    devices: tuple[DeviceSnapshot, ...] = ()

    def device(self, serial: str) -> DeviceSnapshot | None:
        return next((d for d in self.devices if d.serial == serial), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the current version."""
        out: dict[str, Any] = {VERSION_KEY: STATE_VERSION}
        for key in _STATE:
            out[key.name] = getattr(self, key.field)
        out["devices"] = {d.serial: d.to_dict() for d in self.devices}  # (a tuple as a field)
        return out

    def to_json(self) -> str:
        """The state file's text (keys sorted, as the collector has always written it)."""
        return json.dumps(self.to_dict(), sort_keys=True)


# -- the keys -------------------------------------------------------------------------------

_kind = json_kind


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _timestamp(value: Any) -> bool:
    """A time as the collector writes it (``store.format_ts``)."""
    if not isinstance(value, str):
        return False
    try:
        store.parse_ts(value)
    except (ValueError, OverflowError):
        return False
    return True


@dataclass(frozen=True)
class _Key:
    name: str                        # in the JSON
    want: str                        # what it must be, for messages
    check: Callable[[Any], bool]
    nullable: bool = False           # the collector writes null here
    attr: str = ""                   # the field, when not the name

    @property
    def field(self) -> str:
        return self.attr or self.name


TIME = "an ISO 8601 UTC time with milliseconds"
COUNT = "a whole number >= 0"

_DAMAGE = (
    _Key("file", "a string", _text),
    _Key("first_offset", COUNT, _count),
    _Key("lines", COUNT, _count),
)
_DEVICE = (
    _Key("serial", "a non-empty string", lambda v: isinstance(v, str) and v != ""),
    _Key("product_type", "a string", _text),
    _Key("address", "a string", _text, nullable=True),
    _Key("state", "a string", _text),
    _Key("last_ts", TIME, _timestamp, nullable=True),
    _Key("last_error", "a string", _text, nullable=True),
    _Key("last_error_ts", TIME, _timestamp, nullable=True),
    *(_Key(name, COUNT, _count) for name in (
        "samples", "failures", "consecutive_failures", "skipped_ticks", "clock_refused",
        "extras_dropped", "samples_dropped", "damaged_lines")),
    _Key("damaged_files", "an array", lambda v: isinstance(v, list)),
)
_STATE = (
    _Key("version", "a string", _text, attr="hwpc_version"),
    _Key("pid", COUNT, _count),
    _Key("started", TIME, _timestamp),
    _Key("updated", TIME, _timestamp),
    _Key("clock_synchronised", "a boolean", lambda v: isinstance(v, bool)),
    _Key("clock", "a string", _text),
    _Key("write_error", "a string", _text, nullable=True),
    _Key("pending_rows", COUNT, _count),
    _Key("disk_free_mb", "a whole number >= -1 (-1: not known)",
         lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1),
    _Key("devices", "an object (serial: device)", lambda v: isinstance(v, dict)),
)


# -- reading --------------------------------------------------------------------------------

def state_version(obj: Any) -> int:
    """The format version of a state (1 when it has no ``state_version``)."""
    return format_version(obj, document="state", key=VERSION_KEY, newest=STATE_VERSION,
                          newer=(": the collector that wrote it is a newer release "
                                 "(after a downgrade, restart hw-picollector.service)"),
                          error=StateError)


def parse_state(obj: Any) -> CollectorState:
    """A state as `json.loads` gave it (version 1 or 2) → its `CollectorState`; a
    `StateError` naming the key when it is not one."""
    version = state_version(obj)
    out = _fields(obj, "", _STATE, required=version >= 2)
    devices = out.pop("devices", {})
    return CollectorState(**out, devices=tuple(
        _device(item, serial, version) for serial, item in devices.items()))


def _device(obj: Any, serial: str, version: int) -> DeviceSnapshot:
    where = f"devices.{serial}"
    out = _fields(obj, where, _DEVICE, required=version >= 2)
    if out.setdefault("serial", serial) != serial:
        raise StateError(f"{where}.serial: expected the device's key in devices")
    damaged = out.pop("damaged_files", [])
    out["damaged_files"] = tuple(
        DamageSnapshot(**_fields(item, f"{where}.damaged_files[{i}]", _DAMAGE, required=True))
        for i, item in enumerate(damaged))
    return DeviceSnapshot(**out)


def _fields(obj: Any, where: str, keys: tuple[_Key, ...], *, required: bool) -> dict[str, Any]:
    """The values of ``keys`` in the object ``obj``, by field. ``required``: every key must be
    there, null only where it is nullable; else a missing or null one is left out."""
    if not isinstance(obj, dict):
        raise StateError(f"{where or 'the state'}: expected an object, got {_kind(obj)}")
    prefix = f"{where}." if where else ""
    out: dict[str, Any] = {}
    for key in keys:
        if key.name not in obj:
            if required:
                raise StateError(f"{prefix}{key.name} is missing")
            continue
        value = obj[key.name]
        if value is None and (key.nullable or not required):
            continue
        if not key.check(value):
            raise StateError(f"{prefix}{key.name}: expected {key.want}, got {_kind(value)}")
        out[key.field] = value
    return out
