"""A disk that fills: a clear error, no crash, nothing lost once space returns."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hw_picollector_simulator.server import SimulatedDevice
from tests.conftest import wait_for
from tests.durability.conftest import HWPC, read_device, start_collector, write_config

pytestmark = pytest.mark.root  # mounts a small tmpfs: the node lane

INTERVAL = 0.2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, log: Path) -> Path:
    """Take every free byte of disk; returns the filler file once the collector said so."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    wait_for(lambda: b"cannot write the store" in log.read_bytes(), 30,
             what="the disk-full error in the log")
    return filler


def state(data: Path) -> dict[str, object]:
    try:
        result: dict[str, object] = json.loads((data / "state" / "collector.json").read_text())
    except (OSError, ValueError):
        return {}
    return result


def test_disk_full_then_space_returns(tmp_path: Path, small_disk: Path,
                                      meters: list[SimulatedDevice]) -> None:
    data = small_disk / "data"
    config = write_config(tmp_path / "config.yml", data, meters, poll_interval_s=INTERVAL,
                          flush_interval_s=0.5, disk_min_free_mb=1)
    log = tmp_path / "collector.log"
    proc = start_collector(config, log)
    try:
        wait_for(lambda: len(read_device(data, meters[0].serial)) > 5, 30, what="first rows")
        filler = fill(small_disk, log)
        rows_full = len(read_device(data, meters[0].serial))
        # While the disk is full, the collector keeps polling and holds the rows in memory.
        wait_for(lambda: b"No space left" in log.read_bytes(), 10, what="the reason")
        assert proc.poll() is None, "the collector must not exit on a full disk"
        filler.unlink()
        wait_for(lambda: b"store writable again" in log.read_bytes(), 30,
                 what="recovery after space returned")
        wait_for(lambda: len(read_device(data, meters[0].serial)) > rows_full + 10, 30,
                 what="rows after recovery")
        assert state(data).get("write_error") is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert log.read_bytes().count(b"cannot write the store") == 1, "one line per state change"
    for dev in meters:
        stamps = read_device(data, dev.serial)
        gaps = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]
        assert max(gaps) <= 2.5 * INTERVAL, f"{dev.serial}: a gap of {max(gaps):.2f} s: " \
            "rows were lost while the disk was full"


def status(config: Path) -> dict[str, Any]:
    out = subprocess.run([*HWPC, "status", "--config", str(config), "--json"],
                         capture_output=True, check=True, timeout=60).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def test_a_long_disk_full_drops_the_oldest_samples_and_counts_them(
        tmp_path: Path, small_disk: Path, meters: list[SimulatedDevice]) -> None:
    data = small_disk / "data"
    # 10 rows held per device: 2 s at this interval (an hour at 1 Hz by default)
    config = write_config(tmp_path / "config.yml", data, meters, poll_interval_s=INTERVAL,
                          flush_interval_s=0.5, disk_min_free_mb=1, max_pending_rows=10)
    log = tmp_path / "collector.log"
    proc = start_collector(config, log)
    try:
        wait_for(lambda: len(read_device(data, meters[0].serial)) > 5, 30, what="first rows")
        filler = fill(small_disk, log)

        def dropping() -> dict[str, Any] | None:
            report = status(config)
            counts = [d.get("samples_dropped", 0) for d in report["devices"]]
            return report if all(c >= 5 for c in counts) else None

        # seen while the disk is still full: the collector's state is published all along
        report = wait_for(dropping, 30, interval=0.5, what="dropped samples in hwpc status")
        assert report["service_active"], "a full disk is not a stopped collector"
        assert "No space left" in str(report["write_error"])
        assert report["samples_dropped"] == sum(d["samples_dropped"] for d in report["devices"])
        assert 0 < report["pending_rows"] <= 2 * 10
        assert b"the oldest are dropped" in log.read_bytes()
        prom = tmp_path / "hwpc.prom"
        subprocess.run([*HWPC, "status", "--config", str(config), "--prometheus", str(prom)],
                       check=True, timeout=60)
        scraped = {(s.name, s.labels.get("serial")): s.value
                   for family in text_string_to_metric_families(prom.read_text())
                   for s in family.samples}
        for dev in meters:
            assert scraped[("hwpc_device_samples_dropped_since_start", dev.serial)] >= 5
        filler.unlink()
        wait_for(lambda: b"store writable again" in log.read_bytes(), 30,
                 what="recovery after space returned")
        rows_back = len(read_device(data, meters[0].serial))
        wait_for(lambda: len(read_device(data, meters[0].serial)) > rows_back + 5, 30,
                 what="rows after recovery")
        final = status(config)
        assert final["write_error"] is None
        assert final["samples_dropped"] >= report["samples_dropped"], "counted since start"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert log.read_bytes().count(b"the oldest are dropped") == len(meters), \
        "one line per device when dropping starts"
    dropped = {d["serial"]: d["samples_dropped"] for d in final["devices"]}
    for dev in meters:
        stamps = read_device(data, dev.serial)
        missing = sum(round((b - a) / 1000 / INTERVAL) - 1 for a, b in itertools.pairwise(stamps))
        assert missing >= dropped[dev.serial], f"{dev.serial}: {missing} ticks without a row"
