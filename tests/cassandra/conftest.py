"""A real Cassandra 5.0 node (tests/harness/cassandra) and helpers to compare it with a store."""

from __future__ import annotations

import csv
import gzip
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "harness" / "cassandra" / "cassandra.sh"
STATE = Path(os.environ.get("HWPC_CASSANDRA_DIR", ROOT / "build" / "cassandra"))
HWPC = [sys.executable, "-m", "hw_picollector"]
ADMIN = ("cassandra", "cassandra")


def _up() -> bool:
    return subprocess.run(["bash", str(HARNESS), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def node() -> Iterator[Path]:
    """The node's state dir; started here (and stopped again) unless already running."""
    started = False
    if not _up():
        subprocess.run(["bash", str(HARNESS), "up"], check=True)
        started = True
    yield STATE
    if started:
        subprocess.run(["bash", str(HARNESS), "down"], check=True)


@pytest.fixture(scope="session")
def admin(node: Path) -> Iterator[Any]:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=9042, auth_provider=PlainTextAuthProvider(*ADMIN),
                      protocol_version=5)
    session = cluster.connect()
    yield session
    cluster.shutdown()


@pytest.fixture
def keyspace(admin: Any) -> Iterator[str]:
    name = f"t_{secrets.token_hex(4)}"
    yield name
    admin.execute(f"DROP KEYSPACE IF EXISTS {name}")


def write_creds(path: Path, user: str, password: str) -> Path:
    path.write_text(json.dumps({"username": user, "password": password}))
    path.chmod(0o600)
    return path


def make_config(tmp: Path, keyspace: str, devices: list[dict[str, Any]], *,
                creds: tuple[str, str] = ADMIN, site_id: str = "SITE01",
                port: int = 9042, tls_ca: str | None = None, name: str = "config.yml",
                data_dir: Path | None = None) -> Path:
    cassandra: dict[str, Any] = {
        "hosts": ["127.0.0.1"], "port": port, "keyspace": keyspace, "consistency": "ONE",
        "credentials_file": str(write_creds(tmp / f"{name}.creds", *creds)),
        "request_timeout_s": 10.0,
    }
    if tls_ca:
        cassandra["tls"] = {"ca_file": tls_ca}
    config = {"site_id": site_id, "data_dir": str(data_dir or tmp / "data"),
              "clock_sync": "trust", "mdns": False, "host": f"host-{site_id.lower()}",
              "devices": devices, "cassandra": cassandra}
    path = tmp / name
    path.write_text(yaml.safe_dump(config))
    return path


def hwpc(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HWPC, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"hwpc {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
    return result


Row = tuple[str, str, int, tuple[tuple[str, Any], ...]]


def to_ms(ts: datetime) -> int:
    """The driver returns naive UTC datetimes."""
    return round(ts.replace(tzinfo=UTC).timestamp() * 1000)


def _norm(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in values.items() if v is not None and v != ""))


def local_rows(data_dir: Path, site_id: str) -> set[Row]:
    """(device, ts_ms, values) for every row in the local store."""
    from hw_picollector.devices.canonical import TEXT_COLUMNS
    from hw_picollector.store import parse_ts

    rows: set[Row] = set()
    for device_dir in sorted((data_dir / "measurements").iterdir()):
        for path in sorted(device_dir.glob("*.csv*")):  # closed days are compressed
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="") as fh:
                for rec in csv.DictReader(fh):
                    values: dict[str, Any] = {}
                    for key, text in rec.items():
                        if key in ("ts", "extra") or text == "":
                            continue
                        values[key] = text if key in TEXT_COLUMNS else float(text)
                    if rec["extra"]:
                        values.update({f"extra.{k}": float(v)
                                       for k, v in json.loads(rec["extra"]).items()})
                    rows.add((site_id, device_dir.name, parse_ts(rec["ts"]), _norm(values)))
    return rows


def central_rows(session: Any, keyspace: str, site_id: str, devices: list[str],
                 days: list[date]) -> set[Row]:
    from hw_picollector.tables import MEASUREMENT_COLUMNS

    rows: set[Row] = set()
    cols = ", ".join(MEASUREMENT_COLUMNS)
    stmt = session.prepare(f"SELECT device_id, ts, {cols}, extra FROM {keyspace}.measurements "
                           "WHERE site_id = ? AND device_id = ? AND day = ?")
    for device in devices:
        for day in days:
            for rec in session.execute(stmt, (site_id, device, day)):
                data = rec._asdict()
                values = {k: data[k] for k in MEASUREMENT_COLUMNS}
                values.update({f"extra.{k}": v for k, v in (data["extra"] or {}).items()})
                rows.add((site_id, device, to_ms(data["ts"]), _norm(values)))
    return rows


def store_days(data_dir: Path) -> list[date]:
    return sorted({date.fromisoformat(p.name[:10])
                   for p in (data_dir / "measurements").glob("*/*.csv*")})
