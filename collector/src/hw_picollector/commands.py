"""How a distribution adds commands to ``hwpc``: the runtime's own commands and those of the
controller and the simulator meet here, so neither of those imports the command line.

A distribution declares an entry point in the group :data:`ENTRY_POINT_GROUP` naming a
``register(add: AddCommand) -> None`` function; ``hwpc`` calls it with :class:`AddCommand`.
A command that is not installed (``hwpc sites`` on a Pi) still answers, naming the
distribution it comes with (:data:`ELSEWHERE`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Protocol

ENTRY_POINT_GROUP = "hw_picollector.commands"
DEFAULT_CONFIG = "/etc/hw-picollector/config.yml"  # where the collector role writes it
CONFIG_ENV = "HWPC_CONFIG"

# The commands other distributions add, and which one: asked for where it is not installed,
# such a command says where it lives instead of "invalid choice".
ELSEWHERE = {
    "db": "hw-picollector-controller",
    "freshness": "hw-picollector-controller",
    "audit": "hw-picollector-controller",
    "sites": "hw-picollector-controller",
    "simulate": "hw-picollector-simulator",
    "simulate-history": "hw-picollector-simulator",
}

Command = Callable[[argparse.Namespace], int]


class Failure(Exception):
    """A failure already phrased for the operator: printed as one line, exit 1."""


class AddCommand(Protocol):
    def __call__(self, name: str, func: Command, help_: str, *, config: bool = True,
                 aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        """Adds ``hwpc NAME`` running ``func``; ``config``: it takes ``--config`` (default
        ``$HWPC_CONFIG``, else :data:`DEFAULT_CONFIG`)."""
        ...
