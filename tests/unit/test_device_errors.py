"""What a device can put into an error message: bounded, one line, no control characters; and
JSON it can nest without end is a device error like any other."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import pytest

from hw_picollector.config import DeviceConfig
from hw_picollector.devices.client import DeviceClient, error_code, parse_info
from hw_picollector.devices.errors import (
    MAX_DETAIL_CHARS,
    DeviceError,
    InvalidResponse,
    SerialMismatch,
)
from hw_picollector.devices.transport import Response
from hw_picollector_simulator.server import JUNK_ERROR, SimulatedDevice

JUNK = "\x1b[2J\x1b[31mred\x07\r\nX-Injected: yes\x00\u202egnp.exe\x9b\u2028next\ufeff"


def clean(text: str) -> bool:
    return not any(unicodedata.category(c).startswith("C") or c in "\u2028\u2029" for c in text)


def test_detail_is_one_clean_bounded_line() -> None:
    err = InvalidResponse("3c39e7aabbcc", "http://192.168.1.59/api/v1/data",
                          f"HTTP 500 ({JUNK}{'A' * 100_000})")
    assert clean(str(err)) and clean(err.detail)
    assert len(err.detail) <= MAX_DETAIL_CHARS == 300
    assert err.detail.endswith("…")
    assert str(err).startswith("3c39e7aabbcc at http://192.168.1.59/api/v1/data: HTTP 500 (")
    assert "X-Injected: yes" in err.detail and "red" in err.detail  # the readable part stays
    short = DeviceError("s", "u", "cannot connect:\tConnection  refused\n")
    assert short.detail == "cannot connect: Connection refused"  # as before


def test_a_serial_mismatch_names_what_the_device_said_cleanly() -> None:
    info = parse_info({"serial": "\x1b]0;owned\x07" + "f" * 5000,
                       "product_type": "HWE-P1\x1b[5m", "firmware_version": "\x00" * 9})
    assert info is not None
    err = SerialMismatch("3c39e7aabbcc", "http://x/api", info.serial, info.product_type)
    assert clean(str(err)) and len(err.detail) <= MAX_DETAIL_CHARS
    assert clean(info.serial + info.product_type + info.firmware_version)
    assert len(info.serial) <= 64


def test_an_error_body_gives_text_and_numbers_only() -> None:
    def code(body: bytes) -> str | None:
        return error_code(Response(500, body, "http://x/api/v1/data"))

    assert code(b'{"error":{"id":202,"description":"API not enabled"}}') == "202 API not enabled"
    assert code(b'{"error":"user:unauthorized"}') == "user:unauthorized"
    nested = b"[" * 500 + b"]" * 500
    assert code(b'{"error":{"id":' + nested + b',"description":{"a":' + nested + b"}}}") is None
    assert code(b'{"error":{"id":true,"description":"x"}}') == "x"


def test_deeply_nested_json_is_not_json() -> None:
    resp = Response(200, b"[" * 100_000 + b"]" * 100_000, "http://x/api/v1/data")
    with pytest.raises(ValueError, match="nested too deeply"):
        resp.json()


@pytest.fixture
def sim() -> Iterator[SimulatedDevice]:
    with SimulatedDevice("HWE-P1", "v1") as device:
        yield device


def client(sim: SimulatedDevice) -> DeviceClient:
    return DeviceClient(DeviceConfig(serial=sim.serial, product_type="HWE-P1", role="grid",
                                     address=f"127.0.0.1:{sim.port}"), timeout_s=5)


def test_a_device_with_deep_json(sim: SimulatedDevice) -> None:
    sim.set_fault("deep-json")
    with client(sim) as dev, pytest.raises(InvalidResponse, match="nested too deeply") as err:
        dev.measure()
    assert err.value.state == "invalid_response"


def test_a_device_with_a_junk_error(sim: SimulatedDevice) -> None:
    sim.set_fault("junk-error")
    with client(sim) as dev, pytest.raises(InvalidResponse) as err:
        dev.measure()
    assert err.value.state == "http_500"
    assert clean(str(err.value)) and len(err.value.detail) <= MAX_DETAIL_CHARS
    assert err.value.detail.startswith("HTTP 500 (901 ")
    assert len(JUNK_ERROR) > 100_000
