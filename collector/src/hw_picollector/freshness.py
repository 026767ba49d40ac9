"""`hwpc audit`: the fleet freshness report (controller side).

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
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hw_picollector import __version__, store

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
VERDICTS = ("ok", "lagging", "stale", "down")  # best to worst
COLOURS = {"ok": "#2e7d32", "lagging": "#ef6c00", "stale": "#c62828", "down": "#6a1b9a"}


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
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


# -- input ----------------------------------------------------------------------------------

def load_fleet(path: Path) -> list[SiteInput]:
    """The fleet file: ``{"sites": [{host, site_id, devices, reachable, rc, stdout, stderr}]}``.
    A status that is not JSON is kept as an error, never fatal: the site is still judged."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    sites = []
    for i, s in enumerate(raw.get("sites", [])):
        where = f"{path}: sites[{i}]"
        if not isinstance(s, dict) or not s.get("host") or not s.get("site_id"):
            raise ValueError(f"{where}: needs host and site_id")
        status, error = None, None
        reachable = bool(s.get("reachable", False))
        if reachable:
            if s.get("rc", 0) != 0:
                lines = (s.get("stderr") or "").strip().splitlines()
                error = f"hwpc status exited {s.get('rc')}" + (f": {lines[-1]}" if lines else "")
            else:
                try:
                    status = json.loads(s.get("stdout") or "")
                except ValueError:
                    error = "hwpc status did not print JSON"
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
    local = {d["serial"]: d for d in (status or {}).get("devices", []) if "serial" in d}
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
            state = "stale"
            reasons.append(f"{serial}: no {where} sample" if age is None else
                           f"{serial}: newest {where} sample {age:.0f} s old "
                           f"(max {th.freshness_max_age_s:g})")
        elif site.reachable and (lag is None or lag > th.sync_max_lag_s):
            state = "lagging"
            reasons.append(f"{serial}: fresh on the Pi, but " + (
                "nothing in Cassandra" if lag is None else
                f"newest central sample {lag:.0f} s old (max {th.sync_max_lag_s:g})"))
        else:
            state = "ok"
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
        verdict = "down"
        reasons.insert(0, "host does not answer and " + (
            "has never sent a heartbeat" if beat_age is None else
            f"its newest heartbeat is {beat_age:.0f} s old (max {th.heartbeat_max_age_s:g})"))
    else:
        worst = max((VERDICTS.index(d["status"]) for d in devices), default=0)
        verdict = VERDICTS[worst]
        if not devices:
            verdict = "stale"
            reasons.append("no device configured or seen")
    if site.error:
        reasons.insert(0, site.error)
    if not site.reachable and verdict != "down":
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
        "ok": all(e["verdict"] == "ok" for e in entries) and central_error is None,
        "sites": entries,
    }


# -- rendering ------------------------------------------------------------------------------

def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def render_table(report: dict[str, Any]) -> str:
    head = ("SITE", "HOST", "VERDICT", "REACH", "SERVICE", "DEVICES", "NEWEST", "LAG",
            "BACKLOG", "LAST SYNC", "UPTIME")
    rows = [head]
    for e in report["sites"]:
        devs = e["devices"]
        ok = sum(1 for d in devs if d["status"] == "ok")
        ages = [d["age_s"] for d in devs if d["age_s"] is not None]
        lags = [d["sync_lag_s"] for d in devs if d["sync_lag_s"] is not None]
        last_sync = e["last_sync_ts"][:19].replace("T", " ") if e["last_sync_ts"] else "never"
        rows.append((e["site_id"], e["host"], e["verdict"].upper() if e["verdict"] != "ok"
                     else "ok", _flag(e["reachable"]), _flag(e["service_active"]),
                     f"{ok}/{len(devs)} ok", _age(max(ages) if ages else None),
                     _age(max(lags) if lags else None),
                     "-" if e["backlog_rows"] is None else str(e["backlog_rows"]),
                     last_sync, _age(e["uptime_s"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in report["sites"]:
        for reason in e["reasons"]:
            lines.append(f"  {e['site_id']}: {reason}")
    s = report["summary"]
    lines.append(f"{s['sites']} sites: {s['ok']} ok, {s['lagging']} lagging, "
                 f"{s['stale']} stale, {s['down']} down  (report {report['generated_ts']})")
    if report.get("central_error"):
        lines.append(f"central database: {report['central_error']}")
    return "\n".join(lines)


def _cell(n: int | None, expected: int) -> str:
    if n is None:
        return '<td class="na" title="no data"></td>'
    ratio = 0.0 if expected <= 0 else min(1.0, n / expected)
    if expected <= 0:
        return '<td class="na" title="future"></td>'
    hue = int(120 * ratio)  # red (0) to green (120)
    return (f'<td style="background:hsl({hue},65%,{45 + int(20 * (1 - ratio))}%)" '
            f'title="{n} of {expected} samples ({100 * ratio:.1f} %)"></td>')


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    s = report["summary"]
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
        f"<h1>Fleet freshness — {esc(report['generated_ts'])}</h1>",
        f"<p class=meta>{s['sites']} sites: "
        + ", ".join(f'<span class=badge style="background:{COLOURS[v]}">{s[v]} {v}</span>'
                    for v in VERDICTS)
        + f" · thresholds: fresh ≤ {report['thresholds']['freshness_max_age_s']:g} s, "
          f"sync lag ≤ {report['thresholds']['sync_max_lag_s']:g} s, "
          f"heartbeat ≤ {report['thresholds']['heartbeat_max_age_s']:g} s"
          " · strips: share of expected samples per hour, last 24 h (local on the Pi, "
          "central in Cassandra); grey = before the first sample</p>",
    ]
    if report.get("central_error"):
        parts.append(f"<p class=why>central database: {esc(report['central_error'])}</p>")
    for e in report["sites"]:
        colour = COLOURS[e["verdict"]]
        parts.append(f'<div class=site style="border-color:{colour}">')
        parts.append(f'<h2>{esc(e["site_id"])} <small class=meta>on {esc(e["host"])}</small> '
                     f'<span class=badge style="background:{colour}">{e["verdict"]}</span></h2>')
        parts.append(
            f"<p class=meta>reachable {_flag(e['reachable'])} · service "
            f"{_flag(e['service_active'])} · uptime {_age(e['uptime_s'])} · backlog "
            f"{'-' if e['backlog_rows'] is None else e['backlog_rows']} rows · last sync "
            f"{esc(e['last_sync_ts'] or 'never')} · heartbeat {esc(e['heartbeat_ts'] or 'none')}"
            f" · disk free {'-' if e['disk_free_mb'] is None else e['disk_free_mb']} MB</p>")
        for reason in e["reasons"]:
            parts.append(f"<p class=why>{esc(reason)}</p>")
        for d in e["devices"]:
            day_cov = "; ".join(
                f"{day}: {100 * v['coverage']:.1f} %" for day, v in d["coverage_daily"].items()
                if v["coverage"] is not None)
            parts.append(
                f'<p><b>{esc(d["serial"])}</b> <span class=badge style="background:'
                f'{COLOURS[d["status"]]}">{d["status"]}</span> <span class=meta>newest local '
                f'{esc(d["last_local_ts"] or "-")}, central {esc(d["last_central_ts"] or "-")}'
                f'{" · coverage " + esc(day_cov) if day_cov else ""}</span></p>')
            if d["coverage_hourly"]:
                parts.append("<table class=strip>")
                for label, key in (("local", "local"), ("central", "central")):
                    cells = "".join(_cell(c[key], c["expected"]) for c in d["coverage_hourly"])
                    parts.append(f"<tr><th>{label}</th>{cells}</tr>")
                first, last = d["coverage_hourly"][0]["hour"], d["coverage_hourly"][-1]["hour"]
                parts.append(f'<tr><th></th><td colspan={len(d["coverage_hourly"])} '
                             f'class=meta style="border:0;width:auto">{esc(first)}:00 … '
                             f'{esc(last)}:59 UTC</td></tr></table>')
        parts.append("</div>")
    parts.append(f"<p class=meta>hw-picollector {esc(report['version'])}</p></body></html>")
    return "\n".join(parts)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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

