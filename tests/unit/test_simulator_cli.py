"""``hwpc simulate`` as the CLI drives it: add_arguments() and run()."""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

# isort: split
from hw_picollector_simulator import add_arguments, run
from hw_picollector_simulator.server import default_serial

LAUNCH = (
    "import argparse, sys\n"
    "from hw_picollector_simulator import add_arguments, run\n"
    "parser = argparse.ArgumentParser(prog='hwpc simulate')\n"
    "add_arguments(parser)\n"
    "sys.exit(run(parser.parse_args(sys.argv[1:])))\n"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hwpc simulate")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    args = parse("--type", "HWE-P1", "--port", "8080")
    assert (args.api, args.bind, args.fault, args.serial, args.tls_dir) == (
        "v1",
        "127.0.0.1",
        "none",
        None,
        None,
    )
    with pytest.raises(SystemExit):
        parse("--port", "8080")  # --type is required
    with pytest.raises(SystemExit):
        parse("--type", "HWE-P1", "--port", "1", "--fault", "melting")


def test_default_serial_is_stable_per_type_and_port() -> None:
    serial = default_serial("HWE-P1", 8080)
    assert re.fullmatch(r"[0-9a-f]{12}", serial)
    assert serial == default_serial("HWE-P1", 8080) != default_serial("HWE-P1", 8081)


def test_refuses_non_loopback_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--type", "HWE-P1", "--port", "0", "--bind", "192.0.2.10")) == 2
    assert "not a loopback address" in capsys.readouterr().err


def test_v2_needs_a_tls_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--type", "HWE-P1", "--api", "v2", "--port", "0")) == 2
    assert "tls_dir" in capsys.readouterr().err


def test_busy_port_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert run(parse("--type", "HWE-SKT", "--port", str(port))) == 1
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_serves_until_sigterm(tmp_path: Path, api: str) -> None:
    argv = ["--type", "HWE-P1", "--api", api, "--port", "0", "--serial", "3c39e7aabbcc"]
    if api == "v2":
        argv += ["--tls-dir", str(tmp_path), "--token", "ABC"]
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *argv], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stderr.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=30)
        assert lines, "no ready line within 30 s"
        ready = re.fullmatch(
            r"simulating HWE-P1 3c39e7aabbcc api (v\d) on (https?)://127\.0\.0\.1:(\d+)\n",
            lines[0],
        )
        assert ready is not None, lines[0]
        assert ready.group(1) == api and ready.group(2) == (
            "https" if api == "v2" else "http"
        )
        port = int(ready.group(3))
        if api == "v1":
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api", timeout=5
            ) as response:
                assert json.load(response)["serial"] == "3c39e7aabbcc"
        else:
            assert (tmp_path / "ca.pem").exists()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_cli_choices_are_the_models() -> None:
    """add_arguments takes the type and role choices from the catalog (cheap to import): every
    product type but the display, which has no measurements to simulate."""
    import hw_picollector_simulator as simulator
    from hw_picollector import catalog
    from hw_picollector_simulator import model

    assert simulator.product_types() == tuple(
        t for t in catalog.product_types() if t != "HWE-DSP")
    for product_type in simulator.product_types():
        assert model.DeviceModel("5c2fafaabbcc", product_type).role == \
            catalog.product(product_type).default_role
    with pytest.raises(ValueError, match="unknown product type 'HWE-DSP'"):
        model.DeviceModel("5c2fafaabbcc", "HWE-DSP")
    with pytest.raises(SystemExit):
        parse("--type", "HWE-DSP", "--port", "0")
    assert parse("--type", "HWE-BAT", "--port", "0", "--role", "battery").role == "battery"


def test_mdns_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--type", "HWE-P1", "--port", "0")
    assert (args.mdns, args.mdns_interface) == (False, "127.0.0.1")
    # never on a real network by accident (the end-to-end test is test_discover_netns)
    assert run(parse("--type", "HWE-P1", "--port", "0", "--mdns",
                     "--mdns-interface", "192.0.2.10")) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert run(parse("--type", "HWE-P1", "--port", "0", "--mdns", "--mdns-interface", "::1")) == 2
    assert "not an IPv4 address" in capsys.readouterr().err
