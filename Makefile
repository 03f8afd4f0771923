# tlserve — the two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv and install the pinned dependencies themselves (about a minute, once).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# TF logs CUDA/oneDNN chatter on import; keep the terminal readable (errors still show).
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv tools demo test lint typecheck unit bench protos clean

help:
	@echo "make demo   sample data -> train -> publish -> serve -> predict (embedded model server)"
	@echo "make test   lint, type-check and the whole test suite"
	@echo "make bench  benchmarks (numbers go to docs/BENCHMARKS.md)"
	@echo "make protos regenerate tlserve/protos/ (TF Serving messages without TensorFlow) from the pinned packages"

$(STAMP): requirements/*.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/no-deps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# promtool for tests/deploy (Debian package; installed once, as root).
tools:
	bash scripts/install-tools.sh

unit: $(STAMP) tools
	$(BIN)/pytest

test: lint typecheck unit

# tlserve/protos/ from the installed tensorflow-serving-api/tensorflow descriptors (grpcio-tools' protoc).
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo
