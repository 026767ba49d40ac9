"""The verdict, pure: one site's report entry from what its Pi said (`SiteInput`) and what
Cassandra knows (`Central`) at a given time (`judge`), and the whole report with its summary
(`build_report`). No file, socket or clock: everything comes in as arguments.

Verdicts, worst first:
- ``down``: the host does not answer and has no heartbeat within ``heartbeat_max_age_s``;
- ``stale``: a device's newest sample (local when the host answers, central otherwise) is
  older than ``freshness_max_age_s`` (or there is none);
- ``lagging``: fresh on the Pi, but the newest central row is older than ``sync_max_lag_s``
  (the sync is broken: wrong password, database unreachable);
- ``ok``.
"""

from __future__ import annotations

from typing import Any

from hw_picollector import __version__
from hw_picollector.catalog import Verdict
from hw_picollector.status_document import StatusDocument, StatusError, parse_status
from hw_picollector_controller.freshness.model import (
    DAY_MS,
    HOUR_MS,
    VERDICTS,
    Central,
    SiteInput,
    Thresholds,
    hour_windows,
    iso,
    parse_iso,
)


def expected_samples(start_ms: int, end_ms: int, now_ms: int, poll_interval_s: float) -> float:
    """Samples a 1/poll_interval meter produces in [start, min(end, now))."""
    span = max(0, min(end_ms, now_ms) - start_ms)
    return span / 1000 / poll_interval_s


def judge(site: SiteInput, central: Central, now_ms: int, th: Thresholds,
          coverage_hours: int = 24) -> dict[str, Any]:
    """One site's report entry: devices with their status, and the site's verdict."""
    given = site.status if site.reachable else None
    error = site.error
    status: StatusDocument | None = None
    if isinstance(given, StatusDocument):
        status = given
    elif given is not None:  # (load_fleet parses; a SiteInput may come from elsewhere)
        try:
            status = parse_status(given)
        except StatusError as exc:
            error = error or f"malformed status: {exc}"
    local = {d.serial: d for d in status.devices} if status is not None else {}
    poll = float(status.poll_interval_s if status is not None else 1.0)
    serials = list(dict.fromkeys([*site.devices, *local, *central.latest]))
    hours = hour_windows(now_ms, coverage_hours) if coverage_hours > 0 else []
    reasons: list[str] = []
    devices = []
    for serial in serials:
        dev = local.get(serial)
        local_ts = parse_iso(dev.last_ts) if dev is not None else None
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
        local_hours = {c.hour: c.samples for c in
                       (dev.coverage_hourly if dev is not None else None) or ()}
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
            "device_state": dev.state if dev is not None else None,
            "last_error": dev.last_error if dev is not None else None,
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
    # what the Pi said; when it said nothing usable, its newest heartbeat in Cassandra
    if status is not None:
        service_active: Any = status.service_active
        said: dict[str, Any] = {
            "backlog_rows": status.backlog_rows, "last_sync_ts": status.last_sync_ts,
            "uptime_s": status.uptime_s, "disk_free_mb": status.disk_free_mb,
            "clock_synchronised": status.clock_synchronised}
    else:
        b = beat or {}
        service_active = beat.get("collector_active") if beat else None
        said = {"backlog_rows": b.get("backlog_rows"), "last_sync_ts": b.get("ts"),
                "uptime_s": b.get("uptime_s"), "disk_free_mb": b.get("disk_free_mb"),
                "clock_synchronised": b.get("clock_synchronised")}
    return {
        "site_id": site.site_id,
        "host": site.host,
        "reachable": site.reachable,
        "service_active": service_active,
        "devices": devices,
        "backlog_rows": said["backlog_rows"],
        "last_sync_ts": said["last_sync_ts"],
        "uptime_s": said["uptime_s"],
        "heartbeat_ts": beat.get("ts") if beat else None,
        "heartbeat_age_s": beat_age,
        "disk_free_mb": said["disk_free_mb"],
        "clock_synchronised": said["clock_synchronised"],
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

