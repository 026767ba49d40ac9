"""The status document `hwpc status --json` prints (status_document.py): its versions, its
parser, and the fleet audit in the middle of a rolling deploy.

Two tests compare exact text with checked-in snapshots in tests/unit/snapshots/: the JSON of
`hwpc status --json` for a fixed Pi (tests/unit/frozen_status.py) and the freshness table for
a fixed fleet. After a deliberate change of either output, regenerate them and review the
diff before committing:

    HWPC_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -c tests/pytest.ini \\
        tests/unit/test_status_document.py

(the run rewrites the files and fails, so that an update is never silent; run it again
without the variable to see it pass). tests/unit/fixtures/status/status-v1.json is not a
snapshot: it is what `hwpc status --json` printed for the same fixed Pi before the format
had a version (version 1), kept as it was, and is never regenerated.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from hw_picollector import cli, health, metrics
from hw_picollector.config import load_config
from hw_picollector_controller import freshness
from hw_picollector_controller.freshness import (
    Central,
    FreshnessReport,
    Heartbeat,
    Thresholds,
    iso,
)
from tests.unit import frozen_status
from tests.unit.frozen_status import KWH, NOW, P1

HERE = Path(__file__).parent
SNAPSHOTS = HERE / "snapshots"
STATUS_V1 = HERE / "fixtures" / "status" / "status-v1.json"
UPDATE_ENV = "HWPC_UPDATE_SNAPSHOTS"
# fresh within an hour, synced within 2000 s: the fixed Pi's two devices are then ok, or
# lagging where Cassandra lacks a row, and every verdict of the fleet below differs
TH = Thresholds(freshness_max_age_s=3600, sync_max_lag_s=2000, heartbeat_max_age_s=900)


def assert_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"{UPDATE_ENV}=1: {path} {'unchanged' if old == text else 'rewritten'}; "
                    f"review it, then run again without {UPDATE_ENV}")
    assert path.exists(), f"no snapshot {path}: run once with {UPDATE_ENV}=1 (module docstring)"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"{name} (snapshot)", f"{name} (now)"))
        pytest.fail(f"differs from {path} (if intended: {UPDATE_ENV}=1, see the module "
                    f"docstring):\n{diff}")


def printed_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> str:
    """What `hwpc status --json` prints for the fixed Pi."""
    config = frozen_status.freeze(tmp_path, monkeypatch)
    capsys.readouterr()
    assert cli.main(frozen_status.status_argv(config)) == 0
    return capsys.readouterr().out


def v1_text() -> str:
    return STATUS_V1.read_text(encoding="utf-8")


def as_version(text: str, version: Any) -> str:
    """A status text with ``"status_version": version`` as its first key, the rest as is
    (what the new hwpc prints for version 2: see test_version_2_is_version_1_plus_the_key)."""
    assert text.startswith("{\n")
    return '{\n  "status_version": ' + json.dumps(version) + ",\n" + text[2:]


# -- what `hwpc status --json` prints -------------------------------------------------------

def test_status_json_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert_snapshot("status.json", printed_status(tmp_path, monkeypatch, capsys))


def test_version_2_is_version_1_plus_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Every consumer of today's status keeps working: the same keys, in the same order, with
    the same values, and ``"status_version": 2`` first."""
    out = printed_status(tmp_path, monkeypatch, capsys)
    assert out == as_version(v1_text(), 2)
    printed = json.loads(out)
    assert next(iter(printed)) == "status_version" and printed.pop("status_version") == 2
    assert printed == json.loads(v1_text()) and list(printed) == list(json.loads(v1_text()))
    assert printed["version"] == "0.1.0", "the hwpc release keeps its key"


def test_the_text_status_and_the_metrics_read_the_document(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hw_picollector.status_document import StatusDocument, parse_status

    config = load_config(str(frozen_status.freeze(tmp_path, monkeypatch)))
    doc = health.status_document(config, coverage_hours=frozen_status.COVERAGE_HOURS)
    assert isinstance(doc, StatusDocument)
    assert parse_status(doc.to_dict()) == doc
    assert health.status(config, frozen_status.COVERAGE_HOURS) == doc.to_dict()
    text = health.render(doc)
    assert text == health.render(doc.to_dict())
    assert "collector: running, up 7200 s" in text
    assert f"{KWH}  HWE-KWH1" in text and "timeout: no answer within 2 s" in text
    scraped = generate_latest(metrics.registry(doc)).decode()
    assert scraped == generate_latest(metrics.registry(doc.to_dict())).decode()
    assert "hwpc_backlog_rows 93.0" in scraped
    assert 'hwpc_device_extras_dropped_since_start{product_type="HWE-KWH1",role="production",' \
           f'serial="{KWH}"}} 4.0' in scraped


def test_metrics_of_a_version_1_status_leave_out_what_it_does_not_say() -> None:
    from hw_picollector.status_document import parse_status

    doc = parse_status({"service_active": True, "poll_interval_s": 1.0,
                        "devices": [{"serial": P1, "last_ts": None}]})
    scraped = generate_latest(metrics.registry(doc)).decode()
    assert "hwpc_collector_up 1.0" in scraped
    assert "hwpc_backlog_rows" not in scraped and "hwpc_collector_uptime_seconds" not in scraped
    assert "hwpc_device_last_sample_timestamp_seconds{" not in scraped


# -- the parser -----------------------------------------------------------------------------

def test_version_1_and_version_2_read_into_the_same_document() -> None:
    from hw_picollector.status_document import StatusDocument, parse_status, status_version

    v1, v2 = json.loads(v1_text()), json.loads(as_version(v1_text(), 2))
    assert (status_version(v1), status_version(v2)) == (1, 2)
    doc = parse_status(v1)
    assert isinstance(doc, StatusDocument) and doc == parse_status(v2)
    assert parse_status(json.loads(as_version(v1_text(), 1))) == doc
    assert json.loads(doc.to_json()) == v2
    assert doc.hwpc_version == "0.1.0" and doc.devices[0].damaged_files[0].first_offset == 120
    assert [c.samples for c in doc.devices[0].coverage_hourly or ()] == [0, 56, 34]


def test_version_1_needs_only_what_the_audit_reads_version_2_every_key() -> None:
    from hw_picollector.status_document import StatusError, parse_status

    minimal = {"service_active": False, "poll_interval_s": 10,
               "devices": [{"serial": P1, "last_ts": None}], "clock_synchronised": None}
    doc = parse_status(minimal)
    assert doc.backlog_rows is None and doc.clock_synchronised is None
    with pytest.raises(StatusError, match=r"^site_id is missing$"):
        parse_status({"status_version": 2, **minimal})
    full = json.loads(as_version(v1_text(), 2))
    full["clock"] = None   # hwpc never writes null there
    with pytest.raises(StatusError, match=r"^clock: expected a string, got null$"):
        parse_status(full)
    full = json.loads(as_version(v1_text(), 2))
    del full["devices"][1]["damaged_files"]
    with pytest.raises(StatusError, match=r"^devices\[1\]\.damaged_files is missing$"):
        parse_status(full)
    del full["devices"][1]
    del full["devices"][0]["coverage_hourly"]   # only with --coverage-hours
    assert parse_status(full).devices[0].coverage_hourly is None


PAYLOAD = '"><script>alert(1)</script>'


@pytest.mark.parametrize(("path", "value", "message"), [
    (("status_version",), 99, "status_version 99: newer than this hwpc reads (1 to 2); "
                              "update hwpc where the status is read"),
    pytest.param(("status_version",), 10 ** 5000, "status_version: newer than this hwpc reads "
                 "(1 to 2); update hwpc where the status is read", id="status_version-huge"),
    (("status_version",), "2", "status_version: expected a whole number from 1 to 2, "
                               "got a string"),
    (("status_version",), 0, "status_version: expected a whole number from 1 to 2, "
                             "got a number"),
    (("status_version",), True, "status_version: expected a whole number from 1 to 2, "
                                "got a boolean"),
    (("devices", 0, "damaged_files", 0), PAYLOAD,
     "devices[0].damaged_files[0]: expected an object, got a string"),
    (("devices", 0, "damaged_files", 0, "lines"), PAYLOAD,
     "devices[0].damaged_files[0].lines: expected a whole number >= 0, got a string"),
    (("devices", 0, "coverage_hourly", 2, "samples"), -1,
     "devices[0].coverage_hourly[2].samples: expected a whole number >= 0, got a number"),
    (("devices", 1, "age_s"), PAYLOAD, "devices[1].age_s: expected a number, got a string"),
    pytest.param(("devices", 1, "age_s"), 10 ** 400,
                 "devices[1].age_s: expected a number, got a non-finite number",
                 id="age_s-beyond-float"),
    (("pid",), PAYLOAD, "pid: expected a whole number >= 0, got a string"),
    (("last_sync",), [PAYLOAD], "last_sync: expected an object, got an array"),
    (("now",), PAYLOAD, "now: expected an ISO 8601 time, got a string"),
])
def test_a_malformed_status_is_rejected_naming_the_key(path: tuple[Any, ...], value: Any,
                                                       message: str) -> None:
    from hw_picollector.status_document import StatusError, parse_status

    for version in (1, 2):
        st = json.loads(as_version(v1_text(), 2)) if version == 2 else json.loads(v1_text())
        *parents, last = path
        target = st
        for step in parents:
            target = target[step]
        target[last] = value
        with pytest.raises(StatusError) as caught:
            parse_status(st)
        assert str(caught.value) == message
        assert PAYLOAD not in str(caught.value), "messages name keys, never values"


# -- the audit of a fleet in the middle of a rolling deploy ---------------------------------

def central(site_id: str) -> Central:
    """What Cassandra knows: both devices synced (S1 is missing its KWH meter's rows, a
    "gone" site any heartbeat)."""
    latest = {P1: NOW - 20_000, KWH: NOW - 1_800_000}
    if site_id == "S1":
        del latest[KWH]
    hours = freshness.hour_windows(NOW, 3)
    return Central(
        latest=latest,
        heartbeat=None if site_id.endswith("gone") else Heartbeat(
            ts=iso(NOW - 30_000), uptime_s=7000.0, backlog_rows=12,
            collector_active=True, disk_free_mb=800, clock_synchronised=True),
        hourly={P1: {iso(h)[:13]: n for h, n in zip(hours, (0, 50, 30), strict=True)}},
        daily={P1: {iso(NOW)[:10]: 80}})


def fleet_file(tmp_path: Path, sites: list[dict[str, Any]]) -> Path:
    path = tmp_path / "fleet.json"
    entries = [{"host": f"pi{i}", "inventory_host": f"pi{i}", "site_id": f"S{i}",
                "devices": [P1, KWH], "reachable": True, "rc": 0, "stderr": "", **s}
               for i, s in enumerate(sites, start=1)]
    path.write_text(json.dumps({"sites": entries}), encoding="utf-8")
    return path


def audit(tmp_path: Path, sites: list[dict[str, Any]]) -> FreshnessReport:
    found = freshness.load_fleet(fleet_file(tmp_path, sites))
    return freshness.build_report(found, {s.site_id: central(s.site_id) for s in found},
                                  NOW, TH, coverage_hours=3)


def test_a_rolling_deploy_is_judged_as_if_every_pi_had_the_new_status(tmp_path: Path) -> None:
    """pi1 still runs the hwpc of before the version (its literal output), pi2 the new one:
    the report is the one of a fleet where both print version 2, and the one where both
    still print version 1."""
    old, new = v1_text(), as_version(v1_text(), 2)
    mixed = audit(tmp_path, [{"stdout": old}, {"stdout": new}])
    all_new = audit(tmp_path, [{"stdout": new}, {"stdout": new}])
    all_old = audit(tmp_path, [{"stdout": old}, {"stdout": old}])
    assert mixed == all_new == all_old
    assert [s.verdict for s in mixed.sites] == ["lagging", "ok"]
    assert mixed.sites[0].reasons == (f"{KWH}: fresh on the Pi, but nothing in Cassandra",)
    for entry in mixed.sites:   # what each Pi said, not its heartbeat's values
        assert (entry.backlog_rows, entry.uptime_s, entry.disk_free_mb) == (93, 7200.0, 1234)
        assert [d.device_state for d in entry.devices] == ["ok", "timeout"]
        assert [c.local for c in entry.devices[0].coverage_hourly] == [None, 56, 34]


@pytest.mark.parametrize("version", [3, 99, "2", None])
def test_an_unknown_status_version_is_a_named_malformed_status(tmp_path: Path,
                                                                version: Any) -> None:
    report = audit(tmp_path, [{"stdout": as_version(v1_text(), version)},
                              {"stdout": as_version(v1_text(), 2)}])
    bad, good = report.sites
    assert good.verdict == "ok"
    assert bad.verdict == "stale"
    assert bad.reasons[0].startswith("malformed status: status_version"), bad.reasons
    if version in (3, 99):
        assert bad.reasons[0] == (f"malformed status: status_version {version}: newer than "
                                     "this hwpc reads (1 to 2); update hwpc where the status "
                                     "is read")
    assert bad.backlog_rows == 12, "what the Pi said is dropped; its heartbeat stands in"
    assert "malformed status: status_version" in freshness.render_table(report)


def every_kind_of_site(tmp_path: Path) -> FreshnessReport:
    """The report of a fleet with every kind of site: the old status, the new one, a newer
    format, a value of the wrong kind, a failed `hwpc status`, no JSON, and two hosts that do
    not answer (one with a heartbeat, one without). Also the fleet of the report's snapshots
    (test_freshness_report.py)."""
    old, new = v1_text(), as_version(v1_text(), 2)
    wrong = json.loads(new)
    wrong["backlog_rows"] = "93"
    return audit(tmp_path, [
        {"stdout": old}, {"stdout": new}, {"stdout": as_version(old, 99)},
        {"stdout": json.dumps(wrong)},
        {"rc": 1, "stdout": "", "stderr": "hwpc: config error: /etc/hw-picollector/config.yml"},
        {"stdout": "Traceback (most recent call last):"},
        {"reachable": False}, {"reachable": False, "site_id": "S8-gone"}])


def test_freshness_table_snapshot(tmp_path: Path) -> None:
    report = every_kind_of_site(tmp_path)
    assert [s.verdict for s in report.sites] == [
        "lagging", "ok", "stale", "stale", "stale", "stale", "ok", "down"]
    assert_snapshot("freshness-table.txt", freshness.render_table(report) + "\n")
