"""Writing day files: the collector's append-only ``Store`` and the repair of a torn tail.

Durability rules, in one place:
- rows are buffered for at most one flush interval, then written with one ``write`` per
  file and ``fsync``'d;
- a write that fails (disk full) is cut back to the last complete row and kept in memory,
  up to ``max_pending_rows`` per device; beyond that the oldest are dropped and counted
  (``dropped``);
- on open, a torn last line (no newline, NUL bytes after a power cut) is cut off and logged;
- per device, ``ts`` strictly increases: a sample stamped at or before the last one (a
  backwards clock jump) is refused, never written as a duplicate or out of order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hw_picollector.files import fsync_dir
from hw_picollector.store.codec import (
    CSV_SPECIAL,
    EXTRA_COLUMN,
    HEADER_START,
    TS_COLUMN,
    day_of,
    decode_extra,
    decode_fields,
    decode_header,
    encode_extra,
    encode_header,
    encode_line,
    format_ts,
    format_value,
    header_width,
    join_line,
    quote,
    valid_line,
)
from hw_picollector.store.day_files import day_files, day_path, device_dir
from hw_picollector.store.reader import TAIL_SCAN, last_row, lines_before

log = logging.getLogger(__name__)

MAX_PENDING_ROWS = 3600  # per device: one hour at 1 Hz held in memory while the disk is full


def repair(path: Path) -> int:
    """Cut a torn or corrupt tail off a day file; returns the bytes removed (0: intact).

    The torn last line (no newline) goes whatever its size: a large write cut short (the
    rows held through a disk-full outage) can leave more than ``TAIL_SCAN`` bytes of it, and
    the next row appended would be glued onto it. Damaged complete lines before it go too,
    within the last ``TAIL_SCAN`` bytes of the file.
    """
    with path.open("rb+") as fh:
        header = fh.readline()
        width = header_width(header)
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - TAIL_SCAN)
        keep = size
        # Walk back from the end over lines that are torn (no newline) or damaged.
        for line_start, line in lines_before(fh, size):
            is_header = line_start == 0
            if line.endswith(b"\n"):  # else the torn last line: cut, whatever its size
                if is_header and line.startswith(HEADER_START):
                    break
                if line_start < start and not is_header:
                    break  # a line starting before the scan window: beyond our reach, keep it
                if not is_header and valid_line(line, width):
                    break
            keep = line_start
        if keep != size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep


@dataclass
class _DayFile:
    path: Path
    columns: tuple[str, ...]
    index: dict[str, int]
    fd: int


@dataclass
class _Device:
    serial: str
    columns: tuple[str, ...]
    position: dict[str, int] = field(init=False)  # column → index in a row (ts is 0)
    blank_row: list[str] = field(init=False)  # ts, the columns, extra: all empty
    last_ts: int = -1
    pending: list[tuple[int, str]] = field(default_factory=list)  # (ts_ms, csv line)
    day: _DayFile | None = None
    dropped: int = 0

    def __post_init__(self) -> None:
        self.position = {col: i for i, col in enumerate(self.columns, start=1)}
        self.blank_row = [""] * (len(self.columns) + 2)


class DiskFullError(OSError):
    pass


class Store:
    """Append-only writer for the collector. Not thread-safe: one owner calls it."""

    def __init__(self, data_dir: Path, columns_for: Callable[[str], tuple[str, ...]],
                 max_pending_rows: int = MAX_PENDING_ROWS):
        self.data_dir = Path(data_dir)
        self._columns_for = columns_for
        self._devices: dict[str, _Device] = {}
        self.write_error: str | None = None
        self.max_pending_rows = max_pending_rows

    def open_device(self, serial: str, product_type: str) -> int:
        """Register a device, repair its newest file, return its last stored ts (or -1)."""
        folder = device_dir(self.data_dir, serial)
        folder.mkdir(parents=True, exist_ok=True)
        dev = _Device(serial, self._columns_for(product_type))
        for path in reversed(day_files(self.data_dir, serial)):
            removed = repair(path)
            if removed:
                log.warning("%s: repaired torn tail (%d bytes cut after the last complete row)",
                            path, removed)
            found = last_row(path)
            if found:
                dev.last_ts = found[0]
                break
        self._devices[serial] = dev
        return dev.last_ts

    def last_ts(self, serial: str) -> int:
        return self._devices[serial].last_ts

    def append(self, serial: str, ts_ms: int, values: dict[str, float | str],
               extra: dict[str, float] | None = None) -> bool:
        """Buffer one sample. False (nothing buffered) when ts is not after the last one."""
        dev = self._devices[serial]
        if ts_ms <= dev.last_ts:
            return False
        return self.append_line(serial, ts_ms, self._encode(dev, ts_ms, values, extra or {}))

    def encoder(self, serial: str) -> Callable[[int, dict[str, float | str], dict[str, float]],
                                                str]:
        """``encode(ts_ms, values, extra)`` → the CSV line ``append_line`` takes.

        Pure (it reads the device's column layout, fixed by ``open_device``), so another
        thread may encode while this store's owner writes: the collector encodes each
        sample right where it is taken.
        """
        dev = self._devices[serial]
        return lambda ts_ms, values, extra: self._encode(dev, ts_ms, values, extra)

    def append_line(self, serial: str, ts_ms: int, line: str) -> bool:
        """``append`` for a line from ``encoder``."""
        dev = self._devices[serial]
        if ts_ms <= dev.last_ts:
            return False
        dev.last_ts = ts_ms
        if len(dev.pending) >= self.max_pending_rows:  # unwritable for that long
            excess = len(dev.pending) - self.max_pending_rows + 1
            del dev.pending[:excess]
            dev.dropped += excess
        dev.pending.append((ts_ms, line))
        return True

    def dropped(self, serial: str) -> int:
        """Rows of the device dropped, oldest first, since the store was opened: held in
        memory while it could not be written, beyond ``max_pending_rows``."""
        return self._devices[serial].dropped

    def _encode(self, dev: _Device, ts_ms: int, values: dict[str, float | str],
                extra: dict[str, float]) -> str:
        # Encoded against the device's current column set; re-encoded if a day file's
        # header (fixed at its creation) turns out to differ. Runs once per sample, so it
        # visits the values present only (a P1 meter fills half its columns); numbers need
        # no CSV quoting, so only text and the extra JSON are looked at.
        row = dev.blank_row.copy()
        row[0] = format_ts(ts_ms)
        position = dev.position
        special = CSV_SPECIAL
        more: dict[str, object] | None = None
        text = False  # True: some field needs CSV quoting
        for key, value in values.items():
            i = position.get(key)
            if i is None:
                if not isinstance(value, str):
                    if more is None:
                        more = {}
                    more[key] = value
            elif type(value) is float:
                row[i] = repr(int(value)) if value.is_integer() and abs(value) < 1e15 \
                    else repr(value)
            elif type(value) is str:
                row[i] = value
                text = text or not special.isdisjoint(value)
            elif value is not None:
                row[i] = format_value(value)
                text = True
        if extra:
            if more is None:
                more = {}
            more.update(extra)
        if text:  # a character that needs quoting: let the csv module do it
            row[-1] = encode_extra(more) if more else ""
            return encode_line(row)
        if more:  # a JSON object always holds quotes: CSV-quoted, inner quotes doubled
            row[-1] = quote(encode_extra(more))
        return join_line(row)

    def pending_rows(self) -> int:
        return sum(len(d.pending) for d in self._devices.values())

    def flush(self) -> int:
        """Write and fsync every buffered row; returns rows made durable.

        On a write error (disk full, I/O error) the file is cut back to its last complete
        row, the rows stay buffered for the next flush, and ``write_error`` says why.
        """
        written = 0
        errors: list[str] = []
        for dev in self._devices.values():
            try:
                written += self._flush_device(dev)
            except OSError as exc:
                errors.append(f"{dev.serial}: {exc.strerror or exc}")
        self.write_error = "; ".join(errors) or None
        return written

    def _flush_device(self, dev: _Device) -> int:
        count = 0
        while dev.pending:
            day = day_of(dev.pending[0][0])
            batch = [p for p in dev.pending if day_of(p[0]) == day]
            day_file = self._day_file(dev, day)
            data = "".join(self._line_for(dev, day_file, ts, line) for ts, line in batch)
            size = os.lseek(day_file.fd, 0, os.SEEK_END)
            try:
                view = memoryview(data.encode("utf-8"))
                while view:
                    n = os.write(day_file.fd, view)
                    view = view[n:]
                os.fsync(day_file.fd)
            except OSError:
                os.ftruncate(day_file.fd, size)  # never leave a torn row behind
                raise
            del dev.pending[: len(batch)]
            count += len(batch)
        return count

    def _line_for(self, dev: _Device, day_file: _DayFile, ts: int, line: str) -> str:
        if day_file.columns == dev.columns:
            return line
        # The file predates a column change: map by name, the rest goes to extra.
        values = decode_fields(line)
        named = dict(zip((TS_COLUMN, *dev.columns, EXTRA_COLUMN), values, strict=True))
        extra = decode_extra(named[EXTRA_COLUMN])
        row_values: dict[str, float | str] = {}
        for col in dev.columns:
            text = named[col]
            if text == "":
                continue
            if col in day_file.index:
                row_values[col] = text
            else:
                try:
                    extra[col] = float(text)
                except ValueError:
                    continue
        tmp = _Device(dev.serial, day_file.columns)
        return self._encode(tmp, ts, row_values, extra)

    def _day_file(self, dev: _Device, day: str) -> _DayFile:
        if dev.day and dev.day.path.stem == day:
            return dev.day
        if dev.day:
            os.close(dev.day.fd)
            dev.day = None
        path = day_path(self.data_dir, dev.serial, day)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            if os.fstat(fd).st_size == 0:
                header = encode_header(dev.columns)
                os.write(fd, header.encode())
                os.fsync(fd)
                fsync_dir(path.parent)
                columns = dev.columns
            else:
                with path.open("rb") as fh:
                    names = decode_header(fh.readline())
                columns = tuple(names[1:-1])
        except OSError:
            os.close(fd)
            raise
        dev.day = _DayFile(path, columns, {c: i for i, c in enumerate(columns)}, fd)
        return dev.day

    def close(self) -> None:
        for dev in self._devices.values():
            if dev.day:
                os.close(dev.day.fd)
                dev.day = None


def write_history(data_dir: Path, serial: str, columns: tuple[str, ...],
                  rows: Iterable[tuple[int, dict[str, float | str]]]) -> int:
    """Write pre-generated rows through the same writer the collector uses."""
    store = Store(data_dir, lambda _t: columns)
    store.open_device(serial, "")
    count = 0
    try:
        for ts_ms, values in rows:
            if store.append(serial, ts_ms, values):
                count += 1
            if store.pending_rows() >= MAX_PENDING_ROWS // 2:
                _flush_or_raise(store)
        _flush_or_raise(store)
    finally:
        store.close()
    return count


def _flush_or_raise(store: Store) -> None:
    store.flush()
    if store.write_error:
        raise DiskFullError(store.write_error)
