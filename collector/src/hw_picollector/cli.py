"""`hwpc`: the command line. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from hw_picollector import __version__
from hw_picollector.config import Config, ConfigError, load_config

log = logging.getLogger("hw_picollector")

DEFAULT_CONFIG = "/etc/hw-picollector/config.yml"  # where the collector role writes it
CONFIG_ENV = "HWPC_CONFIG"


class Failure(Exception):
    """A failure already phrased for the operator: printed as one line, exit 1."""


def _setup_logging(verbose: bool) -> None:
    # Under systemd, journald stamps every line itself.
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt,
                        stream=sys.stderr)
    for noisy in ("urllib3", "cassandra", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_collect(args: argparse.Namespace) -> int:
    from hw_picollector import collect

    return collect.run(_config(args))


def cmd_status(args: argparse.Namespace) -> int:
    from hw_picollector import health

    report = health.status_document(_config(args), coverage_hours=args.coverage_hours)
    if args.prometheus:
        from hw_picollector import metrics

        try:
            metrics.write(report, Path(args.prometheus))
        except OSError as exc:
            print(f"hwpc: cannot write metrics to {args.prometheus}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        return 0
    print(report.to_json() if args.json else health.render(report))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from hw_picollector import sync

    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return sync.run(_config(args), once=args.once, progress=progress)


def cmd_db(args: argparse.Namespace) -> int:
    from hw_picollector import schema

    return schema.run(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    from hw_picollector import simulator

    return simulator.run(args)


def cmd_history(args: argparse.Namespace) -> int:
    from hw_picollector import history

    end = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
    return history.run(_config(args), days=args.days, end=end)


def cmd_discover(args: argparse.Namespace) -> int:
    from hw_picollector import discovery

    found = discovery.browse(args.timeout)
    if args.json:
        print(json.dumps([d.__dict__ for d in found], indent=2, default=list))
        return 0
    if not found:
        print(f"no HomeWizard device answered within {args.timeout:g} s")
        return 0
    for d in found:
        print(f"{d.serial}  {d.product_type:<12} {d.address}:{d.port}  api "
              f"{','.join(d.api_versions)}  {d.product_name}")
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    from hw_picollector.devices import pair

    print(f"Press the button on the {args.type} {args.serial} at {args.address} now "
          f"(waiting up to {args.timeout:g} s) ...", file=sys.stderr)
    token = pair.pair(args.address, args.type, args.serial, name=args.name,
                      ca_file=args.ca_file, timeout_s=args.timeout)
    print(token)
    print("Store this token in the vault (host_vars/<host>/vault.yml, "
          f"vault_hwpc_device_tokens: {{'{args.serial}': '...'}}), never in clear.",
          file=sys.stderr)
    return 0


def cmd_freshness(args: argparse.Namespace) -> int:
    from hw_picollector import freshness

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
    from hw_picollector import sites

    return sites.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwpc", description="HomeWizard meters to a durable local store, then exactly "
        "once to Cassandra.")
    parser.add_argument("--version", action="version", version=f"hw-picollector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str,
            config: bool = True, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        if config:  # the Pi's commands: its config has one place
            p.add_argument("--config", metavar="FILE",
                           default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
                           help=f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})")
        p.set_defaults(func=func)
        return p

    add("collect", cmd_collect, "poll every configured device and keep every sample")

    p = add("sync", cmd_sync, "drain the local store into Cassandra (resumable, exactly once)")
    p.add_argument("--once", action="store_true", help="drain what is there, then exit")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar with rate and ETA (default: on a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")

    p = add("status", cmd_status, "this Pi's view: devices, backlog, last sync, disk, clock")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--coverage-hours", type=int, default=0, metavar="N",
                   help="with --json: samples per hour over the last N hours, per device")
    p.add_argument("--prometheus", metavar="FILE",
                   help="write the status as Prometheus metrics to FILE (atomically; for "
                        "node_exporter's textfile collector, FILE ends in .prom) instead")

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

    p = add("simulate", cmd_simulate, "a faithful HomeWizard device simulator", config=False)
    from hw_picollector import simulator

    simulator.add_arguments(p)

    p = add("simulate-history", cmd_history,
            "write N days of realistic 1 Hz history into the local store")
    p.add_argument("--days", type=int, required=True, help="number of days")
    p.add_argument("--end", help="last day, YYYY-MM-DD (default: today, up to now)")

    p = add("discover", cmd_discover, "find HomeWizard devices by mDNS", config=False)
    p.add_argument("--timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--json", action="store_true")

    p = add("pair", cmd_pair, "create an API v2 token (press the device button)", config=False)
    p.add_argument("address", help="host[:port] of the device")
    p.add_argument("--serial", required=True, help="the device serial (12 hex characters)")
    p.add_argument("--type", default="HWE-P1", help="product type (default HWE-P1)")
    p.add_argument("--name", default="local/hw-picollector", help="user name, local/NAME")
    p.add_argument("--ca-file", help="CA to trust instead of the HomeWizard CA")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S")

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print(f"hwpc: config error: {exc}", file=sys.stderr)
        return 1
    except Failure as exc:
        print(f"hwpc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a known failure mode carries its own one-line message
        from hw_picollector.devices.client import DeviceError

        if isinstance(exc, DeviceError):
            print(f"hwpc: {exc}", file=sys.stderr)
            return 1
        raise
