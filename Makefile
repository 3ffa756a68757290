# The two commands of the README: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test check lint typecheck buf stubs-check pytest stubs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

setup: $(BIN)/.installed node_modules/.installed

## The main job on the embedded default.
demo: setup
	$(BIN)/ilp-host demo

## Every check and test.
test: setup check pytest

check: stubs-check buf lint typecheck

stubs-check:
	$(BIN)/python scripts/gen_protos.py --check

buf:
	node_modules/.bin/buf lint proto

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

## Regenerate sdk/pb after editing proto/.
stubs: setup
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) node_modules
