# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test run test lint check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	./scripts/install-web-client.sh || echo "web client not installed (npm unavailable); the server runs without it"

install-test: install
	$(BIN)/pip install --quiet -e '.[test]'
	./scripts/install-test-deps.sh

run: install
	$(BIN)/minimix serve

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: install-test lint
	$(BIN)/python -m pytest -q -x --durations=15

clean:
	rm -rf $(VENV) data node_modules
