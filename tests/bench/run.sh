#!/usr/bin/env bash
# `make bench`: every benchmark; figures and ratios to stdout and reports/bench-*.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
CASSANDRA="tests/harness/cassandra/cassandra.sh"
MINUTES=${BENCH_MINUTES:-5}

python tests/bench/bench_collect.py --minutes "$MINUTES"

started=0
trap '[ "$started" = 1 ] && bash "$CASSANDRA" down' EXIT
if ! bash "$CASSANDRA" status >/dev/null 2>&1; then
  bash "$CASSANDRA" up --fresh | tail -1
  started=1
fi
python tests/bench/bench_sync.py
python tests/bench/bench_freshness.py
