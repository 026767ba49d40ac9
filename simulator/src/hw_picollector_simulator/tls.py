"""Certificates for simulated API v2 devices, made with the ``openssl`` command.

The real devices present a certificate for ``CN=appliance/<cert-id>/<serial>`` signed by the
HomeWizard "Appliance Access CA", a self-signed X.509 **v1** certificate without extensions.
Its key is not public, so the simulator makes a CA of the same kind (``openssl x509 -req
-signkey`` gives v1) in ``<tls_dir>/ca.pem``; a collector under test trusts that file instead.
Several simulators may share one directory and start at once: creation happens under an
exclusive lock, in a temporary directory, and lands by atomic rename.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hw_picollector import catalog, files

CA_SUBJECT = "/C=NL/ST=ZH/O=hw-picollector simulator/CN=Appliance Access CA (simulated)"
DAYS = "3650"


def cert_id(product_type: str) -> str:
    """The legacy name in the certificate (the catalog's): ``HWE-P1`` -> ``p1dongle``."""
    product = catalog.get(product_type)
    if product is None:
        raise ValueError(f"no certificate id known for product type {product_type!r}")
    return product.cert_id


def hostname(product_type: str, serial: str) -> str:
    """The name a client verifies: ``appliance/p1dongle/5c2fafaabbcc``."""
    return f"appliance/{cert_id(product_type)}/{serial}"


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


@contextmanager
def _locked(tls_dir: Path) -> Iterator[None]:
    with open(tls_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _new_key_and_csr(tmp: Path, subject: str) -> tuple[Path, Path]:
    key, csr = tmp / "key.pem", tmp / "req.csr"
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-subj", subject, "-out", csr)  # fmt: skip
    os.chmod(key, 0o600)
    return key, csr


def _land(made: Path, target: Path, *, mode: int | None = None) -> None:
    """Put what openssl wrote to ``made`` in ``target``'s place, atomically."""
    # durable=False as before: the simulator's test material, not data worth a disk sync
    files.replace_atomically(target, made.read_bytes(), durable=False, mode=mode)


def ensure_ca(tls_dir: Path) -> Path:
    """``<tls_dir>/ca.pem`` (key in ``ca.key``, mode 0600), created unless it exists."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    with _locked(tls_dir):
        if ca_pem.exists() and ca_key.exists():
            return ca_pem
        with tempfile.TemporaryDirectory(dir=tls_dir) as tmp_dir:
            tmp = Path(tmp_dir)
            key, csr = _new_key_and_csr(tmp, CA_SUBJECT)
            cert = tmp / "cert.pem"
            _openssl(
                "x509", "-req", "-in", csr, "-signkey", key, "-days", DAYS, "-sha256", "-out", cert
            )
            _land(key, ca_key, mode=0o600)
            _land(cert, ca_pem)  # last: a ca.pem means a complete pair
    return ca_pem


def device_cert(tls_dir: Path, product_type: str, serial: str) -> tuple[Path, Path]:
    """(certificate, key) for the device, signed by the directory's CA; reused when current."""
    ca_pem = ensure_ca(tls_dir)
    stem = f"{cert_id(product_type)}-{serial}"
    cert, key = tls_dir / f"{stem}.pem", tls_dir / f"{stem}.key"
    with _locked(tls_dir):
        if cert.exists() and key.exists() and cert.stat().st_mtime >= ca_pem.stat().st_mtime:
            return cert, key
        with tempfile.TemporaryDirectory(dir=tls_dir) as tmp_dir:
            tmp = Path(tmp_dir)
            new_key, csr = _new_key_and_csr(
                tmp, "/CN=" + hostname(product_type, serial).replace("/", "\\/")
            )
            new_cert = tmp / "cert.pem"
            _openssl(
                "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", tls_dir / "ca.key",
                "-set_serial", f"0x{secrets.token_hex(8)}", "-days", DAYS, "-sha256",
                "-out", new_cert,
            )  # fmt: skip
            _land(new_key, key, mode=0o600)
            _land(new_cert, cert)
    return cert, key
