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
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from hw_picollector import __version__, checkpoints, clock, files, sdnotify, store
from hw_picollector.catalog import DeviceState as State
from hw_picollector.config import Config, DeviceConfig
from hw_picollector.devices.canonical import Sample, cap_extra, columns
from hw_picollector.devices.client import DeviceClient, DeviceError, Request, backoff_s
from hw_picollector.devices.transport import READ, Connection, Response
from hw_picollector.store import Store, format_ts

log = logging.getLogger(__name__)

STATE_FILE = "state/collector.json"
RESOLVE_AFTER_FAILURES = 3
RESOLVE_EVERY_S = 60.0
DAMAGED_FILES_SHOWN = 10  # per device, in the state file
HEARTBEAT_S = 1.0  # the poll loop turns at least this often, busy or not
POLL_STALL_S = 10.0  # no turn for this long: the poll loop is stuck, the process ends
Encoder = Callable[[int, dict[str, float | str], dict[str, float]], str]


@dataclass
class DeviceState:
    serial: str
    product_type: str
    address: str | None
    state: str = State.STARTING  # a catalog DeviceState, or http_<status>
    last_ts: str | None = None
    last_error: str | None = None
    last_error_ts: str | None = None
    samples: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped_ticks: int = 0
    clock_refused: int = 0
    extras_dropped: int = 0  # extra fields beyond max_extra_keys/max_extra_bytes
    samples_dropped: int = 0  # held in memory beyond max_pending_rows: the store unwritable


@dataclass
class _Shared:
    # (serial, ts_ms, CSV line): encoded where the sample is taken, written by the main thread
    samples: queue.SimpleQueue[tuple[str, int, str]] = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)


class DevicePoller:
    """One device: its schedule on the shared grid, its state and its client.

    Driven by the ``PollLoop`` thread, never blocking it: a poll is the client's
    ``measure_steps`` fed by non-blocking exchanges on the device's connection. Never
    touches the store.
    """

    def __init__(self, config: Config, dev: DeviceConfig, shared: _Shared, start_mono: float,
                 encode: Encoder, *, loop: PollLoop | None = None):
        self.config, self.dev, self.shared, self.encode = config, dev, shared, encode
        self.start_mono = start_mono
        self.loop = loop
        self.state = DeviceState(dev.serial, dev.product_type, dev.address)
        self.client = DeviceClient(dev, timeout_s=config.request_timeout_s)
        self._last_resolve = -RESOLVE_EVERY_S
        self._resolving = False
        self._found: str | None = None  # an address mDNS found while a poll was running
        self.tick = 0
        self.retry_at = 0.0
        self._steps: Generator[Request, Response, Sample] | None = None
        self._conn: Connection | None = None
        self._ts_ms = 0
        self.registered: Watch | None = None  # what the selector watches for it
        self.internal_error = False  # its last poll ended in an unexpected error (a bug)
        # its idle connection is in the selector (since before the last wait): a device
        # closing it is seen there, so it need not be polled before the next request
        self.idle_watched = False
        self._capping = False  # its samples' extra fields are over the caps

    @property
    def busy(self) -> bool:
        return self._steps is not None

    def wanted(self) -> Watch | None:
        """What the selector should watch for this device, if anything: the exchange's
        events, or readability of the idle connection (the device closing it), which keeps
        a kept-alive connection registered from one poll to the next."""
        conn = self._conn
        if conn is None or not conn.connected:
            return None
        events = conn.want() if conn.busy else READ
        return Watch(conn.fileno(), conn, conn.sockets, events) if events else None

    def next_time(self) -> float:
        """When this device next needs the loop: its deadline, or its next tick."""
        if self._conn is not None and self._conn.busy:
            return self._conn.deadline
        if self.busy:
            return 0.0
        return max(self.start_mono + self.tick * self.config.poll_interval_s, self.retry_at)

    def on_time(self, now: float, polling: bool = True) -> None:
        """Start a poll that is due (``polling``), expire a late exchange, resume a lookup."""
        conn = self._conn
        if conn is not None and conn.busy:
            if now >= conn.deadline:
                self._resume(now, throw=conn.expire())
            elif not conn.want():
                self.on_ready(now)  # a host name lookup may have finished
            return
        if self.busy:  # a poll with no exchange under way cannot progress: a bug
            raise RuntimeError("poll without a request in flight")
        if not polling:
            return
        interval = self.config.poll_interval_s
        if now < self.start_mono + self.tick * interval:
            return
        if now < self.retry_at:  # backing off: skip to the first tick after it
            self.tick = int((self.retry_at - self.start_mono) / interval + 0.999999)
            return
        self._ts_ms = time.time_ns() // 1_000_000
        if self.client.address is None:
            self._resolve()
            self._fail("no_address", f"{self.dev.serial}: no address configured and not "
                       "found by mDNS yet")
            self._done(False)
            return
        self._steps = self.client.measure_steps()
        self._resume(now)

    def on_ready(self, now: float) -> None:
        """The connection's socket is ready: progress, and the next step when answered."""
        conn = self._conn
        if conn is None:
            return
        if not conn.busy:
            conn.idle_ready()
            return
        try:
            resp = conn.advance(now)
        except DeviceError as exc:
            self._resume(now, throw=exc)
            return
        if resp is not None:
            self._resume(now, send=resp)

    def _resume(self, now: float, send: Response | None = None,
                throw: DeviceError | None = None) -> None:
        """Feed the client's steps an answer (or an error); start its next request."""
        steps = self._steps
        assert steps is not None
        while True:
            try:
                if throw is not None:
                    path, headers = steps.throw(throw)
                elif send is None:
                    path, headers = next(steps)
                else:
                    path, headers = steps.send(send)
            except StopIteration as done:
                self._succeed(done.value)
                return
            except DeviceError as exc:
                self._failed(exc)
                return
            try:
                conn = self._conn = self.client.connection()
                conn.begin("GET", path, self.dev.serial, self.client.timeout_s, now,
                           headers=headers, wake=self.loop.wake if self.loop else None,
                           watched=self.idle_watched)
                self.idle_watched = False
                return
            except DeviceError as exc:
                send, throw = None, exc

    def _succeed(self, sample: Sample) -> None:
        st = self.state
        if st.state != State.OK:
            if st.consecutive_failures:
                log.info("%s %s: ok again after %d failed polls", self.dev.serial,
                         self.client.url, st.consecutive_failures)
            else:
                log.info("%s %s: first sample", self.dev.serial, self.client.url)
        st.state, st.consecutive_failures = State.OK, 0
        extra, dropped = sample.extra, 0
        if extra:
            extra, dropped = cap_extra(extra, self.config.max_extra_keys,
                                       self.config.max_extra_bytes)
            st.extras_dropped += dropped
        if bool(dropped) != self._capping:  # one line when it starts, one when it ends
            self._capping = bool(dropped)
            if dropped:
                log.warning("%s: %d extra fields in a sample, over max_extra_keys=%d or "
                            "max_extra_bytes=%d: the first %d by name are kept, the rest "
                            "dropped (counted in extras_dropped)", self.dev.serial,
                            len(sample.extra), self.config.max_extra_keys,
                            self.config.max_extra_bytes, len(extra))
            else:
                log.info("%s: extra fields within the caps again", self.dev.serial)
        line = self.encode(self._ts_ms, sample.values, extra)
        self.shared.samples.put((self.dev.serial, self._ts_ms, line))
        self._done(True)

    def _failed(self, exc: DeviceError) -> None:
        self._fail(exc.state, str(exc))
        if exc.state in (State.UNREACHABLE, State.TIMEOUT) and \
                self.state.consecutive_failures >= RESOLVE_AFTER_FAILURES:
            self._resolve()
        self._done(False)

    def _done(self, ok: bool, internal_error: bool = False) -> None:
        """The poll is over: back-off and the next tick (skipped ones counted)."""
        self._steps = None
        self.internal_error = internal_error
        interval = self.config.poll_interval_s
        now = time.monotonic()
        if ok or self.state.consecutive_failures <= 1:
            self.retry_at = 0.0  # one miss: simply try at the next tick
        else:
            self.retry_at = now + backoff_s(self.state.consecutive_failures)
        late = int((now - self.start_mono) / interval) + 1
        if late > self.tick + 1:
            self.state.skipped_ticks += late - self.tick - 1
        self.tick = max(self.tick + 1, late)
        if self._found is not None:
            self._retarget(self._found)

    def _fail(self, state: str, message: str) -> None:
        st = self.state
        st.failures += 1
        st.consecutive_failures += 1
        st.last_error, st.last_error_ts = message, format_ts(time.time_ns() // 1_000_000)
        if st.state != state:  # one log line per change of state, never one per poll
            log.warning("%s", message)
            st.state = state

    def _resolve(self) -> None:
        """Look the serial up by mDNS on a short-lived thread (rate-limited); the answer is
        applied in the loop, between polls."""
        if not self.config.mdns or self._resolving or self.loop is None or \
                time.monotonic() - self._last_resolve < RESOLVE_EVERY_S:
            return
        self._last_resolve = time.monotonic()
        self._resolving = True
        loop, serial, api = self.loop, self.dev.serial, self.dev.api

        def lookup() -> None:
            from hw_picollector import discovery  # zeroconf only when needed

            found: str | None = None
            try:
                found = discovery.resolve_serial(serial, timeout_s=3.0, api=api)
            except Exception as exc:
                log.warning("%s: mDNS lookup failed: %s", serial, exc)
            loop.post(lambda: self._resolved(found))

        threading.Thread(target=lookup, name=f"mdns-{serial}", daemon=True).start()

    def _resolved(self, found: str | None) -> None:
        self._resolving = False
        if found and found != self.client.address:
            if self.busy:
                self._found = found  # re-targeting closes the connection: after this poll
            else:
                self._retarget(found)

    def _retarget(self, found: str) -> None:
        self._found = None
        log.warning("%s: found by mDNS at %s (was %s)", self.dev.serial, found,
                    self.client.address)
        self.client.set_address(found)
        self.state.address = found
        self._conn = None
        self.retry_at = 0.0  # a new address: no back-off from the old one's failures

    def abandon(self) -> None:
        """End the poll (under way, or starting) as failed and drop the connection (after a
        bug): counted and backed off like any failed poll, so a poll that fails at once
        does not run again at once."""
        self.client.close()
        self._conn = None
        if self._steps is not None:
            self._steps.close()
        self._fail(State.ERROR, f"{self.dev.serial}: internal error while polling (see log)")
        self._done(False, internal_error=True)

    def close(self) -> None:
        self._steps = self._conn = None
        self.client.close()


class Watch(NamedTuple):
    """A device's socket in the selector. The descriptor number alone does not name a
    socket: a closed one's number is soon another's (of any device), and a new Connection
    counts its sockets from 1 again; the Connection and its count do."""

    fd: int
    conn: Connection
    socket: int
    events: int


class PollLoopFailed(RuntimeError):
    """Every device's last poll ended in an unexpected error: nothing is collected."""


class PollLoop(threading.Thread):
    """One thread polls every device: a selector over the devices' connections.

    Requests to all devices due at a tick go out at once and their answers are taken as they
    come, so a slow or dead device delays no other (each exchange has its own deadline),
    without a thread per device: one wake-up serves several answers. mDNS lookups and host
    name lookups run on short-lived threads and come back through ``post``.

    ``heartbeat`` (monotonic) is stamped at every turn. An unexpected error in one device's
    poll fails that poll only; one outside them, or in every device's last poll, ends the
    loop: ``error`` holds it and ``stop`` is set.
    """

    def __init__(self, pollers: list[DevicePoller], stop: threading.Event,
                 drain_s: float) -> None:
        super().__init__(name="poll", daemon=True)
        self.pollers, self.stop, self.drain_s = pollers, stop, drain_s
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.heartbeat = time.monotonic()
        self.error: BaseException | None = None
        for poller in pollers:
            poller.loop = self

    def wake(self) -> None:
        """Interrupt the current wait (from any thread)."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def post(self, call: Callable[[], None]) -> None:
        """Run ``call`` in the loop thread, soon."""
        self._posted.put(call)
        self.wake()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            log.critical("the poll loop failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            self.stop.set()
        finally:
            for poller in self.pollers:
                poller.close()
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _run(self) -> None:
        pollers, select = self.pollers, self.selector.select
        stop_by: float | None = None
        while True:
            now = self.heartbeat = time.monotonic()
            if stop_by is None and self.stop.is_set():
                stop_by = now + self.drain_s  # no new poll; those under way may finish
            if stop_by is not None and (now >= stop_by or not any(p.busy for p in pollers)):
                return
            for poller in pollers:
                self._guard(poller, poller.on_time, now, stop_by is None)
            self._watch()
            wait = min([p.next_time() for p in pollers], default=now + 1.0) - time.monotonic()
            wait = min(wait, HEARTBEAT_S)
            if stop_by is not None:
                wait = min(wait, stop_by - time.monotonic())
            for key, _ in select(max(0.0, wait)):
                poller = key.data
                if poller is None:
                    self._wakened()
                else:
                    self._guard(poller, poller.on_ready, time.monotonic())

    def _guard(self, poller: DevicePoller, step: Callable[..., None], *args: object) -> None:
        """A bug in one device's poll must not stop the others: log it, end that poll. When
        every device's last poll ended that way, nothing is collected: the loop fails."""
        try:
            step(*args)
        except Exception as exc:
            log.exception("%s: unexpected error while polling", poller.dev.serial)
            poller.abandon()
            if all(p.internal_error for p in self.pollers):
                raise PollLoopFailed("every device's last poll ended in an unexpected "
                                     f"error, the last one: {type(exc).__name__}: {exc}") \
                    from exc

    def _wakened(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                call = self._posted.get_nowait()
            except queue.Empty:
                return
            call()

    def _watch(self) -> None:
        """Bring the selector in line with what each device's exchange waits for.

        Every socket that is no longer wanted leaves the selector before any new one joins:
        a descriptor number a closed socket freed may already be a new socket's (another
        device's, or this one's), and the selector knows sockets by number.
        """
        joining: list[tuple[DevicePoller, Watch]] = []
        for poller in self.pollers:
            want, have = poller.wanted(), poller.registered
            conn = poller._conn
            poller.idle_watched = want is not None and conn is not None and not conn.busy
            if want == have:
                continue
            if have is not None and want is not None and have[:3] == want[:3]:
                self.selector.modify(want.fd, want.events, poller)  # same socket, new events
                poller.registered = want
                continue
            if have is not None:
                poller.registered = None
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(have.fd)  # closed: gone from epoll already
            if want is not None:
                joining.append((poller, want))
        for poller, want in joining:
            self.selector.register(want.fd, want.events, poller)
            poller.registered = want


class Collector:
    def __init__(self, config: Config):
        self.config = config
        self.shared = _Shared()
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
        self._damage: dict[str, dict[str, object]] = {}  # serial → damaged lines found
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
                self._damage[dev.serial] = {
                    "damaged_lines": sum(damage.lines for damage in found),
                    "damaged_files": [{"file": d.file, "first_offset": d.first_offset,
                                       "lines": d.lines} for d in found[:DAMAGED_FILES_SHOWN]]}

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
            "devices": {p.dev.serial: {**vars(p.state), "damaged_lines": 0, "damaged_files": [],
                                       **self._damage.get(p.dev.serial, {})}
                        for p in self.pollers},
        }
        try:
            write_state(self._state_path, state)
        except OSError as exc:
            if not self.store.write_error:
                log.warning("cannot write %s: %s", STATE_FILE, exc.strerror)


def write_state(path: Path, state: dict[str, object]) -> None:
    """Replace the status file atomically (temp file, rename), without fsync.

    It is a snapshot rewritten every flush interval, not data: after a power cut the previous
    (or no) snapshot is fine, and ``hwpc status`` treats an unreadable one as absent. Syncing
    it (file and directory) would add two disk syncs to every flush, SD card wear for nothing.

    On a full disk, where a new file cannot be written, the snapshot is written over the
    old one in place, within the space that already holds it (padded with blanks): what
    the collector does while the disk is full is what an operator needs to see.
    """
    data = json.dumps(state, sort_keys=True).encode()
    try:
        try:
            # durable=False: a status snapshot, not data (see above); 0644 less the umask as before
            files.replace_atomically(path, data, durable=False, create_mode=0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.replace_atomically(path, data, durable=False, create_mode=0o644)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _overwrite_in_place(path, data, exc)  # the attempt's temporary file is already gone


def _overwrite_in_place(path: Path, data: bytes, full: OSError) -> None:
    """``data`` over the file at ``path`` without allocating: within its blocks, blanks
    (valid JSON whitespace) over the rest of the old text. ``full`` when it does not fit."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        raise full from None
    try:
        st = os.fstat(fd)
        room = max(st.st_size, st.st_blocks * 512)
        if len(data) > room:
            raise full
        os.pwrite(fd, data + b" " * max(0, st.st_size - len(data)), 0)
    finally:
        os.close(fd)


@dataclass
class Damage:
    """The damaged lines of one day file (in the part the sync has not acknowledged)."""

    file: str
    first_offset: int = -1
    lines: int = 0
    why: str = ""  # the first's

    def bad(self, offset: int, _line: bytes, why: str) -> bool:
        """``store.scan``'s callback: count the line and read on."""
        if not self.lines:
            self.first_offset, self.why = offset, why
        self.lines += 1
        return True


def find_damaged(data_dir: Path, serial: str) -> list[Damage]:
    """The device's day files with damaged lines (complete lines that are not rows of the
    file's columns) past their sync checkpoint."""
    found: list[Damage] = []
    for path in store.day_files(data_dir, serial):
        cp = checkpoints.read(data_dir, serial, path.stem)
        try:
            if cp.complete and cp.offset >= path.stat().st_size:
                continue
            damage = Damage(str(path))
            for _row in store.scan(path, checkpoints.validated(path, cp).offset,
                                   bad=damage.bad):
                pass
        except OSError:  # compressed and removed meanwhile
            continue
        if damage.lines:
            found.append(damage)
    return found


def disk_free_mb(path: Path) -> int:
    try:
        st = os.statvfs(path)  # what shutil.disk_usage calls "free", without importing shutil
        return st.f_bavail * st.f_frsize // (1 << 20)
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
