"""Every module of the package has an audience in the import contracts (collector/pyproject.toml):
a module nobody placed would escape `lint-imports`."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import hw_picollector

PYPROJECT = Path(__file__).resolve().parents[2] / "collector" / "pyproject.toml"
FACE = {"hw_picollector", "hw_picollector.cli", "hw_picollector.__main__"}


def contracts() -> dict[str, list[str]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    # the audiences are the forbidden contracts; a layers contract orders one audience's modules
    return {c["id"]: c["source_modules"] for c in config["contracts"] if c["type"] == "forbidden"}


def audience(module: str, placed: dict[str, list[str]]) -> list[str]:
    return [name for name, roots in placed.items()
            if any(module == r or module.startswith(r + ".") for r in roots)]


def test_every_module_has_exactly_one_audience() -> None:
    placed = contracts()
    modules = {m.name for m in pkgutil.walk_packages(hw_picollector.__path__, "hw_picollector.")}
    assert "hw_picollector.collect" in modules and "hw_picollector.sites" in modules
    unplaced = sorted(m for m in modules - FACE if not audience(m, placed))
    assert unplaced == [], f"give these an audience in {PYPROJECT}: {unplaced}"
    twice = sorted(m for m in modules if len(audience(m, placed)) > 1)
    assert twice == []
