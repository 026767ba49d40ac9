"""Readiness probe for the harness node: wait until a CQL login succeeds.

Usage: python cqlready.py --port 9042 --timeout 180 [--pid PID]
       [--user cassandra --password cassandra]
Exit 0 once `SELECT release_version FROM system.local` works as the given role; 1 on timeout,
2 if the JVM (--pid) died first.  Uses plaintext (the node accepts both, optional TLS).
"""
import argparse
import logging
import os
import socket
import sys
import time


def alive(pid):
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--user", default="cassandra")
    ap.add_argument("--password", default="cassandra")
    a = ap.parse_args()

    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    deadline = time.monotonic() + a.timeout
    last = "port closed"
    while time.monotonic() < deadline:
        if not alive(a.pid):
            print(f"cqlready: JVM pid {a.pid} exited", file=sys.stderr)
            return 2
        if not port_open(a.host, a.port):
            time.sleep(0.25)
            continue
        prof = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([a.host]),
                                request_timeout=10)
        cluster = Cluster([a.host], port=a.port, protocol_version=5,
                          auth_provider=PlainTextAuthProvider(a.user, a.password),
                          execution_profiles={EXEC_PROFILE_DEFAULT: prof},
                          connect_timeout=5, control_connection_timeout=5)
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local").one()
            print(f"cqlready: logged in as {a.user}, release_version {row.release_version}")
            return 0
        except Exception as e:  # AuthenticationFailed until the default role exists, ...
            last = f"{type(e).__name__}: {e}"
        finally:
            cluster.shutdown()
        time.sleep(0.5)
    print(f"cqlready: timed out after {a.timeout:.0f}s; last error: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
