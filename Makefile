# Everything runs from a virtual environment in .venv, made on first use: a stock Debian or Ubuntu
# python3 refuses system-wide pip installs (PEP 668), and a venv keeps the relay's packages apart.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# pytest-xdist is not used: the suite starts real processes and ports, and 2 cores are the norm here

.DEFAULT_GOAL := help

.PHONY: help install install-test run test lint imports mypy pytest bench soak format shell
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(PY):
	./scripts/ensure-venv $(PYTHON) $(VENV)

# re-install only when the project's metadata changed
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## make .venv and install relay and its dev tools into it, and redis-server if missing
	./scripts/ensure-redis

install-test: install
	./scripts/ensure-chromium
	./scripts/ensure-faketime

run: install ## run everything locally: embedded Redis, ingress on :8080, a worker and a demo endpoint
	$(BIN)/relay dev

test: install-test lint imports mypy pytest ## installs what it needs, then ruff, import contracts, mypy --strict and all tests

lint:
	$(BIN)/ruff check relay workers config bench tests

imports: ## check the layering contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/lint-imports

mypy:
	$(BIN)/mypy

pytest:
	$(PY) -m pytest -q

bench: install ## run the benchmarks (see docs/benchmarks.md)
	$(PY) -m bench

soak: install ## the long fault scenarios (docs/reliability.md), about 10 min; results in .relay/faults.jsonl
	@mkdir -p .relay
	RELAY_SOAK=1 RELAY_FAULTS_REPORT=.relay/faults.jsonl $(PY) -m pytest -q tests/faults; \
	status=$$?; $(PY) -m tests.faults.report .relay/faults.jsonl; exit $$status

format:
	$(BIN)/ruff check --fix relay workers config bench tests
	$(BIN)/ruff format relay workers config bench tests

shell: install ## a shell with .venv active, so `relay …` works (or run: . .venv/bin/activate)
	@echo "relay is on PATH in this shell; exit to leave"; . $(BIN)/activate && exec $${SHELL:-/bin/sh}
