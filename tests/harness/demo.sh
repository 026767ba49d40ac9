#!/usr/bin/env bash
# `make demo`: one simulated site on this machine: meters (a P1 on API v1, a PV kWh meter on
# API v2 with a token), `hwpc collect`, a local Cassandra node, `hwpc sync`, `hwpc status`.
# `make demo-down` (this script with `down`) stops everything it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=$ROOT/build/demo
HWPC="$ROOT/.venv/bin/hwpc"
CASSANDRA="$ROOT/tests/harness/cassandra/cassandra.sh"

stop_pids() {
  for pidfile in "$STATE"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = down ]; then
  stop_pids
  bash "$CASSANDRA" down
  echo "demo stopped"
  exit 0
fi

t0=$(date +%s)
stop_pids
rm -rf "$STATE"
mkdir -p "$STATE/tls" "$STATE/secrets"
chmod 700 "$STATE/secrets"
token=$(openssl rand -hex 16 | tr a-f A-F)
printf '%s\n' "$token" > "$STATE/secrets/token-5c2fafdd0002"
printf '{"username": "cassandra", "password": "cassandra"}\n' > "$STATE/secrets/cassandra"
chmod 600 "$STATE/secrets/"*

start() {  # name, command...
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! > "$STATE/$name.pid"
}
start sim-p1 "$HWPC" simulate --type HWE-P1 --api v1 --port 18201 --serial 3c39e7dd0001
start sim-pv "$HWPC" simulate --type HWE-KWH3 --api v2 --port 18202 --serial 5c2fafdd0002 \
  --tls-dir "$STATE/tls" --token "$token" --role production
bash "$CASSANDRA" up
cat > "$STATE/config.yml" <<YAML
site_id: DEMO01
data_dir: $STATE/data
clock_sync: trust
mdns: false
devices:
  - {serial: 3c39e7dd0001, product_type: HWE-P1, role: grid, address: "127.0.0.1:18201", api: v1}
  - serial: 5c2fafdd0002
    product_type: HWE-KWH3
    role: production
    address: "127.0.0.1:18202"
    api: v2
    token_file: $STATE/secrets/token-5c2fafdd0002
    ca_file: $STATE/tls/ca.pem
cassandra:
  hosts: [127.0.0.1]
  keyspace: demo
  consistency: ONE
  credentials_file: $STATE/secrets/cassandra
  tls: {ca_file: $ROOT/build/cassandra/conf/node.pem}
YAML
"$HWPC" db init --config "$STATE/config.yml"
"$HWPC" simulate-history --config "$STATE/config.yml" --days 1
start collect "$HWPC" collect --config "$STATE/config.yml"
echo "collecting for 20 s ..."
sleep 20
"$HWPC" sync --config "$STATE/config.yml" --once --progress
"$HWPC" status --config "$STATE/config.yml"
echo "demo ready in $(( $(date +%s) - t0 )) s; the collector keeps running (logs in $STATE)."
echo "stop everything with: make demo-down"
