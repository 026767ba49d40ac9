"""`hwpc sites check|import`: the sites workbook, checked and turned into an Ansible inventory.

Runs on the controller only (openpyxl is the ``controller`` extra and is imported lazily, so
``hwpc`` on a Pi never needs it).

One module per job. Each imports only modules listed before it (checked by the
``sites-layers`` contract of ``lint-imports``, collector/pyproject.toml):

- ``fleet``: the model, what a workbook says (``Site``, ``Device``, ``Fleet``).
- ``workbook``: the sheet reader that keeps every value's cell address (sheet, row, column),
  and what it refuses in any sheet (secret columns, formulas, template syntax ...).
- ``bounds``: the workbook's size, checked on its XML before openpyxl loads it.
- ``check``: the checker, the rules for sites and devices, and the two-sheet workbook
  (``sites``, ``devices``: its columns are documented there).
- ``legacy``: the original study's single sheet (``user_id``, ``has_pv``, ``configurations``).
- ``loader``: ``load(path)``, a workbook file to its checked ``Fleet``.
- ``inventory``: the Ansible inventory writer (``hosts.yml``, every string ``!unsafe``).
- ``command``: ``hwpc sites check|import`` (``run``, called by ``hw_picollector.cli``).

Below: the names the CLI and the tests use, as ``hw_picollector_controller.sites.NAME``.
"""

from __future__ import annotations

from hw_picollector_controller.sites.check import (
    _host_problem,
    _serial_problem,
    _site_id_problem,
    cassandra_login,
)
from hw_picollector_controller.sites.command import run
from hw_picollector_controller.sites.fleet import Device, Fleet, Site
from hw_picollector_controller.sites.inventory import HEADER_MARK, render, write_atomic
from hw_picollector_controller.sites.legacy import parse_entry, split_configurations
from hw_picollector_controller.sites.loader import load, parse_workbook
from hw_picollector_controller.sites.workbook import TEMPLATE_RE

__all__ = [
    "HEADER_MARK",
    "TEMPLATE_RE",
    "Device",
    "Fleet",
    "Site",
    # the three field checks: called directly by tests/unit/test_sites_hardening.py
    "_host_problem",
    "_serial_problem",
    "_site_id_problem",
    "cassandra_login",
    "load",
    "parse_entry",
    "parse_workbook",
    "render",
    "run",
    "split_configurations",
    "write_atomic",
]
