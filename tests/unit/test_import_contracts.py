"""Every module of the three distributions has exactly one audience in the import contracts
(the repository's pyproject.toml): a module nobody placed would escape `lint-imports`."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from types import ModuleType

import hw_picollector
import hw_picollector_controller
import hw_picollector_simulator

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PACKAGES: list[ModuleType] = [hw_picollector, hw_picollector_controller, hw_picollector_simulator]


def contracts() -> dict[str, list[str]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    # the audiences are the forbidden contracts; a layers contract orders one audience's modules
    return {c["id"]: c["source_modules"] for c in config["contracts"] if c["type"] == "forbidden"}


def audience(module: str, placed: dict[str, list[str]]) -> list[str]:
    return [name for name, roots in placed.items()
            if any(module == r or module.startswith(r + ".") for r in roots)]


def test_every_module_has_exactly_one_audience() -> None:
    placed = contracts()
    modules = {package.__name__ for package in PACKAGES} | {
        m.name for package in PACKAGES
        for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")}
    assert {"hw_picollector.collect", "hw_picollector_controller.sites.check",
            "hw_picollector_simulator.server"} <= modules
    unplaced = sorted(m for m in modules if not audience(m, placed))
    assert unplaced == [], f"give these an audience in {PYPROJECT}: {unplaced}"
    twice = sorted(m for m in modules if len(audience(m, placed)) > 1)
    assert twice == []


def test_the_audiences_are_the_distributions() -> None:
    assert contracts() == {"runtime": ["hw_picollector"],
                           "controller": ["hw_picollector_controller"],
                           "simulator": ["hw_picollector_simulator"]}
