"""Every hostile device at once next to a healthy meter: the healthy one keeps its samples, each
hostile one shows a clear error within the request timeout, and the collector's CPU and memory
stay small.

The devices are ``hwpc simulate --fault ...`` processes, so this process is the collector alone
(the CPU time and memory measured are its own). Its state is read from the status file it
publishes, as ``hwpc status`` reads it.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from hw_picollector.config import DeviceConfig
from hw_picollector.devices.errors import MAX_DETAIL_CHARS
from tests.conftest import free_port
from tests.contract.test_collect_loop import INTERVAL, collecting, until

TIMEOUT_S = 2.0  # request_timeout_s's default; a trickling device sends a byte every 1.5 s
WINDOW_S = 20.0
EXPECTED = {  # fault -> (state, text in last_error)
    "continue-flood": ("invalid_response", "more than 8 interim"),
    "chunk-ext-flood": ("invalid_response", "answer larger than 1048576 bytes"),
    "huge-body": ("invalid_response", "answer larger than 1048576 bytes"),
    "trickle": ("timeout", "not complete within 2 s"),
    "deep-json": ("invalid_response", "nested too deeply"),
    "junk-error": ("http_500", "HTTP 500 (901 "),
}


@contextmanager
def simulate(fault: str, serial: str) -> Iterator[int]:
    """``hwpc simulate --fault FAULT`` on a free loopback port, until the block ends."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hw_picollector", "simulate", "--type",
                             "HWE-P1", "--port", str(port), "--serial", serial, "--fault", fault],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: proc.poll() is not None or _listening(port), 30)
        assert proc.poll() is None, f"hwpc simulate --fault {fault} exited"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow  # 30 s, and it measures CPU: runs in the serial lane
def test_hostile_devices_starve_no_other(tmp_path: Path) -> None:
    serials = {fault: f"3c39e7ba{n:04x}" for n, fault in enumerate(["none", *EXPECTED])}
    with ExitStack() as stack:
        ports = {f: stack.enter_context(simulate(f, s)) for f, s in serials.items()}
        devices = [DeviceConfig(serial=serials[f], product_type="HWE-P1", role="grid",
                                address=f"127.0.0.1:{ports[f]}") for f in serials]
        status_file = tmp_path / "data" / "state" / "collector.json"

        def status() -> dict[str, dict[str, object]]:
            try:
                return dict(json.loads(status_file.read_text())["devices"])
            except (OSError, ValueError, KeyError):
                return {}

        healthy = serials["none"]
        cpu0, rss0, peak = time.process_time(), rss_mb(), 0.0
        with collecting(tmp_path, devices, timeout_s=TIMEOUT_S):
            started = time.monotonic()
            failed_after: dict[str, float] = {}

            def watch() -> bool:
                nonlocal peak
                peak = max(peak, rss_mb())
                now = status()
                for fault in EXPECTED:
                    if fault not in failed_after and \
                            (now.get(serials[fault]) or {}).get("last_error"):
                        failed_after[fault] = time.monotonic() - started
                return len(failed_after) == len(EXPECTED) and \
                    int(str((now.get(healthy) or {}).get("samples") or 0)) > 0

            deadline = started + TIMEOUT_S + 5  # what is still missing then fails below
            while not watch() and time.monotonic() < deadline:
                time.sleep(0.05)
            window_from = time.time()
            while time.time() < window_from + WINDOW_S:
                watch()
                time.sleep(0.05)
            window_to = time.time()
            cpu = time.process_time() - cpu0
            elapsed = time.monotonic() - started
            final = status()

    rows = 0
    for path in (tmp_path / "data" / "measurements" / healthy).glob("*.csv"):
        with path.open() as f:
            for row in csv.DictReader(f):
                ts = datetime.fromisoformat(row["ts"]).timestamp()
                rows += window_from <= ts < window_to
    expected = (window_to - window_from) / INTERVAL
    print(f"\nhostile devices next to a healthy one for {elapsed:.1f} s: collector CPU "
          f"{cpu / elapsed:.1%} of a core, RSS {rss0:.0f} -> peak {peak:.0f} MB; healthy "
          f"{rows} samples of {expected:.0f} expected; errors after "
          + ", ".join(f"{f} {t:.2f} s" for f, t in sorted(failed_after.items(),
                                                          key=lambda item: item[1])))
    for fault, (state, text) in EXPECTED.items():
        dev = final[serials[fault]]
        assert fault in failed_after, (fault, dev)
        error = str(dev["last_error"])
        assert dev["state"] == state and text in error, (fault, dev)
        assert dev["samples"] == 0
        assert error.isprintable() and len(error) < MAX_DETAIL_CHARS + 60, (fault, error)
        assert failed_after[fault] < TIMEOUT_S + 1.5, (fault, failed_after)
    assert final[healthy]["state"] == "ok" and final[healthy]["failures"] == 0
    assert rows >= 0.99 * expected - 1, (rows, expected)
    assert cpu / elapsed < 0.5
    assert peak - rss0 < 30

