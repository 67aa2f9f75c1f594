VENV ?= .venv
PY := $(VENV)/bin/python
# The suite runs on this many pytest-xdist workers, each with its own PostgreSQL, broker and
# S3 server (session fixtures, free ports, private directories); a test file stays on one
# worker. Most of an integration test's time is waiting on its services, so 2 pay on 2 cores.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: setup demo test test-unit test-integration lint bench clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m devstack.demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) --durations=15 tests

test-unit: setup
	$(VENV)/bin/pytest tests/unit

test-integration: setup
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) tests/integration

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
