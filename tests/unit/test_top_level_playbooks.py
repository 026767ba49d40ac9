"""`ansible-playbook site.yml` and `ansible-playbook check_freshness.yml` work from the top
level as the users type them: thin playbooks importing playbooks/, the inventory from
ansible.cfg when no -i is given."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return subprocess.run([str(ANSIBLE_PLAYBOOK), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["site.yml", "check_freshness.yml"])
def test_the_top_level_playbook_imports_the_one_in_playbooks(name: str) -> None:
    plays = yaml.safe_load((ROOT / name).read_text())
    assert [p.get("ansible.builtin.import_playbook") for p in plays] == [f"playbooks/{name}"]
    inner = yaml.safe_load((ROOT / "playbooks" / name).read_text())
    listed = run(name, "--list-hosts")
    assert listed.returncode == 0, listed.stderr
    # Every play of playbooks/<name> is listed, so the import brought in the whole playbook.
    for play in inner:
        if "hosts" in play:
            assert f"): {play['name']}" in listed.stdout


def test_without_i_the_inventory_is_the_one_ansible_cfg_names() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    inventory = ROOT / cfg["defaults"]["inventory"]
    text = (inventory / "hosts.yml").read_text()
    hosts = yaml.safe_load(text.replace("!unsafe ", ""))
    names = set(hosts["all"]["children"]["collectors"]["hosts"])
    listed = run("site.yml", "--list-hosts")
    assert listed.returncode == 0, listed.stderr
    shown = {line.strip() for line in listed.stdout.splitlines()}
    assert names and names <= shown
