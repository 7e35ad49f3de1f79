# The two commands of CONTRACTS.md section 1. Each one creates .venv when it
# is missing and installs the project from its own files, so a fresh clone
# needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck importlint pytest bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files record which install the venv holds; they are remade whenever
# pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/tidegate demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

importlint: $(VENV)/.installed-test
	$(BIN)/lint-imports

pytest: $(VENV)/.installed-test
	$(BIN)/pytest

test: lint typecheck importlint pytest

# Quiet recipes: with PEERS=--json, stdout holds the JSON and nothing else.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -e '.[bench]' >&2
	@touch $@ $(VENV)/.installed

# tidegate side by side with Redis Streams and NATS JetStream (benchmarks/peers):
# installs redis-server and nats-server from Debian's packages when missing,
# runs every server on loopback and prints one table. Full sizes take 6 to 9
# minutes on 2 cores; `make bench-peers PEERS=--quick` is a one-minute run,
# `PEERS=--json` prints JSON. Not part of `make test`.
PEERS ?=
bench-peers: $(VENV)/.installed-bench
	@sh benchmarks/peers/install.sh
	@$(BIN)/python -m benchmarks.peers $(PEERS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
