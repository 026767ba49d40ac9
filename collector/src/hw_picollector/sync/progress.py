"""What a sync run has done so far (``RunStats``), and the progress bar it draws on stderr
when asked to (``hwpc sync --progress``, or by default on a terminal)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class RunStats:
    rows: int = 0
    files: int = 0
    site_power_rows: int = 0
    quarantined: int = 0  # lines newly quarantined
    started: float = field(default_factory=time.monotonic)
    total: int = 0
    last_print: float = 0.0


class Progress:
    """The Syncer's progress bar: rows acknowledged of the backlog, rate, ETA."""

    progress: bool
    stats: RunStats

    def _show_progress(self, final: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not final and now - self.stats.last_print < 0.5:
            return
        self.stats.last_print = now
        done, total = self.stats.rows, max(self.stats.total, self.stats.rows)
        rate = done / max(now - self.stats.started, 1e-6)
        eta = (total - done) / rate if rate > 0 else 0
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows "
                         f"{rate:,.0f} rows/s ETA {eta:,.0f} s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()
