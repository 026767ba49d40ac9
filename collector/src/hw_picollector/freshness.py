"""`hwpc freshness`: the freshness report (controller side).

Input: a fleet file written by playbooks/check_freshness.yml — per inventory host its site,
its devices and what `hwpc status --json` said (or that the host did not answer). Added here:
what Cassandra knows (`device_latest`, `heartbeats`, sample counts per hour), which is how a
Pi behind a household's NAT is still audited. Output: a verdict per site, a terminal table,
``freshness-latest.json`` and ``freshness-latest.html``.

Verdicts, worst first:
- ``down``: the host does not answer and has no heartbeat within ``heartbeat_max_age_s``;
- ``stale``: a device's newest sample (local when the host answers, central otherwise) is
  older than ``freshness_max_age_s`` (or there is none);
- ``lagging``: fresh on the Pi, but the newest central row is older than ``sync_max_lag_s``
  (the sync is broken: wrong password, database unreachable);
- ``ok``.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hw_picollector import __version__, files, store
from hw_picollector.catalog import Verdict

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
VERDICTS: tuple[Verdict, ...] = tuple(Verdict)  # best to worst
COLOURS: dict[str, str] = {Verdict.OK: "#2e7d32", Verdict.LAGGING: "#ef6c00",
                           Verdict.STALE: "#c62828", Verdict.DOWN: "#6a1b9a"}


@dataclass(frozen=True)
class Thresholds:
    freshness_max_age_s: float = 600.0
    sync_max_lag_s: float = 900.0
    heartbeat_max_age_s: float = 900.0


@dataclass
class SiteInput:
    host: str
    site_id: str
    devices: list[str]
    reachable: bool
    status: dict[str, Any] | None
    error: str | None = None


@dataclass
class Central:
    """What Cassandra knows about one site (empty when the database did not answer)."""
    latest: dict[str, int]                    # serial -> newest ts (ms)
    heartbeat: dict[str, Any] | None          # newest heartbeat row of the host
    hourly: dict[str, dict[str, int]]         # serial -> {YYYY-MM-DDTHH: samples}
    daily: dict[str, dict[str, int]]          # serial -> {YYYY-MM-DD: samples}


def iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else store.format_ts(int(ts_ms))


def parse_iso(text: str | None) -> int | None:
    if not text or not isinstance(text, str):
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    except (ValueError, OverflowError):
        return None


# -- a Pi's status: checked before anything reads it -----------------------------------------
# `hwpc status --json` comes from a machine in someone's home: it is checked against what the
# audit reads from it, and a status that does not fit makes its site "malformed status" (not
# ok) instead of ending the audit of every other site. Messages name keys, never values.

def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _timestamp(value: Any) -> bool:
    ms = parse_iso(value) if isinstance(value, str) else None
    if ms is None:
        return False
    try:
        iso(ms)
    except (ValueError, OverflowError):
        return False
    return True


# key -> (what it must be, check); None is allowed for the optional keys only.
_STATUS_REQUIRED: dict[str, tuple[str, Any]] = {
    "service_active": ("a boolean", lambda v: isinstance(v, bool)),
    # (a config allows any positive interval; below a millisecond, expected counts overflow)
    "poll_interval_s": ("a number from 0.001 to 86400", lambda v: _finite(v)
                        and 0.001 <= v <= 86400),
    "devices": ("an array", lambda v: isinstance(v, list)),
}
_STATUS_OPTIONAL: dict[str, tuple[str, Any]] = {
    "backlog_rows": ("a whole number >= 0", lambda v: isinstance(v, int)
                     and not isinstance(v, bool) and v >= 0),
    "uptime_s": ("a number", _finite),
    "disk_free_mb": ("a number", _finite),
    "clock_synchronised": ("a boolean", lambda v: isinstance(v, bool)),
    "last_sync_ts": ("an ISO 8601 time", _timestamp),
}
_DEVICE_REQUIRED: dict[str, tuple[str, Any]] = {
    "serial": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "last_ts": ("an ISO 8601 time or null", lambda v: v is None or _timestamp(v)),
}
_DEVICE_OPTIONAL: dict[str, tuple[str, Any]] = {
    "state": ("a string", lambda v: isinstance(v, str)),
    "last_error": ("a string", lambda v: isinstance(v, str)),
    "coverage_hourly": ("an array", lambda v: isinstance(v, list)),
}
_COVERAGE_REQUIRED: dict[str, tuple[str, Any]] = {
    "hour": ("a string", lambda v: isinstance(v, str)),
    "samples": ("a whole number >= 0", lambda v: isinstance(v, int)
                and not isinstance(v, bool) and v >= 0),
}


def _object_problem(obj: Any, where: str, required: dict[str, tuple[str, Any]],
                    optional: dict[str, tuple[str, Any]]) -> str | None:
    if not isinstance(obj, dict):
        return f"{where or 'the status'}: expected an object, got {_json_kind(obj)}"
    prefix = f"{where}." if where else ""
    for key, (want, ok) in required.items():
        if key not in obj:
            return f"{prefix}{key} is missing"
        if not ok(obj[key]):
            return f"{prefix}{key}: expected {want}, got {_json_kind(obj[key])}"
    for key, (want, ok) in optional.items():
        if obj.get(key) is not None and not ok(obj[key]):
            return f"{prefix}{key}: expected {want}, got {_json_kind(obj[key])}"
    return None


def status_problem(status: Any) -> str | None:
    """What makes a Pi's status unusable for the audit, or None. Keys the audit does not read
    may be anything (a newer hwpc may add some)."""
    problem = _object_problem(status, "", _STATUS_REQUIRED, _STATUS_OPTIONAL)
    if problem:
        return problem
    for i, dev in enumerate(status["devices"]):
        problem = _object_problem(dev, f"devices[{i}]", _DEVICE_REQUIRED, _DEVICE_OPTIONAL)
        if problem:
            return problem
        for j, cell in enumerate(dev.get("coverage_hourly") or []):
            problem = _object_problem(cell, f"devices[{i}].coverage_hourly[{j}]",
                                      _COVERAGE_REQUIRED, {})
            if problem:
                return problem
    return None


# -- input ----------------------------------------------------------------------------------

def load_fleet(path: Path) -> list[SiteInput]:
    """The fleet file: ``{"sites": [{host, site_id, devices, reachable, rc, stdout, stderr}]}``.
    A status that is not JSON, or not what `hwpc status --json` prints ("malformed status"), is
    kept as an error, never fatal: the site is still judged, and so is every other site."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries = raw.get("sites", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected {{\"sites\": [...]}}")
    sites = []
    for i, s in enumerate(entries):
        where = f"{path}: sites[{i}]"
        if not isinstance(s, dict) or not s.get("host") or not s.get("site_id"):
            raise ValueError(f"{where}: needs host and site_id")
        if not isinstance(s.get("devices") or [], list):
            raise ValueError(f"{where}: devices must be a list of serials")
        status, error = None, None
        reachable = bool(s.get("reachable", False))
        if reachable:
            rc = s.get("rc", 0)
            stderr = s.get("stderr")
            lines = stderr.strip().splitlines() if isinstance(stderr, str) else []
            last = f": {lines[-1]}" if lines else ""
            if rc is None:  # the module never ran it (sudo refused, no interpreter, ...)
                error = f"hwpc status did not run{last}"
            elif rc != 0:
                error = f"hwpc status exited {rc}{last}"
            elif not isinstance(s.get("stdout") or "", str):
                error = "malformed status: stdout is not text"
            else:
                try:
                    status = json.loads(s.get("stdout") or "")
                except (ValueError, RecursionError):
                    error = "hwpc status did not print JSON"
                else:
                    problem = status_problem(status)
                    if problem:
                        status, error = None, f"malformed status: {problem}"
        devices = [str(d) for d in s.get("devices") or []]
        sites.append(SiteInput(host=str(s["host"]), site_id=str(s["site_id"]), devices=devices,
                               reachable=reachable, status=status, error=error))
    return sites


# -- Cassandra ------------------------------------------------------------------------------

def _hour_windows(now_ms: int, hours: int) -> list[int]:
    end = now_ms - now_ms % HOUR_MS + HOUR_MS
    return list(range(end - hours * HOUR_MS, end, HOUR_MS))


def query_central(session: Any, keyspace: str, sites: list[SiteInput], now_ms: int, *,
                  coverage_hours: int = 24, concurrency: int = 64) -> dict[str, Central]:
    """device_latest and the newest heartbeat for every site, and sample counts per hour and
    per day for every device; queries run concurrently with bounded in-flight requests."""
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.util import Date

    ks = keyspace
    latest_q = session.prepare(f"SELECT device_id, ts FROM {ks}.device_latest WHERE site_id = ?")
    beat_q = session.prepare(
        f"SELECT ts, site_id, version, uptime_s, collector_active, backlog_rows, backlog_bytes, "
        f"disk_free_mb, clock_synchronised, rows_synced, last_error FROM {ks}.heartbeats "
        f"WHERE host = ? AND day = ? LIMIT 1")
    count_q = session.prepare(
        f"SELECT COUNT(*) FROM {ks}.measurements WHERE site_id = ? AND device_id = ? "
        f"AND day = ? AND ts >= ? AND ts < ?")

    def run(stmt: Any, params: list[tuple[Any, ...]]) -> list[Any]:
        out = []
        for ok, result in execute_concurrent_with_args(session, stmt, params,
                                                       concurrency=concurrency,
                                                       raise_on_first_error=False):
            out.append(list(result) if ok else result)
        return out

    def failed(result: Any) -> bool:
        return isinstance(result, BaseException)

    central = {s.site_id: Central({}, None, {}, {}) for s in sites}
    for site, rows in zip(sites, run(latest_q, [(s.site_id,) for s in sites]), strict=True):
        if failed(rows):
            log.warning("device_latest of %s: %s", site.site_id, rows)
            continue
        central[site.site_id].latest = {
            r.device_id: int(r.ts.replace(tzinfo=UTC).timestamp() * 1000)
            for r in rows if r.ts is not None}

    today = Date(datetime.fromtimestamp(now_ms // 1000, UTC).date())
    yesterday = Date(datetime.fromtimestamp(now_ms // 1000 - 86_400, UTC).date())
    beats = run(beat_q, [(s.host, d) for s in sites for d in (today, yesterday)])
    for i, site in enumerate(sites):
        for rows in beats[2 * i: 2 * i + 2]:
            if failed(rows) or not rows:
                continue
            r = rows[0]
            central[site.site_id].heartbeat = {
                "ts": iso(int(r.ts.replace(tzinfo=UTC).timestamp() * 1000)),
                "site_id": r.site_id, "version": r.version, "uptime_s": r.uptime_s,
                "collector_active": r.collector_active, "backlog_rows": r.backlog_rows,
                "backlog_bytes": r.backlog_bytes, "disk_free_mb": r.disk_free_mb,
                "clock_synchronised": r.clock_synchronised, "rows_synced": r.rows_synced,
                "last_error": r.last_error}
            break

    if coverage_hours <= 0:
        return central
    hours = _hour_windows(now_ms, coverage_hours)
    days = sorted({h - h % DAY_MS for h in hours})
    keys: list[tuple[str, str, str, int]] = []   # site, serial, "hour"/"day", start
    params: list[tuple[Any, ...]] = []
    for site in sites:
        serials = sorted(set(site.devices) | set(central[site.site_id].latest))
        for serial in serials:
            for h in hours:
                keys.append((site.site_id, serial, "hour", h))
                params.append((site.site_id, serial, Date(h // DAY_MS), _dt(h), _dt(h + HOUR_MS)))
            for d in days:
                keys.append((site.site_id, serial, "day", d))
                params.append((site.site_id, serial, Date(d // DAY_MS), _dt(d), _dt(d + DAY_MS)))
    for (site_id, serial, kind, start), rows in zip(keys, run(count_q, params), strict=True):
        if failed(rows):
            continue
        n = int(rows[0][0]) if rows else 0
        c = central[site_id]
        if kind == "hour":
            c.hourly.setdefault(serial, {})[iso(start)[:13]] = n  # type: ignore[index]
        else:
            c.daily.setdefault(serial, {})[iso(start)[:10]] = n  # type: ignore[index]
    return central


def _dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


# -- verdicts (pure) ------------------------------------------------------------------------

def expected_samples(start_ms: int, end_ms: int, now_ms: int, poll_interval_s: float) -> float:
    """Samples a 1/poll_interval meter produces in [start, min(end, now))."""
    span = max(0, min(end_ms, now_ms) - start_ms)
    return span / 1000 / poll_interval_s


def judge(site: SiteInput, central: Central, now_ms: int, th: Thresholds,
          coverage_hours: int = 24) -> dict[str, Any]:
    """One site's report entry: devices with their status, and the site's verdict."""
    status = site.status if site.reachable else None
    error = site.error
    problem = None if status is None else status_problem(status)
    if problem:  # (load_fleet checks too; a SiteInput may come from elsewhere)
        status, error = None, error or f"malformed status: {problem}"
    local = {d["serial"]: d for d in (status or {}).get("devices", [])}
    poll = float((status or {}).get("poll_interval_s") or 1.0)
    serials = list(dict.fromkeys([*site.devices, *local, *central.latest]))
    hours = _hour_windows(now_ms, coverage_hours) if coverage_hours > 0 else []
    reasons: list[str] = []
    devices = []
    for serial in serials:
        local_ts = parse_iso(local.get(serial, {}).get("last_ts"))
        central_ts = central.latest.get(serial)
        newest = local_ts if site.reachable else central_ts
        age = None if newest is None else round((now_ms - newest) / 1000, 1)
        lag = None if central_ts is None else round((now_ms - central_ts) / 1000, 1)
        where = "local" if site.reachable else "central"
        if age is None or age > th.freshness_max_age_s:
            state = Verdict.STALE
            reasons.append(f"{serial}: no {where} sample" if age is None else
                           f"{serial}: newest {where} sample {age:.0f} s old "
                           f"(max {th.freshness_max_age_s:g})")
        elif site.reachable and (lag is None or lag > th.sync_max_lag_s):
            state = Verdict.LAGGING
            reasons.append(f"{serial}: fresh on the Pi, but " + (
                "nothing in Cassandra" if lag is None else
                f"newest central sample {lag:.0f} s old (max {th.sync_max_lag_s:g})"))
        else:
            state = Verdict.OK
        local_hours = {c["hour"]: int(c["samples"])
                       for c in local.get(serial, {}).get("coverage_hourly", [])}
        hourly: list[dict[str, Any]] = []
        for h in hours:
            key = iso(h)[:13]  # type: ignore[index]
            exp = expected_samples(h, h + HOUR_MS, now_ms, poll)
            hourly.append({
                "hour": key,
                "expected": round(exp),
                "local": local_hours.get(key) if local_hours else None,
                "central": central.hourly.get(serial, {}).get(key),
            })
        # Hours before a series' first sample are "no data yet" (a Pi deployed an hour ago
        # has no missing day behind it), not zero coverage.
        for key in ("local", "central"):
            for cell in hourly:
                if cell[key]:
                    break
                cell[key] = None
        daily = {}
        for day, n in sorted(central.daily.get(serial, {}).items()):
            start = parse_iso(day + "T00:00:00Z") or 0
            exp = expected_samples(start, start + DAY_MS, now_ms, poll)
            daily[day] = {"samples": n, "expected": round(exp), "coverage": _ratio(n, exp)}
        devices.append({
            "serial": serial,
            "last_local_ts": iso(local_ts),
            "last_central_ts": iso(central_ts),
            "age_s": age,
            "sync_lag_s": lag,
            "status": state,
            "device_state": local.get(serial, {}).get("state"),
            "last_error": local.get(serial, {}).get("last_error"),
            "coverage_hourly": hourly,
            "coverage_daily": daily,
        })

    beat = central.heartbeat
    beat_ms = parse_iso(beat["ts"]) if beat else None
    beat_age = None if beat_ms is None else round((now_ms - beat_ms) / 1000, 1)
    if not site.reachable and (beat_age is None or beat_age > th.heartbeat_max_age_s):
        verdict = Verdict.DOWN
        reasons.insert(0, "host does not answer and " + (
            "has never sent a heartbeat" if beat_age is None else
            f"its newest heartbeat is {beat_age:.0f} s old (max {th.heartbeat_max_age_s:g})"))
    else:
        worst = max((VERDICTS.index(d["status"]) for d in devices), default=0)
        verdict = VERDICTS[worst]
        if not devices:
            verdict = Verdict.STALE
            reasons.append("no device configured or seen")
    if error:
        reasons.insert(0, error)
    if not site.reachable and verdict != Verdict.DOWN:
        reasons.insert(0, f"host does not answer; judged from Cassandra "
                          f"(heartbeat {beat_age:.0f} s old)")
    src = status if status is not None else (beat or {})
    service_active = status.get("service_active") if status is not None else (
        beat.get("collector_active") if beat else None)
    return {
        "site_id": site.site_id,
        "host": site.host,
        "reachable": site.reachable,
        "service_active": service_active,
        "devices": devices,
        "backlog_rows": src.get("backlog_rows"),
        "last_sync_ts": status.get("last_sync_ts") if status is not None else (
            beat.get("ts") if beat else None),
        "uptime_s": src.get("uptime_s"),
        "heartbeat_ts": beat.get("ts") if beat else None,
        "heartbeat_age_s": beat_age,
        "disk_free_mb": src.get("disk_free_mb"),
        "clock_synchronised": src.get("clock_synchronised"),
        "verdict": verdict,
        "reasons": reasons,
    }


def _ratio(n: int | None, expected: float) -> float | None:
    if n is None or expected <= 0:
        return None
    return round(min(1.0, n / expected), 4)


def build_report(sites: list[SiteInput], central: dict[str, Central], now_ms: int,
                 th: Thresholds, *, coverage_hours: int = 24,
                 central_error: str | None = None) -> dict[str, Any]:
    entries = [judge(s, central.get(s.site_id, Central({}, None, {}, {})), now_ms, th,
                     coverage_hours) for s in sites]
    counts = {v: sum(1 for e in entries if e["verdict"] == v) for v in VERDICTS}
    return {
        "generated_ts": iso(now_ms),
        "version": __version__,
        "thresholds": {"freshness_max_age_s": th.freshness_max_age_s,
                       "sync_max_lag_s": th.sync_max_lag_s,
                       "heartbeat_max_age_s": th.heartbeat_max_age_s},
        "central_error": central_error,
        "summary": {"sites": len(entries), **counts},
        "ok": all(e["verdict"] == Verdict.OK for e in entries) and central_error is None,
        "sites": entries,
    }


# -- rendering ------------------------------------------------------------------------------
# Every value reaches the terminal and the page through _clean (text) or _num (numbers): the
# report holds what Pis and inventories said, and a report file may have been edited since.

_UNPRINTABLE = frozenset(("Zl", "Zp"))


def _clean(value: Any, replacement: str = "?") -> str:
    """Text without control, format (bidi overrides, zero-width), surrogate or line-separator
    characters: nothing that moves a terminal's cursor, recolours it, or reorders a line."""
    text = value if isinstance(value, str) else ("-" if value is None else str(value))
    return "".join(replacement if unicodedata.category(c)[0] == "C"
                   or unicodedata.category(c) in _UNPRINTABLE else c for c in text)


def _num(value: Any, spec: str = "") -> str:
    """A finite number as text; anything else is '-'."""
    if not _finite(value):
        return "-"
    return format(value, spec)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _age(seconds: Any) -> str:
    if not _finite(seconds):
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _flag(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value is True else "NO" if value is False else "?"


def _colour(verdict: Any) -> str:
    return COLOURS.get(verdict, "#757575") if isinstance(verdict, str) else "#757575"


def render_table(report: dict[str, Any]) -> str:
    head = ("SITE", "HOST", "VERDICT", "REACH", "SERVICE", "DEVICES", "NEWEST", "LAG",
            "BACKLOG", "LAST SYNC", "UPTIME")
    rows: list[tuple[str, ...]] = [head]
    sites = [_dict(e) for e in _list(report.get("sites"))]
    for e in sites:
        devs = [_dict(d) for d in _list(e.get("devices"))]
        ok = sum(1 for d in devs if d.get("status") == Verdict.OK)
        ages = [d["age_s"] for d in devs if _finite(d.get("age_s"))]
        lags = [d["sync_lag_s"] for d in devs if _finite(d.get("sync_lag_s"))]
        last_sync = e.get("last_sync_ts")
        last_sync = (last_sync[:19].replace("T", " ") if isinstance(last_sync, str) and last_sync
                     else "never")
        verdict = e.get("verdict")
        rows.append(tuple(_clean(c) for c in (
            e.get("site_id"), e.get("host"),
            verdict if verdict == Verdict.OK else str(verdict).upper(),
            _flag(e.get("reachable")), _flag(e.get("service_active")),
            f"{ok}/{len(devs)} ok", _age(max(ages) if ages else None),
            _age(max(lags) if lags else None), _num(e.get("backlog_rows")),
            last_sync, _age(e.get("uptime_s")))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in sites:
        for reason in _list(e.get("reasons")):
            lines.append(f"  {_clean(e.get('site_id'))}: {_clean(reason)}")
    s = _dict(report.get("summary"))
    lines.append(f"{_num(s.get('sites'))} sites: {_num(s.get('ok'))} ok, "
                 f"{_num(s.get('lagging'))} lagging, {_num(s.get('stale'))} stale, "
                 f"{_num(s.get('down'))} down  (report {_clean(report.get('generated_ts'))})")
    if report.get("central_error"):
        lines.append(f"central database: {_clean(report['central_error'])}")
    return "\n".join(lines)


def _cell(n: Any, expected: Any) -> str:
    if not _finite(n):
        return '<td class="na" title="no data"></td>'
    if not _finite(expected) or expected <= 0:
        return '<td class="na" title="future"></td>'
    ratio = max(0.0, min(1.0, n / expected))
    hue = int(120 * ratio)  # red (0) to green (120)
    return (f'<td style="background:hsl({hue},65%,{45 + int(20 * (1 - ratio))}%)" '
            f'title="{int(n)} of {int(expected)} samples ({100 * ratio:.1f} %)"></td>')


def render_html(report: dict[str, Any]) -> str:
    def esc(value: Any) -> str:
        return html.escape(_clean(value, "\ufffd"), quote=True)

    s = _dict(report.get("summary"))
    th = _dict(report.get("thresholds"))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>hw-picollector fleet freshness</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}"
        "h1{font-size:1.4em}.site{border-left:8px solid;padding:.4em 1em;margin:1em 0;"
        "background:#fafafa}.badge{color:#fff;padding:.1em .5em;border-radius:3px;"
        "font-weight:bold}table.strip{border-collapse:collapse;margin:.2em 0}"
        "table.strip td{width:14px;height:14px;border:1px solid #fff}"
        "td.na{background:#e0e0e0}th{text-align:left;font-weight:normal;color:#555;"
        "padding-right:.6em;white-space:nowrap}.meta{color:#555}.why{color:#b71c1c}"
        "table.sum td{padding:0 1em 0 0}</style></head><body>",
        f"<h1>Fleet freshness — {esc(report.get('generated_ts'))}</h1>",
        f"<p class=meta>{_num(s.get('sites'))} sites: "
        + ", ".join(f'<span class=badge style="background:{_colour(v)}">{_num(s.get(v))} {v}'
                    "</span>" for v in VERDICTS)
        + f" · thresholds: fresh ≤ {_num(th.get('freshness_max_age_s'), 'g')} s, "
          f"sync lag ≤ {_num(th.get('sync_max_lag_s'), 'g')} s, "
          f"heartbeat ≤ {_num(th.get('heartbeat_max_age_s'), 'g')} s"
          " · strips: share of expected samples per hour, last 24 h (local on the Pi, "
          "central in Cassandra); grey = before the first sample</p>",
    ]
    if report.get("central_error"):
        parts.append(f"<p class=why>central database: {esc(report['central_error'])}</p>")
    for e in (_dict(x) for x in _list(report.get("sites"))):
        colour = _colour(e.get("verdict"))
        parts.append(f'<div class=site style="border-color:{colour}">')
        parts.append(f'<h2>{esc(e.get("site_id"))} <small class=meta>on {esc(e.get("host"))}'
                     f'</small> <span class=badge style="background:{colour}">'
                     f'{esc(e.get("verdict"))}</span></h2>')
        parts.append(
            f"<p class=meta>reachable {_flag(e.get('reachable'))} · service "
            f"{_flag(e.get('service_active'))} · uptime {_age(e.get('uptime_s'))} · backlog "
            f"{_num(e.get('backlog_rows'))} rows · last sync "
            f"{esc(e.get('last_sync_ts') or 'never')} · heartbeat "
            f"{esc(e.get('heartbeat_ts') or 'none')} · disk free "
            f"{_num(e.get('disk_free_mb'))} MB</p>")
        for reason in _list(e.get("reasons")):
            parts.append(f"<p class=why>{esc(reason)}</p>")
        for d in (_dict(x) for x in _list(e.get("devices"))):
            day_cov = "; ".join(
                f"{_clean(day)}: {_num(100 * v['coverage'], '.1f')} %"
                for day, v in _dict(d.get("coverage_daily")).items()
                if _finite(_dict(v).get("coverage")))
            parts.append(
                f'<p><b>{esc(d.get("serial"))}</b> <span class=badge style="background:'
                f'{_colour(d.get("status"))}">{esc(d.get("status"))}</span> <span class=meta>'
                f'newest local {esc(d.get("last_local_ts") or "-")}, central '
                f'{esc(d.get("last_central_ts") or "-")}'
                f'{" · coverage " + esc(day_cov) if day_cov else ""}</span></p>')
            hourly = [_dict(c) for c in _list(d.get("coverage_hourly"))]
            if hourly:
                parts.append("<table class=strip>")
                for key in ("local", "central"):
                    cells = "".join(_cell(c.get(key), c.get("expected")) for c in hourly)
                    parts.append(f"<tr><th>{key}</th>{cells}</tr>")
                parts.append(f'<tr><th></th><td colspan={len(hourly)} class=meta '
                             f'style="border:0;width:auto">{esc(hourly[0].get("hour"))}:00 … '
                             f'{esc(hourly[-1].get("hour"))}:59 UTC</td></tr></table>')
        parts.append("</div>")
    parts.append(f"<p class=meta>hw-picollector {esc(report.get('version'))}</p></body></html>")
    return "\n".join(parts)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # durable=False as before: a report each run rewrites whole; a lost one is made again
    files.replace_atomically(path, text, durable=False)


def write_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    json_path, html_path = out_dir / "freshness-latest.json", out_dir / "freshness-latest.html"
    write_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_atomic(html_path, render_html(report))
    return json_path, html_path


# -- command --------------------------------------------------------------------------------

def run(config_path: str, fleet_path: Path, out_dir: Path, th: Thresholds, *,
        coverage_hours: int, fail: bool, as_json: bool) -> int:
    from hw_picollector.cassandra_session import DatabaseError, connect
    from hw_picollector.config import load_config

    sites = load_fleet(fleet_path)
    config = load_config(config_path)
    if config.cassandra is None:
        raise ValueError(f"{config_path}: no cassandra section")
    now_ms = time.time_ns() // 1_000_000
    central: dict[str, Central] = {}
    central_error = None
    try:
        cluster, session = connect(config.cassandra)
    except DatabaseError as exc:
        central_error = str(exc)
    else:
        try:
            central = query_central(session, config.cassandra.keyspace, sites, now_ms,
                                    coverage_hours=coverage_hours)
        except Exception as exc:  # the report is still written, with the local half
            central_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        finally:
            cluster.shutdown()
    report = build_report(sites, central, now_ms, th, coverage_hours=coverage_hours,
                          central_error=central_error)
    json_path, html_path = write_reports(report, out_dir)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
        print(f"report: {json_path.resolve()}\nhtml:   {html_path.resolve()}")
    return 0 if report["ok"] or not fail else 1

