"""Extra fields are kept up to a cap per sample; the rest are dropped deterministically."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from hw_picollector import store
from hw_picollector.config import ConfigError, parse_config
from hw_picollector.devices.canonical import cap_extra, columns, to_sample

KEYS, BYTES = 256, 16 * 1024


def encoded(extra: dict[str, float]) -> int:
    return len(json.dumps(extra, sort_keys=True, separators=(",", ":")))


def test_within_the_cap_nothing_changes() -> None:
    extra = {"b_w": 1.0, "a_w": 2.5}
    kept, dropped = cap_extra(extra, KEYS, BYTES)
    assert kept == extra and dropped == 0
    assert cap_extra({}, KEYS, BYTES) == ({}, 0)


def test_forty_thousand_keys_keep_the_first_by_name() -> None:
    names = [f"x{i:05d}_w" for i in range(40_000)]
    random.Random(7).shuffle(names)
    payload = {name: float(i) for i, name in enumerate(names)}
    sample = to_sample("HWE-P1", {"active_power_w": 5.0, **payload})
    assert len(sample.extra) == 40_000  # canonical keeps them; the collector caps
    kept, dropped = cap_extra(sample.extra, KEYS, BYTES)
    assert sorted(kept) == sorted(payload)[:KEYS]
    assert all(kept[k] == payload[k] for k in kept)
    assert dropped == 40_000 - KEYS
    assert encoded(kept) <= BYTES
    # the same whatever the order the device sent them in
    again = dict(sorted(sample.extra.items(), reverse=True))
    assert cap_extra(again, KEYS, BYTES) == (kept, dropped)


def test_the_byte_cap_keeps_the_longest_prefix_that_fits() -> None:
    extra = {f"{i:03d}_{'n' * 200}": 1234.5678 + i for i in range(200)}
    kept, dropped = cap_extra(extra, KEYS, BYTES)
    names = sorted(extra)
    assert sorted(kept) == names[:len(kept)]
    assert encoded(kept) <= BYTES
    assert encoded({**kept, names[len(kept)]: extra[names[len(kept)]]}) > BYTES
    assert dropped == 200 - len(kept) > 0


def test_names_that_need_escaping_count_as_encoded() -> None:
    extra = {"é" * 100 + f"{i:03d}": float(i) for i in range(100)}  # \u00e9: 6 bytes each
    kept, _ = cap_extra(extra, KEYS, 4096)
    assert encoded(kept) <= 4096 < encoded(extra)


def test_a_capped_row_stays_small(tmp_path: Path) -> None:
    s = store.Store(tmp_path, columns)
    s.open_device("aaaaaaaaaaaa", "HWE-P1")
    extra = {f"x{i:05d}_w": i + 0.123456789 for i in range(40_000)}
    kept, _ = cap_extra(extra, KEYS, BYTES)
    line = s.encoder("aaaaaaaaaaaa")(1_764_146_603_123, {"power_w": 5.0}, kept)
    assert len(line.encode()) < BYTES + 2 * KEYS + 1024  # quotes doubled in the CSV cell
    uncapped = s.encoder("aaaaaaaaaaaa")(1_764_146_603_123, {"power_w": 5.0}, extra)
    assert len(uncapped.encode()) > 700_000  # what a day of this was: 60 GB


BASE: dict[str, Any] = {"site_id": "S1", "devices": []}


def test_config_defaults_and_settings() -> None:
    config = parse_config(BASE)
    assert (config.max_extra_keys, config.max_extra_bytes, config.max_pending_rows) == \
        (256, 16384, 3600)
    config = parse_config({**BASE, "max_extra_keys": 10, "max_extra_bytes": 1000,
                           "max_pending_rows": 60})
    assert (config.max_extra_keys, config.max_extra_bytes, config.max_pending_rows) == \
        (10, 1000, 60)


@pytest.mark.parametrize(("key", "value"), [("max_extra_keys", -1), ("max_extra_bytes", 1.5),
                                            ("max_pending_rows", 0), ("max_extra_keys", True)])
def test_config_refuses_bad_caps(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config({**BASE, key: value})


def test_names_beyond_the_basic_plane_count_as_encoded() -> None:
    extra = {"\U0001f600" * 40 + f"{i:03d}": float(i) for i in range(30)}  # 12 bytes each
    kept, _ = cap_extra(extra, KEYS, 10_000)
    assert encoded(kept) <= 10_000 < encoded(extra)
