"""`hwpc freshness` (the deprecated alias: `hwpc audit`), end to end: read the fleet file, ask
Cassandra, judge every site, write ``freshness-latest.json`` and ``freshness-latest.html``,
print the table (or the JSON report: `FreshnessReport.to_json`, report.py). The CLI
(cli.py) calls `run`; the freshness role runs that command on the controller."""

from __future__ import annotations

import time
from pathlib import Path

from hw_picollector import files
from hw_picollector_controller.freshness import queries
from hw_picollector_controller.freshness.fleet import load_fleet
from hw_picollector_controller.freshness.judge import build_report
from hw_picollector_controller.freshness.model import Central, Thresholds
from hw_picollector_controller.freshness.render import render_html, render_table
from hw_picollector_controller.freshness.report import FreshnessReport


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # durable=False as before: a report each run rewrites whole; a lost one is made again
    files.replace_atomically(path, text, durable=False)


def write_reports(report: FreshnessReport, out_dir: Path) -> tuple[Path, Path]:
    json_path, html_path = out_dir / "freshness-latest.json", out_dir / "freshness-latest.html"
    write_atomic(json_path, report.to_json() + "\n")
    write_atomic(html_path, render_html(report))
    return json_path, html_path


def run(config_path: str, fleet_path: Path, out_dir: Path, th: Thresholds, *,
        coverage_hours: int, fail: bool, as_json: bool) -> int:
    from hw_picollector.cassandra_session import DatabaseError, connect
    from hw_picollector.config import load_config

    sites = load_fleet(fleet_path)
    config = load_config(config_path)
    if config.cassandra is None:
        raise ValueError(f"{config_path}: no cassandra section")
    now_ms = time.time_ns() // 1_000_000
    central: dict[str, Central] = {}
    central_error = None
    try:
        cluster, session = connect(config.cassandra)
    except DatabaseError as exc:
        central_error = str(exc)
    else:
        try:
            central = queries.query_central(session, config.cassandra.keyspace, sites,
                                            now_ms, coverage_hours=coverage_hours)
        except Exception as exc:  # the report is still written, with the local half
            central_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        finally:
            cluster.shutdown()
    report = build_report(sites, central, now_ms, th, coverage_hours=coverage_hours,
                          central_error=central_error)
    json_path, html_path = write_reports(report, out_dir)
    if as_json:
        print(report.to_json())
    else:
        print(render_table(report))
        print(f"report: {json_path.resolve()}\nhtml:   {html_path.resolve()}")
    return 0 if report.ok or not fail else 1

