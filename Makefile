# The commands of README.md and CONTRIBUTING.md. Each target installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: help install lock demo test lint typecheck pytest bench sandbox reliability clean

help:
	@echo "make demo   - start the sandbox and run detection, notification, a customer creation and a recovery simulation"
	@echo "make test   - ruff, mypy --strict, infra checks and the pytest suite"
	@echo "make bench  - the benchmark scenarios (not part of make test)"
	@echo "make sandbox - serve the sandbox stand-ins until Ctrl-C"
	@echo "make reliability - the fault matrix, then its table in docs/RELIABILITY.md rewritten"
	@echo "make lock   - requirements.txt and requirements-dev.txt compiled again from the .in files"

# requirements-dev.txt holds every runtime pin too, each with its hashes, so this one install is
# hash-checked from end to end (a --hash on any line makes pip require them on every line).
$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements-dev.txt
	touch $@

# pip-compile (pip-tools, installed from requirements-dev.txt) pins the ranges of the .in files
# exactly, with hashes. It resolves for the interpreter it runs on, so it must run on the Functions
# runtime's: Python 3.11 on Linux x86_64 (Flex Consumption). Pins that still satisfy the ranges are
# kept; `make lock LOCK_ARGS=--upgrade` moves every pin to the newest version the ranges allow.
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS)

lock: $(BIN)/.installed
	@$(BIN)/python -c 'import platform, sys; \
	sys.exit(None if sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64" \
	else "make lock resolves for the interpreter it runs on: run it with Python 3.11 on Linux x86_64")'
	$(PIP_COMPILE) --output-file=requirements.txt requirements.in
	$(PIP_COMPILE) --output-file=requirements-dev.txt requirements-dev.in

# checkov pins many libraries of its own, so it gets a virtual environment of its own.
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_FLAGS) 'checkov>=3.2,<4'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/.installed $(CHECKOV_VENV)/.installed node_modules/.installed

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict shared sandbox benchmarks scripts

pytest: install
	$(BIN)/python -m pytest

test: lint typecheck pytest

# make demo ARGS="--telemetry console" passes options to the demo.
demo: $(BIN)/.installed
	$(BIN)/python -m sandbox.demo $(ARGS)

sandbox: $(BIN)/.installed
	$(BIN)/python -m sandbox

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks

reliability: $(BIN)/.installed
	$(BIN)/python -m tests.reliability.report

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .state .mypy_cache .pytest_cache .ruff_cache
