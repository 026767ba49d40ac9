"""The audit's vocabulary, shared by its other modules: the thresholds, what is known about a
site before it is judged (`SiteInput` from the Pi, `Central` and its `Heartbeat` from
Cassandra), and the time helpers (ISO timestamps, UTC hour windows). Data and pure functions
only. (What comes out of the audit, the report, is report.py's.)"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hw_picollector import store
from hw_picollector.catalog import Verdict
from hw_picollector.status_document import StatusDocument, parse_iso

__all__ = ["DAY_MS", "HOUR_MS", "VERDICTS", "Central", "Heartbeat", "SiteInput", "Thresholds",
           "finite", "hour_windows", "iso", "parse_iso"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
VERDICTS: tuple[Verdict, ...] = tuple(Verdict)  # best to worst


@dataclass(frozen=True)
class Thresholds:
    freshness_max_age_s: float = 600.0
    sync_max_lag_s: float = 900.0
    heartbeat_max_age_s: float = 900.0


@dataclass
class SiteInput:
    """One site of the fleet file: its Pi's status when it answered, else why not."""
    host: str
    site_id: str
    devices: list[str]
    reachable: bool
    # parsed by load_fleet; a JSON object as `hwpc status --json` prints it is parsed by judge
    status: StatusDocument | dict[str, Any] | None
    error: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    """A host's newest row of ``heartbeats`` (its sync writes one a run). None: null there."""
    ts: str                                   # ISO 8601
    site_id: str | None = None
    version: str | None = None
    uptime_s: float | None = None
    collector_active: bool | None = None
    backlog_rows: int | None = None
    backlog_bytes: int | None = None
    disk_free_mb: float | None = None
    clock_synchronised: bool | None = None
    rows_synced: int | None = None
    last_error: str | None = None


@dataclass
class Central:
    """What Cassandra knows about one site (empty when the database did not answer)."""
    latest: dict[str, int]                    # serial -> newest ts (ms)
    heartbeat: Heartbeat | None               # newest heartbeat row of the host
    hourly: dict[str, dict[str, int]]         # serial -> {YYYY-MM-DDTHH: samples}
    daily: dict[str, dict[str, int]]          # serial -> {YYYY-MM-DD: samples}


def iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else store.format_ts(int(ts_ms))


def finite(value: Any) -> bool:
    """A real number (not a boolean, NaN or infinity, nor an integer beyond any float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def hour_windows(now_ms: int, hours: int) -> list[int]:
    """The starts of the last ``hours`` UTC hours, the current one last."""
    end = now_ms - now_ms % HOUR_MS + HOUR_MS
    return list(range(end - hours * HOUR_MS, end, HOUR_MS))
