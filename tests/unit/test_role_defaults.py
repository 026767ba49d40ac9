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
