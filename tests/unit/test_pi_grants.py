"""A Pi's login role may write exactly the tables its sync writes to, and read none.

The tables come from the sync itself: a whole `sync_once` (measurements, device_latest,
site_power, heartbeat) runs against a session that records every statement it is asked to
prepare or run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hw_picollector import sync
from hw_picollector_controller import schema
from tests.unit.test_sync_batches import (
    KWH,
    P1,
    P1_COLUMNS,
    Immediate,
    config,
    p1_rows,
    write_day,
)

WRITE = re.compile(r"^(?:INSERT INTO|UPDATE|DELETE FROM) (\w+)\.(\w+)\b")


class Recording(Immediate):
    """Answers every request at once and remembers the CQL of every statement."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.queries: list[str] = []

    def prepare(self, query: str) -> Any:
        self.queries.append(query)
        return super().prepare(query)

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self.queries.append(str(getattr(query, "query_string", query)))
        raise AssertionError(f"the sync ran a statement outside its prepared writes: {query}")


def test_pi_grants_are_exactly_the_tables_the_sync_writes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    day = datetime.now(UTC).date() - timedelta(days=2)  # closed: site_power is written too
    write_day(cfg.data_dir, P1, day, p1_rows(50), P1_COLUMNS)
    write_day(cfg.data_dir, KWH, day, [{"power_w": -100.0 - i, "energy_import_kwh": 5.0}
                                       for i in range(40)], ("power_w", "energy_import_kwh"))
    session = Recording()
    stats = sync.sync_once(cfg, session, progress=False)
    assert stats.rows == 90 and stats.site_power_rows > 0
    assert session.queries
    written: set[str] = set()
    for query in session.queries:
        found = WRITE.match(query)
        assert found, f"not a write: {query}"
        assert found.group(1) == "hw"
        written.add(found.group(2))
    assert len(schema.PI_WRITE_TABLES) == len(set(schema.PI_WRITE_TABLES))
    assert set(schema.PI_WRITE_TABLES) == written
    assert set(schema.PI_WRITE_TABLES) <= set(schema.TABLES)


def test_a_pi_role_is_granted_modify_on_those_tables_only() -> None:
    wanted = schema.wanted_permissions("hw", read_only=False)
    assert wanted == {(f"<table hw.{t}>", "MODIFY") for t in schema.PI_WRITE_TABLES}
    assert schema.wanted_permissions("hw", read_only=True) == {("<keyspace hw>", "SELECT")}


def test_a_refused_write_names_the_grants_a_pi_needs(tmp_path: Path) -> None:
    from cassandra import Unauthorized

    from hw_picollector.cassandra_session import explain

    assert config(tmp_path).cassandra is not None
    line = explain(Unauthorized("User pi_x has no MODIFY permission on <table hw.heartbeats>"),
                   config(tmp_path).cassandra, "pi_x")
    assert "\n" not in line and "permission denied" in line
    assert "SELECT" not in line.split(");", 1)[1]
    assert all(table in line for table in schema.PI_WRITE_TABLES)
    assert "hwpc db create-role" in line
