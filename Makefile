# hw-picollector: the README's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv deps lint test test-unit test-molecule test-arm64 test-fleet demo demo-down bench cassandra-up cassandra-down \
        fleet-up fleet-down clean

help:  ## list the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): collector/pyproject.toml tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r tests/requirements.txt -e 'collector[controller]'
	touch $@

venv: $(STAMP)  ## Python environment with the collector and every tool

deps:  ## Debian packages the demo and tests need (JDK 17, Maven, ...), when missing
	bash tests/harness/deps.sh

lint: venv  ## ruff, mypy, yamllint, ansible-lint (production profile)
	$(BIN)/ruff check --config collector/pyproject.toml collector/src tests
	cd collector && ../$(BIN)/mypy
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --offline -q

test-molecule: venv  ## the collector role on an nspawn host (needs root and make cassandra-up)
	cd roles/collector && PATH=$(CURDIR)/$(BIN):$$PATH molecule test

test-arm64: venv  ## test-molecule on an arm64 (Raspberry Pi) host under qemu-user emulation
	@t0=$$(date +%s); cd roles/collector && PATH=$(CURDIR)/$(BIN):$$PATH molecule test -s arm64; \
	rc=$$?; echo "test-arm64: $$(( $$(date +%s) - t0 )) s, exit $$rc"; exit $$rc

test-fleet: venv  ## end-to-end fault tests on the demo fleet (needs root; starts the demo)
	$(PYTEST) -q -p no:cacheprovider tests/fleet

test-unit: venv  ## fast tests: unit, device contract, store durability
	$(PYTEST) -q tests/unit tests/contract tests/durability

test: deps venv  ## every test (starts and stops what it needs; HWPC_TEST_ARM64=0: no arm64 scenario)
	bash tests/run-all.sh

demo: deps venv  ## a simulated fleet: Cassandra, 3 nspawn Pis, meters, site.yml, fleet report
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
