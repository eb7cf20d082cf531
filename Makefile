# anycast-lab: one command to a running lab (`make lab-up`), one to a green suite (`make test`).
SHELL := /bin/bash
VENV ?= .venv
LAB := $(VENV)/bin/anycast-lab
PYTEST := $(VENV)/bin/pytest
TOPOLOGY ?= topologies/default.yaml

.PHONY: install lab-up lab-down status test unit integration lint bench docs

install:
	@scripts/install.sh

lab-up: install
	@$(LAB) up $(TOPOLOGY)

# The lab `make lab-up` built (its name is the topology's `name:`); ALL=1: every lab here.
lab-down:
	@if [ ! -x $(LAB) ]; then echo "nothing to tear down: not installed"; \
	elif [ -n "$(ALL)" ]; then $(LAB) down --all; \
	else $(LAB) down --topology $(TOPOLOGY); fi

status:
	@$(LAB) status

test: install
	$(PYTEST) -q tests

unit:
	@test -x $(PYTEST) || { echo "run 'sudo make install' first"; exit 3; }
	$(PYTEST) -q tests/unit

integration: install
	$(PYTEST) -q tests/integration

lint:
	@test -x $(VENV)/bin/ruff || { echo "run 'sudo make install' first"; exit 3; }
	$(VENV)/bin/ruff check lab probes tests bench

# Benchmarks: print tables and write bench/results.json (several minutes).
bench: install
	$(VENV)/bin/python -m bench.lab_bench all
	$(VENV)/bin/python -m bench.services_bench
	$(VENV)/bin/python -m bench.failover_bench
	$(VENV)/bin/python -m bench.failure_modes_bench
	$(VENV)/bin/python -m bench.health_bench
	$(VENV)/bin/python -m bench.abuse_bench
	$(VENV)/bin/python -m bench.procs_bench
	$(VENV)/bin/python -m bench.scale_bench
	$(VENV)/bin/python -m bench.identity_bench
	$(VENV)/bin/python -m bench.scenario_bench

# Every picture in docs/: the topologies' graphs; as root also the live pictures and the
# failover timeline, from a lab of its own (scripts/docs.sh; DOCS_MEASURED=0 skips that).
docs:
	@scripts/docs.sh
