"""Reading day files for the sync: the block reader agrees with the csv module everywhere."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hw_picollector import store

HEADER = "ts,power_w,gas_ts,extra\n"


def stamp(second: int) -> str:
    return datetime.fromtimestamp(1_767_571_200 + second, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S") + f".{second % 1000:03d}Z"


def reference(path: Path, start: int = 0, end: int | None = None
              ) -> list[tuple[int, int, list[str]]]:
    """Line by line through the csv module: the definition of a complete, intact row."""
    with path.open("rb") as fh:
        header = fh.readline()
        width = len(header.decode().rstrip("\n").split(","))
        offset = max(start, len(header))
        fh.seek(offset)
        data = fh.read() if end is None else fh.read(max(0, end - offset))
    rows = []
    for line in data.splitlines(keepends=True):
        if not store.valid_line(line, width):
            break
        offset += len(line)
        fields = next(csv.reader([line.decode()]))
        rows.append((offset, store.parse_ts(fields[0]), fields))
    return rows


def lines(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        extra = rng.choice(['', '"{""a"":1.5}"', '"{""k"":2,""é"":3}"', ""])
        gas = rng.choice(["", "2026-01-05T00:00:00"])
        out.append(f"{stamp(i)},{rng.randint(-900, 900) / 4},{gas},{extra}\n".encode())
    return out


@pytest.mark.parametrize("block", [store.SCAN_BLOCK, 64, 7])
def test_scan_matches_the_csv_module_on_intact_and_damaged_files(tmp_path: Path,
                                                                  block: int) -> None:
    rng = random.Random(block)
    path = tmp_path / "2026-01-05.csv"
    damage = [b"", b"\x00\x00", b"2026-01-05T00:00:0", b"2026-13-05T00:00:00.000Z,1,,\n",
              b"2026-01-05T24:00:00.000Z,1,,\n", b"x,1,,\n", b"2026-01-05T00:00:01.000Z,1,\n",
              b"\n", b"2026-01-05T00:00:01.000Z,\r1,,\n", b"\xff\xfe,1,,\n",
              b"2026-01-05T00:00:60.000Z,1,,\n", b"2026-01-05T00:00:01.00Z,1,,\n",
              b"2026-01-05T00:00:01.000z,1,,\n", b"2026-01-05T00:00:01,000Z,1,,\n",
              b"2026-01-05T00:00:01.000ZZ,1,,\n", b"2026-01-05T00:00:1.0000Z,1,,\n",
              b"2026-01-05T00:00:0a.000Z,1,,\n", b"2026-01-05T00:00:01.0a0Z,1,,\n"]
    for trial in range(60):
        body = lines(rng.randint(0, 40), rng)
        cut = rng.randint(0, len(body))
        body.insert(cut, rng.choice(damage))
        path.write_bytes(HEADER.encode() + b"".join(body))
        size = path.stat().st_size
        start = rng.choice([0, 0, rng.randint(0, size)])
        end = rng.choice([None, size, rng.randint(0, size)])
        assert list(store.scan(path, start, end, block=block)) == reference(path, start, end), \
            trial


def test_read_rows_keeps_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "2026-01-05.csv"
    path.write_text(HEADER + f"{stamp(1)},5,,\n{stamp(2)},,x,\n")
    rows = list(store.read_rows(path))
    assert [r[1] for r in rows] == [["ts", "power_w", "gas_ts", "extra"]] * 2
    assert [r[2][1:] for r in rows] == [["5", "", ""], ["", "x", ""]]
    assert rows[-1][0] == path.stat().st_size


@pytest.mark.parametrize("text", [
    "2025-11-26T08:43:23Z", "2025-11-26T24:00:00.000Z", "2025-11-26T08:60:00.000Z",
    "2025-11-26T08:43:60.000Z", "2025-02-30T08:43:23.123Z", "2025-11-26 08:43:23.123Z",
    "2025-11-26T08:43:23.123", "0000-01-01T00:00:00.000Z", "\uff12025-11-26T08:43:23.123Z",
    "2025-11-26T08:43:23.123Z ", "+025-11-26T08:43:23.123Z"])
def test_parse_ts_refuses_anything_but_the_store_format(text: str) -> None:
    with pytest.raises(ValueError):
        store.parse_ts(text)


def test_parse_ts_agrees_with_datetime() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        ms = rng.randint(0, 4_102_444_800_000)
        text = store.format_ts(ms)
        assert store.parse_ts(text) == ms
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert store.parse_ts(text) == round(parsed.timestamp() * 1000)
