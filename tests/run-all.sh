#!/usr/bin/env bash
# `make test`: lint, then every test suite, starting what the suites need and stopping what
# this script started (a node or demo fleet that was already running is left running).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CASSANDRA="tests/harness/cassandra/cassandra.sh"
DEMO="tests/harness/demo.sh"
t0=$(date +%s)
phase() { printf '\n=== %s (%s s)\n' "$*" "$(( $(date +%s) - t0 ))"; }

phase lint
make -s lint

started_node=0
started_demo=0
cleanup() {
  if [ "$started_demo" = 1 ]; then bash "$DEMO" down >/dev/null 2>&1 || true; fi
  if [ "$started_node" = 1 ]; then bash "$CASSANDRA" down || true; fi
}
trap cleanup EXIT INT TERM
if ! bash "$CASSANDRA" status >/dev/null 2>&1; then
  phase "Cassandra node"
  bash "$CASSANDRA" up --fresh
  started_node=1
fi

phase "unit, device contract, durability, Cassandra"
pytest -q -p no:cacheprovider tests/unit tests/contract tests/durability tests/cassandra

phase "Molecule: the collector role on an nspawn host"
(cd roles/collector && molecule test)

if [ "${HWPC_TEST_ARM64:-1}" = 1 ]; then
  phase "Molecule: the collector role on an arm64 host under qemu-user (HWPC_TEST_ARM64=0 skips)"
  (cd roles/collector && molecule test -s arm64)
fi

phase "fleet end to end"
if ! ls build/demo/sim-*.pid >/dev/null 2>&1; then started_demo=1; fi
pytest -q -p no:cacheprovider tests/fleet
phase "all passed"
