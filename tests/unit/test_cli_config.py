"""The Pi's commands find their config without --config: $HWPC_CONFIG, else the one place
the collector role writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hw_picollector import cli


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({
        "site_id": "SITE01", "host": "pi-test", "data_dir": str(tmp_path / "data"),
        "clock_sync": "trust", "mdns": False, "devices": [
            {"serial": "3c39e7100001", "product_type": "HWE-P1", "role": "grid",
             "address": "127.0.0.1:1"}]}))
    return path


def test_status_reads_the_config_named_by_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.CONFIG_ENV, str(write_config(tmp_path)))
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["site_id"] == "SITE01"


def test_without_either_the_default_place_is_read(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    rc = cli.main(["status"])
    err = capsys.readouterr().err
    if Path(cli.DEFAULT_CONFIG).exists():  # a real Pi: its own config answers
        assert rc == 0
    else:
        assert rc == 1
        assert err.strip().endswith(f"{cli.DEFAULT_CONFIG}: cannot read: No such file or "
                                    "directory"), err


def test_an_explicit_config_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.CONFIG_ENV, str(tmp_path / "missing.yml"))
    assert cli.main(["status", "--json", "--config", str(write_config(tmp_path))]) == 0
    assert json.loads(capsys.readouterr().out)["host"] == "pi-test"
