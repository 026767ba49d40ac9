"""`hwpc status`: the Pi's own view of its health, for operators and the fleet audit."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hw_picollector import __version__, clock, quarantine, store
from hw_picollector.catalog import DeviceState
from hw_picollector.checkpoints import backlog, read_last_sync
from hw_picollector.collect import STATE_FILE, disk_free_mb
from hw_picollector.config import Config

STALE_STATE_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _count(info: dict[str, Any], key: str) -> int:
    """A counter from the collector's state file (0 when absent or not a count)."""
    value = info.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _damaged_files(info: dict[str, Any]) -> list[dict[str, Any]]:
    files = info.get("damaged_files")
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def _age_s(ts: str | None, now_ms: int) -> float | None:
    return None if ts is None else round((now_ms - store.parse_ts(ts)) / 1000, 3)


HOUR_MS = 3_600_000


def hourly_counts(data_dir: Path, serial: str, start_ms: int, end_ms: int) -> Counter[str]:
    """Samples per UTC hour (``YYYY-MM-DDTHH``) in [start_ms, end_ms), from the day files
    (plain or compressed by retention) that overlap the window."""
    counts: Counter[str] = Counter()
    first, last = store.format_ts(start_ms), store.format_ts(end_ms)
    folder = store.device_dir(data_dir, serial)
    day = start_ms - start_ms % 86_400_000
    while day < end_ms:
        name = store.day_of(day)
        for path, opener in ((folder / f"{name}.csv", open),
                             (folder / f"{name}.csv.gz", gzip.open)):
            if not path.exists():
                continue
            try:
                with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
                    next(fh, None)  # header
                    for line in fh:
                        ts = line[:24]
                        if first <= ts < last and line.endswith("\n"):
                            counts[ts[:13]] += 1
            except (OSError, EOFError):
                continue
            break
        day += 86_400_000
    return counts


def status(config: Config, coverage_hours: int = 0) -> dict[str, Any]:
    now_ms = time.time_ns() // 1_000_000
    state: dict[str, Any] = {}
    state_path = config.data_dir / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    updated_age = _age_s(state.get("updated"), now_ms)
    running = bool(state.get("pid")) and _pid_alive(int(state["pid"])) and \
        updated_age is not None and updated_age < max(STALE_STATE_S, 3 * config.flush_interval_s)
    synced, how = clock.clock_state(config.clock_sync, config.clock_marker)
    free_mb = disk_free_mb(config.data_dir)
    devices = []
    live = state.get("devices", {})
    for dev in config.devices:
        files = store.day_files(config.data_dir, dev.serial)
        last = store.last_row(files[-1]) if files else None
        if last is None and len(files) > 1:
            last = store.last_row(files[-2])
        last_ts = store.format_ts(last[0]) if last else None
        info = live.get(dev.serial, {})
        coverage = None
        if coverage_hours > 0:
            end = now_ms - now_ms % HOUR_MS + HOUR_MS
            counts = hourly_counts(config.data_dir, dev.serial, end - coverage_hours * HOUR_MS,
                                   now_ms + 1)
            coverage = [{"hour": store.format_ts(h)[:13], "samples": counts.get(
                store.format_ts(h)[:13], 0)} for h in range(end - coverage_hours * HOUR_MS,
                                                            end, HOUR_MS)]
        devices.append({
            "serial": dev.serial,
            "product_type": dev.product_type,
            "role": dev.role,
            "api": dev.api,
            "address": info.get("address", dev.address),
            "last_ts": last_ts,
            "age_s": _age_s(last_ts, now_ms),
            "state": info.get("state", DeviceState.NOT_RUNNING) if running
            else DeviceState.NOT_RUNNING,
            "last_error": info.get("last_error"),
            "last_error_ts": info.get("last_error_ts"),
            "samples_since_start": info.get("samples", 0),
            # since the collector started: extra fields over the caps, samples dropped while
            # the store could not be written; damaged lines found at its start
            "extras_dropped": _count(info, "extras_dropped"),
            "samples_dropped": _count(info, "samples_dropped"),
            "damaged_lines": _count(info, "damaged_lines"),
            "damaged_files": _damaged_files(info),
            **({"coverage_hourly": coverage} if coverage is not None else {}),
        })
    rows, size = backlog(config.data_dir)
    last_sync = read_last_sync(config.data_dir)
    started = state.get("started") if running else None
    return {
        "site_id": config.site_id,
        "host": config.host or socket.gethostname(),
        "version": __version__,
        "now": store.format_ts(now_ms),
        "poll_interval_s": config.poll_interval_s,
        "service_active": running,
        "pid": state.get("pid") if running else None,
        "started": started,
        "uptime_s": _age_s(started, now_ms),
        "clock_synchronised": synced,
        "clock": how,
        "disk_free_mb": free_mb,
        "disk_low": 0 <= free_mb < config.disk_min_free_mb,
        "write_error": state.get("write_error") if running else None,
        "pending_rows": state.get("pending_rows", 0) if running else 0,
        "devices": devices,
        # totals over the devices (the sync's heartbeat reads these)
        "extras_dropped": sum(d["extras_dropped"] for d in devices),
        "samples_dropped": sum(d["samples_dropped"] for d in devices),
        "damaged_lines": sum(d["damaged_lines"] for d in devices),
        "backlog_rows": rows,
        "backlog_bytes": size,
        "lines_quarantined": quarantine.count(config.data_dir),  # lines the sync cannot send
        "last_sync_ts": last_sync.get("finished") if last_sync else None,
        "last_sync": last_sync,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"site {report['site_id']} on {report['host']} (hw-picollector {report['version']})",
        f"collector: {'running' if report['service_active'] else 'NOT running'}"
        + (f", up {report['uptime_s']:.0f} s" if report["uptime_s"] is not None else ""),
        f"clock: {'synchronised' if report['clock_synchronised'] else 'NOT synchronised'}"
        f" ({report['clock']})",
        f"disk free: {report['disk_free_mb']} MB" + ("  LOW" if report["disk_low"] else ""),
    ]
    if report["write_error"]:
        lines.append(f"store write error: {report['write_error']} "
                     f"({report['pending_rows']} rows held in memory)")
    if report.get("lines_quarantined"):
        lines.append(f"store lines quarantined by the sync (not sent): "
                     f"{report['lines_quarantined']} (see <data_dir>/quarantine)")
    if report.get("samples_dropped"):
        lines.append(f"samples dropped (store unwritable too long): {report['samples_dropped']}")
    if report.get("extras_dropped"):
        lines.append(f"extra fields dropped (over max_extra_keys/max_extra_bytes): "
                     f"{report['extras_dropped']}")
    for d in report["devices"]:
        for f in d.get("damaged_files", []):
            lines.append(f"{d['serial']}: {f.get('lines')} damaged line"
                         f"{'s' if f.get('lines') != 1 else ''} in {f.get('file')}, the first "
                         f"at byte {f.get('first_offset')}")
    lines.append(f"backlog: {report['backlog_rows']} rows, {report['backlog_bytes']} bytes; "
                 f"last sync: {report['last_sync_ts'] or 'never'}")
    lines.append(f"{'serial':<13} {'type':<12} {'role':<11} {'last sample':<25} "
                 f"{'age s':>8}  state")
    for d in report["devices"]:
        age = "-" if d["age_s"] is None else f"{d['age_s']:.1f}"
        failed = d["state"] not in (DeviceState.OK, DeviceState.NOT_RUNNING)
        state = d["state"] + (f": {d['last_error']}" if failed and d["last_error"] else "")
        lines.append(f"{d['serial']:<13} {d['product_type']:<12} {d['role']:<11} "
                     f"{d['last_ts'] or '-':<25} {age:>8}  {state}")
    return "\n".join(lines)
