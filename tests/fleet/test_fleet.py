"""End to end on the demo fleet: faults of the field, seen by the audit; nothing lost."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cassandra.conftest import ADMIN, central_rows, local_rows
from tests.conftest import wait_for
from tests.fleet.conftest import (
    DEMO,
    FLEET,
    ROOT,
    SITES,
    all_ok,
    ansible,
    audit,
    audit_until,
    on_host,
    sh,
    store_dir,
    verdicts,
)

pytestmark = pytest.mark.usefixtures("fleet")
CASSANDRA = ROOT / "tests" / "harness" / "cassandra" / "cassandra.sh"


def service_active(host: str, unit: str) -> bool:
    return on_host(host, f"systemctl is-active {unit}", check=False).stdout.strip() == "active"


def test_healthy_fleet_passes_the_audit():
    rc, report, out = audit()
    assert rc == 0, out[-3000:]
    assert verdicts(report) == {h: "ok" for h in SITES}
    for site in report["sites"]:
        assert site["reachable"] is True and site["service_active"] is True
        assert site["site_id"] == SITES[site["host"]]
        for dev in site["devices"]:
            assert dev["status"] == "ok"
            assert dev["last_local_ts"] and dev["last_central_ts"]
            # the hour of the newest central row has central coverage (not simply the last
            # hour: just after the hour turns, the sync has not reached it yet)
            hours = {c["hour"]: c for c in dev["coverage_hourly"]}
            assert hours[dev["last_central_ts"][:13]]["central"] > 0
    assert "3 sites: 3 ok, 0 lagging, 0 stale, 0 down" in out
    assert (ROOT / "reports" / "freshness-latest.html").stat().st_size > 1000


def _whoami(become: bool) -> dict[str, str]:
    out = ansible("collectors", "ansible.builtin.command", "whoami", become=become).stdout
    found = dict(re.findall(r"^(\S+) \| CHANGED \| rc=0 >>\n(\S+)$", out, re.M))
    assert set(found) == set(SITES), out
    return found


def test_ansible_reaches_the_pis_as_pi_and_becomes_root_for_the_audit():
    """As on Raspberry Pi OS: Ansible logs in as `pi` and becomes root with sudo only where a
    task needs it; the audit's `hwpc status` (root-only config and store) is such a task."""
    assert _whoami(become=False) == dict.fromkeys(SITES, "pi")
    assert _whoami(become=True) == dict.fromkeys(SITES, "root")
    # Without root, `hwpc status` cannot read the config: the audit must become root.
    denied = ansible("pi1", "ansible.builtin.command", "/opt/hw-picollector/venv/bin/hwpc "
                     "status --json --config /etc/hw-picollector/config.yml", check=False)
    assert denied.returncode != 0 and "ermission denied" in denied.stdout, denied.stdout
    # (-vvv is slow: the default thresholds, so that the seconds between reading the Pis
    # and judging them cannot make a site stale)
    rc, report, out = audit("-vvv", freshness_max_age_s=600, sync_max_lag_s=900,
                            heartbeat_max_age_s=900)
    assert rc == 0, out[-3000:]
    assert verdicts(report) == {h: "ok" for h in SITES}
    assert all(s["service_active"] is True and not s["reasons"] for s in report["sites"])
    assert "SSH CONNECTION FOR USER: root" not in out
    for n, host in enumerate(sorted(SITES), start=1):
        ip = f"127.0.1.{n}"
        assert f"<{ip}> ESTABLISH SSH CONNECTION FOR USER: pi" in out, host
        execs = [line for line in out.splitlines() if line.startswith(f"<{ip}> SSH: EXEC ")]
        assert execs and all(re.search(r"sudo -H -S -n +-u root ", line) for line in execs), \
            (host, execs[:2])
        assert f"<{ip}> Escalation succeeded" in out, host


def _recap(out: str, field: str = "changed") -> dict[str, int]:
    recap = out[out.index("PLAY RECAP"):]
    return {line.split()[0]: int(line.split(f"{field}=")[1].split()[0])
            for line in recap.splitlines() if f"{field}=" in line}


def assert_nothing_changed(out: str, hosts: set[str]) -> None:
    changed = _recap(out)
    assert set(changed) >= hosts, out[out.index("PLAY RECAP"):]
    assert changed == dict.fromkeys(changed, 0), out[out.index("PLAY RECAP"):]
    assert _recap(out, "failed") == dict.fromkeys(changed, 0)


def test_site_yml_second_run_changes_nothing():
    """Check mode runs every check and predicts no change. (A real second run, which must
    change nothing too, is the deployment of test_stopped_host_is_down_from_central_data.)"""
    assert_nothing_changed(sh("bash", DEMO, "deploy", "--check").stdout, {"localhost", *SITES})


def readme_host_commands() -> list[str]:
    """The commands the README shows for the running demo fleet, one string each."""
    text = (ROOT / "README.md").read_text()
    after = text.split("Everything else then works against the demo fleet:", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_the_readme_host_commands_work_as_written_and_a_stopped_collector_is_stale():
    """The README's commands, run as a user types them: the last but one stops pi1's
    collector, so the audit must then call pi1 stale, and only pi1."""
    commands = readme_host_commands()
    assert len(commands) >= 4, commands
    assert "name=hw-picollector.service state=stopped" in commands[2]
    try:
        for command in commands:
            out = sh("bash", "-c", command).stdout  # from the top level, as a user types it
            if command.endswith("hwpc status"):
                assert f"site {SITES['pi1']} on " in out, out
        rc, report, _ = audit_until(lambda v: v.get("pi1") == "stale", 150, "pi1 stale")
        assert rc != 0, "the play must fail when a site is stale"
        assert verdicts(report) == {"pi1": "stale", "pi2": "ok", "pi3": "ok"}
        site = next(s for s in report["sites"] if s["host"] == "pi1")
        assert site["service_active"] is False
        assert any("newest local sample" in r for r in site["reasons"])
        rc, report, _ = audit(freshness_fail="false")
        assert rc == 0, "freshness_fail=false reports without failing"
    finally:
        ansible("pi1", "ansible.builtin.systemd", "name=hw-picollector.service state=started",
                become=True)
    audit_until(all_ok, 150, "pi1 back to ok")


def _backlog(host: str) -> int:
    out = on_host(host, "/opt/hw-picollector/venv/bin/hwpc status --json "
                        "--config /etc/hw-picollector/config.yml").stdout
    return int(json.loads(out)["backlog_rows"])


def test_wrong_database_password_is_lagging_then_site_yml_fixes_it():
    creds = "/etc/hw-picollector/credentials/cassandra"
    wrong = json.dumps({"username": "pi_cdb001", "password": "not-the-password"})
    ansible("pi1", "ansible.builtin.copy",
            json.dumps({"content": wrong, "dest": creds, "mode": "0600"}), become=True)
    try:
        rc, report, _ = audit_until(lambda v: v.get("pi1") == "lagging", 200, "pi1 lagging")
        assert rc != 0
        assert verdicts(report) == {"pi1": "lagging", "pi2": "ok", "pi3": "ok"}
        site = next(s for s in report["sites"] if s["host"] == "pi1")
        assert all(d["age_s"] is not None and d["age_s"] < 30 for d in site["devices"]), \
            "samples stay fresh on the Pi"
        # The sync says why, in one line, and keeps every sample on the Pi.
        journal = on_host("pi1", "journalctl -u hw-picollector-sync.service --no-pager "
                                 "-n 50 -o cat").stdout
        assert "authentication failed for user 'pi_cdb001'" in journal
        assert "not-the-password" not in journal
        assert _backlog("pi1") > 0
        # Check mode sees the drift and leaves it alone.
        out = sh("bash", DEMO, "deploy", "--limit", "pi1", "--check").stdout
        assert _recap(out)["pi1"] >= 1 and _recap(out, "failed")["pi1"] == 0
        assert "not-the-password" not in out
        assert on_host("pi1", f"grep -c not-the-password {creds}").stdout.strip() == "1"
    finally:
        sh("bash", DEMO, "deploy", "--limit", "pi1")
    audit_until(all_ok, 200, "pi1 back to ok after site.yml")
    wait_for(lambda: _backlog("pi1") < 200, timeout=120, interval=5,
             what="pi1's backlog to drain")


def test_stopped_host_is_down_from_central_data():
    sh("bash", FLEET, "stop", "pi3")
    try:
        rc, report, _ = audit_until(lambda v: v.get("pi3") == "down", 200, "pi3 down")
        assert rc != 0
        assert verdicts(report) == {"pi1": "ok", "pi2": "ok", "pi3": "down"}
        site = next(s for s in report["sites"] if s["host"] == "pi3")
        assert site["reachable"] is False
        assert site["heartbeat_ts"] is not None, "judged from its heartbeats in Cassandra"
        assert all(d["last_central_ts"] for d in site["devices"])
        # A deployment meanwhile reaches the others, names the one that did not answer, and
        # (a second run of site.yml) changes nothing.
        deploy = sh("bash", DEMO, "deploy", check=False)
        assert deploy.returncode == 0, deploy.stdout[-3000:]
        assert "deployed: 2 of 3" in deploy.stdout
        assert "unreachable: pi3" in deploy.stdout
        assert_nothing_changed(deploy.stdout, {"localhost", "pi1", "pi2"})
    finally:
        sh("bash", FLEET, "start", "pi3")
    audit_until(all_ok, 200, "pi3 back to ok")


def _compare_site(session: Any, host: str) -> int:
    site = SITES[host]
    local = local_rows(store_dir(host), site)
    devices = sorted({r[1] for r in local})
    days = sorted({datetime.fromtimestamp(r[2] // 1000, UTC).date() for r in local})
    first = {d: min(r[2] for r in local if r[1] == d) for d in devices}
    central = {r for r in central_rows(session, "homewizard", site, devices, days)
               if r[2] >= first[r[1]]}  # rows of an earlier demo run are not this store's
    missing, extra = local - central, central - local
    assert not missing and not extra, (
        f"{host}: {len(missing)} rows missing in Cassandra (e.g. {sorted(missing)[:2]}), "
        f"{len(extra)} rows there but not on the Pi (e.g. {sorted(extra)[:2]})")
    return len(local)


def test_cassandra_outage_loses_nothing():
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    sh("bash", CASSANDRA, "down")
    try:
        # A minute with the database gone (four sync runs fail): collection goes on.
        end = time.monotonic() + 60
        while time.monotonic() < end:
            for host in SITES:
                assert service_active(host, "hw-picollector.service"), f"{host}: collector down"
            time.sleep(10)
        assert all(_backlog(h) > 40 for h in SITES)
    finally:
        sh("bash", CASSANDRA, "up", timeout=600)
    for host in SITES:
        # Let the timer's next run drain it, then freeze the store and drain the rest.
        wait_for(lambda h=host: _backlog(h) < 100, timeout=180, interval=5,
                 what=f"{host}'s timer to drain the backlog")
    try:
        for host in SITES:
            on_host(host, "systemctl stop hw-picollector.service")
            on_host(host, "systemctl start hw-picollector-sync.service")
            assert _backlog(host) == 0
        cluster = Cluster(["127.0.0.1"], auth_provider=PlainTextAuthProvider(*ADMIN),
                          protocol_version=5)
        try:
            session = cluster.connect()
            counts = {h: _compare_site(session, h) for h in SITES}
        finally:
            cluster.shutdown()
        assert all(n > 60 for n in counts.values()), counts
    finally:
        for host in SITES:
            on_host(host, "systemctl start hw-picollector.service")
    audit_until(all_ok, 150, "every site ok after the outage")


def _check_files(folder: Path) -> list[int]:
    """Every row of every day file complete; the ts of each device, in order."""
    from hw_picollector.store import parse_ts

    stamps: list[int] = []
    for device in sorted((folder / "measurements").iterdir()):
        prev = 0
        for path in sorted(device.glob("*.csv")):
            text = path.read_text()
            assert text.endswith("\n"), f"{path}: torn last line"
            rows = list(csv.reader(text.splitlines()))
            width = len(rows[0])
            for row in rows[1:]:
                assert len(row) == width, f"{path}: a row of {len(row)} fields, not {width}"
                ts = parse_ts(row[0])
                assert ts > prev, f"{path}: ts {row[0]} not after the previous row"
                prev = ts
                stamps.append(ts)
    return stamps


def test_reboot_brings_services_back_without_a_torn_file():
    before = time.time()
    sh("bash", FLEET, "reboot", "pi2", timeout=300)
    after = time.time()
    wait_for(lambda: service_active("pi2", "hw-picollector.service"), timeout=60, interval=1,
             what="the collector to come back after the reboot")
    assert on_host("pi2", "systemctl is-enabled hw-picollector-sync.timer").stdout.strip() \
        == "enabled"
    store = store_dir("pi2")
    wait_for(lambda: max(_check_files(store)) / 1000 > after + 2, timeout=60, interval=1,
             what="new samples after the reboot")
    stamps = sorted(set(_check_files(store)))
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)
            if before * 1000 - 10_000 < a < after * 1000 + 10_000]
    assert gaps, "samples around the reboot"
    # At most one flush interval (5 s) is lost before the stop, none after the start.
    assert max(gaps) <= (after - before) + 6, (max(gaps), after - before)
    audit_until(all_ok, 150, "every site ok after the reboot")


def _vault_secrets() -> list[str]:
    """Every secret of the demo inventory, decrypted the way an operator would: the Pis'
    (Cassandra logins, device tokens) and the audit role's. (The superuser's is the node's
    stock ``cassandra``, the same as its user name.)"""
    import yaml

    from tests.fleet.conftest import BIN, INVENTORY, VAULT_PASS

    def view(path: Path) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(sh(
            BIN / "ansible-vault", "view", "--vault-password-file", VAULT_PASS, path).stdout)
        return data

    found = [view(INVENTORY / "group_vars" / "all" / "vault.yml")
             ["vault_hwpc_cassandra_audit_password"]]
    for host in SITES:  # (host_vars of a bigger demo run before may linger: not deployed)
        data = view(INVENTORY / "host_vars" / host / "vault.yml")
        found.append(data["vault_hwpc_cassandra_password"])
        found += list((data.get("vault_hwpc_device_tokens") or {}).values())
    assert len(found) == 5 and all(len(s) >= 16 for s in found)
    return found


def test_no_secret_in_ansible_output_journal_or_config():
    secrets = _vault_secrets()
    for path in sorted((ROOT / "inventories" / "demo").rglob("vault.yml")):
        assert path.read_text().startswith("$ANSIBLE_VAULT;"), f"{path} is not encrypted"
    # A redeploy at -vvv that changes the secrets' files shows none of them.
    on_host("pi3", "rm -f /etc/hw-picollector/credentials/cassandra "
                   "/etc/hw-picollector/credentials/token-5c2fafa30002")
    result = sh("bash", DEMO, "deploy", "--limit", "pi3", "-vvv")
    assert "changed: [pi3]" in result.stdout
    output = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in output, "a secret in ansible-playbook -vvv output"
    for host in SITES:
        journal = on_host(host, "journalctl --no-pager -o cat").stdout
        config = on_host(host, "cat /etc/hw-picollector/config.yml").stdout
        for secret in secrets:
            assert secret not in journal, f"a secret in {host}'s journal"
            assert secret not in config, f"a secret in {host}'s config.yml"
    # The credentials themselves: root-only files, handed to the units by systemd.
    modes = on_host("pi3", "stat -c '%a %U %n' /etc/hw-picollector/credentials "
                           "/etc/hw-picollector/credentials/*").stdout.split("\n")
    assert all(m.startswith(("700 root", "600 root")) for m in modes if m), modes
    wait_for(lambda: service_active("pi3", "hw-picollector.service"), timeout=60, interval=1,
             what="the collector after the redeploy")
    audit_until(all_ok, 150, "every site ok after the redeploy")


def test_pair_device_yml_pairs_an_api_v2_meter_without_showing_the_token():
    from hw_picollector.devices.tls import cert_hostname
    from hw_picollector.devices.transport import Connection
    from tests.fleet.conftest import BIN, INVENTORY, VAULT_PASS

    serial, address = "5c2fafa30002", "127.0.0.1:18105"  # pi3's PV meter (API v2)
    token_file = ROOT / "build" / "tokens" / f"pi3-{serial}.token"
    token_file.unlink(missing_ok=True)

    def device() -> Connection:
        return Connection(address, cert_hostname("HWE-KWH3", serial),
                          str(ROOT / "build" / "demo" / "tls" / "ca.pem"))

    proc = subprocess.Popen(
        [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "--vault-password-file",
         str(VAULT_PASS), str(ROOT / "playbooks" / "pair_device.yml"), "-e", "pair_host=pi3",
         "-e", f"pair_serial={serial}", "-e", "pair_timeout=60",
         "-e", "pair_ca_file=/etc/hw-picollector/devices-ca.pem"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The operator presses the button when asked; the window stays open 30 s.
        deadline = time.monotonic() + 150
        while proc.poll() is None:
            assert time.monotonic() < deadline, "pair_device.yml did not finish"
            with device() as meter:
                meter.request("POST", "/_sim/button", serial, 10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"pi3-{serial}.token (0600)" in " ".join(out.split())  # (YAML output folds lines)
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600 and len(token) >= 16
    assert token not in out, "the token in pair_device.yml's output"
    with device() as meter:
        answer = meter.request("GET", "/api/measurement", serial, 10,
                               headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200 and "power_w" in answer.json()
    token_file.unlink()

