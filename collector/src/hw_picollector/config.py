"""The collector's config file (`/etc/hw-picollector/config.yml`): load, validate, name errors.

Every problem is reported as ``FILE: KEY: what is wrong`` so an operator can fix it at once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hw_picollector import catalog
from hw_picollector.catalog import API_NAMES, ROLE_NAMES, Api

# Identifier patterns: always used with fullmatch (re.match and $ let a trailing newline by).
SERIAL_RE = re.compile(r"[0-9a-f]{12}")
HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
PORT_RE = re.compile(r"[0-9]{1,5}")

CLOCK_POLICIES = ("auto", "wait", "trust")
CONSISTENCY_LEVELS = ("ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL", "TWO", "THREE")


class ConfigError(Exception):
    """A config problem, already phrased as ``file: key: message``."""


MAX_EXTRA_KEYS = 4096
MAX_EXTRA_BYTES = 64 * 1024

@dataclass(frozen=True)
class DeviceConfig:
    serial: str
    product_type: str
    role: str
    api: str = Api.V1.value
    address: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    label: str = ""

    @property
    def host(self) -> str | None:
        return split_address(self.address)[0] if self.address else None

    @property
    def port(self) -> int:
        if self.address:
            port = split_address(self.address)[1]
            if port is not None:
                return port
        return 443 if self.api == Api.V2 else 80


@dataclass(frozen=True)
class CassandraConfig:
    hosts: tuple[str, ...]
    port: int = 9042
    keyspace: str = "homewizard"
    local_dc: str = "datacenter1"
    consistency: str = "LOCAL_QUORUM"
    credentials_file: str | None = None
    tls_ca_file: str | None = None
    tls_hostname: str | None = None
    allow_plaintext: bool = False  # without TLS to hosts other than loopback IP literals
    replication: dict[str, Any] = field(
        default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": 1}
    )
    concurrency: int = 16  # sync: batches in flight (memory grows with it, throughput not)
    batch_rows: int = 200  # sync: rows per single-partition batch (and at most 64 KiB)
    request_timeout_s: float = 15.0


@dataclass(frozen=True)
class Config:
    path: str
    site_id: str
    data_dir: Path
    devices: tuple[DeviceConfig, ...]
    poll_interval_s: float = 1.0
    flush_interval_s: float = 5.0
    request_timeout_s: float = 2.0
    retention_days: int = 0
    disk_min_free_mb: int = 64
    clock_sync: str = "auto"
    clock_marker: str = "/run/systemd/timesync/synchronized"
    host: str | None = None
    cassandra: CassandraConfig | None = None
    mdns: bool = True
    max_extra_keys: int = 256  # extra fields kept per sample (the first by name)
    max_extra_bytes: int = 16384  # and at most this much of their JSON
    max_pending_rows: int = 3600  # per device, held in memory while the store cannot write

    def device(self, serial: str) -> DeviceConfig:
        for dev in self.devices:
            if dev.serial == serial:
                return dev
        raise KeyError(serial)


def split_address(address: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port or None)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{address!r}: text after ']' is not :port")
        return host, _port(rest[1:])
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, _port(port)
    return address, None


def _port(text: str) -> int:
    """Digits only (``int()`` would also take spaces, a newline, ``_`` and other scripts)."""
    if not PORT_RE.fullmatch(text):
        raise ValueError(f"port {text!r} is not a number")
    return int(text)


def valid_address(address: str) -> bool:
    try:
        host, port = split_address(address)
    except ValueError:
        return False
    if port is not None and not 0 < port < 65536:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(HOST_RE.fullmatch(host))


class _Reader:
    """Typed access to a mapping, collecting errors with their dotted key path."""

    def __init__(self, path: str, data: dict[str, Any], prefix: str, errors: list[str]):
        self.path, self.data, self.prefix, self.errors = path, data, prefix, errors

    def err(self, key: str, msg: str) -> None:
        self.errors.append(f"{self.path}: {self.prefix}{key}: {msg}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.err(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.err(key, f"expected {names}, got {type(value).__name__} {value!r}")
            return default
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None,
               required: bool = False) -> Any:
        value = self.get(key, str, default, required)
        if value is not None and value not in choices:
            self.err(key, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def count(self, key: str, default: int, minimum: int = 0, maximum: int | None = None
              ) -> int:
        value: int = self.get(key, int, default)
        if value < minimum:
            self.err(key, f"must be >= {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.err(key, f"must be <= {maximum}, got {value}")
            return default
        return value

    def positive(self, key: str, default: float) -> float:
        value: float = self.get(key, float, default)
        if value <= 0:
            self.err(key, f"must be > 0, got {value}")
            return default
        return value


def _device(path: str, index: int, raw: Any, errors: list[str]) -> DeviceConfig | None:
    prefix = f"devices[{index}]."
    if not isinstance(raw, dict):
        errors.append(f"{path}: devices[{index}]: expected a mapping")
        return None
    r = _Reader(path, raw, prefix, errors)
    known = {"serial", "product_type", "role", "api", "address", "token_file", "ca_file", "label"}
    for key in sorted(set(raw) - known):
        r.err(key, "unknown key")
    serial = r.get("serial", str, required=True)
    if serial is not None and not SERIAL_RE.fullmatch(serial):
        r.err("serial", f"{serial!r} is not 12 lowercase hex characters")
    product_type = r.choice("product_type", catalog.product_types(), required=True)
    role = r.choice("role", ROLE_NAMES, required=True)
    api = r.choice("api", API_NAMES, default=Api.V1.value)
    address = r.get("address", str)
    if address is not None and not valid_address(address):
        r.err("address", f"{address!r} is not host[:port]")
    token_file = r.get("token_file", str)
    if api == Api.V2 and not token_file:
        r.err("token_file", "required for an API v2 device")
    product = catalog.get(product_type) if product_type is not None else None
    # Only v1 on a product without it is refused: v2 on a v1-only product has always been
    # accepted here (the workbook refuses it), and an existing config must still load.
    if api == Api.V1 and product is not None and Api.V1 not in product.apis:
        r.err("api", f"{product_type} has no API v1")
    if serial is None or product_type is None or role is None:
        return None
    return DeviceConfig(serial=serial, product_type=product_type, role=role,
                        api=api or Api.V1.value,
                        address=address, token_file=token_file, ca_file=r.get("ca_file", str),
                        label=r.get("label", str, ""))


def loopback_literal(host: str) -> bool:
    """An IP literal of this machine's loopback (127.0.0.0/8, ::1); a name never is."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cassandra(path: str, raw: Any, errors: list[str]) -> CassandraConfig | None:
    if not isinstance(raw, dict):
        errors.append(f"{path}: cassandra: expected a mapping")
        return None
    r = _Reader(path, raw, "cassandra.", errors)
    hosts = r.get("hosts", list, required=True) or []
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        if "hosts" in raw:
            r.err("hosts", "expected a non-empty list of host names")
        hosts = []
    tls = r.get("tls", dict, {})
    tls_reader = _Reader(path, tls, "cassandra.tls.", errors)
    replication = r.get("replication", dict, None)
    port = r.get("port", int, 9042)
    if not 0 < port < 65536:
        r.err("port", f"{port} is out of range")
    kwargs: dict[str, Any] = {}
    if replication is not None:
        kwargs["replication"] = replication
    keyspace = r.get("keyspace", str, "homewizard")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", keyspace):
        r.err("keyspace", f"{keyspace!r} is not a valid keyspace name")
    tls_ca_file = tls_reader.get("ca_file", str)
    allow_plaintext = r.get("allow_plaintext", bool, False)
    remote = [h for h in hosts if not loopback_literal(h)]
    if not tls_ca_file and not allow_plaintext and remote:
        # Passwords and data would cross the network in clear text.
        tls_reader.err("ca_file", f"missing: the login and every row would go to {remote[0]} "
                       "in plaintext; set it to the CA of the Cassandra nodes (role variable "
                       "hwpc_cassandra_tls_ca_file), or allow_plaintext: true "
                       "(hwpc_cassandra_allow_plaintext) on a network you trust")
    return CassandraConfig(
        hosts=tuple(hosts), port=port, keyspace=keyspace,
        local_dc=r.get("local_dc", str, "datacenter1"),
        consistency=r.choice("consistency", CONSISTENCY_LEVELS, "LOCAL_QUORUM"),
        credentials_file=r.get("credentials_file", str),
        tls_ca_file=tls_ca_file,
        tls_hostname=tls_reader.get("hostname", str),
        allow_plaintext=allow_plaintext,
        concurrency=r.get("concurrency", int, 16),
        batch_rows=r.get("batch_rows", int, 200),
        request_timeout_s=r.positive("request_timeout_s", 15.0),
        **kwargs,
    )


def parse_config(data: Any, path: str = "<config>") -> Config:
    errors: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    r = _Reader(path, data, "", errors)
    site_id = r.get("site_id", str, required=True)
    if site_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", site_id):
        r.err("site_id", f"{site_id!r}: use letters, digits, '_', '.', '-'")
    data_dir = r.get("data_dir", str, "/var/lib/hw-picollector")
    raw_devices = r.get("devices", list, [])
    devices = [d for i, raw in enumerate(raw_devices) if (d := _device(path, i, raw, errors))]
    seen: set[str] = set()
    for i, dev in enumerate(devices):
        if dev.serial in seen:
            errors.append(f"{path}: devices[{i}].serial: {dev.serial} appears twice")
        seen.add(dev.serial)
    cassandra = _cassandra(path, data["cassandra"], errors) if data.get("cassandra") else None
    retention = r.get("retention_days", int, 0)
    if retention < 0:
        r.err("retention_days", "must be >= 0 (0 keeps every day)")
    config = Config(
        path=path,
        site_id=site_id or "",
        data_dir=Path(data_dir),
        devices=tuple(devices),
        poll_interval_s=r.positive("poll_interval_s", 1.0),
        flush_interval_s=r.positive("flush_interval_s", 5.0),
        request_timeout_s=r.positive("request_timeout_s", 2.0),
        retention_days=retention,
        disk_min_free_mb=r.get("disk_min_free_mb", int, 64),
        clock_sync=r.choice("clock_sync", CLOCK_POLICIES, "auto"),
        clock_marker=r.get("clock_marker", str, "/run/systemd/timesync/synchronized"),
        host=r.get("host", str),
        cassandra=cassandra,
        mdns=r.get("mdns", bool, True),
        # Bounded so that no row can grow past what the sync parses (a field over 128 KiB
        # would be quarantined, not synced).
        max_extra_keys=r.count("max_extra_keys", 256, maximum=MAX_EXTRA_KEYS),
        max_extra_bytes=r.count("max_extra_bytes", 16384, maximum=MAX_EXTRA_BYTES),
        max_pending_rows=r.count("max_pending_rows", 3600, minimum=1),
    )
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def load_config(path: str | Path) -> Config:
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    return parse_config(data, path)
