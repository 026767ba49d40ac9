"""End to end on the demo fleet: faults of the field, seen by the audit; nothing lost."""

from __future__ import annotations

import csv
import itertools
import json
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


def test_site_yml_second_run_changes_nothing():
    out = sh("bash", DEMO, "deploy").stdout
    recap = out[out.index("PLAY RECAP"):]
    changed = {line.split()[0]: int(line.split("changed=")[1].split()[0])
               for line in recap.splitlines() if "changed=" in line}
    assert set(changed) >= {"localhost", *SITES}, recap
    assert changed == dict.fromkeys(changed, 0), recap


def test_stopped_collector_makes_its_site_stale():
    ansible("pi2", "ansible.builtin.systemd", "name=hw-picollector.service state=stopped")
    try:
        rc, report, _ = audit_until(lambda v: v.get("pi2") == "stale", 150, "pi2 stale")
        assert rc != 0, "the play must fail when a site is stale"
        assert verdicts(report) == {"pi1": "ok", "pi2": "stale", "pi3": "ok"}
        site = next(s for s in report["sites"] if s["host"] == "pi2")
        assert site["service_active"] is False
        assert any("newest local sample" in r for r in site["reasons"])
        rc, report, _ = audit(freshness_fail="false")
        assert rc == 0, "freshness_fail=false reports without failing"
    finally:
        ansible("pi2", "ansible.builtin.systemd", "name=hw-picollector.service state=started")
    audit_until(all_ok, 150, "pi2 back to ok")


def _backlog(host: str) -> int:
    out = on_host(host, "/opt/hw-picollector/venv/bin/hwpc status --json "
                        "--config /etc/hw-picollector/config.yml").stdout
    return int(json.loads(out)["backlog_rows"])


def test_wrong_database_password_is_lagging_then_site_yml_fixes_it():
    creds = "/etc/hw-picollector/credentials/cassandra"
    wrong = json.dumps({"username": "pi_cdb001", "password": "not-the-password"})
    ansible("pi1", "ansible.builtin.copy",
            json.dumps({"content": wrong, "dest": creds, "mode": "0600"}))
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
        # A deployment meanwhile reaches the others and names the one that did not answer.
        deploy = sh("bash", DEMO, "deploy", check=False)
        assert deploy.returncode == 0, deploy.stdout[-3000:]
        assert "deployed: 2 of 3" in deploy.stdout
        assert "unreachable: pi3" in deploy.stdout
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
        # Two minutes with the database gone: collection goes on, the timer keeps failing.
        end = time.monotonic() + 120
        while time.monotonic() < end:
            for host in SITES:
                assert service_active(host, "hw-picollector.service"), f"{host}: collector down"
            time.sleep(15)
        assert all(_backlog(h) > 100 for h in SITES)
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
        assert all(n > 120 for n in counts.values()), counts
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
    """Every per-Pi secret of the demo inventory, decrypted the way an operator would."""
    import yaml

    from tests.fleet.conftest import BIN, INVENTORY, VAULT_PASS

    found: list[str] = []
    for path in sorted(INVENTORY.glob("host_vars/*/vault.yml")):
        data = yaml.safe_load(sh(BIN / "ansible-vault", "view", "--vault-password-file",
                                 VAULT_PASS, path).stdout)
        found.append(data["vault_hwpc_cassandra_password"])
        found += list((data.get("vault_hwpc_device_tokens") or {}).values())
    assert len(found) == 4 and all(len(s) >= 16 for s in found)
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
