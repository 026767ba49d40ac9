"""Sync progress kept beside the store: one checkpoint per day file, plus the last sync run.

``<data_dir>/sync/<serial>/<YYYY-MM-DD>.json`` holds the byte offset up to which Cassandra
acknowledged every row, and the ``ts`` of the row that ends there. It moves only forward,
only after the acknowledgement, and is written atomically (temp file, fsync, rename). A
checkpoint that no longer matches its file (the file was cut back by a power cut after the
rows were read) is ignored and the file re-sent: writes are idempotent upserts.

When the lines that end at the offset were quarantined (see quarantine.py), ``ts`` is
still that of the newest row sent, and ``quarantined`` holds the SHA-256 of the line that
ends there: what the check compares instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw_picollector import files, store

SYNC_DIR = "sync"
LAST_SYNC = "sync/last-sync.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    offset: int = 0
    last_ts: str | None = None
    rows: int = 0
    complete: bool = False  # the day is closed and every row acknowledged
    quarantined: str | None = None  # SHA-256 of the quarantined line ending at offset


def path_for(data_dir: Path, serial: str, day: str) -> Path:
    return data_dir / SYNC_DIR / serial / f"{day}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # durable=True: exactly-once rests on checkpoints surviving a power cut (last-sync as before)
    files.replace_atomically(path, json.dumps(data, sort_keys=True), durable=True)


def read(data_dir: Path, serial: str, day: str) -> Checkpoint:
    try:
        raw = json.loads(path_for(data_dir, serial, day).read_text(encoding="utf-8"))
        return Checkpoint(int(raw["offset"]), raw.get("last_ts"), int(raw.get("rows", 0)),
                          bool(raw.get("complete", False)), raw.get("quarantined"))
    except (OSError, ValueError, KeyError, TypeError):
        return Checkpoint()


def write(data_dir: Path, serial: str, day: str, cp: Checkpoint) -> None:
    data = {k: v for k, v in dataclasses.asdict(cp).items()
            if k != "quarantined" or v is not None}
    write_json_atomic(path_for(data_dir, serial, day), data)


def validated(csv_path: Path, cp: Checkpoint) -> Checkpoint:
    """The checkpoint if it still matches the file, else a fresh start for that file.

    The line that ends at the offset is read back to its start, whatever its size.
    """
    if cp.offset == 0:
        return cp
    try:
        with csv_path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if cp.offset > size:
                return Checkpoint()
            _start, last_line = next(store.lines_before(fh, cp.offset), (0, b""))
    except OSError:
        return Checkpoint()
    if not last_line.endswith(b"\n"):
        return Checkpoint()
    if cp.quarantined is not None:
        return cp if hashlib.sha256(last_line).hexdigest() == cp.quarantined else Checkpoint()
    if cp.last_ts and not store.stamped(last_line, cp.last_ts):
        return Checkpoint()
    return cp


def _count_lines(path: Path, start: int) -> int:
    count = 0
    with path.open("rb") as fh:
        fh.seek(start)
        while chunk := fh.read(CHUNK):
            count += chunk.count(b"\n")
    return count


def backlog(data_dir: Path) -> tuple[int, int]:
    """Rows and bytes in the store that Cassandra has not acknowledged yet."""
    rows = size = 0
    for serial in store.serials(data_dir):
        for path in store.day_files(data_dir, serial):
            cp = read(data_dir, serial, path.stem)
            file_size = path.stat().st_size
            if cp.complete and cp.offset >= file_size:
                continue
            cp = validated(path, cp)
            start = cp.offset
            if start == 0:
                with path.open("rb") as fh:
                    start = len(fh.readline())
            if file_size > start:
                size += file_size - start
                rows += _count_lines(path, start)
    return rows, size


def read_last_sync(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / LAST_SYNC).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_last_sync(data_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(data_dir / LAST_SYNC, record)
