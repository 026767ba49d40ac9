"""Verdicts, coverage and rendering of the fleet freshness report (pure logic, no sockets)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hw_picollector import freshness, health
from hw_picollector.freshness import Central, SiteInput, Thresholds, iso

NOW = 1_795_000_000_000 - 1_795_000_000_000 % 3_600_000 + 1_800_000  # half past an hour
TH = Thresholds(freshness_max_age_s=60, sync_max_lag_s=120, heartbeat_max_age_s=300)


def status(*devices: tuple[str, float | None], active: bool = True) -> dict:
    return {
        "service_active": active, "uptime_s": 1234.0, "backlog_rows": 7,
        "last_sync_ts": iso(NOW - 30_000), "disk_free_mb": 900, "clock_synchronised": True,
        "poll_interval_s": 1.0,
        "devices": [{"serial": s, "last_ts": None if age is None else iso(NOW - int(age * 1000)),
                     "state": "ok"} for s, age in devices],
    }


def central(latest: dict[str, float] | None = None, beat_age: float | None = 10) -> Central:
    return Central(
        latest={s: NOW - int(a * 1000) for s, a in (latest or {}).items()},
        heartbeat=None if beat_age is None else {
            "ts": iso(NOW - int(beat_age * 1000)), "uptime_s": 99.0, "backlog_rows": 3,
            "collector_active": True, "disk_free_mb": 800, "clock_synchronised": True},
        hourly={}, daily={})


def site(reachable: bool = True, st: dict | None = None, devices: tuple[str, ...] = ("aa01",),
         error: str | None = None) -> SiteInput:
    return SiteInput(host="pi1", site_id="S1", devices=list(devices), reachable=reachable,
                     status=st, error=error)


def test_fresh_everywhere_is_ok():
    e = freshness.judge(site(st=status(("aa01", 2))), central({"aa01": 40}), NOW, TH)
    assert e["verdict"] == "ok"
    assert e["reasons"] == []
    d = e["devices"][0]
    assert (d["status"], d["age_s"], d["sync_lag_s"]) == ("ok", 2.0, 40.0)
    assert e["backlog_rows"] == 7 and e["uptime_s"] == 1234.0 and e["service_active"] is True


def test_old_local_sample_is_stale_and_named():
    e = freshness.judge(site(st=status(("aa01", 61), active=False)), central({"aa01": 61}),
                        NOW, TH)
    assert e["verdict"] == "stale"
    assert e["service_active"] is False
    assert "aa01: newest local sample 61 s old (max 60)" in e["reasons"]


def test_device_without_any_local_sample_is_stale():
    e = freshness.judge(site(st=status(("aa01", None))), central({}), NOW, TH)
    assert e["verdict"] == "stale"
    assert e["reasons"] == ["aa01: no local sample"]


def test_fresh_on_pi_but_old_in_cassandra_is_lagging():
    e = freshness.judge(site(st=status(("aa01", 1))), central({"aa01": 121}), NOW, TH)
    assert e["verdict"] == "lagging"
    assert e["devices"][0]["status"] == "lagging"
    assert "newest central sample 121 s old (max 120)" in e["reasons"][0]


def test_fresh_on_pi_and_nothing_in_cassandra_is_lagging():
    e = freshness.judge(site(st=status(("aa01", 1))), central(), NOW, TH)
    assert e["verdict"] == "lagging"
    assert "nothing in Cassandra" in e["reasons"][0]


def test_stale_wins_over_lagging():
    st = status(("aa01", 1), ("aa02", 500))
    e = freshness.judge(site(st=st, devices=("aa01", "aa02")), central({"aa01": 500}), NOW, TH)
    assert [d["status"] for d in e["devices"]] == ["lagging", "stale"]
    assert e["verdict"] == "stale"


def test_unreachable_without_recent_heartbeat_is_down():
    e = freshness.judge(site(reachable=False), central({"aa01": 5}, beat_age=301), NOW, TH)
    assert e["verdict"] == "down"
    assert "newest heartbeat is 301 s old (max 300)" in e["reasons"][0]
    e = freshness.judge(site(reachable=False), central({"aa01": 5}, beat_age=None), NOW, TH)
    assert e["verdict"] == "down"
    assert "never sent a heartbeat" in e["reasons"][0]


def test_unreachable_with_heartbeat_is_judged_from_central_data():
    e = freshness.judge(site(reachable=False), central({"aa01": 30}, beat_age=20), NOW, TH)
    assert e["verdict"] == "ok"
    assert e["devices"][0]["last_local_ts"] is None
    assert e["service_active"] is True and e["backlog_rows"] == 3  # from the heartbeat
    assert "judged from Cassandra" in e["reasons"][0]
    e = freshness.judge(site(reachable=False), central({"aa01": 90}, beat_age=20), NOW, TH)
    assert e["verdict"] == "stale"
    assert "aa01: newest central sample 90 s old (max 60)" in e["reasons"]


def test_reachable_host_whose_status_failed_is_stale_with_the_error():
    e = freshness.judge(site(st=None, error="hwpc status exited 1: config error"),
                        central({"aa01": 5}), NOW, TH)
    assert e["verdict"] == "stale"
    assert e["reasons"][0] == "hwpc status exited 1: config error"


def test_devices_seen_only_centrally_are_reported_too():
    e = freshness.judge(site(st=status(("aa01", 1))), central({"aa01": 5, "bb02": 5}), NOW, TH)
    assert [d["serial"] for d in e["devices"]] == ["aa01", "bb02"]
    assert e["devices"][1]["status"] == "stale"  # nothing local for a device the Pi lacks


def test_hourly_coverage_expected_counts_and_local_central_values():
    st = status(("aa01", 1))
    hours = freshness._hour_windows(NOW, 3)
    st["devices"][0]["coverage_hourly"] = [{"hour": iso(h)[:13], "samples": 3000}
                                           for h in hours]
    c = central({"aa01": 5})
    c.hourly = {"aa01": {iso(hours[0])[:13]: 3600, iso(hours[2])[:13]: 1700}}
    day = iso(NOW)[:10]
    c.daily = {"aa01": {day: 5400}}
    e = freshness.judge(site(st=st), c, NOW, TH, coverage_hours=3)
    cov = e["devices"][0]["coverage_hourly"]
    assert [x["expected"] for x in cov] == [3600, 3600, 1800]   # the current hour: 30 min
    assert [x["local"] for x in cov] == [3000, 3000, 3000]
    assert [x["central"] for x in cov] == [3600, None, 1700]
    c.hourly = {"aa01": {iso(hours[1])[:13]: 0, iso(hours[2])[:13]: 1700}}
    cov = freshness.judge(site(st=st), c, NOW, TH, coverage_hours=3)["devices"][0][
        "coverage_hourly"]
    assert [x["central"] for x in cov] == [None, None, 1700], "before the first sample: no data"
    seconds_today = (NOW % 86_400_000) / 1000
    daily = e["devices"][0]["coverage_daily"][day]
    assert daily["expected"] == round(seconds_today)
    assert daily["coverage"] == pytest.approx(min(1.0, 5400 / seconds_today), abs=1e-4)


def test_report_summary_table_and_html(tmp_path: Path):
    sites = [site(st=status(("aa01", 1))),
             SiteInput(host="pi2", site_id="S2<x>", devices=["bb01"], reachable=False,
                       status=None)]
    cen = {"S1": central({"aa01": 10}), "S2<x>": central({}, beat_age=None)}
    report = freshness.build_report(sites, cen, NOW, TH, coverage_hours=24)
    assert report["summary"] == {"sites": 2, "ok": 1, "lagging": 0, "stale": 0, "down": 1}
    assert report["ok"] is False
    table = freshness.render_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["SITE", "HOST", "VERDICT"]
    assert any(line.startswith("S1 ") and " ok " in line for line in lines)
    assert any(line.startswith("S2<x>") and "DOWN" in line for line in lines)
    assert "2 sites: 1 ok, 0 lagging, 0 stale, 1 down" in table
    json_path, html_path = freshness.write_reports(report, tmp_path / "reports")
    assert json.loads(json_path.read_text())["sites"][1]["verdict"] == "down"
    page = html_path.read_text()
    assert "S2&lt;x&gt;" in page and "S2<x>" not in page
    assert page.count("<table class=strip>") == 2  # one strip pair per device
    assert not list((tmp_path / "reports").glob(".*tmp"))


def test_json_report_has_the_contract_fields():
    report = freshness.build_report([site(st=status(("aa01", 1)))],
                                    {"S1": central({"aa01": 10})}, NOW, TH)
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
