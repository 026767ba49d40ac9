"""Where the day files are, and how one is opened or compressed.

Layout: ``<data_dir>/measurements/<serial>/<YYYY-MM-DD>.csv``; after a good sync, retention
compresses a closed, fully synced day to ``<YYYY-MM-DD>.csv.gz`` beside it.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import TextIO

from hw_picollector import files
from hw_picollector.store.codec import DAY_LEN

MEASUREMENTS = "measurements"
PLAIN = ".csv"
COMPRESSED = ".csv.gz"
GZIP_LEVEL = 3  # 9 % of the size in a tenth of level 9's time (level 9: 6.4 %)


def device_dir(data_dir: Path, serial: str) -> Path:
    return data_dir / MEASUREMENTS / serial


def day_path(data_dir: Path, serial: str, day: str) -> Path:
    """The device's (plain) day file for ``YYYY-MM-DD``, whether it exists or not."""
    return device_dir(data_dir, serial) / f"{day}{PLAIN}"


def compressed_path(path: Path) -> Path:
    """Where retention puts a day file's compressed copy."""
    return path.with_suffix(COMPRESSED)


def day_paths(data_dir: Path, serial: str, day: str) -> tuple[Path, Path]:
    """The day's file as the collector writes it, then as retention compresses it."""
    path = day_path(data_dir, serial, day)
    return path, compressed_path(path)


def day_files(data_dir: Path, serial: str) -> list[Path]:
    """The device's day files (``.csv``), oldest first."""
    folder = device_dir(data_dir, serial)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == PLAIN and len(p.stem) == DAY_LEN)


def compressed_day_files(data_dir: Path, serial: str) -> list[Path]:
    """The device's compressed day files (``.csv.gz``), oldest first."""
    return sorted(device_dir(data_dir, serial).glob(f"*{COMPRESSED}"))


def file_day(path: Path) -> str:
    """The UTC day a day file holds, ``YYYY-MM-DD`` (plain or compressed)."""
    return path.name[:DAY_LEN]


def serials(data_dir: Path) -> list[str]:
    root = data_dir / MEASUREMENTS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def open_day(path: Path) -> TextIO:
    """A day file, plain or compressed, as text: lines end in ``\\n`` whatever ended them
    (``\\r\\n``, ``\\r``), bytes that are not UTF-8 read as U+FFFD."""
    if path.name.endswith(COMPRESSED):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("rt", encoding="utf-8", errors="replace")


def compress(path: Path, level: int = GZIP_LEVEL) -> Path:
    """Replace a day file by its compressed copy, durable before the original goes."""
    gz = compressed_path(path)
    with files.atomic_writer(gz, durable=True) as raw, path.open("rb") as src, \
            gzip.GzipFile(gz.name, "wb", compresslevel=level, fileobj=raw) as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return gz
