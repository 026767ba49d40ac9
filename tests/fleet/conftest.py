"""The demo fleet (tests/harness/demo.sh): three nspawn Pis deployed by site.yml, simulated
meters, a real Cassandra node. The tests break it the ways the field does and audit it with
playbooks/check_freshness.yml, each putting the fleet back the way it found it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "harness" / "demo.sh"
FLEET = ROOT / "tests" / "harness" / "fleet" / "fleet.sh"
INVENTORY = ROOT / "inventories" / "demo"
VAULT_PASS = ROOT / "build" / "demo" / "vault-pass"
REPORT = ROOT / "reports" / "freshness-latest.json"
FLEET_DIR = ROOT / "build" / "fleet"
BIN = ROOT / ".venv" / "bin"
SITES = {"pi1": "CDB001", "pi2": "CDB002", "pi3": "ECH003"}

# Short thresholds so that a fault shows within a minute; the sync timer runs every 15 s.
SYNC_INTERVAL = "15s"
THRESHOLDS = {"freshness_max_age_s": 30, "sync_max_lag_s": 60, "heartbeat_max_age_s": 45}


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "HWPC_FLEET_DIR": str(FLEET_DIR),
            "HWPC_DEMO_SYNC_INTERVAL": SYNC_INTERVAL}


def sh(*cmd: str | Path, check: bool = True, timeout: float = 900
       ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                            timeout=timeout, env=_env(), cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-3000:]}")
    return result


def ansible(host: str, module: str, args: str, check: bool = True, become: bool = False
            ) -> subprocess.CompletedProcess[str]:
    """An ad-hoc command against the demo inventory, the way an operator runs one: as the Pis'
    SSH user `pi`, with --become for what needs root."""
    return sh(BIN / "ansible", host, "-i", INVENTORY, "--vault-password-file", VAULT_PASS,
              "-m", module, "-a", args, *(["--become"] if become else []), check=check)


def on_host(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("bash", FLEET, "ssh", host, command, check=check)


def audit(*flags: str, **extra: Any) -> tuple[int, dict[str, Any], str]:
    """check_freshness.yml with the short thresholds: (exit code, JSON report, output)."""
    args: list[str] = list(flags)
    for key, value in {**THRESHOLDS, **extra}.items():
        args += ["-e", f"{key}={value}"]
    if REPORT.exists():
        REPORT.unlink()
    result = sh("bash", DEMO, "freshness", *args, check=False)
    assert REPORT.exists(), f"no report written:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return result.returncode, json.loads(REPORT.read_text()), result.stdout


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {s["host"]: s["verdict"] for s in report["sites"]}


def audit_until(want: Callable[[dict[str, str]], bool], timeout: float, what: str
                ) -> tuple[int, dict[str, Any], str]:
    """Audit again and again until the verdicts satisfy `want`, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        rc, report, out = audit()
        seen = verdicts(report)
        if want(seen):
            return rc, report, out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                 f"last verdicts {seen}:\n{out[-3000:]}")
        time.sleep(3)


def all_ok(v: dict[str, str]) -> bool:
    return set(v) == set(SITES) and all(x == "ok" for x in v.values())


def store_dir(host: str) -> Path:
    """The Pi's local store, seen from this machine (the host's root file system)."""
    return FLEET_DIR / "hosts" / host / "var" / "lib" / "hw-picollector"


@pytest.fixture(scope="session")
def fleet() -> Iterator[None]:
    """The demo fleet, up and healthy (reused when already up)."""
    if os.geteuid() != 0:
        pytest.skip("the fleet needs root (systemd-nspawn)")
    sh("bash", DEMO, "up", timeout=1800, check=False)
    audit_until(all_ok, 240, "a healthy fleet")
    yield
