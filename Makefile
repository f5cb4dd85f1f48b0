# Everything runs from a virtual environment in .venv, made on first use: a stock Debian or Ubuntu
# python3 refuses system-wide pip installs (PEP 668), and a venv keeps the relay's packages apart.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# pytest-xdist is not used: the suite starts real processes and ports, and 2 cores are the norm here

.DEFAULT_GOAL := help

.PHONY: help install install-dev install-test run test check lint imports mypy pytest bench soak format shell
# the name column is as wide as the longest target name, so every description starts in one column
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
	  '{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > w) w = length($$1) } \
	   END { fmt = "  make %-" w "s  %s\n"; for (i = 1; i <= NR; i++) printf fmt, name[i], text[i] }'

$(PY):
	./scripts/ensure-venv $(PYTHON) $(VENV)

# re-install only when the project's metadata changed. Two levels: `make run` needs the relay's runtime
# dependencies only (93 MB measured); the dev tools (mypy, playwright, schemathesis, py-spy, ...: several
# hundred MB) come with `make test`, `make check` and `make bench`, never with `make run`
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## make .venv with relay and its runtime dependencies, and redis-server if missing
	./scripts/ensure-redis

install-dev: install $(VENV)/.installed-dev ## install also the dev tools (ruff, mypy, pytest, ...)

install-test: install-dev
	./scripts/ensure-chromium
	./scripts/ensure-faketime

run: install ## run everything locally (runtime dependencies only): embedded Redis, ingress on :8080, a worker, a demo endpoint
	$(BIN)/relay dev

test: install-test lint imports mypy pytest ## installs what it needs, then ruff, import contracts, mypy --strict and all tests (CI)

check: install-test lint imports mypy ## the fast tier for your own loop: the static checks, then every test but the slow ones
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check relay workers config bench tests
	$(BIN)/ruff format --check relay workers config bench tests

imports: $(VENV)/.installed-dev ## check the layering contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/lint-imports

mypy: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(PY) -m pytest -q

bench: install-dev ## run the benchmarks (see docs/benchmarks.md)
	$(PY) -m bench

soak: install-test ## the long fault scenarios (docs/reliability.md), about 10 min; results in .relay/faults.jsonl
	@mkdir -p .relay
	RELAY_SOAK=1 RELAY_FAULTS_REPORT=.relay/faults.jsonl $(PY) -m pytest -q tests/faults; \
	status=$$?; $(PY) -m tests.faults.report .relay/faults.jsonl; exit $$status

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix relay workers config bench tests
	$(BIN)/ruff format relay workers config bench tests

shell: install ## a shell with .venv active, so `relay …` works (or run: . .venv/bin/activate)
	@echo "relay is on PATH in this shell; exit to leave"; . $(BIN)/activate && exec $${SHELL:-/bin/sh}
