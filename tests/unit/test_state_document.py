"""The collector's state file (state_document.py): its versions, its parser, what the collector
writes, and `hwpc status` in the middle of a rolling upgrade.

tests/unit/fixtures/state/collector-v1.json is what the collector wrote before the state had a
format version (version 1): `Collector._publish` of that code, run over the Pi `build_pi`
makes (five devices, damaged day files, mid-day at NOW), the temporary data directory in its
file names then replaced by the Pi's /var/lib/hw-picollector. status-over-v1.json is what that
code's `hwpc status --json` printed for the same Pi with that state file. Both are kept as they
were and never regenerated: they are what a Pi holds while it is upgraded.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hw_picollector import checkpoints, cli, health, store
from hw_picollector.collect.collector import Collector
from hw_picollector.collect.damage import find_damaged
from hw_picollector.collect.device import DevicePoller
from hw_picollector.config import load_config
from hw_picollector.devices.canonical import columns
from hw_picollector.state_document import (
    STATE_FILE,
    STATE_VERSION,
    VERSION_KEY,
    CollectorState,
    DamageSnapshot,
    DeviceSnapshot,
    StateError,
    parse_state,
)

FIXTURES = Path(__file__).parent / "fixtures" / "state"
STATE_V1 = FIXTURES / "collector-v1.json"
STATUS_OVER_V1 = FIXTURES / "status-over-v1.json"

NOW = 1_795_700_000_000                 # 2026-11-26T13:33:20.000Z: mid-day (UTC)
STARTED = NOW - 7_213_500               # the collector started 2 h ago
PID = 2817
DISK_FREE_MB = 2210
P1, KWH1, KWH3, SKT, WTR = (f"3c39e73000{i:02d}" for i in range(1, 6))
DEVICES = [
    {"serial": P1, "product_type": "HWE-P1", "role": "grid", "address": "192.0.2.30"},
    {"serial": KWH1, "product_type": "HWE-KWH1", "role": "production", "address": "192.0.2.31"},
    {"serial": KWH3, "product_type": "HWE-KWH3", "role": "consumption", "address": "192.0.2.32"},
    {"serial": SKT, "product_type": "HWE-SKT", "role": "consumption", "address": "192.0.2.34"},
    {"serial": WTR, "product_type": "HWE-WTR", "role": "water"},   # no address: mDNS only
]
DAY_MS = 86_400_000
TODAY = NOW - NOW % DAY_MS


def iso(ts_ms: int) -> str:
    return store.format_ts(ts_ms)


def _damage(path: Path, after_rows: int, lines: list[bytes]) -> None:
    """``lines`` (complete, not rows of the file's columns) after the first ``after_rows``."""
    text = path.read_bytes().split(b"\n")
    cut = 1 + after_rows   # the header, then rows
    path.write_bytes(b"\n".join([*text[:cut], *lines, *text[cut:]]))


def build_pi(tmp_path: Path) -> Path:
    """A Pi at NOW: its config (returned), its store and its last sync, no state file. Today's
    samples on the 10 s grid since the collector started, a sparse history before; the P1
    meter's two closed days hold damaged lines; the sync has failed since yesterday."""
    data = tmp_path / "data"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "site_id": "SITE07", "host": "pi-site07", "data_dir": str(data), "clock_sync": "trust",
        "mdns": True, "poll_interval_s": 10.0, "devices": DEVICES}))
    ten_min = 600_000
    for day in (TODAY - 2 * DAY_MS, TODAY - DAY_MS):
        store.write_history(data, P1, columns("HWE-P1"), (
            (day + ten_min * i + 3, {"power_w": 400.0 + i}) for i in range(144)))
        store.write_history(data, SKT, columns("HWE-SKT"), (
            (day + ten_min * i + 7, {"power_w": 60.0}) for i in range(144)))
    tick = STARTED - STARTED % 10_000 + 10_000   # the first tick: on the wall-clock grid
    store.write_history(data, P1, columns("HWE-P1"), (
        (ts + 12, {"power_w": 350.0 + ts // 10_000 % 7}) for ts in range(tick, NOW, 10_000)))
    store.write_history(data, KWH1, columns("HWE-KWH1"), (
        (ts + 21, {"power_w": -1200.0}) for ts in range(tick, NOW - 1_800_000, 10_000)))
    store.write_history(data, KWH3, columns("HWE-KWH3"), (
        (ts + 15, {"power_w": 830.5}) for ts in range(tick, NOW - 40_000, 10_000)))
    store.write_history(data, SKT, columns("HWE-SKT"), (
        (ts + 30, {"power_w": 58.0}) for ts in range(tick, tick + 50_000, 10_000)))
    folder = store.device_dir(data, P1)
    _damage(folder / f"{store.day_of(TODAY - 2 * DAY_MS)}.csv", 40, [b"\0" * 96])
    _damage(folder / f"{store.day_of(TODAY - DAY_MS)}.csv", 10,
            [b"2026-11-25T01:40:00.003Z,HWE-P1,41", b"3,,,,,"])
    checkpoints.write_last_sync(data, {
        "finished": iso(NOW - DAY_MS - 3_600_000), "started": iso(NOW - DAY_MS - 3_604_100),
        "rows": 1873, "site_power_rows": 1801, "seconds": 4.1, "ok": True,
        "last_error": "cannot reach Cassandra at db.example.org:9042: timed out",
        "last_attempt": iso(NOW - 290_000)})
    return config


def freeze(monkeypatch: pytest.MonkeyPatch, module: Any = health) -> None:
    """NOW, the collector's pid alive, the free disk space and the release pinned."""
    monkeypatch.setattr(time, "time_ns", lambda: NOW * 1_000_000)
    monkeypatch.setattr(module, "_pid_alive", lambda pid: pid == PID)
    monkeypatch.setattr(module, "disk_free_mb", lambda path: DISK_FREE_MB)
    monkeypatch.setattr(module, "__version__", "0.1.0")


def v1() -> dict[str, Any]:
    state: dict[str, Any] = json.loads(STATE_V1.read_text(encoding="utf-8"))
    return state


def with_state(tmp_path: Path, text: str) -> Path:
    """The fixed Pi with ``text`` as its state file; its config's path."""
    config = build_pi(tmp_path)
    path = tmp_path / "data" / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return config


def a_state() -> CollectorState:
    return CollectorState(
        hwpc_version="0.1.0", pid=PID, started=iso(STARTED), updated=iso(NOW - 1_600),
        clock_synchronised=True, clock="kernel NTP state synchronised",
        write_error=f"{P1}: No space left on device", pending_rows=37, disk_free_mb=0,
        devices=(
            DeviceSnapshot(serial=P1, product_type="HWE-P1", address="192.0.2.30", state="ok",
                           last_ts=iso(NOW - 9_988), samples=721, failures=2, skipped_ticks=1,
                           damaged_lines=3, damaged_files=(
                               DamageSnapshot(file="/var/lib/hw-picollector/x.csv",
                                              first_offset=120, lines=3),)),
            DeviceSnapshot(serial=WTR, product_type="HWE-WTR", address=None,
                           state="no_address", last_error=f"{WTR}: no address configured",
                           last_error_ts=iso(NOW - 2_000), failures=721,
                           consecutive_failures=721),
        ))


# -- the document -------------------------------------------------------------------------

def test_a_state_reads_back_as_it_was_written() -> None:
    state = a_state()
    text = state.to_json()
    written = json.loads(text)
    assert written[VERSION_KEY] == STATE_VERSION == 2
    assert text == json.dumps(written, sort_keys=True), "keys sorted, as ever"
    assert written["version"] == "0.1.0", "the release keeps its key"
    assert parse_state(written) == state
    assert parse_state(state.to_dict()) == state
    assert state.device(WTR) == state.devices[1] and state.device(KWH1) is None


def test_version_1_is_version_2_without_the_key() -> None:
    """Today's file (collector-v1.json, written by the code before the key) reads whole: every
    device, its counters and its damaged files; with the key added it is a version-2 state."""
    old = v1()
    assert VERSION_KEY not in old
    state = parse_state(old)
    assert parse_state({**old, VERSION_KEY: 2}) == state
    assert state.pid == PID and state.updated == iso(NOW - 1_600)
    assert [d.serial for d in state.devices] == [P1, KWH1, KWH3, SKT, WTR]
    p1 = state.device(P1)
    assert p1 is not None and p1.state == "ok" and p1.damaged_lines == 3
    assert [(Path(f.file).name, f.lines) for f in p1.damaged_files] == [
        ("2026-11-24.csv", 1), ("2026-11-25.csv", 2)]
    assert (state.device(SKT) or p1).address == "192.0.2.44", "moved, found by mDNS"
    assert (state.device(WTR) or p1).address is None
    # the document writes back what the previous release wrote, plus the version
    assert {k: v for k, v in state.to_dict().items() if k != VERSION_KEY} == old


def test_the_collector_writes_version_2_with_the_keys_of_version_1(tmp_path: Path) -> None:
    config = load_config(str(build_pi(tmp_path)))
    collector = Collector(config)
    collector.pollers = [DevicePoller(config, dev, collector.shared, 0.0, lambda *a: "")
                         for dev in config.devices]
    collector._find_damage()
    collector._publish()
    written = json.loads((config.data_dir / STATE_FILE).read_text(encoding="utf-8"))
    assert written.pop(VERSION_KEY) == STATE_VERSION
    old = v1()

    def shape(obj: Any) -> Any:
        """The keys and the kinds of values, not the values."""
        if isinstance(obj, dict):
            return {k: shape(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [shape(v) for v in obj[:1]]
        return type(obj).__name__ if obj is not None else None

    assert set(written) == set(old)
    for serial, dev in written["devices"].items():
        assert set(dev) == set(old["devices"][serial]), serial
    assert shape(written["devices"][P1]["damaged_files"]) == \
        shape(old["devices"][P1]["damaged_files"])
    state = parse_state({**written, VERSION_KEY: STATE_VERSION})
    assert (state.device(P1) or state.devices[0]).damaged_lines == 3


def test_a_release_older_than_the_damage_counts_still_reads() -> None:
    """Version 1 is any file without the key: the first releases wrote fewer keys."""
    first = {"version": "0.1.0", "pid": PID, "started": iso(STARTED), "updated": iso(NOW),
             "clock_synchronised": True, "clock": "x", "write_error": None, "pending_rows": 0,
             "disk_free_mb": 10, "devices": {P1: {
                 "serial": P1, "product_type": "HWE-P1", "address": "192.0.2.30",
                 "state": "ok", "last_ts": None, "last_error": None, "last_error_ts": None,
                 "samples": 4, "failures": 0, "consecutive_failures": 0, "skipped_ticks": 0,
                 "clock_refused": 0}}}
    device = parse_state(first).devices[0]
    assert (device.samples, device.extras_dropped, device.damaged_files) == (4, 0, ())
    assert parse_state({}) == CollectorState()


# -- what it refuses, by name ----------------------------------------------------------------

def test_a_newer_version_is_refused_with_a_clear_message() -> None:
    with pytest.raises(StateError) as refused:
        parse_state({**v1(), VERSION_KEY: 3})
    assert str(refused.value) == (
        "state_version 3: newer than this hwpc reads (1 to 2): the collector that wrote it is "
        "a newer release (after a downgrade, restart hw-picollector.service)")
    for bad in (0, "2", True, 2.0):
        with pytest.raises(StateError, match=r"^state_version: expected a whole number from 1"):
            parse_state({**v1(), VERSION_KEY: bad})


@pytest.mark.parametrize(("path", "value", "message"), [
    (("pid",), "2817", "pid: expected a whole number >= 0, got a string"),
    (("updated",), "soon", "updated: expected an ISO 8601 UTC time with milliseconds, "
                           "got a string"),
    (("clock_synchronised",), 1, "clock_synchronised: expected a boolean, got a number"),
    (("disk_free_mb",), -2, "disk_free_mb: expected a whole number >= -1 (-1: not known), "
                            "got a number"),
    (("devices",), [], "devices: expected an object (serial: device), got an array"),
    (("devices", KWH1, "samples"), -1,
     f"devices.{KWH1}.samples: expected a whole number >= 0, got a number"),
    (("devices", KWH1, "state"), ["timeout"], f"devices.{KWH1}.state: expected a string, "
                                              "got an array"),
    (("devices", P1, "damaged_files", 1, "lines"), "2",
     f"devices.{P1}.damaged_files[1].lines: expected a whole number >= 0, got a string"),
    (("devices", SKT), "gone", f"devices.{SKT}: expected an object, got a string"),
    (("devices", SKT, "serial"), KWH1, f"devices.{SKT}.serial: expected the device's key in "
                                       "devices"),
])
@pytest.mark.parametrize("version", [1, 2])
def test_a_key_of_the_wrong_kind_is_named(path: tuple[Any, ...], value: Any, message: str,
                                          version: int) -> None:
    state = v1()
    if version == 2:
        state[VERSION_KEY] = 2
    *parents, last = path
    target = state
    for key in parents:
        target = target[key]
    target[last] = value
    with pytest.raises(StateError) as refused:
        parse_state(state)
    assert str(refused.value) == message   # the key, never the value


def test_version_2_has_every_key_null_only_where_the_collector_writes_null() -> None:
    state = {**v1(), VERSION_KEY: 2}
    del state["pending_rows"]
    with pytest.raises(StateError, match=r"^pending_rows is missing$"):
        parse_state(state)
    state = {**v1(), VERSION_KEY: 2}
    state["devices"][KWH3]["clock_refused"] = None
    with pytest.raises(StateError, match=rf"^devices\.{KWH3}\.clock_refused: expected .* null$"):
        parse_state(state)
    del state["devices"][KWH3]["clock_refused"]
    with pytest.raises(StateError, match=rf"^devices\.{KWH3}\.clock_refused is missing$"):
        parse_state(state)
    # in version 1, missing or null is not said
    state = v1()
    state["devices"][KWH3]["clock_refused"] = None
    del state["pending_rows"]
    parsed = parse_state(state)
    assert (parsed.pending_rows, (parsed.device(KWH3) or parsed.devices[0]).clock_refused) == \
        (0, 0)


# -- hwpc status over it ----------------------------------------------------------------------

def test_hwpc_status_over_the_previous_release_file_says_what_it_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A rolling upgrade: the new `hwpc status` over the state file the previous release's
    collector still writes gives the answer that release gave (status-over-v1.json)."""
    config = with_state(tmp_path, STATE_V1.read_text(encoding="utf-8"))
    freeze(monkeypatch)
    before = STATUS_OVER_V1.read_text(encoding="utf-8")
    assert health.status_document(load_config(str(config))).to_json() == before
    capsys.readouterr()
    assert cli.main(["status", "--json", "--config", str(config)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(before)
    assert printed["service_active"] is True and printed["damaged_lines"] == 3
    # and the same Pi once its collector restarted on the new release: the same answer
    state = parse_state(v1())
    (tmp_path / "data" / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
    assert health.status_document(load_config(str(config))).to_json() == before


@pytest.mark.parametrize("text", [None, "", '{"version": "0.1.0", "pid": 28', "[]"])
def test_no_state_file_or_an_unreadable_one_is_a_collector_not_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None,
        caplog: pytest.LogCaptureFixture) -> None:
    config = build_pi(tmp_path) if text is None else with_state(tmp_path, text)
    freeze(monkeypatch)
    doc = health.status_document(load_config(str(config)))
    assert not doc.service_active and doc.pid is None and doc.started is None
    assert {d.state for d in doc.devices} == {"not_running"}
    assert [d.address for d in doc.devices] == [d.get("address") for d in DEVICES]
    assert (doc.samples_dropped, doc.damaged_lines, doc.pending_rows) == (0, 0, 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == (
        [f"{tmp_path / 'data' / STATE_FILE}: the state: expected an object, got an array; "
         "read as no state (the collector not running)"] if text == "[]" else [])


@pytest.mark.parametrize(("key", "value", "named"), [
    ("updated", "soon", "updated: expected an ISO 8601 UTC time"),
    ("pid", [PID], "pid: expected a whole number >= 0, got an array"),
    (VERSION_KEY, 3, "state_version 3: newer than this hwpc reads"),
])
def test_a_state_hwpc_cannot_read_is_no_state_with_a_warning_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        key: str, value: Any, named: str) -> None:
    """Before the document, `hwpc status` (and with it the sync's heartbeat and the metrics)
    ended in a traceback over such a file; now the collector counts as not running, and the
    warning names the key."""
    config = with_state(tmp_path, json.dumps({**v1(), key: value}, sort_keys=True))
    freeze(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hw_picollector.health"):
        doc = health.status_document(load_config(str(config)))
    assert not doc.service_active and {d.state for d in doc.devices} == {"not_running"}
    (warning,) = [r.getMessage() for r in caplog.records]
    assert named in warning and "read as no state" in warning


def test_the_fixture_pi_is_the_one_the_fixtures_were_written_for(tmp_path: Path) -> None:
    """collector-v1.json names the P1 meter's damaged files as the Pi's data directory holds
    them: the same files, lines and offsets `build_pi` makes today."""
    config = load_config(str(build_pi(tmp_path)))
    found = [(Path(d.file).relative_to(config.data_dir), d.first_offset, d.lines)
             for d in find_damaged(config.data_dir, P1)]
    shown = [(Path(f["file"]).relative_to("/var/lib/hw-picollector"), f["first_offset"],
              f["lines"]) for f in v1()["devices"][P1]["damaged_files"]]
    assert found == shown
