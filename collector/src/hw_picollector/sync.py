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

Rows are sent as per-partition unlogged batches (one device-day file is one partition) of
at most ``batch_rows`` rows: one mutation each, which Cassandra keeps out of its batch size
warnings (those guard batches across partitions). Never a batch across partitions, never
CQL built from values. The files are streamed: a block is read, its rows encoded straight
to wire form (see batches.py) and sent, with at most ``concurrency`` batches in flight
across files; acknowledgements may arrive in any order, and a file's checkpoint advances
only over the contiguous run of acknowledged batches from its start. Memory stays flat
whatever the backlog.

A complete line that is not a row the sync can send (damaged, a field over 128 KiB, a value
that is not a number, an ``extra`` cell that is not a JSON object) is quarantined: copied,
fsync'd, to ``<data_dir>/quarantine`` (see quarantine.py) before the checkpoint may move past
it; the rows and files after it go on. Rows are checked in bulk: only a block or a row that
fails is looked at line by line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import json
import logging
import math
import os
import shutil
import socket
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

from hw_picollector import __version__, batches, checkpoints, files, quarantine, store
from hw_picollector.batches import UNSET, Encoded, value
from hw_picollector.cassandra_session import DatabaseError, connect, driver_quiet, explain
from hw_picollector.catalog import Role
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.config import Config
from hw_picollector.devices.canonical import TEXT_COLUMNS
from hw_picollector.tables import MEASUREMENT_COLUMNS

log = logging.getLogger(__name__)

CHECKPOINT_ROWS = 4000  # acknowledged rows between two checkpoint writes of a day file
MAX_BATCH_BYTES = 64 << 10  # one partition's batch; far below max_mutation_size
MAX_SHAPES = 64  # INSERTs prepared per set of non-empty columns; beyond, unset markers
SITE_POWER_DIR = "_site_power"
CLOSED_AFTER = timedelta(hours=1)  # a UTC day gets no more rows this long after it ended
DAY_S = 86400
GZIP_LEVEL = 3  # 9 % of the size in a tenth of level 9's time (level 9: 6.4 %)
SERIES_KEPT = 8  # power_w series kept from reading day files for site_power (0.7 MB each)
QUARANTINE_LOG_LINES = 20  # per run, one log line per quarantined line; then per file
HEARTBEAT_COLUMNS = ("host", "day", "ts", "site_id", "version", "uptime_s", "collector_active",
                     "backlog_rows", "backlog_bytes", "disk_free_mb", "clock_synchronised",
                     "rows_synced", "last_error")
HEARTBEAT_COUNTS = ("samples_dropped", "extras_dropped", "lines_quarantined")


@dataclass
class RunStats:
    rows: int = 0
    files: int = 0
    site_power_rows: int = 0
    quarantined: int = 0  # lines newly quarantined
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


def _extra_values(fields: list[str], others: list[tuple[int, str]]) -> dict[str, float]:
    """The row's ``extra`` map: numeric columns the table lacks, then the JSON column."""
    extra: dict[str, float] = {}
    for i, name in others:
        if fields[i] != "":
            try:
                extra[name] = float(fields[i])
            except ValueError:
                continue
    text = fields[-1]
    if text:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError(f"not a JSON object but {type(found).__name__}")
        for key, number in found.items():
            if isinstance(number, int | float) and not isinstance(number, bool):
                extra[key] = float(number)
    return extra


def _check_types(stmt: Any, table: str, kinds: dict[str, str]) -> None:
    """The prepared columns have the types the encoding writes (else: schema drift)."""
    for col in stmt.column_metadata:
        want = kinds.get(col.name)
        got = getattr(col.type, "typename", "?")
        if want == "map":
            ok = got == "map"
        else:
            ok = got == want or (want == "text" and got in ("varchar", "text"))
        if not ok:
            raise DatabaseError(f"column {table}.{col.name} is {col.type.cql_parameterized_type()}"
                                f", expected {want} (run: hwpc db check)")


_MEASUREMENT_KINDS = {
    "site_id": "text", "device_id": "text", "day": "date", "ts": "timestamp", "extra": "map",
    **{c: "text" if c in TEXT_COLUMNS else "double" for c in MEASUREMENT_COLUMNS}}


# What encoding a row raises when a value is not what its column holds: not a number, an
# extra cell that is not JSON (or nested beyond reason), a number beyond a double's range.
_UNSENDABLE = (ValueError, OverflowError, RecursionError)


@dataclass(eq=False)
class _Ticket:
    """A batch in flight and the file position it acknowledges once Cassandra has it."""

    offset: int
    last_ts: str | None
    rows: int
    done: bool = False
    quarantined: str | None = None  # the line ending at offset was quarantined: its SHA-256


@dataclass(eq=False)
class _FileTrack:
    """One day file: acknowledged batches advance its checkpoint as a contiguous prefix."""

    serial: str
    day: str
    path: Path
    acked: Checkpoint
    written: Checkpoint
    pending: deque[_Ticket] = field(default_factory=deque)
    end: int | None = None  # set when the file has been read: its size then
    passed: int = 0  # end of the newest line quarantined
    passed_sha: str | None = None  # and that line's SHA-256
    blocked: bool = False  # a line could not be quarantined: nothing moves past it
    quarantined: int = 0  # lines of this file newly quarantined in this run
    logged: int = 0  # of them, logged one by one


@dataclass(eq=False)
class _DayTrack:
    """One day of site_power: its checkpoint moves once every batch of it was acknowledged."""

    day: str
    frontier: int
    rows_before: int
    rows: int = 0
    batches: int = 0
    sent: bool = False


class _Values(dict[str, bytes]):
    """CSV text → its protocol ``[value]``, computed once. Readings repeat (an energy total
    for minutes, a voltage to the tenth, a counter all day) and parsing a float is most of
    what a row costs; a small bounded table catches nine repeats out of ten."""

    def __init__(self, encode: Callable[[str], bytes], limit: int = 4096):
        super().__init__()
        self.encode = encode
        self.limit = limit

    def __missing__(self, text: str) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        data = self[text] = self.encode(text)
        return data


def _getter(indexes: tuple[int, ...]) -> Callable[[list[str]], tuple[str, ...]]:
    """fields → the fields at `indexes`, always as a tuple."""
    if not indexes:
        return lambda _fields: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda fields: (fields[only],)
    return itemgetter(*indexes)


@dataclass(frozen=True, eq=False)
class _Shape:
    """The INSERT for one set of non-empty columns, and how to pick a row's values for it."""

    prefix: bytes  # statement entry header and the partition key values
    present: Callable[[list[str]], tuple[str, ...]]  # fields it writes: all non-empty
    absent: Callable[[list[str]], tuple[str, ...]]  # fields it leaves out: all empty
    doubles: Callable[[list[str]], tuple[str, ...]]
    texts: Callable[[list[str]], tuple[str, ...]] | None
    extra: bool
    map_type: Any
    full: bool = False  # the catch-all INSERT: every column, empty ones unset


class _FileEncoder:
    """A day file's rows as pre-encoded INSERT entries for the file's partition.

    One INSERT is prepared per set of non-empty columns (a meter's empty columns rarely
    change, so consecutive rows nearly always reuse the last one), and a row carries only
    its values. Past ``MAX_SHAPES`` sets, one INSERT with every column and unset markers.
    """

    def __init__(self, syncer: Syncer, serial: str, day: str, header: list[str]):
        self.syncer = syncer
        names = list(enumerate(header))[1:-1]
        self.double_idx = tuple(i for i, c in names
                                if c in MEASUREMENT_COLUMNS and c not in TEXT_COLUMNS)
        self.text_idx = tuple(i for i, c in names if c in TEXT_COLUMNS)
        self.others = [(i, c) for i, c in names if c not in MEASUREMENT_COLUMNS]
        self.header = header
        self.key = [batches.text_bytes(syncer.config.site_id), batches.text_bytes(serial),
                    batches.date_bytes(date.fromisoformat(day))]
        self.key_values = b"".join(value(v) for v in self.key)
        self.shapes: dict[tuple[tuple[int, ...], tuple[int, ...], bool], _Shape] = {}
        self.last: _Shape | None = None
        self.double_values = syncer.double_values
        self.text_values = syncer.text_values

    def encode(self, ts: int, fields: list[str]) -> bytes:
        shape = self.last
        extra = None
        if self.others or fields[-1]:
            extra = _extra_values(fields, self.others)
            shape = self._shape_for(fields, bool(extra))
        elif shape is None or shape.extra or not all(shape.present(fields)) \
                or any(shape.absent(fields)):
            shape = self._shape_for(fields, False)
        if shape.full:
            return self._encode_full(shape, ts, fields, extra)
        row = (shape.prefix + _TS_VALUE(8, ts)
               + b"".join(map(self.double_values.__getitem__, shape.doubles(fields))))
        if shape.texts is not None:
            row += b"".join(map(self.text_values.__getitem__, shape.texts(fields)))
        if extra:
            row += value(shape.map_type.serialize(extra, self.syncer.protocol))
        return row

    def problem(self, fields: list[str], exc: Exception) -> str:
        """Why `encode` refused the row (one short line)."""
        for i in self.double_idx:
            try:
                float(fields[i] or 0)
            except ValueError:
                return f"{self.header[i]}: not a number ({fields[i][:32]!r})"
        try:
            _extra_values(fields, self.others)
        except _UNSENDABLE as bad:
            return f"extra: {type(bad).__name__}: {str(bad)[:120]}"
        return f"{type(exc).__name__}: {str(exc)[:120]}"

    def _shape_for(self, fields: list[str], extra: bool) -> _Shape:
        doubles = tuple(i for i in self.double_idx if fields[i])
        texts = tuple(i for i in self.text_idx if fields[i])
        key = (doubles, texts, extra)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = self._new_shape(doubles, texts, extra)
        self.last = shape
        return shape

    def _new_shape(self, doubles: tuple[int, ...], texts: tuple[int, ...], extra: bool
                   ) -> _Shape:
        full = False
        cols = tuple([self.header[i] for i in (*doubles, *texts)] + (["extra"] if extra else []))
        if len(self.syncer.inserts) >= MAX_SHAPES and cols not in self.syncer.inserts:
            full = True
            doubles, texts, extra = self.double_idx, self.text_idx, True
            cols = tuple([self.header[i] for i in (*doubles, *texts)] + ["extra"])
        stmt = self.syncer.insert_for(cols)
        written = (*doubles, *texts)
        left_out = tuple(i for i in (*self.double_idx, *self.text_idx) if i not in written)
        return _Shape(
            prefix=batches.statement_prefix(stmt.query_id, len(cols) + 4) + self.key_values,
            present=_getter(() if full else written), absent=_getter(() if full else left_out),
            doubles=_getter(doubles), texts=_getter(texts) if texts else None, extra=extra,
            map_type=stmt.column_metadata[-1].type if extra else None, full=full)

    def _encode_full(self, shape: _Shape, ts: int, fields: list[str],
                     extra: dict[str, float] | None) -> bytes:
        parts = [shape.prefix, _TS_VALUE(8, ts)]
        parts += [self.double_values[text] if text else UNSET for text in shape.doubles(fields)]
        if shape.texts is not None:
            parts += [self.text_values[text] if text else UNSET for text in shape.texts(fields)]
        parts.append(value(shape.map_type.serialize(extra, self.syncer.protocol))
                     if extra else UNSET)
        return b"".join(parts)


_SITE_ROW = struct.Struct(">iqididid").pack
_TS_VALUE = struct.Struct(">iq").pack
_DOUBLE_VALUE = struct.Struct(">id").pack


class Syncer:
    def __init__(self, config: Config, session: Any, progress: bool = False):
        assert config.cassandra is not None
        self.config = config
        self.cfg = config.cassandra
        self.session = session
        self.ks = self.cfg.keyspace
        self.progress = progress
        self.stats = RunStats()
        self.inserts: dict[tuple[str, ...], Any] = {}
        self._power_serials = {d.serial for d in config.devices
                               if d.role in (Role.GRID, Role.PRODUCTION)}
        self._series: dict[tuple[str, str], tuple[int, array[float]]] = {}
        self.double_values = _Values(lambda text: _DOUBLE_VALUE(8, float(text)))
        self.text_values = _Values(lambda text: value(text.encode("utf-8")))
        self.host = config.host or socket.gethostname()
        self.quarantine = quarantine.Quarantine(config.data_dir)
        from cassandra.query import UNSET_VALUE

        self.unset = UNSET_VALUE
        self.protocol = int(getattr(getattr(session, "cluster", None), "protocol_version", 5))
        batches.install(session)
        self.window = batches.Window(session, self.cfg.concurrency,
                                     lambda exc: explain(exc, self.cfg, None))
        with driver_quiet():
            self._prepare_all()

    def _prepare_all(self) -> None:
        session = self.session
        self._site_power = session.prepare(
            f"INSERT INTO {self.ks}.site_power (site_id, day, ts, grid_w, production_w, "
            "consumption_w) VALUES (?, ?, ?, ?, ?, ?)")
        self._site_power.is_idempotent = True
        _check_types(self._site_power, "site_power", {
            "site_id": "text", "day": "date", "ts": "timestamp", "grid_w": "double",
            "production_w": "double", "consumption_w": "double"})
        self._device_latest = session.prepare(
            f"INSERT INTO {self.ks}.device_latest (site_id, device_id, product_type, role, ts, "
            "power_w, readings, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")
        from cassandra import InvalidRequest

        self._heartbeat_counts = True
        try:
            self._heartbeat = self._prepare_heartbeat(HEARTBEAT_COLUMNS + HEARTBEAT_COUNTS)
        except InvalidRequest:
            # A database older than this Pi: the sync goes on, the heartbeat without counts.
            log.warning("table %s.heartbeats lacks %s (run: hwpc db init): heartbeats are "
                        "written without them", self.ks, ", ".join(HEARTBEAT_COUNTS))
            self._heartbeat_counts = False
            self._heartbeat = self._prepare_heartbeat(HEARTBEAT_COLUMNS)

    def _prepare_heartbeat(self, cols: tuple[str, ...]) -> Any:
        return self.session.prepare(
            f"INSERT INTO {self.ks}.heartbeats ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' * len(cols))})")

    # -- measurements ---------------------------------------------------------------------

    def insert_for(self, cols: tuple[str, ...]) -> Any:
        """Prepared INSERT of the key columns, `cols` and nothing else."""
        stmt = self.inserts.get(cols)
        if stmt is None:
            names = ", ".join(["site_id", "device_id", "day", "ts", *cols])
            marks = ", ".join("?" * (len(cols) + 4))
            with driver_quiet():
                stmt = self.session.prepare(
                    f"INSERT INTO {self.ks}.measurements ({names}) VALUES ({marks})")
            stmt.is_idempotent = True
            _check_types(stmt, "measurements", _MEASUREMENT_KINDS)
            self.inserts[cols] = stmt
        return stmt

    def sync_file(self, serial: str, path: Path) -> None:
        """Send the file's unacknowledged rows; its checkpoint follows the acknowledgements
        (possibly after this returns: ``window.drain()`` waits for the last of them)."""
        day = path.stem
        end = _fsynced_size(path)
        cp = checkpoints.validated(path, checkpoints.read(self.config.data_dir, serial, day))
        if cp.complete and cp.offset == end:
            return
        track = _FileTrack(serial, day, path, cp, cp)
        header = store.read_header(path)
        encoder = _FileEncoder(self, serial, day, header)
        # site_power needs this device's power_w per second of the day: collected on the
        # way when the file is read from its start, instead of reading it again later.
        series = None
        if cp.offset == 0 and serial in self._power_serials and "power_w" in header:
            series = array("d", [math.nan]) * DAY_S
            column = header.index("power_w")
            start_ms = _day_start_s(day) * 1000
        limit = max(1, self.cfg.batch_rows)
        rows: list[bytes] = []
        size = 0
        good_end = cp.offset  # the newest row read: where it ends, and its fields
        good: list[str] | None = None
        bad = functools.partial(self._quarantine, track)
        for offset, ts, fields in store.scan(path, cp.offset, end, bad=bad):
            try:
                row = encoder.encode(ts, fields)
            except _UNSENDABLE as exc:  # a value that is not a number, ...
                start, raw = store.line_ending_at(path, offset)
                if not self._quarantine(track, start, raw, encoder.problem(fields, exc)):
                    break
                continue
            good_end = offset
            good = fields
            rows.append(row)
            size += len(row)
            if len(rows) >= limit or size >= MAX_BATCH_BYTES:
                self._send_rows(track, encoder, rows, offset, fields[0])
                rows = []
                size = 0
            if series is not None and fields[column]:
                second = (ts - start_ms) // 1000
                if 0 <= second < DAY_S:
                    series[second] = float(fields[column])
        good_ts = good[0] if good is not None else cp.last_ts
        if rows:
            self._send_rows(track, encoder, rows, good_end, good_ts)
        reached = good_end
        if track.passed > good_end and not track.blocked:  # it ends with quarantined lines
            reached = track.passed
            track.pending.append(_Ticket(reached, good_ts, 0, True, track.passed_sha))
        if track.quarantined > track.logged:
            log.warning("%s: %d lines quarantined in all, %d of them not logged one by one "
                        "(kept in %s)", _name(track), track.quarantined,
                        track.quarantined - track.logged,
                        quarantine.path_for(self.config.data_dir, serial, day))
        if series is not None:
            self._series[(serial, day)] = (reached, series)
            while len(self._series) > SERIES_KEPT:
                del self._series[next(iter(self._series))]
        track.end = end
        self._advance(track)

    def _quarantine(self, track: _FileTrack, offset: int, line: bytes, reason: str) -> bool:
        """Keep a line the sync cannot send aside; False when that failed (the file's sync
        then stops before it)."""
        try:
            added = self.quarantine.add(track.serial, track.day, offset, line, reason)
        except OSError as exc:
            log.error("%s: line at byte %d cannot be quarantined (%s), the file's sync stops "
                      "before it: %s", _name(track), offset, reason, exc.strerror or exc)
            track.blocked = True
            return False
        # A block's damaged lines are met before its rows are: keep the newest.
        if offset + len(line) > track.passed:
            track.passed, track.passed_sha = offset + len(line), quarantine.digest(line)
        if added:
            track.quarantined += 1
            self.stats.quarantined += 1
            if self.stats.quarantined <= QUARANTINE_LOG_LINES:
                track.logged += 1
                log.warning("%s: line at byte %d quarantined (%s; %d bytes: %s)", _name(track),
                            offset, reason, len(line), _preview(line))
        return True

    def _send_rows(self, track: _FileTrack, encoder: _FileEncoder, rows: list[bytes],
                   offset: int, last_ts: str | None) -> None:
        ticket = _Ticket(offset, last_ts, len(rows))
        track.pending.append(ticket)
        stmt = batches.batch(Encoded(b"".join(rows), len(rows)), self.ks, encoder.key)
        self.window.send(stmt, functools.partial(self._acked, track, ticket))

    def _acked(self, track: _FileTrack, ticket: _Ticket) -> None:
        ticket.done = True
        self.stats.rows += ticket.rows
        self._advance(track)
        self._show_progress()

    def _advance(self, track: _FileTrack) -> None:
        """The checkpoint follows the contiguous run of acknowledged batches."""
        acked = track.acked
        while track.pending and track.pending[0].done:
            first = track.pending.popleft()
            acked = Checkpoint(first.offset, first.last_ts, acked.rows + first.rows,
                               quarantined=first.quarantined)
        track.acked = acked
        if track.end is not None and not track.pending:
            self._finish(track)
        elif acked.rows - track.written.rows >= CHECKPOINT_ROWS:
            checkpoints.write(self.config.data_dir, track.serial, track.day, acked)
            track.written = acked

    def _finish(self, track: _FileTrack) -> None:
        """Every row read from the file is acknowledged: final checkpoint, closed days done."""
        cp = track.acked
        if _day_closed(track.day, time.time()) and cp.offset == track.end and not cp.complete:
            if cp.offset == 0:  # header only
                with track.path.open("rb") as fh:
                    cp = Checkpoint(len(fh.readline()), None, 0)
            cp = dataclasses.replace(cp, complete=True)
        if cp != track.written:
            checkpoints.write(self.config.data_dir, track.serial, track.day, cp)
            track.written = cp
        self.stats.files += 1

    @staticmethod
    def _extra(fields: list[str], header: tuple[str, ...], index: dict[str, int]
               ) -> dict[str, float]:
        others = [(index[c], c) for c in header[1:-1] if c not in MEASUREMENT_COLUMNS]
        return _extra_values(fields, others)

    # -- device_latest, site_power, heartbeat ---------------------------------------------

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
                    newest = store.row_ending_at(path, cp.offset, cp.last_ts)
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
            # retried with backoff like every other write
            self.window.send(self._device_latest.bind(params), _nothing)
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
        cp = checkpoints.read(self.config.data_dir, serial, day)
        kept = self._series.pop((serial, day), None)
        if kept is not None and kept[0] == cp.offset:  # read in this run up to the checkpoint
            return kept[1]
        series = array("d", [math.nan]) * DAY_S
        path = store.device_dir(self.config.data_dir, serial) / f"{day}.csv"
        if not path.exists():
            return series
        header = store.read_header(path)
        if "power_w" not in header:
            return series
        column = header.index("power_w")
        start_ms = _day_start_s(day) * 1000
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
        start_ms = _day_start_s(track.day) * 1000
        limit = max(1, self.cfg.batch_rows)
        chunk: list[bytes] = []
        for second, g, p, c in rows:
            ts = start_ms + second * 1000
            if g is not None and p is not None and c is not None:
                chunk.append(prefix + _SITE_ROW(8, ts, 8, g, 8, p, 8, c))
            else:
                chunk.append(b"".join((prefix, _TS_VALUE(8, ts), *(
                    UNSET if v is None else _DOUBLE_VALUE(8, v) for v in (g, p, c)))))
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

    def write_heartbeat(self, error: str | None) -> None:
        """One row per run. Retried with backoff after a good run; after a failed one a
        single attempt (the database is the likely cause, and the failure is what counts)."""
        from hw_picollector import health

        report = health.status(self.config)
        now_ms = time.time_ns() // 1_000_000
        window = batches.Window(self.session, 1, lambda exc: explain(exc, self.cfg, None),
                                retries=0 if error else batches.RETRIES)
        values = [
            self.host, datetime.fromtimestamp(now_ms / 1000, UTC).date(), now_ms,
            self.config.site_id, __version__, report["uptime_s"], report["service_active"],
            report["backlog_rows"], report["backlog_bytes"], report["disk_free_mb"],
            report["clock_synchronised"], self.stats.rows, error]
        if self._heartbeat_counts:
            values += [int(report.get(name) or 0) for name in HEARTBEAT_COUNTS]
        window.send(self._heartbeat.bind(values), _nothing)
        window.drain()

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
            # durable=True: the compressed copy is on disk before the original goes
            with files.atomic_writer(gz, durable=True) as raw, path.open("rb") as src, \
                    gzip.GzipFile(gz.name, "wb", compresslevel=GZIP_LEVEL, fileobj=raw) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()
            compressed += 1
        if config.retention_days > 0:
            limit = (now - timedelta(days=config.retention_days)).date()
            for gz in sorted(store.device_dir(data_dir, serial).glob("*.csv.gz")):
                if date.fromisoformat(gz.name[:10]) < limit:
                    gz.unlink()
                    removed += 1
    return compressed, removed


def _nothing() -> None:
    pass


def _pass_over(_offset: int, _line: bytes, _reason: str) -> bool:
    return True


def _name(track: _FileTrack) -> str:
    return f"{store.MEASUREMENTS}/{track.serial}/{track.path.name}"


def _preview(line: bytes, size: int = 60) -> str:
    """The start of a line for a log line: never a dump of it."""
    text = repr(line[:size])
    return text + f"... ({len(line) - size} more bytes)" if len(line) > size else text


@contextlib.contextmanager
def _phrased(config: Config) -> Iterator[None]:
    """A driver exception (a refused prepare, a lost node) → the one-line DatabaseError."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "cassandra":
            raise
        assert config.cassandra is not None
        raise DatabaseError(explain(exc, config.cassandra, None)) from exc


def sync_once(config: Config, session: Any, progress: bool) -> RunStats:
    with _phrased(config):
        syncer = Syncer(config, session, progress)
    files = list(pending_files(config.data_dir))
    if progress:
        syncer.stats.total = checkpoints.backlog(config.data_dir)[0]
    error: str | None = None
    try:
        with _phrased(config):
            for serial, path in files:
                syncer.sync_file(serial, path)
            syncer.window.drain()  # every checkpoint final before device_latest and site_power
            syncer.write_latest()
            syncer.write_site_power()
    except DatabaseError as exc:
        error = str(exc)
        raise
    finally:
        syncer._show_progress(final=True)
        try:
            syncer.write_heartbeat(error)
        except Exception as exc:  # after a failure, that failure is the news
            log.log(logging.DEBUG if error else logging.WARNING, "heartbeat not written: %s",
                    exc)
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
