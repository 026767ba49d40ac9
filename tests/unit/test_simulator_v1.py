"""The simulated devices over API v1 (plain HTTP): endpoints, status codes, faults, controls."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# isort: split
from hw_picollector_simulator import dsmr
from hw_picollector_simulator.server import SimulatedDevice

Start = Callable[..., SimulatedDevice]


class Client:
    """One keep-alive HTTP/1.1 connection to a simulator."""

    def __init__(self, device: SimulatedDevice, timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", device.port, timeout=timeout
        )

    def __call__(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = (
            raw
            if raw is not None
            else None
            if body is None
            else json.dumps(body).encode()
        )
        self.conn.request(method, path, body=data)
        response = self.conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = self(method, path, body)
        return status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def start() -> Iterator[Start]:
    """Start simulators on ephemeral loopback ports; all are stopped after the test."""
    devices: list[SimulatedDevice] = []

    def _start(product_type: str = "HWE-P1", **kw: Any) -> SimulatedDevice:
        devices.append(SimulatedDevice(product_type, "v1", **kw).start())
        return devices[-1]

    yield _start
    for device in devices:
        device.stop()


def p1_serial(pred: Callable[[SimulatedDevice], bool]) -> str:
    for n in range(200):
        device = SimulatedDevice("HWE-P1", "v1", f"3c39e7{n:06x}")
        if pred(device):
            return device.serial
    raise AssertionError("no serial with the wanted properties")


@pytest.mark.parametrize(
    "kind", ["HWE-P1", "HWE-KWH1", "HWE-KWH3", "SDM230-wifi", "HWE-SKT", "HWE-WTR"]
)
def test_api_identifies_the_device(start: Start, kind: str) -> None:
    device = start(kind, serial="3c39e7aabbcc", firmware="4.19")
    status, info = Client(device).json("GET", "/api")
    assert status == 200
    assert info["product_type"] == kind and info["serial"] == "3c39e7aabbcc"
    assert info["api_version"] == "v1" and info["firmware_version"] == "4.19"
    assert info["product_name"]


def test_p1_data_uses_v1_names_and_the_real_number_formats(start: Start) -> None:
    device = start(serial=p1_serial(lambda d: d.model.phases == 3 and d.model.has_gas))
    status, headers, body = Client(device)("GET", "/api/v1/data")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    text = body.decode()
    assert '"smr_version":50,' in text and '"wifi_ssid":"Simulated Wi-Fi"' in text
    assert '"voltage_sag_l1_count":' in text and ".000," in text
    data = json.loads(text)
    real_capture_keys = {  # the Nov 2024 capture in homewizard-api.md
        "wifi_ssid",
        "wifi_strength",
        "smr_version",
        "meter_model",
        "unique_id",
        "active_tariff",
        "total_power_import_kwh",
        "total_power_import_t1_kwh",
        "total_power_import_t2_kwh",
        "total_power_export_kwh",
        "total_power_export_t1_kwh",
        "total_power_export_t2_kwh",
        "active_power_w",
        "active_power_l1_w",
        "active_power_l2_w",
        "active_power_l3_w",
        "active_voltage_l1_v",
        "active_voltage_l2_v",
        "active_voltage_l3_v",
        "active_current_a",
        "active_current_l1_a",
        "active_current_l2_a",
        "active_current_l3_a",
        "voltage_sag_l1_count",
        "voltage_sag_l2_count",
        "voltage_sag_l3_count",
        "voltage_swell_l1_count",
        "voltage_swell_l2_count",
        "voltage_swell_l3_count",
        "any_power_fail_count",
        "long_power_fail_count",
        "total_gas_m3",
        "gas_timestamp",
        "gas_unique_id",
        "external",
    }
    assert set(data) == real_capture_keys
    assert isinstance(data["active_tariff"], int) and data["active_tariff"] in (1, 2)
    assert 0 <= data["wifi_strength"] <= 100
    assert len(str(data["gas_timestamp"])) == 12
    assert data["active_power_w"] == sum(
        data[f"active_power_l{n}_w"] for n in (1, 2, 3)
    )


def test_other_devices_data(start: Start) -> None:
    kwh1 = json.loads(Client(start("HWE-KWH1"))("GET", "/api/v1/data")[2])
    assert kwh1["total_power_import_t1_kwh"] == kwh1["total_power_import_kwh"]
    assert kwh1["active_power_l1_w"] == kwh1["active_power_w"]
    assert {"active_voltage_v", "active_power_factor", "active_frequency_hz"} <= set(
        kwh1
    )
    kwh3 = json.loads(Client(start("SDM630-wifi"))("GET", "/api/v1/data")[2])
    assert {
        "active_power_l3_w",
        "active_power_factor_l2",
        "total_power_export_t1_kwh",
    } <= set(kwh3)
    assert "active_voltage_v" not in kwh3
    skt = json.loads(Client(start("HWE-SKT"))("GET", "/api/v1/data")[2])
    assert "active_apparent_power_va" in skt and "active_apparent_current_a" not in skt
    wtr = json.loads(Client(start("HWE-WTR"))("GET", "/api/v1/data")[2])
    assert set(wtr) == {
        "wifi_ssid",
        "wifi_strength",
        "active_liter_lpm",
        "total_liter_m3",
        "total_liter_offset_m3",
    }


def test_telegram_only_on_the_p1(start: Start) -> None:
    status, headers, body = Client(start())("GET", "/api/v1/telegram")
    assert status == 200 and headers["Content-Type"] == "text/plain"
    assert dsmr.verify(body.decode())
    status, headers, body = Client(start("HWE-KWH1"))("GET", "/api/v1/telegram")
    assert (status, headers["Content-Type"], body) == (
        404,
        "text/plain",
        b"404 Not Found",
    )


def test_unknown_paths_and_methods_are_404(start: Start) -> None:
    client = Client(start())
    for method, path in [
        ("GET", "/"),
        ("GET", "/api/v2/data"),
        ("POST", "/api/v1/data"),
        ("GET", "/api/v1/state"),
        ("DELETE", "/api"),
        ("GET", "/_sim/nope"),
    ]:
        status, headers, body = client(method, path)
        assert (status, body) == (404, b"404 Not Found"), (method, path)
        assert headers["Content-Type"] == "text/plain"


def test_one_connection_serves_many_requests(start: Start) -> None:
    device = start()
    client = Client(device)
    for _ in range(5):
        status, headers, _ = client("GET", "/api/v1/data")
        assert status == 200 and "Content-Length" in headers
    stats = client.json("GET", "/_sim/stats")[1]
    assert stats["connections"] == 1
    assert stats["requests"]["/api/v1/data"] == 5 and stats["total"] == 6


def test_socket_state(start: Start) -> None:
    client = Client(start("HWE-SKT"))
    assert client.json("GET", "/api/v1/state") == (
        200,
        {"power_on": True, "switch_lock": False, "brightness": 255},
    )
    assert client.json("PUT", "/api/v1/state", {"power_on": False}) == (
        200,
        {"power_on": False},
    )
    assert client.json("GET", "/api/v1/state")[1]["power_on"] is False
    status, error = client.json("PUT", "/api/v1/state", {"switch_lock": True})
    assert (status, error["error"]["id"]) == (400, 8)
    assert (
        client.json("PUT", "/api/v1/state", {"power_on": True, "switch_lock": True})[0]
        == 200
    )
    assert client.json("PUT", "/api/v1/state", {"power_on": False})[1]["error"] == {
        "id": 8,
        "description": "power_on cannot be turned off when switch_lock is on",
    }
    status, error = client.json("PUT", "/api/v1/state", {"brightness": 256})
    assert (status, error["error"]["id"]) == (400, 7)
    assert client.json("PUT", "/api/v1/state", {"brightness": 10}) == (
        200,
        {"brightness": 10},
    )
    status, _, body = client("PUT", "/api/v1/state", raw=b"{not json")
    assert (status, json.loads(body)["error"]["id"]) == (400, 2)


def test_identify(start: Start) -> None:
    for kind in ("HWE-P1", "HWE-SKT", "HWE-WTR"):
        assert Client(start(kind)).json("PUT", "/api/v1/identify") == (
            200,
            {"identify": "ok"},
        )
    assert (
        Client(start("HWE-KWH3"))("PUT", "/api/v1/identify")[0] == 404
    )  # as the library says


def test_system(start: Start) -> None:
    client = Client(start("HWE-KWH1"))
    assert client.json("GET", "/api/v1/system") == (200, {"cloud_enabled": True})
    assert client.json("PUT", "/api/v1/system", {"cloud_enabled": False}) == (
        200,
        {"cloud_enabled": False},
    )
    assert client.json("GET", "/api/v1/system") == (200, {"cloud_enabled": False})
    assert client.json("PUT", "/api/v1/system", {"cloud_enabled": "no"})[0] == 400


def test_fault_disabled_answers_403_202_on_every_api_path(start: Start) -> None:
    device = start(fault="disabled")
    client = Client(device)
    for path in ("/api", "/api/v1/data", "/api/v1/telegram", "/api/nope"):
        assert client.json("GET", path) == (
            403,
            {"error": {"id": 202, "description": "API not enabled"}},
        )
    assert client.json("POST", "/_sim/fault", {"fault": "none"}) == (
        200,
        {"fault": "none"},
    )
    assert client("GET", "/api/v1/data")[0] == 200
    assert client.json("POST", "/_sim/fault", {"fault": "sleepy"})[0] == 400
    assert client.json("POST", "/_sim/fault", [1])[0] == 400


def test_fault_slow_outlasts_the_client_timeout(start: Start) -> None:
    device = start(fault="slow")
    assert device.slow_delay_s >= 12
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        Client(device, timeout=0.5)("GET", "/api/v1/data")
    assert time.monotonic() - began < 5
    assert Client(device).json("GET", "/_sim/stats")[0] == 200  # controls stay fast


def _outcome(device: SimulatedDevice) -> str:
    client = Client(device)
    try:
        status, _, body = client("GET", "/api/v1/data")
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return "dropped"
    finally:
        client.close()
    if status == 500:
        assert json.loads(body)["error"]["id"] == 901
        return "500"
    assert status == 200
    json.loads(body)
    return "ok"


def test_fault_flaky_fails_about_30_percent_deterministically(start: Start) -> None:
    device = start(fault="flaky", serial="3c39e7aabbcc")
    outcomes = [_outcome(device) for _ in range(80)]
    failures = len(outcomes) - outcomes.count("ok")
    assert 12 <= failures <= 40, outcomes
    assert {"500", "dropped"} <= set(outcomes)
    again = start(fault="flaky", serial="3c39e7aabbcc")
    assert [_outcome(again) for _ in range(20)] == outcomes[:20]
    assert Client(device).json("GET", "/api")[0] == 200  # only data requests fail


def test_fault_garbage_sends_invalid_json_with_200(start: Start) -> None:
    client = Client(start(fault="garbage"))
    status, _, body = client("GET", "/api/v1/data")
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert client.json("GET", "/api")[0] == 200


def test_fault_nulls_sends_old_firmware_payloads(start: Start) -> None:
    device = start(
        serial=p1_serial(lambda d: d.model.phases == 1 and d.model.has_gas),
        fault="nulls",
    )
    text = Client(device)("GET", "/api/v1/data")[2].decode()
    assert '"active_power_l2_w":null' in text and '"active_power_l3_w":null' in text
    assert '"total_gas_m3":null' in text and '"gas_timestamp":null' in text
    assert '"smr_version":50.000' in text and '"active_tariff":' in text
    data = json.loads(text)
    assert isinstance(data["active_power_l1_w"], float)


def test_serial_can_change_at_the_same_address(start: Start) -> None:
    device = start()
    client = Client(device)
    old = client.json("GET", "/api/v1/data")[1]
    status, headers, body = client("POST", "/_sim/serial", {"serial": "3c39e7000042"})
    assert (status, json.loads(body), headers["Connection"]) == (
        200,
        {"serial": "3c39e7000042"},
        "close",
    )
    client = Client(device)
    assert client.json("GET", "/api")[1]["serial"] == "3c39e7000042"
    assert client.json("GET", "/api/v1/data")[1]["unique_id"] != old["unique_id"]
    assert client.json("POST", "/_sim/serial", {"serial": "3C39E7000042"})[0] == 400


def test_stop_closes_the_port_and_open_connections(start: Start) -> None:
    device = start()
    client = Client(device)
    assert client("GET", "/api")[0] == 200
    device.stop()
    with pytest.raises((http.client.HTTPException, OSError)):
        client("GET", "/api")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", device.port), timeout=2)


def test_unsupported_combinations_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="HWE-BAT has no API v1"):
        SimulatedDevice("HWE-BAT", "v1")
    with pytest.raises(ValueError, match="HWE-SKT has no API v2"):
        SimulatedDevice("HWE-SKT", "v2", tls_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a tls_dir"):
        SimulatedDevice("HWE-P1", "v2")
    with pytest.raises(ValueError, match="12 lowercase hex"):
        SimulatedDevice("HWE-P1", "v1", "not-a-serial")
    with pytest.raises(ValueError, match="unknown fault"):
        SimulatedDevice("HWE-P1", "v1", fault="broken")
