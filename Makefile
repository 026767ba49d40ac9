# hw-picollector: the README's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv deps lint check test test-node test-molecule test-arm64 test-fleet demo demo-down bench cassandra-up cassandra-down \
        fleet-up fleet-down clean

help:  ## list the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): collector/pyproject.toml controller/pyproject.toml simulator/pyproject.toml tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r tests/requirements.txt -e collector -e controller -e simulator
	touch $@

venv: $(STAMP)  ## Python environment with the collector and every tool

deps:  ## Debian packages the demo and tests need (JDK 17, Maven, ...), when missing
	bash tests/harness/deps.sh

lint: venv  ## ruff, mypy, import contracts, yamllint, ansible-lint (production profile)
	$(BIN)/ruff check collector/src controller/src simulator/src tests
	$(BIN)/mypy && $(BIN)/lint-imports --no-cache
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --offline -q

# The lanes of `make test`, in its order; together they run every test once (tests/lanes.sh).
check: venv  ## lane 1: lint, unit, device contract, durability: no root, no services, in parallel
	bash tests/lanes.sh check

test-node: deps venv  ## lane 2: the Cassandra node's tests, and the slow or root-only ones (starts the node)
	bash tests/lanes.sh node

test-molecule: venv  ## lane 3: the collector role on an nspawn host (needs root; starts the node if needed)
	bash tests/lanes.sh molecule

test-arm64: venv  ## lane 4: the same on an arm64 (Raspberry Pi) host under qemu-user emulation
	bash tests/lanes.sh arm64

test-fleet: venv  ## lane 5: end-to-end fault tests on the demo fleet (needs root; starts the demo)
	bash tests/lanes.sh fleet

test: deps venv  ## every test, lane by lane (starts and stops what it needs; HWPC_TEST_ARM64=0: no arm64 lane)
	bash tests/lanes.sh all

demo: deps venv  ## a simulated fleet: Cassandra, 3 nspawn Pis, meters, site.yml, freshness report
	bash tests/harness/demo.sh

demo-down:  ## stop everything the demo started
	bash tests/harness/demo.sh down

bench: deps venv  ## benchmarks: figures and ratios to stdout and reports/bench-*.json
	bash tests/bench/run.sh

cassandra-up: deps venv  ## a real Cassandra 5.0 node on 127.0.0.1:9042
	bash tests/harness/cassandra/cassandra.sh up

cassandra-down:  ## stop it
	bash tests/harness/cassandra/cassandra.sh down

clean:  ## remove build state (not the caches)
	rm -rf build reports
