"""The audit's input: the fleet file Ansible gathered (playbooks/check_freshness.yml, role
freshness), read into one `SiteInput` per site, each Pi's `hwpc status --json` parsed into a
`StatusDocument` (status_document.py: version 1 or 2) before anything reads it.

`hwpc status --json` comes from a machine in someone's home: a status the parser rejects
(the wrong kind of value, a newer format) makes its site "malformed status: <what, naming the
key>" (not ok) instead of ending the audit of every other site.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hw_picollector.status_document import StatusDocument, StatusError, parse_status
from hw_picollector_controller.freshness.model import SiteInput


def status_problem(status: Any) -> str | None:
    """What makes a Pi's status unusable for the audit (the parser's message), or None."""
    try:
        parse_status(status)
    except StatusError as exc:
        return str(exc)
    return None


def load_fleet(path: Path) -> list[SiteInput]:
    """The fleet file: ``{"sites": [{host, site_id, devices, reachable, rc, stdout, stderr}]}``.
    A status that is not JSON, or not what `hwpc status --json` prints ("malformed status"), is
    kept as an error, never fatal: the site is still judged, and so is every other site."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries = raw.get("sites", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected {{\"sites\": [...]}}")
    sites = []
    for i, s in enumerate(entries):
        where = f"{path}: sites[{i}]"
        if not isinstance(s, dict) or not s.get("host") or not s.get("site_id"):
            raise ValueError(f"{where}: needs host and site_id")
        if not isinstance(s.get("devices") or [], list):
            raise ValueError(f"{where}: devices must be a list of serials")
        status: StatusDocument | None = None
        error: str | None = None
        reachable = bool(s.get("reachable", False))
        if reachable:
            rc = s.get("rc", 0)
            stderr = s.get("stderr")
            lines = stderr.strip().splitlines() if isinstance(stderr, str) else []
            last = f": {lines[-1]}" if lines else ""
            if rc is None:  # the module never ran it (sudo refused, no interpreter, ...)
                error = f"hwpc status did not run{last}"
            elif rc != 0:
                error = f"hwpc status exited {rc}{last}"
            elif not isinstance(s.get("stdout") or "", str):
                error = "malformed status: stdout is not text"
            else:
                try:
                    printed = json.loads(s.get("stdout") or "")
                except (ValueError, RecursionError):
                    error = "hwpc status did not print JSON"
                else:
                    try:
                        status = parse_status(printed)
                    except StatusError as exc:
                        error = f"malformed status: {exc}"
        devices = [str(d) for d in s.get("devices") or []]
        sites.append(SiteInput(host=str(s["host"]), site_id=str(s["site_id"]), devices=devices,
                               reachable=reachable, status=status, error=error))
    return sites
