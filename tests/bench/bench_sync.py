"""Benchmark: `hwpc sync` against `cqlsh COPY FROM` loading the same rows into a twin table.

A backlog of 2 devices x 2 days at 1 Hz (345,600 rows) into an empty table on the local
node, then the same rows through cqlsh's COPY FROM (cqlsh from PyPI, pinned) into a twin
table. Prints and writes reports/bench-sync.json: rows/s of each, the ratio, and the peak
RSS of the sync. Figures, not pass/fail. Needs the node up (`make cassandra-up`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from hw_picollector.store import parse_ts
from hw_picollector.tables import MEASUREMENT_COLUMNS, TABLES

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "bench-sync"
BENCH_VENV = ROOT / "build" / "bench-venv"
CQLSH = "cqlsh==6.2.2"
KEYSPACE = "bench"


def cqlsh_bin() -> Path:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    if not (BENCH_VENV / "bin" / "cqlsh").exists():
        subprocess.run([str(python), "-m", "pip", "install", "-q", CQLSH], check=True)
    return BENCH_VENV / "bin" / "cqlsh"


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, exit code) of a command, RSS polled from /proc."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.1)
    _, err = proc.communicate()
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return time.monotonic() - started, peak / 1024, proc.returncode


def copy_csv(data_dir: Path, out: Path) -> tuple[list[str], int]:
    """The store's rows as a CSV cqlsh can load (same columns, its timestamp format)."""
    cols = ["site_id", "device_id", "day", "ts"]
    rows = 0
    present: list[str] = []
    files = sorted((data_dir / "measurements").glob("*/*.csv*"))
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as fh:
            header = next(csv.reader(fh))
        present += [c for c in header[1:-1] if c in MEASUREMENT_COLUMNS and c not in present]
    cols += present
    with out.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(cols)
        for path in files:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="") as fh:
                for rec in csv.DictReader(fh):
                    ts = datetime.fromtimestamp(parse_ts(rec["ts"]) / 1000, UTC)
                    writer.writerow(["BENCH", path.parent.name, path.name[:10],
                                     ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+0000",
                                     *(rec.get(c, "") for c in present)])
                    rows += 1
    return cols, rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench-sync.json"))
    parser.add_argument("--keyspace", default=KEYSPACE,
                        help="keyspace to (re)create (default: %(default)s)")
    parser.add_argument("--build", default=str(BUILD), help="scratch directory")
    parser.add_argument("--drop", action="store_true", help="drop the keyspace when done")
    args = parser.parse_args()
    build = Path(args.build)
    keyspace = args.keyspace
    subprocess.run(["rm", "-rf", str(build)], check=True)
    build.mkdir(parents=True)
    creds = build / "creds.json"
    creds.write_text(json.dumps({"username": "cassandra", "password": "cassandra"}))
    config = build / "config.yml"
    config.write_text(yaml.safe_dump({
        "site_id": "BENCH", "data_dir": str(build / "data"), "clock_sync": "trust",
        "mdns": False, "host": "bench",
        "devices": [{"serial": "3c39e7c00001", "product_type": "HWE-P1", "role": "grid",
                     "address": "127.0.0.1:1"},
                    {"serial": "3c39e7c00002", "product_type": "HWE-KWH1",
                     "role": "production", "address": "127.0.0.1:2"}],
        "cassandra": {"hosts": ["127.0.0.1"], "keyspace": keyspace, "consistency": "ONE",
                      "credentials_file": str(creds)}}))
    hwpc = [sys.executable, "-m", "hw_picollector"]
    end = (datetime.now(UTC) - timedelta(days=1)).date()
    subprocess.run([*hwpc, "simulate-history", "--config", str(config), "--days",
                    str(args.days), "--end", end.isoformat()], check=True)
    cqlsh = cqlsh_bin()
    auth = ["-u", "cassandra", "-p", "cassandra", "127.0.0.1", "9042"]
    subprocess.run([str(cqlsh), *auth, "-e", f"DROP KEYSPACE IF EXISTS {keyspace}"], check=True)
    subprocess.run([*hwpc, "db", "init", "--config", str(config)], check=True,
                   stdout=subprocess.DEVNULL)
    twin = TABLES["measurements"].replace("{ks}.measurements", f"{keyspace}.measurements_copy")
    twin = twin.replace("{{", "{").replace("}}", "}")
    subprocess.run([str(cqlsh), *auth, "-e", twin], check=True)

    try:
        sync_s, sync_rss, code = run_measured([*hwpc, "sync", "--config", str(config),
                                               "--once", "--no-progress"])
        assert code == 0, "sync failed"
        cols, rows = copy_csv(build / "data", build / "copy.csv")
        print(f"hwpc sync: {rows / sync_s:.0f} rows/s ({sync_s:.1f} s, peak RSS "
              f"{sync_rss:.1f} MB); now COPY FROM", flush=True)
        copy_cmd = (f"COPY {keyspace}.measurements_copy ({', '.join(cols)}) FROM "
                    f"'{build / 'copy.csv'}' WITH HEADER = true")
        copy_s, _, code = run_measured([str(cqlsh), *auth, "--request-timeout", "60", "-e",
                                        copy_cmd])
        assert code == 0, "COPY FROM failed"
    finally:
        if args.drop:  # a shared node: give the memory back whatever happened
            subprocess.run([str(cqlsh), *auth, "-e", f"DROP KEYSPACE IF EXISTS {keyspace}"],
                           check=False)
    result = {"rows": rows, "days": args.days, "devices": 2,
              "sync": {"seconds": round(sync_s, 1), "rows_per_s": round(rows / sync_s),
                       "peak_rss_mb": round(sync_rss, 1)},
              "copy_from": {"tool": CQLSH, "seconds": round(copy_s, 1),
                            "rows_per_s": round(rows / copy_s)},
              "ratio_sync_to_copy": round(copy_s / sync_s, 2)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{rows} rows (2 devices x {args.days} days at 1 Hz) into an empty table")
    print(f"hwpc sync:      {result['sync']['rows_per_s']:>8} rows/s  "
          f"({sync_s:.1f} s, peak RSS {sync_rss:.1f} MB)")
    print(f"cqlsh COPY FROM: {result['copy_from']['rows_per_s']:>7} rows/s  ({copy_s:.1f} s)")
    print(f"ratio: {result['ratio_sync_to_copy']} x  (written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
