# Two commands do all set-up on a fresh machine:
#   make node   - build .venv if needed, then run a node on its embedded default
#   make test   - build .venv if needed, then run ruff, the import contracts, mypy and
#                 the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: node test lint typecheck pytest bench fuzz clean

# llama-cpp-python (a test dependency) compiles llama.cpp from its sdist, ~4 min on
# 2 cores the first time; pip keeps the built wheel in its cache for later venvs.
# A minimal CPU build: no native tuning (the cached wheel must run on any x86-64 of
# this kind), no OpenMP, no examples or tests.
LLAMA_CPP_VERSION := 0.3.36
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
# The tests' model vocabulary ships in that same sdist (pip's HTTP cache keeps it).
VOCAB := $(VENV)/share/llamanet/ggml-vocab-llama-spm.gguf

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(VOCAB): $(STAMP)
	rm -rf $(VENV)/sdist && mkdir -p $(VENV)/sdist $(dir $(VOCAB))
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(VENV)/sdist \
		llama-cpp-python==$(LLAMA_CPP_VERSION)
	tar -xzf $(VENV)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -O \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf \
		> $(VOCAB).part
	mv $(VOCAB).part $(VOCAB)
	rm -rf $(VENV)/sdist

node: $(STAMP)
	$(BIN)/llamanet node $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check llamanet tests bench simnet
	$(BIN)/ruff format --check llamanet tests bench simnet
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(VOCAB)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Every property test (decoders, validators, scoring) with many more examples;
# FUZZ_EXAMPLES per test (default 20000).  Prints hypothesis's statistics.
FUZZ_EXAMPLES ?= 20000
FUZZ_TESTS := $(shell grep -rl "@given" tests --include="*.py" | sort)
fuzz: $(STAMP) $(VOCAB)
	HYPOTHESIS_PROFILE=fuzz LLAMANET_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q --timeout=0 \
		--hypothesis-show-statistics -k "not walkthrough" $(FUZZ_TESTS)

bench: $(STAMP) $(VOCAB)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
