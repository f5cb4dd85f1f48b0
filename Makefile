PYTHON ?= python3
PIP := $(PYTHON) -m pip
# pytest-xdist is not used: the suite starts real processes and ports, and 2 cores are the norm here

.DEFAULT_GOAL := help

.PHONY: help install install-test run test lint mypy pytest bench soak format
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: ## install relay and its dev tools (pip install -e '.[dev]'), and redis-server if missing
	$(PIP) install -q -e '.[dev]'
	./scripts/ensure-redis

install-test: install
	./scripts/ensure-chromium

run: install ## run everything locally: embedded Redis, ingress on :8080, a worker and a demo endpoint
	relay dev

test: install-test lint mypy pytest ## installs what it needs, then ruff, mypy --strict and the whole test suite

lint:
	ruff check relay workers config bench tests

mypy:
	mypy

pytest:
	$(PYTHON) -m pytest -q

bench: install ## run the benchmarks (see docs/benchmarks.md)
	$(PYTHON) -m bench

soak: install ## the long fault scenarios (docs/reliability.md), about 10 min; results in .relay/faults.jsonl
	@mkdir -p .relay
	RELAY_SOAK=1 RELAY_FAULTS_REPORT=.relay/faults.jsonl $(PYTHON) -m pytest -q tests/faults; \
	status=$$?; $(PYTHON) -m tests.faults.report .relay/faults.jsonl; exit $$status

format:
	ruff check --fix relay workers config bench tests
	ruff format relay workers config bench tests
