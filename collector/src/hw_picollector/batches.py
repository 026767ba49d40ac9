"""Per-partition batches encoded once, and a bounded window of them in flight.

The sync sends hundreds of thousands of rows. Bound through the driver (a BoundStatement
per row, then the BATCH message writing every value again) each row costs more CPU than
Cassandra spends storing it. Here each row is encoded once, straight into its wire form
inside a BATCH body (``[0x01][query id][n][values]``, the native protocol's prepared
statement entry), and a batch is one ``bytes``. The driver keeps everything else:
connections, routing (the batch carries its routing key), timeouts, re-preparing after a
node restart, the consistency level and the frame itself. Only the statement list of a
BATCH is pre-built, through the session's ``client_protocol_handler`` hook (see
``install``); a pre-encoded batch refuses to be sent without it.

``Window`` keeps a fixed number of batches in flight: completions arrive on the driver's
event loop thread and are handed to the caller's thread through a queue, so bookkeeping
(checkpoints, progress) never runs concurrently and never blocks network I/O.
"""

from __future__ import annotations

import heapq
import io
import logging
import queue
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hw_picollector.cassandra_session import DatabaseError

log = logging.getLogger(__name__)

RETRIES = 5  # per batch, with backoff 1, 2, 4, 8, 16 s; then the run fails


def backoff(failures: int) -> float:
    """Seconds before the next attempt of a statement that failed `failures` times."""
    return min(2.0 ** (failures - 1), 16.0)


_INT = struct.Struct(">i").pack
_SHORT = struct.Struct(">H").pack
_DATE = struct.Struct(">I").pack
_EPOCH = date(1970, 1, 1)

UNSET = _INT(-2)
"""A value left out of the write (no tombstone): the protocol's ``unset`` marker."""


def value(data: bytes) -> bytes:
    """A protocol ``[value]``: length, then the bytes."""
    return _INT(len(data)) + data


def text_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def date_bytes(day: date) -> bytes:
    """CQL ``date``: days since the epoch, centred on 2**31."""
    return _DATE((day - _EPOCH).days + (1 << 31))


def statement_prefix(query_id: bytes, count: int) -> bytes:
    """Start of a prepared statement's entry in a BATCH body, before its `count` values."""
    return b"\x01" + _SHORT(len(query_id)) + query_id + _SHORT(count)


class Encoded:
    """The statements of one BATCH, already in wire form (``count`` entries in ``body``)."""

    __slots__ = ("body", "count")

    def __init__(self, body: bytes, count: int):
        if not 0 < count <= 0xFFFF:
            raise ValueError(f"a batch holds 1 to 65535 statements, not {count}")
        self.body = body
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        raise TypeError("a pre-encoded batch is sent through the handler batches.install sets")


def _encoded_batch_message() -> type:
    from cassandra.protocol import BatchMessage

    class EncodedBatchMessage(BatchMessage):  # type: ignore[misc]
        """A BATCH whose statement list is an ``Encoded``: the rest is the driver's own."""

        def __init__(self, msg: Any):
            super().__init__(msg.batch_type, msg.queries, msg.consistency_level,
                             msg.serial_consistency_level, msg.timestamp, msg.keyspace)
            self.custom_payload = msg.custom_payload
            self.tracing = msg.tracing

        def send_body(self, f: Any, protocol_version: int) -> None:
            # The driver writes type, an empty statement list and the trailer (consistency,
            # flags, timestamp, keyspace); the statements go in between.
            rest = io.BytesIO()
            BatchMessage(self.batch_type, (), self.consistency_level,
                         self.serial_consistency_level, self.timestamp,
                         self.keyspace).send_body(rest, protocol_version)
            frame = rest.getvalue()
            f.write(frame[:1])
            f.write(_SHORT(self.queries.count))
            f.write(self.queries.body)
            f.write(frame[3:])

    return EncodedBatchMessage


def install(session: Any) -> None:
    """Let `session` send ``Encoded`` batches; every other request is encoded as before."""
    base = session.client_protocol_handler
    if getattr(base, "sends_encoded_batches", False):
        return
    message_type = _encoded_batch_message()

    def encode_message(cls: Any, msg: Any, stream_id: int, protocol_version: int,  # noqa: PLR0917
                       compressor: Any, allow_beta_protocol_version: bool) -> bytes:
        # The driver's signature for ProtocolHandler.encode_message.
        if isinstance(getattr(msg, "queries", None), Encoded):
            msg = message_type(msg)
        result: bytes = base.encode_message(msg, stream_id, protocol_version, compressor,
                                            allow_beta_protocol_version)
        return result

    session.client_protocol_handler = type(
        "EncodedBatchProtocolHandler", (base,),
        {"encode_message": classmethod(encode_message), "sends_encoded_batches": True})


def batch(encoded: Encoded, keyspace: str, routing_parts: list[bytes]) -> Any:
    """An unlogged, idempotent BATCH of one partition's pre-encoded statements."""
    from cassandra.query import BatchStatement, BatchType

    stmt = BatchStatement(batch_type=BatchType.UNLOGGED)
    stmt._statements_and_parameters = encoded
    stmt.keyspace = keyspace
    stmt.routing_key = routing_parts  # the driver packs a composite key
    stmt.is_idempotent = True
    return stmt


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    statement: Any = field(compare=False)
    done: Callable[[], None] = field(compare=False)
    failures: int = field(default=0, compare=False)


class Window:
    """At most `size` statements in flight; each is retried with backoff when it fails.

    ``send`` returns once the statement is on its way (waiting for room first); ``done`` is
    called on this thread, in completion order, after Cassandra acknowledged it. A statement
    that still fails after ``retries`` retries (default ``RETRIES``) raises the error
    ``describe`` phrases, from ``send`` or ``drain``; what was not acknowledged by then never
    had ``done`` called.
    """

    def __init__(self, session: Any, size: int,
                 describe: Callable[[BaseException], str] = str,
                 delay: Callable[[int], float] = backoff, retries: int = RETRIES):
        self.session = session
        self.size = max(1, size)
        self.retries = retries
        self.describe = describe
        self.delay = delay
        self._events: queue.SimpleQueue[tuple[_Pending, BaseException | None]] = \
            queue.SimpleQueue()
        self._retry: list[_Pending] = []
        self._in_flight = 0  # sent and not acknowledged, including those waiting to retry
        self._seq = 0
        self._failed_since_log = 0
        self._last_log = 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def send(self, statement: Any, done: Callable[[], None]) -> None:
        while self._in_flight >= self.size:
            self._wait()
        self._seq += 1
        self._in_flight += 1
        self._submit(_Pending(0.0, self._seq, statement, done))

    def drain(self) -> None:
        """Wait until everything sent was acknowledged (or raise)."""
        while self._in_flight:
            self._wait()

    def _submit(self, item: _Pending) -> None:
        try:
            future = self.session.execute_async(item.statement)
        except Exception as exc:  # the driver reports most failures through the future
            self._events.put((item, exc))
            return
        future.add_callbacks(self._ok, self._error, callback_args=(item,),
                             errback_args=(item,))

    def _ok(self, _result: Any, item: _Pending) -> None:
        self._events.put((item, None))

    def _error(self, exc: BaseException, item: _Pending) -> None:
        self._events.put((item, exc))

    def _wait(self) -> None:
        now = time.monotonic()
        while self._retry and self._retry[0].due <= now:
            self._submit(heapq.heappop(self._retry))
        timeout = max(0.0, self._retry[0].due - now) if self._retry else None
        try:
            item, exc = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        if exc is None:
            self._in_flight -= 1
            item.done()
            return
        item.failures += 1
        if _hopeless(exc):
            raise DatabaseError(self.describe(exc)) from exc
        if item.failures > self.retries:
            raise DatabaseError(f"{self.describe(exc)} (a write still failing after "
                                f"{self.retries} retries)") from exc
        delay = self.delay(item.failures)
        item.due = time.monotonic() + delay
        heapq.heappush(self._retry, item)
        self._failed_since_log += 1
        if now - self._last_log >= 5.0:
            log.warning("%d write(s) failed (%s: %s); retrying in %.0f s",
                        self._failed_since_log, type(exc).__name__, str(exc)[:200], delay)
            self._failed_since_log = 0
            self._last_log = now


def _hopeless(exc: BaseException) -> bool:
    """The server refused the request itself (schema, permissions): retrying cannot help."""
    from cassandra import RequestValidationException

    return isinstance(exc, RequestValidationException)
