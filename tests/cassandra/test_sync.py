"""Exactly-once sync into a real Cassandra node, under faults."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cassandra.conftest import (
    HWPC,
    central_rows,
    hwpc,
    local_rows,
    make_config,
    store_days,
)

P1 = {"serial": "3c39e7100001", "product_type": "HWE-P1", "role": "grid",
      "address": "127.0.0.1:1", "api": "v1"}
PV = {"serial": "3c39e7100002", "product_type": "HWE-KWH1", "role": "production",
      "address": "127.0.0.1:2", "api": "v1"}


def history(config: Path, days: int, end: date | None = None) -> None:
    """Whole closed days ending yesterday (UTC) by default: the same backlog at any hour."""
    end = end or datetime.now(UTC).date() - timedelta(days=1)
    hwpc("simulate-history", "--config", str(config), "--days", str(days),
         "--end", end.isoformat())


def checkpoints_of(data: Path) -> dict[str, Any]:
    return {str(p.relative_to(data)): json.loads(p.read_text())
            for p in sorted((data / "sync").rglob("*.json")) if p.name != "last-sync.json"}


def synced_rows(data: Path) -> int:
    """Rows acknowledged so far, as the device checkpoints record them."""
    # Checkpoints are replaced atomically, so a read never sees half a file.
    return sum(json.loads(cp.read_text())["rows"] for cp in (data / "sync").glob("3c39*/*.json"))


def assert_exactly_once(admin: Any, keyspace: str, data: Path, site: str = "SITE01") -> int:
    local = local_rows(data, site)
    central = central_rows(admin, keyspace, site, [P1["serial"], PV["serial"]], store_days(data))
    missing, unexpected = local - central, central - local
    assert not missing, f"{len(missing)} local rows missing centrally, e.g. {sorted(missing)[:2]}"
    assert not unexpected, f"{len(unexpected)} central rows not in the store"
    return len(local)


def test_init_is_idempotent_and_check_reports_drift(tmp_path: Path, admin: Any,
                                                    keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1])
    first = hwpc("db", "init", "--config", str(config)).stdout
    assert "created table" in first
    assert hwpc("db", "init", "--config", str(config)).stdout.strip() == "unchanged"
    assert "ok" in hwpc("db", "check", "--config", str(config)).stdout
    admin.execute(f"ALTER TABLE {keyspace}.measurements DROP power_w")
    drift = hwpc("db", "check", "--config", str(config), check=False)
    assert drift.returncode == 1
    assert drift.stdout.strip() == f"column {keyspace}.measurements.power_w is missing"
    assert f"added column {keyspace}.measurements.power_w" in \
        hwpc("db", "init", "--config", str(config)).stdout
    # Replication is part of the schema: drift is reported, and init applies the inventory's.
    admin.execute(f"ALTER KEYSPACE {keyspace} WITH replication = "
                  "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}")
    drift = hwpc("db", "check", "--config", str(config), check=False)
    assert drift.returncode == 1
    assert drift.stdout.strip() == (
        f"keyspace {keyspace} replication is class=NetworkTopologyStrategy, datacenter1=1, "
        "expected class=SimpleStrategy, replication_factor=1")
    changed = hwpc("db", "init", "--config", str(config)).stdout
    assert f"replication of {keyspace} changed" in changed and "nodetool repair" in changed
    assert "ok" in hwpc("db", "check", "--config", str(config)).stdout


def test_backlog_of_three_days_lands_exactly_once_and_replay_changes_nothing(
        tmp_path: Path, admin: Any, keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1])
    hwpc("db", "init", "--config", str(config))
    history(config, 3)
    data = tmp_path / "data"
    out = hwpc("sync", "--config", str(config), "--once", "--progress")
    count = assert_exactly_once(admin, keyspace, data)
    assert count > 2 * 86400
    # the bar: done/total, rate and ETA, ending complete
    assert f"] {count}/{count} rows " in out.stderr and "rows/s ETA" in out.stderr
    before = checkpoints_of(data)
    replay = hwpc("sync", "--config", str(config), "--once", "--no-progress")
    assert "synced 0 rows" in replay.stderr
    assert checkpoints_of(data) == before
    assert assert_exactly_once(admin, keyspace, data) == count
    status = json.loads(hwpc("status", "--config", str(config), "--json").stdout)
    assert status["backlog_rows"] == 0
    assert status["last_sync_ts"] is not None
    # one heartbeat per run, newest first
    from hw_picollector import __version__

    today = datetime.now(UTC).date()
    beats = sorted(admin.execute(
        f"SELECT ts, site_id, version, rows_synced, backlog_rows, clock_synchronised, "
        f"last_error FROM {keyspace}.heartbeats WHERE host = 'host-site01' AND day IN (%s, %s)",
        (today - timedelta(days=1), today)), key=lambda b: b.ts, reverse=True)
    assert [(b.site_id, b.version, b.rows_synced, b.backlog_rows, b.last_error)
            for b in beats] == [("SITE01", __version__, 0, 0, None),
                                ("SITE01", __version__, count, 0, None)]
    assert all(b.clock_synchronised is not None for b in beats)


def test_sync_killed_ten_times_then_completed(tmp_path: Path, admin: Any,
                                              keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1, PV])
    hwpc("db", "init", "--config", str(config))
    history(config, 1)  # 172,800 rows
    data = tmp_path / "data"
    rng = random.Random(10)
    for kill in range(10):
        start = synced_rows(data)
        proc = subprocess.Popen([*HWPC, "sync", "--config", str(config), "--once",
                                 "--no-progress"], stderr=subprocess.DEVNULL)
        # A random moment, chosen by progress rather than by the clock so that it lands
        # mid-sync on a machine of any speed: every third kill while the sync starts up,
        # the others after a random number of acknowledged rows.
        if kill % 3 == 0:
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            target = start + rng.randint(1_000, 12_000)
            deadline = time.monotonic() + 120
            while synced_rows(data) < target and proc.poll() is None:
                assert time.monotonic() < deadline, "the sync made no progress in 120 s"
                time.sleep(0.005)
        assert proc.poll() is None, f"kill {kill + 1}: the sync finished before it"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 0 < synced_rows(data) < 2 * 86400, "the kills should have interrupted the backlog"
    hwpc("sync", "--config", str(config), "--once", "--no-progress")
    assert_exactly_once(admin, keyspace, data)
    # device_latest holds each device's newest row; it never moves backwards.
    latest = {r.device_id: r.ts for r in admin.execute(
        f"SELECT device_id, ts FROM {keyspace}.device_latest WHERE site_id = 'SITE01'")}
    newest = max(r[2] for r in local_rows(data, "SITE01") if r[1] == P1["serial"])
    assert round(latest[P1["serial"]].replace(tzinfo=UTC).timestamp() * 1000) == newest


def test_site_power_matches_hand_computed_values(tmp_path: Path, admin: Any,
                                                 keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1, PV])
    hwpc("db", "init", "--config", str(config))
    data = tmp_path / "data"
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    t0 = int(datetime.combine(day, datetime.min.time(), UTC).timestamp()) + 12 * 3600
    stamp = lambda s, ms=0: datetime.fromtimestamp(t0 + s, UTC).strftime(  # noqa: E731
        "%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"
    p1_rows = [(0, 500.0), (1, -200.0), (2, 100.0), (3, 0.0)]
    pv_rows = [(0, -1500.0), (1, -1600.0), (3, -10.0)]  # second 2 is missing on the PV meter
    for dev, rows in ((P1, p1_rows), (PV, pv_rows)):
        folder = data / "measurements" / dev["serial"]
        folder.mkdir(parents=True)
        lines = ["ts,power_w,extra"] + [f"{stamp(s, 7 * s)},{w},"
                                        for s, w in rows]
        (folder / f"{day}.csv").write_text("\n".join(lines) + "\n")
    hwpc("sync", "--config", str(config), "--once", "--no-progress")
    got = {round(r.ts.replace(tzinfo=UTC).timestamp()) - t0: (r.grid_w, r.production_w,
                                                               r.consumption_w)
           for r in admin.execute(f"SELECT ts, grid_w, production_w, consumption_w FROM "
                                  f"{keyspace}.site_power WHERE site_id = 'SITE01' AND day = %s",
                                  (day,))}
    assert got == {
        0: (500.0, 1500.0, 2000.0),
        1: (-200.0, 1600.0, 1400.0),
        2: (100.0, None, None),
        3: (0.0, 10.0, 10.0),
    }


@pytest.mark.parametrize("fault", ["wrong password", "unreachable", "wrong CA"])
def test_failures_are_clear_and_mark_nothing_synced(tmp_path: Path, admin: Any, keyspace: str,
                                                    node: Path, fault: str) -> None:
    good = make_config(tmp_path, keyspace, [P1], name="good.yml")
    hwpc("db", "init", "--config", str(good))
    kwargs: dict[str, Any] = {"data_dir": tmp_path / "data"}
    if fault == "wrong password":
        kwargs["creds"] = ("cassandra", "not-the-password")
    elif fault == "unreachable":
        kwargs["port"] = 1
    else:
        other_ca = tmp_path / "other-ca.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=Other CA", "-keyout", str(tmp_path / "k.pem"),
                        "-out", str(other_ca)], check=True, capture_output=True)
        kwargs["tls_ca"] = str(other_ca)
    config = make_config(tmp_path, keyspace, [P1], **kwargs)
    history(config, 1)
    result = hwpc("sync", "--config", str(config), "--once", "--no-progress", check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("hwpc:")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.strip().splitlines() == lines, "more than the one line on stderr"
    expected = {"wrong password": "authentication failed", "unreachable": "unreachable",
                "wrong CA": "TLS"}[fault]
    assert expected in lines[0]
    assert "nothing marked synced" in lines[0]
    assert "not-the-password" not in result.stderr
    assert checkpoints_of(tmp_path / "data") == {}


@pytest.mark.parametrize("fault", ["no schema", "read-only role"])
def test_refused_writes_are_clear_and_mark_nothing_synced(tmp_path: Path, admin: Any,
                                                          keyspace: str, fault: str) -> None:
    good = make_config(tmp_path, keyspace, [P1], name="good.yml")
    kwargs: dict[str, Any] = {"data_dir": tmp_path / "data"}
    role, password = "hwpc_test_readonly", "read-only-password-1"
    if fault == "read-only role":
        hwpc("db", "init", "--config", str(good))
        hwpc(*role_command(tmp_path, good, role, password), "--read-only")
        kwargs["creds"] = (role, password)
    # "no schema": the keyspace was never initialised.
    config = make_config(tmp_path, keyspace, [P1], **kwargs)
    history(config, 1)
    backlog = json.loads(hwpc("status", "--json", "--config", str(config)).stdout)["backlog_rows"]
    try:
        result = hwpc("sync", "--config", str(config), "--once", "--no-progress", check=False)
    finally:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    expected = {"no schema": "run: hwpc db check", "read-only role": "permission denied"}[fault]
    assert expected in line and "Traceback" not in result.stderr
    assert f"nothing marked synced, {backlog} rows stay on this Pi" in line
    assert backlog == 86400
    assert synced_rows(tmp_path / "data") == 0
    last = json.loads((tmp_path / "data" / "sync" / "last-sync.json").read_text())
    assert expected in last["last_error"]


def test_tls_with_the_node_ca_works(tmp_path: Path, admin: Any, keyspace: str,
                                    node: Path) -> None:
    config = make_config(tmp_path, keyspace, [P1], tls_ca=str(node / "conf" / "node.pem"))
    hwpc("db", "init", "--config", str(config))
    history(config, 1)
    hwpc("sync", "--config", str(config), "--once", "--no-progress")
    assert_exactly_once(admin, keyspace, tmp_path / "data")


def role_command(tmp_path: Path, config: Path, role: str, password: str) -> tuple[str, ...]:
    """``hwpc db create-role`` for ``role``, its password in a file."""
    path = tmp_path / f"{role}.pw"
    path.write_text(password + "\n")
    return ("db", "create-role", "--config", str(config), "--role", role,
            "--password-file", str(path))


@contextmanager
def logged_in(admin: Any, role: str, password: str) -> Iterator[Any]:
    """A session as ``role``; the role is dropped afterwards."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], auth_provider=PlainTextAuthProvider(role, password),
                      protocol_version=5)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()
        admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_audit_role_reads_and_cannot_write(tmp_path: Path, admin: Any, keyspace: str) -> None:
    from cassandra import Unauthorized

    config = make_config(tmp_path, keyspace, [P1])
    hwpc("db", "init", "--config", str(config))
    role, password = f"audit_{keyspace}", "another-long-password-5678"
    create = role_command(tmp_path, config, role, password)
    exists = f"SELECT role FROM system_auth.roles WHERE role = '{role}'"
    # --dry-run (what check mode runs) says what would change and changes nothing
    assert hwpc(*create, "--dry-run").stdout.strip() == \
        f"role {role}: created (dry run: nothing changed)"
    assert admin.execute(exists).one() is None
    # first as a Pi's role (MODIFY too), then turned read-only: MODIFY is revoked
    assert hwpc(*create).stdout.strip() == f"role {role}: created"
    assert hwpc(*create, "--read-only", "--dry-run").stdout.strip() == \
        f"role {role}: grants updated (dry run: nothing changed)"
    assert hwpc(*create, "--read-only").stdout.strip() == f"role {role}: grants updated"
    assert hwpc(*create, "--read-only").stdout.strip() == f"role {role}: unchanged"
    assert hwpc(*create, "--read-only", "--dry-run").stdout.strip() == f"role {role}: unchanged"
    other = role_command(tmp_path, config, role, "a-new-password-for-the-role")
    assert hwpc(*other, "--read-only", "--dry-run").stdout.strip() == \
        f"role {role}: password updated (dry run: nothing changed)"
    history(config, 1)
    hwpc("sync", "--config", str(config), "--once", "--no-progress")
    with logged_in(admin, role, password) as audit:
        assert audit.execute(f"SELECT device_id FROM {keyspace}.device_latest "
                             "WHERE site_id = 'SITE01'").one().device_id == P1["serial"]
        with pytest.raises(Unauthorized):
            audit.execute(f"INSERT INTO {keyspace}.device_latest (site_id, device_id) "
                          "VALUES ('SITE01', 'x')")
        with pytest.raises(Unauthorized):
            audit.execute(f"TRUNCATE {keyspace}.measurements")


def test_per_pi_role_is_least_privilege(tmp_path: Path, admin: Any, keyspace: str) -> None:
    from cassandra import Unauthorized

    config = make_config(tmp_path, keyspace, [P1])
    hwpc("db", "init", "--config", str(config))
    role, password = f"pi_{keyspace}", "a-long-random-password-1234"
    create = role_command(tmp_path, config, role, password)
    out = hwpc(*create)
    assert out.stdout.strip() == f"role {role}: created"
    again = hwpc(*create)
    assert again.stdout.strip() == f"role {role}: unchanged"
    assert "a-long-random-password" not in out.stdout + out.stderr + again.stderr
    admin.execute("CREATE KEYSPACE IF NOT EXISTS other_ks WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    admin.execute("CREATE TABLE IF NOT EXISTS other_ks.t (k int PRIMARY KEY)")
    with logged_in(admin, role, password) as pi:
        day = date.today()
        pi.execute(f"INSERT INTO {keyspace}.measurements (site_id, device_id, day, ts, power_w) "
                   "VALUES ('S', 'd', %s, 0, 1.0)", (day,))
        with pytest.raises(Unauthorized):  # it writes; it reads nothing
            pi.execute(f"SELECT power_w FROM {keyspace}.measurements WHERE site_id = 'S' "
                       "AND device_id = 'd' AND day = %s", (day,))
        assert admin.execute(f"SELECT power_w FROM {keyspace}.measurements WHERE site_id = 'S' "
                             "AND device_id = 'd' AND day = %s", (day,)).one().power_w == 1.0
        with pytest.raises(Unauthorized):
            pi.execute(f"DROP TABLE {keyspace}.measurements")
        with pytest.raises(Unauthorized):
            pi.execute("SELECT * FROM other_ks.t")
