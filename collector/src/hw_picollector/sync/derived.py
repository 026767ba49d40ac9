"""The tables derived from the synced measurements: ``device_latest`` and ``site_power``.

Both are written after the measurements' checkpoints are final, and from them only: what
Cassandra acknowledged, never what was merely read. ``device_latest`` holds each device's
newest acknowledged row (written with the sample's time as write time, so it never moves
backwards). ``site_power`` holds, per second, the site's grid, production and consumption
power from the ``grid`` and ``production`` devices (``balance``); a day's progress in it is
its own checkpoint under ``SITE_POWER_DIR``, moved once every batch of it was acknowledged.
"""

from __future__ import annotations

import contextlib
import functools
import math
import struct
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from hw_picollector import batches, checkpoints, store
from hw_picollector.batches import UNSET, Encoded, value
from hw_picollector.catalog import Role
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.config import CassandraConfig, Config
from hw_picollector.devices.canonical import TEXT_COLUMNS
from hw_picollector.quarantine import Quarantine
from hw_picollector.sync.days import DAY_S, day_closed, day_start_s
from hw_picollector.sync.encode import DOUBLE_VALUE, TS_VALUE, check_types, extra_values
from hw_picollector.sync.progress import RunStats
from hw_picollector.tables import MEASUREMENT_COLUMNS

SITE_POWER_DIR = "_site_power"

_SITE_ROW = struct.Struct(">iqididid").pack


@dataclass(eq=False)
class _DayTrack:
    """One day of site_power: its checkpoint moves once every batch of it was acknowledged."""

    day: str
    frontier: int
    rows_before: int
    rows: int = 0
    batches: int = 0
    sent: bool = False


class DerivedTables:
    """The Syncer's ``device_latest`` and ``site_power`` (the attributes below are the
    Syncer's, set in syncer.py; ``_series`` is filled by the measurements' stream)."""

    config: Config
    cfg: CassandraConfig
    session: Any
    ks: str
    window: batches.Window
    stats: RunStats
    quarantine: Quarantine
    host: str
    unset: Any
    _series: dict[tuple[str, str], tuple[int, array[float]]]
    _site_power: Any
    _device_latest: Any

    def _prepare_derived(self) -> None:
        session = self.session
        self._site_power = session.prepare(
            f"INSERT INTO {self.ks}.site_power (site_id, day, ts, grid_w, production_w, "
            "consumption_w) VALUES (?, ?, ?, ?, ?, ?)")
        self._site_power.is_idempotent = True
        check_types(self._site_power, "site_power", {
            "site_id": "text", "day": "date", "ts": "timestamp", "grid_w": "double",
            "production_w": "double", "consumption_w": "double"})
        self._device_latest = session.prepare(
            f"INSERT INTO {self.ks}.device_latest (site_id, device_id, product_type, role, ts, "
            "power_w, readings, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")

    @staticmethod
    def _extra(fields: list[str], header: tuple[str, ...], index: dict[str, int]
               ) -> dict[str, float]:
        others = [(index[c], c) for c in header[1:-1] if c not in MEASUREMENT_COLUMNS]
        return extra_values(fields, others)

    def write_latest(self) -> None:
        """Each device's newest acknowledged row, whatever this run sent (a run killed
        after its last chunk leaves the next run nothing to send, but this still holds).
        Written with the sample's time as write time, so it never moves backwards."""
        data_dir = self.config.data_dir
        for serial in store.serials(data_dir):
            newest = None
            for path in reversed(store.day_files(data_dir, serial)):
                cp = checkpoints.read(data_dir, serial, path.stem)
                if cp.last_ts and cp.offset:
                    newest = store.row_at(path, cp.offset, cp.last_ts)
                    break
            if newest is None:
                continue
            ts_ms, header, fields = newest
            index = {name: i for i, name in enumerate(header)}
            readings = {c: float(fields[index[c]]) for c in header[1:-1]
                        if c not in TEXT_COLUMNS and fields[index[c]] != ""}
            readings.update(self._extra(fields, tuple(header), index))
            try:
                dev = self.config.device(serial)
                product_type, role = dev.product_type, dev.role
            except KeyError:
                product_type, role = "", ""
            params = (self.config.site_id, serial, product_type, role, ts_ms,
                      readings.get("power_w", self.unset), readings, self.host, ts_ms * 1000)
            # retried with backoff like every other write; nothing to do once acknowledged
            self.window.send(self._device_latest.bind(params), lambda: None)
        self.window.drain()

    def write_site_power(self) -> None:
        grid = [d.serial for d in self.config.devices if d.role == Role.GRID]
        prod = [d.serial for d in self.config.devices if d.role == Role.PRODUCTION]
        if not grid:
            return
        data_dir = self.config.data_dir
        days = sorted({p.stem for s in grid + prod for p in store.day_files(data_dir, s)})
        now = time.time()
        for day in days:
            done = checkpoints.read(data_dir, SITE_POWER_DIR, day)
            if done.complete:
                continue
            upto = done.offset  # seconds into the day already written
            frontier = min(self._frontier(s, day, days, now) for s in grid + prod)
            if frontier <= upto:
                continue
            series = {s: self._power_series(s, day) for s in grid + prod}
            track = _DayTrack(day, frontier, done.rows)
            self._write_site_rows(track, _balanced(series, grid, prod, upto, frontier))
            del series
        self.window.drain()

    def _frontier(self, serial: str, day: str, days: list[str], now: float) -> int:
        """Seconds into `day` up to which this device's synced rows are final."""
        path = store.day_path(self.config.data_dir, serial, day)
        later = any(p.stem > day for p in store.day_files(self.config.data_dir, serial))
        final = later or day_closed(day, now)
        if not path.exists():
            return DAY_S if final else 0
        cp = checkpoints.read(self.config.data_dir, serial, day)
        if cp.complete or (final and cp.offset >= path.stat().st_size):
            return DAY_S
        if not cp.last_ts:
            return 0
        return store.parse_ts(cp.last_ts) // 1000 - day_start_s(day)

    def _power_series(self, serial: str, day: str) -> array[float]:
        """power_w per second of the day from the device's synced rows (NaN: no sample)."""
        cp = checkpoints.read(self.config.data_dir, serial, day)
        kept = self._series.pop((serial, day), None)
        if kept is not None and kept[0] == cp.offset:  # read in this run up to the checkpoint
            return kept[1]
        series = array("d", [math.nan]) * DAY_S
        path = store.day_path(self.config.data_dir, serial, day)
        if not path.exists():
            return series
        header = store.read_header(path)
        if "power_w" not in header:
            return series
        column = header.index("power_w")
        start_ms = day_start_s(day) * 1000
        skip = self.quarantine.ends(serial, day)  # rows quarantined: not sent, not counted
        for offset, ts, fields in store.scan(path, 0, cp.offset, bad=_pass_over):
            text = fields[column]
            if text != "" and not (skip and offset in skip):
                second = (ts - start_ms) // 1000
                if 0 <= second < DAY_S:
                    with contextlib.suppress(ValueError):
                        series[second] = float(text)
        return series

    def _write_site_rows(self, track: _DayTrack, rows: Iterator[
            tuple[int, float | None, float | None, float | None]]) -> None:
        day_value = batches.date_bytes(date.fromisoformat(track.day))
        site = batches.text_bytes(self.config.site_id)
        key = [site, day_value]
        prefix = (batches.statement_prefix(self._site_power.query_id, 6) + value(site)
                  + value(day_value))
        start_ms = day_start_s(track.day) * 1000
        limit = max(1, self.cfg.batch_rows)
        chunk: list[bytes] = []
        for second, g, p, c in rows:
            ts = start_ms + second * 1000
            if g is not None and p is not None and c is not None:
                chunk.append(prefix + _SITE_ROW(8, ts, 8, g, 8, p, 8, c))
            else:
                chunk.append(b"".join((prefix, TS_VALUE(8, ts), *(
                    UNSET if v is None else DOUBLE_VALUE(8, v) for v in (g, p, c)))))
            if len(chunk) >= limit:
                self._send_site_rows(track, key, chunk)
                chunk = []
        if chunk:
            self._send_site_rows(track, key, chunk)
        track.sent = True
        if not track.batches:
            self._site_day_done(track)

    def _send_site_rows(self, track: _DayTrack, key: list[bytes], chunk: list[bytes]) -> None:
        track.batches += 1
        track.rows += len(chunk)
        stmt = batches.batch(Encoded(b"".join(chunk), len(chunk)), self.ks, key)
        self.window.send(stmt, functools.partial(self._site_acked, track))

    def _site_acked(self, track: _DayTrack) -> None:
        track.batches -= 1
        if track.sent and not track.batches:
            self._site_day_done(track)

    def _site_day_done(self, track: _DayTrack) -> None:
        checkpoints.write(self.config.data_dir, SITE_POWER_DIR, track.day,
                          Checkpoint(track.frontier, None, track.rows_before + track.rows,
                                     complete=track.frontier >= DAY_S))
        self.stats.site_power_rows += track.rows


def balance(series: dict[str, array[float]], grid: list[str], prod: list[str], upto: int,
            frontier: int) -> list[tuple[int, float | None, float | None, float | None]]:
    """Per second in (upto, frontier]: grid_w, production_w, consumption_w, aligned by time.

    grid_w is the P1's net power (import positive); production_w is minus the PV meters'
    power (they read negative while producing), 0 at a site without PV; consumption_w =
    grid_w + production_w. A device without a sample in a second leaves its part (and the
    consumption) empty for that second; a second without any sample is skipped.
    """
    return list(_balanced(series, grid, prod, upto, frontier))


def _balanced(series: dict[str, array[float]], grid: list[str], prod: list[str], upto: int,
              frontier: int) -> Iterator[tuple[int, float | None, float | None, float | None]]:
    """``balance`` one second at a time (a day of tuples is never held at once)."""
    grids = [series[s] for s in grid]
    prods = [series[s] for s in prod]
    isnan = math.isnan
    for second in range(max(upto, 0), min(frontier, DAY_S)):
        g_parts = [a[second] for a in grids]
        p_parts = [a[second] for a in prods]
        g = None if any(isnan(v) for v in g_parts) else sum(g_parts)
        p = None if any(isnan(v) for v in p_parts) else -sum(p_parts)
        if g is None and (p is None or not prods):
            continue
        if not prods:
            p = 0.0
        c = g + p if g is not None and p is not None else None
        yield second, g, p + 0.0 if p is not None else None, c


def _pass_over(_offset: int, _line: bytes, _reason: str) -> bool:
    return True
