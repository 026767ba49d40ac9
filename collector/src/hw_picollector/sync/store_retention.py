"""How long the local store keeps what was synced: after a good run, closed and fully
synced day files are compressed to ``.csv.gz`` (the store's ``compress``: the copy durable
before the original goes), and compressed days older than ``retention_days`` are removed
(0: never)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hw_picollector import checkpoints, store
from hw_picollector.config import Config


def retention(config: Config, now: datetime | None = None) -> tuple[int, int]:
    """Compress closed, fully synced days; remove compressed days past retention_days."""
    now = now or datetime.now(UTC)
    compressed = removed = 0
    data_dir = config.data_dir
    for serial in store.serials(data_dir):
        for path in store.day_files(data_dir, serial):
            cp = checkpoints.read(data_dir, serial, path.stem)
            if not cp.complete or cp.offset != path.stat().st_size:
                continue
            store.compress(path)
            compressed += 1
        if config.retention_days > 0:
            limit = (now - timedelta(days=config.retention_days)).date()
            for gz in store.compressed_day_files(data_dir, serial):
                if store.parse_day(store.file_day(gz)) < limit:
                    gz.unlink()
                    removed += 1
    return compressed, removed
