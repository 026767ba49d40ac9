"""One version: the package metadata's, the same everywhere it is shown and in the three
distributions, which require each other's exact version."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import hw_picollector
from hw_picollector import cli
from hw_picollector.devices import transport

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "collector" / "pyproject.toml"


def project(folder: str) -> dict[str, object]:
    table: dict[str, object] = tomllib.loads(
        (REPO / folder / "pyproject.toml").read_text())["project"]
    return table


def test_the_version_is_the_one_in_pyproject() -> None:
    declared = project("collector")["version"]
    assert hw_picollector.__version__ == declared
    assert transport.USER_AGENT.removeprefix("hw-picollector/") == declared


@pytest.mark.parametrize("folder", ["controller", "simulator"])
def test_the_other_distributions_have_the_same_version_and_require_it(folder: str) -> None:
    version = project("collector")["version"]
    other = project(folder)
    assert other["version"] == version
    assert f"hw-picollector=={version}" in other["dependencies"]  # type: ignore[operator]


def test_hwpc_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as end:
        cli.main(["--version"])
    assert end.value.code == 0
    assert capsys.readouterr().out.strip() == f"hw-picollector {hw_picollector.__version__}"
