"""The clock gate's policies, and retention: only closed, fully synced days go."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hw_picollector import checkpoints, clock, store
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.config import parse_config
from hw_picollector.sync import retention


def test_wait_policy_waits_for_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "synchronized"
    ok, why = clock.clock_state("wait", str(marker))
    assert not ok and "waiting" in why
    marker.touch()
    assert clock.clock_state("wait", str(marker))[0]
    assert clock.clock_state("trust", str(tmp_path / "absent"))[0]


def test_retention_compresses_synced_days_and_keeps_unsynced(tmp_path: Path) -> None:
    config = parse_config({"site_id": "S", "data_dir": str(tmp_path), "retention_days": 30,
                           "devices": []})
    folder = store.device_dir(tmp_path, "3c39e7000009")
    folder.mkdir(parents=True)
    # Unsynced days stay whatever their age; a partly synced day is unsynced.
    days = {"2026-08-01": False, "2026-08-02": "partly", "2026-09-01": True,
            "2026-11-20": True, "2026-11-21": False}
    for day, synced in days.items():
        path = folder / f"{day}.csv"
        path.write_text(f"ts,power_w,extra\n{day}T00:00:00.000Z,1,\n"
                        f"{day}T00:00:01.000Z,2,\n")
        if synced:
            size = path.stat().st_size - (len(f"{day}T00:00:01.000Z,2,\n")
                                          if synced == "partly" else 0)
            checkpoints.write(tmp_path, "3c39e7000009", day,
                              Checkpoint(size, f"{day}T00:00:00.000Z", 1,
                                         complete=synced is True))
    compressed, removed = retention(config, now=datetime(2026, 11, 26, tzinfo=UTC))
    assert (compressed, removed) == (2, 1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "2026-08-01.csv", "2026-08-02.csv", "2026-11-20.csv.gz", "2026-11-21.csv"]
