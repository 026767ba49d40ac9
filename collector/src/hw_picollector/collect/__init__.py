"""`hwpc collect`: poll every device on its own schedule, keep every sample durably.

Every device is polled on a monotonic grid aligned to whole wall-clock intervals, so the
schedule never drifts. One polling thread drives all devices' connections with a selector
(non-blocking exchanges, each with its own deadline), so one slow or dead device never
delays another, and a tick costs one wake-up instead of one per device. Samples go
through a queue to the main thread, the single owner of the store, which writes and
fsyncs them every ``flush_interval_s``, keeps the systemd watchdog fed and publishes the
per-device state that ``hwpc status`` shows.

The watchdog is fed only while the polling thread makes progress: it stamps a heartbeat at
every turn (at least every ``HEARTBEAT_S``). A polling thread that ends on an unexpected
error, or makes no progress for ``POLL_STALL_S``, ends the process non-zero (logged), so
systemd restarts it rather than keep a collector that collects nothing.

One job per module, each importing only those below it (the ``collect-layers`` contract in
the repository's pyproject.toml):

- ``command.py``: ``run``, the command: the collector and the signals that stop it.
- ``collector.py``: ``Collector``, the main thread: clock gate, store, flushes, watchdog,
  the state it publishes (``POLL_STALL_S``).
- ``poll_loop.py``: ``PollLoop``, the poll thread: one selector over every device
  (``HEARTBEAT_S``, ``PollLoopFailed``).
- ``device.py``: ``DevicePoller``, one device's polls, schedule, back-off and mDNS
  re-resolution; ``DeviceState``, its counters; ``Watch``, its socket in the selector.
- ``damage.py``: ``find_damaged``, the damaged lines the sync has not acknowledged yet.
- ``state_file.py``: ``write_state``, the state file written atomically, or in place on a
  full disk. Its document (keys, versions, parser) is ../state_document.py, which
  `hwpc status` reads without importing this package.
"""

from hw_picollector.collect.collector import POLL_STALL_S, Collector
from hw_picollector.collect.command import run
from hw_picollector.collect.damage import Damage, find_damaged
from hw_picollector.collect.device import DevicePoller, DeviceState
from hw_picollector.collect.poll_loop import HEARTBEAT_S, PollLoop, PollLoopFailed
from hw_picollector.collect.state_file import STATE_FILE, write_state

__all__ = [
    "HEARTBEAT_S",
    "POLL_STALL_S",
    "STATE_FILE",
    "Collector",
    "Damage",
    "DevicePoller",
    "DeviceState",
    "PollLoop",
    "PollLoopFailed",
    "find_damaged",
    "run",
    "write_state",
]
