"""A Pi's login role on the real node: it writes what its sync writes, and nothing more.

The node runs with the guardrails the central_db role's README recommends
(tests/harness/cassandra/cassandra.yaml.in): no DROP/TRUNCATE, no write stamped more than a
day ahead. Guardrails bind ordinary roles only, so the superuser of these tests is not held
by them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hw_picollector.tables import PI_WRITE_TABLES
from tests.cassandra.conftest import hwpc, make_config, to_ms
from tests.cassandra.test_sync import P1, assert_exactly_once, history, role_command

YEAR_US = 365 * 86400 * 1_000_000


@contextmanager
def session_as(node: Path, role: str, password: str) -> Iterator[Any]:
    """A TLS session as ``role`` (the node's CA, hostname checked)."""
    import ssl

    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(node / "conf" / "node.pem"))
    cluster = Cluster(["127.0.0.1"], auth_provider=PlainTextAuthProvider(role, password),
                      ssl_context=ctx, protocol_version=5)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def permissions(admin: Any, role: str) -> set[tuple[str, str]]:
    return {(r.resource, r.permission)
            for r in admin.execute(f"LIST ALL PERMISSIONS OF {role} NORECURSIVE")}


@pytest.fixture
def pi_role(admin: Any, keyspace: str) -> Iterator[tuple[str, str]]:
    role = f"pi_{keyspace}"
    yield role, "a-long-random-password-1234"
    admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_pi_role_writes_its_tables_only_and_syncs(tmp_path: Path, admin: Any, keyspace: str,
                                                  node: Path, pi_role: tuple[str, str]) -> None:
    from cassandra import InvalidRequest, Unauthorized

    ca = str(node / "conf" / "node.pem")
    config = make_config(tmp_path, keyspace, [P1], tls_ca=ca, name="admin.yml")
    hwpc("db", "init", "--config", str(config))
    role, password = pi_role
    ks = keyspace
    wanted = {(f"<table {ks}.{t}>", "MODIFY") for t in PI_WRITE_TABLES}

    # A role from an earlier version: MODIFY and SELECT on the whole keyspace, and more.
    admin.execute(f"CREATE ROLE {role} WITH PASSWORD = '{password}' AND LOGIN = true")
    for grant in (f"SELECT ON KEYSPACE {ks}", f"MODIFY ON KEYSPACE {ks}",
                  f"SELECT ON TABLE {ks}.measurements", f"MODIFY ON TABLE {ks}.schema_version",
                  "SELECT ON ALL KEYSPACES"):
        admin.execute(f"GRANT {grant} TO {role}")
    old = permissions(admin, role)
    create = role_command(tmp_path, config, role, password)
    assert hwpc(*create, "--dry-run").stdout.strip() == \
        f"role {role}: grants updated (dry run: nothing changed)"
    assert permissions(admin, role) == old
    assert hwpc(*create).stdout.strip() == f"role {role}: grants updated"
    assert permissions(admin, role) == wanted
    assert hwpc(*create).stdout.strip() == f"role {role}: unchanged"
    assert hwpc(*create, "--dry-run").stdout.strip() == f"role {role}: unchanged"

    # A real sync as that role, over TLS: every table it writes, USING TIMESTAMP included.
    pi_config = make_config(tmp_path, keyspace, [P1], tls_ca=ca, name="pi.yml",
                            creds=(role, password), data_dir=tmp_path / "data")
    history(pi_config, 1)
    hwpc("sync", "--config", str(pi_config), "--once", "--no-progress")
    rows = assert_exactly_once(admin, keyspace, tmp_path / "data")
    assert rows > 0
    latest = {r.device_id: r for r in admin.execute(
        f"SELECT device_id, ts, writetime(host) AS wt FROM {ks}.device_latest "
        "WHERE site_id = 'SITE01'")}
    assert set(latest) == {P1["serial"]}
    for r in latest.values():  # written with the sample's time as write time
        assert r.wt == to_ms(r.ts) * 1000
    today = datetime.now(UTC).date()
    assert admin.execute(f"SELECT count(*) FROM {ks}.heartbeats WHERE host = 'host-site01' "
                         "AND day = %s", (today,)).one()[0] >= 1
    day = today - timedelta(days=1)  # the day of history
    assert admin.execute(f"SELECT count(*) FROM {ks}.site_power WHERE site_id = 'SITE01' "
                         "AND day = %s", (day,)).one()[0] > 0

    measurements = admin.execute(f"SELECT count(*) FROM {ks}.measurements WHERE site_id = "
                                 "'SITE01' AND device_id = %s AND day = %s",
                                 (P1["serial"], day)).one()[0]
    with session_as(node, role, password) as pi:
        for table in (*PI_WRITE_TABLES, "schema_version"):
            with pytest.raises(Unauthorized):
                pi.execute(f"SELECT * FROM {ks}.{table} LIMIT 1")
        with pytest.raises(Unauthorized):
            pi.execute(f"INSERT INTO {ks}.schema_version (id, version) VALUES ('schema', 99)")
        with pytest.raises(Unauthorized):
            pi.execute(f"ALTER TABLE {ks}.measurements ADD rogue double")
        with pytest.raises(Unauthorized):
            pi.execute(f"DROP TABLE {ks}.measurements")
        with pytest.raises(Unauthorized):
            pi.execute(f"DROP KEYSPACE {ks}")
        # MODIFY would allow TRUNCATE: the guardrail refuses it to every non-superuser
        with pytest.raises(InvalidRequest, match=r"(?i)truncate"):
            pi.execute(f"TRUNCATE {ks}.measurements")
        # a row stamped a year ahead would shadow every later write of it
        ahead = time.time_ns() // 1000 + YEAR_US
        with pytest.raises(InvalidRequest, match=r"(?i)timestamp"):
            pi.execute(f"INSERT INTO {ks}.device_latest (site_id, device_id, host) "
                       f"VALUES ('SITE01', 'ffffffffffff', 'x') USING TIMESTAMP {ahead}")
        # what the sync does is still allowed
        pi.execute(f"INSERT INTO {ks}.device_latest (site_id, device_id, host) "
                   "VALUES ('SITE01', 'ffffffffffff', 'x') USING TIMESTAMP %s",
                   (time.time_ns() // 1000,))
    assert admin.execute(f"SELECT count(*) FROM {ks}.measurements WHERE site_id = 'SITE01' "
                         "AND device_id = %s AND day = %s",
                         (P1["serial"], day)).one()[0] == measurements
    assert admin.execute(f"SELECT version FROM {ks}.schema_version "
                         "WHERE id = 'schema'").one().version != 99
    # the superuser is not bound by the guardrails (the test fixture drops keyspaces)
    admin.execute(f"TRUNCATE {ks}.heartbeats")

