"""The poll loop's selector bookkeeping when socket numbers are reused.

The kernel hands out the lowest free descriptor number, so a number one device's closed
connection freed is usually the number the next connection (of another device, or of the
same device after a re-target) gets. The selector is keyed by that number: a stale entry must
never make a registration fail (that ended the poll thread) or hide a new socket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from hw_picollector.collect.device import DevicePoller
from hw_picollector.collect.poll_loop import PollLoop
from hw_picollector.devices.transport import READ


class Conn:
    """What ``DevicePoller.wanted`` reads of a Connection, over a real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sockets = 1  # a new Connection object counts its sockets from 1 again
        self.busy = True

    @property
    def connected(self) -> bool:
        return self.sock.fileno() != -1

    def fileno(self) -> int:
        return self.sock.fileno()

    def want(self) -> int:
        return READ


class Poller:
    """A device as the loop's ``_watch`` sees it; ``wanted`` is the real one."""

    wanted = DevicePoller.wanted

    def __init__(self, name: str, conn: Conn | None = None) -> None:
        self.name = name
        self._conn = conn
        self.registered: object = None
        self.idle_watched = False

    def __repr__(self) -> str:
        return self.name


@pytest.fixture
def pairs() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def socketpair(opened: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    opened += [a, b]
    return a, b


def loop_of(*pollers: Poller) -> PollLoop:
    return PollLoop(list(pollers), threading.Event(), 1.0)  # type: ignore[arg-type]


def ready(loop: PollLoop) -> list[object]:
    return [key.data for key, _ in loop.selector.select(1.0)]


def close(loop: PollLoop) -> None:
    loop.selector.close()
    loop._wake_r.close()
    loop._wake_w.close()


def test_a_number_freed_by_one_device_and_taken_by_another(pairs: list[socket.socket]) -> None:
    old, _ = socketpair(pairs)
    first, second = Poller("first"), Poller("second", Conn(old))
    loop = loop_of(first, second)  # the device taking the number comes first in the list
    try:
        loop._watch()
        number = old.fileno()
        old.close()  # the second device's connection ends: its number is free
        new, peer = socketpair(pairs)
        if new.fileno() != number:
            pytest.skip("the kernel gave another number")
        first._conn = Conn(new)
        loop._watch()  # was: KeyError from selector.register, which ended the poll thread
        peer.send(b"x")
        assert ready(loop) == [first]
    finally:
        close(loop)


def test_the_same_device_reconnects_on_the_same_number(pairs: list[socket.socket]) -> None:
    old, _ = socketpair(pairs)
    device = Poller("device", Conn(old))
    loop = loop_of(device)
    try:
        loop._watch()
        number = old.fileno()
        old.close()  # re-targeted after mDNS: the old connection is dropped
        new, peer = socketpair(pairs)
        if new.fileno() != number:
            pytest.skip("the kernel gave another number")
        device._conn = Conn(new)  # a new Connection: its socket count starts at 1 again
        loop._watch()  # was: taken for the socket already registered, so never watched
        peer.send(b"x")
        assert ready(loop) == [device]
    finally:
        close(loop)
