"""The verdict, pure: one site's report entry (a `SiteReport`) from what its Pi said
(`SiteInput`) and what Cassandra knows (`Central`) at a given time (`judge`), and the whole
report with its summary (`build_report`: a `FreshnessReport`, report.py). No file, socket or
clock: everything comes in as arguments.

Verdicts, worst first:
- ``down``: the host does not answer and has no heartbeat within ``heartbeat_max_age_s``;
- ``stale``: a device's newest sample (local when the host answers, central otherwise) is
  older than ``freshness_max_age_s`` (or there is none);
- ``lagging``: fresh on the Pi, but the newest central row is older than ``sync_max_lag_s``
  (the sync is broken: wrong password, database unreachable);
- ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw_picollector import __version__, store
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
from hw_picollector_controller.freshness.report import (
    DayCoverage,
    DeviceReport,
    FreshnessReport,
    HourCoverage,
    SiteReport,
    Summary,
)


def expected_samples(start_ms: int, end_ms: int, now_ms: int, poll_interval_s: float) -> float:
    """Samples a 1/poll_interval meter produces in [start, min(end, now))."""
    span = max(0, min(end_ms, now_ms) - start_ms)
    return span / 1000 / poll_interval_s


@dataclass(frozen=True)
class _Said:
    """What a site says of itself: its Pi's status, else its newest heartbeat, else nothing."""
    service_active: bool | None = None
    backlog_rows: int | None = None
    last_sync_ts: str | None = None
    uptime_s: float | None = None
    disk_free_mb: float | None = None
    clock_synchronised: bool | None = None


def judge(site: SiteInput, central: Central, now_ms: int, th: Thresholds,
          coverage_hours: int = 24) -> SiteReport:
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
    devices: list[DeviceReport] = []
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
        central_hours = central.hourly.get(serial, {})
        keys = [_hour(h) for h in hours]
        # Hours before a series' first sample are "no data yet" (a Pi deployed an hour ago
        # has no missing day behind it), not zero coverage.
        local_n = _from_first([local_hours.get(k) for k in keys])
        central_n = _from_first([central_hours.get(k) for k in keys])
        hourly = tuple(
            HourCoverage(hour=k, expected=round(expected_samples(h, h + HOUR_MS, now_ms, poll)),
                         local=ln, central=cn)
            for h, k, ln, cn in zip(hours, keys, local_n, central_n, strict=True))
        daily = []
        for day, n in sorted(central.daily.get(serial, {}).items()):
            start = parse_iso(day + "T00:00:00Z") or 0
            exp = expected_samples(start, start + DAY_MS, now_ms, poll)
            daily.append(DayCoverage(day=day, samples=n, expected=round(exp),
                                     coverage=_ratio(n, exp)))
        devices.append(DeviceReport(
            serial=serial,
            last_local_ts=iso(local_ts),
            last_central_ts=iso(central_ts),
            age_s=age,
            sync_lag_s=lag,
            status=state,
            device_state=dev.state if dev is not None else None,
            last_error=dev.last_error if dev is not None else None,
            coverage_hourly=hourly,
            coverage_daily=tuple(daily),
        ))

    beat = central.heartbeat
    beat_ms = parse_iso(beat.ts) if beat else None
    beat_age = None if beat_ms is None else round((now_ms - beat_ms) / 1000, 1)
    if not site.reachable and (beat_age is None or beat_age > th.heartbeat_max_age_s):
        verdict = Verdict.DOWN
        reasons.insert(0, "host does not answer and " + (
            "has never sent a heartbeat" if beat_age is None else
            f"its newest heartbeat is {beat_age:.0f} s old (max {th.heartbeat_max_age_s:g})"))
    else:
        worst = max((VERDICTS.index(d.status) for d in devices), default=0)
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
        said = _Said(service_active=status.service_active, backlog_rows=status.backlog_rows,
                     last_sync_ts=status.last_sync_ts, uptime_s=status.uptime_s,
                     disk_free_mb=status.disk_free_mb,
                     clock_synchronised=status.clock_synchronised)
    elif beat is not None:
        said = _Said(service_active=beat.collector_active, backlog_rows=beat.backlog_rows,
                     last_sync_ts=beat.ts, uptime_s=beat.uptime_s,
                     disk_free_mb=beat.disk_free_mb,
                     clock_synchronised=beat.clock_synchronised)
    else:
        said = _Said()
    return SiteReport(
        site_id=site.site_id,
        host=site.host,
        reachable=site.reachable,
        service_active=said.service_active,
        devices=tuple(devices),
        backlog_rows=said.backlog_rows,
        last_sync_ts=said.last_sync_ts,
        uptime_s=said.uptime_s,
        heartbeat_ts=beat.ts if beat else None,
        heartbeat_age_s=beat_age,
        disk_free_mb=said.disk_free_mb,
        clock_synchronised=said.clock_synchronised,
        verdict=verdict,
        reasons=tuple(reasons),
    )


def _hour(start_ms: int) -> str:
    """The UTC hour (``YYYY-MM-DDTHH``) starting at ``start_ms``."""
    return store.format_ts(start_ms)[:13]


def _from_first(counts: list[int | None]) -> list[int | None]:
    """The counts from the first non-zero one on; None before it (and for all, if none)."""
    first = next((i for i, n in enumerate(counts) if n), len(counts))
    return [None] * first + counts[first:]


def _ratio(n: int | None, expected: float) -> float | None:
    if n is None or expected <= 0:
        return None
    return round(min(1.0, n / expected), 4)


def build_report(sites: list[SiteInput], central: dict[str, Central], now_ms: int,
                 th: Thresholds, *, coverage_hours: int = 24,
                 central_error: str | None = None) -> FreshnessReport:
    """The whole report: every site judged, the summary, and ``ok`` (every site ok and
    Cassandra answered)."""
    entries = tuple(judge(s, central.get(s.site_id, Central({}, None, {}, {})), now_ms, th,
                          coverage_hours) for s in sites)

    def count(verdict: Verdict) -> int:
        return sum(1 for e in entries if e.verdict == verdict)

    return FreshnessReport(
        generated_ts=store.format_ts(now_ms),
        hwpc_version=__version__,
        thresholds=th,
        central_error=central_error,
        summary=Summary(sites=len(entries), ok=count(Verdict.OK),
                        lagging=count(Verdict.LAGGING), stale=count(Verdict.STALE),
                        down=count(Verdict.DOWN)),
        ok=all(e.verdict == Verdict.OK for e in entries) and central_error is None,
        sites=entries,
    )
