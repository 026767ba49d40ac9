"""A deterministic home behind each simulated device, speaking API v2 ``/api/measurement`` names.

Every instantaneous value is a pure function of (serial, product type, role, whole second), so
the live simulator and a history generator show the same power at the same second. Values
change once per second, like a real P1 meter.

Sources, in W (``power_w`` is signed: positive = import from the grid, negative = export):

- ``grid`` (HWE-P1): household consumption minus the site's own PV (60 % of sites have PV),
  so the net power goes negative on sunny days. 70 % of the meters are 3-phase, 80 % have gas.
- ``consumption`` (kWh meter, socket): the household model (scaled down for a socket).
- ``production`` (kWh meter on a PV inverter, or a balcony-PV socket): ``power_w`` is minus the
  PV output, so negative while producing and exactly 0 at night; the original study's
  ``p_prod = -active_power_w`` is then positive.
- ``battery`` (HWE-BAT): a daily state-of-charge schedule (charge around noon, discharge in
  the evening and night); power is its derivative, positive while charging.
- ``water`` (HWE-WTR): tap events. The watermeter has no API v2, so this model uses the names
  it sends on v1: ``active_liter_lpm`` and ``total_liter_m3``.

Consumption = (base load + a weekday/weekend profile x a random day factor) +-3 % noise,
plus a fridge cycling on and off and appliance pulses (1-2.8 kW, up to 10 minutes) from a
weekly routine (local time, Europe/Amsterdam). PV = a sin^2 curve between sunrise and sunset
(season-dependent; UTC times for the Netherlands) x the day's clouds; the sky, like the grid
frequency, is shared by every simulated home.

Counters: each counter starts at ``base(serial) + the most it could have grown since
2024-01-01`` (a per-UTC-hour-of-week bound, the maximum over both DST offsets), taken at the
start of the hour the model starts in; from there it integrates the reported power second by
second (import when positive, export when negative; P1 T1 at night 23-07 and at weekends, T2
on weekday days). A restarted simulator therefore never shows a counter below what the
previous run showed (it jumps forward instead), two runs started in the same hour agree
exactly, and increments equal the reported power. Lifetime totals are over-stated (1.5-2x
for consumption, more for PV and gas off-season; about 2-4x over a year); differences are
realistic. Gas (P1) advances on 5-minute boundaries only, stamped
with the boundary.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hw_picollector import catalog
from hw_picollector.catalog import ProductType, Role
from hw_picollector_simulator import product_types

EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z, a Monday: counters grow from here
WEEK = 7 * 86400
SITE_TZ = ZoneInfo("Europe/Amsterdam")
SITE_OFFSETS = (3600, 7200)  # CET, CEST
BATTERY_WH = 2688.0
METER_MODEL = "ISKRA  2M550T-1012"
PULSE_MAX_W = 2800.0
WATER_MAX_LPM = 12.0
GAS_MAX_M3H = 2.0

# Household profile, W at each local hour (linear in between), before the home's own scale.
_WEEKDAY = (90, 60, 50, 50, 50, 70, 180, 380, 320, 200, 160, 160,
            230, 190, 160, 180, 300, 650, 820, 700, 560, 450, 300, 150)  # fmt: skip
_WEEKEND = (110, 70, 50, 50, 50, 50, 70, 150, 330, 420, 400, 380,
            420, 360, 320, 340, 420, 700, 860, 720, 580, 480, 340, 180)  # fmt: skip
# Chance per slot (by local hour) of an appliance pulse (15 min), tap event (10 min), hot water.
_PULSE_P = (0.02, 0.0, 0.0, 0.0, 0.0, 0.02, 0.10, 0.20, 0.15, 0.10, 0.12, 0.15,
            0.20, 0.12, 0.10, 0.10, 0.15, 0.30, 0.35, 0.30, 0.25, 0.20, 0.10, 0.05)  # fmt: skip
_WATER_P = (0.01, 0.0, 0.0, 0.0, 0.0, 0.02, 0.25, 0.45, 0.30, 0.10, 0.10, 0.10,
            0.15, 0.10, 0.10, 0.10, 0.10, 0.20, 0.30, 0.25, 0.20, 0.25, 0.15, 0.05)  # fmt: skip
_M64 = (1 << 64) - 1
_NAMES = {q: tuple(f"{q}_l{n}_{u}" for n in (1, 2, 3)) for q, u in
          (("power", "w"), ("voltage", "v"), ("current", "a"))}  # fmt: skip
_SKY = 0x5EED0F5C1E5
_JUNE_21_2024 = 19_895  # days since 1970
_NOON = 11 * 3600 + 40 * 60  # solar noon in UTC at 5 degrees east
_HALF_DAY_MAX = 3600 * 8.3  # half the longest day


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _lane(h: int, i: int) -> float:
    """The i-th (0-3) 16-bit lane of hash ``h`` as a number in [0, 1)."""
    return ((h >> (16 * i)) & 0xFFFF) / 65536.0


def _r3(x: float) -> float:
    """``x`` to 3 decimals, half up; several times faster than ``round``."""
    return math.floor(x * 1000 + 0.5) / 1000


def _season(day: int) -> float:
    """+1 at midsummer, -1 at midwinter (``day`` counts days since 1970)."""
    return math.cos(2 * math.pi * (day - _JUNE_21_2024) / 365.2425)


def _weekly(seed: int, slot_s: int, chance: tuple[float, ...]) -> list[tuple[int, int, float]]:
    """A weekly routine: per slot of ``slot_s`` seconds, (start, end within the slot, size 0-1)."""
    events = []
    for slot in range(WEEK // slot_s):
        h = _mix(seed ^ (slot * 0x2545F491))
        if _lane(h, 0) < chance[(slot * slot_s % 86400) // 3600]:
            duration = slot_s // 15 + int((slot_s * 2 // 3 - slot_s // 15) * _lane(h, 1))
            start = int((slot_s - duration) * _lane(h, 2))
            events.append((start, start + duration, _lane(h, 3)))
        else:
            events.append((0, 0, 0.0))
    return events


def local_iso(local: int) -> str:
    """Local epoch seconds (UTC seconds + UTC offset) -> naive ISO ``YYYY-MM-DDTHH:MM:SS``."""
    return datetime.fromtimestamp(local, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def tariff(local: int) -> int:
    """1 (low) at night 23-07 and at weekends, 2 (normal) on weekday days."""
    day, tod = divmod(local, 86400)
    return 1 if (day + 3) % 7 >= 5 or tod < 25200 or tod >= 82800 else 2


class _Household:
    """Consumption of a home (scale 1) or of one socket's appliances (smaller scale), W."""

    def __init__(self, seed: int, scale: float, phases: int) -> None:
        h = _mix(seed ^ 0xC0)
        self.seed = seed
        self.base_w = scale * (60 + 120 * _lane(h, 0))
        self.fridge_w = scale * (60 + 60 * _lane(h, 1))
        self.fridge_period = 2400 + int(1800 * _lane(h, 2))
        self.fridge_on = 0.35 * self.fridge_period
        self.fridge_shift = h % self.fridge_period
        s = scale * (0.6 + 0.8 * _lane(h, 3))
        self.profile = tuple(self._minutes(knots, s) for knots in (_WEEKDAY, _WEEKEND))
        self.weights = [(0.5, 0.3, 0.2), (0.2, 0.5, 0.3), (0.3, 0.2, 0.5)][h % 3][:phases]
        if phases == 1:
            self.weights = (1.0,)
        self.fridge_phase = (h >> 8) % phases
        self.pulses = [
            (start, end, scale * (1000 + (PULSE_MAX_W - 1000) * size), _mix(start) % phases)
            for start, end, size in _weekly(seed ^ 0x9A, 900, _PULSE_P)
        ]
        self._day = -1
        self._day_factor, self._weekend = 1.0, 0
        self._slot_start, self._slot_pulse = -(10**12), (0, 0, 0.0, 0)

    @staticmethod
    def _minutes(knots: tuple[int, ...], scale: float) -> tuple[float, ...]:
        return tuple(
            scale * (knots[m // 60] + (knots[(m // 60 + 1) % 24] - knots[m // 60]) * (m % 60) / 60)
            for m in range(1440)
        )

    def _pulse(self, local: int) -> tuple[int, int, float, int]:
        """The routine's pulse in the 15-minute slot holding ``local``, as absolute times."""
        week_s = (local - EPOCH) % WEEK
        start, end, watts, phase = self.pulses[week_s // 900]
        slot0 = local - week_s % 900
        return slot0 + start, slot0 + end, watts, phase

    def phases(self, k: int, local: int, r: int) -> list[float]:
        day = local // 86400
        if day != self._day:
            self._day = day
            self._day_factor = 0.8 + 0.4 * _lane(_mix(self.seed ^ (day * 0x9E37)), 0)
            self._weekend = int((day + 3) % 7 >= 5)
        load = self.base_w + self._day_factor * self.profile[self._weekend][local % 86400 // 60]
        load = load * (0.97 + 0.06 * _lane(r, 0)) + 8 * (_lane(r, 1) - 0.5)
        out = [load * w for w in self.weights]
        if (k + self.fridge_shift) % self.fridge_period < self.fridge_on:
            out[self.fridge_phase] += self.fridge_w
        if not self._slot_start <= local < self._slot_start + 900:
            self._slot_start = local - (local - EPOCH) % 900
            self._slot_pulse = self._pulse(local)
        start, end, watts, phase = self._slot_pulse
        if start <= local < end:
            out[phase] += watts
        return out

    def max_w(self, local: int) -> float:
        """An upper bound of the total during the minute starting at ``local``."""
        weekend = int((local // 86400 + 3) % 7 >= 5)
        load = (self.base_w + 1.2 * self.profile[weekend][local % 86400 // 60]) * 1.03 + 4
        start, end, watts, _ = self._pulse(local)  # a minute lies within one 15-min slot
        return load + self.fridge_w + (watts if start < local + 60 and local < end else 0.0)


class _Solar:
    """PV output in W (>= 0): a sin^2 day curve x season x the neighbourhood's clouds."""

    def __init__(self, peak_w: float) -> None:
        self.peak_w = peak_w
        self._day = self._slot = -1
        self._rise = self._set = self._w = self._amp = self._clear = 0.0
        self._c0 = self._c1 = 1.0

    def power(self, k: int, r: int) -> float:
        day, t = divmod(k, 86400)
        if day != self._day:
            self._new_day(day)
        if t <= self._rise or t >= self._set:
            return 0.0
        slot = k // 300
        if slot != self._slot:
            self._slot = slot
            self._c0, self._c1 = self._cloud(slot), self._cloud(slot + 1)
        x = math.sin(self._w * (t - self._rise))
        cloud = self._c0 + (self._c1 - self._c0) * (k - slot * 300) / 300
        return self._amp * x * x * cloud * (0.997 + 0.006 * _lane(r, 3))

    def _new_day(self, day: int) -> None:
        self._day = day
        season = _season(day)
        half = 3600 * (6.1 + 2.2 * season)
        self._rise, self._set, self._w = _NOON - half, _NOON + half, math.pi / (2 * half)
        self._amp = self.peak_w * (0.65 + 0.35 * season)
        self._clear = 0.25 + 0.75 * _lane(_mix(_SKY ^ day), 0)

    def _cloud(self, slot: int) -> float:
        return 1.0 - (1.0 - self._clear) * _lane(_mix(_SKY ^ (slot << 20)), 1)

    def max_w(self, t: int) -> float:
        """An upper bound during the UTC minute starting at ``t``: midsummer, no clouds."""
        tod = t % 86400
        if tod <= _NOON < tod + 60:
            return self.peak_w * 1.003
        d = min(abs(tod - _NOON), abs(tod + 60 - _NOON))
        return (
            self.peak_w
            * 1.003
            * math.cos(math.pi * d / (2 * _HALF_DAY_MAX)) ** 2
            * (d < _HALF_DAY_MAX)
        )


class _Battery:
    """Plug-in battery: the state of charge follows a daily schedule; power is its slope."""

    EFFICIENCY = 0.95

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._day = -1
        self._knots = self._schedule(100.0)

    @staticmethod
    def _schedule(top: float) -> tuple[tuple[int, float], ...]:
        hours = ((0, 30.0), (6, 10.0), (10, 10.0), (14, top), (17, top), (24, 30.0))
        return tuple((hour * 3600, soc) for hour, soc in hours)

    def state(self, local: int, r: int, top: float | None = None) -> tuple[float, float]:
        """(state of charge %, power W, positive while charging) at ``local``."""
        day, tod = divmod(local, 86400)
        if top is not None:
            knots = self._schedule(top)
        else:
            if day != self._day:
                self._day = day
                self._knots = self._schedule(60 + 40 * _lane(_mix(self.seed ^ (day * 0xB1)), 0))
            knots = self._knots
        i = 1
        while tod >= knots[i][0]:
            i += 1
        (t0, s0), (t1, s1) = knots[i - 1], knots[i]
        slope = (s1 - s0) / (t1 - t0)  # % per second
        watts = BATTERY_WH * slope * 36  # Wh/s x 3600 / 100 %
        if watts:
            watts = (watts / self.EFFICIENCY if watts > 0 else watts * self.EFFICIENCY) + 4 * (
                _lane(r, 0) - 0.5
            )
        return s0 + slope * (tod - t0), watts


class _Water:
    """Tap events (showers, taps, toilets) from a weekly routine, at most one per 10 minutes."""

    def __init__(self, seed: int) -> None:
        self.events = [
            (start, end, round(4 + (WATER_MAX_LPM - 4) * size, 2))
            for start, end, size in _weekly(seed ^ 0x3A, 600, _WATER_P)
        ]

    def lpm(self, local: int) -> float:
        week_s = (local - EPOCH) % WEEK
        start, end, flow = self.events[week_s // 600]
        return flow if start <= week_s % 600 < end else 0.0

    def max_lpm(self, local: int) -> float:
        """The most during the minute starting at ``local``."""
        week_s = (local - EPOCH) % WEEK
        start, end, flow = self.events[week_s // 600]
        return flow if start < week_s % 600 + 60 and week_s % 600 < end else 0.0


class DeviceModel:
    """The measurements of one device. Call :meth:`measurement` with non-decreasing times."""

    def __init__(
        self,
        serial: str,
        product_type: str,
        role: str | None = None,
        start_ts: float | None = None,
    ) -> None:
        product = catalog.get(product_type)
        if product is None or product_type not in product_types():
            raise ValueError(f"unknown product type {product_type!r} (simulated: "
                             f"{', '.join(product_types())})")
        role = role or product.default_role.value
        allowed = tuple(r.value for r in product.roles)
        if role not in allowed:
            raise ValueError(f"{product_type} cannot have role {role!r} (allowed: {allowed})")
        self.serial, self.product_type, self.role = serial, product_type, role
        self.p1 = product_type == ProductType.P1
        seed = int.from_bytes(hashlib.sha256(f"{serial}|{product_type}".encode()).digest()[:8])
        self._seed = seed
        h = _mix(seed ^ 0xA11)
        # a meter that may be either (a P1 meter) is 3-phase at 70 % of the sites
        three = 3 in product.phases and (len(product.phases) == 1 or _lane(h, 0) < 0.7)
        self.phases = 3 if three else 1
        self.has_gas = self.p1 and _lane(h, 1) < 0.8
        self._household: _Household | None = None
        self._solar: _Solar | None = None
        self._battery = _Battery(seed) if role == Role.BATTERY else None
        self._water = _Water(seed) if role == Role.WATER else None
        if role in (Role.GRID, Role.CONSUMPTION):
            scale = 0.35 if product_type == ProductType.SKT else 1.0
            self._household = _Household(seed, scale, self.phases)
        if role == Role.PRODUCTION:
            low, high = (2500, 9000) if self.phases == 3 else (600, 3600)
            if product_type == ProductType.SKT:
                low, high = 300, 800  # balcony PV
            self._solar = _Solar(low + (high - low) * _lane(h, 2))
        elif role == Role.GRID and _lane(h, 3) < 0.6:
            self._solar = _Solar(2000 + 4000 * _lane(h, 2))
        # PV inverters above 3.68 kW feed all three phases.
        big_pv = self._solar is not None and (role == Role.PRODUCTION or self._solar.peak_w > 3680)
        self._pv_3p = self.phases == 3 and big_pv
        self._gas = _weekly(seed ^ 0x6A5, 300, _PULSE_P) if self.has_gas else []
        self._static = self._static_fields(h)
        self._site_v = 231.0 + 3 * (_lane(seed, 3) - 0.5)
        self._phase_names = tuple(names[: self.phases] for names in _NAMES.values())
        self._bounds = self._hour_bounds()
        self._tz_hour, self._tz_off = -1, 0
        self._date_day, self._date = -1, ""
        self._k = -1  # the next second to integrate; -1 before the first anchor
        self._wh = [0.0] * 4  # Wh: import T1, import T2, export T1, export T2 (water: liters)
        self._gas_m3, self._gas_b = 0.0, 0
        self._gas_stamp = (-1, "")
        self._cache_k = -1
        self._cache: tuple[list[float], float, int, float] = ([], 0.0, 0, 0.0)
        if start_ts is not None:
            self._anchor(int(start_ts // 1))

    def _static_fields(self, h: int) -> dict[str, Any]:
        if not self.p1:
            return {}
        digits = f"{h % 10**14:014d}"
        fields: dict[str, Any] = {}
        for n in range(1, self.phases + 1):
            fields[f"voltage_sag_l{n}_count"] = (h >> (4 * n)) % 13
        for n in range(1, self.phases + 1):
            fields[f"voltage_swell_l{n}_count"] = (h >> (4 * n + 12)) % 7
        fields["any_power_fail_count"] = (h >> 40) % 17
        fields["long_power_fail_count"] = (h >> 48) % 5
        return {
            "unique_id": ("E003" + digits[:13]).encode().hex().upper(),
            "gas_unique_id": ("G003" + digits[1:]).encode().hex().upper(),
            "counts": fields,
        }

    # --- counter anchors -----------------------------------------------------------------
    def _max_rates(self, t: int, local: int) -> tuple[float, float, float]:
        """Upper bounds of import W, export W (water: l/min) and gas m3/h in a minute."""
        imp = exp = gas = 0.0
        if self._household is not None:
            imp = self._household.max_w(local) + 2
        if self._solar is not None:
            exp = self._solar.max_w(t) + 2
        if self._battery is not None:
            imp = self._battery.state(local, 0xFFFF, top=100)[1] + 2
            exp = -self._battery.state(local, 0, top=100)[1] + 2
        if self._water is not None:
            imp = self._water.max_lpm(local)
        if self.has_gas:
            gas = self._gas_rate(t, local, bound=True)  # a minute lies within one 5-min slot
        return max(imp, 0.0), max(exp, 0.0), gas

    def _hour_bounds(self) -> list[list[float]]:
        """Prefix sums over the week of the most each counter can grow per UTC hour.

        Row ``n`` holds the bound for the first ``n`` hours of a week starting Monday 00:00
        UTC: Wh for import T1, import T2, export T1, export T2 (liters for water), m3 of gas.
        """
        rows = [[0.0] * 5]
        for hour in range(168):
            best = [0.0] * 5
            for offset in SITE_OFFSETS:
                acc = [0.0] * 5
                for minute in range(60):
                    t = EPOCH + hour * 3600 + minute * 60
                    imp, exp, gas = self._max_rates(t, t + offset)
                    t2 = self.p1 and tariff(t + offset) == 2
                    scale = 1.0 if self._water is not None else 1 / 60
                    acc[1 if t2 else 0] += imp * scale
                    acc[3 if t2 else 2] += exp * scale
                    acc[4] += gas / 60
                best = [max(a, b) for a, b in zip(best, acc, strict=True)]
            rows.append([a + b for a, b in zip(rows[-1], best, strict=True)])
        return rows

    def _since_epoch(self, hour: int, column: int) -> float:
        weeks, rest = divmod(hour - EPOCH // 3600, 168)
        return weeks * self._bounds[168][column] + self._bounds[rest][column]

    def _anchor(self, k: int) -> None:
        """Set the counters at the start of the hour holding ``k``, then integrate up to k."""
        hour = k // 3600
        u = [_lane(_mix(self._seed ^ 0xBA5E), i) for i in range(4)]
        by_role: dict[str, list[float]] = {  # Wh (water: liters) at 2024-01-01
            Role.GRID: [2e6 + 4e6 * u[0], 2e6 + 4e6 * u[1], 5e5 * u[2], 5e5 * u[3]],
            Role.CONSUMPTION: [1e5 + 2e6 * u[0], 0.0, 0.0, 0.0],
            Role.PRODUCTION: [1000 * u[0], 0.0, 1e6 + 4e6 * u[2], 0.0],
            Role.BATTERY: [1e5 + 5e5 * u[0], 0.0, 1e5 + 4e5 * u[2], 0.0],
            Role.WATER: [5e4 + 4e5 * u[0], 0.0, 0.0, 0.0],
        }
        base = by_role[self.role]
        self._wh = [b + self._since_epoch(hour, i) for i, b in enumerate(base)]
        self._gas_m3 = 1000 + 4000 * u[3] + self._since_epoch(hour, 4)
        self._k = self._gas_b = hour * 3600
        self._advance(k)

    # --- time ----------------------------------------------------------------------------
    def _local(self, k: int) -> int:
        """Local (Europe/Amsterdam) epoch seconds for UTC second ``k``."""
        hour = k // 3600
        if hour != self._tz_hour:
            offset = datetime.fromtimestamp(hour * 3600, SITE_TZ).utcoffset()
            self._tz_hour, self._tz_off = hour, int(offset.total_seconds()) if offset else 3600
        return k + self._tz_off

    def _iso(self, local: int) -> str:
        day, tod = divmod(local, 86400)
        if day != self._date_day:
            self._date_day, self._date = day, local_iso(day * 86400)[:11]
        return f"{self._date}{tod // 3600:02d}:{tod // 60 % 60:02d}:{tod % 60:02d}"

    # --- per-second sample and integration -----------------------------------------------
    def _sample(self, k: int) -> tuple[list[float], float, int, float]:
        """(per-phase W, total W, local time, state of charge % or l/min) at second k."""
        if k == self._cache_k:
            return self._cache
        local = k + self._tz_off if k // 3600 == self._tz_hour else self._local(k)
        r = _mix(self._seed ^ k)
        extra = 0.0
        if self._household is not None:
            phases = self._household.phases(k, local, r)
        else:
            phases = [0.0] * self.phases
        if self._solar is not None:
            pv = self._solar.power(k, r)
            if pv and self._pv_3p:
                phases = [phases[0] - 0.334 * pv, phases[1] - 0.333 * pv, phases[2] - 0.333 * pv]
            elif pv:
                phases[0] -= pv
        if self._battery is not None:
            extra, watts = self._battery.state(local, r)
            phases = [watts]
        elif self._water is not None:
            extra = self._water.lpm(local)
        if self.p1:  # whole watts, as DSMR gives them
            phases = [float(math.floor(p + 0.5)) for p in phases]
            total = sum(phases)
        else:
            phases = [math.floor(p * 1000 + 0.5) / 1000 for p in phases]
            total = _r3(sum(phases))
        self._cache_k, self._cache = k, (phases, total, local, extra)
        return self._cache

    def _advance(self, k: int) -> None:
        """Integrate seconds [self._k, k) into the counters."""
        wh, p1, water = self._wh, self.p1, self._water is not None
        for j in range(self._k, k):
            _, total, local, extra = self._sample(j)
            if water:
                wh[0] += extra / 60
            elif total > 0:
                wh[1 if p1 and tariff(local) == 2 else 0] += total / 3600
            elif total < 0:
                wh[3 if p1 and tariff(local) == 2 else 2] -= total / 3600
        self._k = max(self._k, k)
        while self.has_gas and self._gas_b + 300 <= k:
            self._gas_m3 += self._gas_rate(self._gas_b, self._local(self._gas_b)) * 300 / 3600
            self._gas_b += 300

    def _gas_rate(self, b: int, local: int, bound: bool = False) -> float:
        """Gas use (m3/h) in the 5 minutes holding UTC second ``b``: heating + hot water.

        With ``bound``, the most it can be in that slot (midwinter, the top of the noise).
        """
        hour = local % 86400 // 3600
        heat = 1.0 if bound else max(0.0, 0.45 - 0.55 * _season(b // 86400))
        heat *= 1.6 if 6 <= hour < 9 or 17 <= hour < 22 else 0.3 if hour < 6 else 1.0
        heat *= 1.5 if bound else 0.5 + _lane(_mix(self._seed ^ (b // 300 * 0x3C6EF372)), 0)
        hot_water = self._gas[(local - EPOCH) % WEEK // 300][1] > 0
        return min(GAS_MAX_M3H, heat + 0.9 * hot_water)

    # --- the payload -----------------------------------------------------------------------
    def measurement(self, ts: float) -> dict[str, Any]:
        """The v2 ``/api/measurement`` payload (v1 names for the watermeter) at epoch ``ts``."""
        k = int(ts // 1)
        if self._k < 0 or k < self._k or k - self._k > 3600:
            self._anchor(k)  # first call, clock went back, or a long pause (jumps forward)
        else:
            self._advance(k)
        phases, total, local, extra = self._sample(k)
        wh = self._wh
        if self._water is not None:
            return {"active_liter_lpm": extra, "total_liter_m3": _r3(wh[0] / 1000)}
        if self.p1:
            return self._p1(k, local, phases, total)
        out = {"energy_import_kwh": _r3(wh[0] / 1000), "energy_export_kwh": _r3(wh[2] / 1000)}
        self._electric(out, k, phases, total)
        if self._battery is not None:
            out["cycles"] = (k - EPOCH) // 86400 + self._seed % 40
            out["state_of_charge_pct"] = _r3(extra)
        return out

    def _electric(
        self, out: dict[str, Any], k: int, phases: list[float], total: float
    ) -> dict[str, Any]:
        """Add power, voltage and current (and the reactive set on kWh meters, sockets) to out."""
        r = _mix(self._seed ^ k ^ 0x5A5A5A5A)
        site_v = self._site_v + 1.5 * math.sin(k * 0.0011635528)
        steps = 10 if self.p1 else 1000  # DSMR gives volts with one decimal
        out["power_w"] = total
        if self.phases == 3 or self.p1:
            floor, (power_names, volt_names, amp_names) = math.floor, self._phase_names
            volts = [  # the voltage sags a little under load and rises when exporting
                floor(
                    (site_v + 0.8 * ((r >> 16 * n & 0xFFFF) / 65536 - 0.5) - 0.0008 * p) * steps
                    + 0.5
                )
                / steps
                for n, p in enumerate(phases)
            ]
            amps = [floor(p / v * 1000 + 0.5) / 1000 for p, v in zip(phases, volts, strict=True)]
            out.update(zip(power_names, phases, strict=True))
            out.update(zip(volt_names, volts, strict=True))
            out["current_a"] = _r3(sum([abs(a) for a in amps]))
            out.update(zip(amp_names, amps, strict=True))
        else:
            volts = [_r3(site_v + 0.8 * (_lane(r, 0) - 0.5) - 0.0008 * total)]
            out["voltage_v"] = volts[0]
            out["current_a"] = _r3(abs(total) / volts[0])
        if self.p1:
            return out
        freq = _r3(50 + 0.04 * math.sin(k * 0.006981317) + 0.01 * (_lane(_mix(k), 0) - 0.5))
        if self._battery is not None:
            out["frequency_hz"] = freq
            return out
        # kWh meters and sockets: power factor, apparent and reactive power and current.
        pfs = [min(1.0, 0.9 + 0.1 * abs(p) / (abs(p) + 300)) if p else 0.0 for p in phases]
        apparent = [abs(p) / pf if pf else 0.0 for p, pf in zip(phases, pfs, strict=True)]
        reactive = [
            -math.sqrt(max(s * s - p * p, 0.0)) for s, p in zip(apparent, phases, strict=True)
        ]
        sets = {
            "apparent_current_a": [s / v for s, v in zip(apparent, volts, strict=True)],
            "reactive_current_a": [q / v for q, v in zip(reactive, volts, strict=True)],
            "apparent_power_va": apparent,
            "reactive_power_var": reactive,
        }
        for name, values in sets.items():
            out[name] = _r3(sum(values))
            if self.phases == 3:
                stem, unit = name.rsplit("_", 1)
                for n, x in enumerate(values, 1):
                    out[f"{stem}_l{n}_{unit}"] = _r3(x)
        if self.phases == 3:
            for n, pf in enumerate(pfs, 1):
                out[f"power_factor_l{n}"] = _r3(pf)
        else:
            out["power_factor"] = _r3(pfs[0])
        out["frequency_hz"] = freq
        return out

    def _p1(self, k: int, local: int, phases: list[float], total: float) -> dict[str, Any]:
        wh, static = self._wh, self._static
        t1i, t2i, t1e, t2e = [math.floor(x + 0.5) / 1000 for x in wh]
        out: dict[str, Any] = {
            "protocol_version": 50,
            "meter_model": METER_MODEL,
            "unique_id": static["unique_id"],
            "timestamp": self._iso(local),
            "tariff": tariff(local),
            "energy_import_kwh": _r3(t1i + t2i),
            "energy_import_t1_kwh": t1i,
            "energy_import_t2_kwh": t2i,
            "energy_export_kwh": _r3(t1e + t2e),
            "energy_export_t1_kwh": t1e,
            "energy_export_t2_kwh": t2e,
        }
        self._electric(out, k, phases, total)
        out.update(static["counts"])
        if self.has_gas:
            if self._gas_stamp[0] != self._gas_b:  # same hour as k, so same UTC offset
                self._gas_stamp = (self._gas_b, self._iso(self._gas_b + local - self._cache_k))
            out["external"] = [
                {
                    "unique_id": static["gas_unique_id"],
                    "type": "gas_meter",
                    "timestamp": self._gas_stamp[1],
                    "value": _r3(self._gas_m3),
                    "unit": "m3",
                }
            ]
        return out

    def max_rates(self, ts: float) -> tuple[float, float]:
        """Upper bounds of import and export power (W; water: l/min) in the minute at ``ts``."""
        t = int(ts // 60 * 60)
        imp, exp, _ = self._max_rates(t, self._local(t))
        return imp, exp
