"""mDNS end to end: simulators advertise, ``hwpc discover`` finds them, the collector re-resolves.

Everything runs inside a network namespace the test creates (and deletes): its loopback is
the only interface, with multicast on and a 224.0.0.0/4 route, so no multicast ever leaves
on the machine's own interfaces. Needs root and ``ip netns``; skipped otherwise.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for

pytestmark = pytest.mark.root  # creates network namespaces: the node lane

HWPC = [sys.executable, "-m", "hw_picollector"]
TOKEN = "0123456789ABCDEF0123456789ABCDEF"


def netns_unavailable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


@dataclass
class Netns:
    name: str
    logs: Path
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def start(self, label: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        """``hwpc ARGS`` inside the namespace, its output to ``logs/label.log``."""
        log = self.logs / f"{label}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(self.command(*HWPC, *args), stdout=fh, stderr=fh)
        self.procs.append((proc, log))
        return proc, log

    def simulate(self, label: str, *args: str) -> None:
        """A simulator with ``--mdns``, once it advertises (registered with the responder)."""
        proc, log = self.start(label, "simulate", "--mdns", "--mdns-interface", "127.0.0.1",
                               *args)

        def advertising() -> bool:
            assert proc.poll() is None, f"{label} exited: {log.read_text()}"
            return "advertising " in log.read_text()

        wait_for(advertising, timeout=60, what=f"{label} to advertise")

    def control(self, port: int, path: str, body: dict[str, str]) -> None:
        """POST a simulator control request (``/_sim/...``) from inside the namespace."""
        code = ("import json, sys, urllib.request\n"
                f"req = urllib.request.Request('http://127.0.0.1:{port}{path}', "
                f"data=json.dumps({body!r}).encode(), method='POST')\n"
                "sys.stdout.write(urllib.request.urlopen(req, timeout=30).read().decode())\n")
        subprocess.run(self.command(sys.executable, "-c", code), check=True, timeout=60,
                       capture_output=True)

    def discover(self) -> dict[str, dict[str, Any]]:
        out = subprocess.run(self.command(*HWPC, "discover", "--timeout", "5", "--json"),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return {d["serial"]: d for d in json.loads(out.stdout)}


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"hwpc-test-{secrets.token_hex(4)}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` failed: {added.stderr.strip()}")
    ns = Netns(name, tmp_path / "logs")
    ns.logs.mkdir()
    try:
        for setup in (["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                      ["ip", "-n", name, "link", "set", "lo", "multicast", "on"],
                      ["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"]):
            subprocess.run(setup, check=True, capture_output=True)
        yield ns
    finally:
        for proc, _ in ns.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in ns.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_discover_finds_both_apis(netns: Netns, tmp_path: Path) -> None:
    netns.simulate("p1", "--type", "HWE-P1", "--api", "v1", "--port", "18080",
                   "--serial", "3c39e7aa0001")
    netns.simulate("kwh3", "--type", "HWE-KWH3", "--api", "v2", "--port", "18443",
                   "--serial", "5c2fafbb0002", "--tls-dir", str(tmp_path / "tls"),
                   "--token", TOKEN)
    found = netns.discover()
    assert set(found) == {"3c39e7aa0001", "5c2fafbb0002"}
    p1, kwh3 = found["3c39e7aa0001"], found["5c2fafbb0002"]
    assert (p1["product_type"], p1["address"], p1["port"], p1["api_versions"]) == \
        ("HWE-P1", "127.0.0.1", 18080, ["v1"])
    assert p1["api_enabled"] is True and p1["cert_id"] == "p1dongle"
    assert p1["product_name"] == "P1 Meter" and p1["v2_port"] is None
    assert (kwh3["product_type"], kwh3["address"], kwh3["api_versions"], kwh3["v2_port"]) == \
        ("HWE-KWH3", "127.0.0.1", ["v2"], 18443)
    assert kwh3["cert_id"] == "energymeter" and kwh3["v2_api_version"] == "2.2.0"
    assert kwh3["product_name"] == "kWh Meter 3-phase"
    # the local API switched off, then another device at that address: advertised as such
    netns.control(18080, "/_sim/fault", {"fault": "disabled"})
    netns.control(18080, "/_sim/serial", {"serial": "3c39e7aa0009"})
    found = netns.discover()
    assert set(found) == {"3c39e7aa0009", "5c2fafbb0002"}
    assert found["3c39e7aa0009"]["api_enabled"] is False
    assert found["3c39e7aa0009"]["port"] == 18080


def rows(data: Path, serial: str) -> int:
    count = 0
    for path in (data / "measurements" / serial).glob("*.csv"):
        with path.open(newline="") as fh:
            count += sum(1 for _ in csv.DictReader(fh))
    return count


def test_the_collector_finds_a_moved_device_by_mdns(netns: Netns, tmp_path: Path) -> None:
    serial = "3c39e7cc0003"
    netns.simulate("kwh1", "--type", "HWE-KWH1", "--api", "v1", "--port", "18081",
                   "--serial", serial)
    data = tmp_path / "data"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "site_id": "TEST01", "data_dir": str(data), "clock_sync": "trust", "mdns": True,
        "poll_interval_s": 0.5, "flush_interval_s": 0.5, "request_timeout_s": 0.5,
        "devices": [{"serial": serial, "product_type": "HWE-KWH1", "role": "production",
                     "address": "127.0.0.1:18099", "api": "v1"}],  # nothing listens there
    }))
    collector, log = netns.start("collector", "collect", "--config", str(config))

    def stored() -> bool:
        assert collector.poll() is None, f"the collector exited: {log.read_text()}"
        return rows(data, serial) >= 3

    wait_for(stored, timeout=90, what="rows from the device found by mDNS")
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert "cannot connect: Connection refused" in text and "127.0.0.1:18099" in text
    assert f"{serial}: found by mDNS at 127.0.0.1:18081 (was 127.0.0.1:18099)" in text
    status = json.loads((data / "state" / "collector.json").read_text())
    assert status["devices"][serial]["address"] == "127.0.0.1:18081"
    assert status["devices"][serial]["state"] == "ok"
