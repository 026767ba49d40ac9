"""The report as people read it: a terminal table (`render_table`) and an HTML page
(`render_html`), both from a `FreshnessReport` (report.py: what `judge.build_report` makes,
or `parse_report` reads back from ``freshness-latest.json``). Text only, no I/O.

Every value reaches the terminal and the page through _clean (text) or _num (numbers): the
report's types are checked, but its text is what Pis and inventories said.
"""

from __future__ import annotations

import html
import unicodedata

from hw_picollector.catalog import Verdict
from hw_picollector_controller.freshness.model import VERDICTS, finite
from hw_picollector_controller.freshness.report import FreshnessReport, HourCoverage

COLOURS: dict[str, str] = {Verdict.OK: "#2e7d32", Verdict.LAGGING: "#ef6c00",
                           Verdict.STALE: "#c62828", Verdict.DOWN: "#6a1b9a"}

_UNPRINTABLE = frozenset(("Zl", "Zp"))


def _clean(value: object, replacement: str = "?") -> str:
    """Text without control, format (bidi overrides, zero-width), surrogate or line-separator
    characters: nothing that moves a terminal's cursor, recolours it, or reorders a line."""
    text = value if isinstance(value, str) else ("-" if value is None else str(value))
    return "".join(replacement if unicodedata.category(c)[0] == "C"
                   or unicodedata.category(c) in _UNPRINTABLE else c for c in text)


def _num(value: float | None, spec: str = "") -> str:
    """A finite number as text; None (or NaN, infinity) is '-'."""
    if not finite(value):
        return "-"
    return format(value, spec)


def _age(seconds: float | None) -> str:
    if seconds is None or not finite(seconds):
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _flag(value: bool | None) -> str:
    if value is None:
        return "-"
    return "yes" if value else "NO"


def render_table(report: FreshnessReport) -> str:
    head = ("SITE", "HOST", "VERDICT", "REACH", "SERVICE", "DEVICES", "NEWEST", "LAG",
            "BACKLOG", "LAST SYNC", "UPTIME")
    rows: list[tuple[str, ...]] = [head]
    for e in report.sites:
        ok = sum(1 for d in e.devices if d.status == Verdict.OK)
        ages = [d.age_s for d in e.devices if d.age_s is not None and finite(d.age_s)]
        lags = [d.sync_lag_s for d in e.devices
                if d.sync_lag_s is not None and finite(d.sync_lag_s)]
        last_sync = e.last_sync_ts[:19].replace("T", " ") if e.last_sync_ts else "never"
        rows.append(tuple(_clean(c) for c in (
            e.site_id, e.host,
            e.verdict if e.verdict == Verdict.OK else str(e.verdict).upper(),
            _flag(e.reachable), _flag(e.service_active),
            f"{ok}/{len(e.devices)} ok", _age(max(ages) if ages else None),
            _age(max(lags) if lags else None), _num(e.backlog_rows),
            last_sync, _age(e.uptime_s))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in report.sites:
        for reason in e.reasons:
            lines.append(f"  {_clean(e.site_id)}: {_clean(reason)}")
    s = report.summary
    lines.append(f"{_num(s.sites)} sites: {_num(s.ok)} ok, {_num(s.lagging)} lagging, "
                 f"{_num(s.stale)} stale, {_num(s.down)} down  "
                 f"(report {_clean(report.generated_ts)})")
    if report.central_error:
        lines.append(f"central database: {_clean(report.central_error)}")
    return "\n".join(lines)


def _cell(n: int | None, expected: int) -> str:
    if n is None or not finite(n):
        return '<td class="na" title="no data"></td>'
    if not finite(expected) or expected <= 0:
        return '<td class="na" title="future"></td>'
    ratio = max(0.0, min(1.0, n / expected))
    hue = int(120 * ratio)  # red (0) to green (120)
    return (f'<td style="background:hsl({hue},65%,{45 + int(20 * (1 - ratio))}%)" '
            f'title="{int(n)} of {int(expected)} samples ({100 * ratio:.1f} %)"></td>')


def _strip(hourly: tuple[HourCoverage, ...], series: str) -> str:
    """One row of coverage cells: the ``local`` or the ``central`` counts."""
    return "".join(_cell(c.local if series == "local" else c.central, c.expected)
                   for c in hourly)


def render_html(report: FreshnessReport) -> str:
    def esc(value: object) -> str:
        return html.escape(_clean(value, "\ufffd"), quote=True)

    s = report.summary
    th = report.thresholds
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>hw-picollector fleet freshness</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}"
        "h1{font-size:1.4em}.site{border-left:8px solid;padding:.4em 1em;margin:1em 0;"
        "background:#fafafa}.badge{color:#fff;padding:.1em .5em;border-radius:3px;"
        "font-weight:bold}table.strip{border-collapse:collapse;margin:.2em 0}"
        "table.strip td{width:14px;height:14px;border:1px solid #fff}"
        "td.na{background:#e0e0e0}th{text-align:left;font-weight:normal;color:#555;"
        "padding-right:.6em;white-space:nowrap}.meta{color:#555}.why{color:#b71c1c}"
        "table.sum td{padding:0 1em 0 0}</style></head><body>",
        f"<h1>Fleet freshness — {esc(report.generated_ts)}</h1>",
        f"<p class=meta>{_num(s.sites)} sites: "
        + ", ".join(f'<span class=badge style="background:{COLOURS[v]}">{_num(s.count(v))} '
                    f"{v}</span>" for v in VERDICTS)
        + f" · thresholds: fresh ≤ {_num(th.freshness_max_age_s, 'g')} s, "
          f"sync lag ≤ {_num(th.sync_max_lag_s, 'g')} s, "
          f"heartbeat ≤ {_num(th.heartbeat_max_age_s, 'g')} s"
          " · strips: share of expected samples per hour, last 24 h (local on the Pi, "
          "central in Cassandra); grey = before the first sample</p>",
    ]
    if report.central_error:
        parts.append(f"<p class=why>central database: {esc(report.central_error)}</p>")
    for e in report.sites:
        colour = COLOURS[e.verdict]
        parts.append(f'<div class=site style="border-color:{colour}">')
        parts.append(f'<h2>{esc(e.site_id)} <small class=meta>on {esc(e.host)}'
                     f'</small> <span class=badge style="background:{colour}">'
                     f'{esc(e.verdict)}</span></h2>')
        parts.append(
            f"<p class=meta>reachable {_flag(e.reachable)} · service "
            f"{_flag(e.service_active)} · uptime {_age(e.uptime_s)} · backlog "
            f"{_num(e.backlog_rows)} rows · last sync "
            f"{esc(e.last_sync_ts or 'never')} · heartbeat "
            f"{esc(e.heartbeat_ts or 'none')} · disk free "
            f"{_num(e.disk_free_mb)} MB</p>")
        for reason in e.reasons:
            parts.append(f"<p class=why>{esc(reason)}</p>")
        for d in e.devices:
            day_cov = "; ".join(
                f"{_clean(c.day)}: {_num(100 * c.coverage, '.1f')} %"
                for c in d.coverage_daily if c.coverage is not None and finite(c.coverage))
            parts.append(
                f'<p><b>{esc(d.serial)}</b> <span class=badge style="background:'
                f'{COLOURS[d.status]}">{esc(d.status)}</span> <span class=meta>'
                f'newest local {esc(d.last_local_ts or "-")}, central '
                f'{esc(d.last_central_ts or "-")}'
                f'{" · coverage " + esc(day_cov) if day_cov else ""}</span></p>')
            hourly = d.coverage_hourly
            if hourly:
                parts.append("<table class=strip>")
                for series in ("local", "central"):
                    parts.append(f"<tr><th>{series}</th>{_strip(hourly, series)}</tr>")
                parts.append(f'<tr><th></th><td colspan={len(hourly)} class=meta '
                             f'style="border:0;width:auto">{esc(hourly[0].hour)}:00 … '
                             f'{esc(hourly[-1].hour)}:59 UTC</td></tr></table>')
        parts.append("</div>")
    parts.append(f"<p class=meta>hw-picollector {esc(report.hwpc_version)}</p></body></html>")
    return "\n".join(parts)
