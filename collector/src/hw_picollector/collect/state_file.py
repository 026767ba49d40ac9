"""Writing the collector's state file (``STATE_FILE``, the document of state_document.py):
atomically, without fsync, and in place on a full disk.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hw_picollector import files
from hw_picollector.state_document import STATE_FILE, CollectorState

__all__ = ["STATE_FILE", "write_state"]


def write_state(path: Path, state: CollectorState) -> None:
    """Replace the state file with ``state`` atomically (temp file, rename), without fsync.

    It is a snapshot rewritten every flush interval, not data: after a power cut the previous
    (or no) snapshot is fine, and ``hwpc status`` treats an unreadable one as absent. Syncing
    it (file and directory) would add two disk syncs to every flush, SD card wear for nothing.

    On a full disk, where a new file cannot be written, the snapshot is written over the
    old one in place, within the space that already holds it (padded with blanks): what
    the collector does while the disk is full is what an operator needs to see.
    """
    data = state.to_json().encode()
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
