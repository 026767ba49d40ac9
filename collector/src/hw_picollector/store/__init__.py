"""The local store on the Pi's SD card: one CSV file per device per UTC day.

Layout: ``<data_dir>/measurements/<serial>/<YYYY-MM-DD>.csv``. The header is fixed when a
file is created (``ts``, the canonical columns of the device type, ``extra``); values the
header has no column for go to ``extra`` as JSON (the collector caps it per sample, see
``canonical.cap_extra``). Retention compresses synced days to ``.csv.gz``.

The store owns its format: nothing outside this package formats or parses a timestamp of
a line, splits a line into fields, or opens a day file (plain or compressed) but through it.
Its modules, each importing only those below it:

- ``writer.py``: ``Store`` (the collector's append-only writer, its durability rules),
  ``repair`` (a torn tail cut on open), ``write_history``;
- ``reader.py``: ``scan`` (the sync's block reader), ``lines_before``, ``last_row``,
  ``row_at``, ``timestamps`` and ``count_per_hour`` (plain or compressed days);
- ``day_files.py``: where the files are (``device_dir``, ``day_files``, ``serials``), how one
  is opened (``open_day``) and compressed (``compress``);
- ``codec.py``: the timestamp codec (``format_ts``, ``parse_ts``, ``day_of``) and the line
  codec (``encode_line``, ``decode_line``, the header).
"""

from __future__ import annotations

from hw_picollector.store.codec import (
    CSV_SPECIAL,
    DAY_LEN,
    DAY_MS,
    EXTRA_COLUMN,
    HOUR_LEN,
    HOUR_MS,
    TS_COLUMN,
    TS_LEN,
    day_of,
    decode_extra,
    decode_fields,
    decode_header,
    decode_line,
    encode_extra,
    encode_header,
    encode_line,
    format_ts,
    format_value,
    header_width,
    hour_of,
    line_ts,
    parse_day,
    parse_ts,
    stamped,
    valid_line,
)
from hw_picollector.store.day_files import (
    COMPRESSED,
    GZIP_LEVEL,
    MEASUREMENTS,
    PLAIN,
    compress,
    compressed_day_files,
    compressed_path,
    day_files,
    day_path,
    day_paths,
    device_dir,
    file_day,
    open_day,
    serials,
)
from hw_picollector.store.reader import (
    LOOKBACK_BLOCK,
    SCAN_BLOCK,
    TAIL_SCAN,
    BadLine,
    Row,
    StoredRow,
    count_per_hour,
    last_row,
    line_ending_at,
    lines_before,
    read_header,
    read_rows,
    row_at,
    row_ending_at,
    scan,
    timestamps,
)
from hw_picollector.store.writer import (
    MAX_PENDING_ROWS,
    DiskFullError,
    Store,
    repair,
    write_history,
)

__all__ = [
    "COMPRESSED",
    "CSV_SPECIAL",
    "DAY_LEN",
    "DAY_MS",
    "EXTRA_COLUMN",
    "GZIP_LEVEL",
    "HOUR_LEN",
    "HOUR_MS",
    "LOOKBACK_BLOCK",
    "MAX_PENDING_ROWS",
    "MEASUREMENTS",
    "PLAIN",
    "SCAN_BLOCK",
    "TAIL_SCAN",
    "TS_COLUMN",
    "TS_LEN",
    "BadLine",
    "DiskFullError",
    "Row",
    "Store",
    "StoredRow",
    "compress",
    "compressed_day_files",
    "compressed_path",
    "count_per_hour",
    "day_files",
    "day_of",
    "day_path",
    "day_paths",
    "decode_extra",
    "decode_fields",
    "decode_header",
    "decode_line",
    "device_dir",
    "encode_extra",
    "encode_header",
    "encode_line",
    "file_day",
    "format_ts",
    "format_value",
    "header_width",
    "hour_of",
    "last_row",
    "line_ending_at",
    "line_ts",
    "lines_before",
    "open_day",
    "parse_day",
    "parse_ts",
    "read_header",
    "read_rows",
    "repair",
    "row_at",
    "row_ending_at",
    "scan",
    "serials",
    "stamped",
    "timestamps",
    "valid_line",
    "write_history",
]
