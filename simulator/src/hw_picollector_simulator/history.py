"""`hwpc simulate-history`: days of realistic 1 Hz samples, written as `collect` writes them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from hw_picollector import store
from hw_picollector.config import Config
from hw_picollector.devices.canonical import columns, to_sample
from hw_picollector_simulator.model import DeviceModel

log = logging.getLogger(__name__)


def _rows(model: DeviceModel, product_type: str, start_s: int, end_s: int
          ) -> Iterator[tuple[int, dict[str, float | str]]]:
    for second in range(start_s, end_s):
        sample = to_sample(product_type, model.measurement(float(second)))
        values = dict(sample.values)
        values.update(sample.extra)
        yield second * 1000, values


def run(config: Config, days: int, end: date) -> int:
    if days < 1:
        raise ValueError("--days must be at least 1")
    first = datetime.combine(end - timedelta(days=days - 1), datetime.min.time(), UTC)
    start_s = int(first.timestamp())
    end_s = min(int((first + timedelta(days=days)).timestamp()), int(time.time()))
    total = 0
    for dev in config.devices:
        model = DeviceModel(dev.serial, dev.product_type, dev.role)
        count = store.write_history(config.data_dir, dev.serial, columns(dev.product_type),
                                    _rows(model, dev.product_type, start_s, end_s))
        log.info("%s: %d rows of history written", dev.serial, count)
        total += count
    log.info("%d rows for %d device(s), %s to %s", total, len(config.devices),
             store.format_ts(start_s * 1000), store.format_ts(end_s * 1000))
    return 0
