"""The systemd watchdog is fed only while polling makes progress.

The real collector runs as a subprocess under a notify socket the test binds (what systemd
does for ``Type=notify`` with ``WatchdogSec=``). A failure is injected at the device client,
where any runtime driving the polls meets it: after a few calls, every measurement raises
(a bug) or never returns (a hang). Then ``WATCHDOG=1`` must stop and the process must end
non-zero, so systemd restarts it instead of keeping a collector that collects nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hw_picollector.collect.collector import POLL_STALL_S
from hw_picollector_simulator.server import SimulatedDevice
from tests.durability.conftest import write_config

INTERVAL = 0.2
WATCHDOG_USEC = 1_000_000  # fed every 0.5 s

# Test-only entry point: the device client's measurement fails after FAIL_AFTER calls
# (all devices together), then hwpc runs as usual. The first failure's monotonic time (the
# same clock in every process) goes to MARKER.
WRAPPER = """
import os, sys, time
from hw_picollector import cli
from hw_picollector.devices.client import DeviceClient

after, mode, marker = int(os.environ["FAIL_AFTER"]), os.environ["FAIL_MODE"], os.environ["MARKER"]
calls = 0

def failing(original):
    def measure(self, *args, **kwargs):
        global calls
        calls += 1
        if calls > after:
            if not os.path.exists(marker):
                with open(marker, "w") as fh:
                    fh.write(repr(time.monotonic()))
            if mode == "raise":
                raise RuntimeError("injected failure in the device client")
            time.sleep(3600)
        return original(self, *args, **kwargs)
    return measure

for name in ("measure", "measure_steps"):
    setattr(DeviceClient, name, failing(getattr(DeviceClient, name)))
sys.exit(cli.main(sys.argv[1:]))
"""


def run_failing(tmp_path: Path, meters: list[SimulatedDevice], mode: str, deadline_s: float
                ) -> tuple[list[tuple[float, str]], float, int | None, str]:
    """Run the collector until it exits or ``deadline_s`` passes after the injected failure:
    (notifications as (monotonic time, message), failure time, exit code or None, log)."""
    config = write_config(tmp_path / "config.yml", tmp_path / "data", meters,
                          poll_interval_s=INTERVAL, flush_interval_s=0.5)
    marker, log = tmp_path / "failed-at", tmp_path / "collector.log"
    name = f"hwpc-test-{uuid.uuid4().hex}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.settimeout(0.1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": "@" + name,
           "WATCHDOG_USEC": str(WATCHDOG_USEC), "FAIL_AFTER": "20", "FAIL_MODE": mode,
           "MARKER": str(marker)}
    messages: list[tuple[float, str]] = []
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "collect", "--config",
                                 str(config)], stdout=out, stderr=out, env=env)
    try:
        end: float | None = None
        started = time.monotonic()
        while proc.poll() is None:
            now = time.monotonic()
            if end is None:
                assert now - started < 30, "the injected failure never happened"
                if marker.exists() and marker.read_text():
                    end = float(marker.read_text()) + deadline_s
            elif now > end:
                break
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), notify.recv(4096).decode()))
        with_code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    return messages, float(marker.read_text()), with_code, log.read_text(errors="replace")


def feeds(messages: list[tuple[float, str]]) -> list[float]:
    return [at for at, text in messages if "WATCHDOG=1" in text.split("\n")]


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_watchdog_stops_and_the_process_fails_when_polling_fails(
        tmp_path: Path, meters: list[SimulatedDevice], mode: str) -> None:
    # a raise ends the process at once; a hang once the poll loop has been stuck for
    # POLL_STALL_S
    grace = 1.0 if mode == "raise" else POLL_STALL_S + 1.0
    messages, failed_at, code, log = run_failing(tmp_path, meters, mode, grace + 5.0)
    fed = feeds(messages)
    assert any(text.startswith("READY=1") for _, text in messages)
    assert len([at for at in fed if at < failed_at]) >= 2, "fed while polling worked"
    assert code is not None, f"still running {grace + 5:.0f} s after the failure:\n{log[-3000:]}"
    assert code != 0, log[-3000:]
    late = [round(at - failed_at, 2) for at in fed if at > failed_at + grace]
    assert not late, f"WATCHDOG=1 still sent after the failure (s after it): {late}"
    if mode == "raise":
        assert "RuntimeError: injected failure in the device client" in log  # the traceback
    else:
        assert "no progress" in log
