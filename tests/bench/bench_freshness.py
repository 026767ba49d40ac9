"""Benchmark: the fleet audit.

1. The central-only part over N synthetic sites (default 1,000): rows written straight into
   `device_latest` (2 devices per site) and `heartbeats`, a fleet file in which no host
   answers, then `hwpc freshness` as check_freshness.yml runs it — wall time of the whole
   command (Python start, connect, queries, verdicts, table, JSON, HTML). Target ≤ 10 s.
   The same with 24-hour coverage strips (24 + 2 count queries per device) is reported too.
2. `check_freshness.yml` wall time on the demo fleet when it is up (`make demo`: 3 hosts;
   `HWPC_DEMO_HOSTS=10 make demo`: 10), three runs.

Prints figures and writes reports/bench-freshness.json. Needs the node up (make cassandra-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "bench-freshness"
KEYSPACE = "bench_freshness"
ADMIN = {"username": "cassandra", "password": "cassandra"}


def _config() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    creds = BUILD / "admin.json"
    creds.write_text(json.dumps(ADMIN))
    creds.chmod(0o600)
    path = BUILD / "config.yml"
    path.write_text(yaml.safe_dump({
        "site_id": "central", "data_dir": str(BUILD / "data"), "devices": [],
        "cassandra": {"hosts": ["127.0.0.1"], "keyspace": KEYSPACE, "consistency": "ONE",
                      "credentials_file": str(creds)}}))
    return path


def _fill(sites: int) -> Path:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster
    from cassandra.concurrent import execute_concurrent_with_args

    config = _config()
    subprocess.run([sys.executable, "-m", "hw_picollector", "db", "init", "--config",
                    str(config)], check=True, capture_output=True)
    cluster = Cluster(["127.0.0.1"], protocol_version=5,
                      auth_provider=PlainTextAuthProvider(ADMIN["username"], ADMIN["password"]))
    session = cluster.connect()
    for table in ("device_latest", "heartbeats", "measurements"):
        session.execute(f"TRUNCATE {KEYSPACE}.{table}")
    now = datetime.now(UTC).replace(tzinfo=None)
    rng = random.Random(7)
    latest = session.prepare(
        f"INSERT INTO {KEYSPACE}.device_latest (site_id, device_id, product_type, role, ts, "
        "power_w, host) VALUES (?, ?, ?, ?, ?, ?, ?)")
    beat = session.prepare(
        f"INSERT INTO {KEYSPACE}.heartbeats (host, day, ts, site_id, version, uptime_s, "
        "collector_active, backlog_rows, backlog_bytes, disk_free_mb, clock_synchronised, "
        "rows_synced) VALUES (?, ?, ?, ?, '0.1.0', ?, true, ?, ?, 20000, true, ?)")
    rows, beats, fleet = [], [], []
    for i in range(sites):
        site, host = f"S{i:05d}", f"pi-{i:05d}"
        # One site in 50 has gone quiet: the audit has something to find.
        age = rng.uniform(0, 300) if i % 50 else rng.uniform(2000, 5000)
        for d, (ptype, role) in enumerate((("HWE-P1", "grid"), ("HWE-KWH1", "production"))):
            rows.append((site, f"{i:06x}{d:06x}", ptype, role,
                         now - timedelta(seconds=age + d), rng.uniform(-3000, 3000), host))
        beats.append((host, now.date(), now - timedelta(seconds=age), site, 86400.0, 30, 5000,
                      300))
        fleet.append({"host": host, "site_id": site,
                      "devices": [f"{i:06x}{d:06x}" for d in range(2)], "reachable": False})
    execute_concurrent_with_args(session, latest, rows, concurrency=100)
    execute_concurrent_with_args(session, beat, beats, concurrency=100)
    cluster.shutdown()
    path = BUILD / f"fleet-{sites}.json"
    path.write_text(json.dumps({"sites": fleet}))
    return path


def _audit(fleet: Path, coverage_hours: int) -> tuple[float, dict]:
    out = BUILD / "reports"
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hw_picollector", "freshness", "--config", str(BUILD / "config.yml"),
         "--fleet", str(fleet), "--out-dir", str(out), "--coverage-hours", str(coverage_hours),
         "--no-fail"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"hwpc freshness failed: {result.stderr[-2000:]}")
    return wall, json.loads((out / "freshness-latest.json").read_text())


def _playbook_walls(runs: int = 3) -> tuple[int, list[float]] | None:
    """(hosts, wall times) of check_freshness.yml on the running demo fleet; None if down."""
    if not list((ROOT / "build" / "demo").glob("sim-*.pid")):
        return None
    hosts = len(list((ROOT / "inventories" / "demo" / "host_vars").iterdir()))
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "HWPC_DEMO_HOSTS": str(hosts)}
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "tests" / "harness" / "demo.sh"), "freshness",
                        "-e", "freshness_fail=false"], check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - t0)
    return hosts, walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--coverage-sites", type=int, default=100,
                        help="sites for the run with 24-hour coverage strips")
    args = parser.parse_args()

    fleet = _fill(args.sites)
    runs = [_audit(fleet, 0)[0] for _ in range(3)]
    wall, report = _audit(fleet, 0)
    runs.append(wall)
    summary = report["summary"]
    cov_fleet = _fill(args.coverage_sites)
    cov_wall, _ = _audit(cov_fleet, 24)
    play = _playbook_walls()
    result = {
        "sites": args.sites,
        "devices": 2 * args.sites,
        "central_only_wall_s": {"min": round(min(runs), 2), "max": round(max(runs), 2),
                                "runs": [round(r, 2) for r in runs]},
        "target_s": 10.0,
        "verdicts": {k: summary[k] for k in ("ok", "stale", "down", "lagging")},
        "coverage": {"sites": args.coverage_sites, "hours": 24, "wall_s": round(cov_wall, 2)},
        "check_freshness_yml": None if play is None else {
            "hosts": play[0], "wall_s": [round(w, 1) for w in play[1]]},
    }
    print(f"fleet audit, central only, {args.sites} sites / {2 * args.sites} devices: "
          f"{min(runs):.2f} to {max(runs):.2f} s per `hwpc freshness` (target ≤ 10 s); verdicts "
          f"{result['verdicts']}")
    print(f"with 24-hour coverage strips, {args.coverage_sites} sites: {cov_wall:.2f} s")
    print("check_freshness.yml on the demo fleet: " + (
        "demo not running (make demo, or HWPC_DEMO_HOSTS=10 make demo)" if play is None else
        f"{play[0]} hosts, {min(play[1]):.1f} to {max(play[1]):.1f} s"))
    out = ROOT / "reports" / "bench-freshness.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
