# The two commands of the README: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint unit stack-up stack-down bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Start Kafka and Postgres (once), migrate, serve, and walk a sync through create, pause, resume.
demo: $(BIN)/.installed
	$(BIN)/synclife demo

## Lint, type-check and run every test on the real stack (started or reused by the suite).
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

## Throughput, latency and RSS of serve on the real stack, against a pgbench baseline (README).
bench: $(BIN)/.installed
	$(BIN)/synclife bench

stack-up: $(BIN)/.installed
	$(BIN)/synclife stack up

stack-down: $(BIN)/.installed
	$(BIN)/synclife stack down

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
