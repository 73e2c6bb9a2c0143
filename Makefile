# The two quick-start targets do all set-up on a fresh Debian machine with Python 3.11, git
# and Node: `make demo` runs the demo, `make test` runs lint, type checks and the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
TEST_STAMP := $(VENV)/.installed-test-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo demo-commands test lint typecheck pytest services bytecode bench fuzz package clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

# MAOS's modules byte-compiled, as pip leaves an installed package. The checkout is installed
# editable, and where PYTHONDONTWRITEBYTECODE is set every `maos` process (a run, an agent's
# door command, each CLI a test starts) would otherwise compile what it imports: 0.5 s each.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src/maos

# The demo: a task in words, planned and built by six Claude Code agents (scripted model when
# no ANTHROPIC_API_KEY is set; real Claude otherwise). Its tester agent runs pytest.
demo: $(STAMP) bytecode
	$(BIN)/pip install --quiet 'pytest>=8'
	scripts/demo.sh

# The command-agent example: twelve processes writing, counting and checking in parallel.
demo-commands: $(STAMP) bytecode
	rm -rf .maos/word-report && mkdir -p .maos
	$(BIN)/maos examples copy word-report .maos/word-report
	cd .maos/word-report && $(CURDIR)/$(BIN)/maos run plan.yaml --agents 12

services:
	scripts/ensure-services.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

# One pytest process per logical CPU, at most four (pytest-xdist): most tests wait on real
# processes, timers and servers, so two cores run the suite in about 65 % of the serial time.
# The 15 slowest tests are listed at the end, where the time goes.
pytest: $(TEST_STAMP) services bytecode
	$(BIN)/pytest --numprocesses logical --maxprocesses 4 --durations 15

test: lint typecheck pytest

# An sdist and a wheel in dist/, checked as PyPI would (twine check --strict).
package: $(TEST_STAMP)
	rm -rf dist && $(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

bench: $(STAMP)
	$(BIN)/maos bench parallel

# The fuzz targets of tests/fuzz with a long budget (the regular suite runs them short):
# FUZZ_EXAMPLES hypothesis examples per target test, over 100,000 cases in all. Prints
# "fuzz: <cases> cases, <targets> targets, <crashes> crashes, <duration>".
FUZZ_EXAMPLES ?= 13000
fuzz: $(TEST_STAMP)
	MAOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -p no:cacheprovider -q -o timeout=0

clean:
	rm -rf $(VENV) .maos .mypy_cache .ruff_cache .pytest_cache dist
