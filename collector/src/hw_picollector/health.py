"""`hwpc status`: the Pi's own view of its health, for operators and the fleet audit.

`status_document` gathers it into a `StatusDocument` (status_document.py: the typed, versioned
document `hwpc status --json` prints); `render` is the text for a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hw_picollector import __version__, clock, quarantine, store
from hw_picollector.catalog import DeviceState
from hw_picollector.checkpoints import backlog, read_last_sync
from hw_picollector.config import Config
from hw_picollector.files import disk_free_mb
from hw_picollector.state_document import (
    STATE_FILE,
    CollectorState,
    DeviceSnapshot,
    StateError,
    parse_state,
)
from hw_picollector.status_document import (
    DamagedFile,
    DeviceStatus,
    HourCount,
    StatusDocument,
    parse_status,
)

log = logging.getLogger(__name__)

STALE_STATE_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(path: Path) -> CollectorState:
    """The collector's state file (state_document.py, version 1 or 2). No state, as when the
    collector is not running, if there is no file or it cannot be read: it is a snapshot
    without fsync, which a power cut may leave empty or torn. One that reads but is not a
    state this hwpc knows (a newer version, a key of the wrong kind) counts as none too,
    with a warning naming the key."""
    try:
        return parse_state(json.loads(path.read_text(encoding="utf-8")))
    except StateError as exc:
        log.warning("%s: %s; read as no state (the collector not running)", path, exc)
    except (OSError, ValueError):
        pass
    return CollectorState()


def _age_s(ts: str | None, now_ms: int) -> float | None:
    return None if ts is None else round((now_ms - store.parse_ts(ts)) / 1000, 3)


HOUR_MS = 3_600_000


def hourly_counts(data_dir: Path, serial: str, start_ms: int, end_ms: int) -> Counter[str]:
    """Samples per UTC hour (``YYYY-MM-DDTHH``) in [start_ms, end_ms), from the day files
    (plain or compressed by retention) that overlap the window: the store counts them."""
    return store.count_per_hour(data_dir, serial, start_ms, end_ms)


def status_document(config: Config, coverage_hours: int = 0) -> StatusDocument:
    """This Pi's status now: the config, the collector's state file, the store, the last sync.
    With ``coverage_hours``, samples per hour over the last N hours, per device."""
    now_ms = time.time_ns() // 1_000_000
    state = read_state(config.data_dir / STATE_FILE)
    updated_age = _age_s(state.updated, now_ms)
    pid = state.pid or 0
    running = bool(pid) and _pid_alive(pid) and \
        updated_age is not None and updated_age < max(STALE_STATE_S, 3 * config.flush_interval_s)
    synced, how = clock.clock_state(config.clock_sync, config.clock_marker)
    free_mb = disk_free_mb(config.data_dir)
    devices = []
    for dev in config.devices:
        files = store.day_files(config.data_dir, dev.serial)
        last = store.last_row(files[-1]) if files else None
        if last is None and len(files) > 1:
            last = store.last_row(files[-2])
        last_ts = store.format_ts(last[0]) if last else None
        # a device the collector does not poll (yet): as configured, nothing counted
        info = state.device(dev.serial) or DeviceSnapshot(dev.serial, address=dev.address)
        coverage = None
        if coverage_hours > 0:
            end = now_ms - now_ms % HOUR_MS + HOUR_MS
            counts = hourly_counts(config.data_dir, dev.serial, end - coverage_hours * HOUR_MS,
                                   now_ms + 1)
            coverage = tuple(HourCount(hour=store.format_ts(h)[:13], samples=counts.get(
                store.format_ts(h)[:13], 0)) for h in range(end - coverage_hours * HOUR_MS,
                                                            end, HOUR_MS))
        devices.append(DeviceStatus(
            serial=dev.serial,
            product_type=dev.product_type,
            role=dev.role,
            api=dev.api,
            address=info.address,
            last_ts=last_ts,
            age_s=_age_s(last_ts, now_ms),
            state=info.state if running and info.state is not None else DeviceState.NOT_RUNNING,
            last_error=info.last_error,
            last_error_ts=info.last_error_ts,
            samples_since_start=info.samples,
            # since the collector started: extra fields over the caps, samples dropped while
            # the store could not be written; damaged lines found at its start
            extras_dropped=info.extras_dropped,
            samples_dropped=info.samples_dropped,
            damaged_lines=info.damaged_lines,
            damaged_files=tuple(DamagedFile(file=f.file, first_offset=f.first_offset,
                                            lines=f.lines) for f in info.damaged_files),
            coverage_hourly=coverage,
        ))
    rows, size = backlog(config.data_dir)
    last_sync = read_last_sync(config.data_dir)
    started = state.started if running else None
    return StatusDocument(
        site_id=config.site_id,
        host=config.host or socket.gethostname(),
        hwpc_version=__version__,
        now=store.format_ts(now_ms),
        poll_interval_s=config.poll_interval_s,
        service_active=running,
        pid=pid if running else None,
        started=started,
        uptime_s=_age_s(started, now_ms),
        clock_synchronised=synced,
        clock=how,
        disk_free_mb=free_mb,
        disk_low=0 <= free_mb < config.disk_min_free_mb,
        write_error=state.write_error if running else None,
        pending_rows=state.pending_rows if running else 0,
        devices=tuple(devices),
        # totals over the devices (the sync's heartbeat reads these)
        extras_dropped=sum(d.extras_dropped or 0 for d in devices),
        samples_dropped=sum(d.samples_dropped or 0 for d in devices),
        damaged_lines=sum(d.damaged_lines or 0 for d in devices),
        backlog_rows=rows,
        backlog_bytes=size,
        lines_quarantined=quarantine.count(config.data_dir),  # lines the sync cannot send
        last_sync_ts=last_sync.get("finished") if last_sync else None,
        last_sync=last_sync,
    )


def status(config: Config, coverage_hours: int = 0) -> dict[str, Any]:
    """`status_document` as its JSON object, for callers that read keys by name (the sync's
    heartbeat)."""
    return status_document(config, coverage_hours).to_dict()


def render(report: StatusDocument | Mapping[str, Any]) -> str:
    """The status for a terminal (a document, or its JSON object as `status` returns it)."""
    doc = report if isinstance(report, StatusDocument) else parse_status(report)
    lines = [
        f"site {doc.site_id} on {doc.host} (hw-picollector {doc.hwpc_version})",
        f"collector: {'running' if doc.service_active else 'NOT running'}"
        + (f", up {doc.uptime_s:.0f} s" if doc.uptime_s is not None else ""),
        f"clock: {'synchronised' if doc.clock_synchronised else 'NOT synchronised'}"
        f" ({doc.clock})",
        f"disk free: {doc.disk_free_mb} MB" + ("  LOW" if doc.disk_low else ""),
    ]
    if doc.write_error:
        lines.append(f"store write error: {doc.write_error} "
                     f"({doc.pending_rows} rows held in memory)")
    if doc.lines_quarantined:
        lines.append(f"store lines quarantined by the sync (not sent): "
                     f"{doc.lines_quarantined} (see <data_dir>/quarantine)")
    if doc.samples_dropped:
        lines.append(f"samples dropped (store unwritable too long): {doc.samples_dropped}")
    if doc.extras_dropped:
        lines.append(f"extra fields dropped (over max_extra_keys/max_extra_bytes): "
                     f"{doc.extras_dropped}")
    for d in doc.devices:
        for f in d.damaged_files or ():
            lines.append(f"{d.serial}: {f.lines} damaged line"
                         f"{'s' if f.lines != 1 else ''} in {f.file}, the first "
                         f"at byte {f.first_offset}")
    lines.append(f"backlog: {doc.backlog_rows} rows, {doc.backlog_bytes} bytes; "
                 f"last sync: {doc.last_sync_ts or 'never'}")
    lines.append(f"{'serial':<13} {'type':<12} {'role':<11} {'last sample':<25} "
                 f"{'age s':>8}  state")
    for d in doc.devices:
        age = "-" if d.age_s is None else f"{d.age_s:.1f}"
        failed = d.state not in (DeviceState.OK, DeviceState.NOT_RUNNING)
        state = (d.state or "-") + (f": {d.last_error}" if failed and d.last_error else "")
        lines.append(f"{d.serial:<13} {d.product_type or '-':<12} {d.role or '-':<11} "
                     f"{d.last_ts or '-':<25} {age:>8}  {state}")
    return "\n".join(lines)
