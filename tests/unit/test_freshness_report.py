"""The freshness report as a document (freshness/report.py): what `hwpc freshness` writes to
``freshness-latest.json``, its versions, its parser.

Two tests compare exact text with checked-in snapshots in tests/unit/snapshots/: the JSON and
the HTML of the report of a fixed fleet (`every_kind_of_site` of test_status_document.py,
which also makes the table snapshot). After a deliberate change of either, regenerate them
and review the diff before committing:

    HWPC_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -c tests/pytest.ini \\
        tests/unit/test_freshness_report.py

(the run rewrites the files and fails, so that an update is never silent; run it again
without the variable to see it pass). tests/unit/fixtures/freshness/report-v1.json is not a
snapshot: it is what `hwpc freshness` wrote for the same fleet before the report had a format
version (version 1; written by the code of that time, kept as is, never regenerated).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from hw_picollector.catalog import Verdict
from hw_picollector_controller import freshness
from hw_picollector_controller.freshness import (
    REPORT_VERSION,
    FreshnessReport,
    ReportError,
    SiteInput,
    parse_report,
    report_version,
)
from tests.unit.frozen_status import NOW
from tests.unit.test_status_document import TH, assert_snapshot, every_kind_of_site

REPORT_V1 = Path(__file__).parent / "fixtures" / "freshness" / "report-v1.json"
PAYLOAD = '"><script>alert(1)</script>'


def fixed_report(tmp_path: Path) -> FreshnessReport:
    """The fixed fleet's report, from a fixed release (the report names the one it ran)."""
    return dataclasses.replace(every_kind_of_site(tmp_path), hwpc_version="0.1.0")


def v1_text() -> str:
    return REPORT_V1.read_text(encoding="utf-8")


def as_version(text: str, version: Any) -> str:
    """A report text with ``"report_version": version`` as its first key, the rest as is."""
    assert text.startswith("{\n")
    return '{\n  "report_version": ' + json.dumps(version) + ",\n" + text[2:]


def written(report: FreshnessReport, tmp_path: Path) -> tuple[str, str]:
    """The JSON and HTML files `hwpc freshness` writes for ``report``."""
    json_path, html_path = freshness.write_reports(report, tmp_path / "reports")
    return json_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")


# -- what `hwpc freshness` writes -----------------------------------------------------------

def test_report_json_snapshot(tmp_path: Path) -> None:
    text, _ = written(fixed_report(tmp_path), tmp_path)
    assert_snapshot("freshness-report.json", text)


def test_report_html_snapshot(tmp_path: Path) -> None:
    _, page = written(fixed_report(tmp_path), tmp_path)
    assert_snapshot("freshness-report.html", page)


def test_version_2_is_version_1_plus_the_key(tmp_path: Path) -> None:
    """Every reader of today's report keeps working (tests/fleet, tests/bench read it by key):
    the same keys, in the same order, with the same values, and ``"report_version": 2``
    first."""
    report = fixed_report(tmp_path)
    text, _ = written(report, tmp_path)
    assert text == as_version(v1_text(), 2)
    assert text == report.to_json() + "\n"
    printed = json.loads(text)
    assert next(iter(printed)) == "report_version" and printed.pop("report_version") == 2
    assert printed == json.loads(v1_text()) and list(printed) == list(json.loads(v1_text()))
    assert printed["version"] == "0.1.0", "the hw-picollector release keeps its key"


def test_the_typed_report_reads_as_it_renders(tmp_path: Path) -> None:
    report = fixed_report(tmp_path)
    assert [s.verdict for s in report.sites] == [
        Verdict.LAGGING, Verdict.OK, Verdict.STALE, Verdict.STALE, Verdict.STALE,
        Verdict.STALE, Verdict.OK, Verdict.DOWN]
    assert report.summary.count(Verdict.STALE) == 4 and report.ok is False
    s1 = report.sites[0]
    assert (s1.backlog_rows, s1.uptime_s, s1.disk_free_mb) == (93, 7200.0, 1234)
    p1 = s1.devices[0]
    assert [(c.expected, c.local, c.central) for c in p1.coverage_hourly] == [
        (3600, None, None), (3600, 56, 50), (2000, 34, 30)]
    assert [(c.day, c.samples, c.coverage) for c in p1.coverage_daily] == [
        ("2026-11-26", 80, 0.0016)]
    gone = report.sites[-1]
    assert gone.heartbeat_ts is None and gone.service_active is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.ok = True  # type: ignore[misc]


# -- the parser -----------------------------------------------------------------------------

def test_version_1_and_version_2_read_into_the_same_report(tmp_path: Path) -> None:
    report = fixed_report(tmp_path)
    v1, v2 = json.loads(v1_text()), json.loads(as_version(v1_text(), 2))
    assert (report_version(v1), report_version(v2)) == (1, 2)
    assert parse_report(v1) == parse_report(v2) == report
    assert parse_report(json.loads(as_version(v1_text(), 1))) == report
    assert parse_report(v1).to_json() + "\n" == as_version(v1_text(), 2)


def test_a_version_1_report_renders_as_it_did(tmp_path: Path) -> None:
    """A report read back from a file (of either version) shows the very table and page."""
    report = fixed_report(tmp_path)
    _, page = written(report, tmp_path)
    old = parse_report(json.loads(v1_text()))
    assert freshness.render_html(old) == page
    assert freshness.render_table(old) == freshness.render_table(report)


def _central_down(sites: list[SiteInput]) -> FreshnessReport:
    return freshness.build_report(sites, {}, NOW, TH, coverage_hours=0,
                                  central_error="NoHostAvailable: 127.0.0.1:9042")


@pytest.mark.parametrize("make", [
    pytest.param(fixed_report, id="every-kind-of-site"),
    pytest.param(lambda tmp_path: _central_down([]), id="no-site-no-database"),
    pytest.param(lambda tmp_path: _central_down([SiteInput(
        host="pi1", site_id="S1", devices=["aa01"], reachable=False, status=None)]),
        id="no-coverage-no-database"),
])
def test_round_trip(tmp_path: Path, make: Any) -> None:
    report = make(tmp_path)
    text = report.to_json()
    again = parse_report(json.loads(text))
    assert again == report
    assert again.to_json() == text
    assert json.loads(text)["report_version"] == REPORT_VERSION == 2


def test_keys_it_does_not_know_are_ignored() -> None:
    v2 = json.loads(as_version(v1_text(), 2))
    expected = parse_report(v2)
    v2["written_by"] = "a later hwpc"
    v2["sites"][0]["devices"][0]["coverage_hourly"][0]["note"] = None
    assert parse_report(v2) == expected


@pytest.mark.parametrize(("version", "message"), [
    (3, "report_version 3: newer than this hwpc reads (1 to 2); update hwpc where the report "
        "is read"),
    (99, "report_version 99: newer than this hwpc reads (1 to 2); update hwpc where the "
         "report is read"),
    pytest.param(10 ** 5000, "report_version: newer than this hwpc reads (1 to 2); update "
                 "hwpc where the report is read", id="huge"),
    ("2", "report_version: expected a whole number from 1 to 2, got a string"),
    (0, "report_version: expected a whole number from 1 to 2, got a number"),
    (True, "report_version: expected a whole number from 1 to 2, got a boolean"),
    (None, "report_version: expected a whole number from 1 to 2, got null"),
])
def test_a_newer_or_unknown_version_is_refused_naming_it(version: Any, message: str) -> None:
    obj = json.loads(v1_text())
    obj["report_version"] = version
    with pytest.raises(ReportError) as caught:
        parse_report(obj)
    assert str(caught.value) == message
    with pytest.raises(ReportError, match=r"^report_version"):
        report_version(obj)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("generated_ts",), PAYLOAD, "generated_ts: expected an ISO 8601 time, got a string"),
    (("version",), 1, "version: expected a string, got a number"),
    (("thresholds", "sync_max_lag_s"), PAYLOAD,
     "thresholds.sync_max_lag_s: expected a number, got a string"),
    (("thresholds",), [PAYLOAD], "thresholds: expected an object, got an array"),
    (("central_error",), [PAYLOAD], "central_error: expected a string, got an array"),
    (("summary", "ok"), -1, "summary.ok: expected a whole number >= 0, got a number"),
    (("ok",), "false", "ok: expected a boolean, got a string"),
    (("sites",), {"S1": PAYLOAD}, "sites: expected an array, got an object"),
    (("sites", 4), PAYLOAD, "sites[4]: expected an object, got a string"),
    (("sites", 0, "reachable"), None, "sites[0].reachable: expected a boolean, got null"),
    (("sites", 3, "verdict"), PAYLOAD,
     "sites[3].verdict: expected one of ok, lagging, stale, down, got a string"),
    (("sites", 3, "reasons", 1), 7, "sites[3].reasons[1]: expected a string, got a number"),
    (("sites", 6, "heartbeat_age_s"), float("nan"),
     "sites[6].heartbeat_age_s: expected a number, got a non-finite number"),
    pytest.param(("sites", 0, "uptime_s"), 10 ** 400,
                 "sites[0].uptime_s: expected a number, got a non-finite number",
                 id="an-integer-beyond-any-float"),
    (("sites", 6, "heartbeat_ts"), PAYLOAD,
     "sites[6].heartbeat_ts: expected an ISO 8601 time, got a string"),
    (("sites", 0, "backlog_rows"), 9.5,
     "sites[0].backlog_rows: expected a whole number >= 0, got a number"),
    (("sites", 0, "devices", 1, "status"), "LAGGING",
     "sites[0].devices[1].status: expected one of ok, lagging, stale, down, got a string"),
    (("sites", 0, "devices", 0, "coverage_hourly", 2, "central"), PAYLOAD,
     "sites[0].devices[0].coverage_hourly[2].central: expected a whole number >= 0, "
     "got a string"),
    (("sites", 0, "devices", 0, "coverage_daily", "2026-11-26"), [PAYLOAD],
     "sites[0].devices[0].coverage_daily.2026-11-26: expected an object, got an array"),
    (("sites", 0, "devices", 0, "coverage_daily", "2026-11-26", "coverage"), PAYLOAD,
     "sites[0].devices[0].coverage_daily.2026-11-26.coverage: expected a number, "
     "got a string"),
    (("sites", 0, "devices", 0, "coverage_daily", PAYLOAD), {},
     "sites[0].devices[0].coverage_daily: expected days (YYYY-MM-DD) as keys, got another "
     "key"),
])
def test_a_bad_value_is_refused_naming_the_key(path: tuple[Any, ...], value: Any,
                                               message: str) -> None:
    for version in (1, 2):
        obj = json.loads(as_version(v1_text(), 2) if version == 2 else v1_text())
        *parents, last = path
        target = obj
        for step in parents:
            target = target[step]
        target[last] = value
        with pytest.raises(ReportError) as caught:
            parse_report(obj)
        assert str(caught.value) == message
        assert PAYLOAD not in str(caught.value), "messages name keys, never values"


@pytest.mark.parametrize("path", [
    ("summary",), ("thresholds", "heartbeat_max_age_s"), ("sites", 2, "host"),
    ("sites", 7, "heartbeat_ts"), ("sites", 1, "devices", 0, "coverage_daily"),
    ("sites", 1, "devices", 1, "coverage_hourly", 0, "local")])
def test_a_missing_key_is_refused_naming_it(path: tuple[Any, ...]) -> None:
    """Both versions have every key: the report has been written whole since the first
    release (null where a value is not known, never left out)."""
    for text in (v1_text(), as_version(v1_text(), 2)):
        obj = json.loads(text)
        *parents, last = path
        target = obj
        for step in parents:
            target = target[step]
        del target[last]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        with pytest.raises(ReportError) as caught:
            parse_report(obj)
        assert str(caught.value) == f"{where.lstrip('.')} is missing"


@pytest.mark.parametrize("obj", [[], "report", None, 2])
def test_not_an_object_is_refused(obj: Any) -> None:
    with pytest.raises(ReportError, match=r"^the report: expected an object, got "):
        parse_report(obj)


def test_parsing_never_changes_its_input() -> None:
    obj = json.loads(v1_text())
    before = copy.deepcopy(obj)
    parse_report(obj)
    assert obj == before
