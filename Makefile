# The two quick-start targets do all set-up on a fresh Debian machine with Python 3.11, git
# and Node: `make demo` runs the demo, `make test` runs lint, type checks and the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
TEST_STAMP := $(VENV)/.installed-test-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test lint typecheck pytest services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

DEMO_DIR := .maos/demo
demo: $(STAMP)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && MAOS_DEMO_DIR=$(CURDIR)/examples/demo $(CURDIR)/$(BIN)/maos run $(CURDIR)/examples/demo/plan.yaml --agents 12
	@echo "demo output: $(DEMO_DIR)/REPORT.md, chapters/, counts/ (maos status / logs --store sqlite:///$(DEMO_DIR)/.maos/maos.db)"

services:
	scripts/ensure-services.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP) services
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/maos bench parallel

clean:
	rm -rf $(VENV) .maos .mypy_cache .ruff_cache .pytest_cache
