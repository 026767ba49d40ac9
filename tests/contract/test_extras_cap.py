"""A device sending thousands of unknown fields: rows stay bounded, what is dropped is counted
(collector state, ``hwpc status``, its Prometheus metrics)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hw_picollector import health, metrics
from hw_picollector_simulator.server import MANY_EXTRAS, SimulatedDevice
from tests.conftest import free_port
from tests.contract.test_collect_loop import collecting, device, state, until

KEYS, BYTES = 256, 16 * 1024  # the defaults


def test_thousands_of_extra_fields_are_capped_and_counted(tmp_path: Path) -> None:
    with SimulatedDevice("HWE-P1", "v1", port=free_port(), fault="many-extras") as loud, \
            SimulatedDevice("HWE-KWH1", "v1", port=free_port()) as quiet, \
            collecting(tmp_path, [device(loud, tmp_path), device(quiet, tmp_path)]) \
            as collector:
        until(lambda: int(str(state(collector, loud.serial)["samples"])) >= 5)
    # stopped: every sample taken is written, the state file published once more
    st = state(collector, loud.serial)
    stored = rows(tmp_path, loud.serial)
    assert st["samples"] == len(stored) >= 5
    lines = [line for path in (tmp_path / "data" / "measurements" / loud.serial).glob("*.csv")
             for line in path.read_bytes().splitlines()[1:]]
    assert max(len(line) for line in lines) < BYTES + 2 * KEYS + 1024, "a row beyond the cap"
    assert st["extras_dropped"] == len(stored) * (MANY_EXTRAS - KEYS)
    assert state(collector, quiet.serial)["extras_dropped"] == 0
    report = health.status(collector.config)
    scraped = metrics.registry(report)
    for row in stored:
        extra = json.loads(row["extra"])
        assert sorted(extra) == [f"sim_extra_{i:04d}_w" for i in range(KEYS)]
        assert row["power_w"]  # the mapped fields are all there
    devices = {d["serial"]: d for d in report["devices"]}
    assert devices[loud.serial]["extras_dropped"] == st["extras_dropped"]
    assert devices[quiet.serial]["extras_dropped"] == 0
    assert report["extras_dropped"] == devices[loud.serial]["extras_dropped"]
    assert report["samples_dropped"] == 0
    labels = {"serial": loud.serial, "product_type": "HWE-P1", "role": "grid"}
    assert scraped.get_sample_value("hwpc_device_extras_dropped_since_start", labels) == \
        devices[loud.serial]["extras_dropped"]


def rows(tmp: Path, serial: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for path in sorted((tmp / "data" / "measurements" / serial).glob("*.csv")):
        with path.open(newline="") as fh:
            found += list(csv.DictReader(fh))
    return found
