VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-integration lint bench clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m devstack.demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest --durations=15 tests

test-unit: setup
	$(VENV)/bin/pytest tests/unit

test-integration: setup
	$(VENV)/bin/pytest tests/integration

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
