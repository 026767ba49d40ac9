"""What a sites workbook says: its sites and devices, with every problem and warning found.

The model of ``hwpc sites``: the reader (workbook.py) and the checkers (check.py, legacy.py)
fill a ``Fleet``; the inventory writer (inventory.py) and the command (command.py) read it.
It imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Site:
    site_id: str
    host: str
    timezone: str | None
    active: bool
    where: str


@dataclass(frozen=True)
class Device:
    site_id: str
    serial: str
    product_type: str
    role: str
    api: str
    address: str | None
    label: str | None
    where: str

    def as_var(self) -> dict[str, str]:
        var = {"serial": self.serial, "product_type": self.product_type, "role": self.role,
               "api": self.api}
        if self.address:
            var["address"] = self.address
        if self.label:
            var["label"] = self.label
        return var


@dataclass
class Fleet:
    """What a workbook says, with every problem found in it (empty: importable)."""

    source: str = "workbook"
    sites: list[Site] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def active_sites(self) -> list[Site]:
        return sorted((s for s in self.sites if s.active), key=lambda s: s.host)

    def summary(self) -> str:
        active = sum(1 for s in self.sites if s.active)
        return (f"{_plural(len(self.sites), 'site')} ({active} active), "
                f"{_plural(len(self.devices), 'device')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
