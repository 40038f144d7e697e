# Two commands do all set-up on a fresh machine:
#   make node   - build .venv if needed, then run a node on its embedded default
#   make test   - build .venv if needed, then run ruff, mypy and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: node test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

node: $(STAMP)
	$(BIN)/llamanet node $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check llamanet tests bench
	$(BIN)/ruff format --check llamanet tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
