"""`hwpc`: the command line. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from hw_picollector import __version__
from hw_picollector.commands import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    ELSEWHERE,
    ENTRY_POINT_GROUP,
    Command,
    Failure,
)
from hw_picollector.config import Config, ConfigError, load_config

log = logging.getLogger("hw_picollector")



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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwpc", description="HomeWizard meters to a durable local store, then exactly "
        "once to Cassandra.")
    parser.add_argument("--version", action="version", version=f"hw-picollector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_: str, *, config: bool = True,
            aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
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

    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry_point.load()(add)  # the controller's and the simulator's commands, if installed
    for name, distribution in ELSEWHERE.items():
        if name not in sub.choices:
            p = sub.add_parser(name, help=f"(not installed here: {distribution})",
                               add_help=False, prefix_chars="\0")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_elsewhere(name, distribution))
    return parser


def _elsewhere(name: str, distribution: str) -> Command:
    def missing(args: argparse.Namespace) -> int:
        raise Failure(f"`hwpc {name}` comes with {distribution}, which is not installed here "
                      "(a Pi installs the runtime only)")
    return missing


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
