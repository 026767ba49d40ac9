"""The poll thread (`PollLoop`): one selector over every device's connection, so a slow or
dead device delays no other; a bug in one device's poll fails that poll only
(`PollLoopFailed`: every device's did). Drives the devices of device.py.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

from hw_picollector.collect.device import DevicePoller, Watch

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0  # the poll loop turns at least this often, busy or not


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
