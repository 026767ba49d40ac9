"""End-to-end smoke check of a running harness node (run after `cassandra.sh up`).

    .venv/bin/python tests/harness/cassandra/smoke.py [--ca build/cassandra/conf/node.pem] [--port 9042]

Checks: plaintext login; TLS login with ssl.SSLContext(PROTOCOL_TLS_CLIENT) + node.pem (hostname
checked against the certificate's IP SAN), and that the server reports the session as TLS;
the negative TLS cases (untrusted CA, wrong hostname) fail; CREATE KEYSPACE / TABLE / ROLE /
GRANT work with CassandraAuthorizer and are enforced; a wrong password raises
AuthenticationFailed (wrapped in NoHostAvailable).  Leaves keyspace hwpc_smoke and role
hwpc_smoke_app dropped.  Prints one line per check and 'N passed, N failed'.
"""
import argparse
import logging
import os
import ssl
import sys
import time

from cassandra import AuthenticationFailed, Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
STATE = os.environ.get("HWPC_CASSANDRA_DIR", os.path.join(REPO, "build", "cassandra"))

results = []


def check(name, fn):
    t = time.monotonic()
    try:
        detail = fn()
        results.append(True)
        print(f"PASS {name} ({time.monotonic() - t:.2f}s){': ' + str(detail) if detail else ''}")
    except Exception as e:  # report and go on
        results.append(False)
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def cluster(args, user="cassandra", password="cassandra", ssl_context=None, ssl_options=None,
            host="127.0.0.1"):
    prof = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc="datacenter1")),
        request_timeout=20.0)
    return Cluster([host], port=args.port, execution_profiles={EXEC_PROFILE_DEFAULT: prof},
                   auth_provider=PlainTextAuthProvider(username=user, password=password),
                   ssl_context=ssl_context, ssl_options=ssl_options, connect_timeout=10,
                   protocol_version=5)  # 5.0 speaks v5; avoids the 66->65->5 downgrade warnings


def tls_context(ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode=CERT_REQUIRED, check_hostname=True
    ctx.load_verify_locations(ca)
    return ctx


def my_connection_tls(session):
    """What the server says about this session's connections (system_views.clients)."""
    rows = session.execute("SELECT ssl_enabled, ssl_protocol, username FROM system_views.clients")
    return sorted({(r.ssl_enabled, r.ssl_protocol) for r in rows if r.username == "cassandra"},
                  key=str)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=int(os.environ.get("HWPC_CASSANDRA_PORT", "9042")))
    ap.add_argument("--ca", default=os.path.join(STATE, "conf", "node.pem"))
    ap.add_argument("-v", action="store_true", help="show driver warnings")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.v else logging.ERROR)

    def plaintext():
        c = cluster(args)
        try:
            s = c.connect()
            v = s.execute("SELECT release_version FROM system.local").one().release_version
            return f"release {v}, protocol v{c.protocol_version}"
        finally:
            c.shutdown()

    def tls(ssl_options=None, host="127.0.0.1"):
        c = cluster(args, ssl_context=tls_context(args.ca), ssl_options=ssl_options, host=host)
        try:
            s = c.connect()
            seen = my_connection_tls(s)
            assert any(e for e, _ in seen), f"server does not see TLS: {seen}"
            return f"server sees {seen}"
        finally:
            c.shutdown()

    def tls_must_fail(ctx, ssl_options=None):
        c = cluster(args, ssl_context=ctx, ssl_options=ssl_options)
        try:
            c.connect()
        except NoHostAvailable as e:
            err = next(iter(e.errors.values()))
            return f"refused as expected: {type(err).__name__}: {str(err)[:110]}"
        finally:
            c.shutdown()
        raise AssertionError("connected although it should not have")

    def untrusted_ca():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_default_certs()  # system CAs only: the self-signed node cert is not among them
        return tls_must_fail(ctx)

    def wrong_hostname():
        return tls_must_fail(tls_context(args.ca), ssl_options={"server_hostname": "db.example.org"})

    def auth_flow():
        c = cluster(args)
        try:
            s = c.connect()
            s.execute("DROP KEYSPACE IF EXISTS hwpc_smoke")
            s.execute("DROP ROLE IF EXISTS hwpc_smoke_app")
            s.execute("CREATE KEYSPACE hwpc_smoke WITH replication = "
                      "{'class':'NetworkTopologyStrategy','datacenter1':1}")
            s.execute("CREATE TABLE hwpc_smoke.t (k text PRIMARY KEY, v int)")
            t = time.monotonic()
            s.execute("CREATE ROLE hwpc_smoke_app WITH PASSWORD = 's3cret' AND LOGIN = true")
            create_role = time.monotonic() - t
            s.execute("GRANT MODIFY ON KEYSPACE hwpc_smoke TO hwpc_smoke_app")
            s.execute("GRANT SELECT ON TABLE hwpc_smoke.t TO hwpc_smoke_app")
            perms = sorted(r.permission for r in s.execute("LIST ALL PERMISSIONS OF hwpc_smoke_app"))
        finally:
            c.shutdown()
        a = cluster(args, user="hwpc_smoke_app", password="s3cret")
        try:
            s = a.connect()
            s.execute("INSERT INTO hwpc_smoke.t (k, v) VALUES ('a', 1)")
            assert s.execute("SELECT v FROM hwpc_smoke.t WHERE k='a'").one().v == 1
            try:
                s.execute("SELECT * FROM system_auth.roles")
                raise AssertionError("app role could read system_auth.roles")
            except Unauthorized:
                pass
            try:
                s.execute("DROP TABLE hwpc_smoke.t")
                raise AssertionError("app role could DROP")
            except Unauthorized:
                pass
        finally:
            a.shutdown()
        c = cluster(args)
        try:
            s = c.connect()
            s.execute("DROP KEYSPACE hwpc_smoke")
            s.execute("DROP ROLE hwpc_smoke_app")
        finally:
            c.shutdown()
        return f"CREATE ROLE {create_role * 1000:.0f} ms; granted {perms}; Unauthorized enforced"

    def wrong_password():
        c = cluster(args, password="not-the-password")
        try:
            c.connect()
        except NoHostAvailable as e:
            errs = list(e.errors.values())
            assert errs and all(isinstance(x, AuthenticationFailed) for x in errs), errs
            return f"NoHostAvailable wrapping {type(errs[0]).__name__}"
        finally:
            c.shutdown()
        raise AssertionError("login with a wrong password succeeded")

    check("plaintext login", plaintext)
    check("TLS login (PROTOCOL_TLS_CLIENT, node.pem, check_hostname, driver sets server_hostname=127.0.0.1)", tls)
    check("TLS login with ssl_options={'server_hostname': '127.0.0.1'}",
          lambda: tls(ssl_options={"server_hostname": "127.0.0.1"}))
    check("TLS login via contact point 'localhost' (DNS SAN)", lambda: tls(host="localhost"))
    check("TLS refused with an untrusted CA", untrusted_ca)
    check("TLS refused for a hostname not in the cert", wrong_hostname)
    check("CREATE KEYSPACE/TABLE/ROLE + GRANT with CassandraAuthorizer", auth_flow)
    check("wrong password raises AuthenticationFailed", wrong_password)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
