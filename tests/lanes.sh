#!/usr/bin/env bash
# The test lanes. `make test` runs them all, in this order; `make check`, `make test-node`, ...
# run one. Together they run every test exactly once:
#   check     lint; unit, device contract and durability tests in parallel (pytest-xdist),
#             without root or services: what a developer runs before every commit
#   node      a real Cassandra node: tests/cassandra, and the tests of the first lane's folders
#             marked `slow` or `root` (tests/conftest.py: the markers that move a test here)
#   molecule  the collector role on an amd64 nspawn host (Molecule, default scenario)
#   arm64     the same role on an arm64 host under qemu-user emulation (HWPC_TEST_ARM64=0 skips)
#   fleet     the demo fleet, booted once, broken the ways the field does (tests/fleet)
# A lane's steps are chained with && (a function run under `||` ignores set -e).
# A lane starts what it needs and stops what it started; a node or demo fleet already running
# is used and left running. Each lane's time is printed when it ends and in a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CASSANDRA="tests/harness/cassandra/cassandra.sh"
DEMO="tests/harness/demo.sh"
FAST_FOLDERS=(tests/unit tests/contract tests/durability)
# Lane 1 takes what lane 2 does not: one marker expression and its negation, so no test runs
# twice and none is left out.
NODE_MARKERS="slow or root or node"
WORKERS="${HWPC_TEST_WORKERS:-4}"  # the parallel tests mostly wait (deadlines, devices): 2 per core
PYTEST=(pytest -q -p no:cacheprovider --durations=10)

started_node=0
started_demo=0
summary=()
prebuild_pid=""
PREBUILD_LOG="build/rootfs-arm64.log"
cleanup() {
  if [ -n "$prebuild_pid" ]; then kill "$prebuild_pid" 2>/dev/null || true; fi
  if [ "$started_demo" = 1 ]; then bash "$DEMO" down >/dev/null 2>&1 || true; fi
  if [ "$started_node" = 1 ]; then bash "$CASSANDRA" down || true; fi
}
trap cleanup EXIT INT TERM

need_node() {
  if ! bash "$CASSANDRA" status >/dev/null 2>&1; then
    started_node=1
    bash "$CASSANDRA" up --fresh || return 1
  fi
}

lane_check() {
  make -s lint &&
    "${PYTEST[@]}" -n "$WORKERS" -m "not ($NODE_MARKERS)" "${FAST_FOLDERS[@]}"
}

lane_node() {
  need_node &&
    "${PYTEST[@]}" -m "$NODE_MARKERS" "${FAST_FOLDERS[@]}" tests/cassandra
}

lane_molecule() {
  need_node && (cd roles/collector && molecule test)
}

lane_arm64() {
  if [ "${HWPC_TEST_ARM64:-1}" != 1 ]; then
    echo "arm64 lane skipped (HWPC_TEST_ARM64=${HWPC_TEST_ARM64})"
    return 0
  fi
  if [ -n "$prebuild_pid" ]; then  # started by `all` while the node lane ran: wait for it
    local rc=0
    wait "$prebuild_pid" || rc=$?
    prebuild_pid=""
    echo "arm64 root file system, built beside the node lane: exit $rc (log $PREBUILD_LOG)"
    if [ "$rc" != 0 ]; then tail -n 30 "$PREBUILD_LOG"; fi
  fi
  need_node && (cd roles/collector && molecule test -s arm64)
}

# `make test` only: the arm64 root file system (about 6 minutes under emulation on a new
# machine, a no-op once cached) is built in the background while the node lane, which mostly
# waits on Cassandra, runs; the arm64 lane waits for it (and would build it itself if this
# failed). A lane run on its own builds what it needs when it needs it.
prebuild_arm64_rootfs() {
  if [ "${HWPC_TEST_ARM64:-1}" != 1 ]; then return 0; fi
  mkdir -p build
  (bash tests/harness/fleet/fleet.sh deps --arch arm64 &&
     bash tests/harness/fleet/fleet.sh rootfs --arch arm64) >"$PREBUILD_LOG" 2>&1 &
  prebuild_pid=$!
}

lane_fleet() {
  if ! ls build/demo/sim-*.pid >/dev/null 2>&1; then started_demo=1; fi
  "${PYTEST[@]}" tests/fleet
}

run_lane() { # name
  local t0 rc=0
  t0=$(date +%s)
  printf '\n=== lane %s\n' "$1"
  "lane_$1" || rc=$?
  local took=$(( $(date +%s) - t0 ))
  summary+=("$(printf '%-9s %4d s  %s' "$1" "$took" "$([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")")")
  printf '=== lane %s: %d s, %s\n' "$1" "$took" "$([ "$rc" = 0 ] && echo passed || echo "exit $rc")"
  return "$rc"
}

print_summary() {
  printf '\n=== lanes\n'
  printf '%s\n' "${summary[@]}"
}

case "${1:-all}" in
  check|node|molecule|arm64|fleet) run_lane "$1" ;;
  all)
    t_all=$(date +%s)
    rc=0
    for lane in check node molecule arm64 fleet; do
      if [ "$lane" = node ]; then prebuild_arm64_rootfs; fi
      run_lane "$lane" || { rc=$?; break; }
    done
    print_summary
    printf 'total     %4d s\n' "$(( $(date +%s) - t_all ))"
    exit "$rc"
    ;;
  *) echo "usage: tests/lanes.sh [all|check|node|molecule|arm64|fleet]" >&2; exit 2 ;;
esac
