"""Lines the sync cannot parse are quarantined: kept aside, counted once, and passed over.

A damaged line in the middle of a day file must not hold back the rows after it, nor the
files after it; it is copied (durably, before the checkpoint moves past it) to
``<data_dir>/quarantine``, with its file, byte offset and the reason.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from hw_picollector import checkpoints, health, metrics, quarantine, store, sync
from hw_picollector.tables import EXPECTED, TABLES
from tests.unit.test_sync_batches import (
    P1,
    P1_COLUMNS,
    FakeSession,
    config,
    p1_rows,
    sync_all,
    write_day,
)

HEADER = ("ts", *P1_COLUMNS, "extra")
WIDTH = len(HEADER)
POWER = HEADER.index("power_w")


def line(ts: str, power: str = "1", extra: str = "") -> bytes:
    fields = [""] * WIDTH
    fields[0], fields[POWER], fields[-1] = ts, power, extra
    return (",".join(fields) + "\n").encode()


def quoted(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return '"' + text.replace('"', '""') + '"'


def big_extra(size: int) -> str:
    """An extra JSON cell of about `size` bytes (CSV-quoted)."""
    return quoted({f"k{i:06d}": 1.5 for i in range(size // 13)})


def splice(path: Path, bad: dict[int, list[bytes]]) -> dict[bytes, int]:
    """Insert lines after the n-th row of a day file; returns each inserted line's offset."""
    lines = path.read_bytes().splitlines(keepends=True)
    out = [lines[0]]
    where: dict[bytes, int] = {}
    size = len(lines[0])
    for n, row in enumerate(lines[1:], start=1):
        out.append(row)
        size += len(row)
        for extra in bad.get(n, []):
            where[extra] = size
            out.append(extra)
            size += len(extra)
    path.write_bytes(b"".join(out))
    return where


def stamp_after(path: Path, n: int, ms: int = 500) -> str:
    """A timestamp between the n-th and the next row of a day file."""
    row = path.read_bytes().splitlines()[n]
    return store.format_ts(store.parse_ts(row[:24].decode()) + ms)


def records(data: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((data / quarantine.QUARANTINE_DIR).rglob("*.jsonl")):
        found += [json.loads(x) for x in path.read_text().splitlines()]
    return found


def raw_of(record: dict[str, Any]) -> bytes:
    if "line" in record:
        return str(record["line"]).encode()
    return base64.b64decode(record["line_b64"])


# -- the parse decision -------------------------------------------------------------------


@pytest.mark.parametrize("block", [store.SCAN_BLOCK, 64, 7])
def test_scan_passes_over_damaged_lines_only_when_asked(tmp_path: Path, block: int) -> None:
    cfg = config(tmp_path)
    path = write_day(cfg.data_dir, P1, date(2026, 1, 5), p1_rows(12), P1_COLUMNS)
    good = list(store.scan(path))
    ts = stamp_after(path, 2)
    damaged = {
        line(ts, extra=big_extra(200 << 10)): "field larger than field limit",
        b"this is not a row\n": "fields",
        line(ts)[:-3] + b"\n": "fields",
        line("2026-01-05T24:00:00.000Z"): "timestamp",
        line("2026-02-30T00:00:00.000Z"): "timestamp",
        line(ts, power="\xe9").replace("\xe9".encode(), b"\xff\xfe"): "UTF-8",
        b"\x00\x00\x00\x00\n": "NUL",
        line(ts).replace(b",1,", b",\r1,"): "",
        b"\n": "fields",
    }
    where = splice(path, {2: list(damaged)[:4], 7: list(damaged)[4:]})
    seen: list[tuple[int, bytes, str]] = []

    def bad(offset: int, raw: bytes, reason: str) -> bool:
        seen.append((offset, raw, reason))
        return True

    rows = list(store.scan(path, block=block, bad=bad))
    assert [(ts, fields) for _end, ts, fields in rows] == [(ts, f) for _e, ts, f in good]
    ends = [end for end, _ts, _f in rows]
    assert ends[-1] == path.stat().st_size
    assert [(o, r) for o, r, _ in seen] == sorted((o, r) for r, o in where.items())
    for offset, raw, reason in seen:
        assert path.read_bytes()[offset:offset + len(raw)] == raw
        assert damaged[raw] in reason, (raw[:40], reason)
        assert len(reason) < 200
    # without `bad`, reading still stops at the first damaged line (never raises)
    assert [r[0] for r in store.scan(path, block=block)] == ends[:2]


def test_a_line_refused_by_one_pass_is_refused_by_all(tmp_path: Path) -> None:
    """What the block reader refuses, the line reader refuses; the same rows either way."""
    cfg = config(tmp_path)
    path = write_day(cfg.data_dir, P1, date(2026, 1, 5), p1_rows(40), P1_COLUMNS)
    splice(path, {n: [line(stamp_after(path, n), power=f"{n}", extra=quoted({"a": n}))]
                  for n in range(1, 40, 3)})
    never: list[Any] = []
    fast = list(store.scan(path, bad=lambda *a: never.append(a) or True))
    slow = list(store.scan(path, block=7, bad=lambda *a: never.append(a) or True))
    assert fast == slow and not never
    assert len(fast) == 40 + 13


# -- the sync ----------------------------------------------------------------------------


def rows_sent(session: Any) -> int:
    return sum(len(s) for s in session.sent if getattr(s, "keyspace", None) == "hw"
               and type(s).__name__ == "BatchStatement")


def damaged_store(tmp_path: Path) -> tuple[Any, Path, Path, dict[bytes, int], int]:
    cfg = config(tmp_path, batch_rows=5)
    old = date.today() - timedelta(days=3)
    path = write_day(cfg.data_dir, P1, old, p1_rows(30), P1_COLUMNS)
    later = write_day(cfg.data_dir, P1, old + timedelta(days=1), p1_rows(8), P1_COLUMNS)
    good = sum(1 for _ in store.scan(path)) + sum(1 for _ in store.scan(later))
    bad = {
        1: [line(stamp_after(path, 1), extra=big_extra(200 << 10)), b"garbage, not a row\n"],
        4: [line(stamp_after(path, 4), power="abc")],
        9: [line(stamp_after(path, 9), extra=quoted('{"a":'))],
        10: [line(stamp_after(path, 10), extra=quoted("[1,2]"))],
        11: [line(stamp_after(path, 11), extra=quoted({"a": int("9" * 400)})),
             line(stamp_after(path, 11, 700), extra=quoted("[" * 50_000 + "]" * 50_000))],
        20: [line(stamp_after(path, 20), power="1e5x", extra=quoted({"b": 1}))],
    }
    where = splice(path, bad)
    return cfg, path, later, where, good


def test_sync_quarantines_what_it_cannot_send_and_moves_on(tmp_path: Path,
                                                           caplog: Any) -> None:
    cfg, path, later, where, good = damaged_store(tmp_path)
    with caplog.at_level(logging.INFO):
        syncer, session = sync_all(cfg)
    assert syncer.stats.rows == good == rows_sent(session)
    for p in (path, later):
        cp = checkpoints.read(cfg.data_dir, P1, p.stem)
        assert cp.complete and cp.offset == p.stat().st_size
    found = records(cfg.data_dir)
    assert sorted((r["offset"], raw_of(r)) for r in found) == \
        sorted((o, raw) for raw, o in where.items())
    data = path.read_bytes()
    for r in found:
        assert r["serial"] == P1 and r["day"] == path.stem
        assert r["file"] == f"measurements/{P1}/{path.name}"
        assert r["end"] == r["offset"] + len(raw_of(r))
        assert data[r["offset"]:r["end"]] == raw_of(r)
        assert r["reason"]
    reasons = {raw_of(r)[:60]: r["reason"] for r in found}
    assert any("number" in v for v in reasons.values())
    assert any("JSON" in v or "extra" in v for v in reasons.values())
    # one log line per quarantined line, none of them a dump
    logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(logged) == len(where)
    assert all(len(m) < 400 for m in logged)
    report = health.status(cfg)
    assert report["lines_quarantined"] == len(where)
    # a second run: nothing sent again, nothing quarantined twice
    again, session = sync_all(cfg)
    assert again.stats.rows == 0 and rows_sent(session) == 0
    assert len(records(cfg.data_dir)) == len(where)
    assert health.status(cfg)["lines_quarantined"] == len(where)


def test_a_crash_before_the_checkpoint_copies_nothing_twice(tmp_path: Path) -> None:
    cfg, path, _later, where, good = damaged_store(tmp_path)
    # nothing acknowledged: the quarantine is written, no checkpoint moves
    stalled = FakeSession()
    syncer = sync.Syncer(cfg, stalled)
    for serial, p in sync.pending_files(cfg.data_dir):
        syncer.sync_file(serial, p)
    assert len(records(cfg.data_dir)) == len(where)
    assert checkpoints.read(cfg.data_dir, P1, path.stem).offset == 0
    # the process dies here; a torn record at the end of the quarantine file too
    qfile = next((cfg.data_dir / quarantine.QUARANTINE_DIR).rglob("*.jsonl"))
    with qfile.open("ab") as fh:
        fh.write(b'{"serial": "3c39e7aa')
    syncer, _session = sync_all(cfg)
    assert syncer.stats.rows == good
    assert sorted(r["offset"] for r in records(cfg.data_dir)) == sorted(where.values())
    assert health.status(cfg)["lines_quarantined"] == len(where)
    cp = checkpoints.read(cfg.data_dir, P1, path.stem)
    assert cp.complete and cp.offset == path.stat().st_size


def test_damaged_lines_at_the_end_of_a_file(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=4)
    old = date.today() - timedelta(days=3)
    path = write_day(cfg.data_dir, P1, old, p1_rows(10), P1_COLUMNS)
    last_good = path.read_bytes().splitlines()[-1]
    splice(path, {10: [line(stamp_after(path, 10), power="x"), b"\xff\xff\n"]})
    syncer, session = sync_all(cfg)
    assert syncer.stats.rows == 10
    cp = checkpoints.read(cfg.data_dir, P1, path.stem)
    assert cp.complete and cp.offset == path.stat().st_size
    assert cp.last_ts == last_good[:24].decode()  # the newest row sent, not a damaged line
    assert checkpoints.validated(path, cp) == cp
    # device_latest: the newest row sent, found behind the damaged lines
    before = len(session.sent)
    syncer.write_latest()
    (latest,) = session.sent[before:]
    assert "device_latest" in latest.prepared_statement.query_string
    assert store.format_ts(int.from_bytes(latest.values[4], "big", signed=True)) == cp.last_ts
    _, session = sync_all(cfg)
    assert rows_sent(session) == 0 and len(records(cfg.data_dir)) == 2
    # the same while the day is open: the checkpoint sits after the damaged lines
    today = write_day(cfg.data_dir, P1, date.today(), p1_rows(3), P1_COLUMNS)
    splice(today, {3: [b"garbage\n"]})
    sync_all(cfg)
    cp = checkpoints.read(cfg.data_dir, P1, today.stem)
    assert cp.offset == today.stat().st_size and not cp.complete
    assert checkpoints.validated(today, cp) == cp
    _, session = sync_all(cfg)
    assert rows_sent(session) == 0


def test_a_file_of_damaged_lines_only(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    old = date.today() - timedelta(days=3)
    path = store.device_dir(cfg.data_dir, P1) / f"{old}.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(",".join(HEADER).encode() + b"\nnope\nnope again\n")
    sync_all(cfg)
    cp = checkpoints.read(cfg.data_dir, P1, path.stem)
    assert cp.complete and cp.offset == path.stat().st_size and cp.last_ts is None
    assert len(records(cfg.data_dir)) == 2
    assert checkpoints.backlog(cfg.data_dir) == (0, 0)


def test_quarantine_that_cannot_be_written_holds_the_file_there(tmp_path: Path,
                                                                monkeypatch: Any) -> None:
    cfg, path, later, where, _good = damaged_store(tmp_path)

    def full(*_args: Any, **_kwargs: Any) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quarantine.Quarantine, "_append", full)
    sync_all(cfg)
    first_bad = min(where.values())
    cp = checkpoints.read(cfg.data_dir, P1, path.stem)
    assert cp.offset == first_bad and not cp.complete  # up to the first damaged line
    assert checkpoints.read(cfg.data_dir, P1, later.stem).complete  # later files go on
    assert not records(cfg.data_dir)
    monkeypatch.undo()
    sync_all(cfg)
    cp = checkpoints.read(cfg.data_dir, P1, path.stem)
    assert cp.complete and cp.offset == path.stat().st_size
    assert len(records(cfg.data_dir)) == len(where)


def test_log_lines_are_capped(tmp_path: Path, caplog: Any) -> None:
    cfg = config(tmp_path)
    old = date.today() - timedelta(days=3)
    path = write_day(cfg.data_dir, P1, old, p1_rows(3), P1_COLUMNS)
    splice(path, {2: [f"bad line {i} ".encode() * 400 + b"\n" for i in range(200)]})
    with caplog.at_level(logging.INFO):
        sync_all(cfg)
    messages = [r.getMessage() for r in caplog.records if "quarantin" in r.getMessage()]
    assert 5 <= len(messages) <= sync.QUARANTINE_LOG_LINES + 1
    assert all(len(m) < 400 for m in messages)
    assert any(re.search(r"\b200\b", m) for m in messages)  # the total is said once
    assert health.status(cfg)["lines_quarantined"] == 200


def test_power_series_passes_over_quarantined_rows(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    old = date.today() - timedelta(days=3)
    path = write_day(cfg.data_dir, P1, old, p1_rows(10), P1_COLUMNS)
    splice(path, {3: [line(stamp_after(path, 3), power="nan?"),
                      line(stamp_after(path, 3, 700), power="5", extra=quoted("{"))]})
    syncer, _ = sync_all(cfg)
    fresh = sync.Syncer(cfg, FakeSession())
    series = fresh._power_series(P1, str(old))
    assert sum(not math.isnan(v) for v in series) == 10
    assert series[2] == p1_rows(3)[2]["power_w"]  # not the quarantined rows' 5
    assert syncer._power_series(P1, str(old)).tobytes() == series.tobytes()  # kept from the sync


# -- status, metrics, heartbeat ------------------------------------------------------------


def test_status_and_metrics_count_quarantined_lines(tmp_path: Path) -> None:
    cfg, _path, _later, where, _good = damaged_store(tmp_path)
    assert health.status(cfg)["lines_quarantined"] == 0
    sync_all(cfg)
    report = health.status(cfg)
    assert report["lines_quarantined"] == len(where)
    out = tmp_path / "hwpc.prom"
    metrics.write(report, out)
    assert f"hwpc_lines_quarantined {float(len(where))}" in out.read_text()
    assert "quarantined" in health.render(report)


def test_heartbeat_carries_the_drop_and_quarantine_counts(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    assert {"samples_dropped", "extras_dropped", "lines_quarantined"} <= set(
        EXPECTED["heartbeats"])
    for column in ("samples_dropped", "extras_dropped", "lines_quarantined"):
        assert EXPECTED["heartbeats"][column] == "bigint"
        assert f"{column} bigint" in TABLES["heartbeats"]
    cfg = config(tmp_path)
    syncer, session = sync_all(cfg)
    real = health.status

    def status(config: Any, *args: Any) -> dict[str, Any]:
        return {**real(config, *args), "samples_dropped": 7, "extras_dropped": 3,
                "lines_quarantined": 2}

    for patched, expected in ((False, (0, 0, 0)), (True, (7, 3, 2))):
        if patched:
            monkeypatch.setattr(health, "status", status)
        syncer.write_heartbeat(None)
        beat = session.sent[-1]
        names = [c.name for c in beat.prepared_statement.column_metadata]
        values = dict(zip(names, beat.values, strict=True))
        assert tuple(int.from_bytes(values[c], "big", signed=True) for c in (
            "samples_dropped", "extras_dropped", "lines_quarantined")) == expected
