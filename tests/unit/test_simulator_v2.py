"""The simulated devices over API v2: TLS like HomeWizard's, bearer tokens, pairing, faults."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# isort: split
from hw_picollector_simulator import dsmr
from hw_picollector_simulator.server import SimulatedDevice

PROVISIONED = "0123456789ABCDEF0123456789ABCDEF"  # the --token of these tests
AUTH = {"Authorization": f"Bearer {PROVISIONED}"}
Start = Callable[..., SimulatedDevice]


class TLSClient(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 but verifies ``appliance/<id>/<serial>``, as the library does."""

    def __init__(
        self, device: SimulatedDevice, name: str | None = None, timeout: float = 5
    ) -> None:
        assert device.ca_file is not None
        context = ssl.create_default_context(cafile=str(device.ca_file))
        context.verify_flags = (
            ssl.VERIFY_X509_PARTIAL_CHAIN
        )  # and not VERIFY_X509_STRICT
        context.hostname_checks_common_name = True
        super().__init__("127.0.0.1", device.port, context=context, timeout=timeout)
        self.name = name or device.hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.name)  # type: ignore[attr-defined]

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = (
            raw
            if raw is not None
            else None
            if body is None
            else json.dumps(body).encode()
        )
        self.request(method, path, body=data, headers=headers or {})
        response = self.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def json(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        status, _, data = self(method, path, body, headers)
        return status, json.loads(data) if data else None


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture
def start(tls_dir: Path) -> Iterator[Start]:
    devices: list[SimulatedDevice] = []

    def _start(product_type: str = "HWE-P1", **kw: Any) -> SimulatedDevice:
        kw.setdefault("token", PROVISIONED)
        kw.setdefault("serial", "5c2fafaabbcc")
        devices.append(
            SimulatedDevice(product_type, "v2", tls_dir=tls_dir, **kw).start()
        )
        return devices[-1]

    yield _start
    for device in devices:
        device.stop()


def test_tls_verifies_with_the_generated_ca_and_the_appliance_name(
    start: Start,
) -> None:
    device = start()
    client = TLSClient(device)
    assert client.json("GET", "/api", headers=AUTH)[0] == 200
    peer = client.sock.getpeercert()  # type: ignore[union-attr]
    assert peer is not None
    assert peer["subject"] == ((("commonName", "appliance/p1dongle/5c2fafaabbcc"),),)
    with pytest.raises(ssl.SSLCertVerificationError):
        TLSClient(device, name="appliance/p1dongle/5c2fafaabbcd")("GET", "/api")


def test_plain_http_is_refused(start: Start) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", start().port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/api")
        plain.getresponse()


def test_every_api_call_needs_a_valid_token(start: Start) -> None:
    client = TLSClient(start())
    for headers in ({}, {"Authorization": "Bearer WRONG"}, {"Authorization": PROVISIONED}):
        status, response_headers, body = client("GET", "/api", headers=headers)
        assert (status, json.loads(body)) == (401, {"error": "user:unauthorized"})
        assert response_headers["X-Api-Version"] == "2.2.0"
    status, headers, body = client("GET", "/api", headers=AUTH)
    assert status == 200 and headers["X-Api-Version"] == "2.2.0"
    assert json.loads(body) == {
        "product_name": "P1 Meter",
        "product_type": "HWE-P1",
        "serial": "5c2fafaabbcc",
        "firmware_version": "6.0503",
        "api_version": "2.2.0",
    }
    assert client("GET", "/api/nope", headers=AUTH)[0] == 404


def test_api_version_header(start: Start) -> None:
    client = TLSClient(start())
    assert client.json("GET", "/api", headers={**AUTH, "X-Api-Version": "2"})[0] == 200
    assert client.json("GET", "/api", headers={**AUTH, "X-Api-Version": "3"}) == (
        400,
        {"error": "request:api-version-not-supported"},
    )


def test_measurement_uses_v2_names(start: Start) -> None:
    client = TLSClient(start("HWE-KWH3"))
    status, headers, body = client("GET", "/api/measurement", headers=AUTH)
    assert status == 200 and headers["Content-Type"] == "application/json"
    m = json.loads(body)
    assert {"energy_import_kwh", "power_l1_w", "voltage_l3_v", "frequency_hz"} <= set(m)
    assert not any(k.startswith(("active_", "total_", "wifi_")) for k in m)


def test_telegram_needs_a_first_telegram(start: Start) -> None:
    client = TLSClient(start(first_telegram_s=3.0))
    assert client.json("GET", "/api/telegram", headers=AUTH) == (
        503,
        {"error": "telegram:no-telegram-received"},
    )
    deadline = time.monotonic() + 15
    while (response := client("GET", "/api/telegram", headers=AUTH))[0] == 503:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status, headers, body = response
    assert status == 200 and headers["Content-Type"] == "text/plain"
    assert dsmr.verify(body.decode())
    assert TLSClient(start("HWE-KWH1"))("GET", "/api/telegram", headers=AUTH)[0] == 404


def test_system(start: Start) -> None:
    client = TLSClient(start())
    status, system = client.json("GET", "/api/system", headers=AUTH)
    assert status == 200
    assert set(system) == {
        "wifi_ssid",
        "wifi_rssi_db",
        "cloud_enabled",
        "uptime_s",
        "status_led_brightness_pct",
        "api_v1_enabled",
    }
    assert -100 < system["wifi_rssi_db"] < 0
    status, system = client.json(
        "PUT", "/api/system", {"status_led_brightness_pct": 50}, AUTH
    )
    assert (
        status == 200
        and system["status_led_brightness_pct"] == 50
        and "wifi_ssid" in system
    )
    assert client.json(
        "PUT", "/api/system", {"status_led_brightness_pct": 101}, AUTH
    ) == (
        400,
        {"error": "json:parameter-invalid-type:status_led_brightness_pct"},
    )
    assert client.json("PUT", "/api/system", {"api_v1_enabled": "yes"}, AUTH)[0] == 400
    assert client.json("PUT", "/api/system", {"colour": "red"}, AUTH) == (
        400,
        {"error": "json:no-parameters-recognized"},
    )
    status, _, body = client("PUT", "/api/system", raw=b"{oops", headers=AUTH)
    assert (status, json.loads(body)) == (400, {"error": "request:invalid-json"})

    battery = TLSClient(start("HWE-BAT"))
    system = battery.json("GET", "/api/system", headers=AUTH)[1]
    assert "api_v1_enabled" not in system and system["cloud_enabled"] is True
    assert battery.json("PUT", "/api/system", {"cloud_enabled": False}, AUTH)[0] == 400
    kwh = TLSClient(start("HWE-KWH1")).json("GET", "/api/system", headers=AUTH)[1]
    assert "status_led_brightness_pct" not in kwh


def test_identify_and_reboot(start: Start) -> None:
    p1, kwh, bat = (
        TLSClient(start(kind)) for kind in ("HWE-P1", "HWE-KWH1", "HWE-BAT")
    )
    status, _, body = p1("PUT", "/api/system/identify", headers=AUTH)
    assert (status, body) == (204, b"")
    assert bat("PUT", "/api/system/identify", headers=AUTH)[0] == 204
    assert kwh("PUT", "/api/system/identify", headers=AUTH)[0] == 404
    assert kwh("PUT", "/api/system/reboot", headers=AUTH)[0] == 204
    assert bat("PUT", "/api/system/reboot", headers=AUTH)[0] == 404


def test_batteries(start: Start) -> None:
    client = TLSClient(start())
    assert client.json("GET", "/api/batteries", headers=AUTH) == (
        200,
        {
            "mode": "zero",
            "permissions": ["charge_allowed", "discharge_allowed"],
            "battery_count": 0,
            "power_w": 0,
            "target_power_w": 0,
            "max_consumption_w": 0,
            "max_production_w": 0,
        },
    )
    status, state = client.json("PUT", "/api/batteries", {"mode": "standby"}, AUTH)
    assert (status, state["mode"], state["permissions"]) == (200, "standby", [])
    state = client.json(
        "PUT", "/api/batteries", {"mode": "zero", "permissions": []}, AUTH
    )[1]
    assert state["mode"] == "standby"  # zero without permissions is standby
    state = client.json(
        "PUT",
        "/api/batteries",
        {"mode": "zero", "permissions": ["charge_allowed"]},
        AUTH,
    )[1]
    assert (state["mode"], state["permissions"]) == ("zero", ["charge_allowed"])
    assert client.json("PUT", "/api/batteries", {"mode": "predictive"}, AUTH)[0] == 400
    assert TLSClient(start("HWE-BAT"))("GET", "/api/batteries", headers=AUTH)[0] == 404


def test_pairing_needs_the_button(start: Start) -> None:
    device = start(token=None)
    client = TLSClient(device)
    assert client.json("GET", "/api")[0] == 401
    assert client.json("POST", "/api/user", {"name": "local/hwpc"}) == (
        403,
        {"error": "user:creation-not-enabled"},
    )
    assert client.json("POST", "/_sim/button") == (200, {"pairing_window_s": 30.0})
    status, created = client.json("POST", "/api/user", {"name": "local/hwpc"})
    assert status == 200 and created["name"] == "local/hwpc"
    token = created["token"]
    assert len(token) == 32 and token == token.upper() and int(token, 16) >= 0
    assert (
        client.json("GET", "/api", headers={"Authorization": f"Bearer {token}"})[0]
        == 200
    )
    renewed = client.json("POST", "/api/user", {"name": "local/hwpc"})[1]["token"]
    assert renewed != token  # the same name again: a new token, and the old one is dead
    assert (
        client.json("GET", "/api", headers={"Authorization": f"Bearer {token}"})[0]
        == 401
    )
    assert (
        client.json("GET", "/api", headers={"Authorization": f"Bearer {renewed}"})[0]
        == 200
    )


def test_pairing_window_closes(start: Start) -> None:
    device = start(token=None)
    client = TLSClient(device)
    device.press_button(window_s=0.3)
    deadline = time.monotonic() + 10
    while client.json("POST", "/api/user", {"name": "local/late"})[0] == 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.json("POST", "/api/user", {"name": "local/late"})[0] == 403


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"name": "remote/x"}, "user:invalid-prefix"),
        ({"name": "local/"}, "user:name-empty"),
        ({"name": "local/" + "x" * 41}, "user:name-too-long"),
        ({"name": "local/bad!name"}, "user:name-invalid"),
        ({"name": 12}, "json:parameter-invalid-type:name"),
        ({}, "json:parameter-missing:name"),
        ([], "request:invalid-json"),
    ],
)
def test_user_names_are_validated(start: Start, body: Any, error: str) -> None:
    device = start(token=None)
    device.press_button()
    assert TLSClient(device).json("POST", "/api/user", body) == (400, {"error": error})


def test_home_assistant_style_name_is_accepted(start: Start) -> None:
    device = start(token=None)
    device.press_button()
    assert (
        TLSClient(device).json(
            "POST", "/api/user", {"name": "local/home-assistant#a1B2c3"}
        )[0]
        == 200
    )


def test_users_can_be_listed_and_deleted(start: Start) -> None:
    device = start()
    client = TLSClient(device)
    device.press_button()
    other = client.json("POST", "/api/user", {"name": "local/other"})[1]["token"]
    assert client.json("GET", "/api/user", headers=AUTH) == (
        200,
        [{"name": "local/hwpc-simulator", "current": True}, {"name": "local/other"}],
    )
    assert client.json("DELETE", "/api/user", {"name": "local/nobody"}, AUTH) == (
        404,
        {"error": "user:not-found"},
    )
    assert client("DELETE", "/api/user", {"name": "local/other"}, AUTH)[0] == 204
    assert (
        client.json("GET", "/api", headers={"Authorization": f"Bearer {other}"})[0]
        == 401
    )
    assert (
        client("DELETE", "/api/user", {"name": "local/hwpc-simulator"}, AUTH)[0] == 204
    )
    assert (
        client.json("GET", "/api", headers=AUTH)[0] == 401
    )  # deleting yourself loses access


def test_faults(start: Start) -> None:
    device = start(fault="disabled")
    client = TLSClient(device)
    assert client.json("GET", "/api/measurement", headers=AUTH) == (
        403,
        {"error": "request:api-disabled"},
    )
    client.json("POST", "/_sim/fault", {"fault": "garbage"})
    status, _, body = client("GET", "/api/measurement", headers=AUTH)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    client.json("POST", "/_sim/fault", {"fault": "nulls"})
    text = client("GET", "/api/measurement", headers=AUTH)[2].decode()
    assert '"power_l2_w":null' in text and '"protocol_version":50.000' in text
    client.json("POST", "/_sim/fault", {"fault": "flaky"})
    outcomes = []
    for _ in range(40):
        fresh = TLSClient(device)
        try:
            outcomes.append(fresh("GET", "/api/measurement", headers=AUTH)[0])
        except (http.client.RemoteDisconnected, ConnectionResetError, ssl.SSLError):
            outcomes.append(0)
        finally:
            fresh.close()
    assert {0, 200, 500} == set(outcomes)


def test_a_new_serial_brings_a_new_certificate(start: Start) -> None:
    device = start()
    client = TLSClient(device)
    assert client.json("POST", "/_sim/serial", {"serial": "5c2faf000001"}) == (
        200,
        {"serial": "5c2faf000001"},
    )
    with pytest.raises(ssl.SSLCertVerificationError):  # the old name no longer verifies
        TLSClient(device, name="appliance/p1dongle/5c2fafaabbcc")(
            "GET", "/api", headers=AUTH
        )
    fresh = TLSClient(device)
    assert fresh.name == "appliance/p1dongle/5c2faf000001"
    assert fresh.json("GET", "/api", headers=AUTH)[1]["serial"] == "5c2faf000001"
