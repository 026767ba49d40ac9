"""The freshness report, typed and versioned: what `judge.build_report` makes, `render` shows,
and `hwpc freshness` writes to ``freshness-latest.json`` (and prints with ``--json``).

Versions (the ``report_version`` key):

- 1: what `hwpc freshness` wrote before the key existed, so a report without it. Its keys
  have been the same since the first release: every one is there.
- 2 (`REPORT_VERSION`): the same keys and values in the same order, plus
  ``"report_version": 2`` first.

(The key is not ``version``: that key has always held the hw-picollector release.)

`parse_report` reads either version into the same `FreshnessReport`; it rejects a newer
version than it knows, a missing key and any value of the wrong kind with a `ReportError`
whose message names the key (``sites[2].devices[0].status``), never the value (a report
holds what Pis in people's homes said, and a file may have been edited since). Keys it does
not know are ignored. `to_dict` and `to_json` write the current version. Data and pure
functions only: no file, socket or clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hw_picollector.catalog import VERDICT_NAMES, Verdict
from hw_picollector.documents import format_version, json_kind
from hw_picollector.status_document import parse_iso
from hw_picollector_controller.freshness.model import Thresholds, finite

__all__ = [
    "REPORT_VERSION",
    "VERSION_KEY",
    "DayCoverage",
    "DeviceReport",
    "FreshnessReport",
    "HourCoverage",
    "ReportError",
    "SiteReport",
    "Summary",
    "parse_report",
    "report_version",
]

REPORT_VERSION = 2
VERSION_KEY = "report_version"


class ReportError(ValueError):
    """Not a report this code reads: the message names the key at fault, never its value."""


@dataclass(frozen=True)
class HourCoverage:
    """Samples of one device in one UTC hour (``YYYY-MM-DDTHH``) against those expected.
    None: no data (the Pi did not say, Cassandra has no count, or the series had not begun)."""
    hour: str
    expected: int
    local: int | None
    central: int | None


@dataclass(frozen=True)
class DayCoverage:
    """Samples of one device in Cassandra on one UTC day (``YYYY-MM-DD``)."""
    day: str
    samples: int
    expected: int
    coverage: float | None      # samples / expected, at most 1; None: nothing expected


@dataclass(frozen=True)
class DeviceReport:
    """One device of a site and its verdict."""
    serial: str
    last_local_ts: str | None   # the newest sample on the Pi (None: none, or no answer)
    last_central_ts: str | None  # the newest row in Cassandra
    age_s: float | None          # of the newest sample the verdict looks at
    sync_lag_s: float | None
    status: Verdict
    device_state: str | None    # what the Pi says of the meter (a catalog DeviceState, ...)
    last_error: str | None
    coverage_hourly: tuple[HourCoverage, ...]
    coverage_daily: tuple[DayCoverage, ...]   # by day, oldest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "last_local_ts": self.last_local_ts,
            "last_central_ts": self.last_central_ts,
            "age_s": self.age_s,
            "sync_lag_s": self.sync_lag_s,
            "status": self.status,
            "device_state": self.device_state,
            "last_error": self.last_error,
            "coverage_hourly": [{"hour": c.hour, "expected": c.expected, "local": c.local,
                                 "central": c.central} for c in self.coverage_hourly],
            "coverage_daily": {c.day: {"samples": c.samples, "expected": c.expected,
                                       "coverage": c.coverage} for c in self.coverage_daily},
        }


@dataclass(frozen=True)
class SiteReport:
    """One site: its devices, what its Pi said (or, when it said nothing usable, its newest
    heartbeat in Cassandra), its verdict and why. None: not known."""
    site_id: str
    host: str
    reachable: bool
    service_active: bool | None
    devices: tuple[DeviceReport, ...]
    backlog_rows: int | None
    last_sync_ts: str | None
    uptime_s: float | None
    heartbeat_ts: str | None
    heartbeat_age_s: float | None
    disk_free_mb: float | None
    clock_synchronised: bool | None
    verdict: Verdict
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "host": self.host,
            "reachable": self.reachable,
            "service_active": self.service_active,
            "devices": [d.to_dict() for d in self.devices],
            "backlog_rows": self.backlog_rows,
            "last_sync_ts": self.last_sync_ts,
            "uptime_s": self.uptime_s,
            "heartbeat_ts": self.heartbeat_ts,
            "heartbeat_age_s": self.heartbeat_age_s,
            "disk_free_mb": self.disk_free_mb,
            "clock_synchronised": self.clock_synchronised,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Summary:
    """How many sites, and how many of them have each verdict."""
    sites: int
    ok: int
    lagging: int
    stale: int
    down: int

    def count(self, verdict: Verdict) -> int:
        return {Verdict.OK: self.ok, Verdict.LAGGING: self.lagging, Verdict.STALE: self.stale,
                Verdict.DOWN: self.down}[verdict]


@dataclass(frozen=True)
class FreshnessReport:
    """The fleet's report. ``ok``: every site ok and Cassandra answered."""
    generated_ts: str
    hwpc_version: str            # the hw-picollector release (JSON key "version")
    thresholds: Thresholds
    central_error: str | None    # why Cassandra did not answer; None: it did
    summary: Summary
    ok: bool
    sites: tuple[SiteReport, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the current version: ``report_version`` first, then the keys
        in the order `hwpc freshness` has always written them."""
        th = self.thresholds
        return {
            VERSION_KEY: REPORT_VERSION,
            "generated_ts": self.generated_ts,
            "version": self.hwpc_version,
            "thresholds": {"freshness_max_age_s": th.freshness_max_age_s,
                           "sync_max_lag_s": th.sync_max_lag_s,
                           "heartbeat_max_age_s": th.heartbeat_max_age_s},
            "central_error": self.central_error,
            "summary": {"sites": self.summary.sites, "ok": self.summary.ok,
                        "lagging": self.summary.lagging, "stale": self.summary.stale,
                        "down": self.summary.down},
            "ok": self.ok,
            "sites": [s.to_dict() for s in self.sites],
        }

    def to_json(self) -> str:
        """The text `hwpc freshness --json` prints (the report file: this and a newline)."""
        return json.dumps(self.to_dict(), indent=2)


# -- reading --------------------------------------------------------------------------------

_kind = json_kind


def report_version(obj: Any) -> int:
    """The format version of a report (1 when it has no ``report_version``)."""
    return format_version(obj, document="report", key=VERSION_KEY, newest=REPORT_VERSION,
                          newer="; update hwpc where the report is read", error=ReportError)


def parse_report(obj: Any) -> FreshnessReport:
    """A report as `json.loads` gave it (version 1 or 2) → its `FreshnessReport`; a
    `ReportError` naming the key when it is not one."""
    report_version(obj)   # (both versions have the same keys: the version only gates)
    r = _Object(obj, "")
    th = r.object("thresholds")
    summary = r.object("summary")
    return FreshnessReport(
        generated_ts=r.timestamp("generated_ts"),
        hwpc_version=r.text("version"),
        thresholds=Thresholds(freshness_max_age_s=th.number("freshness_max_age_s"),
                              sync_max_lag_s=th.number("sync_max_lag_s"),
                              heartbeat_max_age_s=th.number("heartbeat_max_age_s")),
        central_error=r.optional(r.text, "central_error"),
        summary=Summary(sites=summary.whole("sites"), ok=summary.whole("ok"),
                        lagging=summary.whole("lagging"), stale=summary.whole("stale"),
                        down=summary.whole("down")),
        ok=r.flag("ok"),
        sites=r.objects("sites", _site),
    )


def _site(r: _Object) -> SiteReport:
    return SiteReport(
        site_id=r.text("site_id"),
        host=r.text("host"),
        reachable=r.flag("reachable"),
        service_active=r.optional(r.flag, "service_active"),
        devices=r.objects("devices", _device),
        backlog_rows=r.optional(r.whole, "backlog_rows"),
        last_sync_ts=r.optional(r.timestamp, "last_sync_ts"),
        uptime_s=r.optional(r.number, "uptime_s"),
        heartbeat_ts=r.optional(r.timestamp, "heartbeat_ts"),
        heartbeat_age_s=r.optional(r.number, "heartbeat_age_s"),
        disk_free_mb=r.optional(r.number, "disk_free_mb"),
        clock_synchronised=r.optional(r.flag, "clock_synchronised"),
        verdict=r.verdict("verdict"),
        reasons=r.texts("reasons"),
    )


def _device(r: _Object) -> DeviceReport:
    daily = r.object("coverage_daily")
    return DeviceReport(
        serial=r.text("serial"),
        last_local_ts=r.optional(r.timestamp, "last_local_ts"),
        last_central_ts=r.optional(r.timestamp, "last_central_ts"),
        age_s=r.optional(r.number, "age_s"),
        sync_lag_s=r.optional(r.number, "sync_lag_s"),
        status=r.verdict("status"),
        device_state=r.optional(r.text, "device_state"),
        last_error=r.optional(r.text, "last_error"),
        coverage_hourly=r.objects("coverage_hourly", lambda c: HourCoverage(
            hour=c.text("hour"), expected=c.whole("expected"),
            local=c.optional(c.whole, "local"), central=c.optional(c.whole, "central"))),
        coverage_daily=tuple(DayCoverage(
            day=day, samples=c.whole("samples"), expected=c.whole("expected"),
            coverage=c.optional(c.number, "coverage")) for day, c in daily.each_object()),
    )


T = TypeVar("T")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class _Object:
    """One JSON object of a report, read key by key; ``where`` names it in messages."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ReportError(f"{where or 'the report'}: expected an object, got {_kind(obj)}")
        self._obj: dict[str, Any] = obj
        self._where = where

    def _path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> Any:
        if key not in self._obj:
            raise ReportError(f"{self._path(key)} is missing")
        return self._obj[key]

    def _wrong(self, key: str, want: str) -> ReportError:
        return ReportError(f"{self._path(key)}: expected {want}, got {_kind(self._obj[key])}")

    def optional(self, read: Callable[[str], T], key: str) -> T | None:
        """``read(key)``, or None where the report has null."""
        return None if self._get(key) is None else read(key)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def timestamp(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or parse_iso(value) is None:
            raise self._wrong(key, "an ISO 8601 time")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean")
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if not isinstance(value, int | float) or not finite(value):
            raise self._wrong(key, "a number")
        return value   # (an int stays one: the report is written back as it was read)

    def whole(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._wrong(key, "a whole number >= 0")
        return value

    def verdict(self, key: str) -> Verdict:
        value = self._get(key)
        if not isinstance(value, str) or value not in VERDICT_NAMES:
            raise self._wrong(key, f"one of {', '.join(VERDICT_NAMES)}")
        return Verdict(value)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ReportError(f"{self._path(key)}[{i}]: expected a string, "
                                  f"got {_kind(item)}")
        return tuple(value)

    def object(self, key: str) -> _Object:
        self._get(key)
        return _Object(self._obj[key], self._path(key))

    def objects(self, key: str, make: Callable[[_Object], T]) -> tuple[T, ...]:
        """An array of objects, each made into a ``T``."""
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array")
        return tuple(make(_Object(item, f"{self._path(key)}[{i}]"))
                     for i, item in enumerate(value))

    def each_object(self) -> list[tuple[str, _Object]]:
        """A map by day: each key (a UTC day) with its value read as an object. (A key that
        is not a day is not repeated: a report's keys are ours, an edited file's may not be.)"""
        for key in self._obj:
            if not _DAY.fullmatch(key):
                raise ReportError(f"{self._where}: expected days (YYYY-MM-DD) as keys, got "
                                  "another key")
        return [(key, _Object(value, self._path(key))) for key, value in self._obj.items()]
