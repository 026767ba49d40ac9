"""Damaged lines in the store against a real node: quarantined, and nothing else held back;
the heartbeat table upgraded in place with the counts it now carries."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hw_picollector import store
from hw_picollector.devices.canonical import columns
from tests.cassandra.conftest import central_rows, hwpc, local_rows, make_config, store_days

P1 = {"serial": "3c39e7100001", "product_type": "HWE-P1", "role": "grid",
      "address": "127.0.0.1:1", "api": "v1"}
SERIAL = P1["serial"]


def write_days(data: Path, days: dict[date, int]) -> list[Path]:
    """Whole seconds of a P1 meter's rows from 10:00 UTC, through the collector's writer."""
    paths = []
    for day, count in days.items():
        start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
        rows = ((start + 36_000_000 + i * 1000,
                 {"power_w": float(100 + i), "energy_import_kwh": 1000 + i / 8,
                  "voltage_l1_v": 230.1, "tariff": 2.0}) for i in range(count))
        store.write_history(data, SERIAL, columns("HWE-P1"), rows)
        paths.append(store.device_dir(data, SERIAL) / f"{day}.csv")
    return paths


def heartbeats(admin: Any, keyspace: str, host: str) -> list[Any]:
    today = datetime.now(UTC).date()
    return sorted(admin.execute(
        f"SELECT * FROM {keyspace}.heartbeats WHERE host = %s AND day IN (%s, %s)",
        (host, today - timedelta(days=1), today)), key=lambda b: b.ts, reverse=True)


def test_damaged_lines_are_quarantined_and_the_rest_lands_once(tmp_path: Path, admin: Any,
                                                               keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1])
    hwpc("db", "init", "--config", str(config))
    data = tmp_path / "data"
    first = datetime.now(UTC).date() - timedelta(days=3)
    day_file, later = write_days(data, {first: 50, first + timedelta(days=1): 30})
    clean = tmp_path / "clean"
    shutil.copytree(data, clean)  # the good rows only: what Cassandra must hold
    # after the first row: a row whose extra cell is 200 KiB, then a line of garbage
    lines = day_file.read_bytes().splitlines(keepends=True)
    header = lines[0].decode().rstrip("\n").split(",")
    ts = store.format_ts(store.parse_ts(lines[1][:24].decode()) + 500)
    blob = json.dumps({f"k{i:06d}": 0.5 for i in range(16_000)}, separators=(",", ":"))
    assert len(blob) > 200 << 10
    huge = (ts + "," * (len(header) - 1) + '"' + blob.replace('"', '""') + '"\n').encode()
    garbage = b"\x00\x00garbage \xff, not a row\n"
    day_file.write_bytes(b"".join([*lines[:2], huge, garbage, *lines[2:]]))
    huge_at = len(lines[0]) + len(lines[1])
    garbage_at = huge_at + len(huge)
    sizes = {p.stem: p.stat().st_size for p in (day_file, later)}  # closed days get compressed

    out = hwpc("sync", "--config", str(config), "--once", "--no-progress")
    expected = local_rows(clean, "SITE01")
    assert len(expected) == 80
    assert central_rows(admin, keyspace, "SITE01", [SERIAL], store_days(data)) == expected
    # one short log line per quarantined line
    said = [x for x in out.stderr.splitlines() if "quarantined" in x]
    assert len(said) == 2 and all(len(x) < 400 for x in said), said
    assert len(out.stderr) < 4000

    records = [json.loads(x) for p in sorted((data / "quarantine").rglob("*.jsonl"))
               for x in p.read_text().splitlines()]
    assert sorted((r["file"], r["offset"]) for r in records) == [
        (f"measurements/{SERIAL}/{day_file.name}", huge_at),
        (f"measurements/{SERIAL}/{day_file.name}", garbage_at)]
    raws = {r["offset"]: (r["line"].encode() if "line" in r else base64.b64decode(r["line_b64"]))
            for r in records}
    assert raws == {huge_at: huge, garbage_at: garbage}
    for day, size in sizes.items():
        cp = json.loads((data / "sync" / SERIAL / f"{day}.json").read_text())
        assert cp["complete"] and cp["offset"] == size
    assert not list(data.glob("measurements/*/*.csv"))  # both compressed: fully synced

    status = json.loads(hwpc("status", "--config", str(config), "--json").stdout)
    assert status["lines_quarantined"] == 2 and status["backlog_rows"] == 0
    beat = heartbeats(admin, keyspace, "host-site01")[0]
    assert (beat.lines_quarantined, beat.rows_synced, beat.last_error) == (2, 80, None)
    assert beat.samples_dropped == 0 and beat.extras_dropped == 0

    again = hwpc("sync", "--config", str(config), "--once", "--no-progress")
    assert "synced 0 rows" in again.stderr and "quarantined" not in again.stderr
    assert len(list((data / "quarantine").rglob("*.jsonl"))) == 1
    assert sum(len(p.read_text().splitlines())
               for p in (data / "quarantine").rglob("*.jsonl")) == 2
    beats = heartbeats(admin, keyspace, "host-site01")
    assert [(b.rows_synced, b.lines_quarantined) for b in beats] == [(0, 2), (80, 2)]
    assert central_rows(admin, keyspace, "SITE01", [SERIAL], store_days(data)) == expected


OLD_HEARTBEATS = (
    "CREATE TABLE {ks}.heartbeats (\n"
    "  host text, day date, ts timestamp, site_id text, version text,\n"
    "  uptime_s double, collector_active boolean, backlog_rows bigint,\n"
    "  backlog_bytes bigint, disk_free_mb bigint, clock_synchronised boolean,\n"
    "  rows_synced bigint, last_error text,\n"
    "  PRIMARY KEY ((host, day), ts)\n"
    ") WITH CLUSTERING ORDER BY (ts DESC)")


def test_init_upgrades_the_heartbeats_table_in_place(tmp_path: Path, admin: Any,
                                                     keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1])
    admin.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    admin.execute(OLD_HEARTBEATS.format(ks=keyspace))
    today = datetime.now(UTC).date()
    admin.execute(f"INSERT INTO {keyspace}.heartbeats (host, day, ts, rows_synced) "
                  "VALUES ('host-site01', %s, '2020-01-01 00:00:00+0000', 5)", (today,))
    changes = hwpc("db", "init", "--config", str(config)).stdout
    for column in ("samples_dropped", "extras_dropped", "lines_quarantined"):
        assert f"added column {keyspace}.heartbeats.{column}" in changes
    assert "ok" in hwpc("db", "check", "--config", str(config)).stdout
    assert hwpc("db", "init", "--config", str(config)).stdout.strip() == "unchanged"
    write_days(tmp_path / "data", {today - timedelta(days=1): 5})
    hwpc("sync", "--config", str(config), "--once", "--no-progress")
    new, old = heartbeats(admin, keyspace, "host-site01")
    assert (new.rows_synced, new.samples_dropped, new.extras_dropped,
            new.lines_quarantined) == (5, 0, 0, 0)
    assert (old.rows_synced, old.lines_quarantined) == (5, None)  # the row before: kept


def test_a_database_not_yet_upgraded_still_gets_heartbeats(tmp_path: Path, admin: Any,
                                                           keyspace: str) -> None:
    """A Pi updated before `hwpc db init` ran: its sync works and its heartbeat is written
    with the columns the table has."""
    config = make_config(tmp_path, keyspace, [P1])
    hwpc("db", "init", "--config", str(config))
    for column in ("samples_dropped", "extras_dropped", "lines_quarantined"):
        admin.execute(f"ALTER TABLE {keyspace}.heartbeats DROP {column}")
    write_days(tmp_path / "data", {datetime.now(UTC).date() - timedelta(days=1): 5})
    out = hwpc("sync", "--config", str(config), "--once", "--no-progress")
    assert "hwpc db init" in out.stderr
    (beat,) = heartbeats(admin, keyspace, "host-site01")
    assert (beat.rows_synced, beat.last_error) == (5, None)
