#!/usr/bin/env bash
# `make test`: lint, then every test suite, starting and stopping what the suites need.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

make -s lint
pytest -q -p no:cacheprovider tests/unit tests/contract tests/durability
