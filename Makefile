# The two commands of the README: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-cluster lint unit faults stack-up stack-down bench constraints screenshots clean

# The service, its tooling and the test tools, at the versions of constraints.txt.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[server,dev]'
	touch $@

## Start Kafka and Postgres (once), migrate, serve, and walk a sync through create, pause, resume.
demo: $(BIN)/.installed
	$(BIN)/synclife demo

## Lint, type-check, check the import contracts, then every test on the real stack (started or
## reused by the suite; Chromium for the console's browser tests installed first, outside any
## test's timeout): unit and integration tests, then the fault suite, then one failover
## on a cluster of the suite's own (the Postgres primary killed, its synchronous standby
## promoted; about a minute with the cluster's start).
test: lint
	$(BIN)/synclife stack browser
	$(BIN)/pytest
	$(BIN)/pytest -m faults
	$(BIN)/pytest -m cluster tests/faults/test_cluster.py::test_postgres_failover

## Every failover scenario on three Kafka brokers and a Postgres primary and standby
## (docs/faults.md#the-cluster).
test-cluster: $(BIN)/.installed
	$(BIN)/pytest -m cluster

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

faults: $(BIN)/.installed
	$(BIN)/pytest -m faults

## Throughput, latency and RSS of serve on the real stack, against a pgbench baseline.
bench: $(BIN)/.installed
	$(BIN)/synclife bench

## Screenshots of the web console in docs/ (the local stack, a seeded namespace, headless
## Chromium from Debian's packages, installed if missing).
screenshots: $(BIN)/.installed
	$(BIN)/synclife stack browser
	$(BIN)/python -m tests.helpers.screenshots docs

stack-up: $(BIN)/.installed
	$(BIN)/synclife stack up

stack-down: $(BIN)/.installed
	$(BIN)/synclife stack down

## Pin every dependency again (after a change of pyproject.toml's ranges).
constraints: $(BIN)/.installed
	$(BIN)/pip-compile --quiet --extra server --extra dev --strip-extras \
	  --no-emit-find-links --no-emit-index-url -o constraints.txt pyproject.toml

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
