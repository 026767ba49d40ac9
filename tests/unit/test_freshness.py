"""Verdicts, coverage and rendering of the fleet freshness report (pure logic, no sockets)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from hw_picollector import health
from hw_picollector.catalog import Verdict
from hw_picollector_controller import freshness
from hw_picollector_controller.freshness import (
    Central,
    Heartbeat,
    SiteInput,
    Summary,
    Thresholds,
    iso,
)

NOW = 1_795_000_000_000 - 1_795_000_000_000 % 3_600_000 + 1_800_000  # half past an hour
TH = Thresholds(freshness_max_age_s=60, sync_max_lag_s=120, heartbeat_max_age_s=300)


def status(*devices: tuple[str, float | None], active: bool = True, now: int = NOW) -> dict:
    return {
        "service_active": active, "uptime_s": 1234.0, "backlog_rows": 7,
        "last_sync_ts": iso(now - 30_000), "disk_free_mb": 900, "clock_synchronised": True,
        "poll_interval_s": 1.0,
        "devices": [{"serial": s, "last_ts": None if age is None else iso(now - int(age * 1000)),
                     "state": "ok"} for s, age in devices],
    }


def central(latest: dict[str, float] | None = None, beat_age: float | None = 10) -> Central:
    return Central(
        latest={s: NOW - int(a * 1000) for s, a in (latest or {}).items()},
        heartbeat=None if beat_age is None else Heartbeat(
            ts=iso(NOW - int(beat_age * 1000)), uptime_s=99.0, backlog_rows=3,
            collector_active=True, disk_free_mb=800, clock_synchronised=True),
        hourly={}, daily={})


def site(reachable: bool = True, st: dict | None = None, devices: tuple[str, ...] = ("aa01",),
         error: str | None = None) -> SiteInput:
    return SiteInput(host="pi1", site_id="S1", devices=list(devices), reachable=reachable,
                     status=st, error=error)


def test_fresh_everywhere_is_ok():
    e = freshness.judge(site(st=status(("aa01", 2))), central({"aa01": 40}), NOW, TH)
    assert e.verdict == "ok"
    assert e.reasons == ()
    d = e.devices[0]
    assert (d.status, d.age_s, d.sync_lag_s) == ("ok", 2.0, 40.0)
    assert e.backlog_rows == 7 and e.uptime_s == 1234.0 and e.service_active is True


def test_old_local_sample_is_stale_and_named():
    e = freshness.judge(site(st=status(("aa01", 61), active=False)), central({"aa01": 61}),
                        NOW, TH)
    assert e.verdict == "stale"
    assert e.service_active is False
    assert "aa01: newest local sample 61 s old (max 60)" in e.reasons


def test_device_without_any_local_sample_is_stale():
    e = freshness.judge(site(st=status(("aa01", None))), central({}), NOW, TH)
    assert e.verdict == "stale"
    assert e.reasons == ("aa01: no local sample",)


def test_fresh_on_pi_but_old_in_cassandra_is_lagging():
    e = freshness.judge(site(st=status(("aa01", 1))), central({"aa01": 121}), NOW, TH)
    assert e.verdict == "lagging"
    assert e.devices[0].status == "lagging"
    assert "newest central sample 121 s old (max 120)" in e.reasons[0]


def test_fresh_on_pi_and_nothing_in_cassandra_is_lagging():
    e = freshness.judge(site(st=status(("aa01", 1))), central(), NOW, TH)
    assert e.verdict == "lagging"
    assert "nothing in Cassandra" in e.reasons[0]


def test_stale_wins_over_lagging():
    st = status(("aa01", 1), ("aa02", 500))
    e = freshness.judge(site(st=st, devices=("aa01", "aa02")), central({"aa01": 500}), NOW, TH)
    assert [d.status for d in e.devices] == ["lagging", "stale"]
    assert e.verdict == "stale"


def test_unreachable_without_recent_heartbeat_is_down():
    e = freshness.judge(site(reachable=False), central({"aa01": 5}, beat_age=301), NOW, TH)
    assert e.verdict == "down"
    assert "newest heartbeat is 301 s old (max 300)" in e.reasons[0]
    e = freshness.judge(site(reachable=False), central({"aa01": 5}, beat_age=None), NOW, TH)
    assert e.verdict == "down"
    assert "never sent a heartbeat" in e.reasons[0]


def test_unreachable_with_heartbeat_is_judged_from_central_data():
    e = freshness.judge(site(reachable=False), central({"aa01": 30}, beat_age=20), NOW, TH)
    assert e.verdict == "ok"
    assert e.devices[0].last_local_ts is None
    assert e.service_active is True and e.backlog_rows == 3  # from the heartbeat
    assert "judged from Cassandra" in e.reasons[0]
    e = freshness.judge(site(reachable=False), central({"aa01": 90}, beat_age=20), NOW, TH)
    assert e.verdict == "stale"
    assert "aa01: newest central sample 90 s old (max 60)" in e.reasons


def test_reachable_host_whose_status_failed_is_stale_with_the_error():
    e = freshness.judge(site(st=None, error="hwpc status exited 1: config error"),
                        central({"aa01": 5}), NOW, TH)
    assert e.verdict == "stale"
    assert e.reasons[0] == "hwpc status exited 1: config error"


def test_devices_seen_only_centrally_are_reported_too():
    e = freshness.judge(site(st=status(("aa01", 1))), central({"aa01": 5, "bb02": 5}), NOW, TH)
    assert [d.serial for d in e.devices] == ["aa01", "bb02"]
    assert e.devices[1].status == "stale"  # nothing local for a device the Pi lacks


def test_hourly_coverage_expected_counts_and_local_central_values():
    st = status(("aa01", 1))
    hours = freshness.hour_windows(NOW, 3)
    st["devices"][0]["coverage_hourly"] = [{"hour": iso(h)[:13], "samples": 3000}
                                           for h in hours]
    c = central({"aa01": 5})
    c.hourly = {"aa01": {iso(hours[0])[:13]: 3600, iso(hours[2])[:13]: 1700}}
    day = iso(NOW)[:10]
    c.daily = {"aa01": {day: 5400}}
    e = freshness.judge(site(st=st), c, NOW, TH, coverage_hours=3)
    cov = e.devices[0].coverage_hourly
    assert [x.expected for x in cov] == [3600, 3600, 1800]   # the current hour: 30 min
    assert [x.local for x in cov] == [3000, 3000, 3000]
    assert [x.central for x in cov] == [3600, None, 1700]
    c.hourly = {"aa01": {iso(hours[1])[:13]: 0, iso(hours[2])[:13]: 1700}}
    cov = freshness.judge(site(st=st), c, NOW, TH, coverage_hours=3).devices[0].coverage_hourly
    assert [x.central for x in cov] == [None, None, 1700], "before the first sample: no data"
    seconds_today = (NOW % 86_400_000) / 1000
    (daily,) = e.devices[0].coverage_daily
    assert daily.day == day
    assert daily.expected == round(seconds_today)
    assert daily.coverage == pytest.approx(min(1.0, 5400 / seconds_today), abs=1e-4)


def test_report_summary_table_and_html(tmp_path: Path):
    sites = [site(st=status(("aa01", 1))),
             SiteInput(host="pi2", site_id="S2<x>", devices=["bb01"], reachable=False,
                       status=None)]
    cen = {"S1": central({"aa01": 10}), "S2<x>": central({}, beat_age=None)}
    report = freshness.build_report(sites, cen, NOW, TH, coverage_hours=24)
    assert report.summary == Summary(sites=2, ok=1, lagging=0, stale=0, down=1)
    assert report.ok is False
    table = freshness.render_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["SITE", "HOST", "VERDICT"]
    assert any(line.startswith("S1 ") and " ok " in line for line in lines)
    assert any(line.startswith("S2<x>") and "DOWN" in line for line in lines)
    assert "2 sites: 1 ok, 0 lagging, 0 stale, 1 down" in table
    json_path, html_path = freshness.write_reports(report, tmp_path / "reports")
    written = json.loads(json_path.read_text())
    assert written["report_version"] == 2 and written["sites"][1]["verdict"] == "down"
    assert freshness.parse_report(written) == report
    page = html_path.read_text()
    assert "S2&lt;x&gt;" in page and "S2<x>" not in page
    assert page.count("<table class=strip>") == 2  # one strip pair per device
    assert not list((tmp_path / "reports").glob(".*tmp"))


def test_json_report_has_the_contract_fields():
    report = freshness.build_report([site(st=status(("aa01", 1)))],
                                    {"S1": central({"aa01": 10})}, NOW, TH).to_dict()
    assert report["report_version"] == 2
    e = report["sites"][0]
    for key in ("site_id", "host", "reachable", "service_active", "devices", "backlog_rows",
                "last_sync_ts", "uptime_s", "verdict"):
        assert key in e
    for key in ("serial", "last_local_ts", "last_central_ts", "age_s", "status"):
        assert key in e["devices"][0]


def test_load_fleet_keeps_broken_status_as_an_error(tmp_path: Path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"sites": [
        {"host": "pi1", "site_id": "S1", "devices": ["aa01"], "reachable": True, "rc": 0,
         "stdout": json.dumps(status(("aa01", 1)))},
        {"host": "pi2", "site_id": "S2", "devices": [], "reachable": True, "rc": 0,
         "stdout": "Traceback"},
        {"host": "pi3", "site_id": "S3", "devices": [], "reachable": True, "rc": 2,
         "stderr": "usage\nhwpc: error: unrecognized arguments"},
        {"host": "pi4", "site_id": "S4", "devices": [], "reachable": False},
    ]}))
    s = freshness.load_fleet(path)
    assert s[0].status is not None and s[0].error is None
    assert s[1].status is None and s[1].error == "hwpc status did not print JSON"
    assert s[2].error == "hwpc status exited 2: hwpc: error: unrecognized arguments"
    assert s[3].reachable is False and s[3].status is None and s[3].error is None
    path.write_text(json.dumps({"sites": [{"host": "pi1"}]}))
    with pytest.raises(ValueError, match=r"sites\[0\]: needs host and site_id"):
        freshness.load_fleet(path)


def test_hourly_counts_reads_plain_and_compressed_days(tmp_path: Path):
    folder = tmp_path / "measurements" / "aa01"
    folder.mkdir(parents=True)
    day0 = 1_795_000_000_000 - 1_795_000_000_000 % 86_400_000
    day1 = day0 + 86_400_000
    rows0 = [iso(day0 + 86_400_000 - 1000 * i) for i in range(1, 11)]   # last 10 s of day 0
    rows1 = [iso(day1 + 1000 * i) for i in range(5)] + [iso(day1 + 3_600_000)]
    with gzip.open(folder / f"{iso(day0)[:10]}.csv.gz", "wt") as fh:
        fh.write("ts,power_w\n" + "".join(f"{t},1\n" for t in sorted(rows0)))
    (folder / f"{iso(day1)[:10]}.csv").write_text(
        "ts,power_w\n" + "".join(f"{t},1\n" for t in rows1) + f"{iso(day1 + 7_200_000)},1")
    counts = health.hourly_counts(tmp_path, "aa01", day0 + 82_800_000, day1 + 7_200_001)
    assert counts[iso(day0)[:10] + "T23"] == 10
    assert counts[iso(day1)[:10] + "T00"] == 5
    assert counts[iso(day1)[:10] + "T01"] == 1
    assert sum(counts.values()) == 16   # the torn last line is not counted


# -- hostile and malformed statuses ---------------------------------------------------------
# A Pi's `hwpc status --json` is input from a machine in someone's home: whatever it says must
# neither run in the operator's browser nor end the audit of the other sites.

PAYLOAD = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class _Elements(HTMLParser):
    """Every start tag and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def assert_inert(page: str) -> str:
    """No element or attribute a status could have smuggled in; the page's text."""
    p = parse_page(page)
    assert "script" not in p.tags and "img" not in p.tags, sorted(set(p.tags))
    assert not [a for a in p.attrs if a.lower().startswith("on")], sorted(set(p.attrs))
    assert set(p.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p",
                           "span", "small", "div", "b", "table", "tr", "th", "td"}, p.tags
    return "".join(p.text)


def fleet_file(tmp_path: Path, *stdouts: str, now: int = NOW) -> Path:
    """A fleet file as the freshness role writes it: a healthy pi1, then one Pi per stdout."""
    sites = [{"host": "pi1", "inventory_host": "pi1", "site_id": "S1", "devices": ["aa01"],
              "reachable": True, "rc": 0, "stdout": json.dumps(status(("aa01", 1), now=now)),
              "stderr": ""}]
    for i, out in enumerate(stdouts, start=2):
        sites.append({"host": f"pi{i}", "inventory_host": f"pi{i}", "site_id": f"S{i}",
                      "devices": [f"aa0{i}"], "reachable": True, "rc": 0, "stdout": out,
                      "stderr": ""})
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"sites": sites}))
    return path


def test_hostile_status_values_never_become_markup(tmp_path: Path):
    hostile = status(("aa02", 1))
    hostile["backlog_rows"] = PAYLOAD
    hostile["disk_free_mb"] = PAYLOAD
    path = fleet_file(tmp_path, json.dumps(hostile))
    sites = freshness.load_fleet(path)
    cen = {"S1": central({"aa01": 10}), "S2": central({"aa02": 10})}
    report = freshness.build_report(sites, cen, NOW, TH)
    text = assert_inert(freshness.render_html(report))
    bad = report.sites[1]
    assert bad.verdict != "ok"
    assert bad.reasons[0].startswith("malformed status")
    # what the Pi said is dropped; the heartbeat in Cassandra stands in, as for a failed status
    assert bad.backlog_rows == 3 and bad.disk_free_mb == 800
    assert "malformed status" in text
    assert report.sites[0].verdict == "ok", "the other sites are judged as usual"


def test_hostile_text_is_shown_as_text(tmp_path: Path):
    """Strings a status may carry (serials, error lines) and inventory names appear as the
    very text they are, escaped, never as markup."""
    st = status((PAYLOAD, 1))
    sites = [SiteInput(host=PAYLOAD, site_id=PAYLOAD, devices=[PAYLOAD], reachable=True,
                       status=st, error=f"hwpc status exited 1: {PAYLOAD}")]
    report = freshness.build_report(sites, {PAYLOAD: central({PAYLOAD: 10})}, NOW, TH)
    page = freshness.render_html(report)
    text = assert_inert(page)
    assert text.count(PAYLOAD) >= 4   # site, host, serial, reason
    assert "&lt;script&gt;" in page


def _poison(value: Any, payload: str) -> Any:
    """A report with every text in it (names, times, hours, days, reasons, the release)
    replaced by ``payload``; its numbers, flags and verdicts are typed and stay."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _poison(getattr(value, f.name), payload)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, tuple):
        return tuple(_poison(v, payload) for v in value)
    if isinstance(value, str) and not isinstance(value, Verdict):
        return payload
    return value


def _poison_json(value: Any, payload: str) -> Any:
    """A JSON report with every value replaced by ``payload``."""
    if isinstance(value, dict):
        return {k: _poison_json(v, payload) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison_json(v, payload) for v in value]
    return payload


def test_render_html_escapes_every_text():
    """Even a report whose every text was replaced (a future field that forgot its check)
    renders inert; a JSON report whose every value was replaced (a tampered file) is not
    read at all, and the reason names a key, not the value."""
    st = status(("aa01", 1))
    st["devices"][0]["coverage_hourly"] = [
        {"hour": iso(h)[:13], "samples": 3000} for h in freshness.hour_windows(NOW, 24)]
    c = central({"aa01": 10})
    c.daily = {"aa01": {iso(NOW)[:10]: 5400}}
    report = dataclasses.replace(freshness.build_report([site(st=st)], {"S1": c}, NOW, TH),
                                 central_error="database down")
    for payload in (PAYLOAD, "</td></tr></table></div><script>x</script>", "javascript:x"):
        poisoned = _poison(report, payload)
        assert poisoned.sites[0].devices[0].coverage_daily[0].day == payload
        text = assert_inert(freshness.render_html(poisoned))
        assert payload in text
        tampered = {**_poison_json(report.to_dict(), payload), "report_version": 2}
        with pytest.raises(freshness.ReportError) as caught:
            freshness.parse_report(tampered)
        assert str(caught.value) == "generated_ts: expected an ISO 8601 time, got a string"


def test_render_table_strips_control_characters():
    evil = "\x1b]0;owned\x07\x1b[2J\rS\u202eX\u2028Y\x9b31m\x00"
    st = status((evil, 1))
    sites = [SiteInput(host=evil, site_id=evil, devices=[evil], reachable=True, status=st,
                       error=f"hwpc status exited 1: {evil}")]
    report = freshness.build_report(sites, {evil: central({evil: 10})}, NOW, TH)
    for rep in (report, _poison(report, evil)):
        table = freshness.render_table(rep)
        assert not [c for c in table if c != "\n" and unicodedata.category(c)[0] in "CZ"
                    and c != " "], repr(table)
        assert "owned" in table   # shown, defused


MALFORMED = {
    "a list, not an object": "[1, 2]",
    "a string": '"ok"',
    "null": "null",
    "poll_interval_s not a number": {"poll_interval_s": "fast"},
    "poll_interval_s zero": {"poll_interval_s": 0},
    "poll_interval_s negative": {"poll_interval_s": -1},
    "poll_interval_s tiny": {"poll_interval_s": 5e-324},
    "poll_interval_s NaN": '{"poll_interval_s": NaN, "devices": []}',
    "poll_interval_s a boolean": {"poll_interval_s": True},
    "no devices key": {"devices": None},
    "devices an object": {"devices": {"serial": "aa02"}},
    "a device not an object": {"devices": ["aa02"]},
    "a device without serial": {"devices": [{"last_ts": None}]},
    "a serial not a string": {"devices": [{"serial": 12, "last_ts": None}]},
    "last_ts a number": {"devices": [{"serial": "aa02", "last_ts": 1}]},
    "last_ts not a time": {"devices": [{"serial": "aa02", "last_ts": "yesterday"}]},
    "coverage samples a string": {"devices": [{"serial": "aa02", "last_ts": None,
                                               "coverage_hourly": [{"hour": "x",
                                                                    "samples": "many"}]}]},
    "coverage an object": {"devices": [{"serial": "aa02", "last_ts": None,
                                        "coverage_hourly": {"hour": 1}}]},
    "state a list": {"devices": [{"serial": "aa02", "last_ts": None, "state": []}]},
    "backlog_rows a string": {"backlog_rows": "7"},
    "backlog_rows a float": {"backlog_rows": 7.5},
    "backlog_rows Infinity": '{"backlog_rows": Infinity}',
    "disk_free_mb a string": {"disk_free_mb": "900"},
    "uptime_s a list": {"uptime_s": [1]},
    "service_active a string": {"service_active": "yes"},
    "clock_synchronised a number": {"clock_synchronised": 1},
    "last_sync_ts a number": {"last_sync_ts": 5},
    "service_active missing": {"service_active": ...},
}


def _malformed(case: str | dict[str, Any]) -> str:
    if isinstance(case, str):
        if case.startswith('{"poll') or case.startswith('{"backlog'):  # NaN, Infinity
            base = status(("aa02", 1))
            base.pop(next(iter(json.loads(case.replace("NaN", "1").replace("Infinity", "1")))))
            return case[:-1] + ", " + json.dumps(base)[1:]
        return case
    st = status(("aa02", 1))
    for key, value in case.items():
        if value is ...:
            del st[key]
        elif key == "devices" and value is None:
            del st["devices"]
        else:
            st[key] = value
    return json.dumps(st)


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_status_is_a_reason_not_a_crash(tmp_path: Path, case: str):
    out = _malformed(MALFORMED[case])
    sites = freshness.load_fleet(fleet_file(tmp_path, out))
    cen = {"S1": central({"aa01": 10}), "S2": central({"aa02": 10})}
    report = freshness.build_report(sites, cen, NOW, TH)
    good, bad = report.sites
    assert good.verdict == "ok" and good.reasons == ()
    assert bad.verdict != "ok"
    assert bad.reasons[0].startswith("malformed status"), bad.reasons
    assert report.summary.sites == 2 and report.ok is False
    json.loads(json.dumps(report.to_dict(), allow_nan=False))   # the report stays strict JSON
    assert "malformed status" in assert_inert(freshness.render_html(report))
    assert "malformed status" in freshness.render_table(report)


@pytest.mark.parametrize("st", [[1, 2], "ok", {"poll_interval_s": "fast", "devices": []},
                                {"devices": [{"serial": "aa01"}], "service_active": True,
                                 "poll_interval_s": 1.0, "backlog_rows": PAYLOAD}])
def test_judge_takes_a_malformed_status_given_directly(st: Any):
    e = freshness.judge(site(st=st), central({"aa01": 10}), NOW, TH)
    assert e.verdict == "stale" and e.reasons[0].startswith("malformed status")
    assert e.backlog_rows == 3    # the heartbeat's


def test_a_complete_status_of_hwpc_status_is_well_formed():
    """What health.status() writes passes the check, extra keys and all."""
    st = status(("aa01", 1))
    st["devices"][0].update({"product_type": "HWE-P1", "role": "grid", "api": "v1",
                             "address": None, "age_s": 1.0, "last_error": None,
                             "last_error_ts": None, "samples_since_start": 5,
                             "coverage_hourly": [{"hour": iso(NOW)[:13], "samples": 0}]})
    st.update({"site_id": "S1", "host": "pi1", "version": "1", "now": iso(NOW), "pid": 1,
               "started": None, "uptime_s": None, "clock": "trust", "disk_low": False,
               "write_error": None, "pending_rows": 0, "backlog_bytes": 0, "last_sync": None,
               "disk_free_mb": -1})
    assert freshness.status_problem(st) is None
    e = freshness.judge(site(st=st), central({"aa01": 10}), NOW, TH)
    assert e.verdict == "ok"


def _cli_fleet(tmp_path: Path) -> Path:
    now = time.time_ns() // 1_000_000
    hostile = status(("aa02", 1), now=now)
    hostile["backlog_rows"] = PAYLOAD
    return fleet_file(tmp_path, json.dumps(hostile), '{"devices": "none"}', now=now)


def test_freshness_command_reports_every_site_despite_a_hostile_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`hwpc freshness` with the arguments of the freshness role (roles/freshness/tasks/report.yml);
    Cassandra stands in for a session that answers for the healthy site only."""
    from hw_picollector import cassandra_session, cli

    config = tmp_path / "audit.yml"
    config.write_text(json.dumps({"site_id": "central", "data_dir": str(tmp_path / "data"),
                                  "devices": [], "cassandra": {"hosts": ["127.0.0.1"],
                                                               "keyspace": "homewizard"}}))

    class Cluster:
        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(cassandra_session, "connect", lambda cfg: (Cluster(), object()))

    def query_central(session: Any, keyspace: str, sites: list[SiteInput], now_ms: int,
                      **_: Any) -> dict[str, Central]:
        return {s.site_id: Central({d: now_ms - 5000 for d in s.devices},
                                   Heartbeat(ts=iso(now_ms - 5000)), {}, {}) for s in sites}

    monkeypatch.setattr(freshness.queries, "query_central", query_central)
    out_dir = tmp_path / "reports"
    argv = ["freshness", "--config", str(config), "--fleet", str(_cli_fleet(tmp_path)),
            "--out-dir", str(out_dir), "--freshness-max-age-s", "600", "--sync-max-lag-s",
            "900", "--heartbeat-max-age-s", "900", "--coverage-hours", "24"]
    assert cli.main(argv) == 1            # the role accepts 0 and 1: 1 = a site is not ok
    out = capsys.readouterr().out
    assert "3 sites: 1 ok, 0 lagging, 2 stale, 0 down" in out
    assert out.count("malformed status") == 2
    written = (out_dir / "freshness-latest.json").read_text()
    report = json.loads(written)
    assert [s["verdict"] for s in report["sites"]] == ["ok", "stale", "stale"]
    assert written == freshness.parse_report(report).to_json() + "\n"
    assert written.startswith('{\n  "report_version": 2,\n  "generated_ts": ')
    assert_inert((out_dir / "freshness-latest.html").read_text())
    assert cli.main([*argv, "--no-fail"]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["stale"] == 2 and printed["report_version"] == 2
    # The old name still works for a release, and says it is going.
    assert cli.main(["audit", *argv[1:], "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["stale"] == 2
    assert "`hwpc audit` is deprecated" in captured.err
    assert "hwpc freshness" in captured.err


def test_status_that_never_ran_says_so(tmp_path: Path):
    """When the module never ran `hwpc status` (sudo refused, as on a Pi whose SSH user may
    not become root), Ansible gives no rc, only a message: that message is the reason."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"sites": [
        {"host": "pi1", "site_id": "S1", "devices": ["aa01"], "reachable": True, "rc": None,
         "stdout": "", "stderr": "Missing sudo password"}]}))
    s = freshness.load_fleet(path)
    assert s[0].status is None and s[0].error == "hwpc status did not run: Missing sudo password"
