"""The local CSV store: format, torn-line repair, ordering, disk errors."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from hw_picollector import store

COLS = ("power_w", "energy_import_kwh", "gas_ts")


def cols(_: str) -> tuple[str, ...]:
    return COLS


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_timestamps_round_trip_with_milliseconds_and_z() -> None:
    ts = 1_764_146_603_123
    text = store.format_ts(ts)
    assert text == "2025-11-26T08:43:23.123Z"
    assert store.parse_ts(text) == ts
    with pytest.raises(ValueError):
        store.parse_ts("2025-11-26T08:43:23Z")


def test_rows_land_in_one_file_per_utc_day_with_fixed_header(tmp_path: Path) -> None:
    s = store.Store(tmp_path, cols)
    assert s.open_device("3c39e7aabbcc", "HWE-P1") == -1
    midnight = 1_764_115_200_000  # 2025-11-26T00:00:00Z
    assert s.append("3c39e7aabbcc", midnight - 1, {"power_w": 1.0})
    assert s.append("3c39e7aabbcc", midnight, {"power_w": -2.5, "gas_ts": "2025-11-26T00:00:00",
                                               "new_w": 7.0}, {"foo": 1.5})
    assert s.flush() == 2
    s.close()
    folder = tmp_path / "measurements" / "3c39e7aabbcc"
    assert sorted(p.name for p in folder.iterdir()) == ["2025-11-25.csv", "2025-11-26.csv"]
    day1, day2 = read(folder / "2025-11-25.csv"), read(folder / "2025-11-26.csv")
    assert (folder / "2025-11-26.csv").read_text().splitlines()[0] == \
        "ts,power_w,energy_import_kwh,gas_ts,extra"
    assert day1 == [{"ts": "2025-11-25T23:59:59.999Z", "power_w": "1", "energy_import_kwh": "",
                     "gas_ts": "", "extra": ""}]
    assert day2[0]["power_w"] == "-2.5"
    assert json.loads(day2[0]["extra"]) == {"foo": 1.5, "new_w": 7.0}


def test_ts_must_strictly_increase(tmp_path: Path) -> None:
    s = store.Store(tmp_path, cols)
    s.open_device("aaaaaaaaaaaa", "HWE-P1")
    assert s.append("aaaaaaaaaaaa", 2000, {"power_w": 1.0})
    assert not s.append("aaaaaaaaaaaa", 2000, {"power_w": 2.0})  # duplicate
    assert not s.append("aaaaaaaaaaaa", 1000, {"power_w": 3.0})  # clock went back
    assert s.append("aaaaaaaaaaaa", 2001, {"power_w": 4.0})
    s.flush()
    s.close()
    rows = read(store.day_files(tmp_path, "aaaaaaaaaaaa")[0])
    assert [r["power_w"] for r in rows] == ["1", "4"]
    # A restart resumes after the last stored ts: the clock check survives restarts.
    s2 = store.Store(tmp_path, cols)
    assert s2.open_device("aaaaaaaaaaaa", "HWE-P1") == 2001
    assert not s2.append("aaaaaaaaaaaa", 1500, {"power_w": 5.0})


@pytest.mark.parametrize("tail", [b"1970-01-01T00:00:05.000Z,1,2", b"\x00\x00\x00\x00",
                                  b"1970-01-01T00:00:05.000Z,1\n\x00\x00\n",
                                  b"garbage,,\n",
                                  # a torn last line longer than the tail scan (a big write
                                  # after an outage, cut by a power cut): cut whatever its size
                                  b"\x00" * (store.TAIL_SCAN + 5000),
                                  b"1970-01-01T00:00:05.000Z,1," + b"9" * (3 * store.TAIL_SCAN)])
def test_torn_or_damaged_tail_is_cut_on_open(tmp_path: Path, tail: bytes) -> None:
    s = store.Store(tmp_path, cols)
    s.open_device("bbbbbbbbbbbb", "HWE-P1")
    for i in range(1, 4):
        s.append("bbbbbbbbbbbb", i * 1000, {"power_w": float(i)})
    s.flush()
    s.close()
    path = store.day_files(tmp_path, "bbbbbbbbbbbb")[0]
    intact = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(tail)
    s2 = store.Store(tmp_path, cols)
    assert s2.open_device("bbbbbbbbbbbb", "HWE-P1") == 3000
    assert path.read_bytes() == intact
    s2.append("bbbbbbbbbbbb", 4000, {"power_w": 4.0})
    s2.flush()
    assert [r["power_w"] for r in read(path)] == ["1", "2", "3", "4"]


def test_torn_header_restarts_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "measurements" / "cccccccccccc"
    folder.mkdir(parents=True)
    (folder / "1970-01-01.csv").write_bytes(b"ts,pow")
    s = store.Store(tmp_path, cols)
    assert s.open_device("cccccccccccc", "HWE-P1") == -1
    s.append("cccccccccccc", 1000, {"power_w": 1.0})
    s.flush()
    assert read(folder / "1970-01-01.csv")[0]["power_w"] == "1"


def test_existing_header_wins_and_unknown_columns_go_to_extra(tmp_path: Path) -> None:
    folder = tmp_path / "measurements" / "dddddddddddd"
    folder.mkdir(parents=True)
    (folder / "1970-01-01.csv").write_text("ts,power_w,extra\n1970-01-01T00:00:00.500Z,1,\n")
    s = store.Store(tmp_path, cols)
    assert s.open_device("dddddddddddd", "HWE-P1") == 500
    s.append("dddddddddddd", 1000, {"power_w": 2.0, "energy_import_kwh": 3.25,
                                    "gas_ts": "2025-01-01T00:00:00"})
    s.flush()
    rows = read(folder / "1970-01-01.csv")
    assert rows[1]["power_w"] == "2"
    assert json.loads(rows[1]["extra"]) == {"energy_import_kwh": 3.25}


def test_failed_write_leaves_no_torn_row_and_keeps_rows(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    s = store.Store(tmp_path, cols)
    s.open_device("eeeeeeeeeeee", "HWE-P1")
    s.append("eeeeeeeeeeee", 1000, {"power_w": 1.0})
    s.flush()
    path = store.day_files(tmp_path, "eeeeeeeeeeee")[0]
    before = path.read_bytes()
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.writer.os, "write", half_then_enospc)
    s.append("eeeeeeeeeeee", 2000, {"power_w": 2.0})
    assert s.flush() == 0
    assert s.write_error and "No space left" in s.write_error
    assert path.read_bytes() == before  # cut back: no torn row
    assert s.pending_rows() == 1
    monkeypatch.setattr(store.writer.os, "write", real_write)
    assert s.flush() == 1
    assert s.write_error is None
    assert [r["power_w"] for r in read(path)] == ["1", "2"]


def test_read_rows_stops_at_incomplete_line(tmp_path: Path) -> None:
    s = store.Store(tmp_path, cols)
    s.open_device("ffffffffffff", "HWE-P1")
    for i in range(1, 4):
        s.append("ffffffffffff", i * 1000, {"power_w": float(i)})
    s.flush()
    path = store.day_files(tmp_path, "ffffffffffff")[0]
    with path.open("ab") as fh:
        fh.write(b"1970-01-01T00:00:04.000Z,4")
    rows = list(store.read_rows(path))
    assert [r[2][1] for r in rows] == ["1", "2", "3"]
    offset = rows[1][0]
    assert [r[2][1] for r in store.read_rows(path, offset)] == ["3"]


@pytest.mark.parametrize("values", [
    {"power_w": 203.0, "energy_import_kwh": 18664.997, "gas_ts": "2025-11-26T08:40:00"},
    {"power_w": -0.0, "energy_import_kwh": 1e16, "gas_ts": "a,b"},
    {"power_w": 1e-7, "gas_ts": 'quote " inside'},
    {"power_w": float("inf"), "gas_ts": "line\nbreak", "other_w": 2.0},
    {"gas_ts": "tab\there", "note": "text is never extra"},
    {"power_w": 5.0, "x,y": 1.0, 'q"k': 2.5},
    {},
])
def test_row_encoding_is_exactly_the_csv_modules(values: dict[str, float | str]) -> None:
    """The fast path writes numbers and plain text itself: byte for byte what csv.writer does."""
    s = store.Store(Path("/nonexistent"), cols)
    dev = store.writer._Device("aaaaaaaaaaaa", COLS)
    extra = {"foo": 1.5} if "other_w" in values else {}
    line = s._encode(dev, 1_764_146_603_123, values, extra)
    row = [store.format_ts(1_764_146_603_123)]
    row += ["" if values.get(c) is None else store.format_value(values[c]) for c in COLS]
    more = {k: v for k, v in values.items() if k not in COLS and not isinstance(v, str)}
    more.update(extra)
    row.append(json.dumps(more, sort_keys=True, separators=(",", ":")) if more else "")
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerow(row)
    assert line == expected.getvalue()
    assert next(csv.reader([line]))[1:4] == row[1:4]


def test_day_of_and_format_ts_at_the_edges() -> None:
    midnight = 1_764_115_200_000  # 2025-11-26T00:00:00Z
    assert store.day_of(midnight - 1) == "2025-11-25" and store.day_of(midnight) == "2025-11-26"
    assert store.format_ts(midnight - 1) == "2025-11-25T23:59:59.999Z"
    assert store.format_ts(midnight) == "2025-11-26T00:00:00.000Z"
    assert store.format_ts(0) == "1970-01-01T00:00:00.000Z"


def test_lines_encoded_elsewhere_are_stored_like_appended_samples(tmp_path: Path) -> None:
    a, b = store.Store(tmp_path / "a", cols), store.Store(tmp_path / "b", cols)
    for s in (a, b):
        s.open_device("aaaaaaaaaaaa", "HWE-P1")
    encode = b.encoder("aaaaaaaaaaaa")  # pure: the collector calls it on its polling thread
    samples = [(1000, {"power_w": 1.5, "gas_ts": "2025-11-26T00:00:00"}, {}),
               (2000, {"power_w": 2.0, "new_w": 3.0}, {"x": 1.0}), (1500, {"power_w": 9.0}, {})]
    for ts, values, extra in samples:
        assert a.append("aaaaaaaaaaaa", ts, values, extra) == \
            b.append_line("aaaaaaaaaaaa", ts, encode(ts, values, extra))
    assert a.flush() == b.flush() == 2
    a.close()
    b.close()
    name = f"measurements/aaaaaaaaaaaa/{store.day_of(1000)}.csv"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
