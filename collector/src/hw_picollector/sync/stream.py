"""The measurements: each day file's unacknowledged rows streamed to Cassandra, its checkpoint
moved only over what Cassandra acknowledged.

``pending_files`` lists the day files not yet complete. ``MeasurementStream.sync_file``
fsyncs a file, takes its size (never reading further), validates its checkpoint, and reads
from there: each block's rows are encoded straight to wire form (encode.py) and sent as
per-partition batches of at most ``batch_rows`` rows (and ``MAX_BATCH_BYTES``), at most
``concurrency`` in flight across files (batches.py ``Window``). Acknowledgements may arrive
in any order; the file's checkpoint advances only over the contiguous run of acknowledged
batches from its start, is written every ``CHECKPOINT_ROWS`` rows and at the end, and a
closed day fully acknowledged is marked complete. A line that cannot be sent is quarantined
(quarantine.py) before the checkpoint may pass it. On the way, a grid or production meter's
power per second is kept for ``site_power`` (derived.py), so its file is not read twice.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hw_picollector import batches, checkpoints, quarantine, store
from hw_picollector.batches import Encoded
from hw_picollector.cassandra_session import driver_quiet
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.config import CassandraConfig, Config
from hw_picollector.quarantine import Quarantine
from hw_picollector.sync.days import DAY_S, day_closed, day_start_s
from hw_picollector.sync.encode import (
    MEASUREMENT_KINDS,
    UNSENDABLE,
    FileEncoder,
    Values,
    check_types,
)
from hw_picollector.sync.progress import Progress

log = logging.getLogger(__name__)

CHECKPOINT_ROWS = 4000  # acknowledged rows between two checkpoint writes of a day file
MAX_BATCH_BYTES = 64 << 10  # one partition's batch; far below max_mutation_size
SERIES_KEPT = 8  # power_w series kept from reading day files for site_power (0.7 MB each)
QUARANTINE_LOG_LINES = 20  # per run, one log line per quarantined line; then per file


def _fsynced_size(path: Path) -> int:
    """Make what the file holds durable, then return its size: we never send more."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


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


def pending_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    for serial in store.serials(data_dir):
        for path in store.day_files(data_dir, serial):
            cp = checkpoints.read(data_dir, serial, path.stem)
            if not (cp.complete and cp.offset == path.stat().st_size):
                yield serial, path


class MeasurementStream(Progress):
    """The Syncer's measurements: prepared INSERTs per set of columns, and the checkpointed
    stream of each day file (the attributes below are the Syncer's, set in syncer.py)."""

    config: Config
    cfg: CassandraConfig
    session: Any
    ks: str
    window: batches.Window
    quarantine: Quarantine
    protocol: int
    inserts: dict[tuple[str, ...], Any]
    double_values: Values
    text_values: Values
    _power_serials: set[str]
    _series: dict[tuple[str, str], tuple[int, array[float]]]

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
            check_types(stmt, "measurements", MEASUREMENT_KINDS)
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
        encoder = FileEncoder(self, serial, day, header)
        # site_power needs this device's power_w per second of the day: collected on the
        # way when the file is read from its start, instead of reading it again later.
        series = None
        if cp.offset == 0 and serial in self._power_serials and "power_w" in header:
            series = array("d", [math.nan]) * DAY_S
            column = header.index("power_w")
            start_ms = day_start_s(day) * 1000
        limit = max(1, self.cfg.batch_rows)
        rows: list[bytes] = []
        size = 0
        good_end = cp.offset  # the newest row read: where it ends, and its fields
        good: list[str] | None = None
        bad = functools.partial(self._quarantine, track)
        for offset, ts, fields in store.scan(path, cp.offset, end, bad=bad):
            try:
                row = encoder.encode(ts, fields)
            except UNSENDABLE as exc:  # a value that is not a number, ...
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

    def _send_rows(self, track: _FileTrack, encoder: FileEncoder, rows: list[bytes],
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
        if day_closed(track.day, time.time()) and cp.offset == track.end and not cp.complete:
            if cp.offset == 0:  # header only
                with track.path.open("rb") as fh:
                    cp = Checkpoint(len(fh.readline()), None, 0)
            cp = dataclasses.replace(cp, complete=True)
        if cp != track.written:
            checkpoints.write(self.config.data_dir, track.serial, track.day, cp)
            track.written = cp
        self.stats.files += 1


def _name(track: _FileTrack) -> str:
    return f"{store.MEASUREMENTS}/{track.serial}/{track.path.name}"


def _preview(line: bytes, size: int = 60) -> str:
    """The start of a line for a log line: never a dump of it."""
    text = repr(line[:size])
    return text + f"... ({len(line) - size} more bytes)" if len(line) > size else text
