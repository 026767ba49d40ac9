"""A day file's rows → pre-encoded INSERT entries for a batch body (see batches.py).

``FileEncoder`` turns a row's CSV fields straight into the wire form of one statement of a
BATCH: the prepared INSERT's id, then the row's values in protocol encoding. One INSERT is
prepared per set of non-empty columns; no CQL is ever built from values. Also here: the
check that a prepared statement's columns have the types this encoding writes (else the
schema drifted), what a row's ``extra`` map holds, and the exceptions by which a row that
cannot be encoded shows (``UNSENDABLE``: the stream then quarantines it).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import itemgetter
from typing import Any, Protocol

from hw_picollector import batches
from hw_picollector.batches import UNSET, value
from hw_picollector.cassandra_session import DatabaseError
from hw_picollector.config import Config
from hw_picollector.devices.canonical import TEXT_COLUMNS
from hw_picollector.tables import MEASUREMENT_COLUMNS

MAX_SHAPES = 64  # INSERTs prepared per set of non-empty columns; beyond, unset markers

TS_VALUE = struct.Struct(">iq").pack
DOUBLE_VALUE = struct.Struct(">id").pack

MEASUREMENT_KINDS = {
    "site_id": "text", "device_id": "text", "day": "date", "ts": "timestamp", "extra": "map",
    **{c: "text" if c in TEXT_COLUMNS else "double" for c in MEASUREMENT_COLUMNS}}

# What encoding a row raises when a value is not what its column holds: not a number, an
# extra cell that is not JSON (or nested beyond reason), a number beyond a double's range.
UNSENDABLE = (ValueError, OverflowError, RecursionError)


def extra_values(fields: list[str], others: list[tuple[int, str]]) -> dict[str, float]:
    """The row's ``extra`` map: numeric columns the table lacks, then the JSON column."""
    extra: dict[str, float] = {}
    for i, name in others:
        if fields[i] != "":
            try:
                extra[name] = float(fields[i])
            except ValueError:
                continue
    text = fields[-1]
    if text:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError(f"not a JSON object but {type(found).__name__}")
        for key, number in found.items():
            if isinstance(number, int | float) and not isinstance(number, bool):
                extra[key] = float(number)
    return extra


def check_types(stmt: Any, table: str, kinds: dict[str, str]) -> None:
    """The prepared columns have the types the encoding writes (else: schema drift)."""
    for col in stmt.column_metadata:
        want = kinds.get(col.name)
        got = getattr(col.type, "typename", "?")
        if want == "map":
            ok = got == "map"
        else:
            ok = got == want or (want == "text" and got in ("varchar", "text"))
        if not ok:
            raise DatabaseError(f"column {table}.{col.name} is {col.type.cql_parameterized_type()}"
                                f", expected {want} (run: hwpc db check)")


class Values(dict[str, bytes]):
    """CSV text → its protocol ``[value]``, computed once. Readings repeat (an energy total
    for minutes, a voltage to the tenth, a counter all day) and parsing a float is most of
    what a row costs; a small bounded table catches nine repeats out of ten."""

    def __init__(self, encode: Callable[[str], bytes], limit: int = 4096):
        super().__init__()
        self.encode = encode
        self.limit = limit

    def __missing__(self, text: str) -> bytes:
        if len(self) >= self.limit:
            self.clear()
        data = self[text] = self.encode(text)
        return data


class EncodingContext(Protocol):
    """What a ``FileEncoder`` uses of the Syncer: the site, the prepared INSERTs per set of
    columns, the value tables shared by every file, the protocol version."""

    config: Config
    protocol: int
    inserts: dict[tuple[str, ...], Any]
    double_values: Values
    text_values: Values

    def insert_for(self, cols: tuple[str, ...]) -> Any: ...


def _getter(indexes: tuple[int, ...]) -> Callable[[list[str]], tuple[str, ...]]:
    """fields → the fields at `indexes`, always as a tuple."""
    if not indexes:
        return lambda _fields: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda fields: (fields[only],)
    return itemgetter(*indexes)


@dataclass(frozen=True, eq=False)
class _Shape:
    """The INSERT for one set of non-empty columns, and how to pick a row's values for it."""

    prefix: bytes  # statement entry header and the partition key values
    present: Callable[[list[str]], tuple[str, ...]]  # fields it writes: all non-empty
    absent: Callable[[list[str]], tuple[str, ...]]  # fields it leaves out: all empty
    doubles: Callable[[list[str]], tuple[str, ...]]
    texts: Callable[[list[str]], tuple[str, ...]] | None
    extra: bool
    map_type: Any
    full: bool = False  # the catch-all INSERT: every column, empty ones unset


class FileEncoder:
    """A day file's rows as pre-encoded INSERT entries for the file's partition.

    One INSERT is prepared per set of non-empty columns (a meter's empty columns rarely
    change, so consecutive rows nearly always reuse the last one), and a row carries only
    its values. Past ``MAX_SHAPES`` sets, one INSERT with every column and unset markers.
    """

    def __init__(self, syncer: EncodingContext, serial: str, day: str, header: list[str]):
        self.syncer = syncer
        names = list(enumerate(header))[1:-1]
        self.double_idx = tuple(i for i, c in names
                                if c in MEASUREMENT_COLUMNS and c not in TEXT_COLUMNS)
        self.text_idx = tuple(i for i, c in names if c in TEXT_COLUMNS)
        self.others = [(i, c) for i, c in names if c not in MEASUREMENT_COLUMNS]
        self.header = header
        self.key = [batches.text_bytes(syncer.config.site_id), batches.text_bytes(serial),
                    batches.date_bytes(date.fromisoformat(day))]
        self.key_values = b"".join(value(v) for v in self.key)
        self.shapes: dict[tuple[tuple[int, ...], tuple[int, ...], bool], _Shape] = {}
        self.last: _Shape | None = None
        self.double_values = syncer.double_values
        self.text_values = syncer.text_values

    def encode(self, ts: int, fields: list[str]) -> bytes:
        shape = self.last
        extra = None
        if self.others or fields[-1]:
            extra = extra_values(fields, self.others)
            shape = self._shape_for(fields, bool(extra))
        elif shape is None or shape.extra or not all(shape.present(fields)) \
                or any(shape.absent(fields)):
            shape = self._shape_for(fields, False)
        if shape.full:
            return self._encode_full(shape, ts, fields, extra)
        row = (shape.prefix + TS_VALUE(8, ts)
               + b"".join(map(self.double_values.__getitem__, shape.doubles(fields))))
        if shape.texts is not None:
            row += b"".join(map(self.text_values.__getitem__, shape.texts(fields)))
        if extra:
            row += value(shape.map_type.serialize(extra, self.syncer.protocol))
        return row

    def problem(self, fields: list[str], exc: Exception) -> str:
        """Why `encode` refused the row (one short line)."""
        for i in self.double_idx:
            try:
                float(fields[i] or 0)
            except ValueError:
                return f"{self.header[i]}: not a number ({fields[i][:32]!r})"
        try:
            extra_values(fields, self.others)
        except UNSENDABLE as bad:
            return f"extra: {type(bad).__name__}: {str(bad)[:120]}"
        return f"{type(exc).__name__}: {str(exc)[:120]}"

    def _shape_for(self, fields: list[str], extra: bool) -> _Shape:
        doubles = tuple(i for i in self.double_idx if fields[i])
        texts = tuple(i for i in self.text_idx if fields[i])
        key = (doubles, texts, extra)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = self._new_shape(doubles, texts, extra)
        self.last = shape
        return shape

    def _new_shape(self, doubles: tuple[int, ...], texts: tuple[int, ...], extra: bool
                   ) -> _Shape:
        full = False
        cols = tuple([self.header[i] for i in (*doubles, *texts)] + (["extra"] if extra else []))
        if len(self.syncer.inserts) >= MAX_SHAPES and cols not in self.syncer.inserts:
            full = True
            doubles, texts, extra = self.double_idx, self.text_idx, True
            cols = tuple([self.header[i] for i in (*doubles, *texts)] + ["extra"])
        stmt = self.syncer.insert_for(cols)
        written = (*doubles, *texts)
        left_out = tuple(i for i in (*self.double_idx, *self.text_idx) if i not in written)
        return _Shape(
            prefix=batches.statement_prefix(stmt.query_id, len(cols) + 4) + self.key_values,
            present=_getter(() if full else written), absent=_getter(() if full else left_out),
            doubles=_getter(doubles), texts=_getter(texts) if texts else None, extra=extra,
            map_type=stmt.column_metadata[-1].type if extra else None, full=full)

    def _encode_full(self, shape: _Shape, ts: int, fields: list[str],
                     extra: dict[str, float] | None) -> bytes:
        parts = [shape.prefix, TS_VALUE(8, ts)]
        parts += [self.double_values[text] if text else UNSET for text in shape.doubles(fields)]
        if shape.texts is not None:
            parts += [self.text_values[text] if text else UNSET for text in shape.texts(fields)]
        parts.append(value(shape.map_type.serialize(extra, self.syncer.protocol))
                     if extra else UNSET)
        return b"".join(parts)
