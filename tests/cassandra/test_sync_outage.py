"""Cassandra stopped in the middle of a sync, then restarted: the store still lands exactly once.

Runs after the other Cassandra tests (file order): it stops and restarts the shared node.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.cassandra.conftest import ADMIN, HARNESS, HWPC, hwpc, make_config
from tests.cassandra.test_sync import (
    P1,
    PV,
    assert_exactly_once,
    checkpoints_of,
    history,
    synced_rows,
)
from tests.conftest import wait_for


def test_database_stopped_mid_sync(tmp_path: Path, admin: Any, keyspace: str) -> None:
    config = make_config(tmp_path, keyspace, [P1, PV])
    hwpc("db", "init", "--config", str(config))
    history(config, 2)
    data = tmp_path / "data"
    proc = subprocess.Popen([*HWPC, "sync", "--config", str(config), "--once", "--no-progress"],
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: checkpoints_of(data), 120, interval=0.05, what="a first checkpoint")
    # Frozen while the node goes down, so the stop lands in the middle of the sync whatever
    # this machine's speed: rows acknowledged, most of the backlog still to send.
    proc.send_signal(signal.SIGSTOP)
    acknowledged = synced_rows(data)
    assert 0 < acknowledged < 2 * 2 * 86400
    subprocess.run(["bash", str(HARNESS), "down"], check=True)
    proc.send_signal(signal.SIGCONT)
    try:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 1, err
        assert "nothing marked synced" in err
        assert "Traceback" not in err
        assert synced_rows(data) < 2 * 2 * 86400
    finally:
        subprocess.run(["bash", str(HARNESS), "up"], check=True)
    wait_for(lambda: hwpc("sync", "--config", str(config), "--once", "--no-progress",
                          check=False).returncode == 0, 120, interval=2,
             what="a sync after the restart")
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], auth_provider=PlainTextAuthProvider(*ADMIN),
                      protocol_version=5)  # a fresh session: the old one may still back off
    try:
        assert_exactly_once(cluster.connect(), keyspace, data)
    finally:
        cluster.shutdown()
