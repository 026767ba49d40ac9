#!/usr/bin/env bash
# `make demo`: a simulated fleet on this machine, deployed the way a real one is.
#   - a real Cassandra 5.0 node on 127.0.0.1:9042 (tests/harness/cassandra)
#   - three Raspberry-Pi-like hosts pi1..pi3: Debian bookworm booted with systemd under
#     systemd-nspawn, SSH at 127.0.1.1-3 (tests/harness/fleet)
#   - simulated meters on 127.0.0.1 for the example workbook's sites (a P1 at every site,
#     a PV kWh meter at two, one of them on API v2 with a token from the vault)
#   - inventories/demo imported from files/users_config.example.xlsx, secrets in an
#     ansible-vault file encrypted with a generated password (build/demo/vault-pass)
#   - site.yml, a wait until data reaches Cassandra, then check_freshness.yml
#
#   demo.sh [up]        all of the above (idempotent: what is already up is reused)
#   demo.sh freshness [ARGS]  check_freshness.yml against the demo fleet (ARGS go to
#                        ansible-playbook; `audit`, the old name, still works)
#   demo.sh deploy [ARGS] site.yml against the demo fleet
#   demo.sh down        stop everything it started, by PID, and leave nothing running
#
# Environment (the fleet tests use these for a fast cycle):
#   HWPC_DEMO_SYNC_INTERVAL   sync timer interval (default 30s)
#   HWPC_DEMO_WAIT            seconds to wait for data to reach Cassandra (default 300)
#   HWPC_DEMO_HOSTS           number of Pis, 3 to 50 (default 3): hosts beyond the workbook's
#                             three get a site DEMO<NN> with one P1 meter each (the benchmark
#                             of check_freshness.yml on 10 hosts uses this)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=$ROOT/build/demo
INV=$ROOT/inventories/demo
BIN=$ROOT/.venv/bin
HWPC=$BIN/hwpc
CASSANDRA=$ROOT/tests/harness/cassandra/cassandra.sh
FLEET=$ROOT/tests/harness/fleet/fleet.sh
FLEET_DIR=$ROOT/build/fleet
WORKBOOK=$ROOT/files/users_config.example.xlsx
VAULT_PASS=$STATE/vault-pass
SYNC_INTERVAL=${HWPC_DEMO_SYNC_INTERVAL:-30s}
WAIT=${HWPC_DEMO_WAIT:-300}
export PATH="$BIN:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg"

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

# The example workbook's meters: serial type api port role (see inventories/example/hosts.yml).
METERS="3c39e7a10001 HWE-P1 v1 18101 grid
3c39e7a10002 HWE-KWH1 v1 18102 production
3c39e7a20001 HWE-P1 v1 18103 grid
3c39e7a30001 HWE-P1 v1 18104 grid
5c2fafa30002 HWE-KWH3 v2 18105 production"
NHOSTS=${HWPC_DEMO_HOSTS:-3}
case "$NHOSTS" in ''|*[!0-9]*) die "HWPC_DEMO_HOSTS must be a number" ;; esac
[ "$NHOSTS" -ge 3 ] && [ "$NHOSTS" -le 50 ] || die "HWPC_DEMO_HOSTS must be 3 to 50"
HOSTS=$(seq -f 'pi%g' 1 "$NHOSTS" | tr '\n' ' ')
# Beyond the workbook: pi<N> measures site DEMO<NN> with a P1 meter at port 18100+N+2.
for n in $(seq 4 "$NHOSTS"); do
  METERS+=$(printf '\n3c39e7b%03d01 HWE-P1 v1 %d grid' "$n" $((18102 + n)))
done

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_simulators() {
  local pidfile pid
  for pidfile in "$STATE"/sim-*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if alive "$pid" && grep -q 'hwpc' "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.2; done
      alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

start_simulators() {
  local serial type api port role pid
  install -d -m 700 "$STATE/tls"
  while read -r serial type api port role; do
    pid=$(cat "$STATE/sim-$serial.pid" 2>/dev/null || true)
    if alive "$pid"; then continue; fi
    local args=(simulate --type "$type" --api "$api" --port "$port" --serial "$serial" --role "$role")
    if [ "$api" = v2 ]; then args+=(--tls-dir "$STATE/tls" --token "$(cat "$STATE/token-$serial")"); fi
    "$HWPC" "${args[@]}" >"$STATE/sim-$serial.log" 2>&1 &
    echo $! >"$STATE/sim-$serial.pid"
  done <<<"$METERS"
  # Each answers before the deployment needs it.
  while read -r serial type api port role; do
    for _ in $(seq 1 100); do
      if [ "$api" = v2 ]; then [ -s "$STATE/tls/ca.pem" ] || { sleep 0.1; continue; }; fi
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.1
    done
  done <<<"$METERS"
  say "simulated meters up on 127.0.0.1:18101-$((18102 + (NHOSTS > 3 ? NHOSTS : 3)))"
}

random_secret() { openssl rand -base64 24 | tr -d '/+=' | cut -c1-24; }

# Secrets are generated once per demo state and only ever written vault-encrypted.
make_secrets() {
  install -d -m 700 "$STATE"
  [ -s "$VAULT_PASS" ] || { random_secret >"$VAULT_PASS"; chmod 600 "$VAULT_PASS"; }
  [ -s "$STATE/token-5c2fafa30002" ] || {
    openssl rand -hex 16 | tr a-f A-F >"$STATE/token-5c2fafa30002"; chmod 600 "$STATE/token-5c2fafa30002"; }
}

write_vault() { # file, then YAML on stdin
  local file=$1 tmp old key keep=1
  install -d "$(dirname "$file")"
  tmp=$(mktemp "$STATE/.vault.XXXXXX")
  cat >"$tmp"
  # Keep an existing file that already has every key: the Pis and Cassandra use its passwords.
  if [ -f "$file" ] && old=$(ansible-vault view --vault-password-file "$VAULT_PASS" "$file" 2>/dev/null); then
    for key in $(sed -n 's/^\([a-z_]*\):.*/\1/p' "$tmp"); do
      grep -q "^$key:" <<<"$old" || keep=0
    done
  else
    keep=0
  fi
  [ "$keep" = 1 ] || ansible-vault encrypt --vault-password-file "$VAULT_PASS" --output "$file" "$tmp" >/dev/null
  rm -f "$tmp"
}

make_inventory() {
  "$HWPC" sites import "$WORKBOOK" --inventory "$INV" >/dev/null
  local extra=$INV/hosts-extra.yml n
  rm -f "$extra"
  if [ "$NHOSTS" -gt 3 ]; then
    {
      printf -- '---\n# Generated by tests/harness/demo.sh: HWPC_DEMO_HOSTS=%s, hosts beyond the workbook.\n' "$NHOSTS"
      printf 'all:\n  children:\n    collectors:\n      hosts:\n'
      for n in $(seq 4 "$NHOSTS"); do
        printf '        pi%d:\n          hwpc_site_id: DEMO%02d\n          hwpc_devices:\n' "$n" "$n"
        printf '            - {serial: 3c39e7b%03d01, product_type: HWE-P1, role: grid, api: v1, address: "127.0.0.1:%d"}\n' \
          "$n" $((18102 + n))
      done
    } >"$extra"
  fi
  install -d "$INV/group_vars/all"
  cat >"$INV/group_vars/all/main.yml" <<YAML
---
# Generated by tests/harness/demo.sh for the local demo fleet; not for real deployments.
hwpc_cassandra_hosts:
  - 127.0.0.1
hwpc_cassandra_port: 9042
hwpc_cassandra_keyspace: homewizard
hwpc_cassandra_local_dc: datacenter1
hwpc_cassandra_consistency: LOCAL_QUORUM
hwpc_cassandra_tls_ca_file: $ROOT/build/cassandra/conf/node.pem
hwpc_central_db_replication:
  class: SimpleStrategy
  replication_factor: 1
# The demo hosts share this machine's network: never send mDNS on its real interfaces.
hwpc_mdns: false
# Containers share this machine's (synchronised) clock.
hwpc_clock_sync: trust
hwpc_sync_on_boot: 10s
hwpc_sync_interval: $SYNC_INTERVAL
hwpc_sync_randomized_delay: 2s
YAML
  install -d "$INV/group_vars/collectors"
  cat >"$INV/group_vars/collectors/connection.yml" <<YAML
---
# The demo hosts, reached as on Raspberry Pi OS: user pi (passwordless sudo; tasks that need
# root use become) with the fleet harness's key, strict host key checking.
ansible_user: pi
ansible_python_interpreter: /usr/bin/python3
ansible_ssh_private_key_file: $FLEET_DIR/id_ed25519
ansible_ssh_common_args: >-
  -o UserKnownHostsFile=$FLEET_DIR/known_hosts -o GlobalKnownHostsFile=/dev/null
  -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o ConnectTimeout=5
YAML
  write_vault "$INV/group_vars/all/vault.yml" <<YAML
---
vault_hwpc_cassandra_superuser_password: cassandra
vault_hwpc_cassandra_audit_password: $(random_secret)
YAML
  local h n=0
  for h in $HOSTS; do
    n=$((n + 1))
    install -d "$INV/host_vars/$h"
    printf -- '---\nansible_host: 127.0.1.%s\n' "$n" >"$INV/host_vars/$h/connection.yml"
    if [ "$h" = pi3 ]; then
      # The v2 simulator signs with its own CA; real devices use the HomeWizard CA built in.
      printf -- '---\nhwpc_devices_ca_file: %s\n' "$STATE/tls/ca.pem" >"$INV/host_vars/$h/devices.yml"
      write_vault "$INV/host_vars/$h/vault.yml" <<YAML
---
vault_hwpc_cassandra_password: $(random_secret)
vault_hwpc_device_tokens:
  "5c2fafa30002": $(cat "$STATE/token-5c2fafa30002")
YAML
    else
      write_vault "$INV/host_vars/$h/vault.yml" <<YAML
---
vault_hwpc_cassandra_password: $(random_secret)
YAML
    fi
  done
  say "inventory $INV imported from $(basename "$WORKBOOK"); secrets vault-encrypted"
}

playbook() { # playbook, args...
  local pb=$1; shift
  # As the users type it: the top-level site.yml and check_freshness.yml (they import playbooks/).
  [ -f "$ROOT/$pb" ] || pb="playbooks/$pb"
  # serial: is a play keyword, templated before any inventory variable is known: extra vars.
  ansible-playbook -i "$INV" --vault-password-file "$VAULT_PASS" \
    -e '{"hwpc_rollout_batches": ["100%"]}' "$ROOT/$pb" "$@"
}

cmd_up() {
  local t0 cass_pid rc
  t0=$(date +%s)
  [ "$(id -u)" -eq 0 ] || die "must run as root (the Pi-like hosts are systemd-nspawn containers)"
  make_secrets
  # A node that is already running (make cassandra-up, another user's) is reused and left
  # running by `down`; one the demo starts is stopped by `down`.
  if ! bash "$CASSANDRA" status >/dev/null 2>&1; then touch "$STATE/cassandra-started"; fi
  bash "$CASSANDRA" up >"$STATE/cassandra-up.log" 2>&1 &
  cass_pid=$!
  HWPC_FLEET_DIR=$FLEET_DIR bash "$FLEET" up "$NHOSTS"
  wait "$cass_pid" || { cat "$STATE/cassandra-up.log" >&2; die "Cassandra did not start"; }
  tail -n 1 "$STATE/cassandra-up.log"
  start_simulators
  make_inventory
  say "deploying with site.yml"
  playbook site.yml
  say "waiting up to $WAIT s for every site's data to reach Cassandra ..."
  local deadline=$(( $(date +%s) + WAIT ))
  while :; do
    if playbook check_freshness.yml >"$STATE/audit-wait.log" 2>&1; then break; fi
    [ "$(date +%s)" -lt "$deadline" ] || { say "not every site is ok yet; the report follows"; break; }
    sleep 5
  done
  rc=0
  playbook check_freshness.yml || rc=$?
  say "freshness report printed $(( $(date +%s) - t0 )) s after the start"
  say "HTML report: $ROOT/reports/freshness-latest.html"
  say "the fleet keeps running: ssh -F $FLEET_DIR/ssh_config pi1; stop it with: make demo-down"
  return "$rc"
}

cmd_down() {
  stop_simulators
  HWPC_FLEET_DIR=$FLEET_DIR bash "$FLEET" down --purge || true
  if [ -e "$STATE/cassandra-started" ]; then
    bash "$CASSANDRA" down
    rm -f "$STATE/cassandra-started"
  else
    say "Cassandra was not started by the demo: left running"
  fi
  say "demo stopped"
}

case "${1:-up}" in
  up) cmd_up ;;
  freshness|audit) shift; playbook check_freshness.yml "$@" ;;  # audit: the old name
  deploy) shift; playbook site.yml "$@" ;;
  simulators) start_simulators ;;
  down) cmd_down ;;
  *) die "usage: demo.sh [up|freshness|deploy|simulators|down]" ;;
esac
