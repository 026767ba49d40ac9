"""The collector's polling loop against simulators: one thread, many devices, each on its own.

The collector runs in-process (``Collector.run`` on a thread, ``stop`` to end it) with a short
interval; every wait is a deadline on an observable condition, never a fixed sleep.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from hw_picollector.collect import Collector
from hw_picollector.config import Config, DeviceConfig
from hw_picollector.devices.transport import Connection
from hw_picollector_simulator.server import SimulatedDevice, flaky_fails
from tests.conftest import free_port

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
INTERVAL = 0.2


def device(sim: SimulatedDevice, tmp: Path, *, address: str | None = None,
           serial: str | None = None) -> DeviceConfig:
    token_file = None
    if sim.api == "v2":
        path = tmp / f"token-{sim.serial}"
        path.write_text(TOKEN + "\n")
        token_file = str(path)
    return DeviceConfig(serial=serial or sim.serial, product_type=sim.product_type,
                        role="grid", api=sim.api,
                        address=address or f"127.0.0.1:{sim.port}", token_file=token_file,
                        ca_file=str(sim.ca_file) if sim.ca_file else None)


@contextmanager
def collecting(tmp: Path, devices: list[DeviceConfig],
               timeout_s: float = 0.5) -> Iterator[Collector]:
    config = Config(path=str(tmp / "config.yml"), site_id="TEST01", data_dir=tmp / "data",
                    devices=tuple(devices), poll_interval_s=INTERVAL, flush_interval_s=0.3,
                    request_timeout_s=timeout_s, clock_sync="trust", mdns=False)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    collector = Collector(config)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(collector.run()), daemon=True)
    thread.start()
    try:
        until(lambda: len(collector.pollers) == len(devices))
        yield collector
    finally:
        stopped = time.monotonic()
        collector.stop()
        thread.join(10)
        assert not thread.is_alive(), "the collector did not stop"
        assert time.monotonic() - stopped < timeout_s + 3
        assert result == [0]


def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def state(collector: Collector, serial: str) -> dict[str, object]:
    return dict(vars(next(p.state for p in collector.pollers if p.dev.serial == serial)))


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


def test_slow_and_dead_devices_delay_no_other(tmp_path: Path, tls_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead_port = closed.getsockname()[1]
    with SimulatedDevice("HWE-P1", "v1", port=free_port()) as p1, \
            SimulatedDevice("HWE-KWH1", "v1", port=free_port()) as kwh, \
            SimulatedDevice("HWE-KWH3", "v2", port=free_port(), tls_dir=tls_dir,
                            token=TOKEN) as v2, \
            SimulatedDevice("HWE-SKT", "v1", port=free_port(), fault="slow") as slow:
        dead = DeviceConfig(serial="3c39e7dead00", product_type="HWE-SKT", role="consumption",
                            address=f"127.0.0.1:{dead_port}")
        good = [p1, kwh, v2]
        with collecting(tmp_path, [*(device(s, tmp_path) for s in good),
                                   device(slow, tmp_path), dead]) as collector:
            started = time.monotonic()
            until(lambda: all(state(collector, s.serial)["samples"] >= 15 for s in good))
            elapsed = time.monotonic() - started
            slow_state, dead_state = state(collector, slow.serial), state(collector, dead.serial)
            assert slow_state["state"] == "timeout" and slow_state["samples"] == 0
            assert dead_state["state"] == "unreachable"
            assert "Connection refused" in str(dead_state["last_error"])
            assert f"127.0.0.1:{dead_port}" in str(dead_state["last_error"])
        # 15 ticks of 0.2 s, with the slow (0.5 s timeouts) and the dead device polled too
        assert elapsed < 15 * INTERVAL + 3
        for sim in good:
            st = state(collector, sim.serial)
            assert st["state"] == "ok" and int(str(st["skipped_ticks"])) <= 2, st
        # backing off: far fewer attempts than ticks
        assert dead_state["failures"] < elapsed / INTERVAL / 2
    rows = {s.serial: len(list((tmp_path / "data" / "measurements" / s.serial).glob("*.csv")))
            for s in good}
    assert all(rows.values()), rows


def test_faults_come_and_go(tmp_path: Path) -> None:
    # The flaky fault's failures follow a fixed sequence per serial: this one never fails
    # twice in a row in its first 40 data requests, so no back-off stretches the test.
    assert max(len(run) for run in flaky_sequence("5c2faf0f1a01", 40).split(".")) == 1
    with SimulatedDevice("HWE-P1", "v1", "5c2faf0f1a01", port=free_port()) as sim, \
            SimulatedDevice("HWE-KWH1", "v1", port=free_port()) as other:
        # configured with a serial that is not the one answering at its address
        impostor = device(other, tmp_path, serial="3c39e7999999")
        with collecting(tmp_path, [device(sim, tmp_path), device(other, tmp_path),
                                   impostor]) as collector:
            until(lambda: state(collector, sim.serial)["state"] == "ok")
            for fault, expected in (("disabled", "api_disabled"),
                                    ("garbage", "invalid_response")):
                sim.set_fault(fault)
                until(lambda e=expected: state(collector, sim.serial)["state"] == e)
                sim.set_fault("none")
                until(lambda: state(collector, sim.serial)["state"] == "ok")
            sim.set_fault("flaky")  # errors and closed connections, recovering each time
            before = int(str(state(collector, sim.serial)["samples"]))
            until(lambda: int(str(state(collector, sim.serial)["samples"])) >= before + 10
                  and int(str(state(collector, sim.serial)["failures"])) >= 3)
            sim.set_fault("none")
            wrong = state(collector, impostor.serial)
            assert wrong["state"] == "serial_mismatch" and wrong["samples"] == 0
            assert other.serial in str(wrong["last_error"])
            assert state(collector, other.serial)["state"] == "ok"
    assert not list((tmp_path / "data" / "measurements" / impostor.serial).glob("*.csv"))


def flaky_sequence(serial: str, n: int) -> str:
    """The simulator's flaky outcomes for a serial's first n data requests: x fails, . answers."""
    return "".join("x" if flaky_fails(serial, i) else "." for i in range(n))


def test_a_host_name_address(tmp_path: Path) -> None:
    with SimulatedDevice("HWE-KWH1", "v1", port=free_port()) as sim, \
            collecting(tmp_path, [device(sim, tmp_path, address=f"localhost:{sim.port}")]) \
            as collector:
        until(lambda: state(collector, sim.serial)["samples"] >= 3)


def test_another_meter_at_the_address_is_caught_on_the_next_poll(tmp_path: Path) -> None:
    with SimulatedDevice("HWE-P1", "v1", port=free_port()) as sim:
        serial = sim.serial
        with collecting(tmp_path, [device(sim, tmp_path)]) as collector:
            until(lambda: state(collector, serial)["samples"] >= 3)
            # Another meter at this address between two polls, without a moment of refused
            # connections: the simulator becomes it and hangs up every open connection, as
            # the departing meter does.
            with Connection(f"127.0.0.1:{sim.port}") as control:
                answer = control.request("POST", "/_sim/serial", serial, 10,
                                         body=json.dumps({"serial": "5c2faf00beef"}).encode())
            assert answer.json() == {"serial": "5c2faf00beef"}
            swapped_ms = time.time_ns() // 1_000_000
            until(lambda: state(collector, serial)["state"] == "serial_mismatch")
            assert "5c2faf00beef" in str(state(collector, serial)["last_error"])
            # caught on the first poll after the swap (or the next, had one been in flight)
            assert int(str(state(collector, serial)["failures"])) <= 2
            until(lambda: int(str(state(collector, serial)["failures"])) > 1)
    # Every row stored under the meter's serial was stamped before the swap.
    stamps = [line.split(",", 1)[0] for f in (tmp_path / "data" / "measurements" /
                                               serial).glob("*.csv")
              for line in f.read_text().splitlines()[1:]]
    assert len(stamps) >= 3
    newest = max(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z") for ts in stamps)
    assert newest.timestamp() * 1000 <= swapped_ms, f"a row from the other meter: {newest}"
