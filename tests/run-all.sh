#!/usr/bin/env bash
# `make test`: lint, then every test suite, starting and stopping what the suites need.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CASSANDRA="tests/harness/cassandra/cassandra.sh"

make -s lint

started=0
cleanup() {
  if [ "$started" = 1 ]; then bash "$CASSANDRA" down || true; fi
}
trap cleanup EXIT INT TERM
if ! bash "$CASSANDRA" status >/dev/null 2>&1; then
  bash "$CASSANDRA" up --fresh
  started=1
fi

pytest -q -p no:cacheprovider tests/unit tests/contract tests/durability tests/cassandra
