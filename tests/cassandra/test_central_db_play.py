"""playbooks/central_db.yml against the real node: the superuser's credentials file on the
controller exists only while the play runs, whether it succeeds, fails or runs in check mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.cassandra.conftest import ROOT

PLAYBOOK = ROOT / "playbooks" / "central_db.yml"
BIN = Path(sys.executable).parent


def play(inventory: Path, extra: dict[str, Any], *args: str, playbook: Path = PLAYBOOK
         ) -> subprocess.CompletedProcess[str]:
    extra_file = inventory.parent / "extra.json"
    extra_file.write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
         "-e", f"@{extra_file}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def write_inventory(tmp_path: Path, pi: dict[str, Any]) -> Path:
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text(yaml.safe_dump({"all": {"children": {"collectors": {"hosts": {
        "pi1": pi}}}}}))
    return inventory


def settings(tmp_path: Path, keyspace: str, node: Path, **more: Any) -> dict[str, Any]:
    """The controller's settings for the node, as the superuser (its password is the node's
    default); central_db keeps its files under tmp_path."""
    return {"hwpc_cassandra_hosts": ["127.0.0.1"], "hwpc_cassandra_keyspace": keyspace,
            "hwpc_cassandra_tls_ca_file": str(node / "conf" / "node.pem"),
            "vault_hwpc_cassandra_superuser_password": "cassandra",
            "hwpc_central_db_dir": str(tmp_path / "central_db"), **more}


def recap(result: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("localhost "))


def test_superuser_credentials_are_gone_when_the_play_ends(tmp_path: Path, admin: Any,
                                                           keyspace: str, node: Path) -> None:
    pi_role, audit_role = f"pi_{keyspace}", f"audit_{keyspace}"
    inventory = write_inventory(tmp_path, {
        "hwpc_site_id": "PLAY01", "hwpc_cassandra_username": pi_role,
        "vault_hwpc_cassandra_password": "pi-password-of-play01"})
    central = tmp_path / "central_db"
    superuser = central / "superuser.json"
    extra = settings(tmp_path, keyspace, node,
                     vault_hwpc_cassandra_audit_password="audit-password-of-play",
                     hwpc_central_db_audit_role=audit_role)
    try:
        first = play(inventory, extra)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert not superuser.exists(), "superuser credentials left on the controller"
        assert (central / "config.yml").is_file()
        assert (central / "audit.json").is_file()  # the audit's login stays for audits
        assert "cassandra-ca.pem" in (central / "config.yml").read_text()
        assert admin.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                             (pi_role,)).one() is not None
        assert "password-of-play" not in first.stdout + first.stderr  # no_log

        # check mode needs the file too (hwpc db check, create-role --dry-run); a second run
        # would change nothing
        check = play(inventory, extra, "--check")
        assert check.returncode == 0, check.stdout[-3000:]
        assert " changed=0 " in recap(check), recap(check)
        assert not superuser.exists()

        # a failure after the credentials were written: a replication hwpc refuses
        broken = play(inventory, {**extra, "hwpc_central_db_replication": {"class": "Bogus"}})
        assert broken.returncode != 0
        assert "replication" in broken.stdout
        assert not superuser.exists(), "superuser credentials left after a failed play"
    finally:
        for role in (pi_role, audit_role):
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_audit_without_an_audit_password_leaves_no_superuser_credentials(
        tmp_path: Path, keyspace: str, node: Path) -> None:
    """check_freshness.yml falls back to the superuser when no audit password is set: the
    credentials file then exists only while the audit runs."""
    # A Pi nobody answers for (nothing listens on that loopback address's SSH port).
    inventory = write_inventory(tmp_path, {
        "hwpc_site_id": "PLAY02", "ansible_host": "127.0.1.254",
        "ansible_ssh_common_args": "-o ConnectTimeout=3",
        "hwpc_devices": [{"serial": "3c39e7aabbcc"}]})
    central = tmp_path / "central_db"
    extra = settings(tmp_path, keyspace, node,
                     hwpc_freshness_report_dir=str(tmp_path / "reports"),
                     hwpc_freshness_work_dir=str(tmp_path / "work"), freshness_fail=False)
    result = play(inventory, extra, playbook=ROOT / "playbooks" / "check_freshness.yml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Reading Cassandra as the superuser" in result.stdout
    assert (tmp_path / "reports" / "freshness-latest.json").is_file()
    assert (central / "config.yml").is_file()
    assert not (central / "superuser.json").exists(), "superuser credentials left by the audit"
    assert '"cassandra"' not in result.stdout + result.stderr
