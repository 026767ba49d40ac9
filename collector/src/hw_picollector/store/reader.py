"""Reading day files: the sync's block scan, the look-back from a byte offset, the last row,
and the timestamps of a day (plain or compressed) for the hourly counts."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from hw_picollector.store.codec import (
    DAY_MS,
    DOT,
    MILLI_END,
    MILLI_START,
    MILLIS,
    MINUTE_END,
    MINUTE_MS,
    SECOND_END,
    SECONDS_MS,
    TS_LEN,
    TS_PATTERN,
    ZONE,
    day_of,
    decode_header,
    decode_line,
    format_ts,
    hour_of,
    line_ts,
    minute_ms,
)
from hw_picollector.store.day_files import day_paths, open_day

TAIL_SCAN = 1 << 16
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


def last_row(path: Path) -> tuple[int, dict[str, str]] | None:
    """The last complete row of a day file: (ts_ms, {column: text}), or None when empty.

    Read backwards from the end, past a torn tail and damaged lines, whatever the size of
    the rows (a row's fields may exceed the csv module's limit: it is still the last row).
    """
    with path.open("rb") as fh:
        header = fh.readline()
        columns = decode_header(header)
        size = fh.seek(0, os.SEEK_END)
        for _start, line in lines_before(fh, size, len(header), TAIL_SCAN):
            found = decode_line(line, len(columns), any_size=True)
            if not isinstance(found, str):
                return found[0], dict(zip(columns, found[1], strict=True))
    return None


def read_header(path: Path) -> list[str]:
    """A day file's column names (``ts``, ..., ``extra``)."""
    with path.open("rb") as fh:
        return decode_header(fh.readline())


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
        width = len(decode_header(fh.readline()))
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
        # the pattern), "SS", ".", "mmm", "Z": the codec's strict format (parse_ts), looked
        # up piecewise from its tables instead of parsed.
        match = TS_PATTERN.fullmatch
        minutes, seconds, millis = MINUTE_MS, SECONDS_MS, MILLIS
        m_end, s_end, dot, ms_start, ms_end, zone, ts_len = (
            MINUTE_END, SECOND_END, DOT, MILLI_START, MILLI_END, ZONE, TS_LEN)
        for line in lines:
            fields = line.split(",")
            if len(fields) != width:
                break
            text = fields[0]
            start = minutes.get(text[:m_end])
            if start is None:
                if match(text) is None:
                    break
                try:
                    start = minute_ms(text[:m_end])
                except ValueError:
                    break
            second = seconds.get(text[m_end:s_end])
            milli = millis.get(text[ms_start:ms_end])
            if second is None or milli is None or len(text) != ts_len or text[dot] != "." \
                    or text[zone] != "Z":
                break
            offset += len(line) + 1
            rows.append((offset, start + second + milli, fields))
        else:
            return rows, True
        # A line the quick pass refuses: the careful one takes the block from there.
        data = data[offset - base:]
    # Quoted fields, or a damaged line: line by line through the codec.
    for piece in data.split(b"\n")[:-1]:
        raw = piece + b"\n"
        found = decode_line(raw, width)
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


class StoredRow(NamedTuple):
    """One row read back: its timestamp decoded, the file's header, the row's fields."""

    ts_ms: int
    header: list[str]
    fields: list[str]


def row_at(path: Path, offset: int, ts: str | None = None) -> StoredRow | None:
    """The complete row that ends exactly at byte `offset`; with `ts`, the row stamped `ts`
    that ends there or, past lines quarantined after it, before."""
    with path.open("rb") as fh:
        first = fh.readline()
        header = decode_header(first)
        for _start, line in lines_before(fh, offset, len(first)):
            found = decode_line(line, len(header))
            if ts is None:
                return None if isinstance(found, str) else StoredRow(found[0], header, found[1])
            if not isinstance(found, str):
                if found[1][0] == ts:
                    return StoredRow(found[0], header, found[1])
                if found[1][0] < ts:
                    return None  # rows only get older from here
    return None


def row_ending_at(path: Path, offset: int, ts: str | None = None
                  ) -> tuple[list[str], list[str]] | None:
    """``row_at`` as (header, fields)."""
    found = row_at(path, offset, ts)
    return None if found is None else (found.header, found.fields)


def timestamps(path: Path) -> Iterator[str]:
    """The timestamps of a day file's complete lines as stored (the first ``TS_LEN``
    characters, unchecked), plain or compressed; a torn last line (no newline) is left out.
    Lines are read as ``open_day`` reads them."""
    with open_day(path) as fh:
        next(fh, None)  # header
        for line in fh:
            if line.endswith("\n"):
                yield line_ts(line)


def count_per_hour(data_dir: Path, serial: str, start_ms: int, end_ms: int) -> Counter[str]:
    """Samples per UTC hour (``YYYY-MM-DDTHH``) in [start_ms, end_ms), from the device's day
    files (plain or compressed by retention) that overlap the window. A file that cannot be
    read (to its end) counts what was read of it; the compressed copy is then read too."""
    counts: Counter[str] = Counter()
    first, last = format_ts(start_ms), format_ts(end_ms)
    day = start_ms - start_ms % DAY_MS
    while day < end_ms:
        for path in day_paths(data_dir, serial, day_of(day)):
            if not path.exists():
                continue
            try:
                for ts in timestamps(path):
                    if first <= ts < last:
                        counts[hour_of(ts)] += 1
            except (OSError, EOFError):
                continue
            break
        day += DAY_MS
    return counts
