"""`hwpc freshness`: the fleet freshness report (controller side).

Input: a fleet file written by playbooks/check_freshness.yml — per inventory host its site,
its devices and what `hwpc status --json` said (or that the host did not answer). Added here:
what Cassandra knows (`device_latest`, `heartbeats`, sample counts per hour), which is how a
Pi behind a household's NAT is still audited. Output: a verdict per site, a terminal table,
``freshness-latest.json`` and ``freshness-latest.html``.

One module per job, in the order a run goes through them:

- `model`: the shared vocabulary (thresholds, `SiteInput`, `Central`, `Heartbeat`, time
  helpers);
- `fleet`: the fleet file read and each Pi's status checked (`load_fleet`, `status_problem`);
- `report`: the report, a typed and versioned document (`FreshnessReport`, `report_version`
  2, `to_json`; `parse_report` reads versions 1 and 2 and refuses newer ones);
- `queries`: what Cassandra knows (`query_central`), the only database access;
- `judge`: the verdicts, pure (`judge` → `SiteReport`, `build_report` → `FreshnessReport`;
  the verdicts are described there);
- `render`: the terminal table and the HTML page of a report (`render_table`, `render_html`);
- `command`: `hwpc freshness` end to end, and the report files (`run`, `write_reports`).

The names below are the package's interface (cli.py and the tests import them from here).
"""

from __future__ import annotations

from hw_picollector_controller.freshness.command import run, write_atomic, write_reports
from hw_picollector_controller.freshness.fleet import load_fleet, status_problem
from hw_picollector_controller.freshness.judge import build_report, expected_samples, judge
from hw_picollector_controller.freshness.model import (
    DAY_MS,
    HOUR_MS,
    VERDICTS,
    Central,
    Heartbeat,
    SiteInput,
    Thresholds,
    hour_windows,
    iso,
    parse_iso,
)
from hw_picollector_controller.freshness.queries import query_central
from hw_picollector_controller.freshness.render import COLOURS, render_html, render_table
from hw_picollector_controller.freshness.report import (
    REPORT_VERSION,
    DayCoverage,
    DeviceReport,
    FreshnessReport,
    HourCoverage,
    ReportError,
    SiteReport,
    Summary,
    parse_report,
    report_version,
)

__all__ = [
    "COLOURS",
    "DAY_MS",
    "HOUR_MS",
    "REPORT_VERSION",
    "VERDICTS",
    "Central",
    "DayCoverage",
    "DeviceReport",
    "FreshnessReport",
    "Heartbeat",
    "HourCoverage",
    "ReportError",
    "SiteInput",
    "SiteReport",
    "Summary",
    "Thresholds",
    "build_report",
    "expected_samples",
    "hour_windows",
    "iso",
    "judge",
    "load_fleet",
    "parse_iso",
    "parse_report",
    "query_central",
    "render_html",
    "render_table",
    "report_version",
    "run",
    "status_problem",
    "write_atomic",
    "write_reports",
]
