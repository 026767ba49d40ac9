"""Lines of the local store the sync cannot send, kept aside so that the rest flows.

A complete line of a day file that is not a row the sync can send would otherwise hold its
file back for good: a line damaged on the card, a field over the csv module's 128 KiB
limit, a wrong number of fields, a timestamp that does not exist, bytes that are not UTF-8,
a value that is not a number, an ``extra`` cell that is not a JSON object of numbers. The
sync copies such a line here, then lets its checkpoint move past it.

``<data_dir>/quarantine/<serial>/<YYYY-MM-DD>.jsonl``: one JSON object per line, with
``serial``, ``day``, ``file`` (the day file, relative to the data dir), ``offset`` (the
line's first byte) and ``end``, ``reason``, ``sha256``, ``quarantined`` (when), and the line
itself: ``line`` when it is UTF-8 text, else ``line_b64``. A record is fsync'd before the
checkpoint can move past its line, and a line (file, offset, content) is recorded once,
however often the sync reads it again (a crash before the checkpoint, a re-sent file).
The project never deletes these files: what becomes of a quarantined line is the
operator's call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hw_picollector import files, store

log = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"


def path_for(data_dir: Path, serial: str, day: str) -> Path:
    return data_dir / QUARANTINE_DIR / serial / f"{day}.jsonl"


def digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def count(data_dir: Path) -> int:
    """Lines quarantined so far (a record torn by a crash is not one)."""
    total = 0
    for path in (data_dir / QUARANTINE_DIR).glob("*/*.jsonl"):
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    total += chunk.count(b"\n")
        except OSError:
            continue
    return total


def _record(serial: str, day: str, offset: int, line: bytes, reason: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "serial": serial, "day": day, "file": store.day_path(Path(), serial, day).as_posix(),
        "offset": offset, "end": offset + len(line), "reason": reason,
        "sha256": digest(line), "quarantined": store.format_ts(time.time_ns() // 1_000_000)}
    try:
        record["line"] = line.decode("utf-8")
    except UnicodeDecodeError:
        record["line_b64"] = base64.b64encode(line).decode("ascii")
    return record


class Quarantine:
    """The quarantine of one data dir, as one sync run reads and appends it (one thread)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._known: dict[tuple[str, str], dict[int, tuple[str, int]]] = {}

    def known(self, serial: str, day: str) -> dict[int, tuple[str, int]]:
        """The lines of a day file already quarantined: offset → (sha256, end)."""
        key = (serial, day)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._load(path_for(self.data_dir, serial, day))
        return found

    def ends(self, serial: str, day: str) -> set[int]:
        """Where the lines of a day file already quarantined end (a row's scan offset)."""
        return {end for _sha, end in self.known(serial, day).values()}

    def add(self, serial: str, day: str, offset: int, line: bytes, reason: str) -> bool:
        """Keep `line`, found at byte `offset` of the day file, durably aside.

        True when it was added, False when it was already there; OSError when it could not
        be written (then nothing may move past the line).
        """
        known = self.known(serial, day)
        sha = digest(line)
        if known.get(offset, ("", 0))[0] == sha:
            return False
        record = _record(serial, day, offset, line, reason)
        self._append(path_for(self.data_dir, serial, day),
                     (json.dumps(record, sort_keys=True) + "\n").encode("ascii"))
        known[offset] = (sha, offset + len(line))
        return True

    def _load(self, path: Path) -> dict[int, tuple[str, int]]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a record torn by a crash: cut off before anything is appended
            log.warning("%s: cut a torn record (%d bytes) off its end", path, len(data) - cut)
            with path.open("rb+") as fh:
                fh.truncate(cut)
                os.fsync(fh.fileno())
        known: dict[int, tuple[str, int]] = {}
        for raw in data[:cut].splitlines():
            try:
                rec = json.loads(raw)
                known[int(rec["offset"])] = (str(rec["sha256"]), int(rec["end"]))
            except (ValueError, KeyError, TypeError):
                continue
        return known

    def _append(self, path: Path, data: bytes) -> None:
        """Append one record and fsync it (and, for a new file, the directories)."""
        created = _make_dirs(path.parent)
        new = created or not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # never leave half a record behind
                raise
        finally:
            os.close(fd)
        if new:
            files.fsync_dir(path.parent)


def _make_dirs(folder: Path) -> bool:
    """Create `folder` and its missing parents, each made durable in its parent."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        files.fsync_dir(path.parent)
    return bool(missing)
