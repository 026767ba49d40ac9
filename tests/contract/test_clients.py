"""The HomeWizard clients against the simulator over real HTTP and TLS."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hw_picollector.config import DeviceConfig
from hw_picollector.devices.canonical import columns
from hw_picollector.devices.client import (
    ApiDisabled,
    DeviceClient,
    InvalidResponse,
    SerialMismatch,
    TlsError,
    Unauthorized,
    Unreachable,
)
from hw_picollector.devices.pair import pair
from hw_picollector_simulator.server import SimulatedDevice
from tests.conftest import free_port

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
CASES = [("HWE-P1", "v1"), ("HWE-KWH1", "v1"), ("SDM230-wifi", "v1"), ("HWE-KWH3", "v1"),
         ("SDM630-wifi", "v1"), ("HWE-SKT", "v1"), ("HWE-WTR", "v1"),
         ("HWE-P1", "v2"), ("HWE-KWH1", "v2"), ("HWE-KWH3", "v2"), ("HWE-BAT", "v2")]


def device_config(sim: SimulatedDevice, tmp: Path, *, serial: str | None = None,
                  token: str = TOKEN, ca_file: str | None = None) -> DeviceConfig:
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    return DeviceConfig(serial=serial or sim.serial, product_type=sim.product_type,
                        role="grid", api=sim.api, address=f"127.0.0.1:{sim.port}",
                        token_file=str(token_file) if sim.api == "v2" else None,
                        ca_file=ca_file or (str(sim.ca_file) if sim.ca_file else None))


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.mark.parametrize(("product_type", "api"), CASES)
def test_every_type_and_api_gives_a_canonical_sample(tmp_path: Path, tls_dir: Path,
                                                     product_type: str, api: str) -> None:
    with SimulatedDevice(product_type, api, port=free_port(), tls_dir=tls_dir,
                         token=TOKEN) as sim:
        client = DeviceClient(device_config(sim, tmp_path), timeout_s=5)
        try:
            first = client.measure()
            second = client.measure()
        finally:
            client.close()
    allowed = set(columns(product_type))
    assert set(first.values) <= allowed
    assert not first.extra, f"unmapped fields: {first.extra}"
    key = "water_m3" if product_type == "HWE-WTR" else "power_w"
    assert isinstance(first.values[key], float)
    counter = "water_m3" if product_type == "HWE-WTR" else "energy_import_kwh"
    assert float(second.values[counter]) >= float(first.values[counter])


def test_v2_refuses_wrong_ca_wrong_hostname_and_missing_token(tmp_path: Path,
                                                              tls_dir: Path) -> None:
    other = tmp_path / "other-tls"
    with SimulatedDevice("HWE-P1", "v2", port=free_port(), tls_dir=tls_dir, token=TOKEN) as sim, \
            SimulatedDevice("HWE-P1", "v2", port=free_port(), tls_dir=other) as stranger:
        assert stranger.ca_file is not None
        wrong_ca = DeviceClient(device_config(sim, tmp_path, ca_file=str(stranger.ca_file)), 5)
        with pytest.raises(TlsError) as err:
            wrong_ca.measure()
        assert sim.serial in str(err.value) and "127.0.0.1" in str(err.value)
        # The certificate names another serial than the one configured: refused.
        wrong_name = DeviceClient(device_config(sim, tmp_path, serial="5c2faf000000"), 5)
        with pytest.raises(TlsError):
            wrong_name.measure()
        no_token = DeviceClient(device_config(sim, tmp_path, token="00" * 16), 5)
        with pytest.raises(Unauthorized) as unauth:
            no_token.measure()
        assert "hwpc pair" in str(unauth.value)
        assert TOKEN not in str(unauth.value)
        for c in (wrong_ca, wrong_name, no_token):
            c.close()


@pytest.mark.parametrize(("fault", "error", "state"), [
    ("disabled", ApiDisabled, "api_disabled"),
    ("garbage", InvalidResponse, "invalid_response"),
    ("slow", Unreachable, "timeout"),
])
def test_faults_map_to_distinct_states(tmp_path: Path, fault: str, error: type[Exception],
                                       state: str) -> None:
    with SimulatedDevice("HWE-P1", "v1", port=free_port()) as sim:
        client = DeviceClient(device_config(sim, tmp_path), timeout_s=1.0)
        client.measure()
        sim.set_fault(fault)
        with pytest.raises(error) as err:
            client.measure()
        assert getattr(err.value, "state", None) == state
        assert sim.serial in str(err.value) and f"127.0.0.1:{sim.port}" in str(err.value)
        if fault == "disabled":
            assert "Local API" in str(err.value)
        sim.set_fault("none")
        assert client.measure().values["power_w"] is not None  # recovers
        client.close()


def test_nulls_are_no_value_and_wrong_serial_records_nothing(tmp_path: Path) -> None:
    with SimulatedDevice("HWE-P1", "v1", port=free_port(), fault="nulls") as sim:
        client = DeviceClient(device_config(sim, tmp_path), timeout_s=2)
        sample = client.measure()
        assert all(v is not None for v in sample.values.values())
        assert "power_w" in sample.values
        # Another device answers at this address now (a DHCP shuffle): no sample from it.
        with SimulatedDevice("HWE-P1", "v1", port=free_port()) as other:
            moved = DeviceClient(device_config(other, tmp_path, serial=sim.serial), 2)
            with pytest.raises(SerialMismatch) as err:
                moved.measure()
            assert other.serial in str(err.value)
            moved.close()
        client.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_another_device_behind_a_reopened_connection_records_nothing(
        tmp_path: Path, tls_dir: Path, api: str) -> None:
    """The meter leaves, another one takes its address (a DHCP shuffle): the client notices on
    the very next poll, not at the periodic identity re-check minutes later."""
    port = free_port()
    with SimulatedDevice("HWE-P1", api, port=port, tls_dir=tls_dir, token=TOKEN) as sim:
        client = DeviceClient(device_config(sim, tmp_path), timeout_s=2)
        client.measure()
        serial = sim.serial
    # The connection it kept alive is closed by the departed device; the next request opens
    # a new one, and that is what the new device answers.
    with SimulatedDevice("HWE-P1", api, "5c2faf00beef", port=port, tls_dir=tls_dir,
                         token=TOKEN) as other:
        assert other.serial != serial
        error = TlsError if api == "v2" else SerialMismatch  # v2: the certificate names it
        for _ in range(3):
            with pytest.raises(error) as err:
                client.measure()
            assert other.serial in str(err.value) or api == "v2"
    client.close()


def test_pairing_waits_for_the_button(tmp_path: Path, tls_dir: Path) -> None:
    with SimulatedDevice("HWE-KWH3", "v2", port=free_port(), tls_dir=tls_dir) as sim:
        result: dict[str, str] = {}

        def run() -> None:
            result["token"] = pair(f"127.0.0.1:{sim.port}", sim.product_type, sim.serial,
                                   name="local/test", ca_file=str(sim.ca_file), timeout_s=20,
                                   interval_s=0.2)

        worker = threading.Thread(target=run)
        worker.start()
        while sim.stats()["requests"].get("/api/user", 0) < 2:  # refused while not pressed
            worker.join(0.05)
        assert "token" not in result
        sim.press_button()
        worker.join(20)
        token = result["token"]
        assert len(token) == 32
        client = DeviceClient(device_config(sim, tmp_path, token=token), 5)
        assert "power_w" in client.measure().values
        client.close()
