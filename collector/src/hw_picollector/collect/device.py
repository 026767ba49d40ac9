"""One device's polls (`DevicePoller`): its schedule on the shared grid, its back-off after
failures, its mDNS re-resolution, and its counters (`DeviceState`, which the state file shows).
Driven by the poll loop (poll_loop.py) through non-blocking steps, never blocking it; its
samples go, encoded, through `Shared` to the main thread (collector.py). Never touches the
store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from hw_picollector.catalog import DeviceState as State
from hw_picollector.config import Config, DeviceConfig
from hw_picollector.devices.canonical import Sample, cap_extra
from hw_picollector.devices.client import DeviceClient, DeviceError, Request, backoff_s
from hw_picollector.devices.transport import READ, Connection, Response
from hw_picollector.store import format_ts

log = logging.getLogger(__name__)

RESOLVE_AFTER_FAILURES = 3
RESOLVE_EVERY_S = 60.0
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
class Shared:
    """What the poll thread and the main thread share."""

    # (serial, ts_ms, CSV line): encoded where the sample is taken, written by the main thread
    samples: queue.SimpleQueue[tuple[str, int, str]] = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)


class Loop(Protocol):
    """What a device needs of the loop that drives it (poll_loop.py's ``PollLoop``)."""

    def wake(self) -> None: ...

    def post(self, call: Callable[[], None]) -> None: ...


class Watch(NamedTuple):
    """A device's socket in the selector. The descriptor number alone does not name a
    socket: a closed one's number is soon another's (of any device), and a new Connection
    counts its sockets from 1 again; the Connection and its count do."""

    fd: int
    conn: Connection
    socket: int
    events: int


class DevicePoller:
    """One device: its schedule on the shared grid, its state and its client.

    Driven by the ``PollLoop`` thread, never blocking it: a poll is the client's
    ``measure_steps`` fed by non-blocking exchanges on the device's connection. Never
    touches the store.
    """

    def __init__(self, config: Config, dev: DeviceConfig, shared: Shared, start_mono: float,
                 encode: Encoder, *, loop: Loop | None = None):
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
