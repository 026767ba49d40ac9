"""The local store on the Pi's SD card: one CSV file per device per UTC day.

Layout: ``<data_dir>/measurements/<serial>/<YYYY-MM-DD>.csv``. The header is fixed when a
file is created (``ts``, the canonical columns of the device type, ``extra``); values the
header has no column for go to ``extra`` as JSON (the collector caps it per sample, see
``canonical.cap_extra``).

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

import csv
import functools
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO

from hw_picollector.files import fsync_dir

log = logging.getLogger(__name__)

MEASUREMENTS = "measurements"
TAIL_SCAN = 1 << 16
MAX_PENDING_ROWS = 3600  # per device: one hour at 1 Hz held in memory while the disk is full


@functools.lru_cache(maxsize=16)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_ts(ts_ms: int) -> str:
    """Milliseconds since the epoch → ``2026-11-26T08:43:23.123Z``."""
    seconds, ms = divmod(ts_ms, 1000)
    return f"{_second_text(seconds)}.{ms:03d}Z"


_TS = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)\.(\d{3})Z", re.ASCII)
_DAY_MS: dict[str, int] = {}


def _day_ms(day: str) -> int:
    """``YYYY-MM-DD`` → milliseconds at 00:00 UTC; ValueError for a date that does not exist."""
    start = _DAY_MS.get(day)
    if start is None:
        start = int(datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
                    .timestamp()) * 1000
        if len(_DAY_MS) >= 4096:  # a store spans few days; never grow without bound
            _DAY_MS.clear()
        _DAY_MS[day] = start
    return start


_MINUTE_MS: dict[str, int] = {}
_SECONDS_MS = {f"{second:02d}": second * 1000 for second in range(60)}
_MILLIS = {f"{milli:03d}": milli for milli in range(1000)}


def _minute_ms(prefix: str) -> int:
    """``YYYY-MM-DDTHH:MM:`` (already matched by ``_TS``) → milliseconds at its start."""
    start = _day_ms(prefix[:10]) + int(prefix[11:13]) * 3_600_000 + int(prefix[14:16]) * 60_000
    if len(_MINUTE_MS) >= 4096:
        _MINUTE_MS.clear()
    _MINUTE_MS[prefix] = start
    return start


def parse_ts(text: str) -> int:
    """``2026-11-26T08:43:23.123Z`` → milliseconds since the epoch (strict format).

    Runs for every row the sync reads, so no strptime: one anchored pattern, the day's
    start from a small cache, and the time of day added up.
    """
    match = _TS.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO 8601 UTC timestamp with milliseconds: {text!r}")
    day, hours, minutes, seconds, millis = match.groups()
    return (_day_ms(day) + int(hours) * 3_600_000 + int(minutes) * 60_000
            + int(seconds) * 1000 + int(millis))


@functools.lru_cache(maxsize=8)
def _day_text(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def day_of(ts_ms: int) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``."""
    return _day_text(ts_ms // 86_400_000)


def format_value(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


_CSV_SPECIAL = frozenset(',"\r\n\x00')


def _csv_line(row: list[str]) -> str:
    """One CSV line, exactly as ``csv.writer(lineterminator="\\n")`` writes it."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


def device_dir(data_dir: Path, serial: str) -> Path:
    return data_dir / MEASUREMENTS / serial


def day_files(data_dir: Path, serial: str) -> list[Path]:
    """The device's day files (``.csv``), oldest first."""
    folder = device_dir(data_dir, serial)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".csv" and len(p.stem) == 10)


def serials(data_dir: Path) -> list[str]:
    root = data_dir / MEASUREMENTS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _valid_line(line: bytes, width: int) -> bool:
    return not isinstance(_parse_line(line, width), str)


_FIELD_LIMIT = threading.Lock()


def _parse_line(line: bytes, width: int, any_size: bool = False) -> tuple[int, list[str]] | str:
    """One line of a day file → (ts in ms, fields), or why it is not a row (one short line).

    A field over the csv module's limit (128 KiB) is refused, unless `any_size`: the sync
    never sends such a row, but the newest row is the newest row, whatever its size.
    """
    if not line.endswith(b"\n"):
        return "incomplete line (no newline)"
    if b"\x00" in line:
        return "NUL bytes"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as exc:
        if not (any_size and "field limit" in str(exc)):
            return f"CSV: {exc}"
        with _FIELD_LIMIT:  # the limit is the module's: raised for this line only
            limit = csv.field_size_limit()
            csv.field_size_limit(max(limit, len(text)))
            try:
                fields = next(csv.reader([text]), [])
            except csv.Error as again:
                return f"CSV: {again}"
            finally:
                csv.field_size_limit(limit)
    if len(fields) != width:
        return f"{len(fields)} fields, expected {width}"
    try:
        return parse_ts(fields[0]), fields
    except ValueError:
        return f"bad timestamp {fields[0][:32]!r}"


LOOKBACK_BLOCK = 1 << 14


def lines_before(fh: BinaryIO, end: int, floor: int = 0, block: int = LOOKBACK_BLOCK
                 ) -> Iterator[tuple[int, bytes]]:
    """The lines of `fh` that end at or before byte `end`, newest first: (start, line).

    Reads backwards a block at a time until the previous newline, whatever a line's size
    (a row with a large ``extra`` cell is far longer than any fixed look-back). The first
    line is the one ending at `end`: without its newline when `end` is not at a line's
    end. Nothing before byte `floor` (the end of the header, say) is read.
    """
    pos = end
    pieces: list[bytes] = []  # the current line's bytes read so far, last first
    first = True
    while pos > floor:
        size = min(block, pos - floor)
        pos -= size
        fh.seek(pos)
        chunk = fh.read(size)
        if len(chunk) != size:
            raise OSError(f"short read at byte {pos}")
        seg_end = len(chunk)
        # in the first block, its last byte is the current line's own newline
        hi = seg_end - 1 if first else seg_end
        first = False
        while (nl := chunk.rfind(b"\n", 0, hi)) >= 0:
            pieces.append(chunk[nl + 1:seg_end])
            yield pos + nl + 1, b"".join(reversed(pieces))
            pieces.clear()
            seg_end, hi = nl + 1, nl  # the line before ends with this newline
        pieces.append(chunk[:seg_end])
    if pieces and any(pieces):
        yield floor, b"".join(reversed(pieces))


def line_ending_at(path: Path, offset: int) -> tuple[int, bytes]:
    """(start, bytes) of the line of a day file that ends at byte `offset`."""
    with path.open("rb") as fh:
        floor = len(fh.readline())
        return next(lines_before(fh, offset, floor), (offset, b""))


def repair(path: Path) -> int:
    """Cut a torn or corrupt tail off a day file; returns the bytes removed (0: intact).

    The torn last line (no newline) goes whatever its size: a large write cut short (the
    rows held through a disk-full outage) can leave more than ``TAIL_SCAN`` bytes of it, and
    the next row appended would be glued onto it. Damaged complete lines before it go too,
    within the last ``TAIL_SCAN`` bytes of the file.
    """
    with path.open("rb+") as fh:
        header = fh.readline()
        width = len(header.decode("utf-8", "replace").strip().split(",")) if header else 0
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - TAIL_SCAN)
        keep = size
        # Walk back from the end over lines that are torn (no newline) or damaged.
        for line_start, line in lines_before(fh, size):
            is_header = line_start == 0
            if line.endswith(b"\n"):  # else the torn last line: cut, whatever its size
                if is_header and line.startswith(b"ts,"):
                    break
                if line_start < start and not is_header:
                    break  # a line starting before the scan window: beyond our reach, keep it
                if not is_header and _valid_line(line, width):
                    break
            keep = line_start
        if keep != size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep


def last_row(path: Path) -> tuple[int, dict[str, str]] | None:
    """The last complete row of a day file: (ts_ms, {column: text}), or None when empty.

    Read backwards from the end, past a torn tail and damaged lines, whatever the size of
    the rows (a row's fields may exceed the csv module's limit: it is still the last row).
    """
    with path.open("rb") as fh:
        header = fh.readline()
        columns = header.decode("utf-8").rstrip("\n").split(",")
        size = fh.seek(0, os.SEEK_END)
        for _start, line in lines_before(fh, size, len(header), TAIL_SCAN):
            found = _parse_line(line, len(columns), any_size=True)
            if not isinstance(found, str):
                return found[0], dict(zip(columns, found[1], strict=True))
    return None


def read_header(path: Path) -> list[str]:
    """A day file's column names (``ts``, ..., ``extra``)."""
    with path.open("rb") as fh:
        return fh.readline().decode("utf-8").rstrip("\n").split(",")


SCAN_BLOCK = 1 << 16
Row = tuple[int, int, list[str]]
BadLine = Callable[[int, bytes, str], bool]
"""``bad(offset, line, why)`` → True to read on past the damaged line at `offset`."""


def scan(path: Path, start: int = 0, end: int | None = None, block: int = SCAN_BLOCK,
         bad: BadLine | None = None) -> Iterator[Row]:
    """Complete rows of a day file between byte offsets: (end offset, ts in ms, fields).

    Reading stops at an incomplete line: what lies beyond is not yet durable (the collector
    appends whole lines and repairs a torn tail before writing). A complete line that is
    not a row (damaged, or a field over the csv module's 128 KiB limit) stops it too,
    unless `bad` is given: it is called with the line, its offset and why, and reading goes
    on past the line when it returns True (the sync quarantines the line first).
    The file is read a block at a time, so memory stays flat whatever its size.
    """
    with path.open("rb") as fh:
        width = len(fh.readline().decode("utf-8").rstrip("\n").split(","))
        offset = max(start, fh.tell())
        limit = fh.seek(0, os.SEEK_END) if end is None else end
        fh.seek(offset)
        read = offset
        tail = b""
        longer: list[bytes] = []  # a line longer than a block: its blocks so far
        while read < limit:
            chunk = fh.read(min(block, limit - read))
            if not chunk:
                return
            read += len(chunk)
            if b"\n" not in chunk:
                longer.append(chunk)  # gathered once, not copied block after block
                continue
            if longer:
                tail = b"".join([tail, *longer])
                longer = []
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            rows, intact = _parse_block(data[:cut], offset, width, bad)
            yield from rows
            if not intact:
                return
            offset += cut


def _parse_block(data: bytes, offset: int, width: int, bad: BadLine | None = None
                 ) -> tuple[list[Row], bool]:
    """Rows of whole lines; False at the first damaged one that `bad` does not pass over
    (the rows before it stand)."""
    rows: list[Row] = []
    base = offset
    if data.isascii() and b'"' not in data and b"\r" not in data and b"\x00" not in data:
        # The common case: numbers, timestamps, no quotes. The csv module would give the
        # same fields; a byte is a character, so offsets add up from the lengths.
        lines = data.decode("ascii").split("\n")
        lines.pop()  # the block ends with a newline
        # A timestamp is "YYYY-MM-DDTHH:MM:" (a minute seen before, or checked in full by
        # the pattern), "SS", ".", "mmm", "Z": the same strict format as parse_ts, looked up
        # piecewise instead of parsed.
        match = _TS.fullmatch
        minutes, seconds, millis = _MINUTE_MS, _SECONDS_MS, _MILLIS
        for line in lines:
            fields = line.split(",")
            if len(fields) != width:
                break
            text = fields[0]
            start = minutes.get(text[:17])
            if start is None:
                if match(text) is None:
                    break
                try:
                    start = _minute_ms(text[:17])
                except ValueError:
                    break
            second = seconds.get(text[17:19])
            milli = millis.get(text[20:23])
            if second is None or milli is None or len(text) != 24 or text[19] != "." \
                    or text[23] != "Z":
                break
            offset += len(line) + 1
            rows.append((offset, start + second + milli, fields))
        else:
            return rows, True
        # A line the quick pass refuses: the careful one takes the block from there.
        data = data[offset - base:]
    # Quoted fields, or a damaged line: line by line through the csv module.
    for piece in data.split(b"\n")[:-1]:
        raw = piece + b"\n"
        found = _parse_line(raw, width)
        if isinstance(found, str):
            if bad is None or not bad(offset, raw, found):
                return rows, False
        else:
            rows.append((offset + len(raw), found[0], found[1]))
        offset += len(raw)
    return rows, True


def read_rows(path: Path, start: int = 0, end: int | None = None
              ) -> Iterator[tuple[int, list[str], list[str]]]:
    """Complete rows of a day file between byte offsets: (end offset, header, fields)."""
    header = read_header(path)
    for offset, _ts, fields in scan(path, start, end):
        yield offset, header, fields


def row_ending_at(path: Path, offset: int, ts: str | None = None
                  ) -> tuple[list[str], list[str]] | None:
    """(header, fields) of the complete row that ends exactly at byte `offset`; with `ts`,
    of the row stamped `ts` that ends there or, past lines quarantined after it, before."""
    with path.open("rb") as fh:
        first = fh.readline()
        header = first.decode("utf-8").rstrip("\n").split(",")
        for _start, line in lines_before(fh, offset, len(first)):
            found = _parse_line(line, len(header))
            if ts is None:
                return None if isinstance(found, str) else (header, found[1])
            if not isinstance(found, str):
                if found[1][0] == ts:
                    return header, found[1]
                if found[1][0] < ts:
                    return None  # rows only get older from here
    return None


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
                text = text or not _CSV_SPECIAL.isdisjoint(value)
            elif value is not None:
                row[i] = format_value(value)
                text = True
        if extra:
            if more is None:
                more = {}
            more.update(extra)
        if text:  # a character that needs quoting: let the csv module do it
            row[-1] = json.dumps(more, sort_keys=True, separators=(",", ":")) if more else ""
            return _csv_line(row)
        if more:  # a JSON object always holds quotes: CSV-quoted, inner quotes doubled
            blob = json.dumps(more, sort_keys=True, separators=(",", ":"))
            row[-1] = '"' + blob.replace('"', '""') + '"'
        return ",".join(row) + "\n"

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
        values = next(csv.reader([line]))
        named = dict(zip(("ts", *dev.columns, "extra"), values, strict=True))
        extra = json.loads(named["extra"]) if named["extra"] else {}
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
        path = device_dir(self.data_dir, dev.serial) / f"{day}.csv"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            if os.fstat(fd).st_size == 0:
                header = ",".join(("ts", *dev.columns, "extra")) + "\n"
                os.write(fd, header.encode())
                os.fsync(fd)
                fsync_dir(path.parent)
                columns = dev.columns
            else:
                with path.open("rb") as fh:
                    names = fh.readline().decode("utf-8").rstrip("\n").split(",")
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


def parse_day(name: str) -> date:
    return date.fromisoformat(name)
