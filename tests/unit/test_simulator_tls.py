"""The simulator's CA and device certificates behave like HomeWizard's (v1 CA, CN hostname)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# isort: split
from hw_picollector_simulator import tls

SERIAL = "5c2fafaabbcc"


def openssl_text(pem: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(pem)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def p1_cert(tls_dir: Path) -> tuple[Path, Path]:
    return tls.device_cert(tls_dir, "HWE-P1", SERIAL)


def client_context(
    ca: Path, *, strict: bool = False, cn: bool = True
) -> ssl.SSLContext:
    """The official library's recipe: partial chain, CN hostname check, no strict mode."""
    context = ssl.create_default_context(cafile=str(ca))
    context.verify_flags = ssl.VERIFY_X509_PARTIAL_CHAIN | (
        ssl.VERIFY_X509_STRICT if strict else 0
    )
    context.hostname_checks_common_name = cn
    return context


@pytest.fixture
def tls_server(p1_cert: tuple[Path, Path]) -> Iterator[tuple[str, int]]:
    """A bare TLS listener presenting the P1 certificate; accepts any number of handshakes."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*p1_cert)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address = listener.getsockname()
    yield address
    stop.set()
    socket.create_connection(address).close()  # wake accept()
    thread.join(timeout=5)
    listener.close()


def handshake(
    address: tuple[str, int], context: ssl.SSLContext, name: str
) -> dict[str, object]:
    with (
        socket.create_connection(address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as conn,
    ):
        cert = conn.getpeercert()
        assert cert is not None
        return dict(cert)


def test_ca_is_a_self_signed_x509_v1_certificate_without_extensions(
    tls_dir: Path,
) -> None:
    ca = tls.ensure_ca(tls_dir)
    text = openssl_text(ca)
    assert "Version: 1 (0x0)" in text
    assert "X509v3" not in text
    assert "Appliance Access CA" in text
    assert (tls_dir / "ca.key").stat().st_mode & 0o777 == 0o600


def test_device_certificate_names_the_appliance(
    tls_dir: Path, p1_cert: tuple[Path, Path]
) -> None:
    cert, key = p1_cert
    assert cert.name == f"p1dongle-{SERIAL}.pem"
    assert f"Subject: CN = appliance/p1dongle/{SERIAL}" in openssl_text(cert)
    assert key.stat().st_mode & 0o777 == 0o600
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-partial_chain",
            "-CAfile",
            str(tls_dir / "ca.pem"),
            str(cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


def test_certificates_are_reused_until_the_ca_changes(tmp_path: Path) -> None:
    cert, _ = tls.device_cert(tmp_path, "HWE-KWH3", SERIAL)
    first = cert.read_bytes()
    assert tls.device_cert(tmp_path, "HWE-KWH3", SERIAL)[0].read_bytes() == first
    (tmp_path / "ca.pem").unlink()  # a new CA invalidates every device certificate
    new_cert, _ = tls.device_cert(tmp_path, "HWE-KWH3", SERIAL)
    assert new_cert.read_bytes() != first
    assert new_cert.name == f"energymeter-{SERIAL}.pem"


def test_concurrent_simulators_share_one_ca(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        cas = list(pool.map(lambda _: tls.ensure_ca(tmp_path).read_bytes(), range(4)))
    assert len(set(cas)) == 1
    leftovers = [
        p.name
        for p in tmp_path.iterdir()
        if p.name not in ("ca.pem", "ca.key", ".lock")
    ]
    assert leftovers == []


def test_python_ssl_verifies_with_the_library_recipe(
    tls_dir: Path, tls_server: tuple[str, int]
) -> None:
    cert = handshake(
        tls_server, client_context(tls_dir / "ca.pem"), f"appliance/p1dongle/{SERIAL}"
    )
    assert cert["subject"] == ((("commonName", f"appliance/p1dongle/{SERIAL}"),),)


@pytest.mark.parametrize(
    ("strict", "cn", "name"),
    [
        (
            True,
            True,
            f"appliance/p1dongle/{SERIAL}",
        ),  # strict mode (Python >= 3.13 default)
        (False, False, f"appliance/p1dongle/{SERIAL}"),  # no SAN, so the CN must count
        (False, True, "appliance/p1dongle/5c2fafaabbcd"),  # another device
        (False, True, "127.0.0.1"),  # the address is not the name
    ],
)
def test_verification_fails_like_for_real_devices(
    tls_dir: Path, tls_server: tuple[str, int], strict: bool, cn: bool, name: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(
            tls_server, client_context(tls_dir / "ca.pem", strict=strict, cn=cn), name
        )


def test_cert_ids() -> None:
    assert tls.hostname("HWE-P1", SERIAL) == f"appliance/p1dongle/{SERIAL}"
    ids = {
        t: tls.cert_id(t)
        for t in ("HWE-KWH1", "SDM630-wifi", "HWE-SKT", "HWE-WTR", "HWE-BAT")
    }
    assert ids == {
        "HWE-KWH1": "energymeter",
        "SDM630-wifi": "energymeter",
        "HWE-SKT": "energysocket",
        "HWE-WTR": "watermeter",
        "HWE-BAT": "battery",
    }
    with pytest.raises(ValueError, match="no certificate id"):
        tls.cert_id("HWE-XYZ")


def test_openssl_failures_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "openssl").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    (fake / "openssl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="openssl req failed: broken"):
        tls.ensure_ca(tmp_path / "tls")
