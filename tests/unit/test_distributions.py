"""One distribution per audience: the wheel a Pi installs holds the runtime and nothing else,
and a command that comes with another distribution says which one instead of failing
obscurely (the Molecule scenario asks a real Pi host the same)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hw_picollector import cli

REPO = Path(__file__).resolve().parents[2]


def wheel(folder: str, out: Path) -> list[str]:
    """Built as the collector role builds it: through the source distribution."""
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                    str(REPO / folder)], check=True, capture_output=True)
    (built,) = out.glob("*.whl")
    with zipfile.ZipFile(built) as z:
        return z.namelist()


def test_the_pi_wheel_holds_the_runtime_only(tmp_path: Path) -> None:
    names = wheel("collector", tmp_path)
    modules = {n for n in names if n.endswith(".py")}
    assert {"hw_picollector/collect/collector.py", "hw_picollector/sync/stream.py"} <= modules
    assert all(n.startswith("hw_picollector/") for n in modules), modules
    for elsewhere in ("sites", "freshness", "schema", "simulator", "history"):
        assert not any(n.startswith(f"hw_picollector/{elsewhere}") for n in modules)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert entry_points.startswith("hw_picollector-")


@pytest.mark.parametrize(("folder", "package"), [("controller", "hw_picollector_controller"),
                                                 ("simulator", "hw_picollector_simulator")])
def test_the_other_wheels_hold_their_own_package(tmp_path: Path, folder: str,
                                                 package: str) -> None:
    modules = {n for n in wheel(folder, tmp_path) if n.endswith(".py")}
    assert modules and all(n.startswith(f"{package}/") for n in modules), modules


@pytest.mark.parametrize(("command", "distribution"), [
    (["sites", "check", "fleet.xlsx"], "hw-picollector-controller"),
    (["freshness", "--fleet", "f.json"], "hw-picollector-controller"),
    (["db", "init", "--config", "c.yml"], "hw-picollector-controller"),
    (["simulate", "--serial", "x"], "hw-picollector-simulator"),
])
def test_a_command_from_a_missing_distribution_names_it(
        command: list[str], distribution: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])  # as on a Pi: the runtime only
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert f"`hwpc {command[0]}` comes with {distribution}, which is not installed here" in err


def test_every_command_of_the_three_distributions_is_there() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"collect", "sync", "status", "discover", "pair", "db", "freshness", "audit",
            "sites", "simulate", "simulate-history"} <= set(sub.choices)  # type: ignore[arg-type]
    assert "not installed" not in parser.format_help()
