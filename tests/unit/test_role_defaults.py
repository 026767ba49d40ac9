"""Every role's public defaults and its argument specs name the same variables.

defaults/main.yml holds the knobs, meta/argument_specs.yml types and documents them; a
variable in one but not the other is either undocumented or unset (the node_exporter rule).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "defaults" / "main.yml").is_file()) \
    if ROLES_DIR.is_dir() else []


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data or {}


def test_roles_found() -> None:
    assert {"collector", "central_db"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role: str) -> None:
    defaults = set(_load(ROLES_DIR / role / "defaults" / "main.yml"))
    specs = _load(ROLES_DIR / role / "meta" / "argument_specs.yml")
    options = set(specs["argument_specs"]["main"]["options"])
    assert sorted(defaults - options) == [], f"{role}: in defaults, not in argument_specs"
    assert sorted(options - defaults) == [], f"{role}: in argument_specs, not in defaults"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_role_prefixed(role: str) -> None:
    prefix = "hwpc_" if role == "collector" else f"hwpc_{role}_"
    defaults = _load(ROLES_DIR / role / "defaults" / "main.yml")
    assert [k for k in defaults if not k.startswith(prefix)] == []


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role: str) -> None:
    defaults = _load(ROLES_DIR / role / "defaults" / "main.yml")
    options = _load(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]["main"][
        "options"]
    wrong = {k: (v.get("default"), defaults[k]) for k, v in options.items()
             if k in defaults and v.get("default") != defaults[k]}
    assert wrong == {}


def _readme_variables(role: str) -> list[str]:
    """The first column of the README's `| variable | ...` table, in order."""
    lines = (ROLES_DIR / role / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable |"))
    names = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names.append(line.split("|")[1].strip().strip("`"))
    return names


@pytest.mark.parametrize("role", ROLES)
def test_readme_table_names_every_variable_once(role: str) -> None:
    """The role's README documents each variable of defaults/main.yml in its table, once."""
    defaults = set(_load(ROLES_DIR / role / "defaults" / "main.yml"))
    names = _readme_variables(role)
    assert len(names) == len(set(names)), f"{role}: a variable twice in README.md"
    assert sorted(defaults - set(names)) == [], f"{role}: in defaults, not in README.md"
    assert sorted(set(names) - defaults) == [], f"{role}: in README.md, not in defaults"
