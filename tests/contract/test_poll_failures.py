"""A bug in one device's poll: that device's polls fail (and back off), the others go on.

(When every device's poll fails that way nothing is collected any more: the collector ends
non-zero for systemd to restart it; see tests/durability/test_watchdog.py.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

from hw_picollector_simulator.server import SimulatedDevice
from tests.conftest import free_port
from tests.contract.test_collect_loop import INTERVAL, collecting, device, state, until


def test_a_bug_in_one_device_poll_stops_no_other(tmp_path: Path) -> None:
    with SimulatedDevice("HWE-P1", "v1", port=free_port()) as buggy, \
            SimulatedDevice("HWE-KWH1", "v1", port=free_port()) as fine, \
            collecting(tmp_path, [device(buggy, tmp_path), device(fine, tmp_path)]) as collector:
        until(lambda: all(int(str(state(collector, s.serial)["samples"])) >= 3
                          for s in (buggy, fine)))
        client = next(p.client for p in collector.pollers if p.dev.serial == buggy.serial)

        def broken() -> NoReturn:
            raise RuntimeError("a bug in the client")

        client.measure_steps = broken  # type: ignore[method-assign]
        started = time.monotonic()
        before = int(str(state(collector, fine.serial)["samples"]))
        until(lambda: int(str(state(collector, fine.serial)["samples"])) >= before + 15)
        elapsed = time.monotonic() - started
        st = state(collector, buggy.serial)
        assert st["state"] == "error", st
        assert "internal error" in str(st["last_error"])
        # backing off like any failing device: far fewer attempts than ticks, no busy loop
        failures = int(str(st["failures"]))
        assert 1 <= failures <= elapsed / INTERVAL / 2, st
        assert state(collector, fine.serial)["state"] == "ok"
        del client.measure_steps  # the bug is gone: the device comes back
        until(lambda: state(collector, buggy.serial)["state"] == "ok")
    # ``collecting`` checked that the collector then stopped cleanly, exit code 0
