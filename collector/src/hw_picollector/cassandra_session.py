"""One place that opens a Cassandra session: credentials file, TLS, profiles, clear errors."""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hw_picollector.config import CassandraConfig
from hw_picollector.tables import PI_WRITE_TABLES


class DatabaseError(Exception):
    """A database failure phrased for the operator in one line."""


def read_credentials(path: str | None) -> tuple[str, str] | None:
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return str(data["username"]), str(data["password"])
    except OSError as exc:
        raise DatabaseError(f"cannot read the credentials file {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DatabaseError(f"{path}: expected JSON with \"username\" and \"password\"") from exc


def tls_context(cfg: CassandraConfig) -> ssl.SSLContext | None:
    if not cfg.tls_ca_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname checks
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cfg.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise DatabaseError(f"cannot load the Cassandra CA {cfg.tls_ca_file}: {exc}") from exc
    return ctx


def where(cfg: CassandraConfig) -> str:
    return ",".join(f"{h}:{cfg.port}" for h in cfg.hosts) + (" (TLS)" if cfg.tls_ca_file else "")


def explain(exc: BaseException, cfg: CassandraConfig, user: str | None) -> str:
    """The driver's nested errors → one line an operator can act on."""
    from cassandra import AuthenticationFailed, InvalidRequest, Unauthorized
    from cassandra.cluster import NoHostAvailable

    text = str(exc)
    if isinstance(exc, NoHostAvailable):
        errors = list(exc.errors.values())
        if any(isinstance(e, AuthenticationFailed) for e in errors):
            return (f"Cassandra {where(cfg)}: authentication failed for user {user!r} "
                    "(wrong password or no such role)")
        texts = " ".join(str(e) for e in errors)
        if "certificate" in texts.lower() or "ssl" in texts.lower():
            return f"Cassandra {where(cfg)}: TLS handshake failed ({_first(errors)})"
        return f"Cassandra {where(cfg)}: unreachable ({_first(errors) or text})"
    if isinstance(exc, AuthenticationFailed):
        return f"Cassandra {where(cfg)}: authentication failed for user {user!r}"
    if isinstance(exc, Unauthorized):
        return (f"Cassandra {where(cfg)}: permission denied ({_one_line(text)}); a Pi's role "
                f"needs MODIFY on {cfg.keyspace}.{{{','.join(PI_WRITE_TABLES)}}} "
                "(hwpc db create-role)")
    if isinstance(exc, InvalidRequest) and ("does not exist" in text or "unconfigured" in text):
        return (f"Cassandra {where(cfg)}: {_one_line(text)} (is the schema there? "
                "run: hwpc db check)")
    return f"Cassandra {where(cfg)}: {type(exc).__name__}: {_one_line(text)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _first(errors: list[Any]) -> str:
    return str(errors[0]).splitlines()[0][:200] if errors else ""


def connect(cfg: CassandraConfig, credentials_file: str | None = None) -> tuple[Any, Any]:
    """(cluster, session) or DatabaseError. Imports the driver only when called."""
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (
        DCAwareRoundRobinPolicy,
        TokenAwarePolicy,
    )

    creds = read_credentials(credentials_file or cfg.credentials_file)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=cfg.local_dc)),
        consistency_level=getattr(ConsistencyLevel, cfg.consistency),
        request_timeout=cfg.request_timeout_s,
    )
    kwargs: dict[str, Any] = {}
    if creds:
        kwargs["auth_provider"] = PlainTextAuthProvider(username=creds[0], password=creds[1])
    ctx = tls_context(cfg)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
        if cfg.tls_hostname:
            kwargs["ssl_options"] = {"server_hostname": cfg.tls_hostname}
    cluster = Cluster(list(cfg.hosts), port=cfg.port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      connect_timeout=10, control_connection_timeout=10, **kwargs)
    try:
        with driver_quiet():
            session = cluster.connect()
    except Exception as exc:
        with driver_quiet():
            cluster.shutdown()
        raise DatabaseError(explain(exc, cfg, creds[0] if creds else None)) from exc
    return cluster, session


@contextlib.contextmanager
def driver_quiet() -> Iterator[None]:
    """While connecting (or preparing), the driver logs each failure with a traceback; the
    failure itself is reported once, by ``explain``. (``hwpc -v`` keeps the driver's lines.)"""
    driver = logging.getLogger("cassandra")
    if driver.getEffectiveLevel() < logging.WARNING:  # -v: the operator asked for detail
        yield
        return
    level = driver.level
    driver.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        driver.setLevel(level)
