# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing (torch/torchvision pinned in constraints.txt).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv system-deps demo test test-fast bench gpu-check lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Debian packages beyond Python (Chromium for the report's browser test); installs only
# what is missing, so it is cheap to run every time.
system-deps:
	bash scripts/install-system-deps.sh

# The whole pipeline on synthetic data (a few minutes on 2 CPU cores): data -> search -> ensemble
# -> export -> report, into $(DEMO_DIR) (replaced on every run).
DEMO_DIR ?= demo
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/wen demo --out $(DEMO_DIR)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# ruff's lint rules and its formatter as configured in pyproject.toml; .ci/run runs it before
# the tests (`ruff format .` fixes what the check finds)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The GPU correctness and speed check (benchmarks/bench_gpu.py, at most 8 minutes on one GPU);
# without a GPU it runs its CPU parts and says what it skipped.
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks gpu

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
