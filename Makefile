# evsim — one entry point for set-up, demo, tests and benchmarks.
# `make demo` and `make test` work from a fresh clone with only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
CERTS  ?= certs

.PHONY: all venv demo test test-fast test-huge lint typecheck pytest bench soak certs clean distclean

all: test

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "evsim needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

# Reinstall when the metadata changes; -e so the tree you edit is the tree that runs. The bench extra holds what
# `make bench` compares evsim with (trio-websocket, websockets); mypy checks bench/ too, so the venv has both.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

certs: $(STAMP)
	$(BIN)/evsim certs init --pki $(CERTS)

# The dev PKI (certs/) is for the two-process commands in the README; a scenario makes its own PKI per run.
demo: $(STAMP)
	$(BIN)/evsim certs init --pki $(CERTS) --if-missing
	$(BIN)/evsim run scenarios/default.toml

lint: $(STAMP)
	$(BIN)/ruff check evsim tests bench
	$(BIN)/ruff format --check evsim tests bench
	$(BIN)/mypy

typecheck: lint

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not huge" --durations=25

# The 10,000-station scenarios and their golden logs (about 4 GB and several minutes each; not in make test).
test-huge: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m huge

test: lint pytest

# The quick loop while editing: every test except those marked slow (the 1,000-station scenarios, interop with
# a subprocess peer, two-process CLI runs over loopback).
test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

# Every run writes bench/results/<run id>.json (the machine, the run, every table printed); then
# `$(BIN)/python -m bench readme` copies those tables into README.md's marked blocks.
bench: $(STAMP)
	$(BIN)/python -m bench

# Not part of `make test`: 30 minutes of 1,000 honest stations and hostile clients against a CSMS process over
# loopback; fails if its RSS or descriptors grow after the warm-up or an honest transaction is lost.
# Shorter: make soak SOAK_ARGS="--minutes 1 --stations 20"
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info runs

distclean: clean
	rm -rf $(VENV)
