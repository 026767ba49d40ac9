"""The central tables: their definitions, columns and who writes them.

Shared by the sync on every Pi (the columns it writes, the tables its login may modify) and
the schema administration on the controller (`hwpc db`, schema.py): the runtime never
imports the controller's modules, so the definitions live here.
"""

from __future__ import annotations

from hw_picollector.devices.canonical import ALL_COLUMNS, TEXT_COLUMNS

SCHEMA_VERSION = 1

MEASUREMENT_COLUMNS = tuple(ALL_COLUMNS)


def _measurement_cols() -> str:
    return "".join(f"  {c} {'text' if c in TEXT_COLUMNS else 'double'},\n"
                   for c in MEASUREMENT_COLUMNS)


TABLES: dict[str, str] = {
    "measurements": (
        "CREATE TABLE IF NOT EXISTS {ks}.measurements (\n"
        "  site_id text, device_id text, day date, ts timestamp,\n"
        + _measurement_cols() +
        "  extra map<text, double>,\n"
        "  PRIMARY KEY ((site_id, device_id, day), ts)\n"
        ") WITH CLUSTERING ORDER BY (ts DESC)\n"
        "  AND compaction = {{'class': 'TimeWindowCompactionStrategy',"
        " 'compaction_window_unit': 'DAYS', 'compaction_window_size': 7}}"
    ),
    "device_latest": (
        "CREATE TABLE IF NOT EXISTS {ks}.device_latest (\n"
        "  site_id text, device_id text, product_type text, role text, ts timestamp,\n"
        "  power_w double, readings map<text, double>, host text,\n"
        "  PRIMARY KEY ((site_id), device_id))"
    ),
    "heartbeats": (
        "CREATE TABLE IF NOT EXISTS {ks}.heartbeats (\n"
        "  host text, day date, ts timestamp, site_id text, version text,\n"
        "  uptime_s double, collector_active boolean, backlog_rows bigint,\n"
        "  backlog_bytes bigint, disk_free_mb bigint, clock_synchronised boolean,\n"
        "  rows_synced bigint, last_error text,\n"
        "  samples_dropped bigint, extras_dropped bigint, lines_quarantined bigint,\n"
        "  PRIMARY KEY ((host, day), ts)\n"
        ") WITH CLUSTERING ORDER BY (ts DESC)"
    ),
    "site_power": (
        "CREATE TABLE IF NOT EXISTS {ks}.site_power (\n"
        "  site_id text, day date, ts timestamp,\n"
        "  grid_w double, production_w double, consumption_w double,\n"
        "  PRIMARY KEY ((site_id, day), ts)\n"
        ") WITH CLUSTERING ORDER BY (ts DESC)"
    ),
    "schema_version": (
        "CREATE TABLE IF NOT EXISTS {ks}.schema_version (\n"
        "  id text PRIMARY KEY, version int, applied timestamp)"
    ),
}

# The tables the sync writes to, and so the only ones a Pi's login role may MODIFY (it may
# SELECT none). A table the sync starts writing to joins this list; tests/unit/test_pi_grants.py
# compares it with the statements the sync prepares.
PI_WRITE_TABLES: tuple[str, ...] = ("measurements", "device_latest", "heartbeats", "site_power")

# Columns each table must have, for `check` and for in-place upgrades (ADD column).
EXPECTED: dict[str, dict[str, str]] = {
    "measurements": {"site_id": "text", "device_id": "text", "day": "date", "ts": "timestamp",
                     **{c: "text" if c in TEXT_COLUMNS else "double"
                        for c in MEASUREMENT_COLUMNS},
                     "extra": "map<text, double>"},
    "device_latest": {"site_id": "text", "device_id": "text", "product_type": "text",
                      "role": "text", "ts": "timestamp", "power_w": "double",
                      "readings": "map<text, double>", "host": "text"},
    "heartbeats": {"host": "text", "day": "date", "ts": "timestamp", "site_id": "text",
                   "version": "text", "uptime_s": "double", "collector_active": "boolean",
                   "backlog_rows": "bigint", "backlog_bytes": "bigint",
                   "disk_free_mb": "bigint", "clock_synchronised": "boolean",
                   "rows_synced": "bigint", "last_error": "text",
                   # what the Pi could not keep or send: samples and extra fields dropped
                   # by the collector, store lines the sync quarantined
                   "samples_dropped": "bigint", "extras_dropped": "bigint",
                   "lines_quarantined": "bigint"},
    "site_power": {"site_id": "text", "day": "date", "ts": "timestamp", "grid_w": "double",
                   "production_w": "double", "consumption_w": "double"},
    "schema_version": {"id": "text", "version": "int", "applied": "timestamp"},
}
