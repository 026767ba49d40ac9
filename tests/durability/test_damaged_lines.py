"""A damaged line in the middle of a day file (not a torn last line, which is repaired) is
reported by the collector at start, with file and byte offset, and shown by ``hwpc status``.

Only the part of a file the sync has not acknowledged is looked at: a damaged line before
the checkpoint has been dealt with already.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from hw_picollector import checkpoints, store
from hw_picollector.devices.canonical import columns
from hw_picollector_simulator.server import SimulatedDevice
from tests.conftest import wait_for
from tests.durability.conftest import HWPC, start_collector, write_config

INTERVAL = 0.2


def history(data: Path, sim: SimulatedDevice, rows: int) -> Path:
    """``rows`` one-second rows ending a few seconds ago, all in one day file."""
    now_ms = time.time_ns() // 1_000_000
    end = now_ms - now_ms % 1000 - 3000
    if store.day_of(end - rows * 1000) != store.day_of(end):  # just after midnight UTC
        end = end - end % 86_400_000 - 10_000
    store.write_history(data, sim.serial, columns(sim.product_type),
                        ((end - 1000 * i, {"power_w": 100.0 + i}) for i in range(rows, 0, -1)))
    (path,) = store.day_files(data, sim.serial)
    return path


def damage(path: Path, line_no: int, replacement: bytes) -> int:
    """Replace line ``line_no`` (0: the header); returns the byte offset where it starts."""
    lines = path.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in lines[:line_no])
    lines[line_no] = replacement
    path.write_bytes(b"".join(lines))
    return offset


def status(config: Path, *more: str) -> str:
    return subprocess.run([*HWPC, "status", "--config", str(config), *more],
                          capture_output=True, check=True, timeout=60, text=True).stdout


def test_damaged_lines_mid_file_are_logged_and_shown(tmp_path: Path,
                                                     meters: list[SimulatedDevice]) -> None:
    data = tmp_path / "data"
    p1, kwh = meters
    path = history(data, p1, 60)
    first = damage(path, 20, b"\x00" * 40 + b"\n")  # a block of NULs after a power cut
    second = damage(path, 41, b"2026-01-01T00:00:00.000Z,not,a,row\n")
    with path.open("ab") as fh:
        fh.write(b"2026-01-01T00:00:59.000Z,12")  # and a torn last line: repaired, not counted
    # the other meter's file: damaged before its sync checkpoint, then intact
    synced = history(data, kwh, 30)
    damage(synced, 5, b"garbage\n")
    cut = sum(len(line) for line in synced.read_bytes().splitlines(keepends=True)[:21])
    last = synced.read_bytes()[:cut].splitlines()[-1].split(b",")[0].decode()
    checkpoints.write(data, kwh.serial, synced.stem,
                      checkpoints.Checkpoint(offset=cut, last_ts=last, rows=19))

    config = write_config(tmp_path / "config.yml", data, meters, poll_interval_s=INTERVAL,
                          flush_interval_s=0.5)
    log = tmp_path / "collector.log"
    proc = start_collector(config, log)
    try:
        wait_for(lambda: f"{path}: damaged line at byte {first}" in log.read_text(), 30,
                 what="the damaged line in the log, with file and offset")
        text = log.read_text()
        assert "2 damaged lines" in text
        assert f"byte {second}" not in text, "one line per file, not one per damaged line"
        assert str(synced) not in text.replace(f"{synced}: repaired", "")

        def shown() -> dict[str, Any] | None:
            report: dict[str, Any] = json.loads(status(config, "--json"))
            return report if report["damaged_lines"] else None

        report = wait_for(shown, 30, interval=0.5, what="the damaged lines in hwpc status")
        devices = {d["serial"]: d for d in report["devices"]}
        assert devices[p1.serial]["damaged_lines"] == 2
        assert devices[p1.serial]["damaged_files"] == [
            {"file": str(path), "first_offset": first, "lines": 2}]
        assert devices[kwh.serial]["damaged_lines"] == 0
        assert report["damaged_lines"] == 2
        assert f"2 damaged lines in {path}, the first at byte {first}" in status(config)
        # and collecting goes on, after the rows that were there
        wait_for(lambda: len(read_device_lenient(path)) > 60, 30, what="new rows")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
    assert b"\x00" * 40 in path.read_bytes(), "a damaged line is left for the sync to see"
    assert len(read_device_lenient(synced)) > 30  # the other meter collected as well


def read_device_lenient(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines()[1:] if line.startswith(b"20")]
