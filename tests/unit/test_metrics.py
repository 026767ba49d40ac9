"""`hwpc status --prometheus`: this Pi's status for node_exporter's textfile collector."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hw_picollector import checkpoints, cli, store
from hw_picollector.devices.canonical import columns

P1, PV = "3c39e7100001", "3c39e7100002"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({
        "site_id": "SITE01", "host": "pi-test", "data_dir": str(data), "clock_sync": "trust",
        "mdns": False, "devices": [
            {"serial": P1, "product_type": "HWE-P1", "role": "grid", "address": "127.0.0.1:1"},
            {"serial": PV, "product_type": "HWE-KWH1", "role": "production",
             "address": "127.0.0.1:2"}]}))
    now_ms = time.time_ns() // 1_000_000
    newest = now_ms - now_ms % 1000 - 5000
    store.write_history(data, P1, columns("HWE-P1"),
                        ((newest - 1000 * i, {"power_w": 100.0 + i}) for i in range(9, -1, -1)))
    return path


def scrape(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}


def test_status_as_textfile_metrics(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "textfile" / "hw_picollector.prom"
    out.parent.mkdir()
    assert cli.main(["status", "--config", str(config), "--prometheus", str(out)]) == 0
    m = scrape(out)
    p1 = frozenset({("serial", P1), ("product_type", "HWE-P1"), ("role", "grid")})
    pv = frozenset({("serial", PV), ("product_type", "HWE-KWH1"), ("role", "production")})
    newest = m[("hwpc_device_last_sample_timestamp_seconds", p1)]
    assert 4 <= time.time() - newest < 60
    assert newest == int(newest)  # the row's own stamp, whole seconds here
    # no sample yet: left out, so "age > N" alerts don't fire on a device never seen
    assert ("hwpc_device_last_sample_timestamp_seconds", pv) not in m
    assert m[("hwpc_device_ok", p1)] == 0  # the collector is not running
    assert m[("hwpc_collector_up", frozenset())] == 0
    assert m[("hwpc_backlog_rows", frozenset())] == 10
    assert m[("hwpc_backlog_bytes", frozenset())] > 0
    assert ("hwpc_last_sync_timestamp_seconds", frozenset()) not in m  # never synced
    assert m[("hwpc_last_sync_failed", frozenset())] == 0
    info = [k for k in m if k[0] == "hwpc_info"]
    assert dict(info[0][1]) == {"site_id": "SITE01", "host": "pi-test",
                                "version": dict(info[0][1])["version"]}
    assert m[("hwpc_disk_free_bytes", frozenset())] > 0
    # readable by node_exporter's own user, whatever the service's umask; no temporary left
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["hw_picollector.prom"]


def test_failed_sync_after_a_good_one(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    checkpoints.write_last_sync(data, {"finished": "2026-11-26T10:00:00.000Z", "ok": True})
    out = tmp_path / "a.prom"
    assert cli.main(["status", "--config", str(config), "--prometheus", str(out)]) == 0
    m = scrape(out)
    assert m[("hwpc_last_sync_timestamp_seconds", frozenset())] == 1795687200.0
    assert m[("hwpc_last_sync_failed", frozenset())] == 0
    record = checkpoints.read_last_sync(data) or {}
    record.update(last_error="authentication failed", last_attempt="2026-11-26T10:05:00.000Z")
    checkpoints.write_last_sync(data, record)
    assert cli.main(["status", "--config", str(config), "--prometheus", str(out)]) == 0
    assert scrape(out)[("hwpc_last_sync_failed", frozenset())] == 1


def test_unwritable_target_is_one_clear_line(config: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        target = tmp_path / "missing-dir" / "x.prom"  # root writes anywhere: use a missing dir
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "x.prom"
    assert cli.main(["status", "--config", str(config), "--prometheus", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hwpc: cannot write metrics to {target}: No such file or directory"] or \
        err[0].startswith(f"hwpc: cannot write metrics to {target}: ")
