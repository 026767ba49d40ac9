"""A store that cannot be written: one error line per outage, however its reason reads.

``Store.write_error`` joins one reason per device that failed in that flush, so its text
changes during one outage (a second device's file fills up, a device has nothing to write
in a flush, the errno changes): the journal gets one line when writing stops and one when it
works again, and the state file always holds the current reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hw_picollector.collect.collector import Collector
from hw_picollector.config import Config


def test_one_error_line_per_outage_not_per_changed_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(path=str(tmp_path / "config.yml"), site_id="TEST01",
                    data_dir=tmp_path / "data", devices=(), clock_sync="trust", mdns=False)
    config.data_dir.mkdir()
    collector = Collector(config)
    full = "No space left on device"
    errors = iter([
        None,
        f"aa: {full}",  # the outage starts
        f"aa: {full}; bb: {full}",  # a second device's file fills up
        f"bb: {full}",  # aa had nothing to write in this flush
        "bb: Input/output error",
        None,  # writable again
        f"aa: {full}",  # a second outage
        None,
    ])

    def flush() -> int:
        collector.store.write_error = next(errors)
        return 0

    monkeypatch.setattr(collector.store, "flush", flush)
    published: list[object] = []
    # where the collector looks the name up (the package re-exports it too)
    monkeypatch.setattr("hw_picollector.collect.collector.write_state",
                        lambda _path, state: published.append(state.write_error))
    with caplog.at_level(logging.INFO, logger="hw_picollector.collect"):
        for _ in range(8):
            collector._flush()
    messages = [r.getMessage() for r in caplog.records]
    failing = [m for m in messages if "cannot write the store" in m]
    assert len(failing) == 2, failing
    assert full in failing[0] and full in failing[1]
    assert sum("store writable again" in m for m in messages) == 2
    # the state file shows the reason of the moment, whatever the journal said
    assert published[4] == "bb: Input/output error"
    assert published[5] is None
