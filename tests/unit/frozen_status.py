"""One Pi in a fixed state, for the exact text of `hwpc status --json`.

`freeze(tmp_path, monkeypatch)` writes a config, a store, the collector's state file and a
last sync record, stops the clock at NOW and pins what the machine would otherwise decide
(free disk space, whether the collector's pid is alive, the package version), and returns the
config's path: `hwpc status --json --config <path> --coverage-hours 3` then prints the same
text on every machine, every time. The snapshot and rolling-deploy tests
(tests/unit/test_status_document.py) use it; fixtures/status/status-v1.json is what this state
printed before the status had a format version (written by the code of that time, kept as is).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from hw_picollector import checkpoints, health, store
from hw_picollector.devices.canonical import columns

P1, KWH = "3c39e7100001", "3c39e7100002"
NOW = 1_795_700_000_000          # 2026-11-26T13:33:20.000Z
COVERAGE_HOURS = 3
SAMPLE_COUNT = 90                # P1: one sample a minute over the last 90 minutes


def iso(ts_ms: int) -> str:
    return store.format_ts(ts_ms)


def freeze(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "site_id": "SITE01", "host": "pi-snapshot", "data_dir": str(data),
        "clock_sync": "trust", "mdns": False, "poll_interval_s": 1.0, "devices": [
            {"serial": P1, "product_type": "HWE-P1", "role": "grid",
             "address": "192.0.2.10"},
            {"serial": KWH, "product_type": "HWE-KWH1", "role": "production",
             "address": "192.0.2.11"}]}))
    newest = NOW - 5_000
    store.write_history(data, P1, columns("HWE-P1"), (
        (newest - 60_000 * i, {"power_w": 100.0 + i}) for i in range(SAMPLE_COUNT - 1, -1, -1)))
    store.write_history(data, KWH, columns("HWE-KWH1"), (
        (NOW - 1_800_000 - 1000 * i, {"power_w": -250.0}) for i in range(2, -1, -1)))
    checkpoints.write_last_sync(data, {
        "finished": iso(NOW - 60_000), "started": iso(NOW - 62_500), "rows": 42,
        "site_power_rows": 40, "seconds": 2.5, "ok": True})
    state = {
        "version": "0.1.0", "pid": 4242, "started": iso(NOW - 7_200_000),
        "updated": iso(NOW - 2_000), "clock_synchronised": True,
        "clock": "trusted by config (clock_sync: trust)", "write_error": None,
        "pending_rows": 3, "disk_free_mb": 1234,
        "devices": {
            P1: {"serial": P1, "product_type": "HWE-P1", "address": "192.0.2.10",
                 "state": "ok", "last_ts": iso(newest), "last_error": None,
                 "last_error_ts": None, "samples": 7190, "extras_dropped": 0,
                 "samples_dropped": 0, "damaged_lines": 1, "damaged_files": [
                     {"file": f"measurements/{P1}/2026-11-25.csv", "first_offset": 120,
                      "lines": 1}]},
            KWH: {"serial": KWH, "product_type": "HWE-KWH1", "address": "192.0.2.11",
                  "state": "timeout", "last_ts": iso(NOW - 1_800_000),
                  "last_error": "no answer within 2 s", "last_error_ts": iso(NOW - 3_000),
                  "samples": 1795, "extras_dropped": 4, "samples_dropped": 0,
                  "damaged_lines": 0, "damaged_files": []}}}
    (data / "state").mkdir(parents=True, exist_ok=True)
    (data / "state" / "collector.json").write_text(json.dumps(state, sort_keys=True))
    monkeypatch.setattr(time, "time_ns", lambda: NOW * 1_000_000)
    monkeypatch.setattr(health, "_pid_alive", lambda pid: pid == 4242)
    monkeypatch.setattr(health, "disk_free_mb", lambda path: 1234)
    monkeypatch.setattr(health, "__version__", "0.1.0")
    return config


def status_argv(config: Path) -> list[str]:
    return ["status", "--json", "--config", str(config), "--coverage-hours", str(COVERAGE_HOURS)]
