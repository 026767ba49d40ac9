"""`hwpc sync`: drain the local store into Cassandra with an exactly-once effect.

How exactly-once holds, whatever fails in between:
- every row is written as an idempotent upsert keyed by (site, device, day, ts), so sending
  a row twice changes nothing;
- a day file's checkpoint (byte offset + last ts) moves only after Cassandra acknowledged
  every row before it, and is written atomically; a crash anywhere replays at most the
  unacknowledged tail;
- the file is fsync'd before it is read, so no row is sent that a power cut could take back;
- a failure leaves the checkpoint where it was and the store untouched: nothing is marked
  synced, nothing is deleted.

Rows are sent as per-partition unlogged batches (one device-day is one partition), sized
below Cassandra's batch warning threshold, many in flight at once; never a batch across
partitions, never CQL built from values.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hw_picollector import __version__, checkpoints, store
from hw_picollector.cassandra_session import DatabaseError, connect, explain
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.config import Config
from hw_picollector.devices.canonical import TEXT_COLUMNS
from hw_picollector.schema import MEASUREMENT_COLUMNS

log = logging.getLogger(__name__)

CHUNK_ROWS = 4000
RETRIES = 5
SITE_POWER_DIR = "_site_power"
CLOSED_AFTER = timedelta(hours=1)  # a UTC day gets no more rows this long after it ended
DAY_S = 86400


@dataclass
class RunStats:
    rows: int = 0
    files: int = 0
    site_power_rows: int = 0
    started: float = field(default_factory=time.monotonic)
    total: int = 0
    last_print: float = 0.0


def _day_start_s(day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp())


def _day_closed(day: str, now_s: float) -> bool:
    return now_s >= _day_start_s(day) + DAY_S + CLOSED_AFTER.total_seconds()


def _fsynced_size(path: Path) -> int:
    """Make what the file holds durable, then return its size: we never send more."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class Syncer:
    def __init__(self, config: Config, session: Any, progress: bool = False):
        assert config.cassandra is not None
        self.config = config
        self.cfg = config.cassandra
        self.session = session
        self.ks = self.cfg.keyspace
        self.progress = progress
        self.stats = RunStats()
        self._inserts: dict[tuple[str, ...], Any] = {}
        self.host = config.host or socket.gethostname()
        from cassandra.query import UNSET_VALUE

        self.unset = UNSET_VALUE
        self._site_power = session.prepare(
            f"INSERT INTO {self.ks}.site_power (site_id, day, ts, grid_w, production_w, "
            "consumption_w) VALUES (?, ?, ?, ?, ?, ?)")
        self._site_power.is_idempotent = True
        self._device_latest = session.prepare(
            f"INSERT INTO {self.ks}.device_latest (site_id, device_id, product_type, role, ts, "
            "power_w, readings, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")
        self._heartbeat = session.prepare(
            f"INSERT INTO {self.ks}.heartbeats (host, day, ts, site_id, version, uptime_s, "
            "collector_active, backlog_rows, backlog_bytes, disk_free_mb, clock_synchronised, "
            "rows_synced, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    # -- measurements ---------------------------------------------------------------------

    def _insert_for(self, header: tuple[str, ...]) -> tuple[Any, list[str]]:
        """Prepared INSERT for a file's header; columns the table lacks go to `extra`."""
        if header not in self._inserts:
            cols = [c for c in header[1:-1] if c in MEASUREMENT_COLUMNS]
            names = ", ".join(["site_id", "device_id", "day", "ts", *cols, "extra"])
            marks = ", ".join("?" * (len(cols) + 5))
            stmt = self.session.prepare(
                f"INSERT INTO {self.ks}.measurements ({names}) VALUES ({marks})")
            stmt.is_idempotent = True
            self._inserts[header] = (stmt, cols)
        stmt, cols = self._inserts[header]
        return stmt, cols

    def sync_file(self, serial: str, path: Path) -> None:
        day = path.stem
        end = _fsynced_size(path)
        cp = checkpoints.validated(path, checkpoints.read(self.config.data_dir, serial, day))
        if cp.complete and cp.offset == end:
            return
        rows = store.read_rows(path, cp.offset, end)
        chunk: list[tuple[int, list[str], list[str]]] = []
        for item in rows:
            chunk.append(item)
            if len(chunk) >= CHUNK_ROWS:
                cp = self._send_chunk(serial, day, chunk, cp)
                chunk = []
        if chunk:
            cp = self._send_chunk(serial, day, chunk, cp)
        closed = _day_closed(day, time.time())
        if closed and cp.offset == end and not cp.complete:
            if cp.offset == 0:  # header only
                with path.open("rb") as fh:
                    cp = Checkpoint(len(fh.readline()), None, 0)
            cp = Checkpoint(cp.offset, cp.last_ts, cp.rows, complete=True)
            checkpoints.write(self.config.data_dir, serial, day, cp)
        self.stats.files += 1

    def _send_chunk(self, serial: str, day: str, chunk: list[tuple[int, list[str], list[str]]],
                    cp: Checkpoint) -> Checkpoint:
        from cassandra.query import BatchStatement, BatchType

        header = tuple(chunk[0][1])
        stmt, cols = self._insert_for(header)
        index = {name: i for i, name in enumerate(header)}
        site = self.config.site_id
        day_value = date.fromisoformat(day)
        statements: list[Any] = []
        batch = None
        for _offset, _header, fields in chunk:
            ts_ms = store.parse_ts(fields[0])
            params: list[Any] = [site, serial, day_value, ts_ms]
            for col in cols:
                text = fields[index[col]]
                if text == "":
                    params.append(self.unset)
                elif col in TEXT_COLUMNS:
                    params.append(text)
                else:
                    params.append(float(text))
            extra = self._extra(fields, header, index)
            params.append(extra if extra else self.unset)
            # One partition per file: a single-partition batch is one mutation, exempt from
            # the batch size thresholds (those guard multi-partition batches).
            if batch is None or len(batch) >= self.cfg.batch_rows:
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                batch.is_idempotent = True
                statements.append(batch)
            batch.add(stmt, params)
        self._execute(statements)
        last = chunk[-1]
        cp = Checkpoint(last[0], last[2][0], cp.rows + len(chunk))
        checkpoints.write(self.config.data_dir, serial, day, cp)
        self.stats.rows += len(chunk)
        self._show_progress()
        return cp

    @staticmethod
    def _extra(fields: list[str], header: tuple[str, ...], index: dict[str, int]
               ) -> dict[str, float]:
        extra: dict[str, float] = {}
        for col in header[1:-1]:
            if col not in MEASUREMENT_COLUMNS and fields[index[col]] != "":
                try:
                    extra[col] = float(fields[index[col]])
                except ValueError:
                    continue
        text = fields[-1]
        if text:
            for key, value in json.loads(text).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    extra[key] = float(value)
        return extra

    def _execute(self, statements: list[Any]) -> None:
        """Send with bounded concurrency; retry what failed with backoff; raise if it keeps
        failing (the caller then leaves the checkpoint where it was)."""
        from cassandra.concurrent import execute_concurrent

        pending = statements
        for attempt in range(RETRIES + 1):
            results = execute_concurrent(self.session, [(s, None) for s in pending],
                                         concurrency=self.cfg.concurrency,
                                         raise_on_first_error=False)
            failed = [(s, r.result_or_exc) for s, r in zip(pending, results, strict=True)
                      if not r.success]
            if not failed:
                return
            if attempt == RETRIES:
                raise DatabaseError(explain(failed[0][1], self.cfg, None) +
                                    f" ({len(failed)} writes still failing after "
                                    f"{RETRIES} retries)")
            delay = min(2.0 ** attempt, 16.0)
            log.warning("%d of %d writes failed (%s); retrying in %.0f s", len(failed),
                        len(pending), type(failed[0][1]).__name__, delay)
            time.sleep(delay)
            pending = [s for s, _ in failed]

    # -- device_latest, site_power, heartbeat ---------------------------------------------

    def write_latest(self) -> None:
        """Each device's newest acknowledged row, whatever this run sent (a run killed
        after its last chunk leaves the next run nothing to send, but this still holds).
        Written with the sample's time as write time, so it never moves backwards."""
        data_dir = self.config.data_dir
        statements = []
        for serial in store.serials(data_dir):
            newest = None
            for path in reversed(store.day_files(data_dir, serial)):
                cp = checkpoints.read(data_dir, serial, path.stem)
                if cp.last_ts and cp.offset:
                    newest = store.row_ending_at(path, cp.offset)
                    break
            if newest is None:
                continue
            header, fields = newest
            index = {name: i for i, name in enumerate(header)}
            readings = {c: float(fields[index[c]]) for c in header[1:-1]
                        if c not in TEXT_COLUMNS and fields[index[c]] != ""}
            readings.update(self._extra(fields, tuple(header), index))
            ts_ms = store.parse_ts(fields[0])
            try:
                dev = self.config.device(serial)
                product_type, role = dev.product_type, dev.role
            except KeyError:
                product_type, role = "", ""
            params = (self.config.site_id, serial, product_type, role, ts_ms,
                      readings.get("power_w", self.unset), readings, self.host, ts_ms * 1000)
            statements.append((self._device_latest, params))
        if statements:
            from cassandra.concurrent import execute_concurrent

            for result in execute_concurrent(self.session, statements,
                                             raise_on_first_error=False):
                if not result.success:
                    raise DatabaseError(explain(result.result_or_exc, self.cfg, None))

    def write_site_power(self) -> None:
        grid = [d.serial for d in self.config.devices if d.role == "grid"]
        prod = [d.serial for d in self.config.devices if d.role == "production"]
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
            rows = balance(series, grid, prod, upto, frontier)
            self._write_site_rows(day, rows)
            checkpoints.write(data_dir, SITE_POWER_DIR, day,
                              Checkpoint(frontier, None, done.rows + len(rows),
                                         complete=frontier >= DAY_S))
            self.stats.site_power_rows += len(rows)

    def _frontier(self, serial: str, day: str, days: list[str], now: float) -> int:
        """Seconds into `day` up to which this device's synced rows are final."""
        path = store.device_dir(self.config.data_dir, serial) / f"{day}.csv"
        later = any(p.stem > day for p in store.day_files(self.config.data_dir, serial))
        final = later or _day_closed(day, now)
        if not path.exists():
            return DAY_S if final else 0
        cp = checkpoints.read(self.config.data_dir, serial, day)
        if cp.complete or (final and cp.offset >= path.stat().st_size):
            return DAY_S
        if not cp.last_ts:
            return 0
        return store.parse_ts(cp.last_ts) // 1000 - _day_start_s(day)

    def _power_series(self, serial: str, day: str) -> array[float]:
        """power_w per second of the day from the device's synced rows (NaN: no sample)."""
        series = array("d", [math.nan]) * DAY_S
        path = store.device_dir(self.config.data_dir, serial) / f"{day}.csv"
        if not path.exists():
            return series
        cp = checkpoints.read(self.config.data_dir, serial, day)
        start = _day_start_s(day)
        column = -1
        for _offset, header, fields in store.read_rows(path, 0, cp.offset):
            if column < 0:
                if "power_w" not in header:
                    return series
                column = header.index("power_w")
            if fields[column] != "":
                second = store.parse_ts(fields[0]) // 1000 - start
                if 0 <= second < DAY_S:
                    series[second] = float(fields[column])
        return series

    def _write_site_rows(self, day: str, rows: list[tuple[int, float | None, float | None,
                                                          float | None]]) -> None:
        from cassandra.query import BatchStatement, BatchType

        day_value = date.fromisoformat(day)
        start_ms = _day_start_s(day) * 1000
        statements: list[Any] = []
        for i in range(0, len(rows), 60):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            batch.is_idempotent = True
            for second, g, p, c in rows[i:i + 60]:
                batch.add(self._site_power, (
                    self.config.site_id, day_value, start_ms + second * 1000,
                    self.unset if g is None else g, self.unset if p is None else p,
                    self.unset if c is None else c))
            statements.append(batch)
        self._execute(statements)

    def write_heartbeat(self, error: str | None) -> None:
        from hw_picollector import health

        report = health.status(self.config)
        now_ms = time.time_ns() // 1_000_000
        self.session.execute(self._heartbeat, (
            self.host, datetime.fromtimestamp(now_ms / 1000, UTC).date(), now_ms,
            self.config.site_id, __version__, report["uptime_s"], report["service_active"],
            report["backlog_rows"], report["backlog_bytes"], report["disk_free_mb"],
            report["clock_synchronised"], self.stats.rows, error))

    # -- progress ---------------------------------------------------------------------------

    def _show_progress(self, final: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not final and now - self.stats.last_print < 0.5:
            return
        self.stats.last_print = now
        done, total = self.stats.rows, max(self.stats.total, self.stats.rows)
        rate = done / max(now - self.stats.started, 1e-6)
        eta = (total - done) / rate if rate > 0 else 0
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows "
                         f"{rate:,.0f} rows/s ETA {eta:,.0f} s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def balance(series: dict[str, array[float]], grid: list[str], prod: list[str], upto: int,
            frontier: int) -> list[tuple[int, float | None, float | None, float | None]]:
    """Per second in (upto, frontier]: grid_w, production_w, consumption_w, aligned by time.

    grid_w is the P1's net power (import positive); production_w is minus the PV meters'
    power (they read negative while producing), 0 at a site without PV; consumption_w =
    grid_w + production_w. A device without a sample in a second leaves its part (and the
    consumption) empty for that second; a second without any sample is skipped.
    """
    out: list[tuple[int, float | None, float | None, float | None]] = []
    for second in range(max(upto, 0), min(frontier, DAY_S)):
        g_parts = [series[s][second] for s in grid]
        p_parts = [series[s][second] for s in prod]
        g = None if any(math.isnan(v) for v in g_parts) else sum(g_parts)
        p = None if any(math.isnan(v) for v in p_parts) else -sum(p_parts)
        if g is None and (p is None or not prod):
            continue
        if not prod:
            p = 0.0
        c = g + p if g is not None and p is not None else None
        out.append((second, g, p + 0.0 if p is not None else None, c))
    return out


def pending_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    for serial in store.serials(data_dir):
        for path in store.day_files(data_dir, serial):
            cp = checkpoints.read(data_dir, serial, path.stem)
            if not (cp.complete and cp.offset == path.stat().st_size):
                yield serial, path


def retention(config: Config, now: datetime | None = None) -> tuple[int, int]:
    """Compress closed, fully synced days; remove compressed days past retention_days."""
    now = now or datetime.now(UTC)
    compressed = removed = 0
    data_dir = config.data_dir
    for serial in store.serials(data_dir):
        for path in store.day_files(data_dir, serial):
            cp = checkpoints.read(data_dir, serial, path.stem)
            if not cp.complete or cp.offset != path.stat().st_size:
                continue
            gz = path.with_suffix(".csv.gz")
            with path.open("rb") as src, gzip.open(gz.with_suffix(".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(gz.with_suffix(".tmp"), gz)
            path.unlink()
            compressed += 1
        if config.retention_days > 0:
            limit = (now - timedelta(days=config.retention_days)).date()
            for gz in sorted(store.device_dir(data_dir, serial).glob("*.csv.gz")):
                if date.fromisoformat(gz.name[:10]) < limit:
                    gz.unlink()
                    removed += 1
    return compressed, removed


def sync_once(config: Config, session: Any, progress: bool) -> RunStats:
    syncer = Syncer(config, session, progress)
    files = list(pending_files(config.data_dir))
    if progress:
        syncer.stats.total = checkpoints.backlog(config.data_dir)[0]
    error: str | None = None
    try:
        for serial, path in files:
            syncer.sync_file(serial, path)
        syncer.write_latest()
        syncer.write_site_power()
    except DatabaseError as exc:
        error = str(exc)
        raise
    finally:
        syncer._show_progress(final=True)
        try:
            syncer.write_heartbeat(error)
        except Exception as exc:
            log.warning("heartbeat not written: %s", exc)
    return syncer.stats


def run(config: Config, once: bool, progress: bool, interval_s: float = 60.0) -> int:
    if config.cassandra is None:
        print(f"hwpc: {config.path}: cassandra: missing, nothing to sync to", file=sys.stderr)
        return 1
    data_dir = config.data_dir
    while True:
        started = time.time()
        rows_before = checkpoints.backlog(data_dir)[0] if not progress else None
        try:
            cluster, session = connect(config.cassandra)
        except DatabaseError as exc:
            _failed(config, str(exc), rows_before)
            if once:
                return 1
            time.sleep(interval_s)
            continue
        try:
            stats = sync_once(config, session, progress)
        except DatabaseError as exc:
            _failed(config, str(exc), rows_before)
            if once:
                return 1
        else:
            compressed, removed = retention(config)
            record = {"finished": store.format_ts(int(time.time() * 1000)),
                      "started": store.format_ts(int(started * 1000)),
                      "rows": stats.rows, "site_power_rows": stats.site_power_rows,
                      "seconds": round(time.time() - started, 3), "ok": True}
            checkpoints.write_last_sync(data_dir, record)
            log.info("synced %d rows (%d site_power) in %.1f s; %d day files compressed, "
                     "%d removed", stats.rows, stats.site_power_rows, time.time() - started,
                     compressed, removed)
            if once:
                return 0
        finally:
            cluster.shutdown()
        time.sleep(interval_s)


def _failed(config: Config, message: str, backlog_rows: int | None) -> None:
    rows = backlog_rows if backlog_rows is not None else checkpoints.backlog(config.data_dir)[0]
    print(f"hwpc: sync failed: {message}; nothing marked synced, {rows} rows stay on this Pi",
          file=sys.stderr)
    last = checkpoints.read_last_sync(config.data_dir) or {}
    last.update({"last_error": message,
                 "last_attempt": store.format_ts(int(time.time() * 1000))})
    checkpoints.write_last_sync(config.data_dir, last)
