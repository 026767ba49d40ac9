"""Helpers for running the real collector process against real simulators."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hw_picollector.store import parse_ts
from hw_picollector_simulator.server import SimulatedDevice
from tests.conftest import free_port

HWPC = [sys.executable, "-m", "hw_picollector"]


@pytest.fixture
def meters() -> Iterator[list[SimulatedDevice]]:
    devices = [
        SimulatedDevice("HWE-P1", "v1", "3c39e7000001", free_port()),
        SimulatedDevice("HWE-KWH1", "v1", "3c39e7000002", free_port()),
    ]
    for d in devices:
        d.start()
    yield devices
    for d in devices:
        d.stop()


def write_config(path: Path, data_dir: Path, devices: list[SimulatedDevice],
                 **extra: Any) -> Path:
    roles = {"HWE-P1": "grid"}
    config = {
        "site_id": "TEST01",
        "data_dir": str(data_dir),
        "clock_sync": "trust",
        "mdns": False,
        "devices": [{"serial": d.serial, "product_type": d.product_type,
                     "role": roles.get(d.product_type, "production"),
                     "address": f"127.0.0.1:{d.port}", "api": "v1"} for d in devices],
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_collector(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as fh:
        return subprocess.Popen([*HWPC, "collect", "--config", str(config)], stdout=fh,
                                stderr=fh, env=env)


def read_device(data_dir: Path, serial: str) -> list[int]:
    """Every ts of a device across its day files; asserts each file parses cleanly."""
    stamps: list[int] = []
    for path in sorted((data_dir / "measurements" / serial).glob("*.csv")):
        raw = path.read_bytes()
        assert raw.endswith(b"\n"), f"{path}: torn last line"
        assert b"\x00" not in raw, f"{path}: NUL bytes"
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            assert header[0] == "ts" and header[-1] == "extra"
            for row in reader:
                assert len(row) == len(header), f"{path}: row of {len(row)} fields: {row}"
                stamps.append(parse_ts(row[0]))
    return stamps
