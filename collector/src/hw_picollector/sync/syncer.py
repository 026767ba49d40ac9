"""``Syncer``: one sync run's connection to Cassandra and what it has done.

It prepares the statements, holds the window of batches in flight (batches.py), the run's
counts (progress.py) and the value tables the encoding shares across files, and brings
the run's jobs together as one object: the measurements' checkpointed stream (stream.py),
the derived tables (derived.py) and the heartbeat (heartbeat.py). command.py drives it.
"""

from __future__ import annotations

import socket
from array import array
from typing import Any

from hw_picollector import batches, quarantine
from hw_picollector.batches import value
from hw_picollector.cassandra_session import driver_quiet, explain
from hw_picollector.catalog import Role
from hw_picollector.config import Config
from hw_picollector.sync.derived import DerivedTables
from hw_picollector.sync.encode import DOUBLE_VALUE, Values
from hw_picollector.sync.heartbeat import Heartbeat
from hw_picollector.sync.progress import RunStats
from hw_picollector.sync.stream import MeasurementStream


class Syncer(MeasurementStream, DerivedTables, Heartbeat):
    def __init__(self, config: Config, session: Any, progress: bool = False):
        assert config.cassandra is not None
        self.config = config
        self.cfg = config.cassandra
        self.session = session
        self.ks = self.cfg.keyspace
        self.progress = progress
        self.stats = RunStats()
        self.inserts: dict[tuple[str, ...], Any] = {}
        self._power_serials = {d.serial for d in config.devices
                               if d.role in (Role.GRID, Role.PRODUCTION)}
        self._series: dict[tuple[str, str], tuple[int, array[float]]] = {}
        self.double_values = Values(lambda text: DOUBLE_VALUE(8, float(text)))
        self.text_values = Values(lambda text: value(text.encode("utf-8")))
        self.host = config.host or socket.gethostname()
        self.quarantine = quarantine.Quarantine(config.data_dir)
        from cassandra.query import UNSET_VALUE

        self.unset = UNSET_VALUE
        self.protocol = int(getattr(getattr(session, "cluster", None), "protocol_version", 5))
        batches.install(session)
        self.window = batches.Window(session, self.cfg.concurrency,
                                     lambda exc: explain(exc, self.cfg, None))
        with driver_quiet():
            self._prepare_all()

    def _prepare_all(self) -> None:
        self._prepare_derived()  # site_power, device_latest
        self._prepare_heartbeats()
