"""SIGKILL the collector at random moments while it writes: nothing torn, nothing doubled,
and each gap no longer than the restart."""

from __future__ import annotations

import itertools
import random
import signal
import time
from pathlib import Path

import pytest

from hw_picollector_simulator.server import SimulatedDevice
from tests.durability.conftest import read_device, start_collector, write_config

INTERVAL = 0.2
FLUSH = 0.5
KILLS = 20


@pytest.mark.slow  # 30 s of kills and restarts
def test_sigkill_twenty_times(tmp_path: Path, meters: list[SimulatedDevice]) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "config.yml", data, meters,
                          poll_interval_s=INTERVAL, flush_interval_s=FLUSH)
    rng = random.Random(20)
    kills: list[tuple[float, float]] = []  # (killed at, next process started at)
    log = tmp_path / "collector.log"
    proc = start_collector(config, log)
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.3, 2.0))  # a random moment, not a condition to wait for
        killed = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        proc = start_collector(config, log)
        kills.append((killed, time.time()))
    time.sleep(3 * FLUSH + 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]

    for dev in meters:
        stamps = read_device(data, dev.serial)
        assert len(stamps) > 20
        assert all(b > a for a, b in itertools.pairwise(stamps)), \
            "ts must strictly increase: no duplicate, no reordering"
        for a, b in itertools.pairwise(stamps):
            gap = (b - a) / 1000
            if gap <= 2.5 * INTERVAL:
                continue
            # A gap must be explained by a kill inside it: what was lost is at most the
            # unflushed buffer before the kill, plus the time until the next process polled.
            around = [(k, s) for k, s in kills if a / 1000 - 0.05 <= k <= b / 1000 + 0.05]
            assert around, f"{dev.serial}: gap of {gap:.2f} s with no kill inside it"
            killed, restarted = around[0]
            assert killed - a / 1000 <= FLUSH + 2 * INTERVAL + 0.1, \
                f"lost {killed - a / 1000:.2f} s before a kill: more than one flush interval"
            assert b / 1000 - restarted <= 5.0, \
                f"{b / 1000 - restarted:.2f} s from restart to the first sample"
