"""Looking back from a byte offset finds the previous newline whatever the row's size.

Rows are small at 1 Hz, but a device can report many fields nobody mapped (the ``extra``
JSON): a checkpoint check that looked back a fixed 4 KiB re-sent such a day on every run,
and the newest row over 64 KiB was invisible to ``last_row``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from hw_picollector import checkpoints, store
from hw_picollector.checkpoints import Checkpoint
from tests.unit.test_sync_batches import P1, P1_COLUMNS, config, sync_all

HEADER = ("ts", *P1_COLUMNS, "extra")
SIZES = {"5k": 5 << 10, "70k": 70 << 10, "300k": 300 << 10}


def row(ts_ms: int, size: int, power: float) -> bytes:
    """One row of about `size` bytes, most of it unmapped numeric fields in ``extra``."""
    extra = json.dumps({f"x{i:06d}": 1.5 for i in range(size // 14)}, separators=(",", ":"))
    fields = [""] * len(HEADER)
    fields[0] = store.format_ts(ts_ms)
    fields[HEADER.index("power_w")] = repr(power)
    fields[-1] = '"' + extra.replace('"', '""') + '"'
    return (",".join(fields) + "\n").encode()


def day_file(data: Path, day: date, sizes: list[int]) -> tuple[Path, list[tuple[int, str]]]:
    """A day file of rows of the given sizes; returns (end offset, ts) of each row."""
    start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
    path = store.device_dir(data, P1) / f"{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = bytearray((",".join(HEADER) + "\n").encode())
    ends = []
    for i, size in enumerate(sizes):
        body += row(start + i * 1000, size, float(i))
        ends.append((len(body), store.format_ts(start + i * 1000)))
    path.write_bytes(bytes(body))
    return path, ends


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_validated_keeps_a_checkpoint_after_a_big_row(tmp_path: Path, size: int) -> None:
    path, ends = day_file(tmp_path, date(2026, 1, 5), [300, size, size, 200, size])
    for offset, ts in ends:
        cp = Checkpoint(offset, ts, 1)
        assert checkpoints.validated(path, cp) == cp, (offset, ts)
    # a checkpoint that no longer matches its file is still refused
    offset, ts = ends[2]
    assert checkpoints.validated(path, Checkpoint(offset - 1, ts, 1)) == Checkpoint()
    assert checkpoints.validated(path, Checkpoint(offset, ends[1][1], 1)) == Checkpoint()
    assert checkpoints.validated(path, Checkpoint(path.stat().st_size + 1, ts, 1)) == \
        Checkpoint()


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_last_row_sees_a_big_row(tmp_path: Path, size: int) -> None:
    path, ends = day_file(tmp_path, date(2026, 1, 5), [300, size, size])
    found = store.last_row(path)
    assert found is not None
    ts_ms, values = found
    assert store.format_ts(ts_ms) == ends[-1][1]
    assert values["power_w"] == "2.0" and len(values["extra"]) > size * 0.9
    # a torn tail after it changes nothing
    with path.open("ab") as fh:
        fh.write(row(ts_ms + 1000, size, 3.0)[:-size // 2])
    assert store.last_row(path) == found
    # nor does a row alone in its file
    alone, ends = day_file(tmp_path, date(2026, 1, 6), [size])
    assert store.format_ts(store.last_row(alone)[0]) == ends[0][1]  # type: ignore[index]


@pytest.mark.parametrize("size", [SIZES["5k"], SIZES["70k"]], ids=["5k", "70k"])
def test_row_ending_at_a_big_row(tmp_path: Path, size: int) -> None:
    path, ends = day_file(tmp_path, date(2026, 1, 5), [size, 100, size])
    for n, (offset, ts) in enumerate(ends):
        found = store.row_ending_at(path, offset)
        assert found is not None and found[1][0] == ts
        assert found[1][HEADER.index("power_w")] == repr(float(n))


def test_big_rows_are_sent_once(tmp_path: Path) -> None:
    """Rows of 5 and 70 KiB go to Cassandra once; the next run finds nothing to send,
    whether the day is closed or still open."""
    cfg = config(tmp_path)
    sizes = [SIZES["5k"]] * 3 + [200, SIZES["70k"], SIZES["5k"]]
    old, _ = day_file(cfg.data_dir, date.today() - timedelta(days=3), sizes)
    today, _ = day_file(cfg.data_dir, date.today(), sizes)
    syncer, _ = sync_all(cfg)
    assert syncer.stats.rows == 2 * len(sizes)
    for path in (old, today):
        cp = checkpoints.read(cfg.data_dir, P1, path.stem)
        assert cp.offset == path.stat().st_size and cp.rows == len(sizes)
    assert checkpoints.backlog(cfg.data_dir) == (0, 0)
    again, session = sync_all(cfg)
    assert again.stats.rows == 0
    assert not [s for s in session.sent if "measurements" in str(getattr(s, "keyspace", ""))
                or type(s).__name__ == "BatchStatement"]


def test_a_300_kib_row_is_quarantined_once(tmp_path: Path) -> None:
    """Over the CSV field limit: kept aside, not sent, and not looked at again."""
    cfg = config(tmp_path)
    sizes = [200, SIZES["300k"], 200, SIZES["300k"]]
    today, _ = day_file(cfg.data_dir, date.today(), sizes)
    syncer, _ = sync_all(cfg)
    assert syncer.stats.rows == 2
    cp = checkpoints.read(cfg.data_dir, P1, today.stem)
    assert cp.offset == today.stat().st_size
    assert checkpoints.validated(today, cp) == cp
    again, session = sync_all(cfg)
    assert again.stats.rows == 0
    assert not [s for s in session.sent if type(s).__name__ == "BatchStatement"]
