# Two commands on a fresh machine (Python 3.11 and pip, no GPU needed):
#   make quickstart   set up .venv, then train recipes/tiny.yaml on CPU (a few minutes) into runs/tiny
#   make test         set up .venv, then run the whole test suite
# Setup runs once (the stamp file below); delete .venv to start over.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# DeepSpeed compiles its CPU ops on first use (JIT); keep them inside the project.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup quickstart test bench

help:
	@echo "make quickstart   set up .venv and train recipes/tiny.yaml into runs/tiny (CPU, a few minutes)"
	@echo "make test         set up .venv and run the test suite"
	@echo "make bench        run every benchmark; writes docs/benchmarks.md and docs/benchmarks.json"

setup: $(STAMP)

# torch first and pinned: the CPU build (a version range would let pip pick a CUDA build).
# DeepSpeed without prebuilt ops (DS_BUILD_OPS=0): they are JIT-compiled when needed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install setuptools wheel
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[eval,test]'
	DS_BUILD_OPS=0 $(PY) -m pip install --no-build-isolation "deepspeed>=0.17,<0.20"
	touch $@

# A fresh output directory each time: runs/tiny, else runs/tiny-<timestamp> (a run never overwrites another).
quickstart: $(STAMP)
	@out=runs/tiny; if [ -e $$out ]; then out=runs/tiny-$$(date +%Y%m%d-%H%M%S); fi; \
	echo "training recipes/tiny.yaml into $$out"; \
	$(PY) scripts/train.py --config recipes/tiny.yaml --output_dir $$out

test: $(STAMP)
	$(PY) -m pytest -q

# Every scripts/bench_*.py, one after another (tens of minutes on 2 cores); see docs/benchmarks.md.
# e.g. make bench BENCH_ARGS="--only growth,overhead" or BENCH_ARGS="--budget 1800"
bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)
