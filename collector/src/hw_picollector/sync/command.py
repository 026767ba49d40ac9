"""``hwpc sync``: the command's loop and one pass of it.

``run`` connects, runs ``sync_once``, and after a good pass applies the store's retention
(store_retention.py) and records it in ``sync/last-sync.json``; a failure is printed as one
line and recorded there too, and nothing is marked synced. ``sync_once`` is one pass: every
pending day file's measurements, then ``device_latest`` and ``site_power``, then the
heartbeat (also when the pass failed). Driver exceptions become one-line DatabaseErrors.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from hw_picollector import checkpoints, store
from hw_picollector.cassandra_session import DatabaseError, connect, explain
from hw_picollector.config import Config
from hw_picollector.sync.progress import RunStats
from hw_picollector.sync.store_retention import retention
from hw_picollector.sync.stream import pending_files
from hw_picollector.sync.syncer import Syncer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _phrased(config: Config) -> Iterator[None]:
    """A driver exception (a refused prepare, a lost node) → the one-line DatabaseError."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "cassandra":
            raise
        assert config.cassandra is not None
        raise DatabaseError(explain(exc, config.cassandra, None)) from exc


def sync_once(config: Config, session: Any, progress: bool) -> RunStats:
    with _phrased(config):
        syncer = Syncer(config, session, progress)
    files = list(pending_files(config.data_dir))
    if progress:
        syncer.stats.total = checkpoints.backlog(config.data_dir)[0]
    error: str | None = None
    try:
        with _phrased(config):
            for serial, path in files:
                syncer.sync_file(serial, path)
            syncer.window.drain()  # every checkpoint final before device_latest and site_power
            syncer.write_latest()
            syncer.write_site_power()
    except DatabaseError as exc:
        error = str(exc)
        raise
    finally:
        syncer._show_progress(final=True)
        try:
            syncer.write_heartbeat(error)
        except Exception as exc:  # after a failure, that failure is the news
            log.log(logging.DEBUG if error else logging.WARNING, "heartbeat not written: %s",
                    exc)
    return syncer.stats


def run(config: Config, once: bool, progress: bool, interval_s: float = 60.0) -> int:
    if config.cassandra is None:
        print(f"hwpc: {config.path}: cassandra: missing, nothing to sync to", file=sys.stderr)
        return 1
    data_dir = config.data_dir
    while True:
        started = time.time()
        rows_before = checkpoints.backlog(data_dir)[0] if not progress else None
        try:
            cluster, session = connect(config.cassandra)
        except DatabaseError as exc:
            _failed(config, str(exc), rows_before)
            if once:
                return 1
            time.sleep(interval_s)
            continue
        try:
            stats = sync_once(config, session, progress)
        except DatabaseError as exc:
            _failed(config, str(exc), rows_before)
            if once:
                return 1
        else:
            compressed, removed = retention(config)
            record = {"finished": store.format_ts(int(time.time() * 1000)),
                      "started": store.format_ts(int(started * 1000)),
                      "rows": stats.rows, "site_power_rows": stats.site_power_rows,
                      "seconds": round(time.time() - started, 3), "ok": True}
            checkpoints.write_last_sync(data_dir, record)
            log.info("synced %d rows (%d site_power) in %.1f s; %d day files compressed, "
                     "%d removed", stats.rows, stats.site_power_rows, time.time() - started,
                     compressed, removed)
            if once:
                return 0
        finally:
            cluster.shutdown()
        time.sleep(interval_s)


def _failed(config: Config, message: str, backlog_rows: int | None) -> None:
    rows = backlog_rows if backlog_rows is not None else checkpoints.backlog(config.data_dir)[0]
    print(f"hwpc: sync failed: {message}; nothing marked synced, {rows} rows stay on this Pi",
          file=sys.stderr)
    last = checkpoints.read_last_sync(config.data_dir) or {}
    last.update({"last_error": message,
                 "last_attempt": store.format_ts(int(time.time() * 1000))})
    checkpoints.write_last_sync(config.data_dir, last)
