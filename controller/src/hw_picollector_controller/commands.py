"""The controller's ``hwpc`` commands: ``db``, ``freshness`` (``audit``: deprecated) and
``sites``. Registered with the runtime's ``hwpc`` through the ``hw_picollector.commands``
entry point (controller/pyproject.toml)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hw_picollector.commands import AddCommand, Failure


def cmd_db(args: argparse.Namespace) -> int:
    from hw_picollector_controller import schema

    return schema.run(args)


def cmd_freshness(args: argparse.Namespace) -> int:
    from hw_picollector_controller import freshness

    if args.command == "audit":
        print("hwpc: `hwpc audit` is deprecated and goes in the next release: "
              "use `hwpc freshness`", file=sys.stderr)

    th = freshness.Thresholds(freshness_max_age_s=args.freshness_max_age_s,
                              sync_max_lag_s=args.sync_max_lag_s,
                              heartbeat_max_age_s=args.heartbeat_max_age_s)
    try:
        return freshness.run(args.config, Path(args.fleet), Path(args.out_dir), th,
                             coverage_hours=args.coverage_hours, fail=args.fail,
                             as_json=args.json)
    except (OSError, ValueError) as exc:
        raise Failure(f"freshness: {exc}") from exc


def cmd_sites(args: argparse.Namespace) -> int:
    from hw_picollector_controller import sites

    return sites.run(args)


def register(add: AddCommand) -> None:
    p = add("db", cmd_db, "central database: schema and per-Pi login roles", config=False)
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for action, text in (("init", "create or upgrade keyspace and tables (idempotent)"),
                         ("check", "report schema drift, one line per problem")):
        q = dbsub.add_parser(action, help=text, description=text)
        q.add_argument("--config", required=True, metavar="FILE")
    q = dbsub.add_parser("create-role", help="a Pi's login role: MODIFY on the tables the sync "
                         "writes to, no SELECT (--read-only: SELECT on the keyspace); broader "
                         "grants are revoked; password read from a file, never from the "
                         "command line")
    q.add_argument("--config", required=True, metavar="FILE")
    q.add_argument("--role", required=True, help="role name, e.g. pi_cdb001")
    q.add_argument("--password-file", required=True, metavar="FILE")
    q.add_argument("--read-only", action="store_true",
                   help="SELECT on the keyspace only (the fleet audit's role); revokes MODIFY")
    q.add_argument("--dry-run", action="store_true",
                   help="say what would change (created, password or grants updated), "
                        "change nothing")

    p = add("freshness", cmd_freshness, "the freshness report: local status of every Pi plus "
            "what Cassandra knows; verdict per site (controller side; `audit`: deprecated)",
            aliases=("audit",))
    p.add_argument("--fleet", required=True, metavar="FILE",
                   help="fleet file written by playbooks/check_freshness.yml")
    p.add_argument("--out-dir", default="reports", metavar="DIR",
                   help="where freshness-latest.json and .html go (default: reports)")
    p.add_argument("--freshness-max-age-s", type=float, default=600.0, metavar="S")
    p.add_argument("--sync-max-lag-s", type=float, default=900.0, metavar="S")
    p.add_argument("--heartbeat-max-age-s", type=float, default=900.0, metavar="S")
    p.add_argument("--coverage-hours", type=int, default=24, metavar="N",
                   help="hourly coverage strips over the last N hours (0: none)")
    p.add_argument("--no-fail", dest="fail", action="store_false",
                   help="exit 0 even when a site is not ok")
    p.add_argument("--json", action="store_true", help="print the JSON report")

    p = add("sites", cmd_sites, "sites workbook: check, or import into an inventory",
            config=False)
    sitesub = p.add_subparsers(dest="sites_command", required=True, metavar="ACTION")
    q = sitesub.add_parser("check", help="report every problem (sheet, row, column)")
    q.add_argument("workbook")
    q = sitesub.add_parser("import", help="write inventories/<name>/hosts.yml")
    q.add_argument("workbook")
    q.add_argument("--inventory", required=True, metavar="DIR")
