"""The store owns its format: one timestamp codec, one line codec, one way to open a day file
(plain or compressed), and no reader outside the store that parses a line itself."""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

import hw_picollector
import hw_picollector_controller
import hw_picollector_simulator
from hw_picollector import health, store
from hw_picollector.store import codec

# -- timestamps ------------------------------------------------------------------------------


def ms(text: str) -> int:
    """The reference: the datetime module's reading of an ISO timestamp."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("text", [
    "1970-01-01T00:00:00.000Z",
    "2026-11-26T08:43:23.123Z",
    "2026-12-31T23:59:59.999Z",  # the last millisecond of a day, of a year
    "2027-01-01T00:00:00.000Z",
    "2028-02-29T00:00:00.000Z",  # leap day
    "2028-02-29T23:59:59.999Z",
    "2028-03-01T00:00:00.000Z",
    "2000-02-29T12:00:00.001Z",  # leap day of a century divisible by 400
    "2099-12-31T23:59:59.999Z",
])
def test_a_timestamp_round_trips(text: str) -> None:
    assert store.parse_ts(text) == ms(text)
    assert store.format_ts(store.parse_ts(text)) == text
    assert len(text) == store.TS_LEN
    assert store.day_of(store.parse_ts(text)) == text[:10]
    assert store.hour_of(text) == text[:13]


def test_the_last_millisecond_of_a_day_belongs_to_it() -> None:
    end = store.parse_ts("2028-02-29T23:59:59.999Z")
    assert store.day_of(end) == "2028-02-29"
    assert store.day_of(end + 1) == "2028-03-01"
    assert store.format_ts(end + 1) == "2028-03-01T00:00:00.000Z"


def test_random_timestamps_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        ts = rng.randrange(0, 4_102_444_800_000)  # 1970 .. 2100
        assert store.parse_ts(store.format_ts(ts)) == ts


@pytest.mark.parametrize("text", [
    "2026-11-26T08:43:23Z", "2026-11-26T08:43:23.12Z", "2026-11-26T08:43:23.1234Z",
    "2026-11-26 08:43:23.123Z", "2026-11-26T08:43:23.123z", "2026-11-26T08:43:23.123+00:00",
    "2026-11-26T24:00:00.000Z", "2026-11-26T08:60:00.000Z", "2026-11-26T08:43:60.000Z",
    "2027-02-29T00:00:00.000Z",  # not a leap year
    "2100-02-29T00:00:00.000Z",  # a century not divisible by 400
    "2026-13-01T00:00:00.000Z", " 2026-11-26T08:43:23.123Z", "",
])
def test_parse_ts_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        store.parse_ts(text)


def test_the_block_parser_reads_the_positions_the_codec_defines() -> None:
    text = store.format_ts(1_764_146_603_123)
    assert text[:codec.MINUTE_END] == "2025-11-26T08:43:"
    assert text[codec.MINUTE_END:codec.SECOND_END] == "23"
    assert text[codec.DOT] == "." and text[codec.ZONE] == "Z"
    assert text[codec.MILLI_START:codec.MILLI_END] == "123"
    start = codec.minute_ms(text[:codec.MINUTE_END])
    assert start + codec.SECONDS_MS["23"] + codec.MILLIS["123"] == 1_764_146_603_123


# -- lines -----------------------------------------------------------------------------------

FIELDS = [
    ["2026-11-26T08:43:23.123Z", "1", "", ""],
    ["2026-11-26T08:43:23.123Z", "-2.5", "", '{"a":1.5,"b":2}'],  # the extra JSON: quoted
    ["2026-11-26T08:43:23.123Z", "a,b", "c", ""],  # a comma in a field
    ["2026-11-26T08:43:23.123Z", 'say "hi"', '"', '""'],  # quotes, doubled
    ["2026-11-26T08:43:23.123Z", "", "", ""],  # empty values
    ["2026-11-26T08:43:23.123Z", " lead", "trail ", "é ✓"],  # spaces, not ASCII
    ["2028-02-29T23:59:59.999Z", "1e+16", "0.1", '{"k":"v,w"}'],
]


@pytest.mark.parametrize("fields", FIELDS)
def test_a_line_round_trips(fields: list[str]) -> None:
    line = store.encode_line(fields)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    assert line == buf.getvalue()  # exactly the csv module's
    found = store.decode_line(line.encode(), len(fields))
    assert found == (store.parse_ts(fields[0]), fields)
    assert store.decode_fields(line) == fields
    assert store.valid_line(line.encode(), len(fields))


def test_a_line_without_special_characters_is_joined_as_the_csv_module_writes_it() -> None:
    fields = ["2026-11-26T08:43:23.123Z", "1", "", "2.5"]
    assert codec.join_line(fields) == store.encode_line(fields)
    blob = store.encode_extra({"b": 2.0, "a": 1.5})
    assert blob == '{"a":1.5,"b":2.0}'
    assert codec.join_line([*fields[:3], codec.quote(blob)]) == store.encode_line(
        [*fields[:3], blob])
    assert store.decode_extra(blob) == {"a": 1.5, "b": 2.0}
    assert store.decode_extra("") == {}


@pytest.mark.parametrize(("line", "why"), [
    (b"2026-11-26T08:43:23.123Z,1,,", "incomplete line (no newline)"),
    (b"2026-11-26T08:43:23.123Z,1,\x00,\n", "NUL bytes"),
    (b"2026-11-26T08:43:23.123Z,\xff,,\n", "invalid UTF-8 at byte 25"),
    (b"2026-11-26T08:43:23.123Z,1,\n", "3 fields, expected 4"),
    (b"2026-11-26T08:43:23Z,1,,\n", "bad timestamp '2026-11-26T08:43:23Z'"),
    (b'2026-11-26T08:43:23.123Z,"a"b,,\n', "4 fields, expected 4"),
])
def test_a_damaged_line_says_why(line: bytes, why: str) -> None:
    found = store.decode_line(line, 4)
    if why.startswith("4 fields"):  # the csv module reads "a"b as one field: a row
        assert not isinstance(found, str)
    else:
        assert found == why
        assert not store.valid_line(line, 4)


def test_the_writer_and_the_reader_agree(tmp_path: Path) -> None:
    columns = ("power_w", "gas_ts")
    s = store.Store(tmp_path, lambda _t: columns)
    s.open_device("aa01", "")
    values: list[dict[str, float | str]] = [
        {"power_w": 1.0}, {"power_w": -2.5, "gas_ts": "a,b"}, {"gas_ts": 'q"q', "x_w": 3.0},
        {}, {"power_w": 1e16, "gas_ts": "é"}]
    for i, v in enumerate(values):
        assert s.append("aa01", 1_764_146_603_000 + i, v, {"n": 1.0} if i == 3 else None)
    assert s.flush() == len(values)
    s.close()
    (path,) = store.day_files(tmp_path, "aa01")
    assert path.read_bytes().startswith(store.encode_header(columns).encode())
    assert store.read_header(path) == ["ts", *columns, "extra"]
    rows = list(store.scan(path))
    assert [ts for _o, ts, _f in rows] == [1_764_146_603_000 + i for i in range(len(values))]
    assert [f[2] for _o, _t, f in rows] == ["", "a,b", 'q"q', "", "é"]
    assert json.loads(rows[2][2][3]) == {"x_w": 3.0}
    found = store.row_at(path, rows[-1][0], rows[-1][2][0])
    assert found == (rows[-1][1], ["ts", *columns, "extra"], rows[-1][2])
    assert store.row_ending_at(path, rows[-1][0]) == (found.header, found.fields)
    assert store.stamped(store.line_ending_at(path, rows[1][0])[1], rows[1][2][0])


def test_header_width_counts_the_columns_whatever_the_bytes() -> None:
    for header in (b"ts,power_w,extra\n", b"ts,a\xff,extra\r\n", b"\n", b"  ts , a \n"):
        assert store.header_width(header) == len(
            header.decode("utf-8", "replace").strip().split(","))
    assert store.header_width(b"") == 0


# -- hourly counts over plain and compressed days -----------------------------------------


def reference_hourly_counts(data_dir: Path, serial: str, start_ms: int, end_ms: int
                            ) -> Counter[str]:
    """health.hourly_counts as it was before the store counted: the numbers to keep."""
    counts: Counter[str] = Counter()
    first, last = store.format_ts(start_ms), store.format_ts(end_ms)
    folder = data_dir / "measurements" / serial
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


DAY0 = store.parse_ts("2028-02-28T00:00:00.000Z")
DAY1 = DAY0 + store.DAY_MS  # a leap day
DAY2 = DAY1 + store.DAY_MS


def day_bytes(day: int, seconds: list[int], tail: bytes = b"", newline: bytes = b"\n") -> bytes:
    body = b"".join(f"{store.format_ts(day + 1000 * s)},1,".encode() + newline
                    for s in seconds)
    return b"ts,power_w,extra\n" + body + tail


def layout(tmp_path: Path, case: str) -> Path:
    folder = store.device_dir(tmp_path, "aa01")
    folder.mkdir(parents=True)
    late = [86_400 - 1 - i for i in range(0, 600, 7)][::-1]  # the last 10 minutes
    early = [i * 13 for i in range(600)]  # the first two hours and a bit
    torn = f"{store.format_ts(DAY1 + 7_199_999)},1".encode()  # 01:59:59.999
    plain0, plain1 = folder / "2028-02-28.csv", folder / "2028-02-29.csv"
    gz0, gz1 = folder / "2028-02-28.csv.gz", folder / "2028-02-29.csv.gz"
    if case == "plain":
        plain0.write_bytes(day_bytes(DAY0, late))
        plain1.write_bytes(day_bytes(DAY1, early, torn))
    elif case == "gzipped":
        gz0.write_bytes(gzip.compress(day_bytes(DAY0, late)))
        gz1.write_bytes(gzip.compress(day_bytes(DAY1, early, torn)))
    elif case == "mixed":  # retention compressed day 0; day 1 still plain, torn
        gz0.write_bytes(gzip.compress(day_bytes(DAY0, late)))
        plain1.write_bytes(day_bytes(DAY1, early, torn))
    elif case == "both":  # a plain file and its compressed copy: the plain one counts
        plain1.write_bytes(day_bytes(DAY1, early[:100]))
        gz1.write_bytes(gzip.compress(day_bytes(DAY1, early)))
    elif case == "crlf":
        plain1.write_bytes(day_bytes(DAY1, early, b"", b"\r\n"))
        gz0.write_bytes(gzip.compress(day_bytes(DAY0, late, torn + b"\r", b"\r\n")))
    elif case == "damaged":
        bad = (b"\x00\x00\x00\n" + f"{store.format_ts(DAY1 + 3_600_000)},\xff\xfe,x,y\n".encode()
               + b"garbage\n" + f"{store.format_ts(DAY1 + 3_700_000)}\r".encode()
               + b"1,\n" + b"\n")
        plain1.write_bytes(day_bytes(DAY1, early[:300], bad + day_bytes(DAY1, early[300:])))
    elif case == "truncated-gz":  # a compressed day cut short: what was read of it counts
        gz0.write_bytes(gzip.compress(day_bytes(DAY0, late))[:-40])
        data = gzip.compress(day_bytes(DAY1, early))
        gz1.write_bytes(data[: len(data) // 2])
    elif case == "unreadable-plain":  # the plain file cannot be read: its copy is
        plain1.mkdir()
        gz1.write_bytes(gzip.compress(day_bytes(DAY1, early)))
    elif case == "not-gzip":
        gz1.write_bytes(day_bytes(DAY1, early))
    elif case == "empty":
        plain0.write_bytes(b"")
        plain1.write_bytes(b"ts,power_w,extra\n")
    return folder


CASES = ["plain", "gzipped", "mixed", "both", "crlf", "damaged", "truncated-gz",
         "unreadable-plain", "not-gzip", "empty"]
WINDOWS = [(DAY0, DAY2), (DAY0 + 86_000_000, DAY1 + 7_200_001), (DAY1 + 1, DAY1 + 3_600_000),
           (DAY1 + 3_600_000, DAY2 + 5 * store.DAY_MS), (DAY1, DAY1)]


@pytest.mark.parametrize("case", CASES)
def test_hourly_counts_are_the_numbers_they_were(tmp_path: Path, case: str) -> None:
    layout(tmp_path, case)
    for start, end in WINDOWS:
        expected = reference_hourly_counts(tmp_path, "aa01", start, end)
        assert store.count_per_hour(tmp_path, "aa01", start, end) == expected
        assert health.hourly_counts(tmp_path, "aa01", start, end) == expected


def test_hourly_counts_leave_the_torn_last_line_out(tmp_path: Path) -> None:
    for case in ("plain", "gzipped"):
        folder = layout(tmp_path / case, case)
        counts = store.count_per_hour(tmp_path / case, "aa01", DAY1 - 600_000, DAY1 + 7_200_001)
        assert counts["2028-02-28T23"] == len(range(0, 600, 7))
        assert counts["2028-02-29T00"] == len([s for s in range(0, 600 * 13, 13) if s < 3600])
        # the torn line at 01:59:59.999 is not a sample
        assert counts["2028-02-29T01"] == len([s for s in range(0, 600 * 13, 13)
                                               if 3600 <= s < 7200])
        assert sum(counts.values()) == len(range(0, 600, 7)) + len(range(0, 7200, 13))
        assert sorted(p.name for p in folder.iterdir())[0].startswith("2028-02-28")


def test_timestamps_of_a_plain_and_a_compressed_day_are_the_same(tmp_path: Path) -> None:
    data = day_bytes(DAY1, [0, 1, 3599, 3600], b"2028-02-29T01:00:01.000Z,1")
    plain = tmp_path / "2028-02-29.csv"
    plain.write_bytes(data)
    gz = store.compress(plain)
    assert gz == store.compressed_path(plain) and not plain.exists()
    assert gzip.decompress(gz.read_bytes()) == data
    plain.write_bytes(data)
    expected = [store.format_ts(DAY1 + 1000 * s) for s in (0, 1, 3599, 3600)]
    assert list(store.timestamps(plain)) == list(store.timestamps(gz)) == expected
    with store.open_day(gz) as fh:
        assert fh.readline() == "ts,power_w,extra\n"
    assert store.file_day(gz) == store.file_day(plain) == "2028-02-29"


# -- no reader of its own outside the store ------------------------------------------------

PACKAGES = [Path(p.__file__).resolve().parent
            for p in (hw_picollector, hw_picollector_controller, hw_picollector_simulator)]
STORE = PACKAGES[0] / "store"


TS_PIECES = {codec.DAY_LEN, codec.HOUR_LEN, codec.MINUTE_END, codec.SECOND_END, codec.ZONE,
             codec.TS_LEN}


def own_readings(source: str) -> list[tuple[int, str]]:
    """Where a module reads the store's format itself: (line, what).

    - ``import gzip`` / ``from gzip import ...`` (a day file, plain or compressed, is opened
      by the store's ``open_day``; compressed by its ``compress``);
    - a string naming a day file: ``.csv.gz``, ``.csv`` (docstrings aside);
    - a slice up to a timestamp's width (``[:24]``, ``[:TS_LEN]``), or of a ``line`` up to
      the end of a piece of its timestamp (``line[:13]``: its hour, ``line[:10]``: its day);
    - ``import csv`` in the runtime (a line is decoded by the store's codec).
    """
    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name in ("gzip", "csv")]
        elif isinstance(node, ast.ImportFrom) and node.module in ("gzip", "csv"):
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings and ".csv" in node.value:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            upper, lower = node.slice.upper, node.slice.lower
            if lower is not None and not (isinstance(lower, ast.Constant) and lower.value == 0):
                continue
            name = upper.id if isinstance(upper, ast.Name) else \
                upper.attr if isinstance(upper, ast.Attribute) else None
            of_line = isinstance(node.value, ast.Name) and "line" in node.value.id.lower()
            if (isinstance(upper, ast.Constant) and (upper.value == store.TS_LEN or (
                    of_line and upper.value in TS_PIECES))) or name == "TS_LEN":
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_guard_sees_a_reader_of_its_own() -> None:
    flagged = """
import gzip
from gzip import open as gz_open
path.with_suffix(".csv.gz")
folder / f"{day}.csv"
ts = line[:24]
ts = text[0:store.TS_LEN]
hour = raw_line[:13]
import csv
"""
    assert sorted(n for n, _ in own_readings(flagged)) == [2, 3, 4, 5, 6, 7, 8, 9]
    fine = '''
"""Docstrings may name ``.csv.gz`` files."""
hour = store.format_ts(ms)[:13]
name = serial[:12]
rest = line[3:24]
digest = text[:32]
status = status_line[:40]
'''
    assert own_readings(fine) == []


def test_no_module_outside_the_store_reads_a_day_file_itself() -> None:
    found = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if STORE in path.parents:
                continue
            hits = own_readings(path.read_text(encoding="utf-8"))
            if package != PACKAGES[0]:  # csv is the runtime's store's; others may read CSV
                hits = [h for h in hits if h[1] not in ("import csv", "from csv import")]
            if hits:
                found[str(path.relative_to(package.parent))] = hits
    assert found == {}, f"go through hw_picollector.store (its codec, open_day, compress): {found}"
    # the guard sees the store itself
    assert own_readings((STORE / "day_files.py").read_text(encoding="utf-8"))
    assert own_readings((STORE / "codec.py").read_text(encoding="utf-8"))


def test_a_day_of_every_timestamp_of_2028_round_trips() -> None:
    start = datetime(2028, 1, 1, tzinfo=UTC)
    for day in range(366):
        ts = int(start.timestamp()) * 1000 + day * store.DAY_MS
        for offset in (0, store.DAY_MS - 1):
            text = store.format_ts(ts + offset)
            assert store.parse_ts(text) == ts + offset
            assert store.day_of(ts + offset) == text[:10]
