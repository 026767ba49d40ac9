#!/usr/bin/env bash
# Checks the fleet harness end to end on this machine: boots hosts in a state dir of its own,
# exercises SSH with strict host keys, systemd, loopback services, reboot, stop/start, a crash,
# and stops everything it started (also when a check fails or it is interrupted).
#
#   selftest.sh [--arch amd64|arm64] [--hosts N]
#
# Hosts are st1..stN at 127.0.1.201.. (amd64) or sa1.. at 127.0.1.221.. (arm64), state in
# <repo>/build/fleet-selftest unless HWPC_FLEET_DIR is set. Prints "N passed, N failed".
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/../../.." && pwd)"
FLEET="$HARNESS_DIR/fleet.sh"
export HWPC_FLEET_DIR="${HWPC_FLEET_DIR:-$REPO_DIR/build/fleet-selftest}"
STATE="$HWPC_FLEET_DIR"
ARCH="$(dpkg --print-architecture)"
N=2
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="${2:?}"; shift 2 ;;
    --hosts) N="${2:?}"; shift 2 ;;
    *) echo "usage: $0 [--arch amd64|arm64] [--hosts N]" >&2; exit 2 ;;
  esac
done
if [ "$ARCH" = "$(dpkg --print-architecture)" ]; then P=st BASE=200; else P=sa BASE=220; fi
H1="${P}1" H2="${P}2"
[ "$N" -ge 2 ] || H2=""

passed=0 failed=0 HTTP_PID=""
check() { # name cmd...
  local name="$1"
  shift
  if "$@"; then
    passed=$((passed + 1)); printf 'PASS %s\n' "$name"
  else
    failed=$((failed + 1)); printf 'FAIL %s\n' "$name"
  fi
}
fssh() { "$FLEET" ssh "$@"; }
deadline_until() { # seconds cmd...: poll cmd until it succeeds or the deadline passes
  local end=$((EPOCHSECONDS + $1))
  shift
  until "$@"; do
    [ "$EPOCHSECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
port_closed() { ! port_open "$@"; }
ip_of() { sed -n 's/^IP=//p' "$STATE/$1.conf"; }

cleanup() {
  [ -z "$HTTP_PID" ] || kill "$HTTP_PID" 2>/dev/null || true
  "$FLEET" down --purge >/dev/null || true
}
trap cleanup EXIT

# --- boot
t0=$EPOCHREALTIME
"$FLEET" up "$N" --arch "$ARCH" --prefix "$P" --base "$BASE"
echo "boot of $N host(s): $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"

check "inventory lists the hosts" grep -q "^$H1 ansible_host=127.0.1.$((BASE + 1)) " "$STATE/hosts.ini"
check "known_hosts has one key per host" test "$(wc -l <"$STATE/known_hosts")" -eq "$N"
check "host keys differ between hosts" test "$(cut -d' ' -f3 "$STATE/known_hosts" | sort -u | wc -l)" -eq "$N"
check "ssh_config works with strict checking" \
  test "$(ssh -F "$STATE/ssh_config" -o BatchMode=yes "$H1" hostname)" = "$H1"
check "PID 1 is systemd" test "$(fssh "$H1" ps -o comm= -p 1)" = systemd
check "systemd sees an nspawn container" test "$(fssh "$H1" systemd-detect-virt || true)" = systemd-nspawn
check "systemd is running (no failed units)" test "$(fssh "$H1" systemctl is-system-running)" = running
check "python3 runs" fssh "$H1" "python3 -c 'import ssl, venv, apt'"
case "$ARCH" in
  arm64) check "architecture is aarch64" test "$(fssh "$H1" uname -m)" = aarch64 ;;
  amd64) check "architecture is x86_64" test "$(fssh "$H1" uname -m)" = x86_64 ;;
esac
if [ -n "$H2" ]; then
  check "machine-ids differ" test "$(fssh "$H1" cat /etc/machine-id)" != "$(fssh "$H2" cat /etc/machine-id)"
fi
check "sshd listens on its own address only" \
  test "$(fssh "$H1" "ss -Hltnp 'sport = :22' | grep sshd" | awk '{print $4}')" = "$(ip_of "$H1"):22"
check "systemd-analyze security works" fssh "$H1" "systemd-analyze security ssh.service | grep -q 'Overall exposure'"

# --- a service on the machine's 127.0.0.1 is reachable from inside
PORT=18080
while port_open 127.0.0.1 "$PORT"; do PORT=$((PORT + 1)); done
python3 -m http.server --bind 127.0.0.1 "$PORT" --directory "$HARNESS_DIR" >/dev/null 2>&1 &
HTTP_PID=$!
deadline_until 10 port_open 127.0.0.1 "$PORT"
check "127.0.0.1:$PORT on the machine is reachable from a host" \
  fssh "$H1" "python3 -c \"import urllib.request as u; assert u.urlopen('http://127.0.0.1:$PORT/fleet.sh').status == 200\""
kill "$HTTP_PID"; HTTP_PID=""

# --- reboot from inside comes back (systemd-nspawn exits 133, the supervisor starts it again)
fssh "$H1" touch /run/fleet-selftest-marker
old_pid="$(cat "$STATE/$H1.pid")"
"$FLEET" reboot "$H1"
check "reboot: new systemd-nspawn" test "$(cat "$STATE/$H1.pid")" != "$old_pid"
check "reboot: /run is fresh" fssh "$H1" '! test -e /run/fleet-selftest-marker'
check "reboot: systemd running again" test "$(fssh "$H1" systemctl is-system-running)" = running

# --- whole host down and back, disk kept
fssh "$H1" 'echo kept > /root/fleet-selftest'
"$FLEET" stop "$H1"
check "stop: ssh port closed" port_closed "$(ip_of "$H1")" 22
check "stop: status says down" bash -c "'$FLEET' status | grep -q '^$H1 .* down '"
check "stop: no systemd-nspawn of the host" test -z "$(pgrep -f -- "--directory=$STATE/hosts/$H1\$" || true)"
"$FLEET" start "$H1"
check "start: disk kept" test "$(fssh "$H1" cat /root/fleet-selftest)" = kept

# --- crash: SIGKILL of systemd-nspawn takes the whole host down (nothing left listening)
kill -KILL "$(cat "$STATE/$H1.pid")"
check "crash: ssh port closes" deadline_until 20 port_closed "$(ip_of "$H1")" 22
check "crash: status says down" deadline_until 20 bash -c "'$FLEET' status | grep -q '^$H1 .* down '"
"$FLEET" start "$H1"

# --- idempotent up
pids_before="$(cat "$STATE"/*.pid | sort)"
"$FLEET" up "$N" --arch "$ARCH" --prefix "$P" --base "$BASE"
check "up again leaves running hosts alone" test "$(cat "$STATE"/*.pid | sort)" = "$pids_before"

# --- down
"$FLEET" down
check "down: no systemd-nspawn of this state dir" test -z "$(pgrep -f -- "--directory=$STATE/hosts/" || true)"
check "down: no pid files" test -z "$(find "$STATE" -maxdepth 1 -name '*.pid')"
check "down: overlay mounts gone" test -z "$(findmnt -rn -o TARGET | grep -F "$STATE/hosts/" || true)"

echo "fleet selftest ($ARCH): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
