"""Config errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hw_picollector.config import ConfigError, load_config, parse_config

GOOD = {
    "site_id": "CDB001",
    "data_dir": "/srv/hwpc",
    "devices": [
        {"serial": "3c39e7aabbcc", "product_type": "HWE-P1", "role": "grid",
         "address": "127.0.0.1:8001", "api": "v1"},
        {"serial": "5c2fafaabbcc", "product_type": "HWE-KWH3", "role": "production",
         "address": "127.0.0.1", "api": "v2", "token_file": "/run/t"},
    ],
    "cassandra": {"hosts": ["127.0.0.1"], "tls": {"ca_file": "/etc/ca.pem"}},
}


def test_good_config_parses() -> None:
    cfg = parse_config(GOOD, "c.yml")
    assert cfg.site_id == "CDB001"
    assert cfg.devices[0].port == 8001
    assert cfg.devices[1].port == 443
    assert cfg.cassandra is not None
    assert cfg.cassandra.tls_ca_file == "/etc/ca.pem"
    assert cfg.cassandra.consistency == "LOCAL_QUORUM"


@pytest.mark.parametrize(("patch", "message"), [
    ({"site_id": None}, "c.yml: site_id: missing"),
    ({"poll_interval_s": 0}, "c.yml: poll_interval_s: must be > 0"),
    ({"poll_interval_s": "fast"}, "c.yml: poll_interval_s: expected float"),
    ({"devices": [{"serial": "XYZ", "product_type": "HWE-P1", "role": "grid"}]},
     "c.yml: devices[0].serial: 'XYZ' is not 12 lowercase hex"),
    ({"devices": [{"serial": "3c39e7aabbcc", "product_type": "HWE-P2", "role": "grid"}]},
     "c.yml: devices[0].product_type: 'HWE-P2' is not one of"),
    ({"devices": [{"serial": "3c39e7aabbcc", "product_type": "HWE-P1", "role": "grid",
                   "api": "v2"}]}, "c.yml: devices[0].token_file: required"),
    ({"devices": [{"serial": "3c39e7aabbcc", "product_type": "HWE-P1", "role": "grid",
                   "address": "bad address!"}]}, "c.yml: devices[0].address:"),
    ({"devices": [{"serial": "3c39e7aabbcc", "product_type": "HWE-P1", "role": "grid",
                   "adress": "x"}]}, "c.yml: devices[0].adress: unknown key"),
    ({"cassandra": {"hosts": []}}, "c.yml: cassandra.hosts:"),
    # no row may outgrow what the sync parses: the extras caps have ceilings
    ({"max_extra_bytes": 200_000}, "c.yml: max_extra_bytes: must be <= 65536"),
    ({"max_extra_keys": 100_000}, "c.yml: max_extra_keys: must be <= 4096"),
])
def test_errors_name_file_and_key(patch: dict[str, object], message: str) -> None:
    data = {**GOOD, **patch}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "c.yml")
    assert message in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("site_id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yml: not valid YAML \(line"):
        load_config(bad)


# --- plaintext to Cassandra -------------------------------------------------------------------

def _cassandra(hosts: list[str], **extra: object) -> dict[str, object]:
    return {**GOOD, "cassandra": {"hosts": hosts, **extra}}


@pytest.mark.parametrize("hosts", [["127.0.0.1"], ["127.3.2.1"], ["::1"],
                                   ["127.0.0.1", "::1"]])
def test_plaintext_to_loopback_ip_literals_is_allowed(hosts: list[str]) -> None:
    cfg = parse_config(_cassandra(hosts), "c.yml")
    assert cfg.cassandra is not None and cfg.cassandra.tls_ca_file is None


@pytest.mark.parametrize("hosts", [["localhost"], ["db1.example.org"], ["10.1.2.3"],
                                   ["192.168.1.10"], ["172.16.0.9"], ["203.0.113.7"],
                                   ["2001:db8::7"], ["fd00::1"], ["127.0.0.1", "db1.example.org"]])
def test_plaintext_elsewhere_is_refused_in_one_line(hosts: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_cassandra(hosts), "c.yml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("c.yml: cassandra.tls.ca_file: ")
    assert "plaintext" in message and "allow_plaintext" in message
    assert next(h for h in hosts if h != "127.0.0.1") in message


@pytest.mark.parametrize("hosts", [["db1.example.org"], ["10.1.2.3"], ["localhost"]])
def test_tls_or_allow_plaintext_lifts_the_refusal(hosts: list[str]) -> None:
    with_tls = parse_config(_cassandra(hosts, tls={"ca_file": "/etc/ca.pem"}), "c.yml")
    assert with_tls.cassandra is not None and with_tls.cassandra.tls_ca_file == "/etc/ca.pem"
    allowed = parse_config(_cassandra(hosts, allow_plaintext=True), "c.yml")
    assert allowed.cassandra is not None and allowed.cassandra.allow_plaintext
    with pytest.raises(ConfigError, match=r"cassandra\.tls\.ca_file: "):
        parse_config(_cassandra(hosts, allow_plaintext=False), "c.yml")


def test_allow_plaintext_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"c\.yml: cassandra\.allow_plaintext: expected bool"):
        parse_config(_cassandra(["127.0.0.1"], allow_plaintext="yes"), "c.yml")
