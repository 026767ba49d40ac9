"""The device catalog: what the code knows about each HomeWizard product, in one table.

Adding a product is one entry in ``PRODUCTS`` (and its ``ProductType`` member). Config
validation, the sites workbook, mDNS discovery, the TLS certificate name, the canonical
columns and the simulator all read it from here, through the lookups below, at the time
they need it. This module imports nothing from the package, so any module may import it.

The enums are ``StrEnum``s: a member is equal to its text (``Role.GRID == "grid"``) and
formats and serialises as it (``f"{Api.V2}"``, ``json.dumps``, ``csv``), so no stored format
(CSV, JSON status, inventory YAML) changes. ``repr`` and YAML are the exceptions: a member's
``repr`` is ``<Role.GRID: 'grid'>`` and ``yaml.safe_dump`` refuses one, so text meant for
those holds plain strings (``.value``, or the enums' ``*_NAMES`` tuples).

The tables this replaces (config.py, devices/canonical.py, devices/tls.py, discovery.py,
sites/, simulator/model.py, simulator/server.py, simulator/tls.py) disagreed; where they
did, the catalog keeps what the most permissive of them accepted:

- ``HWE-DSP`` (the Energy Display) had a certificate id (devices/tls.py, simulator/tls.py)
  and was refused by config and the workbook. It is a product type everywhere now. No
  measurement of its own is documented: it has no canonical columns (numeric payload fields
  go to ``extra``), both APIs are accepted, its mDNS instance name prefix is not known (the
  generic ``hwe`` is used), its role is ``consumption`` by default, and the simulator does
  not model it.
- Display names: discovery advertised ``kWh Meter 1-Phase``/``kWh Meter 3-Phase`` for the
  HWE and the SDM kWh meters alike; the simulator reported ``kWh Meter 1-phase``, ``kWh
  Meter 3-phase``, ``kWh meter`` (SDM230-wifi) and ``kWh meter 3-phase`` (SDM630-wifi), as
  captured payloads spell them. ``Product.name`` is the latter (what the device reports).
  In the workbook every spelling is accepted and compared case-insensitively:
  ``kWh Meter 1-Phase``, ``kWh Meter 1-phase`` and ``1-phase`` name HWE-KWH1, ``kWh Meter
  3-Phase`` and ``3-phase`` HWE-KWH3 (a name the SDM models share means the current model).
- The workbook compared product types exactly in its ``devices`` sheet and
  case-insensitively (with ``p1``/``pv``) in the legacy sheet; every product name is now
  compared case-insensitively everywhere in it, and written in its canonical spelling.
- APIs: config refused only ``v1`` for HWE-BAT, the workbook also ``v2`` for HWE-SKT and
  HWE-WTR. ``Product.apis`` holds the facts (SKT and WTR: v1 only; BAT: v2 only). The
  workbook refuses any API a product lacks; config, as before, refuses only ``v1`` on a
  product without v1, so an existing config file still loads.
- Roles: the simulator allowed a P1 meter only ``grid``, a water meter ``water``, a battery
  ``battery`` and the rest ``production``/``consumption``; config and the workbook take any
  role for any product. ``Product.roles`` holds the simulator's rule; config and the
  workbook still take any role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class ProductType(StrEnum):
    """Every HomeWizard product type the code knows (``product_type`` of ``GET /api``)."""

    P1 = "HWE-P1"
    KWH1 = "HWE-KWH1"
    SDM230 = "SDM230-wifi"
    KWH3 = "HWE-KWH3"
    SDM630 = "SDM630-wifi"
    SKT = "HWE-SKT"
    WTR = "HWE-WTR"
    BAT = "HWE-BAT"
    DSP = "HWE-DSP"


class Role(StrEnum):
    """What a device measures at a site."""

    GRID = "grid"
    PRODUCTION = "production"
    CONSUMPTION = "consumption"
    BATTERY = "battery"
    WATER = "water"


class Api(StrEnum):
    """The local API a device is read over: v1 (HTTP) or v2 (HTTPS and a token)."""

    V1 = "v1"
    V2 = "v2"


class DeviceState(StrEnum):
    """A device's state in the collector's state file and ``hwpc status``.

    Not every state is a member: an unexpected HTTP status is ``http_<status>`` and a
    refused pairing carries the device's error code (``user_no_storage``), so a state field
    holds a ``str``; these are the states the code itself sets or tests for.
    """

    STARTING = "starting"
    OK = "ok"
    ERROR = "error"  # an unexpected error while polling (a bug), or a DeviceError's default
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    API_DISABLED = "api_disabled"
    UNAUTHORIZED = "unauthorized"
    SERIAL_MISMATCH = "serial_mismatch"
    INVALID_RESPONSE = "invalid_response"
    TLS_ERROR = "tls_error"
    PAIR_TIMEOUT = "pair_timeout"
    PAIR_REFUSED = "pair_refused"
    NOT_RUNNING = "not_running"  # hwpc status: the collector is not running


class Verdict(StrEnum):
    """The freshness verdict of a site or a device, best to worst (the members' order)."""

    OK = "ok"
    LAGGING = "lagging"
    STALE = "stale"
    DOWN = "down"


ROLE_NAMES: tuple[str, ...] = tuple(r.value for r in Role)
API_NAMES: tuple[str, ...] = tuple(a.value for a in Api)
VERDICT_NAMES: tuple[str, ...] = tuple(v.value for v in Verdict)
GENERIC_MDNS_PREFIX = "hwe"
"""The mDNS instance name prefix of a product whose own prefix is not known."""


def phase_columns(base: str, unit: str = "", total: bool = True) -> tuple[str, ...]:
    """``power``/``w`` → power_w, power_l1_w, power_l2_w, power_l3_w (``total=False``: the
    three phases only)."""
    suffix = f"_{unit}" if unit else ""
    phases = tuple(f"{base}_l{n}{suffix}" for n in (1, 2, 3))
    return (f"{base}{suffix}", *phases) if total else phases


def energy_columns(tariffs: int) -> tuple[str, ...]:
    """The energy counters, import then export: the total and one per tariff."""
    tiers = range(1, tariffs + 1)
    return tuple(
        name
        for way in ("import", "export")
        for name in (f"energy_{way}_kwh", *(f"energy_{way}_t{t}_kwh" for t in tiers))
    )


@dataclass(frozen=True)
class Product:
    """One product type and everything the code knows about it."""

    product_type: ProductType
    name: str
    """The ``product_name`` the device reports in ``GET /api`` and its mDNS TXT record."""
    aliases: tuple[str, ...]
    """Other names the sites workbook accepts for it (besides ``product_type``)."""
    cert_id: str
    """The ``<id>`` of its TLS name ``appliance/<id>/<serial>`` (and of the v2 TXT ``id``)."""
    mdns_prefix: str | None
    """Its mDNS instance name prefix (``p1meter`` in ``p1meter-AABBCC``); None: not known."""
    default_role: Role
    roles: tuple[Role, ...]
    """The roles it can have (what the simulator models; config takes any role)."""
    apis: tuple[Api, ...]
    columns: frozenset[str]
    """Its canonical columns (``devices/canonical.py`` orders them)."""
    phases: tuple[int, ...]
    """How many phases it measures: (1,), (3,), (1, 3) when either, () when none."""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the sites workbook accepts for it, compared case-insensitively."""
        return (self.product_type, *self.aliases)

    @property
    def default_api(self) -> Api:
        """v1 where the product has it (the workbook's default for a blank ``api``), else v2."""
        return Api.V1 if Api.V1 in self.apis else self.apis[0]


_KWH1 = frozenset({
    *energy_columns(1), "power_w", "power_l1_w", "voltage_v", "current_a",
    "apparent_current_a", "reactive_current_a", "apparent_power_va", "reactive_power_var",
    "power_factor", "frequency_hz", "wifi_strength_pct",
})
_KWH3 = frozenset({
    *energy_columns(1), *phase_columns("power", "w"), *phase_columns("voltage", "v", False),
    *phase_columns("current", "a"), *phase_columns("apparent_current", "a"),
    *phase_columns("reactive_current", "a"), *phase_columns("apparent_power", "va"),
    *phase_columns("reactive_power", "var"), *phase_columns("power_factor", total=False),
    "frequency_hz", "wifi_strength_pct",
})
_P1 = frozenset({
    "tariff", *energy_columns(4), *phase_columns("power", "w"),
    *phase_columns("voltage", "v", False), *phase_columns("current", "a"), "frequency_hz",
    *(f"voltage_{kind}_l{n}_count" for kind in ("sag", "swell") for n in (1, 2, 3)),
    "any_power_fail_count", "long_power_fail_count", "average_power_15m_w",
    "monthly_power_peak_w", "gas_m3", "gas_ts", "water_m3", "wifi_strength_pct",
})
_SKT = frozenset({
    *energy_columns(1), "power_w", "power_l1_w", "voltage_v", "current_a",
    "apparent_power_va", "reactive_power_var", "power_factor", "frequency_hz",
    "wifi_strength_pct",
})
_WTR = frozenset({"water_m3", "water_flow_lpm", "water_offset_m3", "wifi_strength_pct"})
_BAT = frozenset({
    "energy_import_kwh", "energy_export_kwh", "power_w", "voltage_v", "current_a",
    "frequency_hz", "state_of_charge_pct", "cycles",
})
_BOTH = (Api.V1, Api.V2)
_METER_ROLES = (Role.PRODUCTION, Role.CONSUMPTION)

PRODUCTS: Mapping[str, Product] = MappingProxyType({p.product_type: p for p in (
    Product(ProductType.P1, "P1 Meter", ("p1", "P1 Meter"), "p1dongle", "p1meter",
            Role.GRID, (Role.GRID,), _BOTH, _P1, (1, 3)),
    Product(ProductType.KWH1, "kWh Meter 1-phase", ("pv", "kWh Meter 1-phase", "1-phase"),
            "energymeter", "kwhmeter", Role.PRODUCTION, _METER_ROLES, _BOTH, _KWH1, (1,)),
    Product(ProductType.SDM230, "kWh meter", (), "energymeter", "kwhmeter",
            Role.PRODUCTION, _METER_ROLES, _BOTH, _KWH1, (1,)),
    Product(ProductType.KWH3, "kWh Meter 3-phase", ("kWh Meter 3-phase", "3-phase"),
            "energymeter", "kwhmeter", Role.PRODUCTION, _METER_ROLES, _BOTH, _KWH3, (3,)),
    Product(ProductType.SDM630, "kWh meter 3-phase", (), "energymeter", "kwhmeter",
            Role.PRODUCTION, _METER_ROLES, _BOTH, _KWH3, (3,)),
    Product(ProductType.SKT, "Energy Socket", ("Energy Socket",), "energysocket",
            "energysocket", Role.CONSUMPTION, _METER_ROLES, (Api.V1,), _SKT, (1,)),
    Product(ProductType.WTR, "Watermeter", ("Watermeter",), "watermeter", "watermeter",
            Role.WATER, (Role.WATER,), (Api.V1,), _WTR, ()),
    Product(ProductType.BAT, "Plug-In Battery", ("Plug-In Battery",), "battery", "battery",
            Role.BATTERY, (Role.BATTERY,), (Api.V2,), _BAT, (1,)),
    Product(ProductType.DSP, "Energy Display", ("Energy Display",), "display", None,
            Role.CONSUMPTION, (Role.CONSUMPTION,), _BOTH, frozenset(), ()),
)})
"""product type → Product, in the order messages list them."""


class Catalog:
    """The lookups over one table of products, checked and indexed once.

    ``current()`` gives the one over ``PRODUCTS``; a test may build one over its own table.
    Raises ``ValueError`` when a table is inconsistent: a key that is not its product's
    type, a product without an API or with a default role it cannot have, or a name (type
    or alias, ignoring case) that two products share.
    """

    def __init__(self, products: Mapping[str, Product]) -> None:
        self.products = products
        self._names: dict[str, Product] = {}
        self._cert_ids: dict[str, tuple[Product, ...]] = {}
        for key, product in products.items():
            if key != product.product_type:
                raise ValueError(f"catalog key {key!r} is not its product type "
                                 f"{str(product.product_type)!r}")
            if not product.apis:
                raise ValueError(f"{product.product_type}: no API")
            if product.default_role not in product.roles:
                raise ValueError(f"{product.product_type}: default role "
                                 f"{str(product.default_role)!r} is not one of its roles")
            for name in product.names:
                other = self._names.setdefault(_fold(name), product)
                if other is not product:
                    raise ValueError(f"the name {name!r} would name both "
                                     f"{other.product_type} and "
                                     f"{product.product_type}")
            self._cert_ids[product.cert_id] = (*self._cert_ids.get(product.cert_id, ()),
                                               product)

    def product_types(self) -> tuple[str, ...]:
        """Every product type (plain text), in catalog order."""
        return tuple(str(p.product_type) for p in self.products.values())

    def get(self, product_type: str) -> Product | None:
        """The product of this exact product type, or None."""
        return self.products.get(product_type)

    def product(self, product_type: str) -> Product:
        """The product of this exact product type (``ValueError`` naming the known ones)."""
        found = self.products.get(product_type)
        if found is None:
            raise ValueError(f"unknown product type {product_type!r} "
                             f"(known: {', '.join(self.product_types())})")
        return found

    def lookup(self, name: str) -> Product | None:
        """The product a workbook name means: a product type or an alias, in any case."""
        return self._names.get(_fold(name))

    def by_cert_id(self, cert_id: str) -> tuple[Product, ...]:
        """The products whose certificates carry this id (several share ``energymeter``)."""
        return self._cert_ids.get(cert_id, ())

    def short_names(self) -> tuple[str, ...]:
        """The aliases without white space (a legacy ``KIND:SERIAL`` entry can hold only
        those), in catalog order."""
        return tuple(a for p in self.products.values() for a in p.aliases if a.split() == [a])


def _fold(name: str) -> str:
    """Names compare ignoring case and surrounding white space (as ``str.lower``, the way the
    workbook has always compared them)."""
    return name.strip().lower()


_built: dict[str, tuple[Mapping[str, Product], Catalog]] = {}


def current() -> Catalog:
    """The lookups over ``PRODUCTS`` as it is now (rebuilt when the table is replaced)."""
    table = PRODUCTS
    built = _built.get("current")
    if built is None or built[0] is not table:
        built = _built["current"] = (table, Catalog(table))
    return built[1]


def product_types() -> tuple[str, ...]:
    """Every known product type (plain text), in catalog order."""
    return current().product_types()


def get(product_type: str) -> Product | None:
    """The product of this exact product type, or None."""
    return current().get(product_type)


def product(product_type: str) -> Product:
    """The product of this exact product type (``ValueError`` if unknown)."""
    return current().product(product_type)


def lookup(name: str) -> Product | None:
    """The product a sites workbook name means (a type or an alias, in any case), or None."""
    return current().lookup(name)


def by_cert_id(cert_id: str) -> tuple[Product, ...]:
    """The products whose TLS certificates carry ``cert_id``."""
    return current().by_cert_id(cert_id)
