"""`hwpc collect`: poll every device on its own schedule, keep every sample durably.

One thread per device polls on a monotonic grid aligned to whole wall-clock intervals, so
the schedule never drifts and one slow or dead device never delays another. Samples go
through a queue to the main thread, the single owner of the store, which writes and
fsyncs them every ``flush_interval_s``, keeps the systemd watchdog fed and publishes the
per-device state that ``hwpc status`` shows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hw_picollector import __version__, clock, sdnotify
from hw_picollector.config import Config, DeviceConfig
from hw_picollector.devices.canonical import Sample, columns
from hw_picollector.devices.client import DeviceClient, DeviceError, backoff_s
from hw_picollector.store import Store, format_ts

log = logging.getLogger(__name__)

STATE_FILE = "state/collector.json"
RESOLVE_AFTER_FAILURES = 3
RESOLVE_EVERY_S = 60.0


@dataclass
class DeviceState:
    serial: str
    product_type: str
    address: str | None
    state: str = "starting"
    last_ts: str | None = None
    last_error: str | None = None
    last_error_ts: str | None = None
    samples: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped_ticks: int = 0
    clock_refused: int = 0


@dataclass
class _Shared:
    samples: queue.SimpleQueue[tuple[str, int, Sample]] = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)


class DevicePoller(threading.Thread):
    """Polls one device on the shared grid; never touches the store."""

    def __init__(self, config: Config, dev: DeviceConfig, shared: _Shared, start_mono: float):
        super().__init__(name=f"poll-{dev.serial}", daemon=True)
        self.config, self.dev, self.shared = config, dev, shared
        self.start_mono = start_mono
        self.state = DeviceState(dev.serial, dev.product_type, dev.address)
        self.client = DeviceClient(dev, timeout_s=config.request_timeout_s)
        self._last_resolve = -RESOLVE_EVERY_S
        # Held until stop: waiting on it is one futex wait per tick; every poller waiting on
        # the shared Event instead would wake into its Condition's lock all at once.
        self._wake = threading.Lock()
        self._wake.acquire()

    def wake(self) -> None:
        """Ends the current wait at once (after ``shared.stop`` is set)."""
        with contextlib.suppress(RuntimeError):  # already released
            self._wake.release()

    def run(self) -> None:
        interval = self.config.poll_interval_s
        stop = self.shared.stop
        tick = 0
        retry_at = 0.0
        try:
            while not stop.is_set():
                due = self.start_mono + tick * interval
                wait = due - time.monotonic()
                if wait > 0 and self._wake.acquire(timeout=wait):
                    break
                now = time.monotonic()
                if now < retry_at:
                    tick = int((retry_at - self.start_mono) / interval + 0.999999)
                    continue
                ts_ms = time.time_ns() // 1_000_000
                if self._poll(ts_ms):
                    retry_at = 0.0
                else:
                    retry_at = time.monotonic() + backoff_s(self.state.consecutive_failures)
                    if self.state.consecutive_failures <= 1:
                        retry_at = 0.0  # one miss: simply try at the next tick
                late = int((time.monotonic() - self.start_mono) / interval) + 1
                if late > tick + 1:
                    self.state.skipped_ticks += late - tick - 1
                tick = max(tick + 1, late)
        finally:
            self.client.close()

    def _poll(self, ts_ms: int) -> bool:
        st = self.state
        if self.client.address is None and not self._resolve():
            self._fail("no_address", f"{self.dev.serial}: no address configured and not "
                       "found by mDNS yet")
            return False
        try:
            sample = self.client.measure()
        except DeviceError as exc:
            self._fail(exc.state, str(exc))
            if exc.state in ("unreachable", "timeout") and \
                    st.consecutive_failures >= RESOLVE_AFTER_FAILURES:
                self._resolve()
            return False
        if st.state != "ok":
            if st.consecutive_failures:
                log.info("%s %s: ok again after %d failed polls", self.dev.serial,
                         self.client.url, st.consecutive_failures)
            else:
                log.info("%s %s: first sample", self.dev.serial, self.client.url)
        st.state, st.consecutive_failures = "ok", 0
        self.shared.samples.put((self.dev.serial, ts_ms, sample))
        return True

    def _fail(self, state: str, message: str) -> None:
        st = self.state
        st.failures += 1
        st.consecutive_failures += 1
        st.last_error, st.last_error_ts = message, format_ts(time.time_ns() // 1_000_000)
        if st.state != state:  # one log line per change of state, never one per poll
            log.warning("%s", message)
            st.state = state

    def _resolve(self) -> bool:
        if not self.config.mdns or time.monotonic() - self._last_resolve < RESOLVE_EVERY_S:
            return False
        self._last_resolve = time.monotonic()
        from hw_picollector import discovery  # zeroconf only when needed

        try:
            found = discovery.resolve_serial(self.dev.serial, timeout_s=3.0, api=self.dev.api)
        except Exception as exc:
            log.warning("%s: mDNS lookup failed: %s", self.dev.serial, exc)
            return False
        if found and found != self.client.address:
            log.warning("%s: found by mDNS at %s (was %s)", self.dev.serial, found,
                        self.client.address)
            self.client.set_address(found)
            self.state.address = found
            return True
        return False


class Collector:
    def __init__(self, config: Config):
        self.config = config
        self.shared = _Shared()
        self.store = Store(config.data_dir, columns)
        self.pollers: list[DevicePoller] = []
        self.started = time.time()
        self.clock_ok = False
        self.clock_reason = ""
        self._disk_low = False
        self._write_error: str | None = None
        self._held_back: set[str] = set()

    def stop(self, *_: object) -> None:
        self.shared.stop.set()
        for poller in self.pollers:
            poller.wake()

    def run(self) -> int:
        cfg = self.config
        for dev in cfg.devices:
            last = self.store.open_device(dev.serial, dev.product_type)
            if last >= 0:
                log.info("%s: resuming after %s", dev.serial, format_ts(last))
        sdnotify.notify("READY=1")
        watchdog = sdnotify.watchdog_interval_s()
        if not self._wait_for_clock(watchdog):
            self._publish()
            return 0
        start_mono = _aligned_start(cfg.poll_interval_s)
        self.pollers = [DevicePoller(cfg, d, self.shared, start_mono) for d in cfg.devices]
        for poller in self.pollers:
            poller.start()
        log.info("collecting %d device(s) every %.3g s into %s", len(self.pollers),
                 cfg.poll_interval_s, cfg.data_dir)
        sdnotify.notify(f"STATUS=collecting {len(self.pollers)} device(s)")
        next_flush = time.monotonic() + cfg.flush_interval_s
        next_dog = time.monotonic()
        while not self.shared.stop.is_set():
            now = time.monotonic()
            if watchdog and now >= next_dog:
                sdnotify.notify("WATCHDOG=1")
                next_dog = now + watchdog
            if now >= next_flush:
                self._flush()
                next_flush = now + cfg.flush_interval_s
            deadline = min(next_flush, next_dog if watchdog else next_flush)
            self.shared.stop.wait(max(0.0, deadline - time.monotonic()))
        for poller in self.pollers:
            poller.join(timeout=cfg.request_timeout_s + 1)
        self._flush()
        self.store.close()
        log.info("stopped; every buffered sample written")
        return 1 if self.store.pending_rows() else 0

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
                serial, ts_ms, sample = self.shared.samples.get_nowait()
            except queue.Empty:
                return
            st = by_serial[serial]
            if self.store.append(serial, ts_ms, sample.values, sample.extra):
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
        if error != self._write_error:
            if error:
                log.error("cannot write the store (%s): %d rows held in memory, retrying "
                          "every %.3g s", error, self.store.pending_rows(),
                          self.config.flush_interval_s)
            else:
                log.info("store writable again: buffered rows written")
            self._write_error = error
        self._publish()

    def _publish(self) -> None:
        free_mb = disk_free_mb(self.config.data_dir)
        low = free_mb < self.config.disk_min_free_mb
        if low != self._disk_low:
            (log.warning if low else log.info)(
                "disk free %d MB %s the %d MB minimum", free_mb, "below" if low else "above",
                self.config.disk_min_free_mb)
            self._disk_low = low
        state = {
            "version": __version__,
            "pid": os.getpid(),
            "started": format_ts(int(self.started * 1000)),
            "updated": format_ts(time.time_ns() // 1_000_000),
            "clock_synchronised": self.clock_ok,
            "clock": self.clock_reason,
            "write_error": self.store.write_error,
            "pending_rows": self.store.pending_rows(),
            "disk_free_mb": free_mb,
            "devices": {p.dev.serial: dict(vars(p.state)) for p in self.pollers},
        }
        try:
            write_state(self.config.data_dir / STATE_FILE, state)
        except OSError as exc:
            if not self.store.write_error:
                log.warning("cannot write %s: %s", STATE_FILE, exc.strerror)


def write_state(path: Path, state: dict[str, object]) -> None:
    """Replace the status file atomically (temp file, rename), without fsync.

    It is a snapshot rewritten every flush interval, not data: after a power cut the previous
    (or no) snapshot is fine, and ``hwpc status`` treats an unreadable one as absent. Syncing
    it (file and directory) would add two disk syncs to every flush, SD card wear for nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def disk_free_mb(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free // (1 << 20)
    except OSError:
        return -1


def _aligned_start(interval: float) -> float:
    """A monotonic start time that falls on a whole multiple of the interval in wall time."""
    wall = time.time()
    wait = (-wall) % interval
    return time.monotonic() + wait


def run(config: Config) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    collector = Collector(config)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: flushing and stopping", signum)
        collector.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return collector.run()
