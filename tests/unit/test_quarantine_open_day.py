"""A quarantined last line of the open day, then the collector writes on: every row reaches
Cassandra. Appended after the line: only the new rows are sent. The line repaired away (a
restart): the checkpoint no longer matches, the file is sent again (idempotent upserts)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hw_picollector import checkpoints, store
from hw_picollector.devices.canonical import columns
from tests.unit.test_sync_batches import P1, P1_COLUMNS, p1_rows, write_day
from tests.unit.test_sync_quarantine import config, records, rows_sent, sync_all


def test_rows_appended_after_a_quarantined_last_line_are_sent_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=4)
    today = write_day(cfg.data_dir, P1, date.today(), p1_rows(5), P1_COLUMNS)
    running = store.Store(cfg.data_dir, columns)  # opened (and repaired) before the damage
    last = running.open_device(P1, "HWE-P1")
    with today.open("ab") as fh:
        fh.write(b"damaged on the card\n")
    _, first = sync_all(cfg)
    assert rows_sent(first) == 5 and len(records(cfg.data_dir)) == 1
    cp = checkpoints.read(cfg.data_dir, P1, today.stem)
    assert cp.offset == today.stat().st_size and cp.quarantined
    for i in range(1, 4):
        assert running.append(P1, last + i * 1000, {"power_w": float(i)})
    assert running.flush() == 3
    running.close()
    _, second = sync_all(cfg)
    assert rows_sent(second) == 3  # the new rows only
    cp = checkpoints.read(cfg.data_dir, P1, today.stem)
    assert cp.offset == today.stat().st_size and cp.quarantined is None
    assert cp.last_ts == store.format_ts(last + 3000)
    _, third = sync_all(cfg)
    assert rows_sent(third) == 0 and len(records(cfg.data_dir)) == 1


def test_a_quarantined_last_line_the_collector_repairs_away(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=4)
    today = write_day(cfg.data_dir, P1, date.today(), p1_rows(5), P1_COLUMNS)
    with today.open("ab") as fh:
        fh.write(b"damaged on the card\n")
    _, first = sync_all(cfg)
    assert rows_sent(first) == 5
    # the collector restarts: the damaged tail is cut, new rows go where it was
    restarted = store.Store(cfg.data_dir, columns)
    last = restarted.open_device(P1, "HWE-P1")
    assert b"damaged" not in today.read_bytes()
    assert last == store.parse_ts(today.read_bytes().splitlines()[-1][:24].decode())
    for i in range(1, 4):
        assert restarted.append(P1, last + i * 1000, {"power_w": float(i)})
    restarted.flush()
    restarted.close()
    _, second = sync_all(cfg)
    # the checkpoint no longer matches the file: it is sent again (idempotent upserts),
    # the new rows included, nothing skipped
    assert rows_sent(second) == 5 + 3
    cp = checkpoints.read(cfg.data_dir, P1, today.stem)
    assert cp.offset == today.stat().st_size and cp.quarantined is None
    _, third = sync_all(cfg)
    assert rows_sent(third) == 0
