"""The report as people read it: a terminal table (`render_table`) and an HTML page
(`render_html`), both from the report dict of `judge.build_report` (or one read back from
``freshness-latest.json``). Text only, no I/O.

Every value reaches the terminal and the page through _clean (text) or _num (numbers): the
report holds what Pis and inventories said, and a report file may have been edited since.
"""

from __future__ import annotations

import html
import unicodedata
from typing import Any

from hw_picollector.catalog import Verdict
from hw_picollector_controller.freshness.model import VERDICTS, finite

COLOURS: dict[str, str] = {Verdict.OK: "#2e7d32", Verdict.LAGGING: "#ef6c00",
                           Verdict.STALE: "#c62828", Verdict.DOWN: "#6a1b9a"}

_UNPRINTABLE = frozenset(("Zl", "Zp"))


def _clean(value: Any, replacement: str = "?") -> str:
    """Text without control, format (bidi overrides, zero-width), surrogate or line-separator
    characters: nothing that moves a terminal's cursor, recolours it, or reorders a line."""
    text = value if isinstance(value, str) else ("-" if value is None else str(value))
    return "".join(replacement if unicodedata.category(c)[0] == "C"
                   or unicodedata.category(c) in _UNPRINTABLE else c for c in text)


def _num(value: Any, spec: str = "") -> str:
    """A finite number as text; anything else is '-'."""
    if not finite(value):
        return "-"
    return format(value, spec)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _age(seconds: Any) -> str:
    if not finite(seconds):
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _flag(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value is True else "NO" if value is False else "?"


def _colour(verdict: Any) -> str:
    return COLOURS.get(verdict, "#757575") if isinstance(verdict, str) else "#757575"


def render_table(report: dict[str, Any]) -> str:
    head = ("SITE", "HOST", "VERDICT", "REACH", "SERVICE", "DEVICES", "NEWEST", "LAG",
            "BACKLOG", "LAST SYNC", "UPTIME")
    rows: list[tuple[str, ...]] = [head]
    sites = [_dict(e) for e in _list(report.get("sites"))]
    for e in sites:
        devs = [_dict(d) for d in _list(e.get("devices"))]
        ok = sum(1 for d in devs if d.get("status") == Verdict.OK)
        ages = [d["age_s"] for d in devs if finite(d.get("age_s"))]
        lags = [d["sync_lag_s"] for d in devs if finite(d.get("sync_lag_s"))]
        last_sync = e.get("last_sync_ts")
        last_sync = (last_sync[:19].replace("T", " ") if isinstance(last_sync, str) and last_sync
                     else "never")
        verdict = e.get("verdict")
        rows.append(tuple(_clean(c) for c in (
            e.get("site_id"), e.get("host"),
            verdict if verdict == Verdict.OK else str(verdict).upper(),
            _flag(e.get("reachable")), _flag(e.get("service_active")),
            f"{ok}/{len(devs)} ok", _age(max(ages) if ages else None),
            _age(max(lags) if lags else None), _num(e.get("backlog_rows")),
            last_sync, _age(e.get("uptime_s")))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in sites:
        for reason in _list(e.get("reasons")):
            lines.append(f"  {_clean(e.get('site_id'))}: {_clean(reason)}")
    s = _dict(report.get("summary"))
    lines.append(f"{_num(s.get('sites'))} sites: {_num(s.get('ok'))} ok, "
                 f"{_num(s.get('lagging'))} lagging, {_num(s.get('stale'))} stale, "
                 f"{_num(s.get('down'))} down  (report {_clean(report.get('generated_ts'))})")
    if report.get("central_error"):
        lines.append(f"central database: {_clean(report['central_error'])}")
    return "\n".join(lines)


def _cell(n: Any, expected: Any) -> str:
    if not finite(n):
        return '<td class="na" title="no data"></td>'
    if not finite(expected) or expected <= 0:
        return '<td class="na" title="future"></td>'
    ratio = max(0.0, min(1.0, n / expected))
    hue = int(120 * ratio)  # red (0) to green (120)
    return (f'<td style="background:hsl({hue},65%,{45 + int(20 * (1 - ratio))}%)" '
            f'title="{int(n)} of {int(expected)} samples ({100 * ratio:.1f} %)"></td>')


def render_html(report: dict[str, Any]) -> str:
    def esc(value: Any) -> str:
        return html.escape(_clean(value, "\ufffd"), quote=True)

    s = _dict(report.get("summary"))
    th = _dict(report.get("thresholds"))
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
        f"<h1>Fleet freshness — {esc(report.get('generated_ts'))}</h1>",
        f"<p class=meta>{_num(s.get('sites'))} sites: "
        + ", ".join(f'<span class=badge style="background:{_colour(v)}">{_num(s.get(v))} {v}'
                    "</span>" for v in VERDICTS)
        + f" · thresholds: fresh ≤ {_num(th.get('freshness_max_age_s'), 'g')} s, "
          f"sync lag ≤ {_num(th.get('sync_max_lag_s'), 'g')} s, "
          f"heartbeat ≤ {_num(th.get('heartbeat_max_age_s'), 'g')} s"
          " · strips: share of expected samples per hour, last 24 h (local on the Pi, "
          "central in Cassandra); grey = before the first sample</p>",
    ]
    if report.get("central_error"):
        parts.append(f"<p class=why>central database: {esc(report['central_error'])}</p>")
    for e in (_dict(x) for x in _list(report.get("sites"))):
        colour = _colour(e.get("verdict"))
        parts.append(f'<div class=site style="border-color:{colour}">')
        parts.append(f'<h2>{esc(e.get("site_id"))} <small class=meta>on {esc(e.get("host"))}'
                     f'</small> <span class=badge style="background:{colour}">'
                     f'{esc(e.get("verdict"))}</span></h2>')
        parts.append(
            f"<p class=meta>reachable {_flag(e.get('reachable'))} · service "
            f"{_flag(e.get('service_active'))} · uptime {_age(e.get('uptime_s'))} · backlog "
            f"{_num(e.get('backlog_rows'))} rows · last sync "
            f"{esc(e.get('last_sync_ts') or 'never')} · heartbeat "
            f"{esc(e.get('heartbeat_ts') or 'none')} · disk free "
            f"{_num(e.get('disk_free_mb'))} MB</p>")
        for reason in _list(e.get("reasons")):
            parts.append(f"<p class=why>{esc(reason)}</p>")
        for d in (_dict(x) for x in _list(e.get("devices"))):
            day_cov = "; ".join(
                f"{_clean(day)}: {_num(100 * v['coverage'], '.1f')} %"
                for day, v in _dict(d.get("coverage_daily")).items()
                if finite(_dict(v).get("coverage")))
            parts.append(
                f'<p><b>{esc(d.get("serial"))}</b> <span class=badge style="background:'
                f'{_colour(d.get("status"))}">{esc(d.get("status"))}</span> <span class=meta>'
                f'newest local {esc(d.get("last_local_ts") or "-")}, central '
                f'{esc(d.get("last_central_ts") or "-")}'
                f'{" · coverage " + esc(day_cov) if day_cov else ""}</span></p>')
            hourly = [_dict(c) for c in _list(d.get("coverage_hourly"))]
            if hourly:
                parts.append("<table class=strip>")
                for key in ("local", "central"):
                    cells = "".join(_cell(c.get(key), c.get("expected")) for c in hourly)
                    parts.append(f"<tr><th>{key}</th>{cells}</tr>")
                parts.append(f'<tr><th></th><td colspan={len(hourly)} class=meta '
                             f'style="border:0;width:auto">{esc(hourly[0].get("hour"))}:00 … '
                             f'{esc(hourly[-1].get("hour"))}:59 UTC</td></tr></table>')
        parts.append("</div>")
    parts.append(f"<p class=meta>hw-picollector {esc(report.get('version'))}</p></body></html>")
    return "\n".join(parts)

