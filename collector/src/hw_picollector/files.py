"""Replacing a file whole, atomically: the one way the package writes a file it may rewrite.

The new content goes to a temporary file in the same directory (same file system), named
``.<name>.<pid>.<random>.tmp`` so that one left by a crash is recognisable (a dot file that
no store scan, ``*.prom`` collector or ``*.json``/``*.csv`` reader picks up); it then takes
the place of ``<name>`` by ``os.replace``: a reader sees the old content or the new, never
a mix. On any error the temporary file is removed and the error raised again.

``durable`` is every caller's explicit choice:

- ``True``: the temporary file is fsync'd before the rename and the directory after it, so
  once the call returns the new content survives a power cut (what the sync's checkpoints
  and compressed days rely on);
- ``False``: no fsync; after a power cut the path may hold the old content, or (on some file
  systems) an empty file: for snapshots that are rewritten anyway.

``mode``, when given, is set on the file whatever the umask; without it the file gets what
``open()`` would give a new file (``create_mode``, 0o666 by default, less the umask).

Also `disk_free_mb`: the room left on a file system, which the collector's state file and
`hwpc status` both report.

Standard library only: the runtime, the controller and the simulator all use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename (or a new entry) in it is on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, durable: bool, mode: int | None = None,
                  create_mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` on success.

    On leaving the block without an error: flush, fsync (``durable``), rename over ``path``,
    fsync the directory (``durable``). On any error, in the block or after it: the temporary
    file is removed and the error raised again; ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create_mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def replace_atomically(path: Path, data: bytes | str, *, durable: bool, mode: int | None = None,
                       create_mode: int = 0o666) -> None:
    """Replace ``path``'s content with ``data`` (``str`` is written as UTF-8); see
    :func:`atomic_writer` for ``durable``, ``mode`` and ``create_mode``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, durable=durable, mode=mode, create_mode=create_mode) as fh:
        fh.write(payload)


def disk_free_mb(path: Path) -> int:
    """The space an unprivileged process may still use on ``path``'s file system, in MiB;
    -1 when it cannot be known."""
    try:
        st = os.statvfs(path)  # what shutil.disk_usage calls "free", without importing shutil
        return st.f_bavail * st.f_frsize // (1 << 20)
    except OSError:
        return -1
