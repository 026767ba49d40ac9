"""The sync's wire encoding and in-flight window, without a server.

A fake session prepares statements locally (column types from the real schema) and holds
each request until the test completes it, in any order. Encoded batches are compared byte
for byte with what the driver itself writes for the same rows bound the ordinary way.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cassandra import ConsistencyLevel
from cassandra.cqltypes import (
    BooleanType,
    DateType,
    DoubleType,
    LongType,
    MapType,
    SimpleDateType,
    UTF8Type,
)
from cassandra.protocol import BatchMessage, ColumnMetadata, ProtocolHandler
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, PreparedStatement

from hw_picollector import batches, checkpoints, store, sync
from hw_picollector.cassandra_session import DatabaseError
from hw_picollector.config import parse_config
from hw_picollector.devices.canonical import TEXT_COLUMNS
from hw_picollector.sync import derived, encode, stream
from hw_picollector.tables import EXPECTED, MEASUREMENT_COLUMNS

P1 = "3c39e7aabb01"
KWH = "3c39e7aabb02"
TYPES = {"text": UTF8Type, "double": DoubleType, "date": SimpleDateType,
         "timestamp": DateType, "boolean": BooleanType, "bigint": LongType,
         "map<text, double>": MapType.apply_parameters([UTF8Type, DoubleType])}


class FakeFuture:
    def __init__(self, session: FakeSession, statement: Any):
        self.session = session
        self.statement = statement
        self.callbacks: tuple[Any, ...] = ()

    def add_callbacks(self, callback: Any, errback: Any, callback_args: tuple[Any, ...] = (),
                      errback_args: tuple[Any, ...] = ()) -> None:
        self.callbacks = (callback, errback, callback_args, errback_args)
        self.session.pending.append(self)

    def finish(self, exc: BaseException | None = None) -> None:
        callback, errback, cargs, eargs = self.callbacks
        if exc is None:
            self.session.acked.append(self.statement)
            callback(None, *cargs)
        else:
            errback(exc, *eargs)


class FakeSession:
    """Prepares from the schema; requests wait in `pending` until the test finishes them."""

    def __init__(self, keyspace: str = "hw", seed: int = 1):
        self.keyspace = keyspace
        self.client_protocol_handler = ProtocolHandler
        self.pending: list[FakeFuture] = []
        self.sent: list[Any] = []
        self.acked: list[Any] = []
        self.rng = random.Random(seed)

    def prepare(self, query: str) -> PreparedStatement:
        found = re.match(r"INSERT INTO \w+\.(\w+) \(([^)]*)\)", query)
        assert found
        table, names = found.groups()
        cols = [ColumnMetadata(self.keyspace, table, n.strip(), TYPES[EXPECTED[table][n.strip()]])
                for n in names.split(",")]
        if "USING TIMESTAMP" in query:
            cols.append(ColumnMetadata(self.keyspace, table, "[timestamp]", DateType))
        key = {"measurements": [0, 1, 2], "site_power": [0, 1]}.get(table, [0])
        return PreparedStatement(cols, hashlib.sha256(query.encode()).digest()[:16], key,
                                 query, self.keyspace, 5, None, None)

    def execute_async(self, statement: Any) -> FakeFuture:
        self.sent.append(statement)
        return FakeFuture(self, statement)

    def complete_some(self) -> None:
        """Finish one or a few of the requests in flight, picked at random."""
        for _ in range(min(len(self.pending), self.rng.choice((1, 1, 1, 2, 3)))):
            self.pending.pop(self.rng.randrange(len(self.pending))).finish()


class Immediate(FakeSession):
    """Answers at once; the statement "bad" fails its first `failures` attempts."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def execute_async(self, statement: Any) -> FakeFuture:
        session = self

        class Answered(FakeFuture):
            def add_callbacks(self, *args: Any, **kwargs: Any) -> None:
                super().add_callbacks(*args, **kwargs)
                session.pending.remove(self)
                if statement == "bad" and session.failures:
                    session.failures -= 1
                    self.finish(TimeoutError("slow node"))
                else:
                    self.finish()

        self.sent.append(statement)
        return Answered(self, statement)


def config(tmp: Path, **cassandra: Any) -> Any:
    return parse_config({
        "site_id": "SITE01", "data_dir": str(tmp / "data"), "clock_sync": "trust",
        "mdns": False, "host": "h1",
        "devices": [{"serial": P1, "product_type": "HWE-P1", "role": "grid",
                     "address": "127.0.0.1:1"},
                    {"serial": KWH, "product_type": "HWE-KWH1", "role": "production",
                     "address": "127.0.0.1:2"}],
        "cassandra": {"hosts": ["127.0.0.1"], "keyspace": "hw", **cassandra}})


def write_day(data: Path, serial: str, day: date, rows: list[dict[str, Any]],
              columns: tuple[str, ...]) -> Path:
    start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
    store.write_history(data, serial, columns,
                        ((start + i * 1000 + 7, values) for i, values in enumerate(rows)))
    return store.device_dir(data, serial) / f"{day}.csv"


def p1_rows(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(n):
        values: dict[str, Any] = {"power_w": float(i % 7 - 3), "energy_import_kwh": 1000 + i / 8,
                                  "voltage_l1_v": 230.5, "tariff": 2.0}
        if i % 5:
            values["gas_ts"] = "2026-01-01T00:00:00"
        if i % 11 == 0:
            values["power_l2_w"] = -0.0
        if i % 13 == 0:
            values["mystery_w"] = 1.25  # not a column of the file: goes to extra
        if i % 17 == 0:
            values["not_in_table_w"] = 3.0  # a column of the file the table lacks: extra
        rows.append(values)
    return rows


P1_COLUMNS = ("tariff", "energy_import_kwh", "power_w", "power_l1_w", "power_l2_w",
              "voltage_l1_v", "gas_ts", "not_in_table_w")


def reference_entry(stmt: PreparedStatement, params: list[Any]) -> bytes:
    """The driver's own encoding of one statement in a BATCH body."""
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    batch.add(stmt, params)
    message = BatchMessage(BatchType.UNLOGGED, batch._statements_and_parameters,
                           ConsistencyLevel.ONE)
    return wire(message)[3:-6]  # minus type, count and the trailer (consistency, flags)


def wire(message: Any, handler: Any = ProtocolHandler) -> bytes:
    return bytes(handler.encode_message(message, 0, 5, None, False))[9:]  # minus frame header


def expected_params(syncer: sync.Syncer, serial: str, day: str, header: list[str],
                    fields: list[str]) -> tuple[PreparedStatement, list[Any]]:
    """What the row means, bound through the driver: same statement, plain Python values."""
    cols, params = [], []
    for name, text in zip(header[1:-1], fields[1:-1], strict=True):
        if text and name in MEASUREMENT_COLUMNS:
            cols.append(name)
            params.append(text if name in TEXT_COLUMNS else float(text))
    # statements put doubles first, then text columns
    order = sorted(range(len(cols)), key=lambda i: cols[i] in TEXT_COLUMNS)
    cols, params = [cols[i] for i in order], [params[i] for i in order]
    index = {n: i for i, n in enumerate(header)}
    extra = syncer._extra(fields, tuple(header), index)
    if extra:
        cols.append("extra")
        params.append(extra)
    stmt = syncer.insert_for(tuple(cols))
    return stmt, ["SITE01", serial, date.fromisoformat(day), store.parse_ts(fields[0]), *params]


def test_encoded_rows_are_the_drivers_own_bytes(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=7, concurrency=3)
    day = date(2026, 1, 5)
    path = write_day(cfg.data_dir, P1, day, p1_rows(60), P1_COLUMNS)
    session = FakeSession()
    syncer = sync.Syncer(cfg, session)
    header = store.read_header(path)
    rows = list(store.scan(path))
    encoder = encode.FileEncoder(syncer, P1, str(day), header)
    for _offset, ts, fields in rows:
        stmt, params = expected_params(syncer, P1, str(day), header, fields)
        assert encoder.encode(ts, fields) == reference_entry(stmt, params)
    assert len(syncer.inserts) <= 8  # one INSERT per set of non-empty columns


def test_catch_all_insert_past_the_shape_limit(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(encode, "MAX_SHAPES", 1)  # read where it is used
    cfg = config(tmp_path)
    day = date(2026, 1, 5)
    path = write_day(cfg.data_dir, P1, day, p1_rows(30), P1_COLUMNS)
    syncer = sync.Syncer(cfg, FakeSession())
    header = store.read_header(path)
    encoder = encode.FileEncoder(syncer, P1, str(day), header)
    index = {n: i for i, n in enumerate(header)}
    cols = tuple(sorted((c for c in header[1:-1] if c in MEASUREMENT_COLUMNS),
                        key=lambda c: c in TEXT_COLUMNS))
    catch_all = 0
    for _offset, ts, fields in store.scan(path):
        entry = encoder.encode(ts, fields)
        if entry.startswith(syncer.inserts[next(iter(syncer.inserts))].query_id, 3):
            stmt, params = expected_params(syncer, P1, str(day), header, fields)
        else:  # every column bound, the empty ones unset
            catch_all += 1
            stmt = syncer.inserts[(*cols, "extra")]
            extra = syncer._extra(fields, tuple(header), index)
            params = ["SITE01", P1, day, ts, *(
                UNSET_VALUE if not fields[index[c]] else fields[index[c]]
                if c in TEXT_COLUMNS else float(fields[index[c]]) for c in cols),
                extra or UNSET_VALUE]
        assert entry == reference_entry(stmt, params)
    assert len(syncer.inserts) == 2
    assert 0 < catch_all < 30


def test_a_batch_frame_matches_the_drivers(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=5)
    session = FakeSession()
    syncer = sync.Syncer(cfg, session)
    day = date(2026, 1, 5)
    path = write_day(cfg.data_dir, P1, day, p1_rows(12), P1_COLUMNS)
    syncer.sync_file(P1, path)
    header = store.read_header(path)
    rows = [r[2] for r in store.scan(path)]
    assert [len(s) for s in session.sent] == [5, 5, 2]
    handler = session.client_protocol_handler
    for n, stmt in enumerate(session.sent):
        reference = BatchStatement(batch_type=BatchType.UNLOGGED)
        for fields in rows[n * 5:(n + 1) * 5]:
            reference.add(*expected_params(syncer, P1, str(day), header, fields))
        assert stmt.routing_key == reference.routing_key
        assert stmt.keyspace == reference.keyspace
        ours = BatchMessage(BatchType.UNLOGGED, stmt._statements_and_parameters,
                            ConsistencyLevel.LOCAL_QUORUM, None, 1_700_000_000_000_000, "hw")
        theirs = BatchMessage(BatchType.UNLOGGED, reference._statements_and_parameters,
                              ConsistencyLevel.LOCAL_QUORUM, None, 1_700_000_000_000_000, "hw")
        assert wire(ours, handler) == wire(theirs)
    with pytest.raises(TypeError):  # never sent without the handler that knows the format
        wire(BatchMessage(BatchType.UNLOGGED, session.sent[0]._statements_and_parameters,
                          ConsistencyLevel.ONE))


def test_checkpoints_follow_the_acknowledged_prefix_only(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    cfg = config(tmp_path, batch_rows=10, concurrency=8)
    old = date.today() - timedelta(days=3)
    paths = [write_day(cfg.data_dir, P1, old, p1_rows(330), P1_COLUMNS),
             write_day(cfg.data_dir, KWH, old, p1_rows(250), ("power_w", "voltage_v"))]
    session = FakeSession(seed=7)
    syncer = sync.Syncer(cfg, session)
    ends: dict[int, tuple[str, int]] = {}  # id(statement) -> (serial, end offset)
    acked: dict[str, set[int]] = {P1: set(), KWH: set()}
    written: list[tuple[str, checkpoints.Checkpoint]] = []
    real_send = syncer._send_rows

    def send_rows(track: Any, encoder: Any, rows: Any, offset: int, last_ts: str) -> None:
        before = len(session.sent)
        real_send(track, encoder, rows, offset, last_ts)
        ends[id(session.sent[before])] = (track.serial, offset)

    def write(data_dir: Path, serial: str, day: str, cp: checkpoints.Checkpoint) -> None:
        for stmt in session.acked:
            owner, end = ends[id(stmt)]
            acked[owner].add(end)
        # every batch ending at or before the checkpoint was acknowledged
        sent = sorted(end for s, end in ends.values() if s == serial)
        assert all(end in acked[serial] for end in sent if end <= cp.offset), cp
        written.append((serial, cp))
        real_write(data_dir, serial, day, cp)

    real_write = checkpoints.write
    monkeypatch.setattr(syncer, "_send_rows", send_rows)
    monkeypatch.setattr(checkpoints, "write", write)
    monkeypatch.setattr(stream, "CHECKPOINT_ROWS", 25)  # read where it is used
    real_wait = syncer.window._wait

    def wait() -> None:  # before blocking: let the "server" answer some, out of order
        session.complete_some()
        real_wait()

    monkeypatch.setattr(syncer.window, "_wait", wait)
    for serial, path in zip((P1, KWH), paths, strict=True):
        syncer.sync_file(serial, path)
    syncer.window.drain()
    assert syncer.stats.rows == 580
    assert len(written) > 10
    for serial, path in zip((P1, KWH), paths, strict=True):
        cp = checkpoints.read(cfg.data_dir, serial, str(old))
        assert cp.complete and cp.offset == path.stat().st_size
        assert cp.rows == sum(1 for _ in store.scan(path))
        offsets = [c.offset for s, c in written if s == serial]
        assert offsets == sorted(offsets)  # never backwards


def test_window_retries_then_gives_up() -> None:
    done: list[str] = []
    session = Immediate(failures=3)
    window = batches.Window(session, 2, delay=lambda n: 0.01 * n)
    for name in ("a", "bad", "b"):
        window.send(name, lambda name=name: done.append(name))
    window.drain()
    assert sorted(done) == ["a", "b", "bad"]
    assert session.sent.count("bad") == 4

    session = Immediate(failures=batches.RETRIES + 1)
    window = batches.Window(session, 2, describe=lambda e: f"described {e}", delay=lambda n: 0)
    done.clear()
    with pytest.raises(DatabaseError, match="described slow node"):
        window.send("bad", lambda: done.append("bad"))
        window.drain()
    assert done == []
    assert session.sent.count("bad") == batches.RETRIES + 1


def test_site_power_rows_encode_like_the_driver(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=4)
    session = FakeSession()
    syncer = sync.Syncer(cfg, session)
    track = derived._DayTrack("2026-01-05", 100, 0)
    rows = [(0, 1.5, 2.0, 3.5), (1, None, 2.0, None), (2, -0.0, 0.0, 0.0), (3, 1.0, None, None),
            (9, 4.0, 5.0, 9.0)]
    syncer._write_site_rows(track, iter(rows))
    assert [len(s) for s in session.sent] == [4, 1]
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    reference = BatchStatement(batch_type=BatchType.UNLOGGED)
    for second, g, p, c in rows[:4]:
        reference.add(syncer._site_power, ("SITE01", date(2026, 1, 5), start + second * 1000,
                                           *(UNSET_VALUE if v is None else v for v in (g, p, c))))
    ours = BatchMessage(BatchType.UNLOGGED, session.sent[0]._statements_and_parameters,
                        ConsistencyLevel.ONE)
    theirs = BatchMessage(BatchType.UNLOGGED, reference._statements_and_parameters,
                          ConsistencyLevel.ONE)
    assert wire(ours, session.client_protocol_handler) == wire(theirs)
    assert session.sent[0].routing_key == reference.routing_key
    for future in list(session.pending):
        future.finish()
    syncer.window.drain()
    cp = checkpoints.read(cfg.data_dir, sync.SITE_POWER_DIR, "2026-01-05")
    assert (cp.offset, cp.rows, cp.complete) == (100, 5, False)


def test_extra_json_and_unknown_columns_reach_the_map(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    syncer = sync.Syncer(cfg, FakeSession())
    header = ["ts", "power_w", "odd_w", "extra"]
    encoder = encode.FileEncoder(syncer, P1, "2026-01-05", header)
    fields = ["2026-01-05T00:00:00.000Z", "1", "2.5", json.dumps({"a": 1, "b": True, "c": "x"})]
    entry = encoder.encode(store.parse_ts(fields[0]), fields)
    stmt = syncer.inserts[("power_w", "extra")]
    assert entry == reference_entry(stmt, ["SITE01", P1, date(2026, 1, 5),
                                           store.parse_ts(fields[0]), 1.0,
                                           {"odd_w": 2.5, "a": 1.0}])


def test_power_series_from_the_sync_pass_equals_a_fresh_read(tmp_path: Path) -> None:
    cfg = config(tmp_path, batch_rows=50)
    old = date.today() - timedelta(days=3)
    rows = p1_rows(400)
    for i in range(0, 400, 9):
        rows[i].pop("power_w")  # seconds without a power reading
    write_day(cfg.data_dir, P1, old, rows, P1_COLUMNS)
    write_day(cfg.data_dir, KWH, old, p1_rows(300), ("power_w", "voltage_v"))
    session = FakeSession()
    syncer = sync.Syncer(cfg, session)
    for serial, path in sync.pending_files(cfg.data_dir):
        syncer.sync_file(serial, path)
    while session.pending:
        session.complete_some()
    syncer.window.drain()
    assert len(syncer._series) == 2
    fresh = sync.Syncer(cfg, FakeSession())
    for serial in (P1, KWH):
        kept = syncer._power_series(serial, str(old))
        read = fresh._power_series(serial, str(old))
        assert kept.tobytes() == read.tobytes()
        assert sum(not math.isnan(v) for v in read) in (400 - 45, 300)
    assert not syncer._series


def test_a_refused_write_fails_at_once() -> None:
    from cassandra import Unauthorized

    class Refused(Immediate):
        def execute_async(self, statement: Any) -> FakeFuture:
            future = FakeFuture(self, statement)
            self.sent.append(statement)
            session = self

            class Answered(FakeFuture):
                def add_callbacks(self, *args: Any, **kwargs: Any) -> None:
                    super().add_callbacks(*args, **kwargs)
                    session.pending.remove(self)
                    self.finish(Unauthorized("no MODIFY permission"))

            return Answered(self, future.statement)

    session = Refused(failures=0)
    window = batches.Window(session, 4, delay=lambda n: 60.0)
    with pytest.raises(DatabaseError, match="MODIFY"):
        window.send("x", lambda: None)
        window.drain()
    assert session.sent == ["x"]


def sync_all(cfg: Any, session: Any = None) -> tuple[sync.Syncer, Any]:
    """Every pending file of cfg's store through one Syncer, acknowledged at once."""
    session = session or Immediate(failures=0)
    syncer = sync.Syncer(cfg, session)
    for serial, path in sync.pending_files(cfg.data_dir):
        syncer.sync_file(serial, path)
    syncer.window.drain()
    return syncer, session
