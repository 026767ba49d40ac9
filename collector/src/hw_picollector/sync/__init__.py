"""`hwpc sync`: drain the local store into Cassandra with an exactly-once effect.

How exactly-once holds, whatever fails in between:
- every row is written as an idempotent upsert keyed by (site, device, day, ts), so sending
  a row twice changes nothing;
- a day file's checkpoint (byte offset + last ts) moves only after Cassandra acknowledged
  every row before it, and is written atomically; a crash anywhere replays at most the
  unacknowledged tail;
- the file is fsync'd before it is read, so no row is sent that a power cut could take back;
- a failure leaves the checkpoint where it was and the store untouched: nothing is marked
  synced, nothing is deleted.

Rows are sent as per-partition unlogged batches (one device-day file is one partition) of
at most ``batch_rows`` rows: one mutation each, which Cassandra keeps out of its batch size
warnings (those guard batches across partitions). Never a batch across partitions, never
CQL built from values. The files are streamed: a block is read, its rows encoded straight
to wire form (see batches.py) and sent, with at most ``concurrency`` batches in flight
across files; acknowledgements may arrive in any order, and a file's checkpoint advances
only over the contiguous run of acknowledged batches from its start. Memory stays flat
whatever the backlog.

A complete line that is not a row the sync can send (damaged, a field over 128 KiB, a value
that is not a number, an ``extra`` cell that is not a JSON object) is quarantined: copied,
fsync'd, to ``<data_dir>/quarantine`` (see quarantine.py) before the checkpoint may move past
it; the rows and files after it go on. Rows are checked in bulk: only a block or a row that
fails is looked at line by line.

The modules, top to bottom: each imports only modules of the items below its own, and the
modules of one item never import each other (`sync-layers` in collector/pyproject.toml):
- command.py: ``run`` (the ``hwpc sync`` loop) and ``sync_once`` (one pass);
- syncer.py: ``Syncer``, one run's statements, window and counts, made of the three jobs below;
  store_retention.py: ``retention``, compress and remove synced day files after a good run;
- stream.py: the measurements, each day file streamed from its checkpoint, which moves
  only over acknowledged batches (``pending_files``, ``MeasurementStream``);
  derived.py: ``device_latest`` and ``site_power``, from what was acknowledged;
  heartbeat.py: the run's ``heartbeats`` row;
- encode.py: a row's CSV fields → a pre-encoded INSERT entry of a batch body;
  progress.py: ``RunStats`` and the progress bar;
  days.py: a day file's UTC day: its start, and when it is closed.
"""

from __future__ import annotations

from hw_picollector.sync.command import run, sync_once
from hw_picollector.sync.derived import SITE_POWER_DIR, balance
from hw_picollector.sync.progress import RunStats
from hw_picollector.sync.store_retention import retention
from hw_picollector.sync.stream import QUARANTINE_LOG_LINES, pending_files
from hw_picollector.sync.syncer import Syncer

__all__ = [
    "QUARANTINE_LOG_LINES",
    "SITE_POWER_DIR",
    "RunStats",
    "Syncer",
    "balance",
    "pending_files",
    "retention",
    "run",
    "sync_once",
]
