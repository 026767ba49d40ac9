"""`hwpc db init|check|create-role`: the central schema and least-privilege login roles.

DDL cannot take bind markers, so the few identifiers that appear in it (keyspace, role)
are validated against strict patterns first and the password literal is quoted; rows
themselves are only ever written through prepared statements (see sync).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from hw_picollector.cassandra_session import DatabaseError, connect
from hw_picollector.config import CassandraConfig, ConfigError, load_config
from hw_picollector.tables import (
    EXPECTED,
    PI_WRITE_TABLES,
    SCHEMA_VERSION,
    TABLES,
)

log = logging.getLogger(__name__)

IDENT_MAX_LEN = 48  # keyspace and role names (Cassandra allows 48 characters in a keyspace name)
IDENT = re.compile(rf"[a-z][a-z0-9_]{{0,{IDENT_MAX_LEN - 1}}}")  # with fullmatch only
REPLICATION_CLASSES = {"SimpleStrategy", "NetworkTopologyStrategy"}


def replication_literal(replication: dict[str, Any]) -> str:
    cls = str(replication.get("class", ""))
    if cls not in REPLICATION_CLASSES:
        raise ConfigError(f"cassandra.replication.class: {cls!r} is not one of "
                          f"{', '.join(sorted(REPLICATION_CLASSES))}")
    parts = [f"'class': '{cls}'"]
    for key, value in sorted(replication.items()):
        if key == "class":
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(key)) or not isinstance(value, int) \
                or isinstance(value, bool) or not 0 < value < 20:
            raise ConfigError(f"cassandra.replication.{key}: expected a replication factor")
        parts.append(f"'{key}': '{value}'")
    return "{" + ", ".join(parts) + "}"


def _replication_of(session: Any, ks: str) -> dict[str, str]:
    """The keyspace's replication as configured (class without its Java package)."""
    row = session.execute("SELECT replication FROM system_schema.keyspaces "
                          "WHERE keyspace_name = %s", (ks,)).one()
    found = dict(row.replication) if row is not None else {}
    if "class" in found:
        found["class"] = found["class"].rsplit(".", 1)[-1]
    return found


def _replication_wanted(cfg: CassandraConfig) -> dict[str, str]:
    replication_literal(cfg.replication)  # validates
    return {str(k): str(v) for k, v in cfg.replication.items()}


def _replication_text(replication: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(replication.items()))


def _keyspace(cfg: CassandraConfig) -> str:
    if not IDENT.fullmatch(cfg.keyspace):
        raise ConfigError(f"cassandra.keyspace: {cfg.keyspace!r} must match {IDENT.pattern}")
    return cfg.keyspace


def init(session: Any, cfg: CassandraConfig) -> list[str]:
    """Create or upgrade in place; returns what changed (empty: nothing to do)."""
    ks = _keyspace(cfg)
    changes: list[str] = []
    before = _existing(session, ks)
    if before is None:
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
                        f"{replication_literal(cfg.replication)}")
        changes.append(f"created keyspace {ks}")
        before = {}
    else:
        found, wanted = _replication_of(session, ks), _replication_wanted(cfg)
        if found != wanted:  # the inventory is the truth; the data then needs a repair
            session.execute(f"ALTER KEYSPACE {ks} WITH replication = "
                            f"{replication_literal(cfg.replication)}")
            changes.append(f"replication of {ks} changed from {_replication_text(found)} to "
                           f"{_replication_text(wanted)}: run nodetool repair --full {ks} on "
                           "every node")
    for table, ddl in TABLES.items():
        if table not in before:
            session.execute(ddl.format(ks=ks))
            changes.append(f"created table {ks}.{table}")
            continue
        for column, kind in EXPECTED[table].items():
            if column not in before[table]:
                session.execute(f"ALTER TABLE {ks}.{table} ADD {column} {kind}")
                changes.append(f"added column {ks}.{table}.{column}")
    row = session.execute(f"SELECT version FROM {ks}.schema_version WHERE id = 'schema'").one()
    if row is None or row.version != SCHEMA_VERSION:
        session.execute(f"INSERT INTO {ks}.schema_version (id, version, applied) "
                        "VALUES ('schema', %s, toTimestamp(now()))", (SCHEMA_VERSION,))
        changes.append(f"schema version {SCHEMA_VERSION}")
    return changes


def _existing(session: Any, ks: str) -> dict[str, dict[str, str]] | None:
    if session.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                       "WHERE keyspace_name = %s", (ks,)).one() is None:
        return None
    tables: dict[str, dict[str, str]] = {}
    for row in session.execute("SELECT table_name, column_name, type FROM "
                               "system_schema.columns WHERE keyspace_name = %s", (ks,)):
        tables.setdefault(row.table_name, {})[row.column_name] = row.type
    return tables


def check(session: Any, cfg: CassandraConfig) -> list[str]:
    """One line per difference between the database and this version's schema."""
    ks = _keyspace(cfg)
    found = _existing(session, ks)
    if found is None:
        return [f"keyspace {ks} is missing (run: hwpc db init)"]
    problems = []
    found_replication, wanted = _replication_of(session, ks), _replication_wanted(cfg)
    if found_replication != wanted:
        problems.append(f"keyspace {ks} replication is {_replication_text(found_replication)}, "
                        f"expected {_replication_text(wanted)}")
    for table, columns in EXPECTED.items():
        if table not in found:
            problems.append(f"table {ks}.{table} is missing")
            continue
        for column, kind in columns.items():
            actual = found[table].get(column)
            if actual is None:
                problems.append(f"column {ks}.{table}.{column} is missing")
            elif actual != kind:
                problems.append(f"column {ks}.{table}.{column} is {actual}, expected {kind}")
    if "schema_version" in found:
        row = session.execute(f"SELECT version FROM {ks}.schema_version "
                              "WHERE id = 'schema'").one()
        if row is None or row.version != SCHEMA_VERSION:
            problems.append(f"schema version is {getattr(row, 'version', None)}, "
                            f"expected {SCHEMA_VERSION}")
    return problems


def wanted_permissions(ks: str, read_only: bool) -> set[tuple[str, str]]:
    """(resource, permission) pairs a login role holds, as LIST PERMISSIONS names them: a Pi's
    role MODIFY on the tables its sync writes to; the audit's (``read_only``) SELECT on the
    keyspace."""
    if read_only:
        return {(f"<keyspace {ks}>", "SELECT")}
    return {(f"<table {ks}.{table}>", "MODIFY") for table in PI_WRITE_TABLES}


def _resource_cql(resource: str, ks: str) -> str | None:
    """A data resource that can reach the keyspace, as GRANT/REVOKE spell it; else None."""
    if resource == "<all keyspaces>":
        return "ALL KEYSPACES"
    if resource == f"<keyspace {ks}>":
        return f"KEYSPACE {ks}"
    found = re.fullmatch(rf"<table {ks}\.([a-z][a-z0-9_]{{0,47}})>", resource)
    return f"TABLE {ks}.{found.group(1)}" if found else None


def create_role(session: Any, cfg: CassandraConfig, role: str, password: str, *,
                read_only: bool = False, dry_run: bool = False) -> str:
    """A login role for a Pi: MODIFY on the tables its sync writes to (PI_WRITE_TABLES), no
    SELECT; or, ``read_only``, the fleet audit's: SELECT on the keyspace. Any other grant on
    the keyspace, its tables or all keyspaces is revoked. Returns what happened
    (``dry_run``: what would happen; nothing is changed)."""
    ks = _keyspace(cfg)
    if not IDENT.fullmatch(role):
        raise ConfigError(f"--role: {role!r} must match {IDENT.pattern}")
    if not password or len(password) < 12:
        raise ConfigError("--password-file: the password must have at least 12 characters")

    def change(statement: str) -> None:
        if not dry_run:
            session.execute(statement)

    quoted = password.replace("'", "''")
    exists = session.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                             (role,)).one() is not None
    if exists and _login_works(session, role, password):
        outcome = "unchanged"
    elif exists:
        change(f"ALTER ROLE {role} WITH PASSWORD = '{quoted}' AND LOGIN = true")
        outcome = "password updated"
    else:
        change(f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = '{quoted}' "
               "AND LOGIN = true AND SUPERUSER = false")
        outcome = "created"
        if dry_run:
            return outcome
    granted = {(r.resource, r.permission) for r in session.execute(
        f"LIST ALL PERMISSIONS OF {role} NORECURSIVE")
        if _resource_cql(r.resource, ks) is not None}
    wanted = wanted_permissions(ks, read_only)
    # Grants first, then revokes: a sync running meanwhile never lacks a permission it needs.
    for resource, perm in sorted(wanted - granted):
        change(f"GRANT {perm} ON {_resource_cql(resource, ks)} TO {role}")
    for resource, perm in sorted(granted - wanted):  # an earlier, broader grant
        change(f"REVOKE {perm} ON {_resource_cql(resource, ks)} FROM {role}")
    if outcome == "unchanged" and granted != wanted:
        outcome = "grants updated"
    return outcome


def _login_works(session: Any, role: str, password: str) -> bool:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = session.cluster
    probe = Cluster(cluster.contact_points, port=cluster.port,
                    auth_provider=PlainTextAuthProvider(role, password),
                    ssl_context=cluster.ssl_context, ssl_options=cluster.ssl_options,
                    protocol_version=cluster.protocol_version, connect_timeout=10)
    try:
        probe.connect().shutdown()
        return True
    except Exception:
        return False
    finally:
        probe.shutdown()


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.cassandra is None:
        raise ConfigError(f"{args.config}: cassandra: missing (needed for hwpc db)")
    cfg = config.cassandra
    password = None
    if args.db_command == "create-role":
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{args.password_file}: cannot read: {exc.strerror}") from exc
    try:
        cluster, session = connect(cfg)
    except DatabaseError as exc:
        print(f"hwpc: {exc}", file=sys.stderr)
        return 1
    try:
        if args.db_command == "init":
            changes = init(session, cfg)
            for line in changes:
                print(line)
            print("changed" if changes else "unchanged")
            return 0
        if args.db_command == "check":
            problems = check(session, cfg)
            for line in problems:
                print(line)
            if not problems:
                print(f"schema {cfg.keyspace} version {SCHEMA_VERSION}: ok")
            return 1 if problems else 0
        assert password is not None
        outcome = create_role(session, cfg, args.role, password, read_only=args.read_only,
                              dry_run=args.dry_run)
        print(f"role {args.role}: {outcome}" + (" (dry run: nothing changed)"
                                                 if args.dry_run and outcome != "unchanged"
                                                 else ""))
        return 0
    finally:
        cluster.shutdown()
