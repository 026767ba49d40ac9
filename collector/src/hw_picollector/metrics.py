"""This Pi's status as Prometheus metrics, for node_exporter's textfile collector.

``hwpc status --prometheus FILE`` renders the same status as ``hwpc status --json`` (a
``StatusDocument``: ``health.status_document``, status_document.py) and writes it atomically
(a temporary file, then a rename), so the textfile collector never reads half a file. The
collector role's ``hw-picollector-metrics.timer`` runs it when ``hwpc_metrics_textfile_dir``
is set; a household Pi that node_exporter scrapes then shows its freshness, backlog and sync
health between two fleet audits.

Timestamps are Unix seconds; a metric whose value is unknown (no sample yet, never synced)
is left out rather than reported as 0, so alerts on age don't fire on a new Pi.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from hw_picollector import files
from hw_picollector.catalog import DeviceState
from hw_picollector.status_document import StatusDocument, parse_status
from hw_picollector.store import parse_ts

__all__ = ["registry", "write"]

DEVICE_LABELS = ("serial", "product_type", "role")


def _seconds(ts: str | None) -> float | None:
    """A store timestamp (``2026-11-26T13:41:13.000Z``) → Unix seconds; None stays None."""
    return None if not ts else parse_ts(ts) / 1000


def registry(report: StatusDocument | Mapping[str, Any]) -> CollectorRegistry:
    """The metrics of one status (a document, or its JSON object as ``health.status``
    returns it). A value the status does not hold is left out."""
    doc = report if isinstance(report, StatusDocument) else parse_status(report)
    reg = CollectorRegistry()

    def gauge(name: str, help_: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"hwpc_{name}", help_, labels, registry=reg)

    def known(name: str, help_: str, value: float | None) -> None:
        if value is not None:
            gauge(name, help_).set(value)

    gauge("info", "Constant 1, labelled with the site, host and version.",
          ("site_id", "host", "version")).labels(
        doc.site_id or "", doc.host or "", doc.hwpc_version or "").set(1)
    gauge("collector_up", "1 when the collector service is running.").set(doc.service_active)
    known("collector_uptime_seconds", "Seconds since the collector started.", doc.uptime_s)
    known("clock_synchronised", "1 when the system clock is synchronised.",
          doc.clock_synchronised)
    if doc.disk_free_mb is not None and doc.disk_free_mb >= 0:
        gauge("disk_free_bytes", "Free space on the store's file system.").set(
            doc.disk_free_mb * 1024 * 1024)
    gauge("store_write_error", "1 while the store cannot write (rows held in memory).").set(
        bool(doc.write_error))
    known("backlog_rows", "Stored rows not yet acknowledged by the central database.",
          doc.backlog_rows)
    known("backlog_bytes", "Stored bytes not yet acknowledged by the central database.",
          doc.backlog_bytes)
    gauge("lines_quarantined", "Store lines the sync could not parse, kept aside in "
          "<data_dir>/quarantine and never sent.").set(doc.lines_quarantined or 0)
    known("last_sync_timestamp_seconds", "End of the last successful sync.",
          _seconds(doc.last_sync_ts))
    # a successful sync rewrites last-sync.json without last_error (see sync/)
    gauge("last_sync_failed", "1 when the latest sync attempt failed.").set(
        bool((doc.last_sync or {}).get("last_error")))

    newest = gauge("device_last_sample_timestamp_seconds", "Newest sample in the store.",
                   DEVICE_LABELS)
    ok = gauge("device_ok", "1 while the device answers with its configured serial.",
               DEVICE_LABELS)
    samples = gauge("device_samples_since_start", "Samples stored since the collector started.",
                    DEVICE_LABELS)
    samples_dropped = gauge(
        "device_samples_dropped_since_start", "Samples dropped since the collector started: "
        "held in memory beyond max_pending_rows while the store could not be written.",
        DEVICE_LABELS)
    extras_dropped = gauge(
        "device_extras_dropped_since_start", "Extra fields dropped since the collector "
        "started: beyond max_extra_keys/max_extra_bytes in a sample.", DEVICE_LABELS)
    damaged = gauge("device_damaged_lines", "Damaged lines (not rows) in the store's part not "
                    "synced yet, found when the collector started.", DEVICE_LABELS)
    for dev in doc.devices:
        labels = (dev.serial, dev.product_type or "", dev.role or "")
        if (ts := _seconds(dev.last_ts)) is not None:
            newest.labels(*labels).set(ts)
        ok.labels(*labels).set(dev.state == DeviceState.OK)
        samples.labels(*labels).set(dev.samples_since_start or 0)
        samples_dropped.labels(*labels).set(dev.samples_dropped or 0)
        extras_dropped.labels(*labels).set(dev.extras_dropped or 0)
        damaged.labels(*labels).set(dev.damaged_lines or 0)
    gauge("status_timestamp_seconds", "When these metrics were written.").set(
        _seconds(doc.now) or 0)
    return reg


def write(report: StatusDocument | Mapping[str, Any], path: Path) -> None:
    """Write the report's metrics to ``path`` atomically, readable by all (node_exporter runs
    as its own user; the services' umask would make the file private)."""
    # durable=False: a snapshot the metrics timer rewrites; the temporary name is not *.prom
    files.replace_atomically(path, generate_latest(registry(report)), durable=False, mode=0o644)
