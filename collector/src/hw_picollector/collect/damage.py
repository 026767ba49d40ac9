"""Damaged lines in the store: complete lines that are not rows of their day file's columns
(not a torn last line: ``Store.open_device`` repairs those), in the part the sync has not
acknowledged yet. The collector looks once, at its start, and shows what it found in the
state file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hw_picollector import checkpoints, store


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
