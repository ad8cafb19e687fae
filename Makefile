# dgl-rs: `make demo` and `make test` work on a fresh machine (setup included).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
TORCH_LIB = $(shell $(PY) -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")

.PHONY: setup deps build test test-rust test-python test-cuda demo bench wheel clean

setup: deps build

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install only when the pins change.
$(VENV)/.deps-stamp: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

deps: $(VENV)/.deps-stamp

# Release build of the extension into the venv (incremental: about a second).
build: deps
	$(VENV)/bin/maturin develop --release -q

test: setup test-rust test-python

test-rust: deps
	LD_LIBRARY_PATH=$(TORCH_LIB) cargo test --no-default-features

test-python: build
	$(PY) -m pytest -q tests

# The CUDA branches only (skipped without a device; ../shared/gpu/check.sh runs them on a GPU).
test-cuda: build
	$(PY) -m pytest -q -m cuda tests

demo: setup
	$(PY) -m dgl_rs.cli demo

bench: setup
	$(PY) benches/run_all.py

wheel: deps
	$(VENV)/bin/maturin build --release -o dist

clean:
	cargo clean
	rm -rf $(VENV) dist
