"""What Cassandra knows about each site (`query_central`): its devices' newest rows
(`device_latest`), the host's newest heartbeat, and sample counts per hour and per day from
`measurements`. This is how a Pi behind a household's NAT is still audited. The audit's only
database access; read-only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from hw_picollector import store
from hw_picollector_controller.freshness.model import (
    DAY_MS,
    HOUR_MS,
    Central,
    Heartbeat,
    SiteInput,
    hour_windows,
)

log = logging.getLogger(__name__)


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
            central[site.site_id].heartbeat = Heartbeat(
                ts=store.format_ts(int(r.ts.replace(tzinfo=UTC).timestamp() * 1000)),
                site_id=r.site_id, version=r.version, uptime_s=r.uptime_s,
                collector_active=r.collector_active, backlog_rows=r.backlog_rows,
                backlog_bytes=r.backlog_bytes, disk_free_mb=r.disk_free_mb,
                clock_synchronised=r.clock_synchronised, rows_synced=r.rows_synced,
                last_error=r.last_error)
            break

    if coverage_hours <= 0:
        return central
    hours = hour_windows(now_ms, coverage_hours)
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
            c.hourly.setdefault(serial, {})[store.format_ts(start)[:13]] = n
        else:
            c.daily.setdefault(serial, {})[store.format_ts(start)[:10]] = n
    return central


def _dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)
