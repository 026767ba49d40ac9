"""The day files' format, in one place: the timestamp codec and the line codec.

A timestamp is ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds, always ``TS_LEN``
characters). A line is one CSV record ending in ``\\n``: the timestamp, the columns of the
file's header, then ``extra`` (JSON). The header line is ``ts,<columns>,extra``.

Every reader and writer of a day file goes through here; the sync's block parser
(reader.py ``_parse_block``) decodes the same format piecewise for speed, from the tables
and positions defined here.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import threading
from datetime import UTC, date, datetime
from typing import Any

TS_COLUMN = "ts"
EXTRA_COLUMN = "extra"
HEADER_START = b"ts,"  # how a header line begins (repair tells it from a row by this)

TS_LEN = 24  # len("2026-11-26T08:43:23.123Z")
HOUR_LEN = 13  # len("2026-11-26T08"): the UTC hour a timestamp falls in
DAY_LEN = 10  # len("2026-11-26"): the UTC day, a day file's name
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Where the pieces of a timestamp are: "YYYY-MM-DDTHH:MM:" "SS" "." "mmm" "Z"
MINUTE_END = 17  # the prefix up to and including the minute's colon
SECOND_END = 19
DOT = 19
MILLI_START, MILLI_END = 20, 23
ZONE = 23


# -- timestamps ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_ts(ts_ms: int) -> str:
    """Milliseconds since the epoch → ``2026-11-26T08:43:23.123Z``."""
    seconds, ms = divmod(ts_ms, 1000)
    return f"{_second_text(seconds)}.{ms:03d}Z"


TS_PATTERN = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)\.(\d{3})Z",
                        re.ASCII)
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


# The piecewise decoding of the block parser: a minute's start from its prefix (cached as
# seen), the seconds and the milliseconds from their text.
MINUTE_MS: dict[str, int] = {}
SECONDS_MS = {f"{second:02d}": second * 1000 for second in range(60)}
MILLIS = {f"{milli:03d}": milli for milli in range(1000)}


def minute_ms(prefix: str) -> int:
    """``YYYY-MM-DDTHH:MM:`` (already matched by ``TS_PATTERN``) → milliseconds at its start,
    remembered in ``MINUTE_MS``; ValueError for a date that does not exist."""
    start = _day_ms(prefix[:DAY_LEN]) + int(prefix[11:13]) * HOUR_MS + int(prefix[14:16]) * 60_000
    if len(MINUTE_MS) >= 4096:
        MINUTE_MS.clear()
    MINUTE_MS[prefix] = start
    return start


def parse_ts(text: str) -> int:
    """``2026-11-26T08:43:23.123Z`` → milliseconds since the epoch (strict format).

    Runs for every row the sync reads, so no strptime: one anchored pattern, the day's
    start from a small cache, and the time of day added up.
    """
    match = TS_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO 8601 UTC timestamp with milliseconds: {text!r}")
    day, hours, minutes, seconds, millis = match.groups()
    return (_day_ms(day) + int(hours) * HOUR_MS + int(minutes) * 60_000
            + int(seconds) * 1000 + int(millis))


@functools.lru_cache(maxsize=8)
def _day_text(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def day_of(ts_ms: int) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``."""
    return _day_text(ts_ms // DAY_MS)


def hour_of(ts: str) -> str:
    """The UTC hour of a stored timestamp, ``YYYY-MM-DDTHH``."""
    return ts[:HOUR_LEN]


def parse_day(name: str) -> date:
    return date.fromisoformat(name)


# -- lines -----------------------------------------------------------------------------------


def format_value(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


CSV_SPECIAL = frozenset(',"\r\n\x00')
"""The characters a field cannot hold as is: with one of them, the line is the csv module's."""


def encode_extra(values: dict[str, object]) -> str:
    """The ``extra`` field's JSON: keys sorted, no spaces."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def decode_extra(text: str) -> dict[str, Any]:
    """The ``extra`` field's values ({} when empty)."""
    values: dict[str, Any] = json.loads(text) if text else {}
    return values


def quote(text: str) -> str:
    """One field CSV-quoted, as the csv module quotes it (inner quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'


def encode_line(fields: list[str]) -> str:
    """One CSV line, exactly as ``csv.writer(lineterminator="\\n")`` writes it."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def join_line(fields: list[str]) -> str:
    """``encode_line`` for fields that hold none of ``CSV_SPECIAL`` (or are quoted already)."""
    return ",".join(fields) + "\n"


def encode_header(columns: tuple[str, ...]) -> str:
    """The header line of a day file for a device's canonical columns."""
    return join_line([TS_COLUMN, *columns, EXTRA_COLUMN])


def decode_header(line: bytes) -> list[str]:
    """A day file's first line → its column names (``ts``, ..., ``extra``)."""
    return line.decode("utf-8").rstrip("\n").split(",")


def header_width(line: bytes) -> int:
    """The number of columns a header line names, whatever its bytes (0: no header)."""
    return line.count(b",") + 1 if line else 0


_FIELD_LIMIT = threading.Lock()


def decode_line(line: bytes, width: int, any_size: bool = False) -> tuple[int, list[str]] | str:
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


def valid_line(line: bytes, width: int) -> bool:
    return not isinstance(decode_line(line, width), str)


def decode_fields(line: str) -> list[str]:
    """The fields of one line the store wrote (as the csv module reads them)."""
    return next(csv.reader([line]))


def stamped(line: bytes, ts: str) -> bool:
    """Whether a line begins with the stored timestamp `ts`."""
    return line.startswith(ts.encode())


def line_ts(line: str) -> str:
    """A text line's timestamp as stored: its first ``TS_LEN`` characters, unchecked."""
    return line[:TS_LEN]
