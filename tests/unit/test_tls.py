"""API v2 TLS (synthetic v1 CA + ``appliance/...`` leaf), and DeviceClient/pair over loopback.

Certificates are made with the ``openssl`` CLI the way the real CA was (``x509 -req -signkey``:
X.509 v1, no extensions). Every socket is on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hw_picollector.config import DeviceConfig
from hw_picollector.devices.client import IDENTITY_RECHECK_S, DeviceClient, backoff_s
from hw_picollector.devices.errors import (
    ApiDisabled,
    DeviceError,
    InvalidResponse,
    PairingRefused,
    PairingTimeout,
    SerialMismatch,
    TlsError,
    Unauthorized,
    Unreachable,
)
from hw_picollector.devices.pair import pair
from hw_picollector.devices.tls import (
    HOMEWIZARD_CA_PEM,
    cert_hostname,
    cert_id,
    client_context,
    parse_cert_hostname,
    peer_cert_hostname,
)

SERIAL = "5c2fafaabbcc"
OTHER = "5c2faf112233"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"
PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"


# --- a synthetic PKI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: str  # our CA (v1, like HomeWizard's)
    other_ca: str  # an unrelated CA
    leaf_cert: str  # CN=appliance/p1dongle/SERIAL, signed by ca
    leaf_key: str


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _key_and_csr(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-subj", "/CN=" + cn.replace("/", "\\/"),
             "-out", str(csr))
    return key, csr


def _self_signed_v1_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, csr = _key_and_csr(directory, name, f"{name} Appliance Access CA")
    cert = directory / f"{name}.pem"
    _openssl("x509", "-req", "-in", str(csr), "-signkey", str(key), "-days", "30",
             "-out", str(cert))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _self_signed_v1_ca(d, "test")
    other_ca, _ = _self_signed_v1_ca(d, "other")
    leaf_key, leaf_csr = _key_and_csr(d, "leaf", f"appliance/p1dongle/{SERIAL}")
    leaf = d / "leaf.pem"
    _openssl("x509", "-req", "-in", str(leaf_csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "30", "-out", str(leaf))
    text = subprocess.run(["openssl", "x509", "-in", str(ca), "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert "Version: 1 (0x0)" in text and "X509v3" not in text  # like the real CA
    return Pki(str(ca), str(other_ca), str(leaf), str(leaf_key))


def _server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.leaf_cert, pki.leaf_key)
    return ctx


@contextmanager
def tls_listener(pki: Pki) -> Iterator[int]:
    """Accepts TLS handshakes on 127.0.0.1 until the block ends; yields the port."""
    ctx = _server_context(pki)
    sock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hi")
                except OSError:
                    pass  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        sock.close()
        thread.join(5)


def handshake(port: int, ctx: ssl.SSLContext, hostname: str) -> bytes:
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname=hostname) as tls):
        return tls.recv(2)


# --- tls.py ------------------------------------------------------------------------------------


def test_shipped_ca_is_the_homewizard_appliance_access_ca() -> None:
    der = ssl.PEM_cert_to_DER_cert(HOMEWIZARD_CA_PEM)
    assert hashlib.sha256(der).hexdigest().upper() == (
        "4EC277E62033FAE8BC373E3F2A976676D3F665683873F1EA8E3BDF78AC680003")
    ctx = client_context()
    (ca,) = ctx.get_ca_certs()
    subject: Any = ca["subject"]
    assert ("commonName", "Appliance Access CA") in [rdn[0] for rdn in subject]


def test_cert_names() -> None:
    assert cert_hostname("HWE-P1", SERIAL) == "appliance/p1dongle/5c2fafaabbcc"
    assert cert_hostname("SDM630-wifi", "5C2FAFAABBCC") == "appliance/energymeter/5c2fafaabbcc"
    assert cert_hostname("HWE-BAT", SERIAL) == f"appliance/battery/{SERIAL}"
    assert {cert_id(t) for t in ("HWE-KWH1", "HWE-KWH3", "SDM230-wifi")} == {"energymeter"}
    assert (cert_id("HWE-SKT"), cert_id("HWE-WTR")) == ("energysocket", "watermeter")
    assert cert_hostname("HWE-DSP", SERIAL) == f"appliance/display/{SERIAL}"
    with pytest.raises(ValueError, match="HWE-NOPE"):
        cert_hostname("HWE-NOPE", SERIAL)
    assert parse_cert_hostname(f"appliance/p1dongle/{SERIAL.upper()}") == ("p1dongle", SERIAL)
    assert parse_cert_hostname("example.org") is None


def test_context_settings() -> None:
    ctx = client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname and ctx.hostname_checks_common_name
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not ctx.verify_flags & ssl.VERIFY_X509_STRICT


def test_accepts_the_right_name_from_our_ca(pki: Pki) -> None:
    with tls_listener(pki) as port:
        assert handshake(port, client_context(pki.ca), f"appliance/p1dongle/{SERIAL}") == b"hi"


@pytest.mark.parametrize("hostname", [
    f"appliance/p1dongle/{OTHER}", f"appliance/energymeter/{SERIAL}", "127.0.0.1", "localhost"])
def test_refuses_another_name(pki: Pki, hostname: str) -> None:
    with tls_listener(pki) as port, pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, client_context(pki.ca), hostname)


@pytest.mark.parametrize("which", ["other_ca", "homewizard_ca"])
def test_refuses_another_ca(pki: Pki, which: str) -> None:
    ca_file = pki.other_ca if which == "other_ca" else None
    with tls_listener(pki) as port, pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, client_context(ca_file), f"appliance/p1dongle/{SERIAL}")


def test_strict_mode_would_refuse_the_v1_ca(pki: Pki) -> None:
    """Why client_context() sets verify_flags explicitly (Python 3.13+ defaults to strict)."""
    ctx = client_context(pki.ca)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with tls_listener(pki) as port, pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, ctx, f"appliance/p1dongle/{SERIAL}")


def test_without_cn_checking_the_name_is_refused(pki: Pki) -> None:
    ctx = client_context(pki.ca)
    ctx.hostname_checks_common_name = False
    with tls_listener(pki) as port, pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, ctx, f"appliance/p1dongle/{SERIAL}")


def test_peer_cert_hostname(pki: Pki) -> None:
    with tls_listener(pki) as port:
        assert peer_cert_hostname("127.0.0.1", port, pki.ca, 5) == f"appliance/p1dongle/{SERIAL}"
        with pytest.raises(ssl.SSLCertVerificationError):
            peer_cert_hostname("127.0.0.1", port, pki.other_ca, 5)


# --- a scripted device on 127.0.0.1 ------------------------------------------------------------

Route = tuple[int, Any] | Callable[["Handler"], tuple[int, Any]]


class Device(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[tuple[str, str], Route] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        self.release = threading.Event()
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn = super().get_request()
        self.connections += 1
        return conn

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Tests hang up on purpose (timeouts, refused certificates): not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Device

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        route = self.server.routes.get((self.command, self.path), (404, b"404 Not Found"))
        status, body = route(self) if callable(route) else route
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running(device: Device) -> Iterator[Device]:
    thread = threading.Thread(target=device.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield device
    finally:
        device.release.set()
        device.shutdown()
        device.server_close()
        thread.join(5)


def fixture(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def v1_device() -> Device:
    dev = Device()
    dev.routes[("GET", "/api")] = (200, {**fixture("v1/api-HWE-P1"), "serial": SERIAL})
    dev.routes[("GET", "/api/v1/data")] = (200, fixture("v1/HWE-P1-real-2024"))
    return dev


def v2_device(pki: Pki) -> Device:
    dev = Device(_server_context(pki))

    def authorized(payload: Any) -> Route:
        def route(h: Handler) -> tuple[int, Any]:
            ok = h.headers.get("Authorization") == f"Bearer {TOKEN}"
            return (200, payload) if ok else (401, fixture("v2/user-unauthorized"))
        return route

    dev.routes[("GET", "/api")] = authorized(fixture("v2/api-HWE-P1"))
    dev.routes[("GET", "/api/measurement")] = authorized(fixture("v2/HWE-P1-3phase-gas-water"))
    return dev


def config(api: str, address: str | None, **kw: Any) -> DeviceConfig:
    return DeviceConfig(serial=kw.pop("serial", SERIAL), product_type="HWE-P1", role="grid",
                        api=api, address=address, **kw)


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


# --- DeviceClient over HTTPS (v2) --------------------------------------------------------------


def test_v2_measure_verifies_the_appliance_name(pki: Pki, token_file: str) -> None:
    with running(v2_device(pki)) as dev, DeviceClient(
            config("v2", dev.address, token_file=token_file, ca_file=pki.ca), 5) as client:
        assert client.url == f"https://{dev.address}"
        sample = client.measure()
        assert sample.values["power_w"] == -543.0 and sample.values["gas_m3"] == 2569.646
        client.measure()
        assert [path for _, path, _ in dev.seen] == ["/api", "/api/measurement",
                                                     "/api/measurement"]
        assert all(h["Authorization"] == f"Bearer {TOKEN}" and h["X-Api-Version"] == "2"
                   for _, _, h in dev.seen)
        assert dev.connections == 1  # one persistent connection


def test_v2_certificate_for_another_serial_is_a_tls_error(pki: Pki, token_file: str) -> None:
    # the configured serial differs from the certificate's: refused before any HTTP request
    with running(v2_device(pki)) as dev, DeviceClient(
            config("v2", dev.address, serial=OTHER, token_file=token_file, ca_file=pki.ca),
            5) as client:
        with pytest.raises(TlsError) as err:
            client.measure()
        assert err.value.state == "tls_error" and err.value.serial == OTHER
        assert "certificate verify failed" in str(err.value) and "\n" not in str(err.value)
        assert dev.seen == []


def test_v2_default_ca_refuses_a_foreign_certificate(pki: Pki, token_file: str) -> None:
    with running(v2_device(pki)) as dev, DeviceClient(
            config("v2", dev.address, token_file=token_file), 5) as client:
        with pytest.raises(TlsError):
            client.info()
        assert dev.seen == []


def test_v2_unusable_ca_file_is_a_tls_error(tmp_path: Path, token_file: str) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    for ca_file in (str(not_pem), str(tmp_path / "missing.pem")):
        with DeviceClient(config("v2", "127.0.0.1:1", token_file=token_file, ca_file=ca_file),
                          5) as client, pytest.raises(TlsError, match="cannot load CA file"):
            client.measure()


def test_v2_bad_or_missing_token(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
    with running(v2_device(pki)) as dev:
        with DeviceClient(config("v2", dev.address, token_file=str(bad), ca_file=pki.ca),
                          5) as client, pytest.raises(Unauthorized) as err:
            client.measure()
        assert err.value.state == "unauthorized" and "hwpc pair" in str(err.value)
        assert "FFFF" not in str(err.value)
        missing = str(tmp_path / "missing")
        with DeviceClient(config("v2", dev.address, token_file=missing, ca_file=pki.ca),
                          5) as client, pytest.raises(Unauthorized, match="missing"):
            client.measure()
        assert len(dev.seen) == 1  # the missing token never reached the network


# --- pairing -----------------------------------------------------------------------------------


def pairing_device(pki: Pki, refusals: int, final: tuple[int, Any]) -> Device:
    dev = Device(_server_context(pki))
    posts: list[int] = []

    def user(_: Handler) -> tuple[int, Any]:
        posts.append(1)
        return final if len(posts) > refusals else (403, fixture("v2/user-creation-not-enabled"))

    dev.routes[("POST", "/api/user")] = user
    return dev


def test_pair_polls_until_the_button_is_pressed(pki: Pki) -> None:
    with running(pairing_device(pki, 3, (200, fixture("v2/user-token")))) as dev:
        token = pair(dev.address, "HWE-P1", SERIAL, name="local/test", ca_file=pki.ca,
                     timeout_s=10, interval_s=0.01)
        assert token == TOKEN
        assert len(dev.seen) == 4
        assert all(method == "POST" for method, _, _ in dev.seen)


def test_pair_learns_the_serial_from_the_certificate(pki: Pki) -> None:
    with running(pairing_device(pki, 0, (200, fixture("v2/user-token")))) as dev:
        assert pair(dev.address, None, None, ca_file=pki.ca, timeout_s=10) == TOKEN
        with pytest.raises(TlsError, match="not a HWE-KWH3"):
            pair(dev.address, "HWE-KWH3", None, ca_file=pki.ca, timeout_s=10)


def test_pair_failures(pki: Pki) -> None:
    with running(pairing_device(pki, 1, (403, {"error": "user:no-storage"}))) as dev:
        with pytest.raises(PairingRefused) as refused:
            pair(dev.address, "HWE-P1", SERIAL, ca_file=pki.ca, interval_s=0.01)
        assert refused.value.state == "user_no_storage"
        assert "no free user slot" in str(refused.value)
    with running(pairing_device(pki, 10**6, (200, {}))) as dev:
        with pytest.raises(PairingTimeout) as late:
            pair(dev.address, "HWE-P1", SERIAL, ca_file=pki.ca, timeout_s=0.3, interval_s=0.05)
        assert late.value.state == "pair_timeout" and SERIAL in str(late.value)
    with (running(pairing_device(pki, 0, (200, {"token": "not-a-token"}))) as dev,
          pytest.raises(InvalidResponse)):
        pair(dev.address, "HWE-P1", SERIAL, ca_file=pki.ca)
    with running(pairing_device(pki, 0, (200, {}))) as dev, pytest.raises(TlsError):
        pair(dev.address, "HWE-P1", OTHER, ca_file=pki.ca)
    with pytest.raises(Unreachable):
        pair(f"127.0.0.1:{closed_port()}", "HWE-P1", SERIAL, timeout_s=5)
    with pytest.raises(ValueError, match="user name"):
        pair("127.0.0.1:1", "HWE-P1", SERIAL, name="hw-picollector")
    with pytest.raises(TlsError, match="cannot load CA file"):
        pair("127.0.0.1:1", "HWE-P1", SERIAL, ca_file=str(Path(pki.ca).with_name("none.pem")))


# --- DeviceClient over HTTP (v1): errors and the identity check --------------------------------


def test_v1_measure_and_identity_recheck() -> None:
    now = [1000.0]
    with running(v1_device()) as dev, DeviceClient(config("v1", dev.address), 5,
                                                   clock=lambda: now[0]) as client:
        assert client.url == f"http://{dev.address}"
        assert client.measure().values["power_w"] == 203.0
        client.measure()
        now[0] += IDENTITY_RECHECK_S
        client.measure()
        assert [p for _, p, _ in dev.seen] == ["/api", "/api/v1/data", "/api/v1/data",
                                               "/api", "/api/v1/data"]
        assert "Authorization" not in dev.seen[0][2]


def test_v1_serial_mismatch_returns_no_sample() -> None:
    dev = v1_device()
    dev.routes[("GET", "/api")] = (200, fixture("v1/api-HWE-P1"))  # serial 3c39e7aabbcc
    with running(dev), DeviceClient(config("v1", dev.address), 5) as client:
        with pytest.raises(SerialMismatch) as err:
            client.measure()
        assert err.value.state == "serial_mismatch" and err.value.actual == "3c39e7aabbcc"
        assert SERIAL in str(err.value) and dev.address in str(err.value)
        assert [p for _, p, _ in dev.seen] == ["/api"]


def test_v1_api_disabled() -> None:
    dev = v1_device()
    dev.routes[("GET", "/api/v1/data")] = (403, fixture("v1/error-api-disabled"))
    with running(dev), DeviceClient(config("v1", dev.address), 5) as client:
        with pytest.raises(ApiDisabled) as err:
            client.measure()
        assert err.value.state == "api_disabled"
        assert "Settings → Meters" in str(err.value) and "Local API" in str(err.value)
        # an error forgets the identity check: the next call asks /api again
        dev.routes[("GET", "/api/v1/data")] = (200, fixture("v1/HWE-P1-real-2024"))
        client.measure()
        assert [p for _, p, _ in dev.seen] == ["/api", "/api/v1/data", "/api", "/api/v1/data"]


@pytest.mark.parametrize(("route", "state"), [
    ((500, b"oops"), "http_500"),
    ((404, b"404 Not Found"), "http_404"),
    ((200, b"<html>garbage"), "invalid_response"),
    ((200, [1, 2, 3]), "invalid_response"),
])
def test_v1_invalid_responses(route: tuple[int, Any], state: str) -> None:
    dev = v1_device()
    dev.routes[("GET", "/api/v1/data")] = route
    with running(dev), DeviceClient(config("v1", dev.address), 5) as client:
        with pytest.raises(InvalidResponse) as err:
            client.measure()
        assert err.value.state == state
        assert err.value.url == f"http://{dev.address}/api/v1/data"


def test_unreachable_and_timeout() -> None:
    with DeviceClient(config("v1", f"127.0.0.1:{closed_port()}"), 5) as client:
        with pytest.raises(Unreachable) as err:
            client.measure()
        assert err.value.state == "unreachable" and "Connection refused" in str(err.value)
    def stall(h: Handler) -> tuple[int, Any]:
        h.server.release.wait(10)  # set when the device shuts down
        return 200, {}

    dev = v1_device()
    dev.routes[("GET", "/api")] = stall
    with running(dev), DeviceClient(config("v1", dev.address), 0.2) as client:
        with pytest.raises(Unreachable) as err:
            client.measure()
        assert err.value.state == "timeout"
    with DeviceClient(config("v1", None), 5) as client, pytest.raises(Unreachable):
        client.measure()


def test_set_address_retargets_and_rechecks() -> None:
    with running(v1_device()) as first, running(v1_device()) as second, DeviceClient(
            config("v1", first.address), 5) as client:
        client.measure()
        client.set_address(second.address)
        assert client.address == second.address
        client.measure()
        assert [p for _, p, _ in second.seen] == ["/api", "/api/v1/data"]


def test_errors_are_device_errors_with_one_line_messages() -> None:
    for cls in (Unreachable, ApiDisabled, Unauthorized, InvalidResponse, TlsError):
        err = cls(SERIAL, "http://x/api", "multi\nline")
        assert isinstance(err, DeviceError) and "\n" not in str(err)
        assert str(err).startswith(f"{SERIAL} at http://x/api: ")


def test_backoff() -> None:
    assert [backoff_s(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_s(10**6) == 30
