"""How long the local store keeps what was synced: after a good run, closed and fully
synced day files are compressed to ``.csv.gz`` (the copy durable before the original goes),
and compressed days older than ``retention_days`` are removed (0: never)."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, date, datetime, timedelta

from hw_picollector import checkpoints, files, store
from hw_picollector.config import Config

GZIP_LEVEL = 3  # 9 % of the size in a tenth of level 9's time (level 9: 6.4 %)


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
            gz = path.with_suffix(".csv.gz")
            # durable=True: the compressed copy is on disk before the original goes
            with files.atomic_writer(gz, durable=True) as raw, path.open("rb") as src, \
                    gzip.GzipFile(gz.name, "wb", compresslevel=GZIP_LEVEL, fileobj=raw) as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()
            compressed += 1
        if config.retention_days > 0:
            limit = (now - timedelta(days=config.retention_days)).date()
            for gz in sorted(store.device_dir(data_dir, serial).glob("*.csv.gz")):
                if date.fromisoformat(gz.name[:10]) < limit:
                    gz.unlink()
                    removed += 1
    return compressed, removed
