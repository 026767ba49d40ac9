"""The simulator's ``hwpc`` commands: ``simulate`` (devices) and ``simulate-history`` (days of
samples in a local store). Registered with the runtime's ``hwpc`` through the
``hw_picollector.commands`` entry point (simulator/pyproject.toml)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime

from hw_picollector.commands import AddCommand
from hw_picollector.config import load_config


def cmd_simulate(args: argparse.Namespace) -> int:
    import hw_picollector_simulator as simulator

    return simulator.run(args)


def cmd_history(args: argparse.Namespace) -> int:
    from hw_picollector_simulator import history

    end = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
    return history.run(load_config(args.config), days=args.days, end=end)


def register(add: AddCommand) -> None:
    import hw_picollector_simulator as simulator

    p = add("simulate", cmd_simulate, "a faithful HomeWizard device simulator", config=False)
    simulator.add_arguments(p)

    p = add("simulate-history", cmd_history,
            "write N days of realistic 1 Hz history into the local store")
    p.add_argument("--days", type=int, required=True, help="number of days")
    p.add_argument("--end", help="last day, YYYY-MM-DD (default: today, up to now)")
