"""`hwpc collect`'s entry: the data directory, the collector, and the signals that stop it
(SIGTERM from systemd, SIGINT at a terminal: flush, then stop).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from hw_picollector.collect.collector import Collector
from hw_picollector.config import Config

log = logging.getLogger(__name__)


def run(config: Config) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    collector = Collector(config)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: flushing and stopping", signum)
        collector.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return collector.run()
