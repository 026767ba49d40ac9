"""One version: the package metadata's, the same everywhere it is shown."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import hw_picollector
from hw_picollector import cli
from hw_picollector.devices import transport

PYPROJECT = Path(__file__).resolve().parents[2] / "collector" / "pyproject.toml"


def test_the_version_is_the_one_in_pyproject() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert hw_picollector.__version__ == declared
    assert transport.USER_AGENT.removeprefix("hw-picollector/") == declared


def test_hwpc_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as end:
        cli.main(["--version"])
    assert end.value.code == 0
    assert capsys.readouterr().out.strip() == f"hw-picollector {hw_picollector.__version__}"
