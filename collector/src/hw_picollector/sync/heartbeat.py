"""The ``heartbeats`` row: one per sync run, also after a run that failed once connected.

It carries the Pi's status (health.py): version, uptime, whether the collector runs, the
backlog, free disk, clock state, the rows this run synced and its error, and (when the
table has them) the counts of samples dropped, extras dropped and lines quarantined. A
database older than the Pi lacks those counts: the heartbeat is then written without them.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from hw_picollector import __version__, batches
from hw_picollector.cassandra_session import explain
from hw_picollector.config import CassandraConfig, Config
from hw_picollector.sync.progress import RunStats

log = logging.getLogger(__name__)

HEARTBEAT_COLUMNS = ("host", "day", "ts", "site_id", "version", "uptime_s", "collector_active",
                     "backlog_rows", "backlog_bytes", "disk_free_mb", "clock_synchronised",
                     "rows_synced", "last_error")
HEARTBEAT_COUNTS = ("samples_dropped", "extras_dropped", "lines_quarantined")


class Heartbeat:
    """The Syncer's heartbeat (the attributes below are the Syncer's, set in syncer.py)."""

    config: Config
    cfg: CassandraConfig
    session: Any
    ks: str
    host: str
    stats: RunStats
    _heartbeat: Any
    _heartbeat_counts: bool

    def _prepare_heartbeats(self) -> None:
        from cassandra import InvalidRequest

        self._heartbeat_counts = True
        try:
            self._heartbeat = self._prepare_heartbeat(HEARTBEAT_COLUMNS + HEARTBEAT_COUNTS)
        except InvalidRequest:
            # A database older than this Pi: the sync goes on, the heartbeat without counts.
            log.warning("table %s.heartbeats lacks %s (run: hwpc db init): heartbeats are "
                        "written without them", self.ks, ", ".join(HEARTBEAT_COUNTS))
            self._heartbeat_counts = False
            self._heartbeat = self._prepare_heartbeat(HEARTBEAT_COLUMNS)

    def _prepare_heartbeat(self, cols: tuple[str, ...]) -> Any:
        return self.session.prepare(
            f"INSERT INTO {self.ks}.heartbeats ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' * len(cols))})")

    def write_heartbeat(self, error: str | None) -> None:
        """One row per run. Retried with backoff after a good run; after a failed one a
        single attempt (the database is the likely cause, and the failure is what counts)."""
        from hw_picollector import health

        report = health.status(self.config)
        now_ms = time.time_ns() // 1_000_000
        window = batches.Window(self.session, 1, lambda exc: explain(exc, self.cfg, None),
                                retries=0 if error else batches.RETRIES)
        values = [
            self.host, datetime.fromtimestamp(now_ms / 1000, UTC).date(), now_ms,
            self.config.site_id, __version__, report["uptime_s"], report["service_active"],
            report["backlog_rows"], report["backlog_bytes"], report["disk_free_mb"],
            report["clock_synchronised"], self.stats.rows, error]
        if self._heartbeat_counts:
            values += [int(report.get(name) or 0) for name in HEARTBEAT_COUNTS]
        window.send(self._heartbeat.bind(values), lambda: None)  # nothing to do once acked
        window.drain()
