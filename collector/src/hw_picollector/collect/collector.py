"""The collector's main thread (`Collector`): waits for the clock, starts the poll loop
(poll_loop.py), writes the samples it queues to the store and fsyncs them every
``flush_interval_s``, feeds the systemd watchdog while the loop makes progress, and publishes
the state file (state_file.py) every flush. The store's only writer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from hw_picollector import __version__, clock, sdnotify
from hw_picollector.collect.damage import find_damaged
from hw_picollector.collect.device import DevicePoller, DeviceState, Shared
from hw_picollector.collect.poll_loop import PollLoop
from hw_picollector.collect.state_file import STATE_FILE, write_state
from hw_picollector.config import Config
from hw_picollector.devices.canonical import columns
from hw_picollector.files import disk_free_mb
from hw_picollector.state_document import CollectorState, DamageSnapshot, DeviceSnapshot
from hw_picollector.store import Store, format_ts

log = logging.getLogger(__name__)

DAMAGED_FILES_SHOWN = 10  # per device, in the state file
POLL_STALL_S = 10.0  # no turn for this long: the poll loop is stuck, the process ends


class Collector:
    def __init__(self, config: Config):
        self.config = config
        self.shared = Shared()
        self.store = Store(config.data_dir, columns, max_pending_rows=config.max_pending_rows)
        self.pollers: list[DevicePoller] = []
        self.loop: PollLoop | None = None
        self.started = time.time()
        self.clock_ok = False
        self.clock_reason = ""
        self._disk_low = False
        self._write_error: str | None = None
        self._held_back: set[str] = set()
        self._dropping: dict[str, int] = {}  # serial → samples dropped before this episode
        # serial → damaged lines found, and the first DAMAGED_FILES_SHOWN files holding them
        self._damage: dict[str, tuple[int, tuple[DamageSnapshot, ...]]] = {}
        self._state_path = config.data_dir / STATE_FILE

    def stop(self, *_: object) -> None:
        self.shared.stop.set()
        if self.loop is not None:
            self.loop.wake()

    def run(self) -> int:
        cfg = self.config
        for dev in cfg.devices:
            last = self.store.open_device(dev.serial, dev.product_type)
            if last >= 0:
                log.info("%s: resuming after %s", dev.serial, format_ts(last))
        threading.Thread(target=self._find_damage, name="damage-scan", daemon=True).start()
        sdnotify.notify("READY=1")
        watchdog = sdnotify.watchdog_interval_s()
        if not self._wait_for_clock(watchdog):
            self._publish()
            return 0
        start_mono = _aligned_start(cfg.poll_interval_s)
        self.pollers = [DevicePoller(cfg, d, self.shared, start_mono, self.store.encoder(d.serial))
                        for d in cfg.devices]
        self.loop = PollLoop(self.pollers, self.shared.stop, cfg.request_timeout_s)
        self.loop.start()
        log.info("collecting %d device(s) every %.3g s into %s", len(self.pollers),
                 cfg.poll_interval_s, cfg.data_dir)
        sdnotify.notify(f"STATUS=collecting {len(self.pollers)} device(s)")
        next_flush = time.monotonic() + cfg.flush_interval_s
        next_dog = time.monotonic()
        failed = False
        while not self.shared.stop.is_set():
            now = time.monotonic()
            if not self._polling(now):
                failed = True
                break
            if watchdog and now >= next_dog:
                sdnotify.notify("WATCHDOG=1")
                next_dog = now + watchdog
            if now >= next_flush:
                self._flush()
                next_flush = now + cfg.flush_interval_s
            deadline = min(next_flush, next_dog if watchdog else next_flush)
            self.shared.stop.wait(max(0.0, deadline - time.monotonic()))
        self.stop()
        if not failed:  # polls under way may finish (a stuck loop would not)
            self.loop.join(timeout=cfg.request_timeout_s + 1)
        failed = failed or self.loop.error is not None
        if failed:
            sdnotify.notify("STATUS=polling failed, see the log")
        self._flush()
        self.store.close()
        if self.store.pending_rows():
            log.error("stopped with %d sample(s) not written: %s", self.store.pending_rows(),
                      self.store.write_error)
            return 1
        if failed:
            log.error("stopped because polling failed (every buffered sample written): "
                      "exit code 1, for systemd to restart the collector")
            return 1
        log.info("stopped; every buffered sample written")
        return 0

    def _polling(self, now: float) -> bool:
        """Whether the poll loop still makes progress (else logged: the process ends)."""
        loop = self.loop
        assert loop is not None
        if loop.error is not None:
            return False  # logged by the loop, with its traceback
        if not loop.is_alive():
            log.critical("the poll loop ended unexpectedly: ending the collector")
            return False
        stalled = now - loop.heartbeat
        if stalled > POLL_STALL_S:
            log.critical("the poll loop has made no progress for %.0f s (a poll that never "
                         "returns?): ending the collector", stalled)
            return False
        return True

    def _wait_for_clock(self, watchdog: float | None) -> bool:
        cfg = self.config
        announced = False
        while not self.shared.stop.is_set():
            self.clock_ok, self.clock_reason = clock.clock_state(cfg.clock_sync, cfg.clock_marker)
            if self.clock_ok:
                if announced:
                    log.info("clock synchronised (%s): starting", self.clock_reason)
                return True
            if not announced:
                log.warning("no sample will be stamped until the clock is synchronised: %s",
                            self.clock_reason)
                sdnotify.notify("STATUS=waiting for time synchronisation")
                self._publish()
                announced = True
            if watchdog:
                sdnotify.notify("WATCHDOG=1")
            self.shared.stop.wait(1.0 if not watchdog else min(1.0, watchdog))
        return False

    def _drain(self) -> None:
        by_serial = {p.dev.serial: p.state for p in self.pollers}
        while True:
            try:
                serial, ts_ms, line = self.shared.samples.get_nowait()
            except queue.Empty:
                return
            st = by_serial[serial]
            if self.store.append_line(serial, ts_ms, line):
                st.samples += 1
                st.last_ts = format_ts(ts_ms)
                if serial in self._held_back:
                    log.info("%s: clock passed the last stored sample again", serial)
                    self._held_back.discard(serial)
            else:
                if serial not in self._held_back:
                    log.warning("%s: clock went back behind the last stored sample (%s): "
                                "no sample is stored until it passes it again", serial,
                                format_ts(self.store.last_ts(serial)))
                    self._held_back.add(serial)
                st.clock_refused += 1

    def _flush(self) -> None:
        self._drain()
        self.store.flush()
        error = self.store.write_error
        # One line when writing stops, one when it works again: the reason's text changes
        # within one outage (one part per failing device), and the state file has the latest.
        if bool(error) != bool(self._write_error):
            if error:
                log.error("cannot write the store (%s): %d rows held in memory, retrying "
                          "every %.3g s", error, self.store.pending_rows(),
                          self.config.flush_interval_s)
            else:
                log.info("store writable again: buffered rows written")
            self._write_error = error
        self._count_dropped()
        self._publish()

    def _count_dropped(self) -> None:
        """Samples the store dropped (unwritable beyond ``max_pending_rows``): counted per
        device, one log line when a device starts losing samples, one when it stops."""
        for poller in self.pollers:
            serial, st = poller.dev.serial, poller.state
            dropped = self.store.dropped(serial)
            if dropped > st.samples_dropped and serial not in self._dropping:
                log.error("%s: %d rows held in memory (max_pending_rows) and the store still "
                          "cannot be written: the oldest are dropped (counted in "
                          "samples_dropped)", serial, self.config.max_pending_rows)
                self._dropping[serial] = st.samples_dropped
            elif serial in self._dropping and not self.store.write_error:
                log.warning("%s: %d sample(s) dropped while the store could not be written",
                            serial, dropped - self._dropping.pop(serial))
            st.samples_dropped = dropped

    def _find_damage(self) -> None:
        """Look for damaged lines (complete lines that are not rows of their file's columns,
        not a torn last line: ``open_device`` repaired those) in what the sync has not
        acknowledged yet: one log line per damaged file, the counts in the state file."""
        for dev in self.config.devices:
            try:
                found = find_damaged(self.config.data_dir, dev.serial)
            except Exception:  # a look at the store must never stop collecting
                log.exception("%s: looking for damaged lines failed", dev.serial)
                continue
            for damage in found:
                log.error("%s: damaged line at byte %d (%s; %d damaged line%s in the part not "
                          "synced yet): not a row, left as it is", damage.file,
                          damage.first_offset, damage.why, damage.lines,
                          "s" if damage.lines != 1 else "")
            if found:
                self._damage[dev.serial] = (sum(damage.lines for damage in found), tuple(
                    DamageSnapshot(file=d.file, first_offset=d.first_offset, lines=d.lines)
                    for d in found[:DAMAGED_FILES_SHOWN]))

    def _publish(self) -> None:
        free_mb = disk_free_mb(self.config.data_dir)
        low = free_mb < self.config.disk_min_free_mb
        if low != self._disk_low:
            (log.warning if low else log.info)(
                "disk free %d MB %s the %d MB minimum", free_mb, "below" if low else "above",
                self.config.disk_min_free_mb)
            self._disk_low = low
        state = CollectorState(
            hwpc_version=__version__,
            pid=os.getpid(),
            started=format_ts(int(self.started * 1000)),
            updated=format_ts(time.time_ns() // 1_000_000),
            clock_synchronised=self.clock_ok,
            clock=self.clock_reason,
            write_error=self.store.write_error,
            pending_rows=self.store.pending_rows(),
            disk_free_mb=free_mb,
            devices=tuple(_snapshot(p.state, self._damage.get(p.dev.serial))
                          for p in self.pollers),
        )
        try:
            write_state(self._state_path, state)
        except OSError as exc:
            if not self.store.write_error:
                log.warning("cannot write %s: %s", STATE_FILE, exc.strerror)


def _snapshot(state: DeviceState,
              damage: tuple[int, tuple[DamageSnapshot, ...]] | None) -> DeviceSnapshot:
    """A device's counters and the damage found in its files, as the state file shows them."""
    lines, shown = damage or (0, ())
    return DeviceSnapshot(**vars(state), damaged_lines=lines, damaged_files=shown)


def _aligned_start(interval: float) -> float:
    """A monotonic start time that falls on a whole multiple of the interval in wall time."""
    wall = time.time()
    wait = (-wall) % interval
    return time.monotonic() + wait
